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

Every stage runs under a supervisor and waits at most half a second at a time, so a stage
that hangs on a frame is seen (``run_stream``'s ``stall_s``) and the stream stops with a
failure rather than looking alive while doing nothing.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from device_client.client import DeviceClient, PreparedInput
from device_client.results import Frame, InferenceResult, failed_result
from device_client.sources import FrameSource, SourceError
from splitnet import faults
from splitnet.supervision import Stopped, Supervisor

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
    failure: str | None = None  # a stage that stalled, or results that could not be written

    def summary(self) -> dict[str, Any]:
        lat = np.fromiter(self.latencies_ms, float) if self.latencies_ms else np.array([np.nan])
        return {"fps_target": self.fps_target, "fps_sustained": self.answered / self.seconds,
                "captured": self.captured, "answered": self.answered,
                "dropped": self.dropped, "drop_rate": self.dropped / max(self.captured, 1),
                "p50_latency_ms": float(np.nanpercentile(lat, 50)),
                "p95_latency_ms": float(np.nanpercentile(lat, 95)),
                "unsustainable_plans": self.unsustainable_plans,
                **({"source_error": self.source_error} if self.source_error else {}),
                **({"failure": self.failure} if self.failure else {})}


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

    EMPTY: Any = object()  # take() timed out

    def take(self, timeout: float) -> Any:
        """The newest frame, waiting at most ``timeout`` s for one (``EMPTY`` if none came);
        None once closed and empty."""
        with self._cv:
            if self._item is None and not self._closed:
                self._cv.wait(timeout)
            if self._item is None:
                return None if self._closed else self.EMPTY
            item, self._item = self._item, None
            return item

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()


STALL_S = 60.0  # a stage busy with one frame for longer than this has stalled


class PipelineError(RuntimeError):
    """A stage of the pipeline stalled, or results could not be delivered."""


def run_stream(client: DeviceClient, source: FrameSource, seconds: float | None = None,
               on_result: Callable[[StreamResult], None] | None = None,
               stop: threading.Event | None = None, stall_s: float = STALL_S,
               progress: Callable[[float], None] | None = None) -> StreamStats:
    """Feed ``source``'s frames through ``client``, pipelined, until the source ends,
    ``seconds`` pass or ``stop`` is set (SIGTERM, say); every frame taken is answered
    before this returns; stale ones are dropped and counted.

    Each stage runs supervised (``splitnet.supervision``). A frame whose device part or
    offload raises is finished on the device (or, if that fails too, answered with an
    error result) and the stage goes on. A camera that fails, an ``on_result`` that raises
    (stdout closed, say) or a stage that stalls for ``stall_s`` stops the stream with
    ``stats.source_error`` or ``stats.failure`` set: a service exits non-zero on them.
    ``progress(t)`` is called about every 0.1 s with the oldest stage's latest beat
    (monotonic s): a watchdog feeds on it."""
    return _Pipeline(client, source, seconds, on_result, stop or threading.Event()).run(
        stall_s, progress)


class _Pipeline:
    """One stream's three stages and what they share (see ``run_stream``)."""

    def __init__(self, client: DeviceClient, source: FrameSource, seconds: float | None,
                 on_result: Callable[[StreamResult], None] | None,
                 stop: threading.Event) -> None:
        client.planner.frame_rate_hz = source.fps
        self.client, self.seconds, self.on_result, self.stop = client, seconds, on_result, stop
        self.stats = StreamStats(source.fps, seconds or 0.0)
        self.slot = _NewestSlot()
        self.handoff: queue.Queue[tuple[int, PreparedInput, float] | None] = \
            queue.Queue(maxsize=1)
        self.lock = threading.Lock()
        self.emitting = threading.Lock()
        self.failure: list[str] = []
        self.at_edge = 0  # frames handed to the edge stage and not yet answered (under lock)
        self.frames = iter(source.frames(stop))
        self.index = 0
        self.started = time.perf_counter()

    def run(self, stall_s: float, progress: Callable[[float], None] | None) -> StreamStats:
        supervisor = Supervisor(self.fatal, max_restarts=0)
        for name, body in (("camera", self.camera), ("head stage", self.head),
                           ("edge stage", self.edge)):
            supervisor.start(name, body, stall_s)
        while not self.failure and not all(loop.finished
                                           for loop in supervisor.loops.values()):
            if progress is not None:
                progress(supervisor.last_progress())
            time.sleep(0.1)
        supervisor.stop_event.set()
        stats = self.stats
        stats.dropped = self.slot.dropped
        stats.seconds = time.perf_counter() - self.started
        if self.failure:
            stats.failure = self.failure[0]
        return stats

    def fatal(self, name: str, reason: str) -> None:
        self.failure.append(f"{name} {reason}")
        self.stop.set()
        self.slot.close()

    # ---------------------------------------------------------------- stages
    def camera(self, beat: Callable[[], None]) -> None:
        """One frame from the source into the newest-frame slot."""
        try:
            faults.point("device.camera")
            frame = next(self.frames)
        except StopIteration:
            self.slot.close()
            raise Stopped from None
        except Exception as error:  # noqa: BLE001 - any camera failure ends the stream
            self.stats.source_error = str(error) if isinstance(error, SourceError) \
                else f"{type(error).__name__}: {error}"
            self.slot.close()
            raise Stopped from None
        now = time.perf_counter()
        if (self.seconds is not None and now - self.started >= self.seconds) \
                or self.stop.is_set():
            self.slot.close()
            raise Stopped
        self.slot.put((self.index, frame, now))
        self.index += 1
        self.stats.captured = self.index

    def head(self, beat: Callable[[], None]) -> None:
        """The newest frame's device part; answered here if it needs no edge."""
        item = self.slot.take(timeout=0.5)
        if item is _NewestSlot.EMPTY:
            return
        if item is None:
            _put(self.handoff, None, beat, lambda: False)
            raise Stopped
        index, frame, captured = item
        with self.lock:
            edge_lane_free = self.at_edge == 0
        try:
            faults.point("device.head")
            prepared = self.client.begin(frame, edge_lane_free=edge_lane_free)
        except Exception as error:  # noqa: BLE001 - the frame is still answered
            logging.getLogger(__name__).warning("frame %d: device part failed (%r); "
                                                "finished on the device", index, error)
            self.answer(index, self.on_device(frame), captured)
            return
        if not prepared.plan.sustainable:
            self.stats.unsustainable_plans += 1
        if prepared.result is not None:  # finished on the device: nothing to wait for
            self.answer(index, self.client.complete(prepared), captured)
            return
        with self.lock:
            self.at_edge += 1
        if not _put(self.handoff, (index, prepared, captured), beat,
                    lambda: bool(self.failure)):
            with self.lock:
                self.at_edge -= 1
            self.answer(index, self.finish_held(prepared, "the edge stage stopped"),
                        captured)

    def edge(self, beat: Callable[[], None]) -> None:
        """A frame's offload (or its fallback on the device)."""
        try:
            item = self.handoff.get(timeout=0.5)
        except queue.Empty:
            return
        if item is None:
            raise Stopped
        index, prepared, captured = item
        try:
            faults.point("device.edge")
            result = self.client.complete(prepared)
        except Exception as error:  # noqa: BLE001 - the frame is still answered
            logging.getLogger(__name__).warning("frame %d: offload step failed (%r); "
                                                "finished on the device", index, error)
            result = self.finish_held(prepared, repr(error))
        with self.lock:
            self.at_edge -= 1
        self.answer(index, result, captured)

    # ---------------------------------------------------------------- answers
    def answer(self, index: int, result: InferenceResult, captured: float) -> None:
        done = StreamResult(index, result, (time.perf_counter() - captured) * 1000)
        with self.lock:
            self.stats.answered += 1
            self.stats.latencies_ms.append(done.latency_ms)
        if self.on_result is None:
            return
        with self.emitting:
            try:
                faults.point("device.sink")
                self.on_result(done)
            except Exception as error:  # noqa: BLE001 - results cannot be delivered
                self.fatal("result sink", f"failed: {type(error).__name__}: {error}")
                raise Stopped from None

    def on_device(self, frame: Frame) -> InferenceResult:
        """A frame whose device part raised: the whole network on the device."""
        try:
            return self.client.infer_on_device(frame)
        except Exception as error:  # noqa: BLE001 - still answered, with the reason
            return failed_result(None, error)

    def finish_held(self, prepared: PreparedInput, reason: str) -> InferenceResult:
        try:
            return self.client.finish_on_device(prepared, reason)
        except Exception as error:  # noqa: BLE001 - still answered, with the reason
            return failed_result(prepared.plan.config, error)


def _put(handoff: queue.Queue[Any], item: Any, beat: Callable[[], None],
         give_up: Callable[[], bool]) -> bool:
    """Hand ``item`` over, beating while the edge stage is busy; False if it stopped."""
    while True:
        try:
            handoff.put(item, timeout=0.5)
            return True
        except queue.Full:
            if give_up():
                return False
            beat()
