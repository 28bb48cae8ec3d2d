"""Cellular uplink traces in the Mahimahi packet-delivery format.

    file: one integer per line, a millisecond at which one 1500-byte packet may cross;
          repeated lines mean several packets that millisecond; the trace loops.
    Trace.load(path, scale) ─► sorted opportunity times (ms) over one period
    capacity_bps(t0, t1)    ─► the true link rate over any window (looping as needed)

``scale`` thins (or repeats) opportunities evenly: 0.1 keeps every tenth one, which is how
the shared traces are turned into IoT-class uplinks.
"""

from __future__ import annotations

import bisect
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PACKET_BYTES = 1500
SHARED_TRACES = Path(__file__).resolve().parent.parent.parent / "shared" / "traces"
TRACE_DIR_ENV = "SPLITNET_TRACE_DIR"


class TraceError(ValueError):
    """A trace file that is missing or not in the Mahimahi format."""


def trace_dirs() -> list[Path]:
    """Where trace names (without a folder) are looked up: ``$SPLITNET_TRACE_DIR``, the
    shared traces beside the checkout, then the copies shipped in experiments/traces."""
    dirs = [Path(os.environ[TRACE_DIR_ENV])] if os.environ.get(TRACE_DIR_ENV) else []
    return dirs + [SHARED_TRACES, Path(__file__).resolve().parent / "traces"]


def resolve_trace(name_or_path: str | os.PathLike[str]) -> Path:
    """A trace path as given, or a bare name found in the shared traces folder."""
    path = Path(name_or_path)
    candidates = [path] + [c for folder in trace_dirs()
                           for c in (folder / path.name, folder / f"{path.name}.up")]
    for candidate in candidates:
        try:
            if candidate.is_file():
                return candidate
        except (OSError, ValueError):  # a name too long, or with a NUL, is no file of ours
            continue
    looked = ", ".join(str(d) for d in trace_dirs())
    raise TraceError(f"trace {name_or_path} not found (looked in {looked}); pass a path to "
                     f"a Mahimahi trace file or set {TRACE_DIR_ENV}")


@dataclass(frozen=True)
class Trace:
    """Delivery opportunities (ms from the start of one period) and the period length."""

    name: str
    opportunities_ms: np.ndarray  # sorted int64
    period_ms: int
    scale: float = 1.0

    @classmethod
    def load(cls, name_or_path: str | os.PathLike[str], scale: float = 1.0) -> Trace:
        path = resolve_trace(name_or_path)
        return cls.parse(path.read_text(), path.name, scale)

    @classmethod
    def parse(cls, text: str, name: str, scale: float = 1.0) -> Trace:
        """A Mahimahi trace: one delivery opportunity per line, in integer ms."""
        try:
            values = np.array([int(line) for line in text.split()], dtype=np.int64)
        except (ValueError, OverflowError) as error:
            raise TraceError(f"{name} is not a Mahimahi trace (one integer ms per line): "
                             f"{error}") from None
        if values.size == 0 or (values < 0).any():
            raise TraceError(f"{name} holds no valid delivery opportunities")
        return cls.from_opportunities(name, np.sort(values), scale)

    @classmethod
    def from_opportunities(cls, name: str, values: np.ndarray, scale: float = 1.0) -> Trace:
        if scale <= 0:
            raise TraceError(f"scale must be positive, got {scale}")
        period = int(max(values[-1], 1))
        if scale != 1.0:
            # keep opportunity i as many times as floor((i+1)·s) − floor(i·s)
            index = np.arange(len(values))
            keep = np.floor((index + 1) * scale) - np.floor(index * scale)
            values = np.repeat(values, keep.astype(np.int64))
        return cls(name, np.asarray(values, dtype=np.int64), period, scale)

    @classmethod
    def constant(cls, mbps: float, seconds: int = 1) -> Trace:
        """A fixed-rate link (for tests and ad-hoc runs)."""
        per_ms = mbps * 1e6 / 8 / PACKET_BYTES / 1000
        count = int(round(per_ms * 1000 * seconds))
        values = np.floor(np.arange(1, count + 1) / per_ms).astype(np.int64) + 1
        return cls(f"constant-{mbps:g}mbps", values, 1000 * seconds)

    def opportunities_between(self, start_ms: float, end_ms: float) -> int:
        """How many opportunities fall in [start_ms, end_ms) of looped trace time."""
        return self._cumulative(end_ms) - self._cumulative(start_ms)

    def _cumulative(self, t_ms: float) -> int:
        loops, within = divmod(t_ms, self.period_ms)
        return int(loops) * len(self.opportunities_ms) + bisect.bisect_left(
            self.opportunities_ms, within)  # type: ignore[call-overload]

    def next_opportunity(self, t_ms: float) -> float:
        """The first opportunity at or after ``t_ms`` (looped trace time)."""
        loops, within = divmod(t_ms, self.period_ms)
        index = int(np.searchsorted(self.opportunities_ms, math.ceil(within)))
        if index >= len(self.opportunities_ms):
            return (loops + 1) * self.period_ms + float(self.opportunities_ms[0])
        return loops * self.period_ms + float(self.opportunities_ms[index])

    def capacity_bps(self, start_ms: float, end_ms: float) -> float:
        """True link rate over [start_ms, end_ms)."""
        if end_ms <= start_ms:
            return 0.0
        return self.opportunities_between(start_ms, end_ms) * PACKET_BYTES * 8 / (
            (end_ms - start_ms) / 1000)

    def mean_bps(self) -> float:
        return len(self.opportunities_ms) * PACKET_BYTES * 8 / (self.period_ms / 1000)

    def per_second_mbps(self) -> np.ndarray:
        """Capacity in each whole second of one period, in Mbit/s."""
        seconds = self.period_ms // 1000
        counts = np.bincount(self.opportunities_ms // 1000, minlength=seconds + 1)[:seconds]
        return counts * PACKET_BYTES * 8 / 1e6
