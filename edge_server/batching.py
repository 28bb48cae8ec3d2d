"""Dynamic batching across clients and streams, with a bounded queue.

    event loop ──submit(key, input)──► queue (≤ max_queue) ──► worker thread
         ▲                                                       │ waits ≤ max_wait_ms
         └── asyncio futures, all of a batch ◄── run_batch ◄────┘ for ≤ max_batch_size
             settled in one loop callback                          of the same key
The key says what may share a batch: on the edge, the model and the config.

Hand-overs between the event loop and the worker are per batch, not per input:
- a batch's results reach the loop in one ``call_soon_threadsafe`` (one wake-up of the
  loop), where a ``concurrent.futures.Future`` per input and ``asyncio.wrap_future`` cost
  a lock, a condition and a loop wake-up for each;
- the worker is woken by the first input and by a full batch; the inputs in between wait
  for the batch's deadline without waking it (and taking the GIL from the loop).
The edge benchmark's server CPU per request fell with each (README, "The runtime").

A full queue refuses at once (QueueFullError → RESOURCE_EXHAUSTED) instead of growing.

The worker runs under a :class:`~splitnet.supervision.Supervisor`, and an input is not
lost to a fault of the worker's: a batch that fails (its model or bookkeeping raises, the
worker crashes, or it stalls) goes back to the front of the queue once, and only a batch
that fails twice is answered with the error (INTERNAL, or UNAVAILABLE for a stall, at the
servicer). A crashed worker is restarted; a stalled one (no round finished within
``stall_s``) is replaced by a fresh thread and abandoned, and ``on_health(False)`` is
called until the new worker finishes a round (``on_health(True)``): the edge reports
NOT_SERVING in between.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

import torch

from splitnet import faults
from splitnet.supervision import Supervisor

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


MAX_ATTEMPTS = 2  # batches an input may be in: a worker fault costs it one retry


class QueueFullError(RuntimeError):
    """The server's queue is at its bound."""


class WorkerStalledError(RuntimeError):
    """The batch worker stopped making progress while this input's batch was running."""


@dataclass(frozen=True)
class BatchResult:
    probabilities: list[float]  # K of them
    queue_ms: float
    compute_ms: float
    batch_size: int


@dataclass(eq=False)  # jobs are compared by identity
class _Job(Generic[K, T]):
    key: K
    item: T
    future: asyncio.Future[BatchResult]
    loop: asyncio.AbstractEventLoop
    enqueued: float
    attempts: int = 0  # batches it was in that failed


class DynamicBatcher(Generic[K, T]):
    """Groups requests of the same key into batches for ``run_batch``."""

    def __init__(self, run_batch: Callable[[K, list[T]], torch.Tensor],
                 max_batch_size: int = 32, max_wait_ms: float = 2.0,
                 max_queue: int = 256,
                 on_batch: Callable[[K, int, float, float], None] | None = None,
                 stall_s: float = 60.0,
                 on_health: Callable[[bool], None] | None = None) -> None:
        """``on_batch(key, size, seconds, cpu_seconds)`` is called after each batch ran
        (metrics): its wall time and the CPU time of the thread that ran it. A round of the
        worker (one batch) that takes longer than ``stall_s`` is a stalled worker."""
        if max_batch_size < 1 or max_queue < 1:
            raise ValueError("max_batch_size and max_queue must be at least 1")
        self.run_batch = run_batch
        self.on_batch = on_batch
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000
        self.max_queue = max_queue
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)  # wakes the worker, see submit
        self._pending: collections.deque[_Job[K, T]] = collections.deque()
        self._closing = False
        self._depth = 0
        self._service_ms = 0.0
        self._queue_ms = 0.0
        self.on_health = on_health
        self.stall_s = stall_s
        self._running: list[_Job[K, T]] = []  # the batch the worker holds (under the lock)
        self._down = False
        self.supervisor = Supervisor(self._worker_failed)
        self.supervisor.start("batch worker", self._round, stall_s, self._worker_crashed)

    @property
    def healthy(self) -> bool:
        """The worker is running and making progress."""
        return not self._down and self.supervisor.healthy

    @property
    def depth(self) -> int:
        """Requests waiting or running."""
        return self._depth

    @property
    def recent_service_ms(self) -> float:
        """Exponentially weighted mean time per batch in the model."""
        return self._service_ms

    @property
    def recent_queue_ms(self) -> float:
        """Exponentially weighted mean time a request waited before its batch ran."""
        return self._queue_ms

    def submit(self, key: K, item: T) -> asyncio.Future[BatchResult]:
        """Queue one input; called in a running event loop, it returns a future of that
        loop. Raises QueueFullError when the queue is at its bound. Cancelling the future
        (a caller that gave up) takes the input out of its batch if that has not run."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._depth >= self.max_queue:
                raise QueueFullError(
                    f"the edge's queue is full ({self.max_queue} requests); retry later "
                    "or run this input on the device")
            self._depth += 1
            job: _Job[K, T] = _Job(key, item, loop.create_future(), loop, time.monotonic())
            self._pending.append(job)
            # Wake the worker only when it has something new to do: the first input (it
            # sleeps on an empty queue) or a full batch. Inputs in between wait for the
            # batch's deadline without waking it, so that gathering 32 inputs costs the
            # worker two wake-ups and the event loop no GIL hand-over per input.
            if len(self._pending) == 1 or len(self._pending) >= self.max_batch_size:
                self._arrived.notify()
        return job.future

    def close(self) -> None:
        """Finish what is queued, then stop the worker."""
        with self._lock:
            self._closing = True
            self._arrived.notify()
        deadline = time.monotonic() + 30
        while self._pending and time.monotonic() < deadline and self.supervisor.healthy:
            time.sleep(0.01)
        self.supervisor.stop(join_s=max(deadline - time.monotonic(), 0.0))

    def _round(self, beat: Callable[[], None]) -> None:
        """One round of the worker: wait (a second at most, then beat) for inputs, gather
        a batch of one key, run it."""
        with self._lock:
            if not self._pending:
                if self._closing:
                    return
                self._arrived.wait(timeout=min(1.0, self.stall_s / 4))
                if not self._pending:
                    return
            # gather until the batch is full or the oldest has waited max_wait
            key, deadline = self._pending[0].key, self._pending[0].enqueued + self.max_wait_s
            while not self._closing and not self._full(key):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._arrived.wait(remaining)
            batch = self._take(key)
            self._running = batch
        beat()
        self._run(key, batch)
        if self._down and self.supervisor.loops["batch worker"].thread \
                is threading.current_thread():
            self._down = False
            if self.on_health is not None:
                self.on_health(True)

    def _worker_crashed(self, error: BaseException) -> None:
        """The worker raised outside a batch's own guard: retry or answer what it held."""
        with self._lock:
            held, self._running = self._running, []
        self._retry_or_fail(held, RuntimeError(f"the batch worker failed: {error!r}"))

    def _worker_failed(self, name: str, reason: str) -> None:
        """Stalled, or crashing over and over: retry or answer its batch, report
        NOT_SERVING, and start a fresh worker (after a second when it kept crashing)."""
        self._down = True
        if self.on_health is not None:
            self.on_health(False)
        with self._lock:
            held, self._running = self._running, []
        self._retry_or_fail(held, WorkerStalledError(f"the edge's {name} {reason}"))
        if "crashed" in reason and self.supervisor.stop_event.wait(1.0):
            return
        self.supervisor.replace(name)

    def _retry_or_fail(self, jobs: list[_Job[K, T]], error: Exception) -> None:
        """Jobs of a failed batch: back to the front of the queue if this was their first
        failure, else answered with ``error``. Either way no longer the worker's."""
        retry = [j for j in jobs if j.attempts < MAX_ATTEMPTS - 1 and not j.future.done()]
        failed = [j for j in jobs if j not in retry]
        for job in retry:
            job.attempts += 1
        with self._lock:
            self._pending.extendleft(reversed(retry))
            self._depth -= len(failed)
            if retry:
                self._arrived.notify()
        self._deliver(failed, [error] * len(failed))

    def _full(self, key: K) -> bool:
        """At least a batch of ``key`` is waiting (stops counting there)."""
        count = 0
        for job in self._pending:
            count += job.key == key
            if count >= self.max_batch_size:
                return True
        return False

    def _take(self, key: K) -> list[_Job[K, T]]:
        """Up to a batch of ``key``'s jobs, oldest first, from the front of the queue;
        the other keys' jobs passed on the way keep their places."""
        batch: list[_Job[K, T]] = []
        passed: list[_Job[K, T]] = []
        while self._pending and len(batch) < self.max_batch_size:
            job = self._pending.popleft()
            (batch if job.key == key else passed).append(job)
        self._pending.extendleft(reversed(passed))
        return batch

    def _run(self, key: K, jobs: list[_Job[K, T]]) -> None:
        """Run one batch; every job of it is answered, or retried once (see the module
        docstring). A worker that was replaced while it ran (stalled) touches nothing."""
        # a caller that gave up (a deadline, a cancelled call) cancelled its future: skip it
        # (read across threads; one cancelled meanwhile is skipped again in _settle)
        batch = [j for j in jobs if not j.future.cancelled()]
        if not batch:
            self._release(jobs, len(jobs))
            return
        started, cpu_started = time.monotonic(), time.thread_time()
        try:
            faults.point("edge.batch")
            probabilities = self.run_batch(key, [j.item for j in batch])
            compute_ms = (time.monotonic() - started) * 1000
            rows = probabilities.tolist()  # once per batch, not a tensor index per request
            results: list[BatchResult | Exception] = []
            for j, row in zip(batch, rows, strict=True):
                results.append(BatchResult(row, (started - j.enqueued) * 1000, compute_ms,
                                           len(batch)))
        except Exception as error:  # noqa: BLE001 - the batch is retried or answered
            if self._release(jobs, len(jobs) - len(batch)):
                self._retry_or_fail(batch, error)
            return
        if not self._release(jobs, len(jobs)):
            return
        for result in results:
            assert isinstance(result, BatchResult)
            self._queue_ms = 0.9 * self._queue_ms + 0.1 * result.queue_ms
        self._service_ms = 0.8 * self._service_ms + 0.2 * compute_ms
        self._deliver(batch, results)
        if self.on_batch is not None:
            try:
                faults.point("edge.on_batch")
                self.on_batch(key, len(batch), compute_ms / 1000,
                              time.thread_time() - cpu_started)
            except Exception as error:  # noqa: BLE001 - the answers are out; metrics only
                logging.getLogger(__name__).error("batch metrics failed: %r", error)

    def _release(self, jobs: list[_Job[K, T]], settled: int) -> bool:
        """The worker is done holding ``jobs``; ``settled`` of them leave the queue's count
        now (the rest are answered or retried by the caller). False if this worker was
        replaced meanwhile: the jobs are no longer its to answer."""
        with self._lock:
            if self._running is not jobs:
                return False
            self._running = []
            self._depth -= settled
            return True

    @staticmethod
    def _deliver(batch: list[_Job[K, T]], results: list[BatchResult | Exception]) -> None:
        """One loop callback per event loop for the whole batch (one, on the edge)."""
        by_loop: dict[asyncio.AbstractEventLoop,
                      list[tuple[asyncio.Future[BatchResult], BatchResult | Exception]]] = {}
        for job, result in zip(batch, results, strict=True):
            by_loop.setdefault(job.loop, []).append((job.future, result))
        for loop, settled in by_loop.items():
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting
                loop.call_soon_threadsafe(_settle, settled)


def _settle(settled: list[tuple[asyncio.Future[BatchResult], BatchResult | Exception]]
            ) -> None:
    """In the event loop: hand each waiting caller its result."""
    for future, result in settled:
        if future.done():  # cancelled while its batch ran
            continue
        if isinstance(result, Exception):
            future.set_exception(result)
        else:
            future.set_result(result)
