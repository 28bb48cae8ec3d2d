"""A backbone that can be cut at its split points, with bottlenecks and exits there.

    image ─► segment 0 ─┬─► segment 1 ─┬─► segment 2 ─┬─► segment 3 ─► logits
                split 1 ┘      split 2 ┘      split 3 ┘
                             (exits at the split points named in the spec)

The backbone (``splitnet.model.mobilenet``, ``splitnet.model.resnet``) keeps its own layer
names under ``network``. At each split point sits a slimmable bottleneck (see
``bottleneck.py``); a config may also skip it and send the raw activation. A config uses the
deepest exit at or before its split point (LOCAL: the deepest exit), so an exit always runs
on the device.

    device: forward_head(x, config) ─► HeadOutput(finished rows + logits, code to send)
    edge:   forward_tail(code, config) ─► logits
    both:   forward(x, config) == head then tail, in one process

Every config runs on the same modules: switching allocates nothing and reloads nothing.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import nn

from splitnet.config import VALID_BITS, Config, ConfigError, Placement
from splitnet.model.backbone import SplitBackbone
from splitnet.model.bottleneck import SlimmableBottleneck
from splitnet.model.entropy_bottleneck import (
    CodingTables,
    EntropyBottleneck,
    EntropyBottleneckSpec,
    EntropyCode,
)
from splitnet.model.exits import ExitHead
from splitnet.quantize import QuantizedTensor, quantize_min_max, quantize_unit_range


@dataclass(frozen=True)
class BottleneckSpec:
    """The bottleneck at one split point: hidden channels, spatial stride, dense convs."""

    hidden: int
    stride: int = 1
    dense: bool = False


@dataclass(frozen=True)
class ArchSpec:
    """Everything that fixes the shape of a :class:`SplitModel`."""

    name: str
    backbone: Callable[[], SplitBackbone]
    bottlenecks: tuple[BottleneckSpec, ...]  # one per split point
    bottleneck_widths: tuple[int, ...]
    exit_points: tuple[int, ...]
    exit_hidden: int
    num_classes: int = 10
    input_shape: tuple[int, int, int] = (1, 28, 28)
    bits: tuple[int, ...] = field(default=VALID_BITS)
    # what the edge runs its part in: "fp32", or "bf16" (autocast; AMX makes it ~3x faster)
    edge_precision: str = "fp32"
    # a learned entropy bottleneck with several rates (``split<p>/rate<r>`` configs), or None
    entropy_bottleneck: EntropyBottleneckSpec | None = None


class DevicePath(Protocol):
    """What the device runs: the fp32 modules (:class:`Float32Path`) or the int8 copy."""

    def start(self, x: torch.Tensor) -> torch.Tensor: ...
    def step(self, h: torch.Tensor, point: int) -> torch.Tensor: ...
    def finish(self, h: torch.Tensor, point: int) -> torch.Tensor: ...
    def exit_logits(self, h: torch.Tensor, point: int) -> torch.Tensor: ...
    def encode(self, h: torch.Tensor, point: int, width: int) -> torch.Tensor: ...
    def latent(self, h: torch.Tensor) -> torch.Tensor: ...
    def to_float(self, h: torch.Tensor) -> torch.Tensor: ...


class Float32Path:
    """The device's part on the model's own fp32 modules."""

    def __init__(self, model: SplitModel) -> None:
        self.model = model

    def start(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def step(self, h: torch.Tensor, point: int) -> torch.Tensor:
        return self.model.network.run(h, point - 1, point)

    def finish(self, h: torch.Tensor, point: int) -> torch.Tensor:
        return self.model.logits_from(h, point)

    def exit_logits(self, h: torch.Tensor, point: int) -> torch.Tensor:
        out: torch.Tensor = self.model.exit_head(point)(h)
        return out

    def encode(self, h: torch.Tensor, point: int, width: int) -> torch.Tensor:
        return self.model.bottleneck(point).encode(h, width)

    def latent(self, h: torch.Tensor) -> torch.Tensor:
        return self.model.require_entropy_bottleneck().latent(h)

    def to_float(self, h: torch.Tensor) -> torch.Tensor:
        return h


@dataclass
class HeadOutput:
    """What the device holds after running the head on a batch.

    ``finished`` marks rows the device has already answered (an exit fired, or LOCAL), and
    ``exited`` those answered by an early exit; ``logits`` is valid on finished rows.
    ``code`` is what must be sent for the other rows (it covers the whole batch; None when
    nothing needs sending). ``features`` is the activation at the split point in fp32, and
    ``device_state`` the same activation as the device's path holds it (int8 for an int8
    head), kept so the device can finish the input itself if the edge fails
    (``SplitModel.finish_on_device``).
    """

    finished: torch.Tensor  # bool (B,)
    logits: torch.Tensor  # float (B, K), valid where finished
    code: QuantizedTensor | EntropyCode | None
    exited: torch.Tensor  # bool (B,)
    features: torch.Tensor | None = None
    device_state: torch.Tensor | None = None


class SplitModel(nn.Module):
    """Backbone + per-split slimmable bottlenecks + early exits."""

    def __init__(self, spec: ArchSpec) -> None:
        super().__init__()
        self.spec = spec
        self.__dict__["_int8_head"] = None
        self.__dict__["_coding_tables"] = None
        self.__dict__["_fp32_path"] = Float32Path(self)  # built once: forward_head is hot
        self.network = spec.backbone()
        if len(spec.bottlenecks) != self.network.num_splits:
            raise ValueError("need one bottleneck spec per split point")
        self._feature_shapes = self._infer_feature_shapes()
        self.bottlenecks = nn.ModuleDict({
            str(point): SlimmableBottleneck(self.feature_shape(point)[0], b.hidden,
                                            spec.bottleneck_widths, b.stride, b.dense)
            for point, b in zip(self.split_points, spec.bottlenecks, strict=True)
        })
        self.exits = nn.ModuleDict({
            str(point): ExitHead(self.feature_shape(point)[0], spec.exit_hidden,
                                 spec.num_classes)
            for point in spec.exit_points
        })
        self.entropy_bottleneck: EntropyBottleneck | None = None
        if spec.entropy_bottleneck is not None:
            self.entropy_bottleneck = EntropyBottleneck(
                spec.entropy_bottleneck, self.feature_shape(spec.entropy_bottleneck.point)[0])

    # ----------------------------------------------------------------- introspection
    def bottleneck(self, point: int) -> SlimmableBottleneck:
        """The bottleneck at split point ``point``."""
        module = self.bottlenecks[str(point)]
        assert isinstance(module, SlimmableBottleneck)
        return module

    def exit_head(self, point: int) -> ExitHead:
        """The exit classifier after stage ``point``."""
        module = self.exits[str(point)]
        assert isinstance(module, ExitHead)
        return module

    @property
    def split_points(self) -> tuple[int, ...]:
        return tuple(range(1, self.network.num_splits + 1))

    @property
    def depth(self) -> int:
        """The index of the logits as a "split point": one past the last split."""
        return self.network.num_splits + 1

    def feature_shape(self, point: int) -> tuple[int, int, int]:
        """(C, H, W) of the activation after stage ``point``."""
        return self._feature_shapes[point]

    def code_shape(self, config: Config) -> tuple[int, int, int]:
        """(C, H, W) of the tensor a split config sends."""
        self.check(config)
        channels, height, width = self.feature_shape(config.split or 0)
        if config.rate is not None:
            latent = self.require_entropy_bottleneck().spec.latent_channels
            return (latent, -(-height // 2), -(-width // 2))
        if config.width is None:
            return (channels, height, width)
        stride = self.bottleneck(config.split or 0).stride
        return (config.width, -(-height // stride), -(-width // stride))

    def exit_point_for(self, config: Config) -> int | None:
        """The exit a config may stop at: the deepest one at or before its split point."""
        if config.placement is Placement.OFFLOAD_INPUT:
            return None
        limit = config.split if config.placement is Placement.SPLIT else self.depth
        usable = [p for p in self.spec.exit_points if limit is not None and p <= limit]
        return max(usable) if usable else None

    def split_configs(self) -> list[Config]:
        """Every SPLIT config the model offers (no exit): raw splits and all bottlenecks."""
        configs = []
        for point in self.split_points:
            configs.append(Config(split=point, width=None, bits=8))
            for width, bits in itertools.product(self.spec.bottleneck_widths, self.spec.bits):
                configs.append(Config(split=point, width=width, bits=bits))
            eb = self.entropy_bottleneck
            if eb is not None and eb.spec.point == point:
                configs += [Config(split=point, rate=r) for r in range(eb.rates)]
        return configs

    def check(self, config: Config) -> None:
        """Raise ConfigError if this model cannot run ``config``."""
        if config.int8 and not self.has_int8:
            raise ConfigError(f"{self.spec.name} has no int8 head; use an fp32 config")
        if config.placement is not Placement.SPLIT:
            return
        if config.split not in self.split_points:
            raise ConfigError(f"split point {config.split} not offered; use {self.split_points}")
        if config.rate is not None:
            eb = self.entropy_bottleneck
            if eb is None or eb.spec.point != config.split:
                where = "nowhere" if eb is None else f"at split {eb.spec.point} only"
                raise ConfigError(f"{self.spec.name} has an entropy bottleneck {where}; "
                                  f"{config} cannot run")
            if not 0 <= config.rate < eb.rates:
                raise ConfigError(f"rate {config.rate} not offered; use 0..{eb.rates - 1}")
            return
        if config.width is not None and config.width not in self.spec.bottleneck_widths:
            raise ConfigError(
                f"width {config.width} not offered; use {self.spec.bottleneck_widths} or raw"
            )
        if config.width is None and config.bits != 8:
            raise ConfigError("a raw split is sent at 8 bits")
        if config.bits not in self.spec.bits:
            raise ConfigError(f"bits {config.bits} not offered; use {self.spec.bits}")

    def param_counts(self, config: Config) -> tuple[int, int]:
        """Parameters used on the device and on the edge by ``config`` (exits excluded)."""
        def count(modules: list[nn.Module]) -> int:
            return sum(p.numel() for m in modules for p in m.parameters())

        def segments(start: int, stop: int) -> list[nn.Module]:
            return [m for i in range(start, stop) for m in self.network.segment(i)]

        if config.placement is not Placement.SPLIT or config.split is None:
            full = count([self.network])
            return (full, 0) if config.placement is Placement.LOCAL else (0, full)
        self.check(config)
        head = count(segments(0, config.split))
        tail = count(segments(config.split, self.depth))
        if config.rate is not None:
            eb = self.require_entropy_bottleneck()
            replaced = self.network.segment(config.split)[:eb.spec.decoder_replaces]
            head += count([eb.encoder_body, eb.encoder_out])
            tail += count([eb.decoder_body, eb.decoder_layer1]) - count(replaced)
            return head, tail
        if config.width is not None:
            bottleneck = self.bottleneck(config.split)
            width, index = config.width, bottleneck.widths.index(config.width)
            out_conv, in_conv = bottleneck.encoder_out, bottleneck.decoder_in
            head += count([bottleneck.encoder_body]) + out_conv.weight[:width].numel()
            head += 0 if out_conv.bias is None else width
            tail += in_conv.weight[:, :width].numel()
            norm: nn.Module = bottleneck.decoder_norm.norms[index]
            tail += count([norm, bottleneck.decoder_body])
        return head, tail

    # ----------------------------------------------------------------- backbone pieces
    def features(self, x: torch.Tensor, upto: int) -> torch.Tensor:
        """The activation at split point ``upto``, from the image."""
        return self.network.run(x, 0, upto)

    def logits_from(self, features: torch.Tensor, point: int) -> torch.Tensor:
        """Finish the network from the activation at split point ``point``."""
        return self.network.run(features, point, self.depth)

    def backbone(self, x: torch.Tensor) -> torch.Tensor:
        """The unmodified network, image to logits."""
        return self.network.run(x, 0, self.depth)

    # ----------------------------------------------------------------- the split contract
    def forward_head(self, x: torch.Tensor, config: Config) -> HeadOutput:
        """Device side: run up to the split, try the exit, and produce the code to send."""
        self.check(config)
        if config.placement is Placement.OFFLOAD_INPUT:
            raise ConfigError("OFFLOAD_INPUT runs no head: send the encoded image instead")
        path: DevicePath = self.int8_head if config.int8 else self.__dict__["_fp32_path"]
        batch = x.shape[0]
        exit_point = self.exit_point_for(config)
        depth = config.split if config.placement is Placement.SPLIT else self.depth - 1
        assert depth is not None
        finished = torch.zeros(batch, dtype=torch.bool)
        logits = torch.zeros(batch, self.spec.num_classes)
        h = path.start(x)
        for point in range(1, depth + 1):
            h = path.step(h, point)
            if point == exit_point and config.exit_threshold is not None:
                logits = path.exit_logits(h, point)
                confidence = torch.softmax(logits, dim=1).max(dim=1).values
                finished = confidence >= config.exit_threshold
                if bool(finished.all()):
                    return HeadOutput(finished, logits, None, finished)
        if config.placement is Placement.LOCAL:
            final = path.finish(h, depth)
            logits = torch.where(finished.unsqueeze(1), logits, final)
            return HeadOutput(torch.ones(batch, dtype=torch.bool), logits, None, finished)
        assert config.split is not None
        features = path.to_float(h)
        if config.rate is not None:
            code: QuantizedTensor | EntropyCode = self.entropy_code(path.latent(h), config.rate)
        elif config.width is None:
            code = quantize_min_max(features, config.bits)
        else:
            code = quantize_unit_range(path.encode(h, config.split, config.width), config.bits)
        return HeadOutput(finished, logits, code, finished, features, device_state=h)

    def finish_on_device(self, head: HeadOutput, config: Config) -> torch.Tensor:
        """Logits of a SPLIT input the edge did not answer: the rest of the network on the
        device, in the head's own precision (an int8 head finishes in int8, several times
        faster on a Pi than the fp32 tail), from the activation the head stopped at."""
        if config.placement is not Placement.SPLIT or config.split is None:
            raise ConfigError("finish_on_device needs a SPLIT config")
        if head.device_state is None:
            raise ValueError("this head output carries no device state (nothing to finish)")
        path: DevicePath = self.int8_head if config.int8 else self.__dict__["_fp32_path"]
        final = path.finish(head.device_state, config.split)
        return torch.where(head.finished.unsqueeze(1), head.logits, final)

    # ----------------------------------------------------------------- entropy bottleneck
    def require_entropy_bottleneck(self) -> EntropyBottleneck:
        if self.entropy_bottleneck is None:
            raise ConfigError(f"{self.spec.name} has no entropy bottleneck")
        return self.entropy_bottleneck

    @property
    def coding_tables(self) -> CodingTables:
        """The entropy coder's tables: the checkpoint's, or (a model not loaded from one)
        computed from the current weights on first use."""
        tables = self.__dict__.get("_coding_tables")
        if tables is None:
            tables = self.require_entropy_bottleneck().coding_tables()
            self.__dict__["_coding_tables"] = tables
        return tables  # type: ignore[no-any-return]

    def attach_coding_tables(self, tables: CodingTables | None) -> None:
        """Use ``tables`` (a checkpoint's) for every entropy-coded config."""
        self.__dict__["_coding_tables"] = tables

    def entropy_decoder_target(self, features: torch.Tensor) -> torch.Tensor:
        """What the entropy decoder rebuilds from the activation at its split point: that
        activation through the modules the decoder stands in for (ResNet: layer1)."""
        eb = self.require_entropy_bottleneck()
        h = features
        for module in self.network.segment(eb.spec.point)[:eb.spec.decoder_replaces]:
            h = module(h)
        return h

    def logits_after_entropy_decoder(self, h: torch.Tensor) -> torch.Tensor:
        """Finish the network from what the entropy decoder rebuilt."""
        eb = self.require_entropy_bottleneck()
        for module in self.network.segment(eb.spec.point)[eb.spec.decoder_replaces:]:
            h = module(h)
        return self.logits_from(h, eb.spec.point + 1)

    def entropy_code(self, latent: torch.Tensor, rate: int) -> EntropyCode:
        """The latent ``y`` as the symbols an entropy-bottleneck config sends."""
        tables = self.coding_tables
        symbols = self.require_entropy_bottleneck().symbols(latent, rate, tables)
        return EntropyCode(symbols, rate, tables)

    # ----------------------------------------------------------------- int8 device part
    @property
    def int8_head(self) -> DevicePath:
        """The int8 copy of the device's part (``config.int8``); see ``splitnet.model.int8``."""
        head = self.__dict__.get("_int8_head")
        if head is None:
            raise ConfigError(f"{self.spec.name}: this model has no int8 head (its checkpoint "
                              "carries no int8 calibration)")
        return head  # type: ignore[no-any-return]

    @property
    def has_int8(self) -> bool:
        return self.__dict__.get("_int8_head") is not None

    def attach_int8(self, head: DevicePath | None) -> None:
        """Use ``head`` for int8 configs. Kept out of ``state_dict`` (and the model id)."""
        self.__dict__["_int8_head"] = head

    def encode_features(self, features: torch.Tensor,
                        config: Config) -> QuantizedTensor | EntropyCode:
        """The activation at the split, as the code a SPLIT config sends (fp32 head)."""
        if config.rate is not None:
            return self.entropy_code(self.require_entropy_bottleneck().latent(features),
                                     config.rate)
        if config.width is None:
            return quantize_min_max(features, config.bits)
        assert config.split is not None
        return quantize_unit_range(self.bottleneck(config.split).encode(features, config.width),
                                   config.bits)

    def forward_tail(self, code: QuantizedTensor | EntropyCode, config: Config) -> torch.Tensor:
        """Edge side: dequantize, decode the bottleneck (if any), finish the network."""
        self.check(config)
        if config.placement is not Placement.SPLIT or config.split is None:
            raise ConfigError("forward_tail needs a SPLIT config")
        expected = self.code_shape(config)
        if isinstance(code, EntropyCode) or config.rate is not None:
            if not isinstance(code, EntropyCode) or code.rate != config.rate \
                    or tuple(code.symbols.shape[1:]) != expected:
                raise ConfigError(f"{config} needs an entropy code of shape {expected} at "
                                  f"rate {config.rate}")
            eb = self.require_entropy_bottleneck()
            return self.logits_after_entropy_decoder(eb.decode(code.symbols, code.rate,
                                                               code.tables))
        if tuple(code.codes.shape[1:]) != expected or code.bits != config.bits:
            raise ConfigError(
                f"code of shape {tuple(code.codes.shape[1:])} at {code.bits} bits does not fit "
                f"{config} (expects {expected} at {config.bits} bits)"
            )
        h = code.dequantize()
        if config.width is not None:
            h = self.bottleneck(config.split).decode(h)
        return self.logits_from(h, config.split)

    def edge_autocast(self, precision: str | None = None) -> torch.autocast:
        """The edge's part in ``precision`` ("bf16" or "fp32"; default: the spec's
        ``edge_precision``)."""
        return torch.autocast("cpu", dtype=torch.bfloat16,
                              enabled=(precision or self.spec.edge_precision) == "bf16")

    def forward(self, x: torch.Tensor, config: Config) -> torch.Tensor:  # type: ignore[override]
        """Both sides in one process: the logits head-then-tail would produce."""
        if config.placement is Placement.OFFLOAD_INPUT:
            return self.backbone(x)
        head = self.forward_head(x, config)
        if head.code is None:
            return head.logits
        tail = self.forward_tail(head.code, config)
        return torch.where(head.finished.unsqueeze(1), head.logits, tail)

    def _infer_feature_shapes(self) -> dict[int, tuple[int, int, int]]:
        was_training = self.network.training
        self.network.eval()
        shapes = {}
        with torch.no_grad():
            h = torch.zeros(1, *self.spec.input_shape)
            for point in self.split_points:
                h = self.network.run(h, point - 1, point)
                shapes[point] = (h.shape[1], h.shape[2], h.shape[3])
        self.network.train(was_training)
        return shapes
