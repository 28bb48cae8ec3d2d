"""Train the camera model's entropy bottleneck on cached activations of the frozen network.

    train images ─► frozen stem ─► h0 (cached, fp16)      frozen layer1 ─► l1 (cached, fp16)
                                                           frozen rest  ─► teacher logits
    h0 ─► encoder ─► y ─► step s per image ─► ŷ (rounded, straight-through), bits (noise)
       ─► decoder(ŷ) ─► l1' ─┬─► feature loss: ‖l1' − l1‖² / ‖l1‖²
                             └─► phase B: frozen layer2..fc ─► KD(teacher logits)
    loss = distortion + λ · bits / 1000

A quarter of each batch is quantized with step 1 (the middle rate), the rest with a step
drawn log-uniformly over the range every rate lies in, so one decoder learns them all. λ is
not tuned by hand: it follows dual ascent on a target for the step-1 images (bits per
image), bounded so that the rate term can never drown the distortion. The prior's own
parameters learn ten times faster than the rest, so the rate the encoder is charged
tracks what it actually sends. Phase A distils features only (no tail); phase B adds KD.

Resumable per phase and epoch, like every stage of ``splitnet.training.camera``; the held-apart
10 % of train is the only data it is judged on (``val`` is never read).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from splitnet.model import SplitModel
from splitnet.model.entropy_bottleneck import EntropyBottleneck
from splitnet.preprocess import to_model_input
from splitnet.training.common import distillation_loss, one_cycle, read_state, save_state


@dataclass(frozen=True)
class EntropyRecipe:
    """The entropy bottleneck's training (about an hour on 2 cores)."""

    seed: int = 0
    batch_size: int = 60
    feature_epochs: int = 0  # phase A: feature distillation and rate only
    kd_epochs: int = 10  # phase B: plus KD through the frozen tail (its LR schedule's length)
    # ... which stops after this many epochs: with λ near its cap, later epochs traded
    # accuracy for rate on the held-apart images (docs/notes.md)
    kd_stop_epoch: int = 6
    # phase C: a fixed λ, a low learning rate decaying to zero, and steps drawn from the
    # range of the rates that carry the accuracy
    polish_epochs: int = 3
    polish_lambda: float = 0.08
    polish_lr: float = 5e-4
    polish_steps: tuple[float, float] = (0.4, 2.4)
    lr: float = 2e-3
    # bits per image at step 1 (the payload adds a header and the coder's flush); finer
    # steps cost more, coarser ones less
    target_bits: float = 3200.0
    # log λ moves by this times log(bits / target) per step: slowly, so that the rate is
    # brought down over epochs while the decoder learns, not collapsed in the first one
    dual_step: float = 0.004
    initial_lambda: float = 0.005
    lambda_range: tuple[float, float] = (0.005, 0.3)  # per kbit; distortion is about 0.3-1
    density_lr_factor: float = 10.0
    stem_weight: float = 0.25  # phase A: the decoder's stem-like output is also matched
    feature_weight: float = 0.5  # phase B: weight of the feature loss beside KD
    kd_temperature: float = 2.0
    kd_weight: float = 0.7


@torch.no_grad()
def cache_activations(model: SplitModel, images: np.ndarray, batch_size: int = 100,
                      desc: str = "caching") -> dict[str, torch.Tensor]:
    """The frozen network's activation at the entropy bottleneck's split (the stem's output),
    what its decoder rebuilds (layer1's output), both fp16, and the logits, per image."""
    model.eval()
    point = model.require_entropy_bottleneck().spec.point
    stems, layer1s, logits = [], [], []
    for start in tqdm(range(0, len(images), batch_size), desc=desc, disable=None):
        x = to_model_input(np.ascontiguousarray(images[start:start + batch_size]))
        h0 = model.features(x, point)
        l1 = model.entropy_decoder_target(h0)
        out = model.logits_after_entropy_decoder(l1)
        stems.append(h0.half())
        layer1s.append(l1.half())
        logits.append(out.float())
    return {"stem": torch.cat(stems), "layer1": torch.cat(layer1s), "logits": torch.cat(logits)}


def tail_from_layer1(model: SplitModel, l1: torch.Tensor) -> torch.Tensor:
    """The frozen network from layer2 on."""
    return model.logits_after_entropy_decoder(l1)


def _normalised_mse(rebuilt: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(rebuilt, target) / target.pow(2).mean().clamp_min(1e-6)


def batch_loss(model: SplitModel, eb: EntropyBottleneck, batch: dict[str, torch.Tensor],
               labels: torch.Tensor, kd: bool, recipe: EntropyRecipe, lam: float,
               gen: torch.Generator, steps: tuple[float, float] | None = None
               ) -> tuple[torch.Tensor, float, float]:
    """One batch: (loss, mean bits of its step-1 images, distortion); quantization steps
    drawn from ``steps`` (default: the spec's training range)."""
    stem = batch["stem"].float().contiguous(memory_format=torch.channels_last)
    target = batch["layer1"].float()
    size = len(labels)
    low, high = steps or eb.spec.train_steps
    step = torch.exp(torch.empty(size).uniform_(math.log(low), math.log(high), generator=gen))
    reference = size // 4
    step[:reference] = 1.0
    y = eb.latent(stem)
    y_hat, bits = eb.noisy(y, step.view(-1, 1, 1, 1))
    stem_like = eb.decoder_body(y_hat)
    rebuilt = eb.decoder_layer1(stem_like)
    if kd:
        logits = tail_from_layer1(model, rebuilt)
        distortion = (distillation_loss(logits, batch["logits"], labels, recipe.kd_temperature,
                                        recipe.kd_weight)
                      + recipe.feature_weight * _normalised_mse(rebuilt, target))
    else:
        distortion = (_normalised_mse(rebuilt, target)
                      + recipe.stem_weight * _normalised_mse(stem_like, stem))
    loss = distortion + lam * bits.mean() / 1000
    return loss, float(bits[:reference].mean().detach()), float(distortion.detach())


@torch.no_grad()
def held_apart_report(model: SplitModel, eb: EntropyBottleneck, cache: dict[str, torch.Tensor],
                      labels: torch.Tensor, batch_size: int = 100) -> dict[str, Any]:
    """Accuracy and bits per image at every rate, with real rounding (the prior's bits of
    the rounded symbols: what the entropy coder will pay, before its own overhead)."""
    eb.eval()
    report: dict[str, Any] = {}
    for rate in range(eb.rates):
        correct, bits = 0, 0.0
        for start in range(0, len(labels), batch_size):
            stem = cache["stem"][start:start + batch_size].float()
            y = eb.latent(stem)
            step = torch.full((len(y), 1, 1, 1), eb.spec.steps[rate])
            q = torch.round(y / step)
            logits = tail_from_layer1(model, eb.reconstruct(q * step))
            correct += int((logits.argmax(1) == labels[start:start + batch_size]).sum())
            bits += float(eb.bits(q * step, step).sum())
        report[f"rate{rate}"] = {"accuracy": correct / len(labels),
                                 "bits": bits / len(labels)}
    return report


def train_entropy_bottleneck(recipe: EntropyRecipe, model: SplitModel, train_images: np.ndarray,
                             train_labels: np.ndarray, held_images: np.ndarray,
                             held_labels: np.ndarray, work_dir: Path,
                             log: Any = print) -> Path:
    """Train ``model.entropy_bottleneck`` (the rest stays frozen); returns the path of its
    trained state. Resumes from ``work_dir`` after an interruption.

    Long because: one resumable training stage (its state, phases, epochs, steps, held-apart
    check and save) reads best as one loop."""
    out_path = work_dir / "entropy.pt"
    if out_path.is_file():
        return out_path
    eb = model.entropy_bottleneck
    if eb is None:
        raise ValueError(f"{model.spec.name} has no entropy bottleneck")
    state_path = work_dir / "entropy_state.pt"
    torch.manual_seed(recipe.seed)
    for param in model.parameters():
        param.requires_grad_(False)
    point = eb.spec.point
    replaced = model.network.segment(point)[:eb.spec.decoder_replaces]
    eb.decoder_layer1.load_state_dict(copy.deepcopy(replaced[0].state_dict()))
    for param in eb.parameters():
        param.requires_grad_(True)
    density = list(eb.density.parameters())
    others = [p for name, p in eb.named_parameters() if not name.startswith("density.")]
    optimizer = torch.optim.Adam([{"params": others, "lr_factor": 1.0},
                                  {"params": density, "lr_factor": recipe.density_lr_factor}],
                                 lr=recipe.lr)
    log_lambda = math.log(recipe.initial_lambda)
    lambda_low, lambda_high = (math.log(v) for v in recipe.lambda_range)
    epoch, elapsed, history = 0, 0.0, []
    saved = read_state(state_path, recipe)
    if saved is not None:
        eb.load_state_dict(saved["entropy_bottleneck"])
        optimizer.load_state_dict(saved["optimizer"])
        log_lambda = saved["log_lambda"]
        epoch, elapsed, history = saved["epoch"], saved["elapsed_s"], saved["history"]
        log(f"entropy bottleneck: resumed after epoch {epoch}")
    started = time.monotonic()
    cache = cache_activations(model, train_images, desc="caching train activations")
    held = cache_activations(model, held_images, desc="caching held-apart activations")
    elapsed += time.monotonic() - started
    labels = torch.from_numpy(np.asarray(train_labels))
    held_labels_t = torch.from_numpy(np.asarray(held_labels))
    polish_start = recipe.feature_epochs + recipe.kd_stop_epoch
    epochs = polish_start + recipe.polish_epochs
    n = len(labels)
    steps = n // recipe.batch_size
    gen = torch.Generator()
    while epoch < epochs:
        started = time.monotonic()
        kd = epoch >= recipe.feature_epochs
        polish = epoch >= polish_start
        phase_start = polish_start if polish else recipe.feature_epochs if kd else 0
        phase_epochs = (recipe.polish_epochs if polish else recipe.kd_epochs if kd
                        else recipe.feature_epochs)
        peak_lr = recipe.polish_lr if polish else recipe.lr
        if polish:
            log_lambda = math.log(recipe.polish_lambda)
        gen.manual_seed(recipe.seed * 1000 + epoch)
        order = torch.randperm(n, generator=gen)
        eb.train()
        losses: list[float] = []
        distortions: list[float] = []
        rate_log: list[float] = []
        phase = "polish" if polish else "KD" if kd else "features"
        peaks = [peak_lr * group["lr_factor"] for group in optimizer.param_groups]
        schedule = one_cycle(optimizer, peaks, phase_epochs * steps,
                             steps // 4 if polish else steps // 2, (epoch - phase_start) * steps)
        bar = tqdm(range(steps), desc=f"entropy bottleneck epoch {epoch + 1}/{epochs} "
                                      f"({phase})", disable=None)
        for step in bar:
            idx = order[step * recipe.batch_size:(step + 1) * recipe.batch_size]
            batch = {k: v[idx] for k, v in cache.items()}
            loss, bits, distortion = batch_loss(model, eb, batch, labels[idx], kd, recipe,
                                                math.exp(log_lambda), gen,
                                                recipe.polish_steps if polish else None)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            if not polish:  # dual ascent towards the target rate; fixed while polishing
                log_lambda = min(lambda_high, max(lambda_low, log_lambda + recipe.dual_step
                                                  * math.log(max(bits, 1.0)
                                                             / recipe.target_bits)))
            losses.append(float(loss.detach()))
            distortions.append(distortion)
            rate_log.append(bits)
            if step % 10 == 0:
                bar.set_postfix(d=f"{np.mean(distortions[-10:]):.3f}",
                                bits=f"{np.mean(rate_log[-10:]):.0f}",
                                lam=f"{math.exp(log_lambda):.3f}")
        epoch += 1
        report = held_apart_report(model, eb, held, held_labels_t)
        elapsed += time.monotonic() - started
        history.append({"epoch": epoch, "phase": phase.lower(),
                        "loss": float(np.mean(losses)), "distortion": float(np.mean(distortions)),
                        "train_bits": float(np.mean(rate_log)),
                        "lambda": math.exp(log_lambda), "held_apart": report,
                        "elapsed_s": elapsed})
        log(f"entropy bottleneck epoch {epoch}/{epochs}: distortion "
            f"{np.mean(distortions):.3f}; held-apart "
            + ", ".join(f"{k} {v['accuracy']:.4f} @ {v['bits']:.0f} bits"
                        for k, v in report.items())
            + f"; {elapsed / 60:.1f} min so far")
        save_state(state_path, recipe, entropy_bottleneck=eb.state_dict(),
                   optimizer=optimizer.state_dict(), log_lambda=log_lambda, epoch=epoch,
                   elapsed_s=elapsed, history=history)
    eb.eval()
    torch.save({"entropy_bottleneck": eb.state_dict(), "history": history,
                "elapsed_s": elapsed, "recipe": asdict(recipe)}, out_path)
    return out_path


def load_for_training(checkpoint: Path) -> SplitModel:
    """The shipped camera model with a fresh entropy bottleneck beside its trained parts."""
    from splitnet.checkpoint import read_blob
    from splitnet.model import create_model

    blob = read_blob(checkpoint)
    model = create_model(blob["arch"])
    reference = model.state_dict()
    state = {k: v.to(reference[k].dtype) for k, v in blob["state_dict"].items()
             if k in reference}
    missing, unexpected = model.load_state_dict(state, strict=False)
    foreign = [k for k in missing if not k.startswith("entropy_bottleneck.")]
    if foreign or unexpected:
        raise SystemExit(f"{checkpoint} does not fit {blob['arch']}: missing {foreign[:3]}, "
                         f"unexpected {unexpected[:3]}")
    return model.eval()


def attach_entropy_bottleneck(model: SplitModel, trained: Path) -> None:
    """Load the trained entropy bottleneck into ``model`` and round every weight to float16
    first, as the checkpoint stores them, so that the coding tables and the int8
    calibration made next describe the weights that ship."""
    eb = model.entropy_bottleneck
    if eb is None:
        raise ValueError(f"{model.spec.name} has no entropy bottleneck")
    blob = torch.load(trained, map_location="cpu", weights_only=False)
    eb.load_state_dict(blob["entropy_bottleneck"])
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(tensor.half().float())
    model.eval()
    model.attach_coding_tables(eb.coding_tables())
