"""One registry, one factory: ``create_model(name)`` and ``list_models()``."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from splitnet.model.entropy_bottleneck import EntropyBottleneckSpec
from splitnet.model.mobilenet import MobileNetBackbone, StageSpec
from splitnet.model.resnet import ResNet
from splitnet.model.split_model import ArchSpec, BottleneckSpec, SplitModel

_REGISTRY: dict[str, Callable[[], ArchSpec]] = {}


def register_model(fn: Callable[[], ArchSpec]) -> Callable[[], ArchSpec]:
    """Register an architecture under the function's name."""
    _REGISTRY[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`."""
    return sorted(_REGISTRY)


def arch_spec(name: str) -> ArchSpec:
    """The spec registered as ``name``."""
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; choose from {list_models()}")
    return _REGISTRY[name]()


def create_model(name: str) -> SplitModel:
    """A freshly initialised model of architecture ``name``."""
    return SplitModel(arch_spec(name))


@register_model
def mnv2_fmnist() -> ArchSpec:
    """MobileNetV2-style network for 28x28 grey images, cut at 14x14, 7x7 and 4x4."""
    return ArchSpec(
        name="mnv2_fmnist",
        backbone=partial(
            MobileNetBackbone, in_channels=1, stem_channels=16, classifier_channels=384,
            num_classes=10,
            stages=(
                StageSpec(out_channels=32, blocks=2, stride=2, expand=3),  # 14x14
                StageSpec(out_channels=64, blocks=3, stride=2, expand=4),  # 7x7
                StageSpec(out_channels=128, blocks=3, stride=2, expand=4),  # 4x4
            ),
        ),
        bottlenecks=(BottleneckSpec(48), BottleneckSpec(64), BottleneckSpec(96)),
        bottleneck_widths=(1, 2, 4, 8),
        exit_points=(1, 2),
        exit_hidden=96,
    )


@register_model
def mnv2_tiny() -> ArchSpec:
    """A very small variant for fast tests of the training loop."""
    return ArchSpec(
        name="mnv2_tiny",
        backbone=partial(
            MobileNetBackbone, in_channels=1, stem_channels=8, classifier_channels=32,
            num_classes=10,
            stages=(
                StageSpec(out_channels=8, blocks=1, stride=2, expand=2),
                StageSpec(out_channels=16, blocks=1, stride=2, expand=2),
                StageSpec(out_channels=16, blocks=1, stride=2, expand=2),
            ),
        ),
        bottlenecks=(BottleneckSpec(8), BottleneckSpec(8), BottleneckSpec(8)),
        bottleneck_widths=(1, 2, 4, 8),
        exit_points=(1, 2),
        exit_hidden=16,
    )


@register_model
def resnet18_imagenette() -> ArchSpec:
    """ResNet-18 (torchvision's layer names) for 224x224 camera frames, 10 Imagenette classes.

    Cut after the stem (64x56x56), ``layer2`` (128x28x28) and ``layer3`` (256x14x14); every
    bottleneck halves the resolution, so codes are 28x28, 14x14 and 7x7 by w channels.
    """
    return ArchSpec(
        name="resnet18_imagenette",
        backbone=partial(ResNet, layers=(2, 2, 2, 2), num_classes=10),
        bottlenecks=(BottleneckSpec(64, stride=2, dense=True),
                     BottleneckSpec(96, stride=2, dense=True),
                     BottleneckSpec(128, stride=2)),
        bottleneck_widths=(2, 4, 8, 12),
        exit_points=(2, 3),
        exit_hidden=256,
        input_shape=(3, 224, 224),
        edge_precision="bf16",
        entropy_bottleneck=EntropyBottleneckSpec(point=1, latent_channels=16),
    )
