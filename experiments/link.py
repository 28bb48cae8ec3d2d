"""Link emulation between the device and the edge, behind one interface.

    device ──► UserspaceLink (TCP proxy on loopback) ──► edge server
               uplink:   bytes queue ─► trace delivery opportunities (≤1500 B each,
                         Mahimahi semantics) ─► + one-way delay ─► edge
               downlink: + one-way delay (optionally its own trace) ─► device

    KernelLink: device netns ══ veth ══ edge netns, tc tbf rate set from the trace every
                interval (real TCP through the kernel); netem delay where the kernel has it.

Both count the bytes that cross them and answer ``capacity_bps(t0, t1)`` for any window of
real (monotonic) time, which is what plots and the oracle compare against.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import random
import threading
import time
from dataclasses import dataclass, field

from experiments.traces import PACKET_BYTES, Trace

RETRANSMIT_TIMEOUT_MS = 200.0  # Linux's minimum TCP RTO


@dataclass
class _Direction:
    """One direction of the link: a FIFO of packets and the trace that drains it."""

    trace: Trace | None
    delay_s: float
    loss: float
    packets: collections.deque[tuple[_Pipe, bytes]] = field(default_factory=collections.deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    next_index: int = 0
    bytes_delivered: int = 0


@dataclass
class _Pipe:
    """The far end one direction of one connection writes to, in order."""

    writer: asyncio.StreamWriter
    not_before: float = 0.0  # a "lost" packet holds back everything after it (TCP order)
    ended: asyncio.Event = field(default_factory=asyncio.Event)  # EOF passed on


class UserspaceLink:
    """A trace-driven shaper with Mahimahi semantics plus a fixed one-way delay (no root)."""

    mode = "userspace"

    def __init__(self, trace: Trace, target_port: int, one_way_delay_ms: float = 10.0,
                 loss: float = 0.0, start_offset_s: float = 0.0,
                 downlink_trace: Trace | None = None, seed: int = 0,
                 target_host: str = "127.0.0.1") -> None:
        self.trace = trace
        self.target = (target_host, target_port)
        self.one_way_delay_ms = one_way_delay_ms
        self.loss = loss
        self.offset_ms = start_offset_s * 1000
        self.downlink_trace = downlink_trace
        self._rng = random.Random(seed)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="link", daemon=True)
        self._up: _Direction | None = None
        self._down: _Direction | None = None
        self._started_at = 0.0
        self.port = 0
        self.not_emulated: list[str] = []

    # ---------------------------------------------------------------- public
    def start(self) -> UserspaceLink:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        return self

    def stop(self) -> None:
        if not self._thread.is_alive():
            return

        async def shutdown() -> None:
            self._server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def __enter__(self) -> UserspaceLink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def bytes_up(self) -> int:
        return self._up.bytes_delivered if self._up is not None else 0

    @property
    def bytes_down(self) -> int:
        return self._down.bytes_delivered if self._down is not None else 0

    @property
    def started_at(self) -> float:
        """The monotonic time at which the trace is at ``start_offset_s``."""
        return self._started_at

    @started_at.setter
    def started_at(self, value: float) -> None:
        """Move the trace clock. Each direction's place in the trace follows it: the
        runner starts the clock provisionally, the devices warm up over the link, and the
        clock starts again with input 0. Had the place not followed, a warm-up that ran
        past the provisional start left the uplink's next opportunity seconds ahead of the
        restarted clock, and every policy's first sent input timed out."""
        self._started_at = value
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._follow_clock)

    def _follow_clock(self) -> None:
        now_ms = self.trace_time_ms(time.monotonic())
        for direction in (self._up, self._down):
            if direction is not None and direction.trace is not None:
                direction.next_index = direction.trace._cumulative(now_ms)

    def trace_time_ms(self, monotonic_s: float) -> float:
        """Where in the (looped) trace a moment of real time falls."""
        return (monotonic_s - self.started_at) * 1000 + self.offset_ms

    def capacity_bps(self, start_s: float, end_s: float) -> float:
        """The true uplink capacity between two monotonic times."""
        return self.trace.capacity_bps(self.trace_time_ms(start_s), self.trace_time_ms(end_s))

    # ---------------------------------------------------------------- internals
    async def _start(self) -> None:
        delay_s = self.one_way_delay_ms / 1000
        self._up = _Direction(self.trace, delay_s, self.loss)
        self._down = _Direction(self.downlink_trace, delay_s, self.loss)
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        self._started_at = time.monotonic()
        for d in (self._up, self._down):
            if d.trace is not None:
                asyncio.ensure_future(self._drain(d))

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        pipes = (_Pipe(up_writer), _Pipe(writer))
        assert self._up is not None and self._down is not None  # set up by _start
        with contextlib.suppress(asyncio.CancelledError):  # the link is shutting down
            await asyncio.gather(self._pump(reader, pipes[0], self._up),
                                 self._pump(up_reader, pipes[1], self._down),
                                 *(pipe.ended.wait() for pipe in pipes),
                                 return_exceptions=True)
        writer.close()
        up_writer.close()

    async def _pump(self, reader: asyncio.StreamReader, pipe: _Pipe,
                    direction: _Direction) -> None:
        try:
            while data := await reader.read(65536):
                for start in range(0, len(data), PACKET_BYTES):
                    packet = data[start:start + PACKET_BYTES]
                    if direction.trace is None:
                        self._deliver(direction, pipe, packet)
                    else:
                        if not direction.packets:  # opportunities while idle are wasted
                            now_ms = self.trace_time_ms(time.monotonic())
                            direction.next_index = max(direction.next_index,
                                                       direction.trace._cumulative(now_ms))
                        direction.packets.append((pipe, packet))
                        direction.wake.set()
        except (ConnectionError, asyncio.CancelledError):
            pass
        # the end of the stream travels behind the data still queued
        if direction.trace is None:
            self._deliver(direction, pipe, b"")
        else:
            direction.packets.append((pipe, b""))
            direction.wake.set()

    async def _drain(self, direction: _Direction) -> None:
        """Serve the queue at the trace's delivery opportunities, ≤1500 bytes each."""
        trace = direction.trace
        assert trace is not None
        count = len(trace.opportunities_ms)
        while True:
            while direction.packets and not direction.packets[0][1]:  # ends take no capacity
                self._deliver(direction, *direction.packets.popleft())
            if not direction.packets:
                direction.wake.clear()
                await direction.wake.wait()
                continue
            loops, within = divmod(direction.next_index, count)
            at_ms = loops * trace.period_ms + float(trace.opportunities_ms[within])
            wait_s = (at_ms - self.trace_time_ms(time.monotonic())) / 1000
            if wait_s > 0:
                await asyncio.sleep(wait_s)
            budget = PACKET_BYTES
            while budget > 0 and direction.packets:
                pipe, packet = direction.packets[0]
                if not packet:
                    self._deliver(direction, *direction.packets.popleft())
                elif len(packet) <= budget:
                    direction.packets.popleft()
                    budget -= len(packet)
                    self._deliver(direction, pipe, packet)
                else:  # the opportunity carries part of the packet
                    direction.packets[0] = (pipe, packet[budget:])
                    self._deliver(direction, pipe, packet[:budget])
                    budget = 0
            direction.next_index += 1

    def _deliver(self, direction: _Direction, pipe: _Pipe, chunk: bytes) -> None:
        direction.bytes_delivered += len(chunk)
        now = self._loop.time()
        due = now + direction.delay_s
        if chunk and direction.loss and self._rng.random() < direction.loss:
            due += RETRANSMIT_TIMEOUT_MS / 1000
        due = max(due, pipe.not_before)
        pipe.not_before = due
        self._loop.call_at(due, self._write, pipe, chunk)

    @staticmethod
    def _write(pipe: _Pipe, chunk: bytes) -> None:
        if pipe.writer.is_closing():
            pipe.ended.set()
        elif chunk:
            pipe.writer.write(chunk)
        else:  # end of stream: half-close, so the other direction can still finish
            if pipe.writer.can_write_eof():
                with contextlib.suppress(OSError):  # the peer is already gone: nothing to do
                    pipe.writer.write_eof()
            pipe.ended.set()
