"""A MobileNetV2-style network that can be cut at any stage boundary.

    image ─► stem ─► stage1 ─┬─► stage2 ─┬─► stage3 ─┬─► classifier ─► logits
                     split 1 ┘   split 2 ┘   split 3 ┘
                     exit 1 ◄┘   exit 2 ◄┘

At each split point sits a slimmable bottleneck (see ``bottleneck.py``); a config may also
skip it and send the raw activation. Exits sit after stages 1 and 2. A config uses the
deepest exit at or before its split point (LOCAL: the deepest exit), so an exit always runs
on the device.

    device: forward_head(x, config) ─► HeadOutput(finished rows + logits, code to send)
    edge:   forward_tail(code, config) ─► logits
    both:   forward(x, config) == head then tail, in one process

Every config runs on the same modules: switching allocates nothing and reloads nothing.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import torch
from torch import nn

from splitnet.config import VALID_BITS, Config, ConfigError, Placement
from splitnet.model.bottleneck import SlimmableBottleneck
from splitnet.model.exits import ExitHead
from splitnet.model.layers import ConvBNAct, InvertedResidual
from splitnet.quantize import QuantizedTensor, quantize_min_max, quantize_unit_range


@dataclass(frozen=True)
class StageSpec:
    """``blocks`` inverted residuals; the first has ``stride``; all expand by ``expand``."""

    out_channels: int
    blocks: int
    stride: int
    expand: int


@dataclass(frozen=True)
class ArchSpec:
    """Everything that fixes the shape of a :class:`SplitModel`."""

    name: str
    stem_channels: int
    stages: tuple[StageSpec, ...]
    classifier_channels: int
    bottleneck_hidden: tuple[int, ...]  # one per split point (= per stage)
    bottleneck_widths: tuple[int, ...]
    exit_points: tuple[int, ...]
    exit_hidden: int
    dropout: float = 0.2
    num_classes: int = 10
    input_shape: tuple[int, int, int] = (1, 28, 28)
    bits: tuple[int, ...] = field(default=VALID_BITS)


@dataclass
class HeadOutput:
    """What the device holds after running the head on a batch.

    ``finished`` marks rows the device has already answered (an exit fired, or LOCAL), and
    ``exited`` those answered by an early exit; ``logits`` is valid on finished rows.
    ``code`` is what must be sent for the other rows (it covers the whole batch; None when
    nothing needs sending). ``features`` is the
    activation at the split point, kept so the device can finish locally
    (``SplitModel.logits_from``) if the edge fails.
    """

    finished: torch.Tensor  # bool (B,)
    logits: torch.Tensor  # float (B, K), valid where finished
    code: QuantizedTensor | None
    exited: torch.Tensor  # bool (B,)
    features: torch.Tensor | None = None


class SplitModel(nn.Module):
    """Backbone + per-split slimmable bottlenecks + early exits."""

    def __init__(self, spec: ArchSpec) -> None:
        super().__init__()
        if len(spec.bottleneck_hidden) != len(spec.stages):
            raise ValueError("need one bottleneck_hidden entry per stage (split point)")
        self.spec = spec
        self.stem = ConvBNAct(spec.input_shape[0], spec.stem_channels, kernel=3)
        stages: list[nn.Module] = []
        in_ch = spec.stem_channels
        for stage in spec.stages:
            blocks = []
            for index in range(stage.blocks):
                stride = stage.stride if index == 0 else 1
                blocks.append(InvertedResidual(in_ch, stage.out_channels, stride, stage.expand))
                in_ch = stage.out_channels
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)
        self.classifier = nn.Sequential(
            ConvBNAct(in_ch, spec.classifier_channels, kernel=1),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Dropout(spec.dropout),
            nn.Linear(spec.classifier_channels, spec.num_classes),
        )
        self.bottlenecks = nn.ModuleDict(
            {
                str(point): SlimmableBottleneck(stage.out_channels, hidden, spec.bottleneck_widths)
                for point, stage, hidden in zip(
                    self.split_points, spec.stages, spec.bottleneck_hidden, strict=True
                )
            }
        )
        self.exits = nn.ModuleDict(
            {
                str(point): ExitHead(
                    spec.stages[point - 1].out_channels, spec.exit_hidden, spec.num_classes
                )
                for point in spec.exit_points
            }
        )
        self._feature_shapes = self._infer_feature_shapes()

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

    def stage(self, point: int) -> nn.Module:
        """Stage ``point`` (1-based): the blocks between split points ``point-1`` and ``point``."""
        module: nn.Module = self.stages[point - 1]
        return module

    @property
    def split_points(self) -> tuple[int, ...]:
        return tuple(range(1, len(self.spec.stages) + 1))

    def feature_shape(self, point: int) -> tuple[int, int, int]:
        """(C, H, W) of the activation after stage ``point``."""
        return self._feature_shapes[point]

    def code_shape(self, config: Config) -> tuple[int, int, int]:
        """(C, H, W) of the tensor a split config sends."""
        self.check(config)
        channels, height, width = self.feature_shape(config.split or 0)
        return (channels if config.width is None else config.width, height, width)

    def exit_point_for(self, config: Config) -> int | None:
        """The exit a config may stop at: the deepest one at or before its split point."""
        if config.placement is Placement.OFFLOAD_INPUT:
            return None
        limit = config.split if config.placement is Placement.SPLIT else len(self.spec.stages)
        usable = [p for p in self.spec.exit_points if limit is not None and p <= limit]
        return max(usable) if usable else None

    def split_configs(self) -> list[Config]:
        """Every SPLIT config the model offers (no exit): raw splits and all bottlenecks."""
        configs = []
        for point in self.split_points:
            configs.append(Config(split=point, width=None, bits=8))
            for width, bits in itertools.product(self.spec.bottleneck_widths, self.spec.bits):
                configs.append(Config(split=point, width=width, bits=bits))
        return configs

    def check(self, config: Config) -> None:
        """Raise ConfigError if this model cannot run ``config``."""
        if config.placement is not Placement.SPLIT:
            return
        if config.split not in self.split_points:
            raise ConfigError(f"split point {config.split} not offered; use {self.split_points}")
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

        if config.placement is not Placement.SPLIT or config.split is None:
            full = count([self.stem, self.stages, self.classifier])
            return (full, 0) if config.placement is Placement.LOCAL else (0, full)
        self.check(config)
        head = count([self.stem, *self.stages[: config.split]])
        tail = count([*self.stages[config.split:], self.classifier])
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
    def features(self, x: torch.Tensor, upto: int, start: int = 0,
                 from_features: torch.Tensor | None = None) -> torch.Tensor:
        """Run stages ``start+1 .. upto`` (``start=0`` begins at the stem on ``x``)."""
        h = self.stem(x) if start == 0 else from_features
        assert h is not None
        for stage in self.stages[start:upto]:
            h = stage(h)
        return h

    def logits_from(self, features: torch.Tensor, point: int) -> torch.Tensor:
        """Finish the network from the activation after stage ``point``."""
        h = self.features(features, len(self.stages), start=point, from_features=features)
        out: torch.Tensor = self.classifier(h)
        return out

    def backbone(self, x: torch.Tensor) -> torch.Tensor:
        """The unmodified network, image to logits."""
        out: torch.Tensor = self.classifier(self.features(x, len(self.stages)))
        return out

    # ----------------------------------------------------------------- the split contract
    def forward_head(self, x: torch.Tensor, config: Config) -> HeadOutput:
        """Device side: run up to the split, try the exit, and produce the code to send."""
        self.check(config)
        if config.placement is Placement.OFFLOAD_INPUT:
            raise ConfigError("OFFLOAD_INPUT runs no head: send the encoded image instead")
        batch = x.shape[0]
        exit_point = self.exit_point_for(config)
        depth = config.split if config.placement is Placement.SPLIT else len(self.stages)
        assert depth is not None
        finished = torch.zeros(batch, dtype=torch.bool)
        logits = torch.zeros(batch, self.spec.num_classes)
        h = self.stem(x)
        for point in range(1, depth + 1):
            h = self.stage(point)(h)
            if point == exit_point and config.exit_threshold is not None:
                logits = self.exit_head(point)(h)
                confidence = torch.softmax(logits, dim=1).max(dim=1).values
                finished = confidence >= config.exit_threshold
                if bool(finished.all()):
                    return HeadOutput(finished, logits, None, finished)
        if config.placement is Placement.LOCAL:
            final = self.classifier(h)
            logits = torch.where(finished.unsqueeze(1), logits, final)
            return HeadOutput(torch.ones(batch, dtype=torch.bool), logits, None, finished)
        return HeadOutput(finished, logits, self.encode_features(h, config), finished, h)

    def encode_features(self, features: torch.Tensor, config: Config) -> QuantizedTensor:
        """The activation at the split, as the quantized code a SPLIT config sends."""
        if config.width is None:
            return quantize_min_max(features, config.bits)
        assert config.split is not None
        return quantize_unit_range(self.bottleneck(config.split).encode(features, config.width),
                                   config.bits)

    def forward_tail(self, code: QuantizedTensor, config: Config) -> torch.Tensor:
        """Edge side: dequantize, decode the bottleneck (if any), finish the network."""
        self.check(config)
        if config.placement is not Placement.SPLIT or config.split is None:
            raise ConfigError("forward_tail needs a SPLIT config")
        expected = self.code_shape(config)
        if tuple(code.codes.shape[1:]) != expected or code.bits != config.bits:
            raise ConfigError(
                f"code of shape {tuple(code.codes.shape[1:])} at {code.bits} bits does not fit "
                f"{config} (expects {expected} at {config.bits} bits)"
            )
        h = code.dequantize()
        if config.width is not None:
            h = self.bottleneck(config.split).decode(h)
        return self.logits_from(h, config.split)

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
        was_training = self.training
        self.eval()
        shapes = {}
        with torch.no_grad():
            h = self.stem(torch.zeros(1, *self.spec.input_shape))
            for point, stage in enumerate(self.stages, start=1):
                h = stage(h)
                shapes[point] = (h.shape[1], h.shape[2], h.shape[3])
        self.train(was_training)
        return shapes
