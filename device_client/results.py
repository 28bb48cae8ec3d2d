"""What the device answers for every frame, and what it cost.

    InferenceResult: label, class name, top-k, probabilities, where it was finished,
                     the config, a LatencyBreakdown, bytes, energy, fallback, the plan's
                     prediction ─► record(): one flat JSON line (what services and
                     experiments write)
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from splitnet.config import Config

Frame = np.ndarray | torch.Tensor | bytes | str | os.PathLike[str]
WHERE_EXIT = "device-exit"  # an early exit on the device answered; nothing was sent
WHERE_EDGE = "edge"  # the edge answered
WHERE_LOCAL = "local"  # the device ran the rest itself (LOCAL, or after a failed offload)
WHERE_NONE = "none"  # nothing could classify it (the result carries the error)
TOP_K = 3


@dataclass(frozen=True)
class LatencyBreakdown:
    """Where the time of one input went, in milliseconds."""

    device_ms: float = 0.0  # the device's work before sending: a head with the encoding of
    # its code, or an offloaded frame's JPEG/PNG encoding; everything, if nothing is sent
    transfer_ms: float = 0.0  # network: uplink, downlink and propagation
    server_ms: float = 0.0  # edge queue + compute, as the edge reported it
    local_tail_ms: float = 0.0  # device compute after a failed offload
    total_ms: float = 0.0


@dataclass(frozen=True)
class InferenceResult:
    """One input's result and what it cost."""

    label: int  # −1 when nothing could classify it (``error`` says why)
    probabilities: tuple[float, ...]
    config: Config
    where: str  # WHERE_EXIT, WHERE_EDGE, WHERE_LOCAL or WHERE_NONE
    latency: LatencyBreakdown
    bytes_sent: int
    bytes_received: int
    energy_mj: float
    fallback: bool
    bandwidth_estimate_bps: float
    battery_level: float
    predicted_latency_ms: float
    overhead_ms: float  # decoding, planning, bookkeeping: all but the model (its encoding
    # included) and the network
    error: str | None = None
    class_name: str = ""  # the label's name ("tench", "church", ...)
    top_k: tuple[tuple[str, float], ...] = ()  # the most probable classes, best first
    extra: dict[str, Any] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        """A flat JSON-able record: one line of a service's or an experiment's output."""
        out = asdict(self)
        out["config"] = str(self.config)
        out.update(out.pop("latency"))
        out.update(out.pop("extra"))
        out.pop("probabilities")
        out["top_k"] = [list(pair) for pair in self.top_k]
        return out

    def named(self, class_names: tuple[str, ...]) -> InferenceResult:
        """The same result with its class name and top-k filled in from ``class_names``."""
        from dataclasses import replace

        if self.label < 0 or not self.probabilities:
            return self
        order = np.argsort(self.probabilities)[::-1][:TOP_K]
        return replace(self, class_name=class_names[self.label],
                       top_k=tuple((class_names[i], float(self.probabilities[i]))
                                   for i in order))


def failed_result(config: Config | None, error: BaseException) -> InferenceResult:
    """The result of a frame nothing could classify: label −1 and the reason, so that every
    frame taken is still answered."""
    from splitnet.config import LOCAL

    return InferenceResult(-1, (), config or LOCAL, WHERE_NONE, LatencyBreakdown(), 0, 0,
                           0.0, True, 0.0, 0.0, 0.0, 0.0, f"{type(error).__name__}: {error}")
