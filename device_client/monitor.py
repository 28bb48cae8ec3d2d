"""The link's background watch: probes that keep the estimates fresh, and the edge's load.

    supervised "edge monitor" round (every 50 ms):
        edge down, its backoff due ─► probe pair ─► up again (fresh stream) or down longer
        edge up, bandwidth stale   ─► probe pair ─► RTT and bandwidth samples, edge load
    supervised "load feed" round (optional): the edge's ZMQ PUB ─► server queue estimate

A probe pair is an empty probe (the RTT) and a padded one (RTT + padding / bandwidth); a
padding that crossed in a burst of the link is sent again, larger (``probe_once``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from device_client.edge import EdgeError
from device_client.knowledge import DeviceKnowledge
from device_client.replicas import EdgePool
from splitnet import faults
from splitnet.supervision import Stopped, Supervisor

# a monitor round (a probe pair, maybe enlarged, each at most 2 s) longer than this is stalled
MONITOR_STALL_S = 30.0


class LinkMonitor:
    """Probes the edge and reads its load feed on supervised threads of ``supervisor``."""

    def __init__(self, link: EdgePool, knowledge: DeviceKnowledge, probe_interval_s: float,
                 supervisor: Supervisor) -> None:
        self.link, self.knowledge = link, knowledge
        self.bandwidth, self.health = knowledge.bandwidth, knowledge.health
        self.server = knowledge.server
        self.probe_interval_s = probe_interval_s
        self.supervisor = supervisor
        self._feed_socket: Any = None

    def start(self, load_feed: str | None = None, stall_s: float | None = None) -> None:
        """Start the probe monitor, and the load-feed reader when an address is given."""
        stall_s = stall_s or MONITOR_STALL_S
        self.supervisor.start("edge monitor", self._monitor_round, stall_s)
        if load_feed:
            self.supervisor.start("load feed", lambda beat: self._feed_round(load_feed),
                                  stall_s, on_crash=lambda error: self.close())

    def probe_once(self, padding_bytes: int | None = None, timeout_s: float = 2.0) -> None:
        """An empty probe (RTT), then a padded one (RTT + padding / bandwidth).

        A cellular uplink delivers in bursts: a few kB can cross in one burst, far faster
        than the link's rate. A padding that took under ``tuning.MIN_TIMED_PROBE_MS`` is
        no sample; the probe is sent again four times larger, up to
        MAX_PROBE_PADDING_BYTES (``DeviceKnowledge.probe_again_with``).
        """
        empty_ms, load = self.link.probe(0, timeout_s)
        self.knowledge.rtt.add_sample(empty_ms)
        self.server.update_queue(load.queue_ms_recent)
        size = padding_bytes or self.knowledge.probe_padding()
        padding: int | None = size
        while padding is not None:
            size = padding
            sent_at = time.perf_counter()
            try:
                padded_ms, _ = self.link.probe(size, timeout_s)
            except EdgeError as error:
                if error.timed_out:  # still news: the link is at most this fast
                    waited_ms = (time.perf_counter() - sent_at) * 1000
                    self.bandwidth.add_timeout(size, max(waited_ms - empty_ms, 1.0))
                raise
            transfer_ms = padded_ms - empty_ms
            padding = self.knowledge.probe_again_with(size, transfer_ms)
        self.bandwidth.add_sample(size, transfer_ms)

    def _monitor_round(self, beat: Callable[[], None]) -> None:
        """One round: probe a failed edge when its backoff is due, and an idle link when
        its bandwidth samples are stale."""
        if self.supervisor.stop_event.wait(0.05):
            raise Stopped
        faults.point("device.monitor")
        try:
            if self.health.probe_due():
                self.probe_once(timeout_s=1.0)
                self.link.reset_stream()  # a fresh stream for the recovered edge
                self.health.success()
            elif self.health.up and self.bandwidth.stale(self.probe_interval_s):
                self.probe_once(timeout_s=2.0)
        except EdgeError as error:
            if error.timed_out and self.health.up:
                return  # a slow probe on a working link: not an outage
            self.health.failure(str(error))

    def _feed_round(self, address: str) -> None:
        """One read of the edge's load feed (at most 200 ms)."""
        import zmq  # only when a load feed is used

        if self.supervisor.stop_event.is_set():
            raise Stopped
        if self._feed_socket is None:
            socket: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.SUB)
            socket.setsockopt(zmq.SUBSCRIBE, b"load")
            socket.setsockopt(zmq.RCVTIMEO, 200)
            socket.setsockopt(zmq.LINGER, 0)
            socket.connect(address)
            self._feed_socket = socket
        faults.point("device.feed")
        try:
            report = json.loads(self._feed_socket.recv().split(b" ", 1)[1])
        except zmq.Again:
            return
        self.server.update_queue(float(report.get("queue_ms_recent", 0.0)))

    def close(self) -> None:
        socket, self._feed_socket = self._feed_socket, None
        if socket is not None:
            socket.close()
