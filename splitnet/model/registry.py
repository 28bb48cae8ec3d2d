"""One registry, one factory: ``create_model(name)`` and ``list_models()``."""

from __future__ import annotations

from collections.abc import Callable

from splitnet.model.split_model import ArchSpec, SplitModel, StageSpec

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
        stem_channels=16,
        stages=(
            StageSpec(out_channels=32, blocks=2, stride=2, expand=3),  # 14x14
            StageSpec(out_channels=64, blocks=3, stride=2, expand=4),  # 7x7
            StageSpec(out_channels=128, blocks=3, stride=2, expand=4),  # 4x4
        ),
        classifier_channels=384,
        bottleneck_hidden=(48, 64, 96),
        bottleneck_widths=(1, 2, 4, 8),
        exit_points=(1, 2),
        exit_hidden=96,
    )


@register_model
def mnv2_tiny() -> ArchSpec:
    """A very small variant for fast tests of the training loop."""
    return ArchSpec(
        name="mnv2_tiny",
        stem_channels=8,
        stages=(
            StageSpec(out_channels=8, blocks=1, stride=2, expand=2),
            StageSpec(out_channels=16, blocks=1, stride=2, expand=2),
            StageSpec(out_channels=16, blocks=1, stride=2, expand=2),
        ),
        classifier_channels=32,
        bottleneck_hidden=(8, 8, 8),
        bottleneck_widths=(1, 2, 4, 8),
        exit_points=(1, 2),
        exit_hidden=16,
    )
