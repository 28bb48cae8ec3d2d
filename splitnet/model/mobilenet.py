"""A MobileNetV2-style backbone for small images (the Fashion-MNIST model).

    image ─► stem ─► stage1 ─┬─► stage2 ─┬─► stage3 ─┬─► classifier ─► logits
                     split 1 ┘   split 2 ┘   split 3 ┘
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from splitnet.model.backbone import SplitBackbone
from splitnet.model.layers import ConvBNAct, InvertedResidual


@dataclass(frozen=True)
class StageSpec:
    """``blocks`` inverted residuals; the first has ``stride``; all expand by ``expand``."""

    out_channels: int
    blocks: int
    stride: int
    expand: int


class MobileNetBackbone(SplitBackbone):
    """Stem, one stage of inverted residuals per split point, then the classifier."""

    def __init__(self, in_channels: int, stem_channels: int, stages: tuple[StageSpec, ...],
                 classifier_channels: int, num_classes: int, dropout: float = 0.2) -> None:
        super().__init__()
        self.stem = ConvBNAct(in_channels, stem_channels, kernel=3)
        built: list[nn.Module] = []
        in_ch = stem_channels
        for stage in stages:
            blocks = []
            for index in range(stage.blocks):
                stride = stage.stride if index == 0 else 1
                blocks.append(InvertedResidual(in_ch, stage.out_channels, stride, stage.expand))
                in_ch = stage.out_channels
            built.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(built)
        self.classifier = nn.Sequential(
            ConvBNAct(in_ch, classifier_channels, kernel=1),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(classifier_channels, num_classes),
        )

    @property
    def num_splits(self) -> int:
        return len(self.stages)

    def segment(self, index: int) -> list[nn.Module]:
        if index == 0:
            return [self.stem, self.stages[0]]
        if index < len(self.stages):
            return [self.stages[index]]
        return [self.classifier]
