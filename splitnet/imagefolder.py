"""Images in the ImageFolder layout (``SPLIT/CLASS/*.JPEG``), decoded with Pillow.

    root/train/n01440764/*.JPEG ─► Pillow (greyscale → RGB, resized to 224) ─► uint8 (N,224,224,3)
                                   └─ cached once as .npy beside the run, keyed by the file list

Imagenette is looked up like Fashion-MNIST: a folder given with ``--data-dir`` is the only
place searched; otherwise ``$SPLITNET_IMAGENETTE_DIR``, then :data:`DEFAULT_IMAGENETTE_DIR`
(where ``python -m splitnet.datasets imagenette`` writes it). A corrupt image raises
:class:`ImageDecodeError` naming the file.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from splitnet.data import DatasetNotFoundError
from splitnet.progress import progress

IMAGENETTE_DIR_ENV = "SPLITNET_IMAGENETTE_DIR"
DEFAULT_IMAGENETTE_DIR = Path.home() / ".local" / "share" / "splitnet" / "imagenette-224"
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")
#: Imagenette's ten WNIDs (sorted, as ImageFolder orders them) and their class names.
IMAGENETTE_CLASSES = {
    "n01440764": "tench",
    "n02102040": "English springer",
    "n02979186": "cassette player",
    "n03000684": "chain saw",
    "n03028079": "church",
    "n03394916": "French horn",
    "n03417042": "garbage truck",
    "n03425413": "gas pump",
    "n03445777": "golf ball",
    "n03888257": "parachute",
}


class ImageDecodeError(ValueError):
    """An image file could not be decoded; the message names the file."""


@dataclass(frozen=True)
class ImageSplit:
    """``images`` uint8 (N, H, W, 3), ``labels`` int64 (N,), ``paths`` the source files."""

    images: np.ndarray
    labels: np.ndarray
    paths: tuple[str, ...]
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: Sequence[int] | np.ndarray) -> ImageSplit:
        idx = np.asarray(indices, dtype=np.int64)
        return ImageSplit(self.images[idx], self.labels[idx],
                          tuple(self.paths[i] for i in idx), self.classes)


def imagenette_candidates(data_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """Folders searched for Imagenette, in order."""
    if data_dir is not None:
        return [Path(data_dir)]
    env = os.environ.get(IMAGENETTE_DIR_ENV)
    return ([Path(env)] if env else []) + [DEFAULT_IMAGENETTE_DIR]


def find_imagenette(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The first candidate folder that holds ``train/`` and ``val/``."""
    candidates = imagenette_candidates(data_dir)
    for folder in candidates:
        if (folder / "train").is_dir() and (folder / "val").is_dir():
            return folder
    tried = ", ".join(str(c) for c in candidates)
    raise DatasetNotFoundError(
        f"Imagenette not found (looked in {tried}). Run `python -m splitnet.datasets imagenette` "
        f"to download it, or pass --data-dir / set ${IMAGENETTE_DIR_ENV} to a folder with "
        "train/ and val/ in the ImageFolder layout"
    )


def list_image_folder(split_dir: Path) -> tuple[list[tuple[str, int]], tuple[str, ...]]:
    """(path, class index) for every image under ``split_dir/CLASS/``, classes sorted."""
    if not split_dir.is_dir():
        raise DatasetNotFoundError(f"{split_dir} is not a folder")
    classes = tuple(sorted(p.name for p in split_dir.iterdir() if p.is_dir()))
    if not classes:
        raise DatasetNotFoundError(f"{split_dir} has no class folders (expected CLASS/*.JPEG)")
    items = []
    for index, name in enumerate(classes):
        for path in sorted((split_dir / name).iterdir()):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                items.append((str(path), index))
    return items, classes


MAX_IMAGE_PIXELS = 64_000_000  # the largest image a device decodes: a 61 MP full-frame still


def decode_image(source: str | os.PathLike[str] | bytes, size: int | None = 224,
                 max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """One image file (or its bytes) as uint8 (size, size, 3) RGB; greyscale becomes RGB.

    The header is read first: an image of more than ``max_pixels`` is refused with
    ImageDecodeError before any pixel is decoded, and a JPEG is decoded straight to the
    smallest scale (1/2, 1/4 or 1/8) that still covers ``size`` (Pillow's draft mode), so
    a 24 MP camera still costs a 3 MP decode. Pillow's own decompression-bomb limit, a
    process-wide setting, is neither changed nor relied on."""
    import io
    import warnings

    from PIL import Image, UnidentifiedImageError

    name = "<bytes>" if isinstance(source, bytes) else str(source)
    try:
        with warnings.catch_warnings():
            # ours is the size check below; Pillow's warning for large images is not news
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
        with img:
            width, height = img.size
            if width * height > max_pixels:
                raise ImageDecodeError(
                    f"cannot decode image {name}: it is {width}x{height} "
                    f"({width * height / 1e6:.1f} MP), more than the {max_pixels / 1e6:.0f} MP "
                    "this device decodes; scale it down first")
            img.draft("RGB", (size, size) if size else img.size)
            rgb = img.convert("RGB")
            if size is not None and rgb.size != (size, size):
                rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
            return np.asarray(rgb, dtype=np.uint8)
    except ImageDecodeError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError,
            Image.DecompressionBombError) as error:
        raise ImageDecodeError(f"cannot decode image {name}: {error}") from None


def resize_image(rgb: np.ndarray, size: int = 224) -> np.ndarray:
    """An RGB uint8 (H, W, 3) frame (a camera's) as (size, size, 3), resized the way
    ``decode_image`` resizes files."""
    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(rgb), "RGB")
    return np.asarray(image.resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)


def _decode_one(args: tuple[str, int]) -> np.ndarray:
    return decode_image(args[0], args[1])


def load_image_folder(split_dir: str | os.PathLike[str], size: int = 224,
                      cache_dir: str | os.PathLike[str] | None = None,
                      workers: int = 2, show_progress: bool = True) -> ImageSplit:
    """Decode every image of one split; cached as .npy in ``cache_dir`` when given."""
    items, classes = list_image_folder(Path(split_dir))
    paths = tuple(p for p, _ in items)
    labels = np.array([c for _, c in items], dtype=np.int64)
    cache_file = None
    if cache_dir is not None:
        key = hashlib.sha256("\n".join([str(size), *paths]).encode()).hexdigest()[:16]
        cache_file = Path(cache_dir) / f"{Path(split_dir).name}-{size}-{key}.npy"
        if cache_file.is_file():
            return ImageSplit(np.load(cache_file, mmap_mode="r"), labels, paths, classes)
    images = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    jobs = [(p, size) for p in paths]
    label = f"decoding {Path(split_dir).name}"
    if workers > 1 and len(jobs) > 64:
        with get_context("spawn").Pool(workers) as pool:
            decoded = pool.imap(_decode_one, jobs, chunksize=64)
            for i, array in enumerate(progress(decoded, total=len(jobs), desc=label,
                                               enabled=None if show_progress else False)):
                images[i] = array
    else:
        for i, job in enumerate(jobs):
            images[i] = _decode_one(job)
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(".tmp.npy")
        np.save(tmp, images)
        tmp.replace(cache_file)
    return ImageSplit(images, labels, paths, classes)


def holdout_split(labels: np.ndarray, fraction: float = 0.1,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A fixed, seeded, per-class split of ``labels`` into (train indices, held-apart indices)."""
    rng = np.random.default_rng(seed)
    held: list[np.ndarray] = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        rng.shuffle(members)
        held.append(np.sort(members[: max(1, round(fraction * len(members)))]))
    held_idx = np.sort(np.concatenate(held))
    train_idx = np.setdiff1d(np.arange(len(labels)), held_idx)
    return train_idx, held_idx
