"""Supervised threads: a long-lived loop that crashes is restarted, one that stalls is
reported, and one that cannot be kept alive stops its process on purpose.

    Supervisor.start(name, body, stall_s)
        thread: while not stopped: body(beat)   ── raises ─► log, on_crash, restart after a
                                                             backoff (at most max_restarts a
                                                             minute, else fatal)
        monitor: every beat older than its stall_s ─► fatal ("stalled"), once
    healthy ◄─ every thread alive, none stalled, nothing fatal

``body`` runs one round of the loop (take one item, handle it) and calls ``beat()`` at least
once per round, including while it waits for work (every wait has a timeout shorter than the
stall limit). A thread cannot be killed in Python, so a stalled one is not restarted: the
owner decides in ``fatal`` (the edge reports NOT_SERVING and :meth:`replace`s its worker; a
device service exits non-zero, so that systemd starts it afresh). ``fatal`` is called once
per failure, from the supervisor's own threads.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger("splitnet.supervision")


class Stopped(Exception):  # noqa: N818 - a signal, not an error
    """Raised inside a body to end its thread quietly (the owner is shutting down)."""


@dataclass
class Supervised:
    """One supervised loop and what is known of it."""

    name: str
    body: Callable[[Callable[[], None]], None]
    stall_s: float
    on_crash: Callable[[BaseException], None] | None
    last_beat: float = field(default_factory=time.monotonic)
    crashes: deque[float] = field(default_factory=lambda: deque(maxlen=64))
    thread: threading.Thread | None = None
    stalled: bool = False
    finished: bool = False

    def beat(self) -> None:
        self.last_beat = time.monotonic()


class Supervisor:
    """Runs and watches a set of loops; see the module docstring."""

    def __init__(self, fatal: Callable[[str, str], None], max_restarts: int = 5,
                 window_s: float = 60.0, check_interval_s: float = 0.25) -> None:
        self._fatal = fatal
        self.max_restarts = max_restarts
        self.window_s = window_s
        self.check_interval_s = check_interval_s
        self.stop_event = threading.Event()
        self.loops: dict[str, Supervised] = {}
        self.failure: str | None = None  # the first fatal failure, if any
        self._lock = threading.Lock()
        self._monitor = threading.Thread(target=self._watch, name="supervisor", daemon=True)
        self._monitor.start()

    # ---------------------------------------------------------------- owner's side
    def start(self, name: str, body: Callable[[Callable[[], None]], None], stall_s: float,
              on_crash: Callable[[BaseException], None] | None = None) -> Supervised:
        """Run ``body(beat)`` over and over on a thread of its own until :meth:`stop`."""
        loop = Supervised(name, body, stall_s, on_crash)
        with self._lock:
            self.loops[name] = loop
        self._spawn(loop)
        return loop

    def stop(self, join_s: float = 5.0) -> None:
        """Ask every loop to end after its current round, and wait for them a little."""
        self.stop_event.set()
        deadline = time.monotonic() + join_s
        for loop in list(self.loops.values()):
            if loop.thread is not None and loop.thread is not threading.current_thread():
                loop.thread.join(timeout=max(deadline - time.monotonic(), 0.0))

    @property
    def healthy(self) -> bool:
        """Every loop alive and beating, and no fatal failure."""
        if self.failure is not None:
            return False
        now = time.monotonic()
        return all(loop.finished or (loop.thread is not None and loop.thread.is_alive()
                                     and now - loop.last_beat <= loop.stall_s)
                   for loop in self.loops.values())

    def last_progress(self) -> float:
        """The oldest of the loops' latest beats (monotonic seconds): what a watchdog feeds
        on. Finished loops do not count."""
        beats = [loop.last_beat for loop in self.loops.values() if not loop.finished]
        return min(beats) if beats else time.monotonic()

    # ---------------------------------------------------------------- threads
    def _spawn(self, loop: Supervised) -> None:
        loop.beat()
        loop.thread = threading.Thread(target=self._run, args=(loop,),
                                       name=f"supervised-{loop.name}", daemon=True)
        loop.thread.start()

    def _run(self, loop: Supervised) -> None:
        me = threading.current_thread()
        while not self.stop_event.is_set():
            try:
                loop.body(loop.beat)
                if loop.thread is not me:  # replaced while it was stalled: step aside
                    return
                loop.beat()
            except Stopped:
                break
            except BaseException as error:  # noqa: BLE001 - a supervisor catches everything
                self._crashed(loop, error)
                return
        loop.finished = True

    def _crashed(self, loop: Supervised, error: BaseException) -> None:
        log.error("%s crashed: %s: %s", loop.name, type(error).__name__, error,
                  exc_info=error)
        if loop.on_crash is not None:
            try:
                loop.on_crash(error)
            except Exception as second:  # noqa: BLE001 - the crash handler itself failed
                log.error("%s: its crash handler failed too: %r", loop.name, second)
                self._give_up(loop.name, f"crashed ({error!r}) and could not recover its "
                                         f"work ({second!r})")
                return
        now = time.monotonic()
        loop.crashes.append(now)
        recent = sum(1 for t in loop.crashes if now - t <= self.window_s)
        if recent > self.max_restarts:
            self._give_up(loop.name, f"crashed {recent} times in {self.window_s:.0f} s, last "
                                     f"with {type(error).__name__}: {error}")
            return
        if self.stop_event.wait(min(0.05 * 2 ** (recent - 1), 5.0)):
            return
        log.warning("%s restarted (%d crashes in the last %.0f s)", loop.name, recent,
                    self.window_s)
        self._spawn(loop)

    def _watch(self) -> None:
        while not self.stop_event.wait(self.check_interval_s):
            now = time.monotonic()
            for loop in list(self.loops.values()):
                if loop.finished or loop.stalled:
                    continue
                if now - loop.last_beat > loop.stall_s:
                    loop.stalled = True
                    self._give_up(loop.name, f"stalled: no progress for "
                                             f"{now - loop.last_beat:.1f} s (limit "
                                             f"{loop.stall_s:g} s)")

    def _give_up(self, name: str, reason: str) -> None:
        with self._lock:
            first = self.failure is None
            if first:
                self.failure = f"{name} {reason}"
        log.critical("%s %s", name, reason)
        if first:
            self._fatal(name, reason)

    def replace(self, name: str) -> None:
        """Start ``name`` afresh on a new thread after it stalled or was given up on, and
        clear the failure it caused (the edge's way back to SERVING). A stalled thread is
        abandoned, not killed: if it wakes, it ends after its round, touching nothing more."""
        with self._lock:
            loop = self.loops[name]
            loop.stalled = False
            loop.crashes.clear()
            self.failure = None
        self._spawn(loop)
