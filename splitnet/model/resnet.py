"""ResNet-18 with torchvision's layer names, so torchvision's ImageNet weights load into it.

    image 3x224x224 ─► conv1/bn1/relu/maxpool ─► layer1 ─► layer2 ─► layer3 ─► layer4 ─► avgpool/fc
                        64x56x56                 64x56x56  128x28x28 256x14x14 512x7x7

The attribute names (``conv1``, ``bn1``, ``layer1.0.conv1``, ``layer1.0.downsample.0``,
``fc``, ...) and the parameter shapes are exactly those of ``torchvision.models.resnet18``,
so ``ResNet.load_state_dict(torchvision_state_dict)`` works with ``strict=True``. The one
addition, ``BasicBlock.skip_add``, holds no state: it is the residual add written as a
``FloatFunctional`` so that eager-mode post-training quantization can observe it.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.ao.nn.quantized import FloatFunctional

from splitnet.model.backbone import SplitBackbone


class BasicBlock(nn.Module):
    """Two 3x3 convs and a skip: torchvision's ``BasicBlock``, same names and shapes."""

    expansion = 1

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch)
            )
        self.stride = stride
        self.skip_add = FloatFunctional()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        result: torch.Tensor = self.skip_add.add_relu(out, identity)
        return result


class ResNet(SplitBackbone):
    """torchvision's ResNet with BasicBlocks (``layers=(2, 2, 2, 2)`` is ResNet-18).

    Split points: after the stem's max-pool (64x56x56, 6.5 % of the MACs at 224 px), after
    ``layer2`` (128x28x28, 54 %) and after ``layer3`` (256x14x14, 77 %).
    """

    def __init__(self, layers: tuple[int, int, int, int] = (2, 2, 2, 2),
                 num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(64, 64, layers[0], stride=1)
        self.layer2 = self._make_layer(64, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(128, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(256, 512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)
        self.flatten = nn.Flatten()
        self.reset_parameters()

    @staticmethod
    def _make_layer(in_ch: int, out_ch: int, blocks: int, stride: int) -> nn.Sequential:
        return nn.Sequential(BasicBlock(in_ch, out_ch, stride),
                             *(BasicBlock(out_ch, out_ch) for _ in range(blocks - 1)))

    def reset_parameters(self) -> None:
        """torchvision's initialisation, with each block's last BN at zero (Goyal et al.)."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        for module in self.modules():
            if isinstance(module, BasicBlock):
                nn.init.zeros_(module.bn2.weight)

    @property
    def num_splits(self) -> int:
        return 3

    def fusion_groups(self) -> list[list[str]]:
        """Conv+BN(+ReLU) groups to fuse before int8 quantization."""
        groups = [["conv1", "bn1", "relu"]]
        for layer in ("layer1", "layer2", "layer3", "layer4"):
            for index, block in enumerate(getattr(self, layer)):
                prefix = f"{layer}.{index}"
                groups += [[f"{prefix}.conv1", f"{prefix}.bn1", f"{prefix}.relu"],
                           [f"{prefix}.conv2", f"{prefix}.bn2"]]
                if block.downsample is not None:
                    groups.append([f"{prefix}.downsample.0", f"{prefix}.downsample.1"])
        return groups

    def segment(self, index: int) -> list[nn.Module]:
        segments: list[list[nn.Module]] = [
            [self.conv1, self.bn1, self.relu, self.maxpool],
            [self.layer1, self.layer2],
            [self.layer3],
            [self.layer4, self.avgpool, self.flatten, self.fc],
        ]
        return segments[index]
