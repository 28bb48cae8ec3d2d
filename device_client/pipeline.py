"""Frames from a camera at its own rate, through the device and the edge at once.

    source thread ──(frame, captured at)──► newest-frame slot ── a frame still there when
    (camera, video file or                   (holds one)          the next arrives is
     frame list, at its fps; sources.py)          │               dropped and counted
    head thread:   take the newest ─► DeviceClient.begin (plan, head) ─┬─ finished on the
                   device (LOCAL, an exit) ─► on_result                │
                                      hand-off (holds one) ◄───────────┘ a payload to send
    edge thread:   DeviceClient.complete (send, wait, or finish on the device) ─► on_result
                   latency = result time − capture time

While the edge thread waits on frame i, the head thread runs frame i + 1: a frame spends
the slower of the two stages, not their sum, between results. Nothing queues without
bound: at most one frame waits in the slot and one in the hand-off, so memory stays flat
however far behind the device falls. The planner is told the frame rate and prefers the
configs whose slower stage keeps up with it. When none does, the adaptive policy may run
two lanes: a frame goes to the edge whenever no other is there, and the frames that arrive
meanwhile are finished on the device (``Planner._two_lanes``). Frames finished on the
device are answered by the head thread at once, so results can come out of capture order;
``StreamResult.index`` is the frame's. ``on_result`` is called from one thread at a time.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from device_client.client import Begun, DeviceClient, Frame, InferenceResult
from device_client.sources import FrameSource, SourceError

LATENCY_WINDOW = 20_000  # frames whose latency the percentiles cover (~20 min at 15 fps)


@dataclass(frozen=True)
class StreamResult:
    """One frame's result, timed from its capture."""

    index: int
    result: InferenceResult
    latency_ms: float  # capture to result, waits in the pipeline included


@dataclass
class StreamStats:
    """What a stream sustained."""

    fps_target: float
    seconds: float
    captured: int = 0
    answered: int = 0
    dropped: int = 0
    unsustainable_plans: int = 0
    # the most recent frames' latencies only: a service streams for days, and a list of every
    # frame's grew by ~40 bytes a frame (3 MB over the 10-minute stream benchmark)
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))
    source_error: str | None = None  # why the source ended early, if it did

    def summary(self) -> dict[str, Any]:
        lat = np.fromiter(self.latencies_ms, float) if self.latencies_ms else np.array([np.nan])
        return {"fps_target": self.fps_target, "fps_sustained": self.answered / self.seconds,
                "captured": self.captured, "answered": self.answered,
                "dropped": self.dropped, "drop_rate": self.dropped / max(self.captured, 1),
                "p50_latency_ms": float(np.nanpercentile(lat, 50)),
                "p95_latency_ms": float(np.nanpercentile(lat, 95)),
                "unsustainable_plans": self.unsustainable_plans,
                **({"source_error": self.source_error} if self.source_error else {})}


class _NewestSlot:
    """Holds the newest frame; putting over an untaken one drops the older one."""

    def __init__(self) -> None:
        self._item: tuple[int, Frame, float] | None = None
        self._closed = False
        self._cv = threading.Condition()
        self.dropped = 0

    def put(self, item: tuple[int, Frame, float]) -> None:
        with self._cv:
            if self._item is not None:
                self.dropped += 1
            self._item = item
            self._cv.notify()

    def take(self) -> tuple[int, Frame, float] | None:
        """The newest frame, waiting for one; None once closed and empty."""
        with self._cv:
            while self._item is None and not self._closed:
                self._cv.wait()
            item, self._item = self._item, None
            return item

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()


def run_stream(client: DeviceClient, source: FrameSource, seconds: float | None = None,
               on_result: Callable[[StreamResult], None] | None = None,
               stop: threading.Event | None = None) -> StreamStats:
    """Feed ``source``'s frames through ``client``, pipelined, until the source ends,
    ``seconds`` pass or ``stop`` is set (SIGTERM, say); every frame taken is answered
    before this returns; stale ones are dropped and counted."""
    client.planner.frame_rate_hz = source.fps
    stats = StreamStats(source.fps, seconds or 0.0)
    slot = _NewestSlot()
    handoff: queue.Queue[tuple[int, Begun, float] | None] = queue.Queue(maxsize=1)
    lock = threading.Lock()
    stop = stop or threading.Event()
    started = time.perf_counter()
    failure: list[BaseException] = []

    def camera() -> None:
        index = 0
        try:
            for frame in source.frames(stop):
                now = time.perf_counter()
                if seconds is not None and now - started >= seconds:
                    break
                slot.put((index, frame, now))
                index += 1
        except SourceError as error:  # a camera that stopped: end the stream, say why
            failure.append(error)
        finally:
            stats.captured = index
            slot.close()

    at_edge = 0  # frames handed to the edge thread and not yet answered (under lock)
    emitting = threading.Lock()

    def answer(index: int, result: InferenceResult, captured: float) -> None:
        done = StreamResult(index, result, (time.perf_counter() - captured) * 1000)
        with lock:
            stats.answered += 1
            stats.latencies_ms.append(done.latency_ms)
        if on_result is not None:
            with emitting:
                on_result(done)

    def head() -> None:
        nonlocal at_edge
        while (item := slot.take()) is not None:
            index, frame, captured = item
            with lock:
                edge_lane_free = at_edge == 0
            begun = client.begin(frame, edge_lane_free=edge_lane_free)
            if not begun.plan.sustainable:
                stats.unsustainable_plans += 1
            if begun.result is not None:  # finished on the device: nothing to wait for
                answer(index, client.complete(begun), captured)
                continue
            with lock:
                at_edge += 1
            handoff.put((index, begun, captured))
        handoff.put(None)

    def edge() -> None:
        nonlocal at_edge
        while (item := handoff.get()) is not None:
            index, begun, captured = item
            result = client.complete(begun)
            with lock:
                at_edge -= 1
            answer(index, result, captured)

    threads = [threading.Thread(target=t, name=f"stream-{t.__name__}", daemon=True)
               for t in (camera, head, edge)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stats.dropped = slot.dropped
    stats.seconds = time.perf_counter() - started
    if failure:
        stats.source_error = str(failure[0])
    return stats
