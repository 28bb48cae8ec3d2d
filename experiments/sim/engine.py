"""The simulator's clock and event queue: simulated seconds, no threads.

    at(t, fn, *args) ─► heap of (t, sequence, fn, args) ─► run(until): pop in time order,
                        set ``now``, call fn(*args) (which may schedule more)

Everything simulated reads the time from ``clock`` (the device's estimators take it as
their clock, see device_client.knowledge), so the same runtime code runs in simulated time.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import Any


class Simulation:
    """A discrete-event loop; time in seconds from 0."""

    def __init__(self) -> None:
        self.now = 0.0
        self._queue: list[tuple[float, int, Callable[..., Any], tuple[Any, ...]]] = []
        self._sequence = itertools.count()
        self.events = 0

    def clock(self) -> float:
        return self.now

    def at(self, t: float, fn: Callable[..., Any], *args: Any) -> None:
        """Call ``fn(*args)`` at time ``t`` (now, if ``t`` is in the past)."""
        heapq.heappush(self._queue, (max(t, self.now), next(self._sequence), fn, args))

    def after(self, delay_s: float, fn: Callable[..., Any], *args: Any) -> None:
        self.at(self.now + delay_s, fn, *args)

    def run(self, until: float) -> None:
        """Run every event due up to ``until``; then the clock reads ``until``."""
        queue = self._queue
        while queue and queue[0][0] <= until:
            t, _, fn, args = heapq.heappop(queue)
            self.now = t
            self.events += 1
            fn(*args)
        self.now = max(self.now, until)
