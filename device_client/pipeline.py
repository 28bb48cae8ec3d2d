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

from device_client.client import DeviceClient, Frame, InferenceResult, PreparedInput
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


def failed_result(config: Any, error: BaseException) -> InferenceResult:
    """The result of a frame nothing could classify: label −1 and the reason, so that every
    frame taken is still answered."""
    from device_client.client import LatencyBreakdown

    return InferenceResult(-1, (), config, "none", LatencyBreakdown(), 0, 0, 0.0, True, 0.0,
                           0.0, 0.0, 0.0, f"{type(error).__name__}: {error}")


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
    client.planner.frame_rate_hz = source.fps
    stats = StreamStats(source.fps, seconds or 0.0)
    slot = _NewestSlot()
    handoff: queue.Queue[tuple[int, PreparedInput, float] | None] = queue.Queue(maxsize=1)
    lock = threading.Lock()
    stop = stop or threading.Event()
    started = time.perf_counter()
    failure: list[str] = []
    at_edge = 0  # frames handed to the edge thread and not yet answered (under lock)
    emitting = threading.Lock()

    def fatal(name: str, reason: str) -> None:
        failure.append(f"{name} {reason}")
        stop.set()
        slot.close()

    supervisor = Supervisor(fatal, max_restarts=0)
    frames = iter(source.frames(stop))
    index = 0

    def camera(beat: Callable[[], None]) -> None:
        nonlocal index
        try:
            faults.point("device.camera")
            frame = next(frames)
        except StopIteration:
            slot.close()
            raise Stopped from None
        except Exception as error:  # noqa: BLE001 - any camera failure ends the stream
            stats.source_error = f"{type(error).__name__}: {error}" \
                if not isinstance(error, SourceError) else str(error)
            slot.close()
            raise Stopped from None
        now = time.perf_counter()
        if (seconds is not None and now - started >= seconds) or stop.is_set():
            slot.close()
            raise Stopped
        slot.put((index, frame, now))
        index += 1
        stats.captured = index

    def answer(index: int, result: InferenceResult, captured: float) -> None:
        done = StreamResult(index, result, (time.perf_counter() - captured) * 1000)
        with lock:
            stats.answered += 1
            stats.latencies_ms.append(done.latency_ms)
        if on_result is not None:
            with emitting:
                try:
                    faults.point("device.sink")
                    on_result(done)
                except Exception as error:  # noqa: BLE001 - results cannot be delivered
                    fatal("result sink", f"failed: {type(error).__name__}: {error}")
                    raise Stopped from None

    def locally(frame: Frame, error: BaseException) -> InferenceResult:
        """A frame whose pipeline step raised: the whole network on the device."""
        try:
            return client.infer_on_device(frame)
        except Exception as second:  # noqa: BLE001 - still answered, with the reason
            return failed_result(None, second)

    def head(beat: Callable[[], None]) -> None:
        nonlocal at_edge
        item = slot.take(timeout=0.5)
        if item is _NewestSlot.EMPTY:
            return
        if item is None:
            _put(handoff, None, beat, lambda: False)
            raise Stopped
        index, frame, captured = item
        with lock:
            edge_lane_free = at_edge == 0
        try:
            faults.point("device.head")
            prepared = client.begin(frame, edge_lane_free=edge_lane_free)
        except Exception as error:  # noqa: BLE001 - the frame is still answered
            logging.getLogger(__name__).warning("frame %d: device part failed (%r); "
                                                "finished on the device", index, error)
            answer(index, locally(frame, error), captured)
            return
        if not prepared.plan.sustainable:
            stats.unsustainable_plans += 1
        if prepared.result is not None:  # finished on the device: nothing to wait for
            answer(index, client.complete(prepared), captured)
            return
        with lock:
            at_edge += 1
        if not _put(handoff, (index, prepared, captured), beat, lambda: bool(failure)):
            with lock:
                at_edge -= 1
            answer(index, finish_held(prepared, PipelineError("the edge stage stopped")),
                   captured)

    def finish_held(prepared: PreparedInput, error: BaseException) -> InferenceResult:
        try:
            return client.finish_on_device(prepared, str(error))
        except Exception as second:  # noqa: BLE001 - still answered, with the reason
            return failed_result(prepared.plan.config, second)

    def edge(beat: Callable[[], None]) -> None:
        nonlocal at_edge
        try:
            item = handoff.get(timeout=0.5)
        except queue.Empty:
            return
        if item is None:
            raise Stopped
        index, prepared, captured = item
        try:
            faults.point("device.edge")
            result = client.complete(prepared)
        except Exception as error:  # noqa: BLE001 - the frame is still answered
            logging.getLogger(__name__).warning("frame %d: offload step failed (%r); "
                                                "finished on the device", index, error)
            result = finish_held(prepared, error)
        with lock:
            at_edge -= 1
        answer(index, result, captured)

    for name, body in (("camera", camera), ("head stage", head), ("edge stage", edge)):
        supervisor.start(name, body, stall_s)
    while not failure and not all(loop.finished for loop in supervisor.loops.values()):
        if progress is not None:
            progress(supervisor.last_progress())
        time.sleep(0.1)
    supervisor.stop_event.set()
    stats.dropped = slot.dropped
    stats.seconds = time.perf_counter() - started
    if failure:
        stats.failure = failure[0]
    return stats


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
