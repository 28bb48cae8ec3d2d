"""When the edge fails: finish locally, probe again with backoff, resume once it answers.

    UP ──failure (unreachable, error reply, deadline missed)──► DOWN(next probe in b)
    DOWN ──probe fails──► DOWN(b ← min(2b, max))      DOWN ──probe answers──► UP (b reset)
"""

from __future__ import annotations

import random
import threading
import time

from device_client import tuning
from device_client.estimators import Clock


class EdgeHealth:
    """Whether to offload now, and when to probe a failed edge next."""

    def __init__(self, initial_backoff_s: float = tuning.BACKOFF_INITIAL_S,
                 max_backoff_s: float = tuning.BACKOFF_MAX_S,
                 jitter: float = tuning.BACKOFF_JITTER, seed: int | None = None,
                 clock: Clock = time.monotonic) -> None:
        self.clock = clock
        self.initial_backoff_s = initial_backoff_s
        self.max_backoff_s = max_backoff_s
        self.jitter = jitter
        self._backoff_s = initial_backoff_s
        self._up = True
        self._next_probe_at = 0.0
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.failures = 0
        self.recoveries = 0
        self.last_error = ""

    @property
    def up(self) -> bool:
        return self._up

    @property
    def next_probe_at(self) -> float:
        """When a down edge's next probe is due (its clock's time)."""
        return self._next_probe_at

    def probe_due(self, now: float | None = None) -> bool:
        """True when the edge is down and its next probe is due."""
        return not self._up and (self.clock() if now is None else now) >= self._next_probe_at

    def failure(self, reason: str = "", now: float | None = None) -> None:
        """An offload or probe failed: mark the edge down and schedule the next probe."""
        with self._lock:
            now = self.clock() if now is None else now
            if self._up:
                self.failures += 1
                self._backoff_s = self.initial_backoff_s
            else:
                self._backoff_s = min(self._backoff_s * 2, self.max_backoff_s)
            self._up = False
            self.last_error = reason
            spread = 1 + self._rng.uniform(-self.jitter, self.jitter)
            self._next_probe_at = now + self._backoff_s * spread

    def success(self) -> None:
        """The edge answered: offload again."""
        with self._lock:
            if not self._up:
                self.recoveries += 1
            self._up = True
            self._backoff_s = self.initial_backoff_s
