"""The edge's model work: find the model, check a request against it, decode, run a batch.

    model id ──ModelSet.engine──► Engine (one per served model)
    (config, payload) ──Engine.prepare──► decoded input (a code or an image tensor)
    [decoded inputs of one (model id, config)] ──ModelSet.run_batch──► probabilities (B, K)

``prepare`` runs before a request takes a place in the queue, so a bad one is refused
first: in the gRPC event loop for a slimmable code (microseconds), in the servicer's
decoder threads for an image or an entropy-coded code. ``run_batch`` runs in the
batcher's worker thread.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable

import torch
from splitnet_proto.messages import model_tag

from splitnet import codec
from splitnet.checkpoint import LoadedModel
from splitnet.config import Config, ConfigError, Placement
from splitnet.input_codecs import decode_image
from splitnet.model.entropy_bottleneck import EntropyCode
from splitnet.model.split_model import SplitModel
from splitnet.preprocess import images_to_input
from splitnet.quantize import QuantizedTensor

Decoded = QuantizedTensor | EntropyCode | torch.Tensor
BatchKey = tuple[str, Config]  # (model id, config): what may share a batch


class UnknownModelError(LookupError):
    """A request named a model this server does not serve."""


PRECISIONS = ("auto", "fp32", "bf16")


def faster_precision(model: SplitModel, repeats: int = 5) -> tuple[str, dict[str, float]]:
    """"bf16" if it runs ``model``'s whole network (batch 1) clearly faster on this CPU (by
    10 %), else
    "fp32"; and the least ms of each (interleaved). bf16 autocast is ~3× faster where the
    CPU has AMX, and slower where it has not: on an AVX-512 host without AMX the camera
    model took 67 ms in bf16 against 60 in fp32. The margin keeps the choice from
    flickering with the load on a host where the two are close. Once bf16 has taken twice
    fp32's time after the warm-up round, the answer cannot change and the timing stops: on
    an AVX2 host (AMD EPYC, no AVX-512) bf16 took ~1.5 s a pass against fp32's 51 ms, and
    the six rounds took ~10 s of every edge's start-up."""
    x = torch.zeros(1, *model.spec.input_shape)
    least = {"fp32": math.inf, "bf16": math.inf}
    with torch.no_grad():
        for round_ in range(repeats + 1):  # the first round warms up, untimed
            for precision in least:
                started = time.perf_counter()
                with model.edge_autocast(precision):
                    model.backbone(x)
                least[precision] = min(least[precision], (time.perf_counter() - started) * 1000)
            if round_ >= 1 and least["bf16"] > 2 * least["fp32"]:
                break
    return ("bf16" if least["bf16"] < 0.9 * least["fp32"] else "fp32"), least


class Engine:
    """Runs tails (SPLIT) and whole networks (OFFLOAD_INPUT) for one loaded model.

    ``precision``: what the edge's part runs in. "auto" (the default) takes the model's own
    (its spec's ``edge_precision``) unless that is bf16 and this CPU runs fp32 faster."""

    def __init__(self, loaded: LoadedModel, precision: str = "auto") -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"edge precision {precision!r}; choose one of {PRECISIONS}")
        self.loaded = loaded
        self.model = loaded.model.eval()
        self.model_id = loaded.model_id
        self.precision, self.precision_ms = precision, dict[str, float]()
        if precision == "auto":
            self.precision = self.model.spec.edge_precision
            if self.precision == "bf16":
                self.precision, self.precision_ms = faster_precision(self.model)
            logging.getLogger(__name__).info(
                "model %s runs its edge part in %s%s", self.model_id, self.precision,
                "".join(f"; {k} {v:.1f} ms" for k, v in self.precision_ms.items()))
        self.model_tag = model_tag(loaded.model_id)  # on every reply
        codecs = ("png", "raw-zstd", "jpeg90") if self.model.spec.input_shape[0] == 1 \
            else ("png", "jpeg95", "jpeg90", "jpeg75", "jpeg50")
        self.configs = tuple(self.model.split_configs()) + tuple(
            Config.offload_input(c) for c in codecs)
        # code shape per (split, width, bits, rate) that passed the model's checks: a
        # handful of keys, looked up for every request instead of checked afresh
        self._code_shapes: dict[tuple[int | None, int | None, int, int | None],
                                tuple[int, int, int]] = {}

    @property
    def max_payload_bytes(self) -> int:
        """The largest payload a legal request can carry: twice the larger of the raw input
        image and the largest 8-bit code (room for a JPEG or PNG of noise, or a code zstd
        could not shrink), plus headers."""
        raw_codes = max(math.prod(self.model.code_shape(c)) * c.bits // 8
                        for c in self.model.split_configs())
        raw_image = math.prod(self.model.spec.input_shape)
        return 2 * max(raw_codes, raw_image) + 4096

    def prepare(self, config: Config, payload: bytes) -> Decoded:
        """Validate and decode one request. Raises ConfigError or codec.PayloadError."""
        if config.placement is Placement.SPLIT:
            key = (config.split, config.width, config.bits, config.rate)
            shape = self._code_shapes.get(key)
            if shape is None:  # raises ConfigError naming what the model offers instead
                shape = self._code_shapes[key] = self.model.code_shape(config)
            if config.rate is not None:
                return codec.decode_entropy(payload, self.model.coding_tables, config.rate,
                                            shape)
            return codec.decode(payload, shape, config.bits)
        if config.placement is Placement.OFFLOAD_INPUT:
            assert config.input_codec is not None
            channels, height, width = self.model.spec.input_shape
            expected = (height, width) if channels == 1 else (height, width, channels)
            # checked from the image's header, before its pixels are inflated
            image = decode_image(payload, config.input_codec, expected)
            return images_to_input(image[None])
        raise ConfigError(f"{config} cannot be served by the edge")

    @torch.no_grad()
    def run_batch(self, config: Config, inputs: list[Decoded]) -> torch.Tensor:
        """Probabilities for a batch of decoded inputs that share ``config``."""
        if config.placement is Placement.SPLIT:
            batch: QuantizedTensor | EntropyCode
            if config.rate is not None:
                batch = EntropyCode.cat([i for i in inputs if isinstance(i, EntropyCode)])
            else:
                batch = QuantizedTensor.cat([i for i in inputs if isinstance(i, QuantizedTensor)])
            with self.model.edge_autocast(self.precision):
                logits = self.model.forward_tail(batch, config).float()
        else:
            images = [i for i in inputs if isinstance(i, torch.Tensor)]
            with self.model.edge_autocast(self.precision):
                logits = self.model.backbone(torch.cat(images)).float()
        return torch.softmax(logits, dim=1)


class ModelSet:
    """Every model one server serves, by model id, in the order given."""

    def __init__(self, models: Iterable[LoadedModel], precision: str = "auto") -> None:
        self.engines: dict[str, Engine] = {}
        for loaded in models:
            if loaded.model_id in self.engines:
                raise ValueError(f"model {loaded.model_id} is given twice")
            self.engines[loaded.model_id] = Engine(loaded, precision)
        if not self.engines:
            raise ValueError("a server needs at least one model")

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(self.engines)

    def engine(self, model_id: str | None) -> Engine:
        """The engine for ``model_id``; raises UnknownModelError naming the served ones."""
        engine = self.engines.get(model_id or "")
        if engine is None:
            what = f"model id {model_id!r}" if model_id else "no model id"
            raise UnknownModelError(f"request carries {what}; this server serves "
                                    f"{', '.join(self.ids)}")
        return engine

    @property
    def max_payload_bytes(self) -> int:
        """The largest legal payload of any model served."""
        return max(e.max_payload_bytes for e in self.engines.values())

    def run_batch(self, key: BatchKey, inputs: list[Decoded]) -> torch.Tensor:
        model_id, config = key
        return self.engines[model_id].run_batch(config, inputs)
