"""The grid's cells at three edge speeds: where each placement wins when the edge is
faster than this host.

    experiments.grid's cells (traces, offsets, devices, RTTs, 5 repetitions, every policy)
      × edge profiles (host measured; many-core CPU and GPU published)
      ─► the simulator ─► per cell: every policy's mean response, the adaptive policy ÷
         its best peer (the stronger variant of each peer, as the emulated grid compares),
         ÷ the per-frame bound, and the placements of the adaptive policy and the bound
"""

from __future__ import annotations

import math
from typing import Any

from tqdm import tqdm

from device_client.planner import PEERS
from experiments.grid import GRID_IMAGES, GRID_POLICIES, GRID_REPETITIONS, grid
from experiments.scenario import load_scenario
from experiments.sim.cells import per_frame_bound, simulate_runs, summarize
from experiments.sim.edge import EdgeProfile
from splitnet.zoo import DEFAULT_MODEL, checkpoint_for, load_card

BOUND_FLOOR_POINTS = 1.5  # a bound's answer: a config within this of the whole network


def best_peer(policies: dict[str, dict[str, Any]]) -> str:
    """The peer (either variant, local and local-exit included) quickest in this cell."""
    peers = [p for name in (*PEERS, "local", "local-exit")
             for p in (name, f"{name}-paper") if p in policies]
    return min(peers, key=lambda p: policies[p]["mean_response_ms"])


def profile_grid(profile: EdgeProfile, model: str = DEFAULT_MODEL,
                 only: list[str] | None = None) -> dict[str, Any]:
    """Every grid cell at ``profile`` (see the module)."""
    card = load_card(checkpoint_for(model))
    floor = card.full.accuracy - BOUND_FLOOR_POINTS / 100
    cells: dict[str, Any] = {}
    base = load_scenario("default").with_options(images=GRID_IMAGES,
                                                 repetitions=GRID_REPETITIONS)
    for cell in tqdm(grid(base, only), desc=f"edge {profile.name}", unit="cell"):
        runs = simulate_runs(cell, card, profile, GRID_POLICIES)
        policies = {name: summarize(r) for name, r in runs.items()}
        peer = best_peer(policies)
        cells[cell.name] = {
            "policies": policies, "best_peer": peer,
            "adaptive_over_best_peer": policies["adaptive"]["mean_response_ms"]
            / policies[peer]["mean_response_ms"],
            "bound": per_frame_bound(runs, floor)}
    ratios = [c["adaptive_over_best_peer"] for c in cells.values()]
    bounds = [c["bound"]["ratio"] for c in cells.values() if c["bound"]["ratio"]]
    return {"profile": profile.name, "description": profile.description,
            "source": profile.source, "cells": cells,
            "geomean_adaptive_over_best_peer": math.exp(
                sum(math.log(r) for r in ratios) / len(ratios)),
            "worst_adaptive_over_best_peer": max(ratios),
            "geomean_adaptive_over_bound": math.exp(
                sum(math.log(r) for r in bounds) / len(bounds)) if bounds else None}


def markdown(results: list[dict[str, Any]]) -> str:
    lines = ["# The grid at three edge speeds (simulated)", ""]
    for result in results:
        lines += [f"## {result['profile']}: {result['description']}",
                  f"Source: {result['source']}. Adaptive ÷ best peer: geometric mean "
                  f"{result['geomean_adaptive_over_best_peer']:.2f}, worst cell "
                  f"{result['worst_adaptive_over_best_peer']:.2f}; ÷ per-frame bound "
                  f"{result['geomean_adaptive_over_bound'] or float('nan'):.2f}.", "",
                  "| cell | adaptive ms | best peer | its ms | adaptive ÷ peer | ÷ bound | "
                  "adaptive local / split / input % | bound local / split / input % |",
                  "|---|---:|---|---:|---:|---:|---|---|"]
        for name, c in result["cells"].items():
            adaptive = c["policies"]["adaptive"]
            mix = " / ".join(f"{100 * adaptive['placements'][p]:.0f}"
                             for p in ("local", "split", "offload-input"))
            won = " / ".join(f"{100 * c['bound']['placements'][p]:.0f}"
                             for p in ("local", "split", "offload-input"))
            bound = c["bound"]["ratio"]
            lines.append(f"| {name} | {adaptive['mean_response_ms']:.0f} | {c['best_peer']} | "
                         f"{c['policies'][c['best_peer']]['mean_response_ms']:.0f} | "
                         f"{c['adaptive_over_best_peer']:.2f} | "
                         f"{'–' if bound is None else f'{bound:.2f}'} | {mix} | {won} |")
        lines.append("")
    return "\n".join(lines)
