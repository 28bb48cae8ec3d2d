"""Fleets: many devices sharing a few edge replicas, in simulated time.

    N devices (Pi 4 and Pi Zero 2 alternating; each on a grid trace at its own offset,
    starting at its own moment) ─► SimDevice (the runtime's planner and estimators)
      ─► R SimEdge replicas of one edge profile (each device picks the least loaded one
         that is up, as device_client.replicas does)
      ─► per frame, as it ends: response ms (from arrival), where it finished, its
         expected accuracy ─► FleetStats (running sums, no per-frame list kept)
      ─► p50/p95 response, drop rate, edge utilisation, goodput (answered frames a second
         weighted by accuracy ÷ the whole network's: frames at full accuracy), and the
         share of frames finished on the edge in every 10 s window (herding)
"""

from __future__ import annotations

import itertools
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from device_client.planner import Planner
from experiments.device_profiles import PROFILES
from experiments.sim.cells import WARM_UP_S, tail_mmac_of
from experiments.sim.device import FrameRecord, SimDevice
from experiments.sim.device_times import DeviceTimes, for_device
from experiments.sim.edge import EdgeProfile, SimEdge
from experiments.sim.engine import Simulation
from experiments.sim.link import SimUplink
from experiments.traces import Trace
from splitnet.card import ModelCard

FLEET_DEVICES = ("rpi4", "pizero2")
FLEET_TRACES = ("Verizon-EVDO-driving.up", "ATT-LTE-driving.up", "TMobile-LTE-short.up",
                "Verizon-LTE-short.up")
FLEET_RATE_HZ = 1.0  # a monitoring camera: one frame a second
FLEET_DEADLINE_MS = 1000.0  # answered before the next frame arrives
WINDOW_S = 10.0
SETTLE_S = 60.0  # shares and percentiles count from here


@dataclass
class FleetStats:
    """Running figures of a fleet run (frames arriving after ``settle_s``)."""

    settle_s: float
    full_accuracy: float
    responses: list[float] = field(default_factory=list)
    answered: int = 0
    dropped: int = 0
    fallbacks: int = 0
    correct_weight: float = 0.0
    windows: dict[int, list[int]] = field(default_factory=dict)  # window ─► [edge, all]

    def add(self, record: FrameRecord) -> None:
        window = int(record.t_arrival // WINDOW_S)
        counts = self.windows.setdefault(window, [0, 0])
        if record.response_ms is not None:
            counts[1] += 1
            counts[0] += record.placement != "local"
        if record.t_arrival < self.settle_s:
            return
        if record.response_ms is None:
            self.dropped += 1
            return
        self.answered += 1
        self.fallbacks += record.fallback
        self.responses.append(record.response_ms)
        self.correct_weight += record.accuracy / self.full_accuracy


def fleet_devices(count: int, seed: int) -> list[tuple[str, str, float, float]]:
    """(device profile, trace, trace offset s, start s) for each of ``count`` devices:
    profiles alternate, traces rotate, offsets and starts are spread at random."""
    rng = random.Random(seed)
    return [(FLEET_DEVICES[i % len(FLEET_DEVICES)], FLEET_TRACES[i % len(FLEET_TRACES)],
             rng.uniform(0, 3000), rng.uniform(0, 10)) for i in range(count)]


def run_fleet(card: ModelCard, profile: EdgeProfile, policy: str, devices: int, replicas: int,
              seconds: float, seed: int = 0, rate_hz: float = FLEET_RATE_HZ,
              times: dict[str, DeviceTimes] | None = None) -> dict[str, Any]:
    """One fleet for ``seconds`` of simulated time; its figures (see the module)."""
    sim = Simulation()
    edges = [SimEdge(sim, profile, tail_mmac_of(card)) for _ in range(replicas)]
    times = times or {name: for_device(name, card) for name in FLEET_DEVICES}
    planners = {name: Planner(card, policy, None, FLEET_DEADLINE_MS, PROFILES[name].power)
                for name in FLEET_DEVICES}
    traces = {name: Trace.load(name) for name in FLEET_TRACES}
    stats = FleetStats(SETTLE_S, card.full.accuracy)
    started = time.perf_counter()
    for i, (kind, trace, offset, start) in enumerate(fleet_devices(devices, seed)):
        t0 = WARM_UP_S + start
        uplink = SimUplink(traces[trace], offset, one_way_ms=20.0)
        device = SimDevice(sim, i, planners[kind], times[kind], uplink, edges, rate_hz, t0,
                           None, seed * 100_003 + i, stats.add)
        device.start(warm_up_at=start + 0.5)
    sim.run(seconds)
    wall_s = time.perf_counter() - started
    return summarize_fleet(stats, edges, seconds, devices, rate_hz) | {
        "policy": policy, "devices": devices, "replicas": replicas, "profile": profile.name,
        "simulated_s": seconds, "wall_s": wall_s, "events": sim.events}


def summarize_fleet(stats: FleetStats, edges: Sequence[SimEdge], seconds: float,
                    devices: int, rate_hz: float) -> dict[str, Any]:
    measured_s = seconds - stats.settle_s
    response = np.array(stats.responses) if stats.responses else np.array([math.nan])
    shares = offload_shares(stats)
    settled = [s for w, s in shares if w * WINDOW_S >= stats.settle_s]
    frames = stats.answered + stats.dropped
    return {
        "p50_response_ms": float(np.nanpercentile(response, 50)),
        "p95_response_ms": float(np.nanpercentile(response, 95)),
        "mean_response_ms": float(np.nanmean(response)),
        "drop_rate": stats.dropped / max(frames, 1),
        "fallback_rate": stats.fallbacks / max(stats.answered, 1),
        "answered_fps": stats.answered / measured_s,
        "goodput_fps": stats.correct_weight / measured_s,
        "offered_fps": devices * rate_hz,
        "edge_utilisation": float(np.mean([e.busy_s / seconds for e in edges])),
        "edge_refused": sum(e.refused for e in edges),
        "offload_share_windows": shares,
        "offload_share_spread_settled": (max(settled) - min(settled)) if settled else None,
    }


def offload_shares(stats: FleetStats) -> list[tuple[int, float]]:
    """(window, share of its answered frames finished on the edge), in time order."""
    return [(w, edge / total) for w, (edge, total) in sorted(stats.windows.items()) if total]


FLEET_SIZES = (1, 3, 10, 30, 100, 300, 1000)
FLEET_REPLICAS = (1, 2, 4)
FLEET_POLICIES = ("adaptive", "local-exit", "offload-input", "neurosurgeon", "edgent", "fixed")
SATURATED = 0.9  # edge utilisation from which the edge is the bottleneck


def sweep(card: ModelCard, profile: EdgeProfile, policies: Sequence[str], sizes: Sequence[int],
          replicas: Sequence[int], seconds: float, seed: int = 0) -> list[dict[str, Any]]:
    """Every (replicas, policy, fleet size) for ``seconds`` of simulated time."""
    from tqdm import tqdm

    times = {name: for_device(name, card) for name in FLEET_DEVICES}
    runs = [(r, p, n) for r in replicas for p in policies for n in sizes]
    rows = []
    for r, p, n in tqdm(runs, desc=f"fleets on {profile.name}", unit="run"):
        rows.append(run_fleet(card, profile, p, n, r, seconds, seed, times=times))
    return rows


def knees(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per (replicas, policy): the knee, the largest fleet before the first one that
    saturates the edge (a larger fleet may load it less again, its devices having gone
    local); and the largest fleet whose p95 meets the deadline."""
    out: dict[str, Any] = {}
    groups: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["replicas"], row["policy"]), []).append(row)
    for (replicas, policy), group in sorted(groups.items()):
        group.sort(key=lambda r: r["devices"])
        unsaturated = [r["devices"] for r in itertools.takewhile(
            lambda r: r["edge_utilisation"] < SATURATED, group)]
        in_deadline = [r["devices"] for r in group if r["p95_response_ms"] <= FLEET_DEADLINE_MS]
        out[f"{policy}@{replicas}"] = {
            "knee_devices": max(unsaturated) if unsaturated else None,
            "deadline_met_up_to": max(in_deadline) if in_deadline else None}
    return out


def adaptive_goodput_check(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Where the adaptive policy's goodput falls short of a peer's by more than 1 %."""
    by_key = {(r["replicas"], r["devices"], r["policy"]): r for r in rows}
    short = []
    for (replicas, devices, policy), row in by_key.items():
        adaptive = by_key.get((replicas, devices, "adaptive"))
        if policy == "adaptive" or adaptive is None:
            continue
        if adaptive["goodput_fps"] < 0.99 * row["goodput_fps"]:
            short.append({"replicas": replicas, "devices": devices, "peer": policy,
                          "adaptive": adaptive["goodput_fps"], "peer_goodput": row["goodput_fps"]})
    return {"met": not short, "short": short}


def plot_fleet(rows: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """goodput and p95 against fleet size per replica count; the adaptive fleet's offload
    share over time at the largest size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    replicas = sorted({r["replicas"] for r in rows})
    for key, label in (("goodput_fps", "goodput (frames/s at full accuracy)"),
                       ("p95_response_ms", "p95 response (ms, from arrival)")):
        fig, axes = plt.subplots(1, len(replicas), figsize=(5 * len(replicas), 4), squeeze=False)
        for ax, count in zip(axes[0], replicas, strict=True):
            for policy in sorted({r["policy"] for r in rows}):
                group = sorted((r for r in rows if r["replicas"] == count
                                and r["policy"] == policy), key=lambda r: r["devices"])
                ax.plot([r["devices"] for r in group], [r[key] for r in group], marker="o",
                        label=policy, lw=2 if policy == "adaptive" else 1)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_title(f"{count} replica(s)")
            ax.set_xlabel("devices")
            ax.set_ylabel(label)
        axes[0][0].legend(fontsize=7)
        fig.tight_layout()
        paths.append(out_dir / f"{key}.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths + [plot_shares(rows, out_dir)]


def plot_shares(rows: list[dict[str, Any]], out_dir: Path) -> Path:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    largest = max(r["devices"] for r in rows)
    for row in rows:
        if row["policy"] == "adaptive" and row["devices"] == largest:
            windows = row["offload_share_windows"]
            ax.plot([w * WINDOW_S for w, _ in windows], [100 * s for _, s in windows],
                    label=f"{row['replicas']} replica(s)")
    ax.axvline(SETTLE_S, color="grey", ls=":")
    ax.set_xlabel("simulated s")
    ax.set_ylabel("frames finished on the edge (%), per 10 s")
    ax.set_title(f"adaptive fleet of {largest} devices")
    ax.legend()
    fig.tight_layout()
    path = out_dir / "offload_share.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
