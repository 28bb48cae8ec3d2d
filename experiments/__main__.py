"""``python -m experiments``: replay real uplink traces against emulated devices and compare
every policy side by side. See ``python -m experiments run --help``."""

from __future__ import annotations

import argparse
import contextlib
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
    answered,
    build_summary,
    combine_repetitions,
    plot,
    return_after_load,
    write_tables,
)
from experiments.runner import (
    PolicyRun,
    StoppedError,
    WorkerPool,
    edge_servers,
    run_scenario,
    stop_on_signals,
    worker_pools,
)
from experiments.scenario import (
    GRID_IMAGES,
    GRID_LANES,
    GRID_REPETITIONS,
    SMALL_MODEL_CELLS,
    Scenario,
    ScenarioError,
    grid,
    load_scenario,
)
from experiments.traces import Trace, TraceError
from splitnet.checkpoint import CheckpointError
from splitnet.config import Config
from splitnet.data.eval_sets import default_cache_dir, stream_labels
from splitnet.provenance import RESULTS_DIR, command_line, finish_results, start_results
from splitnet.zoo import DEFAULT_MODEL, SMALL_MODEL, checkpoint_for, list_zoo, load_card

GRID_MINUTES = 90  # the whole grid, both models, in one process (docs/targets.md)
JSON_FIELDS = ("accuracy", "mean_response_ms", "ci95_response_ms", "p50_response_ms",
               "p95_response_ms", "mean_service_ms", "answered_fps", "drop_rate",
               "bytes_per_frame", "energy_mj_per_frame", "deadline_miss_rate", "fallbacks",
               "lost", "dropped", "placements", "switches", "repetition_mean_response_ms")
_FULL_LABELS: dict[Path, dict[int, int]] = {}  # per checkpoint: frame index ─► its label


def full_model_labels(checkpoint: Path, indices: set[int]) -> dict[int, int]:
    """What the whole network (fp32) answers for these frames of the stream: the label an
    answer must have to count for the per-frame bound. Cached per checkpoint."""
    import torch

    from splitnet.data.eval_sets import stream_images
    from splitnet.preprocess import images_to_input
    from splitnet.zoo import load_pretrained

    known = _FULL_LABELS.setdefault(checkpoint, {})
    missing = sorted(indices - set(known))
    if missing:
        model = load_pretrained(checkpoint).model
        images = stream_images(model.spec.name, cache_dir=default_cache_dir()).images
        with torch.no_grad():
            for start in range(0, len(missing), 32):
                batch = missing[start:start + 32]
                logits = model.backbone(images_to_input(images[batch]))
                known.update(zip(batch, logits.argmax(1).tolist(), strict=True))
    return {i: known[i] for i in indices}


def run_one(scenario: Scenario, out_dir: Path, checkpoint: Path,
            show_progress: bool = True, edges: Sequence[int] = (),
            pools: Sequence[WorkerPool] = (), plots: bool = True) -> dict[str, Any]:
    """Run, summarize, tabulate (and plot) one scenario (on the edge servers at ``edges``
    when there are enough of them); returns the summary. The records end up gzipped."""
    card = load_card(checkpoint)
    labels = stream_labels(card.arch, cache_dir=default_cache_dir())
    started = time.monotonic()
    trace = Trace.load(scenario.trace, scenario.scale)

    def predict(runs: dict[str, PolicyRun]) -> dict[int, str]:
        """The predicted best from the policies run so far; its choices are then replayed."""
        all_records = [r for run in runs.values() for r in answered(run.records)]
        reference = runs.get("adaptive") or next(iter(runs.values()))
        predicted = oracle(card, trace, scenario.trace_start_s, scenario.rtt_ms,
                           answered(reference.records), all_records,
                           PROFILES[scenario.device].power, scenario.accuracy_floor,
                           scenario.battery)
        schedule: dict[int, str] = predicted["schedule"]
        return schedule

    runs = run_scenario(scenario, out_dir, checkpoint, show_progress, replay=predict,
                        edges=edges, pools=pools)
    indices = {r["index"] for run in runs.values() for r in run.records}
    summary = build_summary(scenario, runs, labels, full_model_labels(checkpoint, indices))
    summary["run_seconds"] = time.monotonic() - started
    duration = max([scenario.images / scenario.rate_hz]
                   + [r["t"] for run in runs.values() for r in run.records])
    times = np.arange(0, math.ceil(duration) + 1)
    capacity = np.array([trace.capacity_bps((scenario.trace_start_s + t) * 1000,
                                            (scenario.trace_start_s + t + 1) * 1000)
                         for t in times])
    summary["plots"] = [str(p) for p in plot(summary, runs, out_dir, (times, capacity))] \
        if plots else []
    compress_records(out_dir / "records.jsonl")
    if scenario.busy is not None and {"adaptive", "local-exit"} <= set(runs):
        summary["return_after_load"] = return_after_load(scenario.busy, runs["adaptive"],
                                                         runs["local-exit"])
    write_tables(summary, out_dir)
    return summary


def compress_records(path: Path) -> None:
    """records.jsonl ─► records.jsonl.gz (a grid's records are tens of MB as text)."""
    import gzip
    import shutil

    if path.is_file():
        with path.open("rb") as source, gzip.open(path.with_suffix(".jsonl.gz"), "wb") as out:
            shutil.copyfileobj(source, out)
        path.unlink()


def run_repeated(scenario: Scenario, out_dir: Path, checkpoint: Path,
                 edges: Sequence[int] = (), pools: Sequence[WorkerPool] = (),
                 plots: bool = True) -> dict[str, Any]:
    """``run_one`` once per repetition (``out_dir/repN``), combined into one summary; the
    repetitions share edge servers and served device workers (``edges`` and ``pools``, or
    their own, started once)."""
    if scenario.link == "userspace" and (len(edges) < scenario.lanes
                                         or len(pools) < scenario.lanes):
        with contextlib.ExitStack() as stack:
            if len(edges) < scenario.lanes:
                edges = stack.enter_context(edge_servers(checkpoint, scenario.lanes))
            if len(pools) < scenario.lanes:
                pools = stack.enter_context(worker_pools(scenario.lanes))
            return run_repeated(scenario, out_dir, checkpoint, edges, pools, plots)
    if scenario.repetitions == 1:
        return run_one(scenario, out_dir, checkpoint, edges=edges, pools=pools, plots=plots)
    summaries = []
    for index in range(scenario.repetitions):
        print(f"-- repetition {index + 1}/{scenario.repetitions}", file=sys.stderr)
        summaries.append(run_one(scenario.repetition(index), out_dir / f"rep{index + 1}",
                                 checkpoint, edges=edges, pools=pools, plots=plots))
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


def run_battery(scenario: Scenario, out_dir: Path, checkpoint: Path,
                levels: tuple[float, float] = (1.0, 0.3)) -> dict[str, Any]:
    """The adaptive policy at full charge and at a low one, on the same frames and the same
    stretch of trace (paired repetitions): its energy and response time per answered
    frame at the low charge ÷ at full charge, and its accuracy at both."""
    from experiments.statistics import paired_ratio, verdict

    full, low = (run_repeated(scenario.with_options(battery=level, policies=("adaptive",)),
                              out_dir / f"battery-{level:g}", checkpoint)
                 for level in levels)
    a, b = full["policies"]["adaptive"], low["policies"]["adaptive"]
    energy = paired_ratio(b["repetition_energy_mj_per_frame"],
                          a["repetition_energy_mj_per_frame"])
    response = paired_ratio(b["repetition_mean_response_ms"], a["repetition_mean_response_ms"])
    card = load_card(checkpoint)
    floor = scenario.accuracy_floor or card.full.accuracy - 0.01
    result = {
        "scenario": scenario.to_dict(), "levels": list(levels),
        "energy_mj_per_frame": {f"{levels[0]:g}": a["energy_mj_per_frame"],
                                f"{levels[1]:g}": b["energy_mj_per_frame"]},
        "mean_response_ms": {f"{levels[0]:g}": a["mean_response_ms"],
                             f"{levels[1]:g}": b["mean_response_ms"]},
        "accuracy": {f"{levels[0]:g}": a["accuracy"], f"{levels[1]:g}": b["accuracy"]},
        "placements": {f"{levels[0]:g}": a["placements"], f"{levels[1]:g}": b["placements"]},
        "energy_low_over_full": {**energy.as_dict(), "target": 0.85,
                                 "verdict": verdict(energy, 0.85)},
        "response_low_over_full": response.as_dict(),
        "accuracy_floor": floor, "accuracy_floor_kept": b["accuracy"] >= floor,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "battery.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


def add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL, choices=list_zoo(),
                        help="which zoo model the devices and the edge run (default: "
                             "%(default)s, the camera model)")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="a checkpoint file instead of the zoo's --model")


def json_view(summary: dict[str, Any]) -> dict[str, Any]:
    """The --json object: scenario, every policy's row, adaptive ÷ each (paired over the
    repetitions, with intervals) and ÷ the per-frame bound."""
    rows = summary["policies"]
    return {
        "scenario": summary["scenario"],
        "policies": {name: {k: row.get(k) for k in JSON_FIELDS} for name, row in rows.items()},
        "adaptive_over": summary.get("ratios", {}),
        "bound": summary.get("bound"),
        "bandwidth_estimate_median_error": summary["bandwidth_estimate_median_error"],
        "return_after_load": summary.get("return_after_load"),
        "device_emulation": summary["device_emulation"].get("method"),
        "repetitions": summary.get("repetitions", 1),
        "out_dir": str(Path(summary["plots"][0]).parent) if summary["plots"] else None,
        "run_seconds": summary["run_seconds"],
    }


def strongest_variants(cells: list[dict[str, Any]]) -> dict[str, str]:
    """Per peer, its variant (equal engineering, or its paper's) with the lower geometric
    mean response time over ``cells``: what the headline compares against."""
    from device_client.planner import PEERS

    geo = geomeans(cells)
    out = {}
    for peer in (*PEERS, "local", "local-exit"):
        variants = [v for v in (peer, f"{peer}-paper") if v in geo]
        if variants:
            out[peer] = min(variants, key=geo.__getitem__)
    return out


def geomeans(cells: list[dict[str, Any]]) -> dict[str, float]:
    """Each policy's geometric mean of mean response time over the cells."""
    names = [p for p in cells[0]["policies"] if all(p in c["policies"] for c in cells)]
    return {p: math.exp(sum(math.log(max(c["policies"][p]["mean_response_ms"], 1e-6))
                            for c in cells) / len(cells)) for p in names}


def grid_targets(cells: list[dict[str, Any]]) -> dict[str, Any]:
    """Each grid target from the cells' data (docs/targets.md names them), every ratio a
    paired one over repetitions with its interval, verdicts from the interval."""
    from experiments.statistics import paired_ratio, pooled_ratio, verdict

    geo = geomeans(cells)
    strongest = strongest_variants(cells)
    best_peer = min(strongest.values(), key=geo.__getitem__)

    def reps(cell: dict[str, Any], policy: str) -> list[float]:
        values: list[float] = cell["policies"][policy]["repetition_mean_response_ms"]
        return values

    headline = pooled_ratio([(reps(c, "adaptive"), reps(c, best_peer)) for c in cells])
    per_cell: dict[str, dict[str, Any]] = {}
    for c in cells:
        best_here = min(strongest.values(), key=lambda p: c["policies"][p]["mean_response_ms"])
        ratio = paired_ratio(reps(c, "adaptive"), reps(c, best_here))
        per_cell[c["scenario"]["name"]] = {"best_peer": best_here, **ratio.as_dict(),
                                           "lower_end": ratio.low or ratio.value}
    worse = [name for name, r in per_cell.items() if float(r["lower_end"]) > 1.0]
    ablation = pooled_ratio([(reps(c, "adaptive"), reps(c, "adaptive-v0")) for c in cells]) \
        if "adaptive-v0" in geo else None
    lost = sum(row["lost"] for c in cells for row in c["policies"].values())
    dropped = {p: sum(c["policies"][p]["dropped"] for c in cells) for p in geo}
    errors = [c["bandwidth_estimate_median_error"] for c in cells
              if c["bandwidth_estimate_median_error"] is not None]
    bound = {c["scenario"]["name"]: (c.get("bound") or {}).get("ratio") for c in cells}
    gaps = [c["policies"]["local"]["accuracy"] - c["policies"]["adaptive"]["accuracy"]
            for c in cells if {"local", "adaptive"} <= set(c["policies"])]
    shares = {c["scenario"]["name"]: c["policies"]["adaptive"]["placements"] for c in cells}
    return {
        "headline_adaptive_over_best_peer": {
            "best_peer": best_peer, **headline.as_dict(), "target": 0.85,
            "verdict": verdict(headline, 0.85)},
        "no_cell_worse_than_its_best_peer": {
            "cells": per_cell, "worse": worse, "met": not worse},
        "adaptive_over_adaptive_v0": None if ablation is None else ablation.as_dict(),
        "adaptive_over_per_frame_bound": bound,
        "geomean_response_ms": geo,
        "strongest_variants": strongest,
        "adaptive_placements": shares,
        "lost_frames": {"measured": lost, "target": 0, "met": lost == 0},
        "dropped_frames": dropped,
        "accuracy_points_below_local_worst_cell": {
            "measured": 100 * max(gaps) if gaps else None, "target": 1.5,
            "met": bool(gaps) and max(gaps) <= 0.015},
        "bandwidth_median_relative_error_worst_cell": {
            "measured": max(errors) if errors else None},
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
        description="The camera model over 4 shipped traces, each from an offset no "
                    "constant or scenario was chosen on (held out), x 2 device profiles "
                    "(rpi4, pizero2) x 2 edge RTTs (10 ms, 40 ms); the small model on one "
                    "cell per trace. Every policy in each cell, both variants of each "
                    f"peer, {GRID_REPETITIONS} paired runs of {GRID_IMAGES} camera frames "
                    "at 10 a second per cell at successive offsets, several policies at a "
                    "time (each with its own edge server: "
                    + ", ".join(f"{n} on {d}" for d, n in GRID_LANES.items()) + "). "
                    "Reports response times from arrival, paired ratios with 95 % "
                    "intervals, the per-frame bound, and the grid's targets.")
    grid_parser.set_defaults(images=GRID_IMAGES, repetitions=GRID_REPETITIONS)
    grid_parser.add_argument("scenario", nargs="?", default="default",
                             help="base scenario whose other settings every cell shares")
    add_scenario_options(grid_parser)
    grid_parser.add_argument("--out", type=Path, default=RESULTS_DIR / "grid",
                             help="results folder (default: %(default)s)")
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
    battery_parser = sub.add_parser(
        "battery", help="the adaptive policy at full charge and at 30 %%, paired",
        description="Runs the adaptive policy on a scenario ('low-battery' by default) at "
                    "full charge and at a low one (--low, 0.3 by default), on the same frames "
                    "and stretch of trace in every repetition, and reports its energy and "
                    "response time per answered frame at the low charge over full charge, "
                    "with 95 %% intervals, and its accuracy at both.")
    battery_parser.add_argument("scenario", nargs="?", default="low-battery")
    add_scenario_options(battery_parser)
    battery_parser.add_argument("--low", type=float, default=0.3,
                                help="the low charge (default: %(default)s)")
    battery_parser.add_argument("--out", type=Path, default=None)
    add_model_options(battery_parser)
    args = parser.parse_args(argv)
    stop_on_signals()  # a stopped run takes its edge servers and device workers with it
    out_dir = args.out or (RESULTS_DIR / f"{args.command}-{args.scenario}"
                           if args.command != "grid" else RESULTS_DIR / "grid")
    args.out = out_dir
    meta = start_results(out_dir, command_line("experiments", argv))
    try:
        return _main(args, meta)
    finally:
        finish_results(out_dir, meta)


def _main(args: argparse.Namespace, meta: dict[str, Any]) -> int:
    options = {k: getattr(args, k) for k in (
        "trace", "scale", "trace_start_s", "rtt_ms", "loss", "device", "images", "devices",
        "rate_hz", "battery", "deadline_ms", "policies", "link", "repetitions", "busy",
        "lanes")}
    try:
        base = load_scenario(args.scenario).with_options(**options)
        # this host's anchors before any device, edge or decoding runs: measured beside
        # them, the fp32 anchor's least CPU time came out 1.7x high (each run measures
        # them again, before its lanes start, and the least is kept)
        host_times()
        if args.command == "run":
            out = args.out
            summary = run_repeated(base, out, args.checkpoint or checkpoint_for(args.model))
            if args.json:
                print(json.dumps(json_view(summary), indent=1))
            else:
                print((out / "summary.md").read_text())
                print("plots:", ", ".join(summary["plots"]))
            return 0
        if args.command == "battery":
            out = args.out
            trade = run_battery(base, out, args.checkpoint or checkpoint_for(args.model),
                                (1.0, args.low))
            print(json.dumps(trade, indent=1))
            return 0
        if args.command == "stream":
            out = args.out
            table = run_streams(base, out, args.checkpoint or checkpoint_for(args.model),
                                args.fps, args.seconds)
            print(json.dumps(table, indent=1) if args.json else
                  (out / "summary.md").read_text())
            return 0
        models = args.models or [DEFAULT_MODEL, SMALL_MODEL]
        result: dict[str, Any] = {"models": {}}
        report = []
        started = time.monotonic()
        done = 0
        for model in models:
            chosen = grid(base, args.cells or (list(SMALL_MODEL_CELLS)
                                               if model == SMALL_MODEL else None), args.lanes)
            cells: list[dict[str, Any]] = []
            # one set of edge servers for all of this model's cells
            lanes = max(c.lanes for c in chosen) if base.link == "userspace" else 0
            with edge_servers(checkpoint_for(model), lanes) as edges, \
                    worker_pools(lanes) as pools:
                for cell in chosen:
                    done += 1
                    print(f"== {model}: {cell.name} (cell {done}, "
                          f"{(time.monotonic() - started) / 60:.0f} min so far)",
                          file=sys.stderr)
                    cells.append(run_repeated(cell, args.out / model / cell.name,
                                              checkpoint_for(model), edges, pools,
                                              plots=False))
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
