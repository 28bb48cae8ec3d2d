"""Images in the ImageFolder layout (``SPLIT/CLASS/*.JPEG``), decoded with Pillow.

    root/train/n01440764/*.JPEG ─► Pillow (greyscale → RGB, resized to 224) ─► uint8 (N,224,224,3)
                                   └─ cached once as .npy beside the run, keyed by the file list

Imagenette is looked up like Fashion-MNIST: a folder given with ``--data-dir`` is the only
place searched; otherwise ``$SPLITNET_IMAGENETTE_DIR``, then :data:`DEFAULT_IMAGENETTE_DIR`
(where ``python -m splitnet.data.download imagenette`` writes it). A corrupt image raises
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
from tqdm import tqdm

from splitnet.data import DatasetNotFoundError
from splitnet.images import decode_image

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
        f"Imagenette not found (looked in {tried}). Run "
        "`python -m splitnet.data.download imagenette` to download it, or pass --data-dir "
        f"/ set ${IMAGENETTE_DIR_ENV} to a folder with "
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
            for i, array in enumerate(tqdm(decoded, total=len(jobs), desc=label,
                                               disable=None if show_progress else True)):
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
