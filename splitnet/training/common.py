"""Pieces every training recipe shares: the LR schedule, distillation, resumable state.

    state file (per stage) ◄─ save_state after every epoch ─┐
         └─► load_state on start: same recipe? resume : refuse ┘
"""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F


def one_cycle_lr(peak: float, step: int, total: int, warmup: int) -> float:
    """Linear warm-up from peak/10, then cosine to zero."""
    if step < warmup:
        return peak * (0.1 + 0.9 * step / max(warmup, 1))
    fraction = (step - warmup) / max(total - warmup, 1)
    return peak * 0.5 * (1 + math.cos(math.pi * min(fraction, 1.0)))


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor,
                      temperature: float, weight: float) -> torch.Tensor:
    """KL to the teacher's softened logits (weight) mixed with cross-entropy (1 - weight)."""
    t = temperature
    soft = F.kl_div(F.log_softmax(student / t, 1), F.softmax(teacher / t, 1),
                    reduction="batchmean") * t * t
    return weight * soft + (1 - weight) * F.cross_entropy(student, labels)


def save_state(path: Path, recipe: Any, **state: Any) -> None:
    """Write a stage's resumable state atomically (the recipe is stored to check resumes)."""
    tmp = path.with_suffix(".tmp")
    torch.save({"recipe": asdict(recipe), **state}, tmp)
    tmp.replace(path)


def load_state(path: Path, recipe: Any, model: torch.nn.Module,
               optimizer: torch.optim.Optimizer) -> dict[str, Any] | None:
    """Restore model and optimizer from ``path`` if it exists; None when starting afresh.

    A state written by a different recipe is refused: resuming it would silently train
    something else than what the command line says. The one difference allowed is more
    ``epochs``: that extends a finished run, the schedule following the longer run's.
    """
    if not path.is_file():
        return None
    state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=False)
    saved, wanted = dict(state["recipe"]), asdict(recipe)
    if "epochs" in wanted and saved.get("epochs", 0) <= wanted["epochs"]:
        saved["epochs"] = wanted["epochs"]
    if saved != wanted:
        raise SystemExit(f"{path} was written by a different recipe; remove it or use "
                         "another --work-dir")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    return state
