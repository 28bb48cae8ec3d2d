"""Measure a model on the real test set: every config's accuracy, bytes, MACs and speed.

    test images ─► backbone features at each split (computed once per split point)
                   └─► per config: encode(width) ─► quantize(bits) ─► codec bytes ─► tail
                                   ─► accuracy, mean/p95 bytes, MACs, head latency

Shared by the model card (``splitnet.profile``) and the benchmark (``splitnet.bench``), so
both report the same quantities measured the same way.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from splitnet import codec
from splitnet.config import INPUT_CODECS, LOCAL, Config
from splitnet.input_codecs import decode_image, encode_image
from splitnet.model import SplitModel
from splitnet.progress import progress

EXIT_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.97, 0.99, 0.999)
_BATCH = 1000


@dataclass
class ConfigStats:
    """One row of the model card: a split config measured on the test set."""

    config: str
    split: int
    width: int | None
    bits: int
    raw: bool
    accuracy: float
    mean_bytes: float
    p95_bytes: float
    head_macs: int
    tail_macs: int
    head_params: int
    tail_params: int
    head_latency_ms: float | None = None
    # overall accuracy with this config's device exit at each threshold (exited rows take
    # the exit's answer): {"0.9": 0.93, ...}
    accuracy_with_exit: dict[str, float] = field(default_factory=dict)


def macs(fn: Callable[[], object]) -> int:
    """Multiply-accumulates of one call, counted from the aten ops it runs."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops() // 2)


def _percentile(values: list[int], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


class Evaluator:
    """Evaluates one model on one labelled image set (uint8 images, int labels)."""

    def __init__(self, model: SplitModel, images: np.ndarray, labels: np.ndarray,
                 show_progress: bool = True) -> None:
        self.model = model.eval()
        self.images = images
        self.labels = torch.as_tensor(labels, dtype=torch.long)
        self.x = torch.tensor(images).unsqueeze(1).float().div_(255.0)
        self.show_progress = show_progress
        self._features: dict[int, torch.Tensor] = {}
        self._full_logits: torch.Tensor | None = None
        self._exit_logits: dict[int, torch.Tensor] = {}

    # ---------------------------------------------------------------- cached pieces
    def _batches(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(torch.split(x, _BATCH))

    @torch.no_grad()
    def features(self, point: int) -> torch.Tensor:
        if point not in self._features:
            self._features[point] = torch.cat(
                [self.model.features(b, point) for b in self._batches(self.x)])
        return self._features[point]

    @torch.no_grad()
    def full_logits(self) -> torch.Tensor:
        if self._full_logits is None:
            self._full_logits = torch.cat([self.model.backbone(b) for b in self._batches(self.x)])
        return self._full_logits

    @torch.no_grad()
    def exit_logits(self, point: int) -> torch.Tensor:
        if point not in self._exit_logits:
            head = self.model.exit_head(point)
            self._exit_logits[point] = torch.cat(
                [head(b) for b in self._batches(self.features(point))])
        return self._exit_logits[point]

    def correct(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.argmax(1) == self.labels

    # ---------------------------------------------------------------- measurements
    def full_accuracy(self) -> float:
        return float(self.correct(self.full_logits()).float().mean())

    @torch.no_grad()
    def split_config(self, config: Config, latency_repeats: int = 0) -> ConfigStats:
        """Accuracy, exact payload bytes, MACs and parameters of one SPLIT config."""
        model = self.model
        model.check(config)
        assert config.split is not None
        point = config.split
        logits, sizes = [], []
        for feats in self._batches(self.features(point)):
            code = model.encode_features(feats, config)
            sizes += [len(p) for p in codec.encode_batch(code)]
            logits.append(model.forward_tail(code, config))
        correct = self.correct(torch.cat(logits))
        x1 = self.x[:1]
        head_macs = macs(lambda: model.forward_head(x1, config))
        code1 = model.forward_head(x1, config).code
        assert code1 is not None
        tail_macs = macs(lambda: model.forward_tail(code1, config))
        head_params, tail_params = model.param_counts(config)
        stats = ConfigStats(
            config=str(config), split=point, width=config.width, bits=config.bits,
            raw=config.raw, accuracy=float(correct.float().mean()),
            mean_bytes=float(np.mean(sizes)), p95_bytes=_percentile(sizes, 95),
            head_macs=head_macs, tail_macs=tail_macs,
            head_params=head_params, tail_params=tail_params,
        )
        exit_point = model.exit_point_for(config)
        if exit_point is not None:
            stats.accuracy_with_exit = self._with_exit(correct, exit_point)
        if latency_repeats:
            stats.head_latency_ms = self.head_latency_ms(config, latency_repeats)
        return stats

    def _with_exit(self, correct: torch.Tensor, exit_point: int) -> dict[str, float]:
        probs = torch.softmax(self.exit_logits(exit_point), 1)
        confidence = probs.max(1).values
        exit_correct = self.correct(self.exit_logits(exit_point))
        out = {}
        for threshold in EXIT_THRESHOLDS:
            exited = confidence >= threshold
            out[f"{threshold:g}"] = float(torch.where(exited, exit_correct, correct)
                                          .float().mean())
        return out

    def exits(self) -> list[dict[str, Any]]:
        """For every exit and threshold: exit fraction, accuracy of exited rows, overall."""
        full_correct = self.correct(self.full_logits())
        rows = []
        for point in self.model.spec.exit_points:
            logits = self.exit_logits(point)
            confidence = torch.softmax(logits, 1).max(1).values
            exit_correct = self.correct(logits)
            x1 = self.features(point)[:1]
            thresholds = []
            for threshold in EXIT_THRESHOLDS:
                exited = confidence >= threshold
                fraction = float(exited.float().mean())
                thresholds.append({
                    "threshold": threshold,
                    "exit_fraction": fraction,
                    "exit_accuracy": float(exit_correct[exited].float().mean())
                    if exited.any() else None,
                    "overall_accuracy": float(torch.where(exited, exit_correct, full_correct)
                                              .float().mean()),
                })
            rows.append({
                "exit_point": point,
                "accuracy": float(exit_correct.float().mean()),
                "macs": macs(lambda: self.model.exit_head(point)(x1)),  # noqa: B023
                "thresholds": thresholds,
            })
        return rows

    @torch.no_grad()
    def input_codecs(self, codecs: tuple[str, ...] = INPUT_CODECS) -> list[dict[str, Any]]:
        """Accuracy and bytes when the input image itself is sent with each codec."""
        rows = []
        for name in codecs:
            sizes, decoded = [], []
            for image in progress(self.images, desc=f"input codec {name}",
                                  enabled=None if self.show_progress else False):
                data = encode_image(image, name)
                sizes.append(len(data))
                decoded.append(decode_image(data, name))
            x = torch.tensor(np.stack(decoded)).unsqueeze(1).float().div_(255.0)
            logits = torch.cat([self.model.backbone(b) for b in self._batches(x)])
            rows.append({"codec": name, "accuracy": float(self.correct(logits).float().mean()),
                         "mean_bytes": float(np.mean(sizes)),
                         "p95_bytes": _percentile(sizes, 95)})
        return rows

    @torch.no_grad()
    def head_latency_ms(self, config: Config, repeats: int = 30) -> float:
        """Median time of the device's work for one image: head, quantize and encode."""
        x1 = self.x[:1]
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            times = []
            for i in range(repeats + 3):
                start = time.perf_counter()
                out = self.model.forward_head(x1, config)
                if out.code is not None:
                    codec.encode_batch(out.code)
                if i >= 3:
                    times.append((time.perf_counter() - start) * 1000)
        finally:
            torch.set_num_threads(threads)
        return statistics.median(times)

    def all_split_configs(self, latency_repeats: int = 0) -> list[ConfigStats]:
        configs = self.model.split_configs()
        return [self.split_config(c, latency_repeats)
                for c in progress(configs, desc="configs",
                                  enabled=None if self.show_progress else False)]

    def local(self, latency_repeats: int = 30) -> dict[str, Any]:
        x1 = self.x[:1]
        params, _ = self.model.param_counts(LOCAL)
        return {
            "accuracy": self.full_accuracy(),
            "macs": macs(lambda: self.model.backbone(x1)),
            "params": params,
            "latency_ms": self.head_latency_ms(LOCAL, latency_repeats),
        }
