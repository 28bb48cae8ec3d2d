"""Pieces every training recipe shares: the LR schedule, distillation, resumable state.

    state file (per stage) ◄─ save_state after every epoch ─┐
         └─► load_state on start: same recipe? resume : refuse ┘
"""

from __future__ import annotations

import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.optim.lr_scheduler import OneCycleLR


def one_cycle(optimizer: torch.optim.Optimizer, peak: float | list[float], total: int,
              warmup: int, done: int = 0) -> OneCycleLR:
    """torch's one-cycle schedule: from peak/10 up to ``peak`` over ``warmup`` steps, then
    down to about zero by step ``total``, cosine both ways; moved on by ``done`` steps (a
    resumed run). ``peak`` may be one value per parameter group. Call ``step()`` after
    each optimizer step."""
    # torch needs two steps or more in each of its phases (a phase of one divides by zero)
    warmup = max(warmup, 2)
    total = max(total, warmup + 2)
    schedule = OneCycleLR(optimizer, max_lr=peak, total_steps=total, pct_start=warmup / total,
                          anneal_strategy="cos", cycle_momentum=False, div_factor=10.0,
                          final_div_factor=1e4)
    with warnings.catch_warnings():  # steps taken without the optimizer's: a resumed run
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(min(done, total - 1)):
            schedule.step()
    return schedule


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


def read_state(path: Path, recipe: Any, allow_more_epochs: bool = False
               ) -> dict[str, Any] | None:
    """A stage's resumable state from ``path``, or None when starting afresh.

    A state written by a different recipe is refused: resuming it would silently train
    something else than what the command line says. ``allow_more_epochs``: the one
    difference allowed is more ``epochs``, which extends a finished run (the schedule
    following the longer run's).
    """
    if not path.is_file():
        return None
    state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=False)
    saved, wanted = dict(state["recipe"]), asdict(recipe)
    if allow_more_epochs and "epochs" in wanted and saved.get("epochs", 0) <= wanted["epochs"]:
        saved["epochs"] = wanted["epochs"]
    if saved != wanted:
        raise SystemExit(f"{path} was written by a different recipe; remove it or use "
                         "another --work-dir")
    return state


def load_state(path: Path, recipe: Any, model: torch.nn.Module,
               optimizer: torch.optim.Optimizer) -> dict[str, Any] | None:
    """Restore model and optimizer from ``path`` if it exists (``read_state``, more epochs
    allowed); None when starting afresh."""
    state = read_state(path, recipe, allow_more_epochs=True)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    return state
