"""Pick a config for the next input from the model card and the current estimates.

    model card ──► candidates: every (split config × exit threshold), LOCAL × exit
                   thresholds, OFFLOAD_INPUT; each with profiled head ms, bytes, exit
                   fraction, tail MMACs and accuracy
    Estimates  ──► per candidate, vectorised:
        device_ms  = head_ms · head_speed_factor
        network_ms = (packets − ½) · MTU·8 / bandwidth + RTT,
                     packets = ⌈(bytes + wire overhead) / MTU⌉
                     (links deliver whole MTU-sized opportunities: a 40-byte payload
                     waits for one as long as a 1,000-byte one)
        edge_ms    = server queue ms + tail MMACs · edge ms/MMAC
        latency    = device_ms + (1 − p_exit) · (network_ms + edge_ms)
        energy     = P_busy·device_ms + (1 − p_exit)·(P_idle·(RTT + edge_ms) + P_radio·transfer)
    policy     ──► the allowed candidates and the objective ──► Plan

The adaptive objective: among candidates with accuracy ≥ the floor (and predicted latency
≤ the deadline, when one is set and reachable), minimise

    (1 − λ) · latency / best_latency  +  λ · energy / best_energy,
    λ = clip((0.5 − battery) / 0.4, 0, 1)

so above half charge it minimises latency alone, and it moves linearly to minimising device
energy alone as the battery falls to 10 %.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from device_client.energy import RPI4, PowerProfile
from device_client.estimators import Estimates
from splitnet.card import ModelCard
from splitnet.config import LOCAL, Config, Placement

POLICIES = ("adaptive", "local", "offload-input", "neurosurgeon", "edgent", "fixed")
OFFLOAD_CODEC = "png"
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


def battery_weight(level: float) -> float:
    """λ in the objective: 0 above half charge, rising to 1 at 10 %."""
    span = BATTERY_SAVING_START - BATTERY_SAVING_FULL
    return float(np.clip((BATTERY_SAVING_START - level) / span, 0.0, 1.0))


class Candidates:
    """Every choice the card describes, as parallel arrays."""

    def __init__(self, card: ModelCard) -> None:
        full = card.full
        device_ms_per_mmac = full.latency_ms / (full.macs / 1e6)
        full_mmacs = full.macs / 1e6
        exits = {e.exit_point: e for e in card.exits}
        thresholds: list[float | None] = [None, *card.exit_thresholds]
        raw_head_ms = {c.split: c.head_latency_ms or 0.0 for c in card.configs if c.raw}
        rows: list[tuple[Config, float, float, float, float, float]] = []

        def exit_terms(point: int | None, threshold: float | None) -> tuple[float, float]:
            if point is None or threshold is None:
                return 0.0, 0.0
            row = next(t for t in exits[point].thresholds if t.threshold == threshold)
            return row.exit_fraction, exits[point].macs / 1e6 * device_ms_per_mmac

        deepest_exit = max(exits) if exits else None
        for c in card.configs:
            config = Config(split=c.split, width=c.width, bits=c.bits)
            point = max((p for p in exits if p <= c.split), default=None)
            for t in thresholds:
                if t is not None and point is None:
                    continue
                fraction, exit_ms = exit_terms(point, t)
                accuracy = c.accuracy if t is None else c.accuracy_with_exit[f"{t:g}"]
                rows.append((config.with_exit(t), (c.head_latency_ms or 0.0) + exit_ms,
                             fraction, c.mean_bytes, c.tail_macs / 1e6, accuracy))
        for t in thresholds:
            if t is not None and deepest_exit is None:
                continue
            fraction, exit_ms = exit_terms(deepest_exit, t)
            accuracy, to_exit_ms = full.accuracy, 0.0
            if t is not None and deepest_exit is not None:
                accuracy = next(r.overall_accuracy for r in exits[deepest_exit].thresholds
                                if r.threshold == t)
                # exited inputs stop after the exit; the rest run the whole network
                to_exit_ms = raw_head_ms.get(deepest_exit, full.latency_ms)
            head_ms = fraction * to_exit_ms + (1 - fraction) * full.latency_ms + exit_ms
            rows.append((LOCAL.with_exit(t), head_ms, 1.0, 0.0, 0.0, accuracy))
        codec_row = card.input_codec(OFFLOAD_CODEC)
        rows.append((Config.offload_input(OFFLOAD_CODEC), 0.5, 0.0, codec_row.mean_bytes,
                     full_mmacs, codec_row.accuracy))

        self.configs = [r[0] for r in rows]
        self.index = {c: i for i, c in enumerate(self.configs)}
        self.head_ms = np.array([r[1] for r in rows])
        self.exit_fraction = np.array([r[2] for r in rows])
        self.payload_bytes = np.array([r[3] for r in rows])
        self.tail_mmacs = np.array([r[4] for r in rows])
        self.accuracy = np.array([r[5] for r in rows])
        self.is_local = np.array([c.placement is Placement.LOCAL for c in self.configs])
        self.is_raw = np.array([c.raw for c in self.configs])
        self.is_offload = np.array([c.placement is Placement.OFFLOAD_INPUT
                                    for c in self.configs])
        self.has_exit = np.array([c.exit_threshold is not None for c in self.configs])
        self.full_accuracy = float(full.accuracy)


class Planner:
    """One policy over the shared cost model."""

    def __init__(self, card: ModelCard, policy: str = "adaptive",
                 accuracy_floor: float | None = None, deadline_ms: float | None = None,
                 power: PowerProfile = RPI4, fixed_config: Config | None = None) -> None:
        if policy not in POLICIES:
            raise ValueError(f"unknown policy {policy!r}; choose from {', '.join(POLICIES)}")
        self.policy = policy
        self.candidates = cands = Candidates(card)
        self.accuracy_floor = (cands.full_accuracy - 0.01 if accuracy_floor is None
                               else accuracy_floor)
        self.deadline_ms = deadline_ms
        self.power = power
        # `allowed`: what the policy may choose while the edge answers. When it does not,
        # every policy runs LOCAL; those that know about exits may use them.
        plain_local = cands.is_local & ~cands.has_exit
        if policy == "local":
            allowed = plain_local
        elif policy == "offload-input":
            allowed = cands.is_offload.copy()
        elif policy == "neurosurgeon":  # best partition by latency; no bottleneck, no exit
            allowed = (cands.is_raw | plain_local | cands.is_offload) & ~cands.has_exit
        elif policy == "edgent":  # raw split + exit, best accuracy under the deadline
            allowed = cands.is_raw | cands.is_local
            if self.deadline_ms is None:
                self.deadline_ms = DEFAULT_EDGENT_DEADLINE_MS
        elif policy == "fixed":
            fixed = fixed_config or self.default_fixed_config()
            if fixed not in cands.index:
                raise ValueError(f"fixed config {fixed} is not in the model card")
            allowed = np.zeros(len(cands.configs), dtype=bool)
            allowed[cands.index[fixed]] = True
            self.fixed_config = fixed
        else:
            allowed = np.ones(len(cands.configs), dtype=bool)
        self.allowed = allowed
        uses_exits = policy in ("adaptive", "edgent")
        self.local_only = cands.is_local if uses_exits else plain_local

    @property
    def may_offload(self) -> bool:
        """Whether this policy ever sends anything to the edge."""
        return bool((self.allowed & ~self.candidates.is_local).any())

    def default_fixed_config(self) -> Config:
        """BottleFit-style: the smallest bottleneck at the shallowest split that meets the
        accuracy floor (no exit)."""
        c = self.candidates
        ok = [i for i, cfg in enumerate(c.configs)
              if cfg.placement is Placement.SPLIT and not cfg.raw and cfg.exit_threshold is None
              and c.accuracy[i] >= self.accuracy_floor]
        if not ok:
            ok = [i for i, cfg in enumerate(c.configs)
                  if cfg.placement is Placement.SPLIT and not cfg.raw]
        best = min(ok, key=lambda i: (c.configs[i].split or 0, c.payload_bytes[i]))
        return c.configs[best]

    def predict(self, est: Estimates) -> tuple[np.ndarray, np.ndarray]:
        """Predicted latency (ms) and device energy (mJ) of every candidate."""
        c = self.candidates
        device_ms = c.head_ms * est.head_speed_factor
        packets = np.ceil((c.payload_bytes + WIRE_OVERHEAD_BYTES) / MTU_BYTES)
        packet_ms = MTU_BYTES * 8 / max(est.bandwidth_bps, 1.0) * 1000
        transfer_ms = np.where(c.payload_bytes > 0, (packets - 0.5) * packet_ms, 0.0)
        edge_ms = est.server_queue_ms + c.tail_mmacs * est.edge_ms_per_mmac
        remote = np.where(c.is_local, 0.0, 1 - c.exit_fraction)
        latency = device_ms + remote * (transfer_ms + est.rtt_ms + edge_ms)
        radio_w = self.power.radio_w(est.bandwidth_bps)
        energy = (self.power.busy_w * device_ms
                  + remote * (self.power.idle_w * (est.rtt_ms + edge_ms) + radio_w * transfer_ms))
        return latency, energy

    def plan(self, est: Estimates) -> Plan:
        """The policy's choice for the next input."""
        c = self.candidates
        allowed = self.allowed if est.edge_available else self.local_only
        latency, energy = self.predict(est)
        if self.policy == "edgent":
            choice = self._best_accuracy_under_deadline(allowed, latency)
        else:
            choice = self._best_score(allowed, latency, energy, est.battery_level)
        return Plan(c.configs[choice], float(latency[choice]), float(energy[choice]),
                    float(c.accuracy[choice]), float(c.exit_fraction[choice]),
                    float(c.payload_bytes[choice]), float(c.tail_mmacs[choice]),
                    float(c.head_ms[choice]))

    def _feasible(self, allowed: np.ndarray, latency: np.ndarray) -> np.ndarray:
        accurate = allowed & (self.candidates.accuracy >= self.accuracy_floor)
        if not accurate.any():
            best = self.candidates.accuracy[allowed].max()
            accurate = allowed & (self.candidates.accuracy >= best)
        if self.deadline_ms is not None:
            in_time = accurate & (latency <= self.deadline_ms)
            if in_time.any():
                return in_time
        return accurate

    def _best_score(self, allowed: np.ndarray, latency: np.ndarray, energy: np.ndarray,
                    battery_level: float) -> int:
        feasible = self._feasible(allowed, latency)
        weight = battery_weight(battery_level) if self.policy == "adaptive" else 0.0
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
