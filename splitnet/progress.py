"""A dependency-free progress bar for long loops, written to stderr.

    for batch in progress(batches, desc="epoch 3/30"):
        ...
    epoch 3/30 ████████░░░░░░░░  187/469  40% 00:31<00:46 loss=0.412
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


class progress(Iterator[T]):  # noqa: N801 - reads like a function at call sites
    """Wrap an iterable and redraw one status line at most ``refresh_s`` apart."""

    def __init__(
        self,
        items: Iterable[T],
        desc: str = "",
        total: int | None = None,
        refresh_s: float = 0.5,
        enabled: bool | None = None,
    ) -> None:
        self._items = iter(items)
        self.desc = desc
        self.total = total if total is not None else _length(items)
        self.count = 0
        self.postfix = ""
        self._start = time.monotonic()
        self._last_draw = 0.0
        self._refresh_s = refresh_s
        self._enabled = sys.stderr.isatty() if enabled is None else enabled

    def __iter__(self) -> progress[T]:
        return self

    def __next__(self) -> T:
        try:
            item = next(self._items)
        except StopIteration:
            self._draw(final=True)
            raise
        if self.count:
            self._draw()
        self.count += 1
        return item

    def set_postfix(self, **values: float | str) -> None:
        """Show ``key=value`` pairs after the bar (floats to 4 significant digits)."""
        self.postfix = " ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items()
        )

    def _draw(self, final: bool = False) -> None:
        now = time.monotonic()
        if not self._enabled and not final:
            return
        if not final and now - self._last_draw < self._refresh_s:
            return
        self._last_draw = now
        elapsed = now - self._start
        if self.total:
            fraction = min(self.count / self.total, 1.0)
            filled = int(fraction * 20)
            bar = "█" * filled + "░" * (20 - filled)
            eta = elapsed / fraction - elapsed if fraction > 0 else 0.0
            counts = f"{bar} {self.count:>5}/{self.total} {fraction:4.0%} "
            times = f"{_clock(elapsed)}<{_clock(eta)}"
        else:
            counts, times = f"{self.count} ", _clock(elapsed)
        line = f"{self.desc} {counts}{times} {self.postfix}".rstrip()
        end = "\n" if final else ""
        sys.stderr.write(("\r" if self._enabled else "") + line + end)
        sys.stderr.flush()


def _length(items: Iterable[object]) -> int | None:
    try:
        return len(items)  # type: ignore[arg-type]
    except TypeError:
        return None


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes:02d}:{secs:02d}"
