"""Measure a model on labelled images: every config's accuracy, bytes, MACs and speed.

    images ─► backbone features at each split (computed once per split point, fp32 and int8)
              └─► per config: encode(width) ─► quantize(bits) ─► codec bytes ─► tail
                              ─► accuracy, mean/p95 bytes, MACs, head latency

Shared by the model card (``splitnet.profile``) and the benchmark (``splitnet.bench``), so
both report the same quantities measured the same way.
"""

from __future__ import annotations

import io
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

from splitnet import codec
from splitnet.card import (
    ConfigStats,
    ExitStats,
    ExitThreshold,
    FullStats,
    InputCodecStats,
)
from splitnet.config import LOCAL, Config
from splitnet.input_codecs import decode_image, encode_image
from splitnet.model import SplitModel
from splitnet.model.entropy_bottleneck import EntropyCode
from splitnet.preprocess import images_to_input
from splitnet.quantize import QuantizedTensor, quantize_min_max, quantize_unit_range

EXIT_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.97, 0.99, 0.999)
GREY_INPUT_CODECS = ("png", "raw-zstd", "jpeg95", "jpeg90", "jpeg75", "jpeg50")
COLOUR_INPUT_CODECS = ("png", "jpeg95", "jpeg90", "jpeg75", "jpeg50")
_PIXELS_PER_BATCH = 1000 * 28 * 28 * 8
# (side in px, JPEG quality): full-size JPEGs, then smaller ones that reach the byte sizes
# of the entropy bottleneck's rates, which a full-size JPEG cannot
JPEG_SWEEP = ((224, 90), (224, 75), (224, 50), (224, 25), (224, 10), (160, 50), (160, 25),
              (112, 75), (112, 50), (112, 25), (80, 50), (56, 50))


def input_codecs_for(images: np.ndarray) -> tuple[str, ...]:
    """The input codecs offered for these images (raw-zstd is greyscale only)."""
    return COLOUR_INPUT_CODECS if images.ndim == 4 else GREY_INPUT_CODECS


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
        self.x = images_to_input(images)
        self.batch = max(1, _PIXELS_PER_BATCH // int(np.prod(self.x.shape[1:])))
        self.show_progress = show_progress
        self._features: dict[int, torch.Tensor] = {}
        self._int8_features: dict[int, list[torch.Tensor]] = {}
        self._full_logits: torch.Tensor | None = None
        self._exit_logits: dict[int, torch.Tensor] = {}
        # entropy-coded payloads that did not decode to the symbols sent, per config: every
        # payload is decoded again and compared (the coder must round-trip bit for bit)
        self.round_trip_failures: dict[str, int] = {}

    # ---------------------------------------------------------------- cached pieces
    def _batches(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(torch.split(x, self.batch))

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

    @torch.no_grad()
    def int8_features(self, point: int) -> list[torch.Tensor]:
        """The int8 head's (quantized) activation at ``point``, one tensor per batch."""
        if point not in self._int8_features:
            head = self.model.int8_head
            out = []
            for b in self._batches(self.x):
                h = head.start(b)
                for p in range(1, point + 1):
                    h = head.step(h, p)
                out.append(h)
            self._int8_features[point] = out
        return self._int8_features[point]

    @torch.no_grad()
    def _codes(self, config: Config) -> list[Any]:
        """The quantized codes a split config sends, per batch (fp32 or int8 head)."""
        assert config.split is not None
        point = config.split
        if not config.int8:
            return [self.model.encode_features(f, config)
                    for f in self._batches(self.features(point))]
        head = self.model.int8_head
        codes: list[QuantizedTensor | EntropyCode] = []
        for h in self.int8_features(point):
            if config.rate is not None:
                codes.append(self.model.entropy_code(head.latent(h), config.rate))
            elif config.width is None:
                codes.append(quantize_min_max(head.to_float(h), config.bits))
            else:
                codes.append(quantize_unit_range(head.encode(h, point, config.width),
                                                 config.bits))
        return codes

    @torch.no_grad()
    def int8_full_accuracy(self) -> float:
        head = self.model.int8_head
        last = self.model.depth - 1
        logits = torch.cat([head.finish(h, last) for h in self.int8_features(last)])
        return float(self.correct(logits).float().mean())

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
        for code in self._codes(config):
            payloads = codec.encode_batch(code)
            sizes += [len(p) for p in payloads]
            if isinstance(code, EntropyCode):
                self._check_round_trip(str(config), code, payloads, model.code_shape(config))
            with model.edge_autocast():
                logits.append(model.forward_tail(code, config).float())
        correct = self.correct(torch.cat(logits))
        x1 = self.x[:1]
        head_macs = macs(lambda: model.forward_head(x1, config))
        code1 = model.forward_head(x1, config).code
        assert code1 is not None
        tail_macs = macs(lambda: model.forward_tail(code1, config))
        head_params, tail_params = model.param_counts(config)
        stats = ConfigStats(
            config=str(config), split=point, width=config.width, bits=config.bits,
            raw=config.raw, rate=config.rate, accuracy=float(correct.float().mean()),
            mean_bytes=float(np.mean(sizes)), p95_bytes=_percentile(sizes, 95),
            head_macs=head_macs, tail_macs=tail_macs,
            head_params=head_params, tail_params=tail_params,
        )
        exit_point = model.exit_point_for(config)
        if exit_point is not None:
            stats.accuracy_with_exit = self._with_exit(correct, exit_point)
        if latency_repeats:
            stats.head_latency_ms = self.head_latency_ms(config, latency_repeats)
        if model.has_int8 and not config.int8:
            int8 = config.with_int8()
            with model.edge_autocast():
                int8_logits = [model.forward_tail(code, int8).float()
                               for code in self._codes(int8)]
            stats.int8_accuracy = float(self.correct(torch.cat(int8_logits)).float().mean())
            if latency_repeats:
                stats.int8_head_latency_ms = self.head_latency_ms(int8, latency_repeats)
        return stats

    def _check_round_trip(self, name: str, code: EntropyCode, payloads: list[bytes],
                          shape: tuple[int, int, int]) -> None:
        failures = self.round_trip_failures.setdefault(name, 0)
        for i, payload in enumerate(payloads):
            back = codec.decode_entropy(payload, code.tables, code.rate, shape)
            failures += int(not torch.equal(back.symbols, code.symbols[i:i + 1]))
        self.round_trip_failures[name] = failures

    @torch.no_grad()
    def jpeg_sweep(self, points: tuple[tuple[int, int], ...] = JPEG_SWEEP
                   ) -> list[dict[str, float]]:
        """The whole network on JPEGs of the images at (side, quality): each image is
        resized to ``side`` px, JPEG-coded, decoded and resized back to the model's size.
        Mean bytes and accuracy per point: what sending the image costs at each size."""
        from PIL import Image

        rows = []
        height = self.images.shape[1]
        for side, quality in tqdm(points, desc="JPEG sweep",
                                      disable=None if self.show_progress else True):
            sizes, decoded = [], []
            for image in self.images:
                small = Image.fromarray(np.ascontiguousarray(image))
                if side != height:
                    small = small.resize((side, side), Image.Resampling.BILINEAR)
                buffer = io.BytesIO()
                small.save(buffer, "JPEG", quality=quality, optimize=True)
                sizes.append(buffer.tell())
                back = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
                if side != height:
                    back = back.resize((height, height), Image.Resampling.BILINEAR)
                decoded.append(np.asarray(back))
            x = images_to_input(np.stack(decoded))
            with self.model.edge_autocast():
                logits = torch.cat([self.model.backbone(b).float() for b in self._batches(x)])
            rows.append({"side": side, "quality": quality, "mean_bytes": float(np.mean(sizes)),
                         "accuracy": float(self.correct(logits).float().mean())})
        return rows

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

    def exits(self) -> list[ExitStats]:
        """For every exit and threshold: exit fraction, accuracy of exited rows, overall, and
        where the exit and the whole network disagree."""
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
                thresholds.append(ExitThreshold(
                    threshold=threshold,
                    exit_fraction=fraction,
                    exit_accuracy=float(exit_correct[exited].float().mean())
                    if exited.any() else None,
                    overall_accuracy=float(torch.where(exited, exit_correct, full_correct)
                                           .float().mean()),
                    exit_wrong_full_right=float((exited & ~exit_correct & full_correct)
                                                .float().mean()),
                    exit_right_full_wrong=float((exited & exit_correct & ~full_correct)
                                                .float().mean()),
                ))
            rows.append(ExitStats(
                exit_point=point,
                accuracy=float(exit_correct.float().mean()),
                macs=macs(lambda: self.model.exit_head(point)(x1)),  # noqa: B023
                thresholds=thresholds,
            ))
        return rows

    @torch.no_grad()
    def input_codecs(self, codecs: tuple[str, ...] | None = None) -> list[InputCodecStats]:
        """Accuracy and bytes when the input image itself is sent with each codec."""
        rows = []
        for name in codecs or input_codecs_for(self.images):
            sizes, decoded, encode_ms, decode_ms = [], [], [], []
            for image in tqdm(self.images, desc=f"input codec {name}",
                                  disable=None if self.show_progress else True):
                start = time.perf_counter()
                data = encode_image(image, name)
                middle = time.perf_counter()
                decoded.append(decode_image(data, name))
                decode_ms.append((time.perf_counter() - middle) * 1000)
                encode_ms.append((middle - start) * 1000)
                sizes.append(len(data))
            x = images_to_input(np.stack(decoded))
            with self.model.edge_autocast():
                logits = torch.cat([self.model.backbone(b).float() for b in self._batches(x)])
            rows.append(InputCodecStats(codec=name,
                                        accuracy=float(self.correct(logits).float().mean()),
                                        mean_bytes=float(np.mean(sizes)),
                                        p95_bytes=_percentile(sizes, 95),
                                        encode_ms=statistics.median(encode_ms),
                                        decode_ms=statistics.median(decode_ms)))
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
                for c in tqdm(configs, desc="configs",
                                  disable=None if self.show_progress else True)]

    def local(self, latency_repeats: int = 30) -> FullStats:
        x1 = self.x[:1]
        params, _ = self.model.param_counts(LOCAL)
        stats = FullStats(
            accuracy=self.full_accuracy(),
            macs=macs(lambda: self.model.backbone(x1)),
            params=params,
            latency_ms=self.head_latency_ms(LOCAL, latency_repeats),
        )
        if self.model.has_int8:
            stats.int8_accuracy = self.int8_full_accuracy()
            stats.int8_latency_ms = self.head_latency_ms(LOCAL.with_int8(), latency_repeats)
        return stats
