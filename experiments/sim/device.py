"""A simulated device: the project's own planner and estimators, in simulated time.

    camera clock (frames at rate_hz, newest wins) ─► device free? take the newest frame
      ─► DeviceKnowledge.estimates ─► Planner.plan (the real ones) ─► config
      ─► device time as the emulator prices it (experiments.sim.device_times); an exit
           fires with the card's exit fraction (seeded); LOCAL or exited: answered
      ─► sent: SimUplink (trace) ─► SimEdge (batching, queue, share) ─► + one-way delay
           ─► reply before the ski-rental timeout (Plan.offload_timeout_s): learn_reply
           ─► else, or refused: learn_failure, finish on the device
    idle probes (DeviceKnowledge's staleness rules, as LinkMonitor) ─► learn_probe

The runtime's own code decides; the simulator supplies time, the link, the edge and the
device's speed. What the device measures is what the emulated device would measure: its
compute, the round trip, the edge's reported queue and compute time.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

from splitnet_proto.messages import LoadReport

from device_client import tuning
from device_client.estimators import Estimates
from device_client.fallback import EdgeHealth
from device_client.knowledge import DeviceKnowledge
from device_client.planner import WIRE_OVERHEAD_BYTES, Plan, Planner
from device_client.replicas import replica_order, requests_ahead
from experiments.sim.device_times import DeviceTimes
from experiments.sim.edge import EdgeReply, Job, SimEdge
from experiments.sim.engine import Simulation
from experiments.sim.link import SimUplink
from splitnet.card import ModelCard
from splitnet.config import Config, Placement

PROBE_BYTES = 24  # an empty probe request (its fields), before the wire overhead
# the device's own time outside the model, its encoding and the network, per input: host
# CPU, not scaled (the emulator does not scale it either); about 1 ms whether the input is
# sent or not (python -m experiments.bench.device measures it)
LOCAL_OVERHEAD_MS = 1.0
SEND_OVERHEAD_MS = 1.0
MONITOR_TICK_S = 0.05  # the link monitor's round (device_client.monitor)


@dataclass
class SimReplica:
    """What one device knows of one edge replica (as device_client.replicas.Replica)."""

    edge: SimEdge
    health: EdgeHealth
    load: LoadReport | None = None
    load_at: float = float("-inf")
    in_flight: int = 0

    def requests_ahead(self, now: float) -> int:
        return requests_ahead(self.load, self.load_at, self.in_flight, now)


@dataclass
class FrameRecord:
    device: int
    frame: int
    t_arrival: float
    response_ms: float | None  # None: dropped
    placement: str = ""  # where it was finished: local, split or offload-input
    config: str = ""
    accuracy: float = 0.0  # the config's expected accuracy (the card's)
    fallback: bool = False
    predicted_ms: float = 0.0
    service_ms: float = 0.0  # from when the device took the frame up


@dataclass
class _InFlight:
    """One offloaded frame waiting for the edge."""

    frame: int
    plan: Plan
    replica: SimReplica
    payload_bytes: int
    sent_at: float
    device_ms: float
    done: bool = False


class SimDevice:
    """One camera device on its own uplink, sharing ``replicas`` with the fleet.

    Long-lived state is the runtime's (DeviceKnowledge, Planner); this class only moves
    frames through simulated time and feeds it what a real device would measure."""

    def __init__(self, sim: Simulation, device_id: int, planner: Planner, times: DeviceTimes,
                 uplink: SimUplink, edges: list[SimEdge], rate_hz: float, t0: float,
                 frames: int | None, seed: int,
                 on_record: Callable[[FrameRecord], None],
                 probe_interval_s: float = tuning.PROBE_INTERVAL_S) -> None:
        self.sim, self.id, self.planner, self.times = sim, device_id, planner, times
        self.card: ModelCard = planner.candidates.card
        self.uplink, self.rate_hz, self.t0, self.frames = uplink, rate_hz, t0, frames
        self.rng = random.Random(seed)
        self.on_record = on_record
        self.probe_interval_s = probe_interval_s
        self.knowledge = DeviceKnowledge(self.card, planner.candidates, sim.clock, seed)
        self.replicas = [SimReplica(e, EdgeHealth(seed=seed, clock=sim.clock)) for e in edges]
        self.turn = seed
        self.taken = 0  # frames before this one are answered or dropped
        self.busy = False
        self.started_at = 0.0  # when the device took up the frame it is on
        self.probing = False  # a probe pair is on the link
        self.probe_at = math.inf  # when the next monitor check is scheduled
        self.stopped = False

    # ------------------------------------------------------------------ start-up
    def start(self, warm_up_at: float) -> None:
        """Warm up as DeviceClient.warm_up does (the local config once, one offloaded blank
        frame, then a fresh bandwidth estimate and one probe), then frames from ``t0``."""
        local = self.planner.plan(self._estimates(edge=False)).config.without_exit()
        self.knowledge.learn_device_time(local, self.times.head(local, False), exited=False)
        self.sim.at(warm_up_at, self._warm_up_offload)
        self.sim.at(self.t0, self._next_frame)

    def _warm_up_offload(self) -> None:
        config = self.planner.candidates.default_offload
        self.busy = True
        self.started_at = self.sim.now
        self._send(-1, self.planner.plan_for(config, self._estimates()), self._encode_ms(config))

    def _estimates(self, edge: bool = True) -> Estimates:
        return self.knowledge.estimates(1.0, edge and bool(self.replicas))

    # ------------------------------------------------------------------ frames
    def _next_frame(self) -> None:
        """The device is free: take the newest frame that has arrived (dropping the ones it
        passed over), or wait for the next one."""
        if self.stopped or self.busy:
            return
        now = self.sim.now
        arrived = int(math.floor((now - self.t0) * self.rate_hz + 1e-9)) + 1
        if self.frames is not None:
            arrived = min(arrived, self.frames)
            if self.taken >= self.frames:
                self.stopped = True
                return
        if arrived <= self.taken:
            self.sim.at(self.t0 + self.taken / self.rate_hz, self._next_frame)
            return
        newest = arrived - 1
        for skipped in range(self.taken, newest):
            self.on_record(FrameRecord(self.id, skipped, self.t0 + skipped / self.rate_hz, None))
        self.taken = newest + 1
        self.busy = True
        self.started_at = self.sim.now
        self._run_frame(newest)

    def _run_frame(self, frame: int) -> None:
        plan = self.planner.plan(self._estimates())
        config = plan.config
        if config.placement is Placement.OFFLOAD_INPUT:
            self._send(frame, plan, self._encode_ms(config))
            return
        exited = self.rng.random() < exit_probability(self.card, config)
        device_ms = self.times.head(config, exited)
        self.knowledge.learn_device_time(config, device_ms, exited)
        if config.placement is Placement.LOCAL or exited:
            self.knowledge.learn_overhead(Placement.LOCAL, LOCAL_OVERHEAD_MS)
            self._answer(frame, plan, device_ms + LOCAL_OVERHEAD_MS, "local", False)
            return
        self._send(frame, plan, device_ms)

    def _encode_ms(self, config: Config) -> float:
        """An offloaded frame's encoding."""
        assert config.input_codec is not None
        device_ms = self.times.image(config.input_codec)
        self.knowledge.learn_device_time(config, device_ms, exited=False)
        return device_ms

    def _answer(self, frame: int, plan: Plan, after_ms: float, placement: str,
                fallback: bool) -> None:
        """The frame is answered ``after_ms`` from now (its last step on the device)."""
        started = self.started_at
        self.sim.after(after_ms / 1000, self._answered, frame, plan, placement, fallback,
                       (self.sim.now - started) * 1000 + after_ms)

    def _answered(self, frame: int, plan: Plan, placement: str, fallback: bool,
                  service_ms: float) -> None:
        self.busy = False
        if frame < 0:  # the warm-up offload: the link is measured afresh before frame 0
            self.knowledge.bandwidth.restart()
        else:
            index = self.planner.candidates.index.get(plan.config)
            accuracy = float(self.planner.candidates.accuracy[index]) if index is not None \
                else 0.0
            arrival = self.t0 + frame / self.rate_hz
            self.on_record(FrameRecord(self.id, frame, arrival, (self.sim.now - arrival) * 1000,
                                       placement, str(plan.config), accuracy, fallback,
                                       plan.latency_ms, service_ms))
        self._next_frame()
        self._schedule_probe()

    # ------------------------------------------------------------------ offloads
    def _send(self, frame: int, plan: Plan, device_ms: float) -> None:
        """Send the frame's payload to the best replica after its device part."""
        config = plan.config
        order = replica_order(self.replicas, self.sim.now, self._next_turn())
        if not order:  # every replica down, none due a probe: finish on the device
            self._finish_locally(frame, plan, device_ms)
            return
        index = self.planner.candidates.index.get(config)
        payload = int(self.planner.candidates.payload_bytes[index]) if index is not None else 0
        replica = order[0]
        flight = _InFlight(frame, plan, replica, payload, self.sim.now + device_ms / 1000,
                           device_ms)
        replica.in_flight += 1
        arrival = self.uplink.send(flight.sent_at, payload + WIRE_OVERHEAD_BYTES)
        job = Job(self.id, config, self.sim.now, lambda reply: self._replied(flight, reply),
                  lambda reason: self._refused(flight, reason))
        self.sim.at(arrival, replica.edge.submit, job)
        timeout = plan.offload_timeout_s()
        self.sim.at(flight.sent_at + timeout, self._timed_out, flight, timeout)

    def _next_turn(self) -> int:
        self.turn += 1
        return self.turn

    def _finish_ms(self, config: Config) -> float:
        """The device's own time to finish ``config`` without the edge."""
        if config.placement is Placement.OFFLOAD_INPUT:
            local = self.planner.plan(self._estimates(edge=False)).config
            return self.times.head(local, False)
        return self.times.finish(config)

    def _replied(self, flight: _InFlight, reply: EdgeReply) -> None:
        """The edge answered (at the edge, now): the reply reaches the device after the
        one-way delay."""
        self.sim.after(self.uplink.one_way_s, self._received, flight, reply)

    def _received(self, flight: _InFlight, reply: EdgeReply) -> None:
        if flight.done:
            return  # timed out already: finished on the device
        flight.done = True
        flight.replica.in_flight -= 1
        flight.replica.load = reply.load
        flight.replica.load_at = self.sim.now
        round_trip_ms = (self.sim.now - flight.sent_at) * 1000
        self.knowledge.learn_reply(flight.payload_bytes, round_trip_ms,
                                   reply.queue_ms + reply.compute_ms, reply.compute_ms,
                                   reply.load.queue_ms_recent, flight.plan.tail_mmacs)
        flight.replica.health.success()
        self.knowledge.learn_overhead(flight.plan.config.placement, SEND_OVERHEAD_MS)
        finished = "split" if flight.plan.config.placement is Placement.SPLIT \
            else "offload-input"
        self._answer(flight.frame, flight.plan, SEND_OVERHEAD_MS, finished, False)

    def _refused(self, flight: _InFlight, reason: str) -> None:
        """The edge refused (queue full, past this device's share): the refusal reaches the
        device after the one-way delay; it finishes the frame itself."""
        self.sim.after(self.uplink.one_way_s, self._failed, flight, reason, False)

    def _timed_out(self, flight: _InFlight, timeout_s: float) -> None:
        self._failed(flight, f"no reply in {timeout_s:.2f} s", True)

    def _failed(self, flight: _InFlight, reason: str, timed_out: bool) -> None:
        if flight.done:
            return
        flight.done = True
        flight.replica.in_flight -= 1
        waited_ms = (self.sim.now - flight.sent_at) * 1000
        self.knowledge.learn_failure(flight.payload_bytes, waited_ms, timed_out, reason)
        flight.replica.health.failure(reason)
        self._answer(flight.frame, flight.plan, self._finish_ms(flight.plan.config), "local",
                     True)

    def _finish_locally(self, frame: int, plan: Plan, device_ms: float) -> None:
        self._answer(frame, plan, device_ms + self._finish_ms(plan.config), "local", True)

    # ------------------------------------------------------------------ probes
    def _schedule_probe(self) -> None:
        """The link monitor's next probe, when its rules make one due (LinkMonitor: a
        failed edge whose backoff ended, or stale bandwidth samples)."""
        if self.probing or self.stopped:
            return
        due = self._probe_due_at()
        if due is None:
            return
        tick = math.ceil(max(due, self.sim.now) / MONITOR_TICK_S) * MONITOR_TICK_S
        if tick < self.probe_at - 1e-9:  # earlier than the check already scheduled
            self.probe_at = tick
            self.sim.at(tick, self._probe)

    def _probe_due_at(self) -> float | None:
        health, bandwidth = self.knowledge.health, self.knowledge.bandwidth
        if not health.up:
            return health.next_probe_at
        last = bandwidth.last_sample_at
        if last == float("-inf"):
            return self.sim.now
        ages = [self.probe_interval_s]
        if bandwidth.measured_samples < bandwidth.settle_samples:
            ages.append(tuning.SETTLE_PROBE_S)
        if bandwidth.unsettled:
            ages.append(self.probe_interval_s * tuning.UNSETTLED_PROBE_FRACTION)
        return last + min(ages) + 1e-6

    def _probe(self) -> None:
        """One probe pair to the best replica (LinkMonitor.probe_once): an empty probe
        (RTT, the edge's load), then a padded one (bandwidth)."""
        if self.probing or self.sim.now < self.probe_at - 1e-9:
            return  # a probe is on the link, or this check was superseded by an earlier one
        self.probe_at = math.inf
        health = self.knowledge.health
        if not (health.probe_due() or health.up and self.knowledge.bandwidth.stale(
                self.probe_interval_s)):
            self._schedule_probe()
            return
        self.probing = True
        replica = (replica_order(self.replicas, self.sim.now, self._next_turn())
                   or self.replicas)[0]
        timeout_s = 2.0 if health.up else 1.0
        back = self.uplink.send(self.sim.now, PROBE_BYTES + WIRE_OVERHEAD_BYTES) \
            + self.uplink.one_way_s
        if back - self.sim.now > timeout_s:
            self.sim.after(timeout_s, self._probe_failed, None)
            return
        self.sim.at(back, self._empty_probe_back, replica, self.sim.now, timeout_s)

    def _empty_probe_back(self, replica: SimReplica, sent: float, timeout_s: float) -> None:
        empty_ms = (self.sim.now - sent) * 1000
        self.knowledge.rtt.add_sample(empty_ms)
        load = replica.edge.load_report()
        self.knowledge.server.update_queue(load.queue_ms_recent)
        replica.load, replica.load_at = load, self.sim.now
        self._padded_probe(replica, empty_ms, self.knowledge.probe_padding(), timeout_s)

    def _padded_probe(self, replica: SimReplica, empty_ms: float, padding: int,
                      timeout_s: float) -> None:
        """A padded probe; one that crossed in a burst is sent again, larger."""
        start = self.sim.now
        back = self.uplink.send(start, padding + PROBE_BYTES + WIRE_OVERHEAD_BYTES) \
            + self.uplink.one_way_s
        if back - start > timeout_s:  # still news: the link is at most this fast
            self.sim.after(timeout_s, self._probe_failed, (padding, empty_ms, timeout_s))
            return
        transfer_ms = (back - start) * 1000 - empty_ms
        again = self.knowledge.probe_again_with(padding, transfer_ms)
        if again is not None:
            self.sim.at(back, self._padded_probe, replica, empty_ms, again, timeout_s)
        else:
            self.sim.at(back, self._probe_done, replica, padding, transfer_ms)

    def _probe_done(self, replica: SimReplica, padding: int, transfer_ms: float) -> None:
        self.knowledge.bandwidth.add_sample(padding, transfer_ms)
        self.knowledge.health.success()
        replica.health.success()
        self.probing = False
        self._schedule_probe()

    def _probe_failed(self, padded: tuple[int, float, float] | None) -> None:
        """A probe timed out: a bound on the link's rate (a padded one), and a failure
        only when the edge was already down (a slow probe on a working link is no outage)."""
        if padded is not None:
            padding, empty_ms, timeout_s = padded
            self.knowledge.bandwidth.add_timeout(padding, max(timeout_s * 1000 - empty_ms, 1.0))
        if not self.knowledge.health.up:
            self.knowledge.health.failure("probe timed out")
        self.probing = False
        self._schedule_probe()


def exit_probability(card: ModelCard, config: Config) -> float:
    """The share of inputs the config's exit answers, on the card's images."""
    if config.exit_threshold is None or not card.exits:
        return 0.0
    split = config.split if config.placement is Placement.SPLIT else None
    points = [e.exit_point for e in card.exits if split is None or e.exit_point <= split]
    if not points:
        return 0.0
    stats = card.exit_stats(max(points))
    row = next(t for t in stats.thresholds if t.threshold == config.exit_threshold)
    return row.exit_fraction
