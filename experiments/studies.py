"""Studies built on the runner: one scenario (repeated at successive offsets), a camera's
frame stream, and the battery trade, each summarized into a results folder.

    Scenario ─► runner.run_scenario (real processes, emulated devices and links)
             ─► report.build_summary (response times, the per-frame bound, ratios)
             ─► summary.md / .csv / .json, plots, records.jsonl.gz
"""

from __future__ import annotations

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

from experiments.device_profiles import PROFILES
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
from experiments.runner import PolicyRun, WorkerPool, edge_servers, run_scenario, worker_pools
from experiments.scenario import Scenario
from experiments.traces import Trace
from splitnet.config import Config
from splitnet.data.eval_sets import default_cache_dir, stream_labels
from splitnet.zoo import load_card

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


