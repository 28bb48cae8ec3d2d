"""``python -m experiments``: replay real uplink traces against emulated devices and compare
every policy side by side. See ``python -m experiments run --help``."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from experiments.devices import PROFILES, host_times
from experiments.netns import KernelLinkUnavailableError
from experiments.oracle import REPLAY_POLICY, oracle, placement_of
from experiments.report import (
    PLACEMENTS,
    build_summary,
    combine_repetitions,
    plot,
    write_tables,
)
from experiments.runner import (
    PolicyRun,
    StoppedError,
    edge_servers,
    run_scenario,
    stop_on_signals,
)
from experiments.scenario import (
    GRID_IMAGES,
    GRID_LANES,
    GRID_REPETITIONS,
    Scenario,
    ScenarioError,
    grid,
    load_scenario,
)
from experiments.traces import Trace, TraceError
from splitnet.checkpoint import CheckpointError
from splitnet.config import Config
from splitnet.workloads import default_cache_dir, stream_labels
from splitnet.zoo import DEFAULT_MODEL, SMALL_MODEL, checkpoint_for, list_zoo, load_card

GRID_MINUTES = 90  # the whole grid, both models, in one process (docs/targets.md)
JSON_FIELDS = ("accuracy", "mean_latency_ms", "ci95_latency_ms", "p95_latency_ms",
               "bytes_per_inference", "energy_mj_per_inference", "deadline_miss_rate",
               "fallbacks", "lost", "placements", "switches")


def run_one(scenario: Scenario, out_dir: Path, checkpoint: Path,
            show_progress: bool = True, edges: Sequence[int] = ()) -> dict[str, Any]:
    """Run, summarize, tabulate and plot one scenario (on the edge servers at ``edges``
    when there are enough of them); returns the summary."""
    import numpy as np

    card = load_card(checkpoint)
    labels = stream_labels(card.arch, cache_dir=default_cache_dir())
    started = time.monotonic()
    trace = Trace.load(scenario.trace, scenario.scale)
    predicted: dict[str, Any] = {}

    def predict(runs: dict[str, PolicyRun]) -> dict[int, str]:
        """The oracle from the policies run so far; its choices are then replayed."""
        all_records = [r for run in runs.values() for r in run.records]
        reference = runs.get("adaptive") or next(iter(runs.values()))
        predicted.update(oracle(card, trace, scenario.trace_start_s, scenario.rtt_ms,
                                reference.records, all_records,
                                PROFILES[scenario.device].power, scenario.accuracy_floor,
                                scenario.battery))
        schedule: dict[int, str] = predicted["schedule"]
        return schedule

    runs = run_scenario(scenario, out_dir, checkpoint, show_progress, replay=predict,
                        edges=edges)
    if not predicted:
        predict({k: v for k, v in runs.items() if k != REPLAY_POLICY})
    oracle_row = {k: v for k, v in predicted.items() if k != "schedule"}
    oracle_row["accuracy_expected"] = oracle_row["accuracy"]
    oracle_row.update(deadline_miss_rate=None, fallbacks=0, lost=0)
    summary = build_summary(scenario, runs, labels, oracle_row)
    summary["run_seconds"] = time.monotonic() - started
    duration = max([scenario.images / scenario.rate_hz]
                   + [r["t"] for run in runs.values() for r in run.records])
    times = np.arange(0, math.ceil(duration) + 1)
    capacity = np.array([trace.capacity_bps((scenario.trace_start_s + t) * 1000,
                                            (scenario.trace_start_s + t + 1) * 1000)
                         for t in times])
    summary["plots"] = [str(p) for p in plot(summary, runs, out_dir, (times, capacity))]
    write_tables(summary, out_dir)
    return summary


def run_repeated(scenario: Scenario, out_dir: Path, checkpoint: Path,
                 edges: Sequence[int] = ()) -> dict[str, Any]:
    """``run_one`` once per repetition (``out_dir/repN``), combined into one summary; the
    repetitions share edge servers (``edges``, or their own, started once)."""
    if scenario.repetitions == 1:
        return run_one(scenario, out_dir, checkpoint, edges=edges)
    if len(edges) < scenario.lanes and scenario.link == "userspace":
        with edge_servers(checkpoint, scenario.lanes) as ports:
            return run_repeated(scenario, out_dir, checkpoint, ports)
    summaries = []
    for index in range(scenario.repetitions):
        print(f"-- repetition {index + 1}/{scenario.repetitions}", file=sys.stderr)
        summaries.append(run_one(scenario.repetition(index), out_dir / f"rep{index + 1}",
                                 checkpoint, edges=edges))
    summary = combine_repetitions(scenario, summaries)
    write_tables(summary, out_dir)
    return summary


def run_streams(scenario: Scenario, out_dir: Path, checkpoint: Path, fps: float,
                seconds: float) -> dict[str, Any]:
    """Every policy but the replay on a frame stream; writes and returns the table."""
    scenario = scenario.with_options(
        policies=[p for p in scenario.policies if p != REPLAY_POLICY])
    runs = run_scenario(scenario, out_dir, checkpoint, stream=(fps, seconds))
    labels = stream_labels(load_card(checkpoint).arch, cache_dir=default_cache_dir())
    rows: dict[str, Any] = {}
    for name, run in runs.items():
        stats = run.stream[0] if run.stream else {}
        counts = Counter(placement_of(Config.parse(r["config"])) for r in run.records)
        shares = {p: counts[p] / max(len(run.records), 1) for p in PLACEMENTS}
        rows[name] = {**{k: stats.get(k) for k in (
            "fps_sustained", "drop_rate", "p50_latency_ms", "p95_latency_ms", "answered",
            "dropped", "unsustainable_plans")},
            "accuracy": float(np.mean([r["label"] == labels[r["index"]]
                                       for r in run.records])) if run.records else None,
            "placements": shares}
    lines = [f"## {scenario.name}: {fps:g} fps for {seconds:g} s, {scenario.trace}, RTT "
             f"{scenario.rtt_ms:g} ms, {scenario.device}; pipelined, newest frame wins", "",
             "| policy | fps sustained | drop rate | p50 ms | p95 ms | acc | "
             "local / split / input (%) |", "|---|---|---|---|---|---|---|"]
    for name, row in sorted(rows.items(), key=lambda kv: -(kv[1]["fps_sustained"] or 0)):
        if row["fps_sustained"] is None or row["accuracy"] is None:
            lines.append(f"| {name} | no stream (its device worker failed: see above) "
                         "| | | | | |")
            continue
        share = " / ".join(f"{100 * row['placements'][p]:.0f}" for p in PLACEMENTS)
        lines.append(f"| {name} | {row['fps_sustained']:.1f} | {row['drop_rate']:.2f} | "
                     f"{row['p50_latency_ms']:.0f} | {row['p95_latency_ms']:.0f} | "
                     f"{row['accuracy']:.3f} | {share} |")
    (out_dir / "summary.md").write_text("\n".join(lines) + "\n")
    table = {"scenario": scenario.to_dict() | {"fps": fps, "seconds": seconds},
             "policies": rows}
    (out_dir / "summary.json").write_text(json.dumps(table, indent=1) + "\n")
    return table


def add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL, choices=list_zoo(),
                        help="which zoo model the devices and the edge run (default: "
                             "%(default)s, the camera model)")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="a checkpoint file instead of the zoo's --model")


def json_view(summary: dict[str, Any]) -> dict[str, Any]:
    """The --json object: scenario, policies, the measured oracle replay and the predicted
    oracle, and the ratios between adaptive and each."""
    rows = summary["policies"]
    return {
        "scenario": summary["scenario"],
        "policies": {name: {k: row.get(k) for k in JSON_FIELDS}
                     for name, row in rows.items() if name != REPLAY_POLICY},
        "oracle_replay": ({k: rows[REPLAY_POLICY].get(k) for k in JSON_FIELDS}
                          if REPLAY_POLICY in rows else None),
        "oracle": {k: summary["oracle"].get(k) for k in JSON_FIELDS},
        "adaptive_to_oracle_replay_latency": summary["adaptive_to_oracle_replay_latency"],
        "adaptive_to_oracle_latency": summary["adaptive_to_oracle_latency"],
        "adaptive_to_oracle_energy": summary["adaptive_to_oracle_energy"],
        "bandwidth_estimate_median_error": summary["bandwidth_estimate_median_error"],
        "device_emulation": summary["device_emulation"].get("method"),
        "repetitions": summary.get("repetitions", 1),
        "out_dir": str(Path(summary["plots"][0]).parent) if summary["plots"] else None,
        "run_seconds": summary["run_seconds"],
    }


def grid_targets(cells: list[dict[str, Any]]) -> dict[str, Any]:
    """Each grid target computed from the cells' data (docs/targets.md names them)."""
    policies = [p for p in cells[0]["policies"] if p != REPLAY_POLICY]
    geo = {p: math.exp(sum(math.log(max(c["policies"][p]["mean_latency_ms"], 1e-6))
                           for c in cells) / len(cells)) for p in policies}
    best = min(geo, key=lambda p: geo[p])
    replay = [c["adaptive_to_oracle_replay_latency"] for c in cells
              if c["adaptive_to_oracle_replay_latency"] is not None]
    lost = sum(row["lost"] for c in cells for row in c["policies"].values())
    errors = [c["bandwidth_estimate_median_error"] for c in cells
              if c["bandwidth_estimate_median_error"] is not None]
    peers = [p for p in policies if p != "adaptive"]
    worst_vs_peer = max((c["policies"]["adaptive"]["mean_latency_ms"]
                         / min(c["policies"][p]["mean_latency_ms"] for p in peers))
                        for c in cells) if peers and "adaptive" in policies else None
    # accuracy against the full model on the same images: the local policy's (fp32 or int8)
    gaps = [c["policies"]["local"]["accuracy"] - c["policies"]["adaptive"]["accuracy"]
            for c in cells] if {"local", "adaptive"} <= set(policies) else []
    accuracy_gap = max(gaps) if gaps else None
    # the workload exercises the choice: each placement is the oracle's best for ≥ 10 % of
    # inputs in some cell, and on a driving trace the oracle's choice changes over time
    best_share = {p: max(c["oracle"]["placements"].get(p, 0.0) for c in cells)
                  for p in PLACEMENTS}
    driving_switches = [c["oracle"]["switches"] for c in cells
                        if "driving" in c["scenario"]["trace"]]
    gain_vs_local_exit = (geo["local-exit"] / geo["adaptive"]
                          if {"local-exit", "adaptive"} <= set(geo) else None)
    return {
        "oracle_placement_best_share": {
            "measured": best_share, "target": 0.10,
            "met": all(v >= 0.10 for v in best_share.values())},
        "oracle_switches_on_driving_trace": {
            "measured": driving_switches, "met": any(n > 0 for n in driving_switches)},
        "geomean_latency_local_exit_over_adaptive": {"measured": gain_vs_local_exit},
        "lost_inputs": {"measured": lost, "target": 0, "met": lost == 0},
        "adaptive_over_oracle_replay_worst_cell": {
            "measured": max(replay) if replay else None, "target": 1.10,
            "met": bool(replay) and len(replay) == len(cells) and max(replay) <= 1.10},
        "geomean_latency_ms": {"measured": geo, "best": best, "met": best == "adaptive"},
        "adaptive_over_best_peer_worst_cell": {
            "measured": worst_vs_peer, "target": 1.05,
            "met": worst_vs_peer is not None and worst_vs_peer <= 1.05},
        "accuracy_points_below_local_worst_cell": {
            "measured": None if accuracy_gap is None else 100 * accuracy_gap, "target": 1.5,
            "met": accuracy_gap is not None and accuracy_gap <= 0.015},
        # a cell scores 150 inputs (0.67 points each); over the grid, every cell's inputs
        "accuracy_points_below_local_all_cells": {
            "measured": 100 * float(np.mean(gaps)) if gaps else None},
        "bandwidth_median_relative_error_worst_cell": {
            "measured": max(errors) if errors else None, "target": 0.35,
            "met": bool(errors) and len(errors) == len(cells) and max(errors) <= 0.35},
    }


def add_scenario_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("scenario options (override the scenario file)")
    group.add_argument("--trace", help="trace name in ../shared/traces or a Mahimahi file")
    group.add_argument("--scale", type=float, help="trace scale, e.g. 0.05 for IoT uplinks")
    group.add_argument("--trace-start-s", type=float, help="where in the trace to start")
    group.add_argument("--rtt-ms", type=float, help="fixed round-trip time")
    group.add_argument("--loss", type=float, help="per-packet loss probability")
    group.add_argument("--device", choices=sorted(PROFILES), help="device profile")
    group.add_argument("--n", type=int, dest="images", help="images per device")
    group.add_argument("--devices", type=int, help="number of emulated devices")
    group.add_argument("--rate-hz", type=float, help="arrivals per second per device")
    group.add_argument("--battery", type=float, help="start battery level in [0, 1]")
    group.add_argument("--deadline-ms", type=float, help="latency deadline")
    group.add_argument("--policies", type=lambda s: tuple(s.split(",")),
                       help="comma-separated, e.g. adaptive,local")
    group.add_argument("--link", choices=("userspace", "kernel"), help="link emulation mode")
    group.add_argument("--busy", type=float, nargs=3, metavar=("START_S", "END_S", "SHARE"),
                       help="a competing load takes SHARE of the device's CPU in that window")
    group.add_argument("--lanes", type=int,
                       help="policies run at a time, each with its own edge server and "
                            "link (1: one after another)")
    group.add_argument("--repetitions", type=int,
                       help="runs at successive trace offsets (means ± 95 %% over them)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m experiments",
        description="Replay real cellular uplink traces against emulated Raspberry Pis and "
                    "compare splitnet's adaptive policy with local-only, full offload, "
                    "Neurosurgeon, Edgent and a fixed BottleFit-style bottleneck, side by side.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Examples:\n"
               "  python -m experiments run                         # the default scenario\n"
               "  python -m experiments run --trace Verizon-LTE-short.up --scale 0.05 \\\n"
               "      --rtt-ms 60 --device pizero2 --n 100\n"
               "  python -m experiments run my_scenario.toml --json\n"
               "  python -m experiments grid                        # both models, 3 traces x "
               "2 devices x 2 RTTs\n"
               "  python -m experiments stream --fps 15             # a camera's frames, "
               "pipelined")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run one scenario",
                         description="Run one scenario: a TOML file, a name from "
                                     "experiments/scenarios/, or 'default'; options override it.")
    run.add_argument("scenario", nargs="?", default="default")
    add_scenario_options(run)
    run.add_argument("--out", type=Path, default=None, help="output folder (default: runs/NAME)")
    run.add_argument("--json", action="store_true", help="print one JSON object")
    add_model_options(run)
    grid_parser = sub.add_parser(
        "grid", help="run the comparison grid",
        description="Both models (each reported apart) over 3 shipped traces x 2 device "
                    "profiles (rpi4, pizero2) x 2 edge RTTs (10 ms, 40 ms), every policy "
                    f"and the oracle replay in each cell, {GRID_REPETITIONS} runs of "
                    f"{GRID_IMAGES} inputs per cell at different trace offsets, "
                    "several policies at a time (each with its own edge server: "
                    + ", ".join(f"{n} on {d}" for d, n in GRID_LANES.items()) + ").")
    grid_parser.set_defaults(images=GRID_IMAGES, repetitions=GRID_REPETITIONS)
    grid_parser.add_argument("scenario", nargs="?", default="default",
                             help="base scenario whose other settings every cell shares")
    add_scenario_options(grid_parser)
    grid_parser.add_argument("--out", type=Path, default=Path("runs/grid"))
    grid_parser.add_argument("--json", action="store_true")
    grid_parser.add_argument("--models", type=lambda s: s.split(","), default=None,
                             help=f"comma-separated zoo models (default: {DEFAULT_MODEL},"
                                  f"{SMALL_MODEL})")
    grid_parser.add_argument("--cells", type=lambda s: s.split(","), default=None,
                             metavar="PATTERNS",
                             help="run only the cells whose name holds one of these "
                                  "comma-separated strings, e.g. ATT-LTE-driving or "
                                  "pizero2-rtt10 (default: every cell)")
    stream_parser = sub.add_parser(
        "stream", help="a camera's frame stream through each policy",
        description="Each policy gets a camera's frames at a fixed rate (15 fps by default) "
                    "through the shaped link on an emulated device, pipelined (the head of "
                    "the next frame runs while the edge answers this one), the newest frame "
                    "winning: reports sustained fps, the drop rate and the latency from "
                    "capture (p50, p95) per policy. Scenario 'frame-stream' by default.")
    stream_parser.add_argument("scenario", nargs="?", default="frame-stream")
    add_scenario_options(stream_parser)
    stream_parser.add_argument("--fps", type=float, default=15.0,
                               help="the camera's frame rate (default: %(default)s)")
    stream_parser.add_argument("--seconds", type=float, default=20.0,
                               help="stream length per policy (default: %(default)s)")
    stream_parser.add_argument("--out", type=Path, default=None)
    stream_parser.add_argument("--json", action="store_true")
    add_model_options(stream_parser)
    args = parser.parse_args(argv)
    options = {k: getattr(args, k) for k in (
        "trace", "scale", "trace_start_s", "rtt_ms", "loss", "device", "images", "devices",
        "rate_hz", "battery", "deadline_ms", "policies", "link", "repetitions", "busy",
        "lanes")}
    stop_on_signals()  # a stopped run takes its edge servers and device workers with it
    try:
        base = load_scenario(args.scenario).with_options(**options)
        # this host's anchors before any device, edge or decoding runs: measured beside
        # them, the fp32 anchor's least CPU time came out 1.7x high (each run measures
        # them again, before its lanes start, and the least is kept)
        host_times()
        if args.command == "run":
            out = args.out or Path("runs") / base.name
            summary = run_repeated(base, out, args.checkpoint or checkpoint_for(args.model))
            if args.json:
                print(json.dumps(json_view(summary), indent=1))
            else:
                print((out / "summary.md").read_text())
                print("plots:", ", ".join(summary["plots"]))
            return 0
        if args.command == "stream":
            out = args.out or Path("runs") / base.name
            table = run_streams(base, out, args.checkpoint or checkpoint_for(args.model),
                                args.fps, args.seconds)
            print(json.dumps(table, indent=1) if args.json else
                  (out / "summary.md").read_text())
            return 0
        models = args.models or [DEFAULT_MODEL, SMALL_MODEL]
        result: dict[str, Any] = {"models": {}}
        report = []
        started = time.monotonic()
        chosen = grid(base, args.cells, args.lanes)
        done = 0
        for model in models:
            cells: list[dict[str, Any]] = []
            # one set of edge servers for all of this model's cells
            with edge_servers(checkpoint_for(model),
                              max(c.lanes for c in chosen) if base.link == "userspace"
                              else 0) as edges:
                for cell in chosen:
                    done += 1
                    print(f"== {model}: {cell.name} (cell {done} of "
                          f"{len(models) * len(chosen)}, "
                          f"{(time.monotonic() - started) / 60:.0f} min so far)",
                          file=sys.stderr)
                    cells.append(run_repeated(cell, args.out / model / cell.name,
                                              checkpoint_for(model), edges))
            result["models"][model] = {"cells": [json_view(c) for c in cells],
                                       "targets": grid_targets(cells)}
            report.append(f"# {model}\n\n" + "".join(
                (args.out / model / c["scenario"]["name"] / "summary.md").read_text() + "\n"
                for c in cells))
        minutes = (time.monotonic() - started) / 60
        result["grid_minutes"] = {"measured": round(minutes, 1), "target": GRID_MINUTES,
                                  "met": minutes <= GRID_MINUTES and args.cells is None
                                  and set(models) == {DEFAULT_MODEL, SMALL_MODEL}}
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "grid.json").write_text(json.dumps(result, indent=1) + "\n")
        (args.out / "grid.md").write_text("\n".join(report))
        print(json.dumps(result, indent=1) if args.json else
              (args.out / "grid.md").read_text() + json.dumps(
                  {m: r["targets"] for m, r in result["models"].items()}
                  | {"grid_minutes": result["grid_minutes"]}, indent=1))
        return 0
    except (ScenarioError, TraceError, CheckpointError, FileNotFoundError,
            KernelLinkUnavailableError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except StoppedError as stopped:
        print(f"{stopped}: its edge servers and device workers were stopped too; the "
              "records of the policies that finished are in the output folder",
              file=sys.stderr)
        return stopped.exit_code


if __name__ == "__main__":
    raise SystemExit(main())
