"""Train the camera model (ResNet-18 on Imagenette) from scratch, in resumable stages.

    stage 1  backbone     train images (random resized crops, 128 ─► 192 px) ─► ResNet-18
                          CE with label smoothing, SGD one-cycle, bf16 autocast
                          checkpoint chosen on the held-apart part of train, at 224 px
    stage 2  heads        frozen backbone ─► exits (KD) and, per split point, the slimmable
                          bottleneck: enc(w) ─► Q(bits) ─► dec ─► frozen tail, loss =
                          MSE(features) + KD(teacher logits), sandwich rule over widths
    stage 2b refine       per split point, alone: frozen head ─► cached 224 px activations
                          ─► bottleneck ─► frozen tail, same loss; a few epochs each
    stage 2c entropy      the learned entropy bottleneck at split 1, on cached activations
                          of the frozen network (``splitnet.training.entropy_bottleneck``)
    stage 3  int8         post-training static quantization of the device heads (torch.ao)
    stage 4  card         model card on the held-apart images ─► splitnet/zoo/

Each stage writes its output file in the work folder and keeps a state file after every
epoch; re-running the same command skips finished stages and resumes the running one.
``val`` is never read here: it is for the final evaluation (``splitnet.bench``) only.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from splitnet.augment import random_resized_crop, resize_batch
from splitnet.data.imagenette import ImageSplit, find_imagenette, holdout_split, load_image_folder
from splitnet.model import SplitModel
from splitnet.model.resnet import ResNet
from splitnet.training.common import (
    distillation_loss,
    load_state,
    one_cycle,
    read_state,
    save_state,
)
from splitnet.training.entropy_bottleneck import (
    EntropyRecipe,
    attach_entropy_bottleneck,
    load_for_training,
    train_entropy_bottleneck,
)


@dataclass(frozen=True)
class BackboneRecipe:
    """Stage 1. The defaults train the shipped backbone (about 50 min on 2 cores)."""

    seed: int = 0
    batch_size: int = 64
    resolutions: tuple[int, ...] = (128,) * 18 + (160,) * 6 + (192,) * 4
    peak_lr: float = 0.1
    warmup_epochs: int = 2
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    holdout_fraction: float = 0.1
    eval_size: int = 224
    train_limit: int | None = None  # first N training images only (quick runs and tests)


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on conv and linear weights only, not on norms and biases."""
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.ndim > 1 else no_decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def descend(optimizer: torch.optim.Optimizer, loss: torch.Tensor, losses: list[float]) -> None:
    """One optimizer step on ``loss``, which is recorded in ``losses``."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    losses.append(float(loss.detach()))


@torch.no_grad()
def accuracy(model: torch.nn.Module, split: ImageSplit, size: int = 224,
             batch_size: int = 100, bf16: bool = False) -> float:
    """Top-1 accuracy of ``model`` (image ─► logits) on whole frames at ``size`` px."""
    model.eval()
    correct = 0
    for start in range(0, len(split), batch_size):
        x = resize_batch(torch.from_numpy(np.ascontiguousarray(
            split.images[start:start + batch_size])), size)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(x)
        labels = torch.from_numpy(split.labels[start:start + batch_size])
        correct += int((logits.argmax(1) == labels).sum())
    return correct / len(split)


class CameraData:
    """Imagenette's train split, decoded once, divided into training and held-apart parts."""

    def __init__(self, data_dir: str | None, cache_dir: Path, holdout_fraction: float,
                 seed: int, train_limit: int | None = None) -> None:
        root = find_imagenette(data_dir)
        full = load_image_folder(root / "train", cache_dir=cache_dir)
        train_idx, held_idx = holdout_split(full.labels, holdout_fraction, seed)
        if train_limit is not None:
            train_idx = train_idx[:train_limit]
            held_idx = held_idx[: max(train_limit // 4, 10)]
        self.train = full.subset(train_idx)
        self.held = full.subset(held_idx)
        self.images = torch.from_numpy(np.ascontiguousarray(self.train.images))
        self.labels = torch.from_numpy(self.train.labels)


def train_backbone(recipe: BackboneRecipe, data: CameraData, work_dir: Path,
                   log: Any = print, model: ResNet | None = None) -> Path:
    """Stage 1: ResNet-18 (from scratch unless ``model`` comes initialised). Returns the
    path of the chosen backbone weights.

    Long because: one resumable training stage reads best as one loop."""
    out_path = work_dir / "backbone.pt"
    if out_path.is_file():
        return out_path
    state_path = work_dir / "backbone_state.pt"
    torch.manual_seed(recipe.seed)
    if model is None:
        model = ResNet(num_classes=10).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    optimizer = torch.optim.SGD(param_groups(model, recipe.weight_decay), lr=recipe.peak_lr,
                                momentum=recipe.momentum, nesterov=True)
    epoch, history = 0, []
    best: dict[str, Any] = {"accuracy": -1.0, "epoch": -1, "state": None}
    elapsed = 0.0
    state = load_state(state_path, recipe, model, optimizer)
    if state is not None:
        epoch, history, best, elapsed = (state["epoch"], state["history"], state["best"],
                                         state["elapsed_s"])
        log(f"backbone: resumed after epoch {epoch}")
    n = len(data.labels)
    steps_per_epoch = n // recipe.batch_size
    total = steps_per_epoch * len(recipe.resolutions)
    warmup = steps_per_epoch * recipe.warmup_epochs
    schedule = one_cycle(optimizer, recipe.peak_lr, total, warmup, epoch * steps_per_epoch)
    gen = torch.Generator().manual_seed(recipe.seed)
    while epoch < len(recipe.resolutions):
        started = time.monotonic()
        gen.manual_seed(recipe.seed * 1000 + epoch)
        size = recipe.resolutions[epoch]
        order = torch.randperm(n, generator=gen)
        model.train()
        losses: list[float] = []
        bar = tqdm(range(steps_per_epoch),
                       desc=f"backbone epoch {epoch + 1}/{len(recipe.resolutions)} @{size}px",
                           disable=None)
        for step in bar:
            idx = order[step * recipe.batch_size:(step + 1) * recipe.batch_size]
            x = random_resized_crop(data.images[idx], size, gen)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                logits = model(x)
            loss = F.cross_entropy(logits.float(), data.labels[idx],
                                   label_smoothing=recipe.label_smoothing)
            descend(optimizer, loss, losses)
            schedule.step()
            if step % 20 == 0:
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
        held_acc = accuracy(model, data.held, recipe.eval_size, bf16=True)
        epoch += 1
        elapsed += time.monotonic() - started
        history.append({"epoch": epoch, "size": size, "loss": float(np.mean(losses)),
                        "held_accuracy": held_acc, "elapsed_s": elapsed})
        if held_acc >= best["accuracy"]:
            best = {"accuracy": held_acc, "epoch": epoch,
                    "state": {k: v.clone() for k, v in model.state_dict().items()}}
        log(f"backbone epoch {epoch}/{len(recipe.resolutions)} @{size}px: "
            f"loss {np.mean(losses):.3f}, held-apart accuracy {held_acc:.4f}, "
            f"{elapsed / 60:.1f} min so far")
        save_state(state_path, recipe, model=model.state_dict(),
                   optimizer=optimizer.state_dict(), epoch=epoch, history=history, best=best,
                   elapsed_s=elapsed)
    torch.save({"model": best["state"], "epoch": best["epoch"],
                "held_accuracy": best["accuracy"], "history": history,
                "elapsed_s": elapsed, "recipe": asdict(recipe)}, out_path)
    log(f"backbone: chose epoch {best['epoch']} (held-apart accuracy {best['accuracy']:.4f})")
    return out_path


@dataclass(frozen=True)
class HeadsRecipe:
    """Stage 2: exits and bottlenecks on the frozen backbone (about 30 min on 2 cores)."""

    seed: int = 0
    batch_size: int = 64
    epochs: int = 8
    size: int = 160
    crop_scale: tuple[float, float] = (0.35, 1.0)
    lr: float = 2e-3
    kd_temperature: float = 2.0
    kd_weight: float = 0.7
    feature_weight: float = 0.5
    bn_recalibration_images: int = 1024  # bottleneck BN statistics re-estimated at 224 px


def train_heads(recipe: HeadsRecipe, model: SplitModel, data: CameraData, work_dir: Path,
                log: Any = print) -> Path:
    """Stage 2: every exit and bottleneck, distilled from the frozen backbone at once.

    Per batch and split point, the widest width and one other width (the sandwich rule,
    narrowest included every other step) each at random bits go encoder ─► fake quantizer ─►
    decoder ─► frozen tail; the loss is KD on the logits plus the normalised MSE of the
    rebuilt features.

    Long because: one resumable training stage reads best as one loop."""
    out_path = work_dir / "heads.pt"
    if out_path.is_file():
        return out_path
    state_path = work_dir / "heads_state.pt"
    torch.manual_seed(recipe.seed)
    for param in model.network.parameters():
        param.requires_grad_(False)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=recipe.lr)
    epoch, elapsed, history = 0, 0.0, []
    state = load_state(state_path, recipe, model, optimizer)
    if state is not None:
        epoch, elapsed, history = state["epoch"], state["elapsed_s"], state["history"]
        log(f"heads: resumed after epoch {epoch}")
    n = len(data.labels)
    steps = n // recipe.batch_size
    total = steps * recipe.epochs
    schedule = one_cycle(optimizer, recipe.lr, total, steps // 2, epoch * steps)
    gen = torch.Generator()
    while epoch < recipe.epochs:
        started = time.monotonic()
        gen.manual_seed(recipe.seed * 1000 + epoch)
        order = torch.randperm(n, generator=gen)
        model.train()
        model.network.eval()
        losses: list[float] = []
        bar = tqdm(range(steps), desc=f"exits+bottlenecks epoch {epoch + 1}/{recipe.epochs}",
                   disable=None)
        for step in bar:
            idx = order[step * recipe.batch_size:(step + 1) * recipe.batch_size]
            labels = data.labels[idx]
            x = random_resized_crop(data.images[idx], recipe.size, gen, scale=recipe.crop_scale)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                with torch.no_grad():
                    feats = {}
                    h = x
                    for point in model.split_points:
                        h = model.network.run(h, point - 1, point)
                        feats[point] = h.float()
                    teacher = model.logits_from(h, model.split_points[-1]).float()
                loss = torch.zeros(())
                for point in model.spec.exit_points:
                    logits = model.exit_head(point)(feats[point]).float()
                    loss = loss + distillation_loss(logits, teacher, labels,
                                                    recipe.kd_temperature, recipe.kd_weight)
                for point in model.split_points:
                    loss = loss + bottleneck_loss(model, point, feats[point], teacher, labels,
                                                  step, gen, recipe)
            descend(optimizer, loss, losses)
            schedule.step()
            if step % 10 == 0:
                bar.set_postfix(loss=f"{np.mean(losses[-10:]):.3f}")
        epoch += 1
        elapsed += time.monotonic() - started
        history.append({"epoch": epoch, "loss": float(np.mean(losses)), "elapsed_s": elapsed})
        log(f"heads epoch {epoch}/{recipe.epochs}: loss {np.mean(losses):.3f}, "
            f"{elapsed / 60:.1f} min so far")
        save_state(state_path, recipe, model=model.state_dict(),
                   optimizer=optimizer.state_dict(), epoch=epoch, elapsed_s=elapsed,
                   history=history)
    started = time.monotonic()
    recalibrate_bottleneck_norms(model, data, recipe.bn_recalibration_images)
    elapsed += time.monotonic() - started
    torch.save({"model": model.state_dict(), "history": history, "elapsed_s": elapsed,
                "recipe": asdict(recipe)}, out_path)
    return out_path


def bottleneck_loss(model: SplitModel, point: int, target: torch.Tensor, teacher: torch.Tensor,
                    labels: torch.Tensor, step: int, gen: torch.Generator,
                    recipe: HeadsRecipe | RefineRecipe) -> torch.Tensor:
    """One batch through the bottleneck at ``point``, under the sandwich rule.

    The widest width and one other (the narrowest every other step, else a random one),
    each at random bits, go encoder ─► fake quantizer ─► decoder ─► frozen tail; the loss
    is KD on the logits plus the MSE of the rebuilt features, normalised by their power.
    """
    widths, bits_choices = model.spec.bottleneck_widths, model.spec.bits
    scale = target.pow(2).mean().clamp(min=1e-6)
    other = widths[0] if step % 2 == 0 else widths[int(torch.randint(
        0, len(widths) - 1, (1,), generator=gen))]
    loss = torch.zeros(())
    for width in (widths[-1], other):
        bits = bits_choices[int(torch.randint(0, len(bits_choices), (1,), generator=gen))]
        rebuilt = model.bottleneck(point)(target, width, bits)
        logits = model.logits_from(rebuilt, point).float()
        loss = loss + distillation_loss(logits, teacher, labels, recipe.kd_temperature,
                                        recipe.kd_weight)
        loss = loss + recipe.feature_weight * F.mse_loss(rebuilt.float(), target) / scale
    return loss


@dataclass(frozen=True)
class RefineRecipe:
    """Stage 2b: each bottleneck alone, on cached 224 px features of the frozen backbone.

    Stage 2 trains every exit and bottleneck on shared 160 px crops; its bottlenecks stall
    near 75 % whatever their width. Trained alone on whole 224 px frames (what the model is
    evaluated on), they come within a point or two of the full model in a few epochs. The
    backbone is frozen, so its activations are computed once per split point and reused
    every epoch: an epoch then costs only the bottleneck and the frozen tail.
    """

    seed: int = 0
    batch_size: int = 64
    epochs: tuple[int, ...] = (8, 4, 3)  # per split point, shallowest first
    lr: float = 1e-3
    size: int = 224
    kd_temperature: float = 2.0
    kd_weight: float = 0.7
    feature_weight: float = 0.5


@torch.no_grad()
def cached_activations(model: SplitModel, images: torch.Tensor, point: int, size: int,
                       batch_size: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """The frozen backbone's activation at ``point`` (bf16) and its logits, per image."""
    model.eval()
    features, logits = [], []
    for start in tqdm(range(0, len(images), batch_size), desc=f"caching split {point}",
                      disable=None):
        x = resize_batch(images[start:start + batch_size], size)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            h = model.features(x, point)
            logits.append(model.logits_from(h, point).float())
        features.append(h.to(torch.bfloat16))
    return torch.cat(features), torch.cat(logits)


@torch.no_grad()
def bottleneck_accuracy(model: SplitModel, point: int, features: torch.Tensor,
                        labels: torch.Tensor, width: int, bits: int) -> float:
    """Accuracy through the bottleneck at ``point`` from cached activations."""
    model.eval()
    correct = 0
    for start in range(0, len(labels), 128):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            rebuilt = model.bottleneck(point)(features[start:start + 128].float(), width, bits)
            logits = model.logits_from(rebuilt, point)
        correct += int((logits.argmax(1) == labels[start:start + 128]).sum())
    return correct / len(labels)


def refine_bottlenecks(recipe: RefineRecipe, model: SplitModel, data: CameraData,
                       work_dir: Path, log: Any = print) -> Path:
    """Stage 2b: refine each split point's bottleneck alone, on cached activations.

        train images ─► frozen head (once per point) ─► cache (bf16) + teacher logits
        cache ─► enc(w) ─► Q(bits) ─► dec ─► frozen tail ─► KD + feature MSE (sandwich)

    Resumes per split point and epoch. Returns the path of the refined weights.

    Long because: one resumable training stage (state, split points, epochs, steps, held-
    apart check, save) reads best as one loop."""
    out_path = work_dir / "refined.pt"
    if out_path.is_file():
        return out_path
    if len(recipe.epochs) != len(model.split_points):
        raise ValueError(f"epochs {recipe.epochs} needs one entry per split point "
                         f"{model.split_points}")
    state_path = work_dir / "refine_state.pt"
    torch.manual_seed(recipe.seed)
    for param in model.parameters():
        param.requires_grad_(False)
    position, epoch, elapsed, history = 0, 0, 0.0, []
    saved = read_state(state_path, recipe)
    if saved is not None:
        model.load_state_dict(saved["model"])
        position, epoch = saved["position"], saved["epoch"]
        elapsed, history = saved["elapsed_s"], saved["history"]
        log(f"refine: resumed at split {model.split_points[position]}, epoch {epoch}")
    held_images = torch.from_numpy(np.ascontiguousarray(data.held.images))
    held_labels = torch.from_numpy(data.held.labels)
    widths, bits = model.spec.bottleneck_widths, model.spec.bits
    gen = torch.Generator()
    n = len(data.labels)
    steps = n // recipe.batch_size
    for index, point in enumerate(model.split_points):
        if index < position:
            continue
        if index > position:
            epoch = 0
        epochs = recipe.epochs[index]
        if epoch >= epochs:
            continue
        started = time.monotonic()
        features, teacher = cached_activations(model, data.images, point, recipe.size)
        held_features, _ = cached_activations(model, held_images, point, recipe.size)
        bottleneck = model.bottleneck(point)
        for param in bottleneck.parameters():
            param.requires_grad_(True)
        optimizer = torch.optim.Adam(bottleneck.parameters(), lr=recipe.lr)
        if saved is not None and saved["position"] == index:
            optimizer.load_state_dict(saved["optimizer"])
        schedule = one_cycle(optimizer, recipe.lr, steps * epochs, steps // 2, epoch * steps)
        elapsed += time.monotonic() - started
        while epoch < epochs:
            started = time.monotonic()
            gen.manual_seed(recipe.seed * 1000 + index * 100 + epoch)
            order = torch.randperm(n, generator=gen)
            bottleneck.train()
            losses: list[float] = []
            bar = tqdm(range(steps), desc=f"split {point} bottleneck epoch "
                                              f"{epoch + 1}/{epochs}", disable=None)
            for step in bar:
                idx = order[step * recipe.batch_size:(step + 1) * recipe.batch_size]
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    loss = bottleneck_loss(model, point, features[idx].float(), teacher[idx],
                                           data.labels[idx], step, gen, recipe)
                descend(optimizer, loss, losses)
                schedule.step()
                if step % 10 == 0:
                    bar.set_postfix(loss=f"{np.mean(losses[-10:]):.3f}")
            epoch += 1
            held = {f"w{w}b{b}": bottleneck_accuracy(model, point, held_features, held_labels,
                                                     w, b)
                    for w, b in ((widths[-1], bits[-1]), (widths[-1], 4), (widths[0], 2))}
            elapsed += time.monotonic() - started
            history.append({"split": point, "epoch": epoch, "loss": float(np.mean(losses)),
                            "held_accuracy": held, "elapsed_s": elapsed})
            log(f"refine split {point} epoch {epoch}/{epochs}: loss {np.mean(losses):.3f}, "
                f"held-apart accuracy {held}, {elapsed / 60:.1f} min so far")
            save_state(state_path, recipe, model=model.state_dict(),
                       optimizer=optimizer.state_dict(), position=index, epoch=epoch,
                       elapsed_s=elapsed, history=history)
        for param in bottleneck.parameters():
            param.requires_grad_(False)
        del features, held_features, teacher
    model.eval()
    torch.save({"model": model.state_dict(), "history": history, "elapsed_s": elapsed,
                "recipe": asdict(recipe)}, out_path)
    return out_path


@torch.no_grad()
def recalibrate_bottleneck_norms(model: SplitModel, data: CameraData, images: int,
                                 size: int = 224, batch_size: int = 64) -> None:
    """Re-estimate the bottlenecks' and exits' BatchNorm statistics on whole frames at
    ``size`` px (they were trained on smaller crops); weights are untouched."""
    norms = [m for part in (model.bottlenecks, model.exits) for m in part.modules()
             if isinstance(m, torch.nn.BatchNorm2d)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over every batch below
    model.eval()
    for norm in norms:
        norm.train()
    for start in range(0, min(images, len(data.labels)), batch_size):
        x = resize_batch(data.images[start:start + batch_size], size)
        h = x
        for point in model.split_points:
            h = model.network.run(h, point - 1, point)
            if point in model.spec.exit_points:
                model.exit_head(point)(h)
            for width in model.spec.bottleneck_widths:  # as trained: through the quantizer
                for bits in model.spec.bits:
                    model.bottleneck(point)(h, width, bits)
    for norm in norms:
        norm.momentum = 0.1
    model.eval()


def load_torchvision_weights(network: ResNet, path: Path) -> list[str]:
    """Load a torchvision ``resnet18`` state dict (``--init``); the 1000-class ``fc`` is
    skipped when this network has another number of classes. Returns the skipped keys."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    own = network.state_dict()
    skipped = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    kept = {k: v for k, v in state.items() if k not in skipped}
    missing, unexpected = network.load_state_dict(kept, strict=False)
    if unexpected or set(missing) - set(skipped):
        raise SystemExit(f"{path} is not a torchvision resnet18 state dict: missing "
                         f"{sorted(set(missing) - set(skipped))[:5]}, unexpected "
                         f"{sorted(unexpected)[:5]}")
    return skipped


@torch.no_grad()
def calibrate_int8(model: SplitModel, data: CameraData, images: int = 256,
                   batch_size: int = 32) -> dict[str, torch.Tensor]:
    """Stage 3: calibrate the int8 head on training images; returns the observer state."""
    from splitnet.model.int8 import Int8Head

    head = Int8Head(model)
    gen = torch.Generator().manual_seed(1)
    idx = torch.randperm(len(data.labels), generator=gen)[:images]
    head.calibrate(resize_batch(data.images[idx[i:i + batch_size]], 224)
                   for i in range(0, len(idx), batch_size))
    return head.calibration_state()


def train_camera_model(work_dir: Path, out_dir: Path, data_dir: str | None = None,
                       init: Path | None = None, backbone: BackboneRecipe | None = None,
                       heads: HeadsRecipe | None = None, refine: RefineRecipe | None = None,
                       entropy: EntropyRecipe | None = None, write_card: bool = True,
                       start: Path | None = None, log: Any = print) -> Path:
    """All stages; returns the written checkpoint. Resumes whatever was interrupted.

    With ``start`` (a checkpoint of this architecture), stages 1 to 2b are taken from it and
    only the entropy bottleneck is trained, then int8 calibration and the card.

    Long because: the stages in order, each handing its weights to the next, with the
    checkpoint's record of them."""
    from splitnet.checkpoint import read_blob, save_checkpoint
    from splitnet.model import create_model

    backbone = backbone or BackboneRecipe()
    heads = heads or HeadsRecipe()
    refine = refine or RefineRecipe()
    entropy = entropy or EntropyRecipe()
    work_dir.mkdir(parents=True, exist_ok=True)
    data = CameraData(data_dir, work_dir / "cache", backbone.holdout_fraction, backbone.seed,
                      backbone.train_limit)
    torch.manual_seed(backbone.seed)
    minutes: dict[str, float] = {}
    meta: dict[str, Any]
    if start is not None:
        model = load_for_training(start).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        meta = read_blob(start).get("meta", {})
        minutes = {k: v for k, v in meta.get("minutes", {}).items()
                   if k not in ("entropy_bottleneck", "int8_calibration")}
        meta["started_from"] = start.name
    else:
        model = create_model("resnet18_imagenette").to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        if init is not None and not (work_dir / "backbone.pt").is_file():
            skipped = load_torchvision_weights(model.network, init)
            log(f"initialised the backbone from {init} (skipped {skipped})")
        stage1 = torch.load(train_backbone(backbone, data, work_dir, log, model.network),
                            map_location="cpu", weights_only=False)
        model.network.load_state_dict(stage1["model"])
        minutes["backbone"] = stage1["elapsed_s"] / 60
        stage2 = torch.load(train_heads(heads, model, data, work_dir, log),
                            map_location="cpu", weights_only=False)
        model.load_state_dict(stage2["model"])
        minutes["exits_and_bottlenecks"] = stage2["elapsed_s"] / 60
        refined = torch.load(refine_bottlenecks(refine, model, data, work_dir, log),
                             map_location="cpu", weights_only=False)
        model.load_state_dict(refined["model"])
        minutes["bottleneck_refinement"] = refined["elapsed_s"] / 60
        meta = {"recipe": {"backbone": asdict(backbone), "heads": asdict(heads),
                           "refine": asdict(refine)},
                "backbone_epoch": stage1["epoch"],
                "backbone_held_accuracy": stage1["held_accuracy"],
                "history": {"backbone": stage1["history"], "heads": stage2["history"],
                            "refine": refined["history"]},
                "init": str(init) if init else None}
    trained = train_entropy_bottleneck(entropy, model, data.train.images, data.train.labels,
                                       data.held.images, data.held.labels, work_dir, log)
    attach_entropy_bottleneck(model, trained)
    stage2c = torch.load(trained, map_location="cpu", weights_only=False)
    minutes["entropy_bottleneck"] = stage2c["elapsed_s"] / 60
    meta.setdefault("recipe", {})["entropy"] = asdict(entropy)
    meta.setdefault("history", {})["entropy"] = stage2c["history"]
    model.eval()
    started = time.monotonic()
    calibration = calibrate_int8(model, data)
    minutes["int8_calibration"] = (time.monotonic() - started) / 60
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = out_dir / "resnet18_imagenette.pt"
    meta.update({"minutes": minutes, "train_minutes": sum(minutes.values())})
    model_id = save_checkpoint(model, checkpoint, meta, half=True,
                               int8_calibration=calibration,
                               coding_tables=model.coding_tables)
    log(f"wrote {checkpoint} (model id {model_id}); minutes per stage: "
        + ", ".join(f"{k} {v:.1f}" for k, v in minutes.items()))
    if write_card:
        from splitnet.profile import write_card as write

        started = time.monotonic()
        card = write(checkpoint, data_dir=data_dir)
        log(f"wrote {card} in {(time.monotonic() - started) / 60:.1f} min")
    return checkpoint
