"""The device's part of the network in int8: post-training static quantization (torch.ao).

    fp32 SplitModel ─► copy backbone, exits, encoder bodies ─► fuse conv+bn(+relu)
        ─► observers ─► calibrate on held-apart training images ─► convert ─► Int8Head

    image ─► quant ─► segments 0..s-1 (int8) ─┬─► exit head (int8) ─► dequant ─► logits
                                              ├─► encoder body (int8) ─► dequant ─► 1x1 conv(w)
                                              │                                  ─► sigmoid ─► code
                                              ├─► entropy encoder (int8) ─► dequant ─► 1x1 conv
                                              │                                  ─► latent y
                                              └─► dequant ─► raw activation

What crosses the network and everything on the edge stay as they are: the int8 head sends
the same code format. Backend: ``x86`` here, ``qnnpack`` on ARM (a Raspberry Pi).

torch 2.13 marks ``torch.ao.quantization`` deprecated in favour of the separate ``torchao``
package (not installable here without a newer torch); the project pins torch <= 2.13.0,
where eager-mode PTQ works, and silences those warnings where it calls the API.

Only the observers' ranges are stored (:meth:`Int8Head.calibration_state`, a few kB): the
int8 weights are rebuilt from the fp32 ones on load, which is deterministic, so a checkpoint
carries one copy of the weights.
"""

from __future__ import annotations

import copy
import platform
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.ao.quantization import (
    DeQuantStub,
    QuantStub,
    convert,
    fuse_modules,
    get_default_qconfig,
    prepare,
)

from splitnet.model.layers import ConvBNAct
from splitnet.model.split_model import SplitModel


@contextmanager
def _quiet_deprecations() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.ao.quantization is deprecated")
        warnings.filterwarnings("ignore", message=".*quantized tensor creation functions")
        warnings.filterwarnings("ignore", message=".*reduce_range will be deprecated")
        yield


class Int8NotSupportedError(RuntimeError):
    """The model's backbone does not say how to fuse itself for quantization."""


def quantized_engine() -> str:
    """``qnnpack`` on ARM (a Raspberry Pi), ``x86`` elsewhere."""
    machine = platform.machine().lower()
    wanted = "qnnpack" if machine.startswith(("arm", "aarch")) else "x86"
    engines = torch.backends.quantized.supported_engines
    return wanted if wanted in engines else engines[-1]


def _fuse_conv_bn_act(module: nn.Module) -> None:
    """Fuse conv+bn inside every ConvBNAct (ReLU6 stays a separate quantized op)."""
    for child in module.modules():
        if isinstance(child, ConvBNAct):
            fuse_modules(child, [["0", "1"]], inplace=True)


class Int8Head(nn.Module):
    """An int8 copy of everything that may run on the device."""

    def __init__(self, model: SplitModel) -> None:
        super().__init__()
        groups = getattr(model.network, "fusion_groups", None)
        if groups is None:
            raise Int8NotSupportedError(
                f"{model.spec.name} offers no int8 head (its backbone has no fusion_groups)")
        self.engine = quantized_engine()
        torch.backends.quantized.engine = self.engine
        self.quant = QuantStub()
        self.dequant = DeQuantStub()
        self.network = copy.deepcopy(model.network).eval()
        self.exits = copy.deepcopy(model.exits).eval()
        self.encoders = nn.ModuleDict({
            str(p): copy.deepcopy(model.bottleneck(p).encoder_body).eval()
            for p in model.split_points
        })
        # the sliced 1x1 output conv stays fp32 and is shared with the fp32 model
        self._encoder_out = {p: model.bottleneck(p).encoder_out for p in model.split_points}
        # the entropy bottleneck's encoder likewise: int8 body, fp32 1x1 conv to the latent
        eb = model.entropy_bottleneck
        self.entropy_encoder = None if eb is None else copy.deepcopy(eb.encoder_body).eval()
        self._entropy_point = None if eb is None else eb.spec.point
        # kept out of the module tree (like _encoder_out), so that prepare() puts no
        # observer on the fp32 model's own conv
        self.__dict__["_entropy_out"] = None if eb is None else eb.encoder_out
        self._depth = model.depth
        fuse_modules(self.network, groups(), inplace=True)
        for part in (self.exits, self.encoders, self.entropy_encoder):
            if part is not None:
                _fuse_conv_bn_act(part)
        with _quiet_deprecations():
            self.qconfig = get_default_qconfig(self.engine)
            prepare(self, inplace=True)
        self._converted = False

    # ---------------------------------------------------------------- build
    @torch.no_grad()
    def calibrate(self, batches: Iterable[torch.Tensor]) -> None:
        """Run every path (all segments, exits and encoders) to set the observers' ranges."""
        for x in batches:
            h = self.quant(x)
            for point in range(1, self._depth + 1):
                h = self.network.run(h, point - 1, point)
                if str(point) in self.exits:
                    self.exits[str(point)](h)
                if str(point) in self.encoders:
                    self.encoders[str(point)](h)
                if point == self._entropy_point and self.entropy_encoder is not None:
                    self.entropy_encoder(h)

    def calibration_state(self) -> dict[str, torch.Tensor]:
        """The observers' state: all that must be stored to rebuild this head."""
        return {k: v.clone() for k, v in self.state_dict().items()
                if "activation_post_process" in k}

    def load_calibration(self, state: dict[str, torch.Tensor]) -> None:
        """Restore observer ranges written by :meth:`calibration_state`."""
        own = self.state_dict()
        missing = [k for k in own if "activation_post_process" in k and k not in state]
        if missing:
            raise KeyError(f"calibration state lacks {len(missing)} observers, e.g. {missing[0]}")
        for key, value in state.items():
            target = own[key]
            if target.shape != value.shape:  # histogram observers size their buffers lazily
                target.resize_(value.shape)
            target.copy_(value)

    def convert(self) -> Int8Head:
        """Swap in the int8 modules (after calibration)."""
        with _quiet_deprecations():
            convert(self, inplace=True)
        self._converted = True
        return self

    # ---------------------------------------------------------------- the device's part
    def start(self, x: torch.Tensor) -> torch.Tensor:
        """Quantize the input image."""
        out: torch.Tensor = self.quant(x)
        return out

    def step(self, h: torch.Tensor, point: int) -> torch.Tensor:
        """Run the segment that ends at split point ``point`` (int8 in, int8 out)."""
        return self.network.run(h, point - 1, point)

    def finish(self, h: torch.Tensor, point: int) -> torch.Tensor:
        """The rest of the network from split point ``point``, as float logits."""
        out: torch.Tensor = self.dequant(self.network.run(h, point, self._depth))
        return out

    def exit_logits(self, h: torch.Tensor, point: int) -> torch.Tensor:
        out: torch.Tensor = self.dequant(self.exits[str(point)](h))
        return out

    def encode(self, h: torch.Tensor, point: int, width: int) -> torch.Tensor:
        """The bottleneck code in [0, 1]: int8 encoder body, then the fp32 sliced 1x1 conv."""
        hidden = self.dequant(self.encoders[str(point)](h))
        return torch.sigmoid(self._encoder_out[point](hidden, out_ch=width))

    def latent(self, h: torch.Tensor) -> torch.Tensor:
        """The entropy bottleneck's latent: int8 encoder body, then its fp32 1x1 conv."""
        encoder_out: nn.Module | None = self.__dict__["_entropy_out"]
        if self.entropy_encoder is None or encoder_out is None:
            raise RuntimeError("this model has no entropy bottleneck")
        hidden = self.dequant(self.entropy_encoder(h))
        out: torch.Tensor = encoder_out(hidden)
        return out

    def to_float(self, h: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.dequant(h)
        return out
