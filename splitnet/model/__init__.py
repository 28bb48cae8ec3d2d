"""The split model: backbone segments, split points, slimmable bottlenecks and exits."""

from splitnet.model.backbone import SplitBackbone
from splitnet.model.mobilenet import StageSpec
from splitnet.model.registry import arch_spec, create_model, list_models, register_model
from splitnet.model.split_model import ArchSpec, BottleneckSpec, HeadOutput, SplitModel

__all__ = [
    "ArchSpec",
    "BottleneckSpec",
    "HeadOutput",
    "SplitBackbone",
    "SplitModel",
    "StageSpec",
    "arch_spec",
    "create_model",
    "list_models",
    "register_model",
]
