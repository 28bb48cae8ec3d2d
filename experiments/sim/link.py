"""One device's cellular uplink in simulated time, with the emulated link's semantics.

    send(t, bytes) ─► FIFO of bytes ─► delivery opportunities of the Mahimahi trace
                      (≤ 1,500 bytes each; an opportunity while the queue is empty is
                      wasted) ─► + one-way delay ─► the time the last byte arrives

The same model as ``experiments.link.UserspaceLink``, computed rather than waited for: the
queue is a cursor over the trace's opportunities (fractional: bytes / 1,500), moved to the
current opportunity whenever the queue has drained. The downlink is the one-way delay only,
as in the grid (replies are a few hundred bytes).
"""

from __future__ import annotations

import bisect
import math

from experiments.traces import PACKET_BYTES, Trace


class SimUplink:
    """A trace-driven uplink started ``start_s`` into the trace, plus a one-way delay."""

    def __init__(self, trace: Trace, start_s: float, one_way_ms: float) -> None:
        self.trace = trace
        self.offset_ms = start_s * 1000
        self.one_way_s = one_way_ms / 1000
        self.cursor = 0.0  # opportunities used so far (fractional: a partial packet)
        self.bytes_sent = 0
        self._count = len(trace.opportunities_ms)
        self._opportunities = trace.opportunities_ms.tolist()  # bisect on a list is fast

    def _cumulative(self, t_ms: float) -> int:
        """Opportunities before ``t_ms`` of looped trace time (as Trace._cumulative)."""
        loops, within = divmod(t_ms, self.trace.period_ms)
        return int(loops) * self._count + bisect.bisect_left(self._opportunities, within)

    def _opportunity_ms(self, index: int) -> float:
        loops, within = divmod(index, self._count)
        return loops * self.trace.period_ms + self._opportunities[within]

    def send(self, t: float, num_bytes: int) -> float:
        """Queue ``num_bytes`` at simulated time ``t``; the time they have all arrived."""
        now_index = self._cumulative(t * 1000 + self.offset_ms)
        if self.cursor < now_index:  # the queue drained: unused opportunities are gone
            self.cursor = float(now_index)
        self.cursor += max(num_bytes, 1) / PACKET_BYTES
        last = math.ceil(self.cursor - 1e-9) - 1
        self.bytes_sent += num_bytes
        return (self._opportunity_ms(last) - self.offset_ms) / 1000 + self.one_way_s

    def capacity_bps(self, t0: float, t1: float) -> float:
        """The trace's true rate between two simulated times."""
        return self.trace.capacity_bps(t0 * 1000 + self.offset_ms, t1 * 1000 + self.offset_ms)
