"""The split model: backbone stages, split points, slimmable bottlenecks and exits."""

from splitnet.model.registry import arch_spec, create_model, list_models, register_model
from splitnet.model.split_model import ArchSpec, HeadOutput, SplitModel, StageSpec

__all__ = [
    "ArchSpec",
    "HeadOutput",
    "SplitModel",
    "StageSpec",
    "arch_spec",
    "create_model",
    "list_models",
    "register_model",
]
