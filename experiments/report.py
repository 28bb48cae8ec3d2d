"""Summaries, tables and plots of one scenario's records.

    records (per policy) ──► summary row per policy: accuracy, latency mean (±95 %)/p50/
                             p95/p99, wire bytes per inference (counted at the link), energy,
                             deadline misses, fallbacks, config switches, lost inputs, where
                             inputs were finished (local / split / offload-input)
                         ──► predicted oracle row; adaptive ÷ oracle replay (measured) and
                             ÷ predicted oracle
                         ──► summary.md, summary.csv, summary.json, three PNG plots
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

from experiments.oracle import REPLAY_POLICY
from experiments.runner import PolicyRun
from experiments.scenario import Scenario

COLUMNS = ("accuracy", "mean_latency_ms", "ci95_latency_ms", "p50_latency_ms",
           "p95_latency_ms", "p99_latency_ms", "bytes_per_inference",
           "energy_mj_per_inference", "deadline_miss_rate", "fallbacks", "switches", "lost")
PLACEMENTS = ("local", "split", "offload-input")


def placement_shares(records: list[dict[str, Any]]) -> dict[str, float]:
    """Where inputs were finished: on the device (LOCAL, an exit, a fallback), by a split's
    tail on the edge, or as a whole input on the edge."""
    counts = dict.fromkeys(PLACEMENTS, 0)
    for r in records:
        if r["where"] != "edge":
            counts["local"] += 1
        else:
            counts["offload-input" if r["config"].startswith("offload") else "split"] += 1
    return {k: v / max(len(records), 1) for k, v in counts.items()}


def summarize_policy(run: PolicyRun, labels: np.ndarray, deadline_ms: float) -> dict[str, Any]:
    """One row of the summary table."""
    records = sorted(run.records, key=lambda r: (r["device"], r["index"]))
    latency = np.array([r["total_ms"] for r in records]) if records else np.zeros(1)
    correct = [r["label"] == labels[r["index"]] for r in records]
    switches = sum(1 for a, b in zip(records, records[1:], strict=False)
                   if a["device"] == b["device"] and a["config"] != b["config"])
    # the estimator runs whenever the policy can offload (probes keep it fresh), so every
    # input with a true capacity scores it; policies that never offload have none
    estimate_errors = [abs(r["bandwidth_estimate_bps"] - r["true_capacity_bps"])
                       / r["true_capacity_bps"]
                       for r in records
                       if r["true_capacity_bps"] > 0 and r["bandwidth_estimate_bps"] > 0]
    return {
        "policy": run.policy,
        "results": len(records),
        "accuracy": float(np.mean(correct)) if correct else 0.0,
        "mean_latency_ms": float(latency.mean()),
        # half-width of the normal-approximation 95 % interval of the mean, over inputs
        "ci95_latency_ms": float(1.96 * latency.std(ddof=1) / np.sqrt(len(latency)))
        if len(latency) > 1 else None,
        "placements": placement_shares(records),
        "p50_latency_ms": float(np.percentile(latency, 50)),
        "p95_latency_ms": float(np.percentile(latency, 95)),
        "p99_latency_ms": float(np.percentile(latency, 99)),
        "bytes_per_inference": (run.bytes_up + run.bytes_down) / max(len(records), 1),
        "payload_bytes_per_inference": float(np.mean([r["bytes_sent"] for r in records]))
        if records else 0.0,
        "energy_mj_per_inference": float(np.mean([r["energy_mj"] for r in records]))
        if records else 0.0,
        "deadline_miss_rate": float(np.mean(latency > deadline_ms)),
        "fallbacks": sum(bool(r["fallback"]) for r in records),
        "switches": switches,
        "lost": run.expected - len({(r["device"], r["index"]) for r in records}),
        "offloaded": sum(r["where"] == "edge" for r in records),
        "exited_on_device": sum(r["where"] == "device-exit" for r in records),
        "bandwidth_estimate_median_error": float(np.median(estimate_errors))
        if estimate_errors else None,
    }


def write_tables(summary: dict[str, Any], out_dir: Path) -> None:
    """summary.md, summary.csv and summary.json."""
    rows = [{"policy": name, **row} for name, row in summary["policies"].items()]
    rows.append({"policy": "oracle", **summary["oracle"]})
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
    head = ("| policy | acc | mean ms | ±95 % | p50 | p95 | p99 | B/inf | mJ/inf | miss "
            "| fallbk | switch | lost | local / split / input |")
    repetitions = summary.get("repetitions", 1)
    over = (f"; {repetitions} runs at different trace offsets, ± is the 95 % interval of "
            "the mean over them" if repetitions > 1 else "; ± is the 95 % interval over inputs")
    lines = [f"## {scenario['name']}: {scenario['trace']} ×{scenario['scale']:g}, "
             f"RTT {scenario['rtt_ms']:g} ms, {scenario['device']}, "
             f"{scenario['devices']}×{scenario['images']} images at "
             f"{scenario['rate_hz']:g}/s, deadline {scenario['deadline_ms']:g} ms{over}", "",
             head, "|" + "---|" * 14]
    rows = list(summary["policies"].items()) + [("oracle (predicted)", summary["oracle"])]
    for name, row in rows:
        shares = row.get("placements") or {}
        mix = " / ".join(f"{100 * shares.get(p, 0):.0f}" for p in PLACEMENTS)
        lines.append("| " + " | ".join([name] + [_cell(row.get(c)) for c in COLUMNS] + [mix])
                     + " |")
    replay = summary.get("adaptive_to_oracle_replay_latency")
    lines += ["", f"Adaptive ÷ oracle replay (measured): latency {_cell(replay)}. "
              f"Adaptive ÷ oracle (predicted): latency "
              f"{_cell(summary['adaptive_to_oracle_latency'])}, "
              f"energy {_cell(summary.get('adaptive_to_oracle_energy'))}. Bandwidth estimate "
              f"median relative error: {_cell(summary.get('bandwidth_estimate_median_error'))}. "
              f"Device emulation: {summary.get('device_emulation', {}).get('method', '?')}.",
              "", "B/inf is counted at the link, both directions; the oracle's is payload only."]
    if summary.get("busy_window"):
        start_s, end_s, share = summary["scenario"]["busy"]
        lines += ["", f"A competing load took {100 * share:.0f} % of the device's CPU from "
                  f"{start_s:g} s to {end_s:g} s. Mean ms, and where inputs were finished "
                  "(local / split / input %), before, during and after it:", "",
                  "| policy | before | during | after |", "|---|---|---|---|"]
        for name, phases in summary["busy_window"].items():
            lines.append(f"| {name} | " + " | ".join(
                f"{_cell(p['mean_latency_ms'])} ms, " + " / ".join(
                    f"{100 * p['placements'][k]:.0f}" for k in PLACEMENTS)
                if p["inputs"] else "–" for p in phases.values()) + " |")
    missing = summary.get("device_emulation", {}).get("link_not_emulated")
    if missing:
        lines += ["", "Not emulated: " + "; ".join(missing) + "."]
    return "\n".join(lines) + "\n"


def plot(summary: dict[str, Any], runs: dict[str, PolicyRun], out_dir: Path,
         trace_capacity: tuple[np.ndarray, np.ndarray]) -> list[Path]:
    """Latency over time (with capacity and estimate), adaptive's choices, accuracy vs bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, ax = plt.subplots(figsize=(11, 5))
    for name, run in runs.items():
        recs = sorted(run.records, key=lambda r: r["t"])
        ax.plot([r["t"] for r in recs], [r["total_ms"] for r in recs], ".-", ms=3, lw=0.6,
                label=name)
    ax.set_yscale("log")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("latency (ms, log)")
    capacity_axis = ax.twinx()
    times, capacity = trace_capacity
    capacity_axis.step(times, capacity / 1e6, where="post", color="k", lw=1.5, alpha=0.5,
                       label="true capacity")
    if "adaptive" in runs:
        recs = sorted(runs["adaptive"].records, key=lambda r: r["t"])
        capacity_axis.plot([r["t"] for r in recs],
                           [r["bandwidth_estimate_bps"] / 1e6 for r in recs], "k--", lw=1,
                           label="adaptive's bandwidth estimate")
    capacity_axis.set_ylabel("uplink (Mbit/s)")
    handles = ax.get_legend_handles_labels()
    extra = capacity_axis.get_legend_handles_labels()
    ax.legend(handles[0] + extra[0], handles[1] + extra[1], fontsize=8, loc="upper right")
    ax.set_title(f"Latency over time — {summary['scenario']['name']}")
    fig.tight_layout()
    paths.append(out_dir / "latency_over_time.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    if "adaptive" in runs:
        recs = sorted(runs["adaptive"].records, key=lambda r: r["t"])
        fig, axes = plt.subplots(4, 1, figsize=(11, 7), sharex=True)
        t = [r["t"] for r in recs]
        parsed = [_parse(r["config"]) for r in recs]
        for axis, key, label in zip(axes[:3], ("split", "width", "bits"),
                                    ("split (0=local, 4=input)", "width (0=raw)", "bits"),
                                    strict=True):
            axis.step(t, [p[key] for p in parsed], where="post")
            axis.set_ylabel(label, fontsize=8)
        axes[3].step(t, [p["exit"] for p in parsed], where="post")
        axes[3].set_ylabel("exit threshold", fontsize=8)
        axes[3].set_xlabel("time (s)")
        axes[0].set_title("Adaptive policy's choices over time")
        fig.tight_layout()
        paths.append(out_dir / "adaptive_choices.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 5))
    for name, row in list(summary["policies"].items()) + [("oracle", summary["oracle"])]:
        ax.scatter(row["bytes_per_inference"] + 1, row["accuracy"], s=40)
        ax.annotate(name, (row["bytes_per_inference"] + 1, row["accuracy"]), fontsize=8,
                    xytext=(4, 4), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("bytes on the wire per inference (+1, log)")
    ax.set_ylabel("accuracy")
    ax.set_title("Accuracy against bytes")
    fig.tight_layout()
    paths.append(out_dir / "accuracy_vs_bytes.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


def _parse(config: str) -> dict[str, float]:
    parts = config.split("/")
    exit_threshold = next((float(p[4:]) for p in parts if p.startswith("exit")), 0.0)
    if parts[0] == "local":
        return {"split": 0, "width": 0, "bits": 0, "exit": exit_threshold}
    if parts[0] == "offload":
        return {"split": 4, "width": 0, "bits": 8, "exit": 0.0}
    width = 0 if parts[1] == "raw" else int(parts[1][1:])
    return {"split": int(parts[0][5:]), "width": width, "bits": int(parts[2][1:]),
            "exit": exit_threshold}


def oracle_ratios(policies: dict[str, Any], oracle_row: dict[str, Any]) -> dict[str, Any]:
    """Adaptive ÷ the measured oracle replay, and ÷ the predicted oracle."""
    adaptive, replay = policies.get("adaptive"), policies.get(REPLAY_POLICY)

    def ratio(row: dict[str, Any] | None, key: str) -> float | None:
        return adaptive[key] / row[key] if adaptive and row and row[key] else None

    return {"adaptive_to_oracle_replay_latency": ratio(replay, "mean_latency_ms"),
            "adaptive_to_oracle_latency": ratio(oracle_row, "mean_latency_ms"),
            "adaptive_to_oracle_energy": ratio(oracle_row, "energy_mj_per_inference")}


def build_summary(scenario: Scenario, runs: dict[str, PolicyRun], labels: np.ndarray,
                  oracle_row: dict[str, Any]) -> dict[str, Any]:
    policies = {name: summarize_policy(run, labels, scenario.deadline_ms)
                for name, run in runs.items()}
    summary: dict[str, Any] = {"scenario": scenario.to_dict(), "policies": policies,
                               "oracle": oracle_row}
    summary.update(oracle_ratios(policies, oracle_row))
    adaptive = policies.get("adaptive")
    summary["bandwidth_estimate_median_error"] = (
        adaptive["bandwidth_estimate_median_error"] if adaptive else None)
    first = next(iter(runs.values()), None)
    summary["device_emulation"] = first.device_emulation if first else {}
    if scenario.busy is not None:
        summary["busy_window"] = busy_window(scenario.busy, runs)
    return summary


def busy_window(busy: tuple[float, float, float],
                runs: dict[str, PolicyRun]) -> dict[str, dict[str, Any]]:
    """Per policy, before / during / after a competing load's window (by when each input
    was taken up): how many inputs, their mean latency and where they were finished. This
    is where a policy shows whether it moved work off a busy device."""
    start_s, end_s, _ = busy
    out: dict[str, dict[str, Any]] = {}
    for name, run in runs.items():
        phases = {"before": [r for r in run.records if r["t"] < start_s],
                  "during": [r for r in run.records if start_s <= r["t"] < end_s],
                  "after": [r for r in run.records if r["t"] >= end_s]}
        out[name] = {phase: {"inputs": len(records),
                             "mean_latency_ms": float(np.mean([r["total_ms"] for r in records]))
                             if records else None,
                             "placements": placement_shares(records)}
                     for phase, records in phases.items()}
    return out


# Student's t, two-sided 95 %, by degrees of freedom (the intervals over repetitions)
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
       9: 2.262, 10: 2.228, 12: 2.179, 15: 2.131, 19: 2.093}
SUMMED = ("results", "fallbacks", "switches", "lost", "offloaded", "exited_on_device")


def _t95(df: int) -> float:
    return T95[max(k for k in T95 if k <= df)]


def _combine_rows(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One policy over several repetitions: counts summed, everything else averaged; the
    latency interval is over the repetitions' means."""
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
    means = np.array([r["mean_latency_ms"] for r in rows])
    if len(rows) > 1:
        out["ci95_latency_ms"] = float(_t95(len(rows) - 1) * means.std(ddof=1)
                                       / np.sqrt(len(rows)))
    out["repetition_mean_latency_ms"] = means.tolist()
    return out


def combine_repetitions(scenario: Scenario, summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """The summary of a scenario run ``len(summaries)`` times at different trace offsets."""
    policies = {name: _combine_rows([s["policies"][name] for s in summaries])
                for name in summaries[0]["policies"]}
    oracle_row = _combine_rows([s["oracle"] for s in summaries])
    summary: dict[str, Any] = {"scenario": scenario.to_dict(), "policies": policies,
                               "oracle": oracle_row, "repetitions": len(summaries),
                               "device_emulation": summaries[0]["device_emulation"]}
    summary.update(oracle_ratios(policies, oracle_row))
    errors = [s["bandwidth_estimate_median_error"] for s in summaries
              if s.get("bandwidth_estimate_median_error") is not None]
    summary["bandwidth_estimate_median_error"] = float(np.median(errors)) if errors else None
    summary["plots"] = [p for s in summaries for p in s["plots"]]
    summary["run_seconds"] = sum(s["run_seconds"] for s in summaries)
    return summary
