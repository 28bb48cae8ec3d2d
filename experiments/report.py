"""Summaries, tables and plots of one scenario's records, timed from each frame's arrival.

    records (per policy: answered and dropped frames) ──► summary row per policy:
        response time from arrival (mean ±95 % over frames, p50, p95), service time
        (secondary), answered frames per second, drop rate, accuracy over every frame (a
        dropped one scored by the last answer shown when it was dropped), bytes, energy,
        fallbacks, switches, placements; lost = frames neither answered nor dropped
    every policy's answered frames ──► the per-frame bound: each frame's quickest answer
        that any policy gave it with the whole network's label ──► adaptive ÷ bound
    ──► summary.md, summary.csv, summary.json, three PNG plots

Frames are the scenario's camera: they arrive at its rate whatever a policy does, and a
policy that is busy when a newer frame arrives drops the older one (experiments.device_worker).
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from experiments.runner import PolicyRun
from experiments.scenario import Scenario
from experiments.statistics import mean_interval, paired_ratio
from splitnet.config import Config

COLUMNS = ("accuracy", "mean_response_ms", "ci95_response_ms", "p50_response_ms",
           "p95_response_ms", "mean_service_ms", "answered_fps", "drop_rate",
           "bytes_per_frame", "energy_mj_per_frame", "deadline_miss_rate", "fallbacks",
           "switches", "lost")
PLACEMENTS = ("local", "split", "offload-input")
BOUND = "per-frame bound"


def finished_at(record: dict[str, Any]) -> str:
    """Where an answered frame was finished: on the device (LOCAL, an exit, a fallback),
    by a split's tail on the edge, or as a whole input on the edge."""
    if record["where"] != "edge":
        return "local"
    return "offload-input" if Config.parse(record["config"]).placement.value == "offload" \
        else "split"


def placement_shares(records: list[dict[str, Any]]) -> dict[str, float]:
    counts = dict.fromkeys(PLACEMENTS, 0)
    for r in records:
        counts[finished_at(r)] += 1
    return {k: v / max(len(records), 1) for k, v in counts.items()}


def answered(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if not r.get("dropped")]


def shown_labels(records: list[dict[str, Any]]) -> dict[tuple[int, int], int]:
    """For every frame, the label a camera app shows for it: its own answer, or for a
    dropped frame the last answer delivered when it was dropped (−1 if none yet)."""
    shown: dict[tuple[int, int], int] = {}
    by_device: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        by_device[r["device"]].append(r)
    for device, rows in by_device.items():
        done = sorted((r for r in rows if not r.get("dropped")), key=lambda r: r["t_end"])
        ends = [r["t_end"] for r in done]
        for r in rows:
            if not r.get("dropped"):
                shown[(device, r["index"])] = r["label"]
                continue
            last = int(np.searchsorted(ends, r["t_dropped"], side="right")) - 1
            shown[(device, r["index"])] = done[last]["label"] if last >= 0 else -1
    return shown


def summarize_policy(run: PolicyRun, labels: np.ndarray, scenario: Scenario) -> dict[str, Any]:
    """One row of the summary table."""
    frames = sorted(run.records, key=lambda r: (r["device"], r["index"]))
    done = answered(frames)
    response = np.array([r["response_ms"] for r in done]) if done else np.array([np.nan])
    service = np.array([r["total_ms"] for r in done]) if done else np.array([np.nan])
    shown = shown_labels(frames)
    correct = [label == labels[index] for (_, index), label in shown.items()]
    switches = sum(1 for a, b in zip(done, done[1:], strict=False)
                   if a["device"] == b["device"] and a["config"] != b["config"])
    # the estimator runs whenever the policy can offload (probes keep it fresh), so every
    # answered frame with a true capacity scores it; policies that never offload have none
    estimate_errors = [abs(r["bandwidth_estimate_bps"] - r["true_capacity_bps"])
                       / r["true_capacity_bps"]
                       for r in done
                       if r["true_capacity_bps"] > 0 and r["bandwidth_estimate_bps"] > 0]
    mean, half = mean_interval(response.tolist()) if done else (float("nan"), None)
    seconds = scenario.images / scenario.rate_hz
    dropped = len(frames) - len(done)
    return {
        "policy": run.policy,
        "frames": run.expected,
        "answered": len(done),
        "dropped": dropped,
        "lost": run.expected - len({(r["device"], r["index"]) for r in frames}),
        "accuracy": float(np.mean(correct)) if correct else 0.0,
        "mean_response_ms": mean,
        "ci95_response_ms": half,
        "p50_response_ms": float(np.nanpercentile(response, 50)),
        "p95_response_ms": float(np.nanpercentile(response, 95)),
        "mean_service_ms": float(np.nanmean(service)),
        "answered_fps": len(done) / (seconds * scenario.devices),
        "drop_rate": dropped / max(run.expected, 1),
        "placements": placement_shares(done),
        "bytes_per_frame": (run.bytes_up + run.bytes_down) / max(len(done), 1),
        "payload_bytes_per_frame": float(np.mean([r["bytes_sent"] for r in done]))
        if done else 0.0,
        "energy_mj_per_frame": float(np.mean([r["energy_mj"] for r in done]))
        if done else 0.0,
        "deadline_miss_rate": float(np.mean(response > scenario.deadline_ms)) if done else 0.0,
        "fallbacks": sum(bool(r["fallback"]) for r in done),
        "switches": switches,
        "offloaded": sum(r["where"] == "edge" for r in done),
        "exited_on_device": sum(r["where"] == "device-exit" for r in done),
        "bandwidth_estimate_median_error": float(np.median(estimate_errors))
        if estimate_errors else None,
    }


def per_frame_bound(runs: dict[str, PolicyRun], full_labels: dict[int, int]
                    ) -> dict[tuple[int, int], float]:
    """Each frame's quickest response from arrival that any measured policy gave it with
    the whole network's label (an answer at full accuracy)."""
    bound: dict[tuple[int, int], float] = {}
    for run in runs.values():
        for r in answered(run.records):
            if r["label"] != full_labels.get(r["index"]):
                continue
            key = (r["device"], r["index"])
            bound[key] = min(bound.get(key, float("inf")), r["response_ms"])
    return bound


def against_bound(run: PolicyRun, bound: dict[tuple[int, int], float]) -> dict[str, Any]:
    """A policy's mean response over the frames it answered that have a bound, ÷ the
    bound's mean over the same frames."""
    pairs = [(r["response_ms"], bound[(r["device"], r["index"])])
             for r in answered(run.records) if (r["device"], r["index"]) in bound]
    if not pairs:
        return {"frames": 0, "ratio": None, "bound_mean_ms": None}
    mine, best = (np.array(x) for x in zip(*pairs, strict=True))
    return {"frames": len(pairs), "ratio": float(mine.mean() / best.mean()),
            "bound_mean_ms": float(best.mean())}


def write_tables(summary: dict[str, Any], out_dir: Path) -> None:
    """summary.md, summary.csv and summary.json."""
    rows = [{"policy": name, **row} for name, row in summary["policies"].items()]
    with (out_dir / "summary.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["policy", *COLUMNS], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    (out_dir / "summary.md").write_text(markdown(summary))
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def markdown(summary: dict[str, Any]) -> str:
    scenario = summary["scenario"]
    head = ("| policy | acc | mean ms | ±95 % | p50 | p95 | service ms | fps | drop | B/frame "
            "| mJ/frame | miss | fallbk | switch | lost | local / split / input |")
    repetitions = summary.get("repetitions", 1)
    over = (f"; {repetitions} paired runs at different trace offsets, ± is the 95 % interval "
            "of the mean over them" if repetitions > 1
            else "; ± is the 95 % interval over frames")
    lines = [f"## {scenario['name']}: {scenario['trace']} ×{scenario['scale']:g}, "
             f"RTT {scenario['rtt_ms']:g} ms, {scenario['device']}, "
             f"{scenario['devices']}×{scenario['images']} frames at "
             f"{scenario['rate_hz']:g}/s, deadline {scenario['deadline_ms']:g} ms{over}", "",
             "Response time is from each frame's arrival; a frame that arrives while the "
             "device is busy waits, and is dropped if a newer one arrives first (newest "
             "wins). Accuracy counts every frame, a dropped one scored by the answer shown "
             "when it was dropped.", "", head, "|" + "---|" * 16]
    for name, row in summary["policies"].items():
        shares = row.get("placements") or {}
        mix = " / ".join(f"{100 * shares.get(p, 0):.0f}" for p in PLACEMENTS)
        lines.append("| " + " | ".join([name] + [_cell(row.get(c)) for c in COLUMNS] + [mix])
                     + " |")
    bound = summary.get("bound") or {}
    ratios = summary.get("ratios") or {}
    lines += ["", f"Per-frame bound (each frame's quickest full-accuracy answer of any policy): "
              f"mean {_cell(bound.get('bound_mean_ms'))} ms over the adaptive policy's "
              f"{bound.get('frames', 0)} frames; adaptive ÷ bound "
              f"{_cell(bound.get('ratio'))}."]
    if ratios:
        lines += ["", "Adaptive ÷ each policy, mean response time"
                  + (", geometric mean of paired repetitions [95 % interval]:"
                     if repetitions > 1 else ":"), "",
                  "| policy | adaptive ÷ policy |", "|---|---|"]
        lines += [f"| {name} | {_ratio_text(r)} |" for name, r in ratios.items()]
    lines += ["", f"Bandwidth estimate median relative error: "
              f"{_cell(summary.get('bandwidth_estimate_median_error'))}. Device emulation: "
              f"{summary.get('device_emulation', {}).get('method', '?')}. B/frame is counted "
              "at the link, both directions."]
    if summary.get("busy_window"):
        start_s, end_s, share = summary["scenario"]["busy"]
        lines += ["", f"A competing load took {100 * share:.0f} % of the device's CPU from "
                  f"{start_s:g} s to {end_s:g} s. Mean response ms, and where frames were "
                  "finished (local / split / input %), before, during and after it:", "",
                  "| policy | before | during | after |", "|---|---|---|---|"]
        for name, phases in summary["busy_window"].items():
            lines.append(f"| {name} | " + " | ".join(
                f"{_cell(p['mean_response_ms'])} ms, " + " / ".join(
                    f"{100 * p['placements'][k]:.0f}" for k in PLACEMENTS)
                if p["frames"] else "–" for p in phases.values()) + " |")
    missing = summary.get("device_emulation", {}).get("link_not_emulated")
    if missing:
        lines += ["", "Not emulated: " + "; ".join(missing) + "."]
    return "\n".join(lines) + "\n"


def _ratio_text(ratio: dict[str, Any]) -> str:
    if ratio.get("ci95_low") is None:
        return _cell(ratio["ratio"])
    return f"{ratio['ratio']:.2f} [{ratio['ci95_low']:.2f}, {ratio['ci95_high']:.2f}]"


def plot(summary: dict[str, Any], runs: dict[str, PolicyRun], out_dir: Path,
         trace_capacity: tuple[np.ndarray, np.ndarray]) -> list[Path]:
    """Latency over time (with capacity and estimate), adaptive's choices, accuracy vs bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, ax = plt.subplots(figsize=(11, 5))
    for name, run in runs.items():
        recs = sorted(answered(run.records), key=lambda r: r["t"])
        ax.plot([r["t"] for r in recs], [r["response_ms"] for r in recs], ".-", ms=3, lw=0.6,
                label=name)
    ax.set_yscale("log")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("response time from arrival (ms, log)")
    capacity_axis = ax.twinx()
    times, capacity = trace_capacity
    capacity_axis.step(times, capacity / 1e6, where="post", color="k", lw=1.5, alpha=0.5,
                       label="true capacity")
    if "adaptive" in runs:
        recs = sorted(answered(runs["adaptive"].records), key=lambda r: r["t"])
        capacity_axis.plot([r["t"] for r in recs],
                           [r["bandwidth_estimate_bps"] / 1e6 for r in recs], "k--", lw=1,
                           label="adaptive's bandwidth estimate")
    capacity_axis.set_ylabel("uplink (Mbit/s)")
    handles = ax.get_legend_handles_labels()
    extra = capacity_axis.get_legend_handles_labels()
    ax.legend(handles[0] + extra[0], handles[1] + extra[1], fontsize=8, loc="upper right")
    ax.set_title(f"Response time over time — {summary['scenario']['name']}")
    fig.tight_layout()
    paths.append(out_dir / "latency_over_time.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    if "adaptive" in runs:
        paths.append(plot_choices(runs["adaptive"], out_dir / "adaptive_choices.png"))

    fig, ax = plt.subplots(figsize=(7, 5))
    for name, row in summary["policies"].items():
        ax.scatter(row["bytes_per_frame"] + 1, row["accuracy"], s=40)
        ax.annotate(name, (row["bytes_per_frame"] + 1, row["accuracy"]), fontsize=8,
                    xytext=(4, 4), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("bytes on the wire per answered frame (+1, log)")
    ax.set_ylabel("accuracy over every frame")
    ax.set_title("Accuracy against bytes")
    fig.tight_layout()
    paths.append(out_dir / "accuracy_vs_bytes.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


def plot_choices(run: PolicyRun, path: Path) -> Path:
    """Where the adaptive policy finished each frame, and what it sent, over time."""
    import matplotlib.pyplot as plt

    recs = sorted(answered(run.records), key=lambda r: r["t"])
    t = [r["t"] for r in recs]
    configs = [Config.parse(r["config"]) for r in recs]
    fig, axes = plt.subplots(3, 1, figsize=(11, 6), sharex=True)
    places = [PLACEMENTS.index(finished_at(r)) for r in recs]
    axes[0].step(t, places, where="post")
    axes[0].set_yticks(range(len(PLACEMENTS)), PLACEMENTS)
    axes[0].set_ylabel("finished", fontsize=8)
    axes[1].step(t, [c.split or 0 for c in configs], where="post")
    axes[1].set_ylabel("split point\n(0: none)", fontsize=8)
    axes[2].step(t, [r["bytes_sent"] for r in recs], where="post")
    axes[2].set_yscale("symlog")
    axes[2].set_ylabel("bytes sent", fontsize=8)
    axes[2].set_xlabel("time (s)")
    axes[0].set_title("The adaptive policy's choices over time")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def build_summary(scenario: Scenario, runs: dict[str, PolicyRun], labels: np.ndarray,
                  full_labels: dict[int, int]) -> dict[str, Any]:
    """Every policy's row, the per-frame bound, and adaptive ÷ each policy."""
    policies = {name: summarize_policy(run, labels, scenario) for name, run in runs.items()}
    summary: dict[str, Any] = {"scenario": scenario.to_dict(), "policies": policies}
    bound = per_frame_bound(runs, full_labels)
    summary["bound"] = against_bound(runs["adaptive"], bound) if "adaptive" in runs else {}
    summary["bound_by_policy"] = {name: against_bound(run, bound)
                                  for name, run in runs.items()}
    adaptive = policies.get("adaptive")
    summary["ratios"] = {
        name: {"ratio": adaptive["mean_response_ms"] / row["mean_response_ms"],
               "ci95_low": None, "ci95_high": None, "repetitions": 1}
        for name, row in policies.items() if adaptive and name != "adaptive"}
    summary["bandwidth_estimate_median_error"] = (
        adaptive["bandwidth_estimate_median_error"] if adaptive else None)
    first = next(iter(runs.values()), None)
    summary["device_emulation"] = first.device_emulation if first else {}
    if scenario.busy is not None:
        summary["busy_window"] = busy_window(scenario.busy, runs)
    return summary


def busy_window(busy: tuple[float, float, float],
                runs: dict[str, PolicyRun]) -> dict[str, dict[str, Any]]:
    """Per policy, before / during / after a competing load's window (by when each frame
    was taken up), and in the five seconds after it: how many frames, their mean response
    and where they were finished. This is where a policy shows whether it moved work off
    a busy device, and back."""
    start_s, end_s, _ = busy
    out: dict[str, dict[str, Any]] = {}
    for name, run in runs.items():
        done = answered(run.records)
        phases = {"before": [r for r in done if r["t"] < start_s],
                  "during": [r for r in done if start_s <= r["t"] < end_s],
                  "after": [r for r in done if r["t"] >= end_s]}
        out[name] = {phase: {"frames": len(records),
                             "mean_response_ms": float(np.mean([r["response_ms"]
                                                                for r in records]))
                             if records else None,
                             "placements": placement_shares(records)}
                     for phase, records in phases.items()}
    return out


def return_after_load(busy: tuple[float, float, float], adaptive: PolicyRun,
                      reference: PolicyRun, within_s: float = 5.0) -> dict[str, Any]:
    """How soon after the load ends the adaptive policy is back within 10 % of the
    reference's per-frame latency (frames taken up after the load, in arrival order, each
    against the reference's mean after the load): seconds after the end, or None."""
    end_s = busy[1]
    after = sorted((r for r in answered(adaptive.records) if r["t"] >= end_s),
                   key=lambda r: r["t"])
    ref = [r["response_ms"] for r in answered(reference.records) if r["t"] >= end_s]
    if not after or not ref:
        return {"back_after_s": None, "reference_ms": None}
    target = 1.1 * float(np.mean(ref))
    for i, r in enumerate(after):
        if all(x["response_ms"] <= target for x in after[i:i + 5]):  # and stays there
            return {"back_after_s": r["t"] - end_s, "reference_ms": float(np.mean(ref)),
                    "met": r["t"] - end_s <= within_s}
    return {"back_after_s": None, "reference_ms": float(np.mean(ref)), "met": False}


SUMMED = ("frames", "answered", "dropped", "fallbacks", "switches", "lost", "offloaded",
          "exited_on_device")


def _combine_rows(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One policy over several repetitions: counts summed, everything else averaged; the
    response time's interval is over the repetitions' means."""
    out: dict[str, Any] = {}
    for key, value in rows[0].items():
        values: list[Any] = [r.get(key) for r in rows]
        if key in SUMMED and all(isinstance(v, (int, float)) for v in values):
            out[key] = sum(values)
        elif isinstance(value, (int, float)) and not isinstance(value, bool) \
                and all(isinstance(v, (int, float)) for v in values):
            out[key] = float(np.mean(values))
        elif isinstance(value, dict) and all(isinstance(v, dict) for v in values) \
                and all(isinstance(x, (int, float)) for v in values for x in v.values()):
            out[key] = {k: float(np.mean([v.get(k, 0.0) for v in values])) for k in value}
        else:
            out[key] = value
    means = [r["mean_response_ms"] for r in rows]
    out["mean_response_ms"], out["ci95_response_ms"] = mean_interval(means)
    out["repetition_mean_response_ms"] = means
    out["repetition_energy_mj_per_frame"] = [r["energy_mj_per_frame"] for r in rows]
    out["repetition_accuracy"] = [r["accuracy"] for r in rows]
    return out


def combine_repetitions(scenario: Scenario, summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """The summary of a scenario run ``len(summaries)`` times at different trace offsets,
    each on its own frames: adaptive ÷ every policy as a paired ratio over them."""
    names = summaries[0]["policies"]
    policies = {name: _combine_rows([s["policies"][name] for s in summaries])
                for name in names}
    summary: dict[str, Any] = {"scenario": scenario.to_dict(), "policies": policies,
                               "repetitions": len(summaries),
                               "device_emulation": summaries[0]["device_emulation"]}
    if "adaptive" in names:
        adaptive = policies["adaptive"]["repetition_mean_response_ms"]
        summary["ratios"] = {
            name: paired_ratio(adaptive, row["repetition_mean_response_ms"]).as_dict()
            for name, row in policies.items() if name != "adaptive"}
        bound = [s["bound"] for s in summaries if s["bound"].get("ratio")]
        summary["bound"] = {
            "frames": sum(b["frames"] for b in bound),
            "ratio": float(np.mean([b["ratio"] for b in bound])) if bound else None,
            "bound_mean_ms": float(np.mean([b["bound_mean_ms"] for b in bound]))
            if bound else None,
            "repetition_ratios": [b["ratio"] for b in bound]}
    errors = [s["bandwidth_estimate_median_error"] for s in summaries
              if s.get("bandwidth_estimate_median_error") is not None]
    summary["bandwidth_estimate_median_error"] = float(np.median(errors)) if errors else None
    summary["plots"] = [p for s in summaries for p in s["plots"]]
    summary["run_seconds"] = sum(s["run_seconds"] for s in summaries)
    return summary
