"""``python -m experiments.sim``: the simulator's commands (see ``--help``).

    validate  the simulator on the emulated grid's cells ─► results/sim-validation/
    profiles  the grid at three edge speeds ──────────────► results/sim-profiles/
    fleet     1-1,000 devices on 1, 2, 4 replicas ────────► results/sim-fleet-<profile>/
    speed     one simulated hour of 1,000 devices, timed ─► results/sim-speed/
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from experiments.sim.edge import HOST_PROFILE, profiles
from splitnet.provenance import RESULTS_DIR, command_line, finish_results, start_results
from splitnet.zoo import DEFAULT_MODEL, checkpoint_for, load_card

SPEED_TARGET_MINUTES = 10.0


def _validate(args: argparse.Namespace) -> dict[str, Any]:
    from experiments.sim.validate import markdown, validate

    result = validate(args.grid, profiles()["host"], tuple(args.models) if args.models else None)
    (args.out / "validation.md").write_text(markdown(result))
    return result


def _profiles(args: argparse.Namespace) -> dict[str, Any]:
    from experiments.sim.profiles import markdown, profile_grid

    chosen = [p for name, p in profiles().items() if name in args.profiles]
    results = [profile_grid(p, args.model, args.cells) for p in chosen]
    (args.out / "profiles.md").write_text(markdown(results))
    return {"profiles": results}


def _fleet(args: argparse.Namespace) -> dict[str, Any]:
    from experiments.sim.fleet import adaptive_goodput_check, knees, plot_fleet, sweep

    rows = sweep(load_card(checkpoint_for(args.model)), profiles()[args.profile],
                 args.policies, args.devices, args.replicas, args.seconds)
    plots = plot_fleet(rows, args.out)
    spreads = {r["replicas"]: r["offload_share_spread_settled"] for r in rows
               if r["policy"] == "adaptive" and r["devices"] == max(args.devices)}
    return {"rows": rows, "knees": knees(rows), "adaptive_goodput": adaptive_goodput_check(rows),
            "adaptive_offload_share_spread_at_largest": spreads,
            "no_herding": {"target_points": 10, "measured_points": {
                k: None if v is None else 100 * v for k, v in spreads.items()},
                "met": all(v is not None and v <= 0.10 for v in spreads.values())},
            "plots": [str(p) for p in plots]}


def _speed(args: argparse.Namespace) -> dict[str, Any]:
    from experiments.sim.fleet import run_fleet

    started = time.perf_counter()
    row = run_fleet(load_card(checkpoint_for(args.model)), profiles()[args.profile],
                    "adaptive", args.devices, args.replicas, args.seconds)
    minutes = (time.perf_counter() - started) / 60
    row.pop("offload_share_windows")
    return {"run": row, "wall_minutes": minutes, "target_minutes": SPEED_TARGET_MINUTES,
            "met": minutes <= SPEED_TARGET_MINUTES and args.devices >= 1000
            and args.seconds >= 3600}


COMMANDS = {"validate": _validate, "profiles": _profiles, "fleet": _fleet, "speed": _speed}


def parser() -> argparse.ArgumentParser:
    from experiments.sim.fleet import FLEET_POLICIES, FLEET_REPLICAS, FLEET_SIZES

    top = argparse.ArgumentParser(
        prog="python -m experiments.sim",
        description="A discrete-event simulator that drives the device's own planner and "
                    "estimators in simulated time over the real traces, with the edge's "
                    "queue and batching rules over a measured or published service-time "
                    "curve. Validate it against the emulated grid first; then ask what "
                    "the emulator cannot: faster edges, and fleets of up to 1,000 devices. "
                    f"The host's edge profile is {HOST_PROFILE} (python -m "
                    "experiments.bench.tail writes it).")
    sub = top.add_subparsers(dest="command", required=True)
    validate = sub.add_parser("validate", help="the simulator against the emulated grid",
                              description="Simulates every cell of an emulated grid and "
                                          "compares mean response and placement shares.")
    validate.add_argument("--grid", type=Path, default=RESULTS_DIR / "grid" / "grid.json")
    validate.add_argument("--models", nargs="+", default=None)
    edge = sub.add_parser("profiles", help="the grid at three edge speeds",
                          description="The grid's cells with the edge at this host's "
                                      "speed, a many-core CPU's and a GPU's.")
    edge.add_argument("--profiles", nargs="+", default=["host", "manycore-cpu", "gpu"])
    edge.add_argument("--cells", nargs="+", default=None, help="only cells naming these")
    fleet = sub.add_parser("fleet", help="fleets of devices sharing edge replicas",
                           description="Every policy on fleets of Pi 4s and Pi Zero 2s, "
                                       "each on its own trace offset, at one frame a second.")
    fleet.add_argument("--profile", default="host", choices=["host", "manycore-cpu", "gpu"])
    fleet.add_argument("--devices", type=int, nargs="+", default=list(FLEET_SIZES))
    fleet.add_argument("--replicas", type=int, nargs="+", default=list(FLEET_REPLICAS))
    fleet.add_argument("--policies", nargs="+", default=list(FLEET_POLICIES))
    fleet.add_argument("--seconds", type=float, default=300.0, help="simulated seconds")
    speed = sub.add_parser("speed", help="time one simulated hour of 1,000 devices",
                           description="The speed target: a simulated hour of 1,000 devices "
                                       "(adaptive policy) in at most 10 minutes here.")
    speed.add_argument("--devices", type=int, default=1000)
    speed.add_argument("--seconds", type=float, default=3600.0)
    speed.add_argument("--replicas", type=int, default=4)
    speed.add_argument("--profile", default="host", choices=["host", "manycore-cpu", "gpu"])
    for p in (validate, edge, fleet, speed):
        p.add_argument("--model", default=DEFAULT_MODEL)
        p.add_argument("--out", type=Path, default=None, help="results folder")
        p.add_argument("--json", action="store_true", help="print the JSON")
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if not HOST_PROFILE.exists():
        print(f"error: {HOST_PROFILE} is missing; run python -m experiments.bench.tail first",
              file=sys.stderr)
        return 2
    suffix = f"-{args.profile}" if args.command == "fleet" else ""
    args.out = args.out or RESULTS_DIR / f"sim-{args.command}{suffix}"
    meta = start_results(args.out, command_line("experiments.sim", argv))
    result = COMMANDS[args.command](args)
    (args.out / f"{args.command}.json").write_text(json.dumps(result, indent=1) + "\n")
    finish_results(args.out, meta)
    summary = {k: v for k, v in result.items() if k not in ("rows", "cells", "profiles")}
    print(json.dumps(result if args.json else summary, indent=1, default=str)[:20000])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
