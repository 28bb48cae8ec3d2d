"""What one device knows, and how each measurement teaches it.

    its own work (ms, config, exited?) ─► learn_device_time ─► HeadSpeedEstimator
    a reply (round trip, edge time, load) ─► learn_reply ─────► ServerLoad, RTT, Bandwidth
    a failed offload (waited, timed out?) ─► learn_failure ───► Bandwidth bound, FailureRate,
                                                                EdgeHealth
    a probe pair (empty ms, padded ms) ──► learn_probe ───────► RTT, ServerLoad, Bandwidth
    a finished input's overhead ─────────► learn_overhead ────► SendOverhead
                                   └──► estimates(battery) ──► Estimates ──► Planner

The device client feeds it from real calls; the simulator (``experiments.sim``) feeds the
same object from simulated ones. Time comes from one ``clock``: time.monotonic on a
device, simulated seconds in the simulator.
"""

from __future__ import annotations

import time

import numpy as np
from splitnet_proto.messages import MAX_PROBE_PADDING_BYTES

from device_client import tuning
from device_client.estimators import (
    BandwidthEstimator,
    Clock,
    Estimates,
    FailureRateEstimator,
    HeadSpeedEstimator,
    RttEstimator,
    SendOverheadEstimator,
    ServerLoadEstimator,
)
from device_client.fallback import EdgeHealth
from device_client.planner import Candidates
from splitnet.card import ModelCard
from splitnet.config import Config, Placement


class DeviceKnowledge:
    """Every estimator of one device, on one clock."""

    def __init__(self, card: ModelCard, candidates: Candidates,
                 clock: Clock = time.monotonic, seed: int | None = None) -> None:
        self.card, self.candidates, self.clock = card, candidates, clock
        self.bandwidth = BandwidthEstimator(clock=clock)
        self.rtt = RttEstimator()
        # the prior: an edge twice as fast as the card's host
        device_ms_per_mmac = card.full.latency_ms / (card.full.macs / 1e6)
        self.server = ServerLoadEstimator(initial_ms_per_mmac=device_ms_per_mmac / 2,
                                          clock=clock)
        self.head_speed = HeadSpeedEstimator(clock=clock)
        self.failures = FailureRateEstimator(clock=clock)
        self.send_overhead = SendOverheadEstimator()
        self.health = EdgeHealth(seed=seed, clock=clock)

    def estimates(self, battery_level: float, has_edge: bool) -> Estimates:
        """The planner's snapshot now (``has_edge``: this device has an edge to send to)."""
        return Estimates(
            bandwidth_bps=self.bandwidth.estimate_bps, rtt_ms=self.rtt.estimate_ms,
            server_queue_ms=self.server.queue_ms, edge_ms_per_mmac=self.server.ms_per_mmac,
            head_speed_factor=self.head_speed.factor, battery_level=battery_level,
            edge_available=has_edge and self.health.up,
            config_speed_factors=self.head_speed.per_config,
            precision_speed_factors=self.head_speed.per_precision,
            offload_failure_rate=self.failures.rate,
            send_overhead_ms=self.send_overhead.extra_ms)

    def learn_device_time(self, config: Config, device_ms: float, exited: bool) -> None:
        """One more measurement of this device against the card: an input that exited is
        compared with the card's time to that exit, any other with the config's head, an
        offloaded frame's encoding with the card's for its codec (that config's own factor
        only: Pillow's speed is not the network's)."""
        if config.placement is Placement.OFFLOAD_INPUT:  # the card's encode time, as priced
            index = self.candidates.index.get(config)
            if index is not None:
                self.head_speed.add_sample(device_ms, float(self.candidates.device_ms[index]),
                                           config, shared=False)
            return
        profiled = self.candidates.exit_path_ms.get(config) if exited \
            else self.card.device_ms(config)
        if profiled is not None:
            self.head_speed.add_sample(device_ms, profiled, config)

    def learn_reply(self, payload_bytes: int, round_trip_ms: float, server_ms: float,
                    compute_ms: float, load_queue_ms: float,
                    tail_mmacs: float) -> tuple[float, float, float]:
        """An answered offload: the edge's load and speed, the path's delay and the link's
        rate. Returns (network ms, transfer ms, path ms)."""
        network_ms = max(round_trip_ms - server_ms, 0.0)
        self.server.update_queue(load_queue_ms)
        self.server.update_compute(compute_ms, tail_mmacs)
        # the transfer: the round trip less the path's own (see RttEstimator)
        path_ms = self.rtt.floor_ms
        transfer_ms = max(network_ms - path_ms, 0.0)
        if not self.bandwidth.add_sample(payload_bytes, transfer_ms) and \
                network_ms < 2 * self.rtt.estimate_ms:
            self.rtt.add_sample(network_ms)  # a small payload: its round trip is the RTT
        self.failures.add(False)
        self.health.success()
        return network_ms, transfer_ms, path_ms

    def learn_failure(self, payload_bytes: int, waited_ms: float, timed_out: bool,
                      reason: str) -> None:
        """An offload the edge did not answer (in time, or with this input's answer)."""
        if timed_out:
            self.bandwidth.add_timeout(payload_bytes, waited_ms)
        self.failures.add(True)
        self.health.failure(reason)

    def probe_padding(self) -> int:
        """The padded probe's size: about ``PROBE_TRANSFER_MS`` of transfer at the estimate."""
        return int(np.clip(self.bandwidth.estimate_bps / 8 * tuning.PROBE_TRANSFER_MS / 1000,
                           3000, MAX_PROBE_PADDING_BYTES))

    @staticmethod
    def probe_again_with(padding_bytes: int, transfer_ms: float) -> int | None:
        """A padding that crossed faster than ``MIN_TIMED_PROBE_MS`` met a burst of the link,
        not its rate: the padding to send next (four times larger), or None when this
        probe is a sample."""
        if transfer_ms >= tuning.MIN_TIMED_PROBE_MS or padding_bytes >= MAX_PROBE_PADDING_BYTES:
            return None
        return min(4 * padding_bytes, MAX_PROBE_PADDING_BYTES)

    def learn_overhead(self, placement: Placement, overhead_ms: float) -> None:
        self.send_overhead.add_sample(placement, overhead_ms)
