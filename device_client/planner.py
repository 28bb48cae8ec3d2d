"""Pick a config for the next input from the model card and the current estimates.

    model card ──► candidates: every (split config × exit threshold), LOCAL × exit
                   thresholds, OFFLOAD_INPUT; each with profiled head ms, bytes, exit
                   fraction, tail MMACs and accuracy
    Estimates  ──► per candidate, vectorised:
        device_ms  = device_ms · speed factor (the config's own once it has run, else its
                     precision's, else the overall one); a head's time includes encoding
                     what it sends, and an offloaded frame's is its JPEG/PNG encoding
        network_ms = (packets − ½) · MTU·8 / bandwidth + RTT,
                     packets = ⌈(bytes + wire overhead) / MTU⌉
                     (links deliver whole MTU-sized opportunities: a 40-byte payload
                     waits for one as long as a 1,000-byte one)
        edge_ms    = server queue ms + tail MMACs · edge ms/MMAC
        fallback   = device time to finish without the edge (the tail in the head's
                     precision; for an offloaded input, the policy's local choice)
        failure_ms = max(network_ms + edge_ms, fallback) + fallback  (timeout, then fallback)
        send_ms    = the device's measured extra time to send an input of this placement
                     (request, reply) over a local one's; 0 until measured
        latency    = device_ms + (1 − p_exit) · (send_ms + (1 − p_fail) · remote_ms
                                                 + p_fail · failure_ms)
                     remote_ms = network_ms + edge_ms; p_fail: the recent share of
                     offloads that failed (timed out): a failed one waits out its
                     timeout instead of the remote time, not on top of it
        energy     = P_busy·(device_ms + (1 − p_exit)·send_ms)
                     + (1 − p_exit)·(P_idle·(RTT + edge_ms) + P_radio·transfer)
    policy     ──► the allowed candidates and the objective ──► Plan

The adaptive objective: among candidates with accuracy ≥ the floor (an exit's accuracy
counted less its 95 % sampling margin on the card's images; default floor: the whole
network's accuracy − 1 point), and predicted latency ≤ the deadline when one is set and
reachable, minimise

    (1 − λ) · latency / best_latency  +  λ · energy / best_energy,
    λ = clip((0.5 − battery) / 0.4, 0, 1)

so above half charge it minimises latency alone, and it moves linearly to minimising device
energy alone as the battery falls to 10 %.

At a frame rate (a camera stream, ``device_client.pipeline``) the configs whose slower
pipeline stage keeps up come first. When none does, the adaptive policy may run two lanes:
the device finishes frames itself while the edge works on another (see ``Planner.plan``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from device_client import tuning
from device_client.energy import RPI4, PowerProfile
from device_client.estimators import Estimates
from splitnet.card import ModelCard
from splitnet.config import LOCAL, Config, Placement

# Every peer runs with the same engineering as the adaptive policy: the int8 head and the
# early exits wherever it runs on the device, and the device's best network (int8 with its
# exit) when the edge fails. "<peer>-paper" is the peer as its paper has it: fp32 on the
# device, exits only where the paper has them, and the plain fp32 network as fallback.
PEERS = ("offload-input", "neurosurgeon", "edgent", "fixed")
PAPER_VARIANTS = tuple(f"{p}-paper" for p in PEERS)
POLICIES = ("adaptive", "adaptive-v0", "local", "local-exit", *PEERS, *PAPER_VARIANTS)
# the adaptive policy, and its ablation without the learned entropy bottleneck's configs
ADAPTIVE_POLICIES = ("adaptive", "adaptive-v0")
DEFAULT_EDGENT_DEADLINE_MS = 100.0
BATTERY_SAVING_START = 0.5
BATTERY_SAVING_FULL = 0.1
MTU_BYTES = 1500
WIRE_OVERHEAD_BYTES = 60  # gRPC + HTTP/2 framing per request on an open stream (measured)


@dataclass(frozen=True)
class Plan:
    """The chosen config with what the planner expects of it."""

    config: Config
    latency_ms: float
    energy_mj: float
    accuracy: float
    exit_fraction: float
    payload_bytes: float
    tail_mmacs: float
    profiled_head_ms: float
    remote_ms: float = 0.0  # network + edge for an input that is sent (0 for LOCAL)
    fallback_ms: float = 0.0  # device time to finish it if the edge fails (0 for LOCAL)
    sustainable: bool = True  # at the planner's frame rate (always, without one)

    def offload_timeout_s(self, override_ms: float | None = None) -> float:
        """How long to wait for the edge before finishing the input on the device.

        ``override_ms`` when given. Otherwise what the edge was expected to take, plus as
        long again, or as long as the device would take to finish the input itself if that
        is longer (a ski-rental rule: giving up sooner only loses a reply that would have
        beaten the fallback; waiting longer costs at most the fallback's own time again).
        At least ``MIN_OFFLOAD_TIMEOUT_MS``, so that a short stall of a cellular link does
        not mark the edge down; at most ``MAX_OFFLOAD_TIMEOUT_MS``. The deadline plays no
        part: once it is missed, the fastest answer is still the best one.
        """
        if override_ms is not None:
            return override_ms / 1000
        overrun_ms = max(self.remote_ms, self.fallback_ms)
        return min(max(self.remote_ms + overrun_ms, tuning.MIN_OFFLOAD_TIMEOUT_MS),
                   tuning.MAX_OFFLOAD_TIMEOUT_MS) / 1000


@dataclass(frozen=True)
class _Costs:
    """The cost model's figures for every candidate (parallel to ``Candidates.configs``)."""

    latency_ms: np.ndarray
    energy_mj: np.ndarray
    remote_ms: np.ndarray
    fallback_ms: np.ndarray
    busy_ms: np.ndarray  # the device's expected time on an input (head, exit, sending)
    lane_ms: np.ndarray  # the expected time an input keeps the edge lane (0 for LOCAL)
    stage_ms: np.ndarray  # the slower of the two pipeline stages (device, edge)


def default_offload_codec(card: ModelCard) -> str:
    """What a full-offload deployment sends: JPEG at quality 90 for camera frames, lossless
    PNG for small grey images (or the card's first codec when it has neither)."""
    codecs = [c.codec for c in card.input_codecs]
    preferred = "png" if card.input_shape[0] == 1 else "jpeg90"
    return preferred if preferred in codecs else codecs[0]


def battery_weight(level: float) -> float:
    """λ in the objective: 0 above half charge, rising to 1 at 10 %."""
    span = BATTERY_SAVING_START - BATTERY_SAVING_FULL
    return float(np.clip((BATTERY_SAVING_START - level) / span, 0.0, 1.0))


# (config, device ms, exit fraction, payload bytes, tail MMAC, accuracy, its sampling margin)
_Row = tuple[Config, float, float, float, float, float, float]


class Candidates:
    """Every choice the card describes, as parallel arrays.

    Besides the card's split configs and LOCAL, each with and without every exit threshold:
    - the int8 device part of each config the card measured in int8. An exit's accuracy
      and exit fraction are measured in fp32 only; for int8 they are estimated as the fp32
      figure shifted by that config's int8 − fp32 accuracy;
    - OFFLOAD_INPUT with every input codec the card measured, paying its encode time (a
      guessed 0.5 ms where the card has none; the device learns its own either way).
    """

    def __init__(self, card: ModelCard) -> None:
        full = card.full
        self.card = card
        self.device_ms_per_mmac = full.latency_ms / (full.macs / 1e6)
        self.int8_speedup = (full.latency_ms / full.int8_latency_ms
                             if full.int8_latency_ms else 1.0)
        self.exits = {e.exit_point: e for e in card.exits}
        self.thresholds: list[float | None] = [None, *card.exit_thresholds]
        self.raw_rows = {c.split: c for c in card.configs if c.raw}
        # profiled device ms of an input that stops at the config's exit: the backbone up to
        # the exit point, then the exit head (what a device learns its speed from then)
        self.exit_path_ms: dict[Config, float] = {}
        rows = [*self._split_rows(), *self._local_rows(), *self._offload_rows()]
        self.default_offload = Config.offload_input(default_offload_codec(card))
        self._arrays(rows)

    def _to_point_ms(self, point: int, int8: bool, otherwise: float) -> float:
        """The backbone up to ``point``: the whole network's measured time scaled by the MACs
        to that point (the raw split there has exactly those head MACs), or ``otherwise``
        (the measured head of a config that reaches past the point), whichever is less. Not
        the raw split's measured head: that also encodes its large payload, which an input
        that exits never does (on the camera model, 13 of its 17 int8 ms)."""
        full = self.card.full
        raw = self.raw_rows.get(point)
        whole = full.int8_latency_ms if int8 else full.latency_ms
        if raw is None or not whole or not full.macs:
            return otherwise
        return min(otherwise, whole * raw.head_macs / full.macs)

    def _exit_terms(self, point: int | None, threshold: float | None,
                    int8: bool) -> tuple[float, float, float]:
        """Exit fraction, exit head ms, and the sampling margin on the accuracy."""
        if point is None or threshold is None:
            return 0.0, 0.0, 0.0
        row = next(t for t in self.exits[point].thresholds if t.threshold == threshold)
        exit_ms = self.exits[point].macs / 1e6 * self.device_ms_per_mmac
        margin = row.sampling_margin(self.card.images) or 0.0
        return row.exit_fraction, exit_ms / self.int8_speedup if int8 else exit_ms, margin

    def _split_rows(self) -> list[_Row]:
        """Every split config of the card, fp32 and int8, with and without each exit."""
        rows: list[_Row] = []
        for c in self.card.configs:
            config = Config.parse(c.config)
            point = max((p for p in self.exits if p <= c.split), default=None)
            variants = [(False, c.head_latency_ms or 0.0, 0.0)]
            if c.int8_accuracy is not None and c.int8_head_latency_ms:
                variants.append((True, c.int8_head_latency_ms, c.int8_accuracy - c.accuracy))
            for int8, device_ms, int8_shift in variants:
                for t in self.thresholds:
                    if t is not None and point is None:
                        continue
                    fraction, exit_ms, margin = self._exit_terms(point, t, int8)
                    accuracy = c.accuracy if t is None else c.accuracy_with_exit[f"{t:g}"]
                    candidate = config.with_int8(int8).with_exit(t)
                    rows.append((candidate, device_ms + exit_ms, fraction, c.mean_bytes,
                                 c.tail_macs / 1e6, accuracy + int8_shift, margin))
                    if t is not None and point is not None:
                        self.exit_path_ms[candidate] = \
                            self._to_point_ms(point, int8, device_ms) + exit_ms
        return rows

    def _local_rows(self) -> list[_Row]:
        """LOCAL, fp32 and int8, with and without each threshold of the deepest exit."""
        full, rows = self.card.full, []
        deepest_exit = max(self.exits) if self.exits else None
        variants = [(False, full.latency_ms, full.accuracy)]
        if full.int8_accuracy is not None and full.int8_latency_ms:
            variants.append((True, full.int8_latency_ms, full.int8_accuracy))
        for int8, whole_ms, whole_accuracy in variants:
            for t in self.thresholds:
                if t is not None and deepest_exit is None:
                    continue
                fraction, exit_ms, margin = self._exit_terms(deepest_exit, t, int8)
                accuracy, to_exit_ms = whole_accuracy, 0.0
                if t is not None and deepest_exit is not None:
                    accuracy = next(r.overall_accuracy
                                    for r in self.exits[deepest_exit].thresholds
                                    if r.threshold == t) + whole_accuracy - full.accuracy
                    # exited inputs stop after the exit; the rest run the whole network
                    to_exit_ms = self._to_point_ms(deepest_exit, int8, whole_ms)
                    self.exit_path_ms[LOCAL.with_int8(int8).with_exit(t)] = \
                        to_exit_ms + exit_ms
                device_ms = fraction * to_exit_ms + (1 - fraction) * whole_ms + exit_ms
                rows.append((LOCAL.with_int8(int8).with_exit(t), device_ms, 1.0, 0.0, 0.0,
                             accuracy, margin))
        return rows

    def _offload_rows(self) -> list[_Row]:
        """OFFLOAD_INPUT with each input codec the card measured."""
        full_mmacs = self.card.full.macs / 1e6
        return [(Config.offload_input(row.codec),
                 row.encode_ms if row.encode_ms is not None else 0.5, 0.0, row.mean_bytes,
                 full_mmacs, row.accuracy, 0.0) for row in self.card.input_codecs]

    def _arrays(self, rows: list[_Row]) -> None:
        """The rows as the parallel arrays the planner vectorises over."""
        self.configs = [r[0] for r in rows]
        self.index = {c: i for i, c in enumerate(self.configs)}
        self.by_base: dict[Config, list[int]] = {}  # config without exit ─► its candidates
        for i, config in enumerate(self.configs):
            self.by_base.setdefault(config.without_exit(), []).append(i)
        self.device_ms = np.array([r[1] for r in rows])
        self.exit_fraction = np.array([r[2] for r in rows])
        self.payload_bytes = np.array([r[3] for r in rows])
        self.tail_mmacs = np.array([r[4] for r in rows])
        self.accuracy = np.array([r[5] for r in rows])
        # what the accuracy floor is checked against: an exit's accuracy less its sampling
        # margin (ExitThreshold.sampling_margin), so that a threshold whose loss the card's
        # images only just put under the floor is not taken on that luck
        self.assured_accuracy = self.accuracy - np.array([r[6] for r in rows])
        self.is_local = np.array([c.placement is Placement.LOCAL for c in self.configs])
        self.is_raw = np.array([c.raw for c in self.configs])
        self.is_entropy_coded = np.array([c.entropy_coded for c in self.configs])
        self.is_offload = np.array([c.placement is Placement.OFFLOAD_INPUT
                                    for c in self.configs])
        self.has_exit = np.array([c.exit_threshold is not None for c in self.configs])
        self.is_int8 = np.array([c.int8 for c in self.configs])
        self.full_accuracy = float(self.card.full.accuracy)
        # fixed per candidate, so not recomputed for every plan (one is made per frame)
        self.packets = np.ceil((self.payload_bytes + WIRE_OVERHEAD_BYTES) / MTU_BYTES)
        self.sent_share = np.where(self.is_local, 0.0, 1 - self.exit_fraction)
        self.tail_ms_per_mmac = self.device_ms_per_mmac / np.where(self.is_int8,
                                                                   self.int8_speedup, 1.0)
        # per precision (True: int8): its candidates, and the whole network's config
        self.of_precision = {True: self.is_int8, False: ~self.is_int8}
        self.local_of_precision = {flag: LOCAL.with_int8(flag) for flag in (False, True)}


class Planner:
    """One policy over the shared cost model."""

    def __init__(self, card: ModelCard, policy: str = "adaptive",
                 accuracy_floor: float | None = None, deadline_ms: float | None = None,
                 power: PowerProfile = RPI4, fixed_config: Config | None = None) -> None:
        if policy not in POLICIES:
            raise ValueError(f"unknown policy {policy!r}; choose from {', '.join(POLICIES)}")
        self.policy = policy
        self.adaptive = policy in ADAPTIVE_POLICIES
        self.candidates = cands = Candidates(card)
        self.accuracy_floor = (cands.full_accuracy - 0.01 if accuracy_floor is None
                               else accuracy_floor)
        self.deadline_ms = deadline_ms
        self.power = power
        self.frame_rate_hz: float | None = None  # set by a frame pipeline
        if policy.removesuffix("-paper") == "edgent" and self.deadline_ms is None:
            self.deadline_ms = DEFAULT_EDGENT_DEADLINE_MS
        allowed, local_only = self._choices(policy, fixed_config)
        self.allowed = allowed
        self.local_only = local_only

    def _choices(self, policy: str, fixed_config: Config | None) -> tuple[np.ndarray,
                                                                            np.ndarray]:
        """(allowed, local_only): what ``policy`` may choose while the edge answers, and
        what it runs when the edge does not (see PEERS and PAPER_VARIANTS)."""
        cands = self.candidates
        fp32 = ~cands.is_int8
        plain_local = cands.is_local & ~cands.has_exit
        default_offload = np.array([c == cands.default_offload for c in cands.configs])
        paper = policy.endswith("-paper")
        peer = policy.removesuffix("-paper")
        # the device's best network (int8, with its exit), or the paper's plain fp32 one
        local_only = plain_local & fp32 if paper else cands.is_local
        if peer == "local":
            return plain_local, plain_local
        if peer == "local-exit":  # BranchyNet as deployed: the best device-only exit net
            return cands.is_local, cands.is_local
        if peer == "offload-input":
            return default_offload, local_only
        if peer == "neurosurgeon":  # best partition by latency; no bottleneck
            allowed = cands.is_raw | cands.is_local | default_offload
            return (allowed & fp32 & ~cands.has_exit if paper else allowed), local_only
        if peer == "edgent":  # raw split + exit, best accuracy under the deadline
            allowed = cands.is_raw | cands.is_local
            return (allowed & fp32, cands.is_local & fp32) if paper else (allowed, local_only)
        if peer == "fixed":
            fixed = fixed_config or self.default_fixed_config()
            if fixed not in cands.index:
                raise ValueError(f"fixed config {fixed} is not in the model card")
            self.fixed_config = fixed
            allowed = np.zeros(len(cands.configs), dtype=bool)
            if paper:  # the config as chosen: fp32 head, no exit
                allowed[cands.index[fixed]] = True
            else:
                allowed = np.array([c.without_exit().with_int8(False) == fixed
                                    for c in cands.configs])
            return allowed, local_only
        if policy == "adaptive-v0":
            return ~cands.is_entropy_coded, local_only
        return np.ones(len(cands.configs), dtype=bool), local_only

    @property
    def may_offload(self) -> bool:
        """Whether this policy ever sends anything to the edge."""
        return bool((self.allowed & ~self.candidates.is_local).any())

    def default_fixed_config(self) -> Config:
        """BottleFit-style, chosen offline from the card (held-apart images): the slimmable
        bottleneck config (fp32 head, no exit; BottleFit's own kind of bottleneck, not the
        learned entropy bottleneck) with the fewest bytes that meets the accuracy floor, or
        the most accurate one when none does."""
        c = self.candidates
        bottlenecks = [i for i, cfg in enumerate(c.configs)
                       if cfg.placement is Placement.SPLIT and not cfg.raw and not cfg.int8
                       and not cfg.entropy_coded and cfg.exit_threshold is None]
        ok = [i for i in bottlenecks if c.accuracy[i] >= self.accuracy_floor]
        if not ok:
            return c.configs[max(bottlenecks, key=lambda i: c.accuracy[i])]
        return c.configs[min(ok, key=lambda i: c.payload_bytes[i])]

    def predict(self, est: Estimates) -> tuple[np.ndarray, np.ndarray]:
        """Predicted latency (ms) and device energy (mJ) of every candidate."""
        costs = self._costs(est)
        return costs.latency_ms, costs.energy_mj

    def _costs(self, est: Estimates) -> _Costs:
        c = self.candidates
        factors = np.full(len(c.configs), est.head_speed_factor)
        for int8, factor in est.precision_speed_factors.items():
            factors[c.of_precision[int8]] = factor
        for config, factor in est.config_speed_factors.items():
            factors[c.by_base.get(config, [])] = factor
        device_ms = c.device_ms * factors
        packet_ms = MTU_BYTES * 8 / max(est.bandwidth_bps, 1.0) * 1000
        transfer_ms = np.where(c.payload_bytes > 0, (c.packets - 0.5) * packet_ms, 0.0)
        edge_ms = est.server_queue_ms + c.tail_mmacs * est.edge_ms_per_mmac
        sent = c.sent_share
        remote_ms = np.where(c.is_local, 0.0, transfer_ms + est.rtt_ms + edge_ms)
        # what finishing on the device costs if the edge fails: the tail in the head's
        # precision (at that precision's speed), or the policy's local choice
        whole_factor = {flag: est.config_speed_factors.get(
            local, est.precision_speed_factors.get(flag, est.head_speed_factor))
            for flag, local in c.local_of_precision.items()}
        tail_factor = np.where(c.is_int8, whole_factor[True], whole_factor[False])
        ms_per_mmac = c.tail_ms_per_mmac
        local_ms = float(device_ms[self._feasible(self.local_only, device_ms)].min())
        fallback_ms = np.where(c.is_local, 0.0, np.where(
            c.is_offload, local_ms, c.tail_mmacs * ms_per_mmac * tail_factor))
        # a failed offload waits out its timeout (see Plan.offload_timeout_s), then falls back
        failure_ms = np.maximum(remote_ms, fallback_ms) + fallback_ms
        # the device's own time to send an input (request, reply), as measured
        overhead = est.send_overhead_ms
        send_ms = np.where(c.is_local, 0.0, np.where(
            c.is_offload, overhead.get(Placement.OFFLOAD_INPUT, 0.0),
            overhead.get(Placement.SPLIT, 0.0)))
        busy_ms = device_ms + sent * send_ms
        p_fail = est.offload_failure_rate
        latency = busy_ms + sent * ((1 - p_fail) * remote_ms + p_fail * failure_ms)
        radio_w = self.power.radio_w(est.bandwidth_bps)
        energy = (self.power.busy_w * busy_ms
                  + sent * (self.power.idle_w * (est.rtt_ms + edge_ms) + radio_w * transfer_ms))
        # pipelined, the head of the next frame runs while the edge answers this one
        lane_ms = sent * remote_ms
        return _Costs(latency, energy, remote_ms, fallback_ms, busy_ms, lane_ms,
                      np.maximum(busy_ms, lane_ms))

    def plan(self, est: Estimates, edge_lane_free: bool | None = None) -> Plan:
        """The policy's choice for the next input. With a frame rate set, the choices that
        sustain it come first (the slower pipeline stage within the frame interval); if
        none does, the plan says so (``sustainable`` False).

        When none does, the adaptive policy answers as many frames a second as it can: the
        config with the fastest slower stage, or two lanes (:meth:`_two_lanes`) when a
        frame pipeline says whether the edge lane is free (``edge_lane_free``: no input of
        this device is at the edge now). The baselines keep their own objective and their
        single lane."""
        allowed = self.allowed if est.edge_available else self.local_only
        costs = self._costs(est)
        sustainable = True
        if self.frame_rate_hz:
            keeps_up = (allowed & (costs.stage_ms <= 1000.0 / self.frame_rate_hz)
                        & (self.candidates.assured_accuracy >= self.accuracy_floor))
            sustainable = bool(keeps_up.any())
            if not sustainable and self.adaptive:
                if edge_lane_free is not None and est.edge_available:
                    two_lanes = self._two_lanes(allowed, costs, edge_lane_free)
                    if two_lanes is not None:
                        return two_lanes
                feasible = self._feasible(allowed, costs.latency_ms)
                fastest = int(np.argmin(np.where(feasible, costs.stage_ms, np.inf)))
                return replace(self._plan_of(fastest, costs), sustainable=False)
            allowed = keeps_up if sustainable else allowed
        if self.policy.removesuffix("-paper") == "edgent":
            choice = self._best_accuracy_under_deadline(allowed, costs.latency_ms)
        else:
            choice = self._best_score(allowed, costs.latency_ms, costs.energy_mj,
                                      est.battery_level)
        return replace(self._plan_of(choice, costs), sustainable=sustainable)

    def _two_lanes(self, allowed: np.ndarray, costs: _Costs, edge_lane_free: bool) -> Plan | None:
        """When no config keeps up with the frame rate alone: send a frame whenever the edge
        lane is free, and finish the frames that arrive meanwhile on the device, if the two
        lanes together answer more frames a second than any single config.

        With the device's best local config L (b_L ms a frame) and a sent config r (b_r ms
        of the device, then R_r ms at the edge), one cycle sends a frame and finishes
        k = ⌈R_r / b_L⌉ on the device: (1 + k) frames in b_r + k·b_L ms. A single lane
        answers one frame per b_L (local) or per max(b_r, R_r) (pipelined). The sent config
        maximises that rate; both meet the accuracy floor. Results then come out of capture
        order (each carries its frame's index). Throughput first: the battery weight plays
        no part here.
        """
        assert self.frame_rate_hz is not None
        c = self.candidates
        if not (allowed & c.is_local).any() or not (allowed & ~c.is_local).any():
            return None
        local = self._feasible(allowed & c.is_local, costs.latency_ms)
        sent = self._feasible(allowed & ~c.is_local, costs.latency_ms)
        best_local = int(np.argmin(np.where(local, costs.busy_ms, np.inf)))
        b_local = max(float(costs.busy_ms[best_local]), 1e-3)
        per_cycle = np.maximum(np.ceil(costs.lane_ms / b_local), 1.0)
        rate = np.where(sent, (1 + per_cycle) / (costs.busy_ms + per_cycle * b_local), 0.0)
        best_sent = int(np.argmax(rate))
        single = np.where(local | sent, 1.0 / np.maximum(costs.stage_ms, 1e-3), 0.0)
        if rate[best_sent] <= single.max():
            return None
        choice = best_sent if edge_lane_free else best_local
        keeps_up = rate[best_sent] * 1000.0 >= self.frame_rate_hz
        return replace(self._plan_of(choice, costs), sustainable=bool(keeps_up))

    def fallback_ms(self, config: Config, est: Estimates) -> float:
        """Predicted device time to finish ``config``'s input without the edge, from where
        the device stopped: the tail in the head's precision after a split, the policy's
        own local config after an offloaded input (0 for LOCAL: nothing is waiting)."""
        index = self.candidates.index.get(config)
        if index is None:
            raise ValueError(f"{config} is not a candidate of this model's card")
        return float(self._costs(est).fallback_ms[index])

    def plan_for(self, config: Config, est: Estimates) -> Plan:
        """``config`` (chosen elsewhere, e.g. replayed) with what the cost model expects."""
        choice = self.candidates.index.get(config)
        if choice is None:
            raise ValueError(f"{config} is not a candidate of this model's card")
        return self._plan_of(choice, self._costs(est))

    def _plan_of(self, choice: int, costs: _Costs) -> Plan:
        c = self.candidates
        return Plan(c.configs[choice], float(costs.latency_ms[choice]),
                    float(costs.energy_mj[choice]), float(c.accuracy[choice]),
                    float(c.exit_fraction[choice]), float(c.payload_bytes[choice]),
                    float(c.tail_mmacs[choice]), float(c.device_ms[choice]),
                    float(costs.remote_ms[choice]), float(costs.fallback_ms[choice]))

    def _feasible(self, allowed: np.ndarray, latency: np.ndarray) -> np.ndarray:
        assured = self.candidates.assured_accuracy
        accurate = allowed & (assured >= self.accuracy_floor)
        if not accurate.any():
            accurate = allowed & (assured >= assured[allowed].max())
        if self.deadline_ms is not None:
            in_time = accurate & (latency <= self.deadline_ms)
            if in_time.any():
                return in_time
        return accurate

    def _best_score(self, allowed: np.ndarray, latency: np.ndarray, energy: np.ndarray,
                    battery_level: float) -> int:
        feasible = self._feasible(allowed, latency)
        weight = battery_weight(battery_level) if self.adaptive else 0.0
        score = ((1 - weight) * latency / latency[feasible].min()
                 + weight * energy / max(energy[feasible].min(), 1e-9))
        return int(np.argmin(np.where(feasible, score, np.inf)))

    def _best_accuracy_under_deadline(self, allowed: np.ndarray, latency: np.ndarray) -> int:
        assert self.deadline_ms is not None
        in_time = allowed & (latency <= self.deadline_ms)
        if not in_time.any():
            return int(np.argmin(np.where(allowed, latency, np.inf)))
        accuracy = np.where(in_time, self.candidates.accuracy, -np.inf)
        best = accuracy.max()
        # among the most accurate, the fastest
        return int(np.argmin(np.where(accuracy >= best - 1e-9, latency, np.inf)))
