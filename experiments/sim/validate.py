"""The simulator against the emulator, cell by cell: is it evidence?

    results/grid/grid.json (the emulated grid: each cell's scenario and every policy's
    mean response ms and placement shares)
      ─► the same scenario in the simulator (trace, offsets, device, RTT, frames, rate,
         repetitions, policies), the edge at this host's measured profile
      ─► per cell and policy: simulated ÷ emulated mean response, and the placement
         shares' largest difference in points ─► targets: within 10 % and 10 points
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tqdm import tqdm

from experiments.scenario import Scenario
from experiments.sim.cells import simulate_scenario
from experiments.sim.edge import EdgeProfile
from splitnet.zoo import checkpoint_for, load_card

RESPONSE_TOLERANCE = 0.10  # simulated mean response within 10 % of the emulator's
SHARE_TOLERANCE = 0.10  # placement shares within 10 points


def scenario_of(cell: dict[str, Any]) -> Scenario:
    data = dict(cell["scenario"])
    data["policies"] = tuple(data["policies"])
    if data.get("busy") is not None:
        data["busy"] = tuple(data["busy"])
    return Scenario(**data)


def compare_cell(cell: dict[str, Any], simulated: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per policy: emulated and simulated mean and p95 response, their ratio, the shares."""
    rows: dict[str, Any] = {}
    for policy, sim in simulated.items():
        emulated = cell["policies"].get(policy)
        if emulated is None:
            continue
        shares_e, shares_s = emulated["placements"], sim["placements"]
        share_gap = max(abs(shares_e.get(p, 0.0) - shares_s.get(p, 0.0))
                        for p in ("local", "split", "offload-input"))
        ratio = sim["mean_response_ms"] / emulated["mean_response_ms"]
        rows[policy] = {
            "emulated_mean_ms": emulated["mean_response_ms"],
            "simulated_mean_ms": sim["mean_response_ms"],
            "emulated_p95_ms": emulated.get("p95_response_ms"),
            "simulated_p95_ms": sim["p95_response_ms"],
            "ratio": ratio, "emulated_shares": shares_e, "simulated_shares": shares_s,
            "share_gap_points": 100 * share_gap,
            "within": abs(ratio - 1) <= RESPONSE_TOLERANCE and share_gap <= SHARE_TOLERANCE}
    return rows


def validate(grid_json: Path, profile: EdgeProfile,
             models: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Every cell of the emulated grid in the simulator (see the module)."""
    grid = json.loads(grid_json.read_text())
    out: dict[str, Any] = {"grid": str(grid_json), "profile": profile.name, "models": {}}
    for model, entry in grid["models"].items():
        if models and model not in models:
            continue
        card = load_card(checkpoint_for(model))
        cells = {}
        for cell in tqdm(entry["cells"], desc=f"simulating {model}'s cells", unit="cell"):
            scenario = scenario_of(cell)
            policies = [p for p in scenario.policies if p in cell["policies"]]
            cells[scenario.name] = compare_cell(
                cell, simulate_scenario(scenario, card, profile, policies))
        rows = [r for c in cells.values() for r in c.values()]
        out["models"][model] = {
            "cells": cells,
            "within": sum(r["within"] for r in rows), "rows": len(rows),
            "worst_ratio": max(rows, key=lambda r: abs(r["ratio"] - 1))["ratio"]
            if rows else None,
            "worst_share_gap_points": max(r["share_gap_points"] for r in rows) if rows else None}
    return out


def markdown(result: dict[str, Any]) -> str:
    lines = [f"# Simulator against the emulated grid ({result['grid']}), edge profile "
             f"{result['profile']}", ""]
    for model, entry in result["models"].items():
        lines += [f"## {model}: {entry['within']} of {entry['rows']} cell × policy rows "
                  f"within {RESPONSE_TOLERANCE:.0%} and {SHARE_TOLERANCE * 100:.0f} points; "
                  f"worst ratio {entry['worst_ratio']:.2f}, worst share gap "
                  f"{entry['worst_share_gap_points']:.0f} points", "",
                  "| cell | policy | emulated ms | simulated ms | ratio | emulated p95 | "
                  "simulated p95 | share gap (points) |", "|---|---|---:|---:|---:|---:|---:|---:|"]
        for cell, rows in entry["cells"].items():
            for policy, r in rows.items():
                p95 = r["emulated_p95_ms"]
                lines.append(f"| {cell} | {policy} | {r['emulated_mean_ms']:.0f} | "
                             f"{r['simulated_mean_ms']:.0f} | {r['ratio']:.2f} | "
                             f"{'–' if p95 is None else f'{p95:.0f}'} | "
                             f"{r['simulated_p95_ms']:.0f} | {r['share_gap_points']:.0f} |")
        lines.append("")
    return "\n".join(lines)
