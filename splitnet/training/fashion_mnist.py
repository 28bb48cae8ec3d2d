"""Train the Fashion-MNIST model from scratch: backbone, then exits, then bottlenecks.

    phase 1  backbone      images (augmented) ──► backbone ──► CE(label smoothing)
    phase 2  exits         frozen backbone features ──► exit head ──► KD(teacher) + CE
    phase 3  bottlenecks   frozen features F ──► enc(w) ─► Q(bits) ─► dec ──► F'  ──► frozen tail
                           loss = MSE(F', F) + KD(tail(F'), teacher) + CE, sandwich rule over w

Phases 2 and 3 train on activations cached once from the frozen backbone, which is what
keeps the whole recipe inside 90 minutes on two CPU cores. Every epoch ends with a resumable
state file; re-running the same command continues where it stopped.

Run by ``python -m splitnet.train`` (see ``--help``).
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from splitnet.data.fashion_mnist import load_split
from splitnet.model import SplitModel, create_model
from splitnet.quantize import fake_quantize_unit_range
from splitnet.training.common import distillation_loss, one_cycle


@dataclass(frozen=True)
class Recipe:
    """Every knob of a training run; the defaults train the shipped model."""

    arch: str = "mnv2_fmnist"
    seed: int = 0
    batch_size: int = 128
    backbone_epochs: int = 30
    backbone_lr: float = 0.1
    weight_decay: float = 3e-4
    label_smoothing: float = 0.1
    exit_epochs: int = 8
    bottleneck_epochs: tuple[int, ...] = (2, 3, 10)  # per split point 1, 2, 3
    head_lr: float = 2e-3  # exits and bottlenecks (Adam)
    kd_temperature: float = 2.0
    kd_weight: float = 0.7
    train_limit: int | None = None  # first N training images only (for quick runs)
    bits: tuple[int, ...] = field(default=(2, 4, 8))


# ------------------------------------------------------------------------ augmentation
def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random 2-pixel shift, horizontal flip and random erasing, for a whole batch."""
    batch, _, height, width = x.shape
    padded = F.pad(x, (2, 2, 2, 2))
    dy = torch.randint(0, 5, (batch,), generator=gen)
    dx = torch.randint(0, 5, (batch,), generator=gen)
    rows = (dy[:, None] + torch.arange(height))[:, :, None]
    cols = (dx[:, None] + torch.arange(width))[:, None, :]
    out = padded[torch.arange(batch)[:, None, None], 0, rows, cols].unsqueeze(1)
    flip = torch.rand(batch, generator=gen) < 0.5
    out = torch.where(flip[:, None, None, None], out.flip(3), out)
    # random erasing (Zhong et al. 2020): p=0.5, area 2-20%, aspect 0.3-3.3
    area = torch.empty(batch).uniform_(0.02, 0.2, generator=gen) * height * width
    aspect = torch.exp(torch.empty(batch).uniform_(math.log(0.3), math.log(3.3), generator=gen))
    eh = (area * aspect).sqrt().clamp(1, height).long()
    ew = (area / aspect).sqrt().clamp(1, width).long()
    top = (torch.rand(batch, generator=gen) * (height - eh + 1)).long()
    left = (torch.rand(batch, generator=gen) * (width - ew + 1)).long()
    ys = torch.arange(height)[None, :, None]
    xs = torch.arange(width)[None, None, :]
    inside = ((ys >= top[:, None, None]) & (ys < (top + eh)[:, None, None])
              & (xs >= left[:, None, None]) & (xs < (left + ew)[:, None, None]))
    erase = (torch.rand(batch, generator=gen) < 0.5)[:, None, None] & inside
    return out.masked_fill(erase.unsqueeze(1), 0.0)


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor,
            recipe: Recipe) -> torch.Tensor:
    """Distillation against the backbone's logits, mixed with the true labels."""
    return distillation_loss(student, teacher, labels, recipe.kd_temperature, recipe.kd_weight)


# ------------------------------------------------------------------------ the trainer
class Trainer:
    """Runs the phases in order, saving a resumable state after every epoch."""

    PHASES = ("backbone", "exits", "bottlenecks", "done")

    def __init__(self, recipe: Recipe, work_dir: Path, data_dir: str | None = None,
                 log: bool = True) -> None:
        self.recipe = recipe
        self.work_dir = work_dir
        self.state_path = work_dir / "state.pt"
        self.log_enabled = log
        torch.manual_seed(recipe.seed)
        self.model: SplitModel = create_model(recipe.arch)
        self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        train = load_split("train", data_dir)
        test = load_split("test", data_dir)
        self.train_x, self.train_y = train.tensors(recipe.train_limit)
        self.test_x, self.test_y = test.tensors()
        self.phase = "backbone"
        self.epoch = 0  # epochs completed within the phase
        self.sub = 0  # sub-phase index (split point for bottlenecks)
        self.optimizer_state: dict[str, Any] | None = None
        self.history: list[dict[str, Any]] = []
        self.elapsed_s = 0.0

    # ---------------------------------------------------------------- state
    def load_state(self) -> bool:
        if not self.state_path.is_file():
            return False
        state = torch.load(self.state_path, map_location="cpu", weights_only=False)
        if state["recipe"] != asdict(self.recipe):
            raise SystemExit(
                f"{self.state_path} was written by a different recipe; pass --no-resume "
                "to start again, or --work-dir to use another folder"
            )
        self.model.load_state_dict(state["model"])
        self.phase, self.epoch, self.sub = state["phase"], state["epoch"], state["sub"]
        self.optimizer_state = state["optimizer"]
        self.history = state["history"]
        self.elapsed_s = state["elapsed_s"]
        self.say(f"resumed from {self.state_path}: phase {self.phase}, sub {self.sub}, "
                 f"epoch {self.epoch}, {self.elapsed_s / 60:.1f} min already spent")
        return True

    def save_state(self, optimizer: torch.optim.Optimizer | None, started: float) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        state = {
            "recipe": asdict(self.recipe), "model": self.model.state_dict(),
            "phase": self.phase, "epoch": self.epoch, "sub": self.sub,
            "optimizer": optimizer.state_dict() if optimizer is not None else None,
            "history": self.history, "elapsed_s": self.elapsed_s + time.monotonic() - started,
        }
        tmp = self.state_path.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.state_path)

    def say(self, text: str) -> None:
        if self.log_enabled:
            print(text, file=sys.stderr, flush=True)

    # ---------------------------------------------------------------- phases
    def run(self) -> dict[str, Any]:
        started = time.monotonic()
        if self.phase == "backbone":
            self.train_backbone(started)
            self.phase, self.epoch, self.optimizer_state = "exits", 0, None
            self.save_state(None, started)
        if self.phase in ("exits", "bottlenecks"):
            cache = self.cache_features()
            if self.phase == "exits":
                self.train_exits(cache, started)
                self.phase, self.epoch, self.sub, self.optimizer_state = "bottlenecks", 0, 0, None
                self.save_state(None, started)
            self.train_bottlenecks(cache, started)
            self.phase = "done"
            self.save_state(None, started)
        total_s = self.elapsed_s + time.monotonic() - started
        return {"train_minutes": round(total_s / 60, 2), "history": self.history}

    def train_backbone(self, started: float) -> None:
        recipe, model = self.recipe, self.model
        params = [p for n, p in model.named_parameters()
                  if not n.startswith(("bottlenecks.", "exits."))]
        decay = [p for p in params if p.dim() > 1]
        no_decay = [p for p in params if p.dim() <= 1]
        optimizer = torch.optim.SGD(
            [{"params": decay, "weight_decay": recipe.weight_decay},
             {"params": no_decay, "weight_decay": 0.0}],
            lr=recipe.backbone_lr, momentum=0.9, nesterov=True)
        if self.optimizer_state is not None:
            optimizer.load_state_dict(self.optimizer_state)
        n = len(self.train_y)
        steps_per_epoch = math.ceil(n / recipe.batch_size)
        total = steps_per_epoch * recipe.backbone_epochs
        schedule = one_cycle(optimizer, recipe.backbone_lr, total, steps_per_epoch,
                             self.epoch * steps_per_epoch)
        while self.epoch < recipe.backbone_epochs:
            epoch = self.epoch
            gen = torch.Generator().manual_seed(recipe.seed * 1000 + epoch)
            torch.manual_seed(recipe.seed * 1000 + epoch)
            order = torch.randperm(n, generator=gen)
            model.train()
            bar = tqdm(range(steps_per_epoch),
                           desc=f"backbone {epoch + 1}/{recipe.backbone_epochs}", disable=None)
            running = 0.0
            for step in bar:
                index = order[step * recipe.batch_size:(step + 1) * recipe.batch_size]
                x = augment(self.train_x[index], gen).contiguous(
                    memory_format=torch.channels_last)
                loss = F.cross_entropy(model.backbone(x), self.train_y[index],
                                       label_smoothing=recipe.label_smoothing)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                running = 0.98 * running + 0.02 * loss.item() if step else loss.item()
                bar.set_postfix(loss=running, lr=schedule.get_last_lr()[0])
            self.epoch += 1
            record: dict[str, Any] = {"phase": "backbone", "epoch": self.epoch, "loss": running}
            if self.epoch % 5 == 0 or self.epoch == recipe.backbone_epochs:
                record["test_accuracy"] = self.test_accuracy(lambda x: model.backbone(x))
                self.say(f"  backbone epoch {self.epoch}: test accuracy "
                         f"{record['test_accuracy']:.4f}")
            self.history.append(record)
            self.save_state(optimizer, started)

    @torch.no_grad()
    def cache_features(self) -> dict[str, torch.Tensor]:
        """Frozen-backbone activations at every split point, plus the teacher's logits."""
        self.model.eval()
        feats: dict[int, list[torch.Tensor]] = {p: [] for p in self.model.split_points}
        logits = []
        batches = torch.split(torch.arange(len(self.train_y)), 500)
        for index in tqdm(batches, desc="caching activations", disable=None):
            h = self.train_x[index].contiguous(memory_format=torch.channels_last)
            for point in self.model.split_points:
                h = self.model.network.run(h, point - 1, point)
                feats[point].append(h.to(torch.float16))
            logits.append(self.model.logits_from(h, self.model.split_points[-1]))
        cache = {f"features{p}": torch.cat(v) for p, v in feats.items()}
        cache["teacher"] = torch.cat(logits)
        return cache

    def _freeze_backbone(self) -> None:
        self.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    def train_exits(self, cache: dict[str, torch.Tensor], started: float) -> None:
        recipe, model = self.recipe, self.model
        self._freeze_backbone()
        exit_params = [p for e in model.exits.values() for p in e.parameters()]
        for param in exit_params:
            param.requires_grad_(True)
        optimizer = torch.optim.Adam(exit_params, lr=recipe.head_lr)
        if self.optimizer_state is not None:
            optimizer.load_state_dict(self.optimizer_state)
        n, batch = len(self.train_y), 256
        steps = math.ceil(n / batch)
        schedule = one_cycle(optimizer, recipe.head_lr, steps * recipe.exit_epochs, 0,
                             self.epoch * steps)
        while self.epoch < recipe.exit_epochs:
            gen = torch.Generator().manual_seed(recipe.seed * 1000 + 100 + self.epoch)
            order = torch.randperm(n, generator=gen)
            for e in model.exits.values():
                e.train()
            bar = tqdm(range(steps), desc=f"exits {self.epoch + 1}/{recipe.exit_epochs}",
                       disable=None)
            for step in bar:
                index = order[step * batch:(step + 1) * batch]
                loss = sum(
                    kd_loss(model.exit_head(p)(cache[f"features{p}"][index].float()),
                            cache["teacher"][index], self.train_y[index], recipe)
                    for p in model.spec.exit_points)
                assert isinstance(loss, torch.Tensor)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                bar.set_postfix(loss=loss.item())
            self.epoch += 1
            model.eval()
            record: dict[str, Any] = {"phase": "exits", "epoch": self.epoch}
            for point in model.spec.exit_points:
                record[f"exit{point}_test_accuracy"] = self.test_accuracy(
                    lambda x, pt=point: model.exit_head(pt)(model.features(x, pt)))
            self.say(f"  exits epoch {self.epoch}: " + ", ".join(
                f"{k}={v:.4f}" for k, v in record.items() if k.endswith("accuracy")))
            self.history.append(record)
            self.save_state(optimizer, started)

    def train_bottlenecks(self, cache: dict[str, torch.Tensor], started: float) -> None:
        """Long because: one resumable training stage reads best as one loop."""
        recipe, model = self.recipe, self.model
        self._freeze_backbone()
        points = model.split_points
        while self.sub < len(points):
            point = points[self.sub]
            epochs = recipe.bottleneck_epochs[point - 1]
            bottleneck = model.bottleneck(point)
            for p in bottleneck.parameters():
                p.requires_grad_(True)
            optimizer = torch.optim.Adam(bottleneck.parameters(), lr=recipe.head_lr)
            if self.optimizer_state is not None:
                optimizer.load_state_dict(self.optimizer_state)
                self.optimizer_state = None
            features = cache[f"features{point}"]
            feature_var = features[:2000].float().var().item()
            widths = bottleneck.widths
            n, batch = len(self.train_y), recipe.batch_size
            steps = math.ceil(n / batch)
            schedule = one_cycle(optimizer, recipe.head_lr, steps * epochs, 0,
                                 self.epoch * steps)
            while self.epoch < epochs:
                gen = torch.Generator().manual_seed(recipe.seed * 1000 + 200 + 10 * point
                                                    + self.epoch)
                order = torch.randperm(n, generator=gen)
                bottleneck.train()
                bar = tqdm(range(steps),
                               desc=f"bottleneck@split{point} {self.epoch + 1}/{epochs}",
                                   disable=None)
                for step in bar:
                    index = order[step * batch:(step + 1) * batch]
                    target = features[index].float().contiguous(memory_format=torch.channels_last)
                    # sandwich rule: widest, narrowest and one random width in between
                    middle = widths[1:-1]
                    pick = middle[int(torch.randint(len(middle), (1,), generator=gen))]
                    optimizer.zero_grad(set_to_none=True)
                    total_loss = 0.0
                    for k, width in enumerate((widths[-1], widths[0], pick)):
                        bits = recipe.bits[(step + k) % len(recipe.bits)]
                        code = fake_quantize_unit_range(bottleneck.encode(target, width), bits)
                        rebuilt = bottleneck.decode(code)
                        mse = F.mse_loss(rebuilt, target) / feature_var
                        logits = model.logits_from(rebuilt, point)
                        loss = mse + kd_loss(logits, cache["teacher"][index],
                                             self.train_y[index], recipe)
                        loss.backward()
                        total_loss += loss.item()
                    optimizer.step()
                    schedule.step()
                    bar.set_postfix(loss=total_loss / 3)
                self.epoch += 1
                self.history.append({"phase": f"bottleneck{point}", "epoch": self.epoch})
                self.save_state(optimizer, started)
            bottleneck.eval()
            for p in bottleneck.parameters():
                p.requires_grad_(False)
            widest, narrowest = widths[-1], widths[0]
            widest_acc = self.test_accuracy(
                lambda x, pt=point, w=widest: self._bneck_logits(x, pt, w, 8))
            narrowest_acc = self.test_accuracy(
                lambda x, pt=point, w=narrowest: self._bneck_logits(x, pt, w, 2))
            self.say(f"  bottleneck@split{point}: test accuracy w{widest}/b8 {widest_acc:.4f}, "
                     f"w{narrowest}/b2 {narrowest_acc:.4f}")
            self.sub += 1
            self.epoch = 0
            self.save_state(None, started)

    def _bneck_logits(self, x: torch.Tensor, point: int, width: int, bits: int) -> torch.Tensor:
        h = self.model.features(x, point)
        return self.model.logits_from(self.model.bottleneck(point)(h, width, bits), point)

    @torch.no_grad()
    def test_accuracy(self, fn: Any, limit: int = 10_000) -> float:
        was_training = self.model.training
        self.model.eval()
        correct = 0
        x_all, y_all = self.test_x[:limit], self.test_y[:limit]
        for x, y in zip(torch.split(x_all, 1000), torch.split(y_all, 1000), strict=True):
            correct += int((fn(x.contiguous(memory_format=torch.channels_last)).argmax(1) == y)
                           .sum())
        self.model.train(was_training)
        return correct / len(y_all)
