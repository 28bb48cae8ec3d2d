"""The model zoo: checkpoints shipped with the package, each with its model card.

    splitnet/zoo/mnv2_fmnist.pt                  Fashion-MNIST, small and fast (tests, CI)
    splitnet/zoo/resnet18_imagenette.pt          camera frames, 224x224 (float16 weights,
                                                 int8 head calibration)
    splitnet/zoo/<name>.card.json                model card (``python -m splitnet.profile``)
"""

from __future__ import annotations

import os
from pathlib import Path

from splitnet.card import ModelCard
from splitnet.checkpoint import CheckpointError, LoadedModel, load_checkpoint

ZOO_DIR = Path(__file__).resolve().parent
DEFAULT_MODEL = "resnet18_imagenette"  # the camera workload: what the system is for
SMALL_MODEL = "mnv2_fmnist"  # small and fast: tests and CI
DEFAULT_CHECKPOINT = ZOO_DIR / f"{DEFAULT_MODEL}.pt"


def list_zoo() -> list[str]:
    """Names of the shipped models."""
    return sorted(p.stem for p in ZOO_DIR.glob("*.pt"))


def checkpoint_for(model: str) -> Path:
    """The shipped checkpoint of ``model``."""
    path = ZOO_DIR / f"{model}.pt"
    if not path.is_file():
        raise FileNotFoundError(f"no shipped model {model!r}; the zoo has {list_zoo()}")
    return path


def card_path_for(checkpoint: str | os.PathLike[str]) -> Path:
    """The model card that sits next to a checkpoint."""
    path = Path(checkpoint)
    return path.with_name(path.stem + ".card.json")


def check_card(checkpoint: str | os.PathLike[str], loaded: LoadedModel) -> bool:
    """Raise CheckpointError when the card next to ``checkpoint`` describes other weights
    than ``loaded`` (the weights' hash is the model id); False when there is no card."""
    path = card_path_for(checkpoint)
    if not path.is_file():
        return False
    card = ModelCard.load(path)
    if card.model_id != loaded.model_id:
        raise CheckpointError(
            f"{checkpoint} holds {loaded.model_id}, but its card {path.name} describes "
            f"{card.model_id}: rebuild the card with 'python -m splitnet.profile' or put "
            "the matching checkpoint back")
    return True


def load_pretrained(checkpoint: str | os.PathLike[str] | None = None) -> LoadedModel:
    """The shipped model (or the checkpoint named), ready for inference."""
    return load_checkpoint(checkpoint or DEFAULT_CHECKPOINT)


def load_card(checkpoint: str | os.PathLike[str] | None = None) -> ModelCard:
    """The model card of the shipped model (or of the checkpoint named)."""
    return ModelCard.load(card_path_for(checkpoint or DEFAULT_CHECKPOINT))
