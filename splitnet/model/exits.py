"""Early-exit classifiers that let the device stop before sending anything.

    features (C,H,W) ─► 1x1 conv ─► 3x3 depthwise ─► global pool ─► linear ─► logits
"""

from __future__ import annotations

import torch
from torch import nn

from splitnet.model.layers import ConvBNAct


class ExitHead(nn.Module):
    """A small classifier on an intermediate feature map."""

    def __init__(self, channels: int, hidden: int, num_classes: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            ConvBNAct(channels, hidden, kernel=1),
            ConvBNAct(hidden, hidden, kernel=3, groups=hidden),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.classifier = nn.Linear(hidden, num_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.classifier(self.body(features))
        return out
