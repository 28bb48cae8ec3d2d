"""A scenario (one grid cell) in the simulator, summarised as the emulator summarises it.

    Scenario (trace, offset, device, RTT, frames, rate, repetitions) × policy
      ─► per repetition: one Simulation, one SimDevice on its SimUplink, one SimEdge
         (each policy has its own edge, as each emulated lane has)
      ─► per policy: mean of the repetitions' mean response ms (from arrival), p95,
         placement shares, drop rate: the keys of experiments.report's summary
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from device_client.planner import Planner
from experiments.device_profiles import PROFILES
from experiments.scenario import Scenario
from experiments.sim.device import FrameRecord, SimDevice
from experiments.sim.device_times import DeviceTimes, for_device
from experiments.sim.edge import EdgeProfile, SimEdge
from experiments.sim.engine import Simulation
from experiments.sim.link import SimUplink
from experiments.traces import Trace
from splitnet.card import ModelCard
from splitnet.config import Config, Placement

WARM_UP_S = 2.0  # simulated start-up before frame 0 (warm-up offload, first probe)
PLACEMENTS = ("local", "split", "offload-input")


def tail_mmac_of(card: ModelCard) -> Callable[[Config], float]:
    """Config → the MMAC the edge computes for it."""
    full = card.full.macs / 1e6

    def tail_mmac(config: Config) -> float:
        row = card.config_row(config) if config.placement is Placement.SPLIT else None
        return row.tail_macs / 1e6 if row is not None else full
    return tail_mmac


@dataclass
class PolicyRun:
    records: list[FrameRecord]
    frames: int


def simulate_repetition(scenario: Scenario, policy: str, card: ModelCard, profile: EdgeProfile,
                        times: DeviceTimes, traces: dict[str, Trace]) -> PolicyRun:
    """One policy on one repetition of ``scenario``: one device, one edge."""
    sim = Simulation()
    planner = Planner(card, policy, scenario.accuracy_floor or None, scenario.deadline_ms,
                      PROFILES[scenario.device].power)
    edge = SimEdge(sim, profile, tail_mmac_of(card))
    trace = traces.setdefault(scenario.trace, Trace.load(scenario.trace, scenario.scale))
    # the trace is at trace_start_s when frame 0 is due, as the emulator restarts its clock
    uplink = SimUplink(trace, scenario.trace_start_s - WARM_UP_S, scenario.one_way_delay_ms)
    records: list[FrameRecord] = []
    device = SimDevice(sim, 0, planner, times, uplink, [edge], scenario.rate_hz, WARM_UP_S,
                       scenario.images, scenario.seed, records.append)
    device.start(warm_up_at=0.5)
    sim.run(WARM_UP_S + scenario.images / scenario.rate_hz + 60.0)
    return PolicyRun(records, scenario.images)


def summarize(runs: list[PolicyRun]) -> dict[str, Any]:
    """The emulator's summary keys for one policy over its repetitions."""
    means, p95s, drops, shares = [], [], [], []
    for run in runs:
        answered = [r for r in run.records if r.response_ms is not None]
        response = np.array([r.response_ms for r in answered])
        means.append(float(response.mean()) if len(response) else float("nan"))
        p95s.append(float(np.percentile(response, 95)) if len(response) else float("nan"))
        drops.append(1 - len(answered) / max(run.frames, 1))
        counts = Counter(r.placement for r in answered)
        shares.append({p: counts[p] / max(len(answered), 1) for p in PLACEMENTS})
    return {"mean_response_ms": float(np.mean(means)), "repetition_mean_response_ms": means,
            "p95_response_ms": float(np.mean(p95s)), "drop_rate": float(np.mean(drops)),
            "placements": {p: float(np.mean([s[p] for s in shares])) for p in PLACEMENTS}}


def simulate_runs(scenario: Scenario, card: ModelCard, profile: EdgeProfile,
                  policies: Iterable[str]) -> dict[str, list[PolicyRun]]:
    """Every policy over every repetition of ``scenario``: its runs."""
    times = for_device(scenario.device, card)
    traces: dict[str, Trace] = {}
    repetitions = [scenario.repetition(i) if scenario.repetitions > 1 else scenario
                   for i in range(scenario.repetitions)]
    return {policy: [simulate_repetition(r, policy, card, profile, times, traces)
                     for r in repetitions] for policy in policies}


def simulate_scenario(scenario: Scenario, card: ModelCard, profile: EdgeProfile,
                      policies: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Every policy over every repetition of ``scenario``, summarised."""
    return {policy: summarize(runs)
            for policy, runs in simulate_runs(scenario, card, profile, policies).items()}


def per_frame_bound(runs: dict[str, list[PolicyRun]], floor: float) -> dict[str, Any]:
    """Each frame's quickest answer by any policy with a config within ``floor`` of the
    whole network's accuracy (the card's), and adaptive ÷ that bound over its frames;
    with where the bound's answers were finished."""
    bound: dict[tuple[int, int], tuple[float, str]] = {}
    for policy_runs in runs.values():
        for rep, run in enumerate(policy_runs):
            for r in run.records:
                if r.response_ms is None or r.accuracy < floor:
                    continue
                best = bound.get((rep, r.frame))
                if best is None or r.response_ms < best[0]:
                    bound[(rep, r.frame)] = (r.response_ms, r.placement)
    pairs = [(r.response_ms, bound[(rep, r.frame)][0])
             for rep, run in enumerate(runs.get("adaptive", []))
             for r in run.records if r.response_ms is not None and (rep, r.frame) in bound]
    wins = Counter(placement for _, placement in bound.values())
    return {"ratio": float(np.mean([a for a, _ in pairs]) / np.mean([b for _, b in pairs]))
            if pairs else None,
            "bound_mean_ms": float(np.mean([b for _, b in pairs])) if pairs else None,
            "placements": {p: wins[p] / max(len(bound), 1) for p in PLACEMENTS}}
