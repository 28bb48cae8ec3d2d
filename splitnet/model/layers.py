"""Building blocks: conv-BN-activation, MobileNetV2 inverted residuals, slimmable layers."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ConvBNAct(nn.Sequential):
    """Conv2d -> BatchNorm -> ReLU6 (or no activation)."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int = 3,
        stride: int = 1,
        groups: int = 1,
        act: bool = True,
    ) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(out_ch),
        ]
        if act:
            layers.append(nn.ReLU6(inplace=True))
        super().__init__(*layers)


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand -> 3x3 depthwise -> 1x1 linear project (+ skip).

        x ──► expand(t·C) ──► depthwise(stride) ──► project(C') ──►(+x)──► y
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = in_ch * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(ConvBNAct(in_ch, hidden, kernel=1))
        layers += [
            ConvBNAct(hidden, hidden, kernel=3, stride=stride, groups=hidden),
            ConvBNAct(hidden, out_ch, kernel=1, act=False),
        ]
        self.body = nn.Sequential(*layers)
        self.use_skip = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.body(x)
        return x + y if self.use_skip else y


class SlimConv2d(nn.Conv2d):
    """A 1x1 conv whose input or output channels can be cut to the first ``k`` at call time.

    Slicing the weight costs no allocation of a new module, so switching widths is free.
    """

    def forward(  # type: ignore[override]
        self, x: torch.Tensor, in_ch: int | None = None, out_ch: int | None = None
    ) -> torch.Tensor:
        weight = self.weight
        if out_ch is not None:
            weight = weight[:out_ch]
        if in_ch is not None:
            weight = weight[:, :in_ch]
        bias = None if self.bias is None else self.bias[: weight.shape[0]]
        return F.conv2d(x, weight, bias, self.stride, self.padding)


class SwitchableBatchNorm2d(nn.Module):
    """One BatchNorm per slimmable width (Yu et al., Slimmable Networks, ICLR 2019)."""

    def __init__(self, channels: int, widths: tuple[int, ...]) -> None:
        super().__init__()
        self.widths = widths
        self.norms = nn.ModuleList(nn.BatchNorm2d(channels) for _ in widths)

    def forward(self, x: torch.Tensor, width: int) -> torch.Tensor:
        norm: nn.Module = self.norms[self.widths.index(width)]
        out: torch.Tensor = norm(x)
        return out
