"""Fashion-MNIST from the four standard IDX files, with no downloading.

    IDX .gz files ──► uint8 arrays (N, 28, 28) + labels (N,) ──► float tensors in [0, 1]

Where the files are looked up: a folder the caller names (``--data-dir``) is the only
place searched, since an explicit choice must not silently fall back to other data.
Otherwise ``$SPLITNET_DATA_DIR`` if set, then the folder the Debian package
``dataset-fashion-mnist`` installs to. When the files are missing,
:class:`DatasetNotFoundError` says which package to install and which option to pass.
"""

from __future__ import annotations

import gzip
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from splitnet.data import DatasetNotFoundError

DEBIAN_DATA_DIR = Path("/usr/share/datasets/fashion-mnist")
DATA_DIR_ENV = "SPLITNET_DATA_DIR"
CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


@dataclass(frozen=True)
class Split:
    """One split of the data set: ``images`` is uint8 (N, 28, 28), ``labels`` is int64 (N,)."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def tensors(self, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Images as float (N, 1, 28, 28) in [0, 1] and labels as int64, first ``limit`` only."""
        images = self.images[:limit] if limit is not None else self.images
        labels = self.labels[:limit] if limit is not None else self.labels
        x = torch.tensor(images).unsqueeze(1).float().div_(255.0)
        return x, torch.tensor(labels, dtype=torch.long)


def candidate_dirs(data_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """Folders searched for the IDX files, in order."""
    if data_dir is not None:
        return [Path(data_dir)]
    dirs: list[Path] = []
    if os.environ.get(DATA_DIR_ENV):
        dirs.append(Path(os.environ[DATA_DIR_ENV]))
    dirs.append(DEBIAN_DATA_DIR)
    return dirs


def _find(name: str, data_dir: str | os.PathLike[str] | None) -> Path:
    searched = candidate_dirs(data_dir)
    for folder in searched:
        for candidate in (folder / f"{name}.gz", folder / name):
            if candidate.is_file():
                return candidate
    where = ", ".join(str(d) for d in searched)
    raise DatasetNotFoundError(
        f"Fashion-MNIST file '{name}.gz' not found (looked in: {where}). "
        "Install the data with 'sudo apt-get install dataset-fashion-mnist', or pass "
        f"--data-dir (or set {DATA_DIR_ENV}) to a folder holding the four standard IDX files."
    )


def _read_idx(path: Path, expected_magic: int) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8:
        raise DatasetNotFoundError(f"{path} is too short to be an IDX file; reinstall it.")
    magic, count = struct.unpack(">II", raw[:8])
    if magic != expected_magic:
        raise DatasetNotFoundError(
            f"{path} has IDX magic {magic:#x}, expected {expected_magic:#x}.")
    if expected_magic == 2051:
        rows, cols = struct.unpack(">II", raw[8:16])
        data = np.frombuffer(raw, dtype=np.uint8, offset=16)
        if data.size != count * rows * cols:
            raise DatasetNotFoundError(f"{path} is truncated; reinstall it.")
        return data.reshape(count, rows, cols)
    data = np.frombuffer(raw, dtype=np.uint8, offset=8)
    if data.size != count:
        raise DatasetNotFoundError(f"{path} is truncated; reinstall it.")
    return data.astype(np.int64)


def load_split(split: str, data_dir: str | os.PathLike[str] | None = None) -> Split:
    """Load ``"train"`` (60,000 images) or ``"test"`` (10,000 images)."""
    if split not in _FILES:
        raise ValueError(f"unknown split {split!r}; use 'train' or 'test'")
    image_name, label_name = _FILES[split]
    images = _read_idx(_find(image_name, data_dir), 2051)
    labels = _read_idx(_find(label_name, data_dir), 2049)
    if len(images) != len(labels):
        raise DatasetNotFoundError(f"{split}: {len(images)} images but {len(labels)} labels.")
    return Split(images=images, labels=labels)
