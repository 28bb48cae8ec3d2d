"""A slimmable learned bottleneck placed at one split point.

    device                                            edge
    features (C,H,W) ─► encoder ─► code[:w] in [0,1] ─► Q(bits) ═► decoder(w) ─► features'
                        1x1 conv, 3x3 depthwise,                  1x1 slim conv, switchable BN,
                        1x1 slim conv, sigmoid                    3x3 depthwise, 1x1 conv

The encoder is kept light because it runs on the device; the decoder runs on the edge.
With ``stride=2`` the encoder also halves the resolution (its first conv is a strided 3x3)
and the decoder upsamples back; ``dense=True`` makes the 3x3 convs full rather than
depthwise, for the wide, early activations of a ResNet.

``w`` (the width) and ``bits`` are chosen per call. The first ``w`` code channels are the
most informative ones, because training (the sandwich rule) always includes the narrowest
width.
"""

from __future__ import annotations

import torch
from torch import nn

from splitnet.model.layers import ConvBNAct, SlimConv2d, SwitchableBatchNorm2d
from splitnet.quantize import fake_quantize_unit_range


class SlimmableBottleneck(nn.Module):
    """Encoder/decoder pair squeezing ``channels`` to ``w`` in ``widths`` channels."""

    def __init__(self, channels: int, hidden: int, widths: tuple[int, ...], stride: int = 1,
                 dense: bool = False) -> None:
        super().__init__()
        self.widths = tuple(sorted(widths))
        self.stride = stride
        max_width = self.widths[-1]
        groups = 1 if dense else hidden
        first = (ConvBNAct(channels, hidden, kernel=1) if stride == 1
                 else ConvBNAct(channels, hidden, kernel=3, stride=stride))
        self.encoder_body = nn.Sequential(first, ConvBNAct(hidden, hidden, kernel=3, groups=groups))
        self.encoder_out = SlimConv2d(hidden, max_width, 1, bias=True)
        self.decoder_in = SlimConv2d(max_width, hidden, 1, bias=False)
        self.decoder_norm = SwitchableBatchNorm2d(hidden, self.widths)
        upsample: list[nn.Module] = [] if stride == 1 else [nn.Upsample(scale_factor=stride)]
        self.decoder_body = nn.Sequential(
            nn.ReLU6(inplace=True),
            *upsample,
            ConvBNAct(hidden, hidden, kernel=3, groups=groups),
            nn.Conv2d(hidden, channels, 1, bias=True),
        )

    def check_width(self, width: int) -> None:
        if width not in self.widths:
            raise ValueError(f"width {width} not in {self.widths}")

    def encode(self, features: torch.Tensor, width: int) -> torch.Tensor:
        """Device side: features -> code in [0, 1] with ``width`` channels."""
        hidden = self.encoder_body(features)
        return torch.sigmoid(self.encoder_out(hidden, out_ch=width))

    def decode(self, code: torch.Tensor) -> torch.Tensor:
        """Edge side: (dequantized) code -> reconstructed features."""
        width = code.shape[1]
        hidden = self.decoder_norm(self.decoder_in(code, in_ch=width), width)
        out: torch.Tensor = self.decoder_body(hidden)
        return out

    def forward(self, features: torch.Tensor, width: int, bits: int) -> torch.Tensor:
        """Training path: encode, fake-quantize with a straight-through gradient, decode."""
        return self.decode(fake_quantize_unit_range(self.encode(features, width), bits))
