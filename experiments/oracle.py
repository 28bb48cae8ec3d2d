"""The predicted best: the cost model's choice in hindsight, per time window, from the
profile and the trace; and its replay, run for real.

    for each window of the run (1 s), the window in which the adaptive run took each input
    up (not when it was due: a slow device falls behind the arrivals):
        true capacity from the trace
        + the device's measured speed per config (head ms ÷ profiled ms, from this run's
          records; a config not run takes its precision's median)
        + the edge's measured speed (server ms per tail MMAC) + the scenario's RTT
        + the share of the run's offloads that failed (the link's stalls, priced as the
          planner prices them: a timeout, then the fallback)
        ─► the planner's cost model over every candidate in the card
        ─► the lowest predicted latency with accuracy ≥ the floor
        + the client's own time to send an input, per placement (the run's median
          overhead of inputs answered by the edge less that of inputs finished locally)
    each input takes its window's choice, plus the client overhead every input pays (the
    run's median for a local input: planning, bookkeeping) ─► latency, energy, accuracy, bytes
    the per-input choices (``schedule``) ─► ``predicted-best-replay``: run for real, measured

Neither is a bound: the prediction is a model's figure, and its replay runs choices the
model thought best, which measured runs have beaten (the cost model is not the machine).
The bound the experiments report is measured instead: each frame's quickest full-accuracy
answer of any policy (``experiments.report.per_frame_bound``). The replay stays as a policy
row: what perfect knowledge of the link is worth to this cost model.
"""

from __future__ import annotations

import statistics
from typing import Any

import numpy as np

from device_client.energy import PowerProfile
from device_client.estimators import Estimates
from device_client.planner import Planner
from experiments.traces import Trace
from splitnet.card import ModelCard
from splitnet.config import Config, Placement

REPLAY_POLICY = "predicted-best-replay"  # the predicted best choices, run for real


def placement_of(config: Config) -> str:
    """``local``, ``split`` or ``offload-input``: where an input of ``config`` is finished
    when nothing fails and no exit fires."""
    if config.placement is Placement.SPLIT:
        return "split"
    return "offload-input" if config.placement is Placement.OFFLOAD_INPUT else "local"


def _device_ratios(card: ModelCard, records: list[dict[str, Any]]) -> dict[Config, list[float]]:
    """Measured ÷ profiled device time per config (without its exit), from the records
    whose device part ran as profiled (no exit fired, no fallback, something was run)."""
    measured: dict[Config, list[float]] = {}
    for r in records:
        if r["where"] == "device-exit" or r["fallback"] or r["config"].startswith("offload"):
            continue
        config = Config.parse(r["config"]).without_exit()
        measured.setdefault(config, []).append(r["device_ms"] / card.device_ms(config))
    return measured


def measured_constants(card: ModelCard, records: list[dict[str, Any]]) -> dict[str, float]:
    """Device speed factor (over every config run), edge ms/MMAC, the share of offloads
    that failed, the client overhead of a local input and what sending adds to it (split,
    offload), from what the run actually measured."""
    ratios = [x for v in _device_ratios(card, records).values() for x in v]
    edge = []
    for r in records:
        if r["where"] != "edge":
            continue
        config = Config.parse(r["config"])
        row = card.config_row(config) if config.placement is Placement.SPLIT else None
        tail_macs = card.full.macs if config.placement is Placement.OFFLOAD_INPUT else \
            (row.tail_macs if row is not None else 0)
        if tail_macs:
            edge.append(r["server_ms"] / (tail_macs / 1e6))
    overheads: dict[str, list[float]] = {}
    for r in records:
        if "overhead_ms" in r and not r["fallback"]:
            kind = placement_of(Config.parse(r["config"])) if r["where"] == "edge" else "local"
            overheads.setdefault(kind, []).append(r["overhead_ms"])
    medians = {kind: statistics.median(v) for kind, v in overheads.items()}
    local_ms = medians.get("local", statistics.median(
        [x for v in overheads.values() for x in v]) if overheads else 0.0)
    sent = [r for r in records if r["where"] == "edge" or r["fallback"]]
    return {"head_speed_factor": statistics.median(ratios) if ratios else 1.0,
            "offload_failure_rate": (sum(r["fallback"] for r in sent) / len(sent)
                                     if sent else 0.0),
            "edge_ms_per_mmac": statistics.median(edge) if edge else 0.05,
            "client_overhead_ms": local_ms,
            "split_send_ms": max(medians.get("split", local_ms) - local_ms, 0.0),
            "offload_send_ms": max(medians.get("offload-input", local_ms) - local_ms, 0.0)}


def device_speed_factors(card: ModelCard, planner: Planner,
                         records: list[dict[str, Any]]) -> dict[Config, float]:
    """Measured ÷ profiled device time for every candidate config (without its exit), as
    the device itself learns it: a config's own median where the run measured it, else
    the median over the configs of the same precision (int8 or fp32) that it measured,
    else the median over every config it measured."""
    measured = _device_ratios(card, records)
    own = {c: statistics.median(v) for c, v in measured.items()}
    by_precision = {flag: [x for c, v in measured.items() if c.int8 == flag for x in v]
                    for flag in (False, True)}
    overall = [x for v in measured.values() for x in v]
    factors = {}
    for config in planner.candidates.by_base:
        if config in own:
            factors[config] = own[config]
        elif by_precision[config.int8]:
            factors[config] = statistics.median(by_precision[config.int8])
        elif overall:
            factors[config] = statistics.median(overall)
    return factors


def oracle(card: ModelCard, trace: Trace, trace_start_s: float, rtt_ms: float,
           records: list[dict[str, Any]], all_records: list[dict[str, Any]],
           power: PowerProfile, accuracy_floor: float | None, battery: float = 1.0,
           window_s: float = 1.0) -> dict[str, Any]:
    """Oracle results for the inputs in ``records`` (their arrival times ``t``)."""
    constants = measured_constants(card, all_records)
    planner = Planner(card, "adaptive", accuracy_floor or None, None, power)
    speeds = device_speed_factors(card, planner, all_records)
    choices: dict[int, Any] = {}
    latencies, energies, accuracies, sent = [], [], [], []
    schedule: dict[int, str] = {}
    placements: dict[str, float] = {"local": 0.0, "split": 0.0, "offload-input": 0.0}
    for r in records:
        window = int(r["t"] // window_s)
        if window not in choices:
            start_ms = (trace_start_s + window * window_s) * 1000
            capacity = trace.capacity_bps(start_ms, start_ms + window_s * 1000)
            est = Estimates(bandwidth_bps=max(capacity, 1.0), rtt_ms=rtt_ms,
                            server_queue_ms=0.0, edge_ms_per_mmac=constants["edge_ms_per_mmac"],
                            head_speed_factor=constants["head_speed_factor"],
                            battery_level=battery, edge_available=capacity > 0,
                            config_speed_factors=speeds,
                            offload_failure_rate=constants["offload_failure_rate"],
                            send_overhead_ms={
                                Placement.SPLIT: constants["split_send_ms"],
                                Placement.OFFLOAD_INPUT: constants["offload_send_ms"]})
            choices[window] = planner.plan(est)
        plan = choices[window]
        schedule[r["index"]] = str(plan.config)
        remote = 1 - plan.exit_fraction if plan.config.placement is Placement.SPLIT else 1.0
        placements[placement_of(plan.config)] += remote
        placements["local"] += 1 - remote
        overhead_ms = constants["client_overhead_ms"]
        latencies.append(plan.latency_ms + overhead_ms)
        energies.append(plan.energy_mj + power.energy_mj(overhead_ms))
        accuracies.append(plan.accuracy)
        sent.append(plan.payload_bytes * (1 - plan.exit_fraction))
    return {
        "mean_latency_ms": float(np.mean(latencies)) if latencies else 0.0,
        "p95_latency_ms": float(np.percentile(latencies, 95)) if latencies else 0.0,
        "energy_mj_per_inference": float(np.mean(energies)) if energies else 0.0,
        "accuracy": float(np.mean(accuracies)) if accuracies else 0.0,
        "bytes_per_inference": float(np.mean(sent)) if sent else 0.0,
        "configs": sorted({str(p.config) for p in choices.values()}),
        # expected shares: a split with an exit finishes locally for its exit fraction
        "placements": {k: v / max(len(records), 1) for k, v in placements.items()},
        "switches": sum(1 for a, b in zip(records, records[1:], strict=False)
                        if schedule[a["index"]] != schedule[b["index"]]),
        "schedule": schedule,
        **constants,
    }
