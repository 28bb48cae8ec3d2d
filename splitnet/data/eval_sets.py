"""Which images each shipped model is trained, carded and scored on.

    model            card (planner's numbers, exit thresholds,   evaluation (bench,
                     checkpoint choice)                           experiments)
    mnv2_fmnist      Fashion-MNIST test, fixed half A (5,000)     test, half B (5,000)
    resnet18_imagenette  Imagenette train, held-apart 10 %        Imagenette val (3,925)

Nothing that picks a threshold or builds a card ever sees the evaluation images, so the
figures the benchmarks and experiments report are not tuned on what they score.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from splitnet.data.fashion_mnist import load_split
from splitnet.data.imagenette import (
    IMAGENETTE_CLASSES,
    find_imagenette,
    holdout_split,
    list_image_folder,
    load_image_folder,
)
from splitnet.images import decode_image

FMNIST_HALF_SEED = 0
HOLDOUT_FRACTION = 0.1
HOLDOUT_SEED = 0
CAMERA_MODEL = "resnet18_imagenette"
SMALL_MODEL = "mnv2_fmnist"


def shuffle_order(count: int, seed: int) -> np.ndarray:
    """A fixed random order of ``count`` items."""
    return np.random.default_rng(seed).permutation(count)


@dataclass(frozen=True)
class LabelledImages:
    """uint8 images (N, H, W) or (N, H, W, 3), int64 labels, and where they come from."""

    images: np.ndarray
    labels: np.ndarray
    description: str
    class_names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.labels)

    def head(self, count: int | None) -> LabelledImages:
        """The first ``count`` images (all when None)."""
        if count is None:
            return self
        return LabelledImages(self.images[:count], self.labels[:count], self.description,
                              self.class_names)

    def shuffled(self, seed: int, window: slice | None = None) -> LabelledImages:
        """The same images in a fixed random order (a folder split is sorted by class); only
        ``window`` of that order when given (from a memory-mapped cache, only those images
        are read: all 3,925 camera frames take 2.3 s, a run's 50 next to nothing)."""
        order = shuffle_order(len(self.labels), seed)
        if window is not None:
            order = order[window]
        return LabelledImages(self.images[order], self.labels[order],
                              f"{self.description}, in random order (seed {seed})",
                              self.class_names)


def dataset_of(model: str) -> str:
    """``fashion-mnist`` or ``imagenette`` for a model name."""
    if model.endswith("imagenette"):
        return "imagenette"
    if model.endswith("fmnist") or model == "mnv2_tiny":
        return "fashion-mnist"
    raise KeyError(f"no workload is known for model {model!r}")


def class_names(model: str) -> tuple[str, ...]:
    """The model's class names, in label order."""
    if dataset_of(model) == "imagenette":
        return tuple(IMAGENETTE_CLASSES[w] for w in sorted(IMAGENETTE_CLASSES))
    from splitnet.data.fashion_mnist import CLASS_NAMES

    return CLASS_NAMES


def _fmnist_halves() -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(FMNIST_HALF_SEED).permutation(10_000)
    return np.sort(order[:5000]), np.sort(order[5000:])


def _fmnist(which: str, data_dir: str | os.PathLike[str] | None) -> LabelledImages:
    from splitnet.data.fashion_mnist import CLASS_NAMES

    test = load_split("test", data_dir)
    card_idx, eval_idx = _fmnist_halves()
    idx = card_idx if which == "card" else eval_idx
    half = "A" if which == "card" else "B"
    return LabelledImages(test.images[idx], test.labels[idx],
                          f"Fashion-MNIST test, fixed half {half} ({len(idx)} images, seed "
                          f"{FMNIST_HALF_SEED})", CLASS_NAMES)


def _imagenette(which: str, data_dir: str | os.PathLike[str] | None,
                cache_dir: str | os.PathLike[str] | None) -> LabelledImages:
    root = find_imagenette(data_dir)
    names = tuple(IMAGENETTE_CLASSES.get(w, w) for w in
                  sorted(p.name for p in (root / "val").iterdir() if p.is_dir()))
    if which == "eval":
        split = load_image_folder(root / "val", cache_dir=cache_dir)
        return LabelledImages(np.asarray(split.images), split.labels,
                              f"Imagenette val ({len(split)} images)", names)
    items, _ = list_image_folder(root / "train")
    labels = np.array([c for _, c in items], dtype=np.int64)
    _, held = holdout_split(labels, HOLDOUT_FRACTION, HOLDOUT_SEED)
    images = np.stack([decode_image(items[i][0]) for i in held])
    return LabelledImages(images, labels[held],
                          f"Imagenette train, held-apart {HOLDOUT_FRACTION:.0%} "
                          f"({len(held)} images, seed {HOLDOUT_SEED})", names)


def card_images(model: str, data_dir: str | os.PathLike[str] | None = None,
                cache_dir: str | os.PathLike[str] | None = None) -> LabelledImages:
    """The held-apart images a model's card (and its exit thresholds) are measured on."""
    if dataset_of(model) == "imagenette":
        return _imagenette("card", data_dir, cache_dir)
    return _fmnist("card", data_dir)


def eval_images(model: str, data_dir: str | os.PathLike[str] | None = None,
                cache_dir: str | os.PathLike[str] | None = None) -> LabelledImages:
    """The images benchmarks and experiments score a model on."""
    if dataset_of(model) == "imagenette":
        return _imagenette("eval", data_dir, cache_dir)
    return _fmnist("eval", data_dir)


STREAM_SEED = 0


def stream_images(model: str, data_dir: str | os.PathLike[str] | None = None,
                  cache_dir: str | os.PathLike[str] | None = None,
                  window: slice | None = None) -> LabelledImages:
    """The eval images as a camera meets them: every class mixed, in a fixed random order
    (seed ``STREAM_SEED``), or ``window`` of that stream. Experiments and the device's demo
    take inputs from its front; Imagenette's val folder, read in order, would give 50 tench
    before the first dog."""
    return eval_images(model, data_dir, cache_dir).shuffled(STREAM_SEED, window)


def stream_labels(model: str, data_dir: str | os.PathLike[str] | None = None,
                  cache_dir: str | os.PathLike[str] | None = None) -> np.ndarray:
    """The labels of ``stream_images``, in its order, without reading its images."""
    scored = eval_images(model, data_dir, cache_dir)
    return scored.labels[shuffle_order(len(scored), STREAM_SEED)]


def default_cache_dir() -> Path:
    """Where decoded image arrays are cached (``$XDG_CACHE_HOME/splitnet``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "splitnet"
