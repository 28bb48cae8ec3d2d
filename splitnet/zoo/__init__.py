"""The model zoo: checkpoints shipped with the package, each with its model card.

    splitnet/zoo/mnv2_fmnist.pt         weights (the training command writes it)
    splitnet/zoo/mnv2_fmnist.card.json  model card (profiling writes it)
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from splitnet.checkpoint import LoadedModel, load_checkpoint

ZOO_DIR = Path(__file__).resolve().parent
DEFAULT_MODEL = "mnv2_fmnist"
DEFAULT_CHECKPOINT = ZOO_DIR / f"{DEFAULT_MODEL}.pt"


def card_path_for(checkpoint: str | os.PathLike[str]) -> Path:
    """The model card that sits next to a checkpoint."""
    path = Path(checkpoint)
    return path.with_name(path.stem + ".card.json")


def load_pretrained(checkpoint: str | os.PathLike[str] | None = None) -> LoadedModel:
    """The shipped model (or the checkpoint named), ready for inference."""
    return load_checkpoint(checkpoint or DEFAULT_CHECKPOINT)


def load_card(checkpoint: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The model card of the shipped model (or of the checkpoint named)."""
    path = card_path_for(checkpoint or DEFAULT_CHECKPOINT)
    if not path.is_file():
        raise FileNotFoundError(
            f"model card {path} not found; write it with 'python -m splitnet.profile'"
        )
    card: dict[str, Any] = json.loads(path.read_text())
    return card
