"""Benchmark a shipped model afresh on its evaluation images; print one JSON object.

    checkpoint ─► Evaluator(eval images) ─► configs, exits, input codecs, int8   ┐
    interleaved timing: switch config vs reload; int8 head vs fp32 head          ├─► JSON
    the model's targets (TARGETS below; docs/targets.md), each met / not met     ┘  + Markdown

The evaluation images are never those the card was measured on (``splitnet.data.eval_sets``).
Only the exit threshold is read from the card, because that is where it is chosen.
Writes results/bench-<model>/ (meta.json, bench.json, bench.md, the rate plot).
Usage: ``python -m splitnet.bench --model resnet18_imagenette --json``.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from splitnet import codec
from splitnet.card import CardError, ModelCard
from splitnet.checkpoint import CheckpointError, load_checkpoint
from splitnet.config import LOCAL, Config
from splitnet.data import DatasetNotFoundError
from splitnet.data.eval_sets import default_cache_dir, eval_images
from splitnet.evaluate import Evaluator, macs
from splitnet.model import SplitModel
from splitnet.provenance import RESULTS_DIR, command_line, finish_results, start_results
from splitnet.zoo import checkpoint_for, list_zoo, load_card


def switch_config(model: SplitModel, config: Config) -> None:
    """Everything the runtime does when the planner changes its choice: validate it.

    All configs share the same modules and weights, so there is nothing to build or load.
    """
    model.check(config)
    model.exit_point_for(config)
    if config.split is not None:
        model.code_shape(config)


def time_switch_vs_reload(checkpoint: Path, model: SplitModel,
                          repeats: int = 100, seed: int = 0) -> dict[str, float]:
    """Median ms to switch config versus to load the model again, interleaved A/B."""
    configs = model.split_configs() + [LOCAL]
    rng = random.Random(seed)
    switch_ms, reload_ms = [], []
    for _ in range(repeats):
        config = rng.choice(configs)
        start = time.perf_counter()
        switch_config(model, config)
        switch_ms.append((time.perf_counter() - start) * 1000)
        start = time.perf_counter()
        load_checkpoint(checkpoint)
        reload_ms.append((time.perf_counter() - start) * 1000)
    return {"switch_ms_median": statistics.median(switch_ms),
            "reload_ms_median": statistics.median(reload_ms)}


def time_int8_vs_fp32(model: SplitModel, x1: torch.Tensor, configs: list[Config],
                      repeats: int = 30) -> dict[str, dict[str, float]]:
    """Median device-side ms per image, fp32 and int8 head interleaved A/B, one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = {}
    try:
        with torch.no_grad():
            for config in configs:
                times: dict[bool, list[float]] = {False: [], True: []}
                for i in range(repeats + 3):
                    for int8 in (False, True):
                        start = time.perf_counter()
                        model.forward_head(x1, config.with_int8(int8))
                        if i >= 3:
                            times[int8].append((time.perf_counter() - start) * 1000)
                fp32, int8_ms = statistics.median(times[False]), statistics.median(times[True])
                out[str(config)] = {"fp32_ms": fp32, "int8_ms": int8_ms,
                                    "speedup": fp32 / int8_ms}
    finally:
        torch.set_num_threads(threads)
    return out


def chosen_exit(card: ModelCard, max_loss: float) -> dict[str, Any] | None:
    """The exit and threshold with the largest exit fraction on the card's held-apart images
    whose overall accuracy stays within ``max_loss`` of the full model there, with the
    sampling margin the planner adds (``ExitThreshold.sampling_margin``)."""
    best = None
    for stats in card.exits:
        for row in stats.thresholds:
            margin = row.sampling_margin(card.images) or 0.0
            if card.full.accuracy - row.overall_accuracy + margin <= max_loss and (
                    best is None or row.exit_fraction > best["card_exit_fraction"]):
                best = {"exit_point": stats.exit_point, "threshold": row.threshold,
                        "card_exit_fraction": row.exit_fraction,
                        "card_loss": card.full.accuracy - row.overall_accuracy,
                        "card_margin": margin}
    return best


def run_bench(model_name: str, checkpoint: Path, data_dir: str | None, limit: int | None,
              repeats: int) -> dict[str, Any]:
    loaded = load_checkpoint(checkpoint)
    model = loaded.model
    card = load_card(checkpoint)
    data = eval_images(model.spec.name, data_dir, cache_dir=default_cache_dir()).head(limit)
    evaluator = Evaluator(model, data.images, data.labels)
    full_accuracy = evaluator.full_accuracy()
    stats = evaluator.all_split_configs()
    configs = [{
        "config": s.config, "split": s.split, "width": s.width, "bits": s.bits, "raw": s.raw,
        "rate": s.rate, "accuracy": s.accuracy, "mean_bytes": s.mean_bytes,
        "p95_bytes": s.p95_bytes, "head_macs": s.head_macs, "tail_macs": s.tail_macs,
        "int8_accuracy": s.int8_accuracy,
    } for s in stats]
    exits = evaluator.exits()
    device_exit = max(model.spec.exit_points)  # the exit used by LOCAL and the deep splits
    exit_rows = next(e for e in exits if e.exit_point == device_exit)
    timing = time_switch_vs_reload(checkpoint, model, repeats)
    full_macs = macs(lambda: model.backbone(evaluator.x[:1]))
    result: dict[str, Any] = {
        "model": model.spec.name,
        "model_id": loaded.model_id,
        "images": data.description,
        "test_images": len(evaluator.labels),
        "full_accuracy": full_accuracy,
        "full_macs": full_macs,
        "configs": configs,
        "input_codecs": [asdict(c) for c in evaluator.input_codecs()],
        "exit_point": device_exit,
        "exit": [{"threshold": r.threshold, "exit_fraction": r.exit_fraction,
                  "overall_accuracy": r.overall_accuracy} for r in exit_rows.thresholds],
        "exits": [asdict(e) for e in exits],
        **timing,
        "torch_threads": torch.get_num_threads(),
    }
    targets = TARGETS[model.spec.name]
    chosen = chosen_exit(card, targets["exit_max_loss"])
    if chosen is not None:
        row = next(r for e in exits if e.exit_point == chosen["exit_point"]
                   for r in e.thresholds if r.threshold == chosen["threshold"])
        chosen.update(exit_fraction=row.exit_fraction,
                      loss=full_accuracy - row.overall_accuracy)
    result["chosen_exit"] = chosen
    result["card"] = {"full_accuracy": card.full.accuracy,
                      "configs": [{"config": c.config, "raw": c.raw, "accuracy": c.accuracy,
                                   "mean_bytes": c.mean_bytes, "head_macs": c.head_macs}
                                  for c in card.configs]}
    if model.has_int8:
        head_configs = [LOCAL] + [Config(split=p, width=max(model.spec.bottleneck_widths),
                                         bits=4) for p in model.split_points]
        result["int8"] = {
            "engine": model.int8_head.engine,  # type: ignore[attr-defined]
            "full_accuracy": evaluator.int8_full_accuracy(),
            "head_timing": time_int8_vs_fp32(model, evaluator.x[:1], head_configs),
        }
    if model.entropy_bottleneck is not None:
        result["entropy"] = entropy_report(model, evaluator, card, result)
    result["targets"] = check_targets(result, targets)
    return result


def time_entropy_coding(model: SplitModel, x1: torch.Tensor, configs: list[Config],
                        repeats: int = 30) -> dict[str, dict[str, float]]:
    """Median device-side ms per image of each config's head without and with its entropy
    coding, interleaved A/B, one thread: the coder's share of the device's work."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = {}
    try:
        with torch.no_grad():
            for config in configs:
                head_ms, coded_ms = [], []
                for i in range(repeats + 3):
                    start = time.perf_counter()
                    model.forward_head(x1, config)
                    middle = time.perf_counter()
                    code = model.forward_head(x1, config).code
                    assert code is not None
                    codec.encode(code)
                    end = time.perf_counter()
                    if i >= 3:
                        head_ms.append((middle - start) * 1000)
                        coded_ms.append((end - middle) * 1000)
                head, coded = statistics.median(head_ms), statistics.median(coded_ms)
                out[str(config)] = {"head_ms": head, "head_and_coding_ms": coded,
                                    "coder_share": max(0.0, coded - head) / coded}
    finally:
        torch.set_num_threads(threads)
    return out


def jpeg_accuracy_at(sweep: list[dict[str, float]], size: float) -> float | None:
    """The accuracy of the best JPEG no larger than ``size`` bytes on the sweep (the upper
    envelope of its points), or None when no JPEG of the sweep is that small."""
    fitting = [row["accuracy"] for row in sweep if row["mean_bytes"] <= size]
    return max(fitting) if fitting else None


def entropy_report(model: SplitModel, evaluator: Evaluator, card: ModelCard,
                   result: dict[str, Any]) -> dict[str, Any]:
    """The entropy bottleneck's rates beside a JPEG sweep, the coder's round trip and cost,
    and the shallow-split config chosen on the card's held-apart images."""
    rows = [c for c in result["configs"] if c["rate"] is not None]
    sweep = evaluator.jpeg_sweep()
    for row in rows:
        row["jpeg_accuracy_at_size"] = jpeg_accuracy_at(sweep, row["mean_bytes"])
    eb = model.entropy_bottleneck
    assert eb is not None
    rate_configs = [Config(split=eb.spec.point, rate=r, int8=model.has_int8)
                    for r in range(eb.rates)]
    # chosen where every other choice is: on the card (held-apart images), then scored here
    floor = card.full.accuracy - TARGETS[model.spec.name].get("shallow_max_loss", 0.01)
    budget = TARGETS[model.spec.name].get("shallow_head_fraction", 0.15) * result["full_macs"]
    eligible = [c for c in card.configs if c.rate is not None and c.accuracy >= floor
                and c.head_macs <= budget]
    chosen = min(eligible, key=lambda c: c.mean_bytes, default=None)
    return {
        "rates": rows,
        "jpeg_sweep": sweep,
        "round_trip_failures": evaluator.round_trip_failures,
        "payloads_checked": len(evaluator.labels) * len(rows) * (2 if model.has_int8 else 1),
        "coding_time": time_entropy_coding(model, evaluator.x[:1], rate_configs),
        "chosen_on_card": None if chosen is None else {
            "config": chosen.config, "card_accuracy": chosen.accuracy,
            "card_full_accuracy": card.full.accuracy, "card_mean_bytes": chosen.mean_bytes},
    }


#: The targets each model's benchmark checks (docs/targets.md says where each came from).
TARGETS: dict[str, dict[str, Any]] = {
    "mnv2_fmnist": {
        "full_accuracy": 0.94, "small_bytes": 45, "small_max_loss": 0.01,
        "cheap_head_fraction": None, "bytes_span": 10, "head_macs_span": 4,
        "exit_fraction": 0.40, "exit_max_loss": 0.01, "switch_ms": 1.0,
    },
    "resnet18_imagenette": {
        "full_accuracy": 0.85, "small_bytes": 500, "small_max_loss": 0.015,
        "cheap_head_fraction": 0.25, "cheap_head_bytes": 2000, "cheap_head_max_loss": 0.03,
        "bytes_span": 10, "head_macs_span": 4, "exit_fraction": 0.30, "exit_max_loss": 0.01,
        "switch_ms": 1.0, "int8_max_loss": 0.01, "int8_speedup": 1.5,
        "shallow_head_fraction": 0.15, "shallow_max_loss": 0.01, "shallow_bytes": 800,
        "shallow_stretch_bytes": 500, "rate_points": 4, "rate_bytes_span": 4,
        "coder_share": 0.2,
    },
}


def check_targets(result: dict[str, Any], t: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each target of ``t``, with the measured figure and met / not met.

    Long because: one entry per target, in the order docs/targets.md lists them."""
    full = result["full_accuracy"]

    card = result["card"]
    measured = {c["config"]: c for c in result["configs"]}

    def best_within(rows: list[dict[str, Any]], loss: float) -> dict[str, Any] | None:
        """Chosen on the card's held-apart images (the fewest bytes within ``loss`` of the
        full model there), then scored here: the row of this run for that config."""
        ok = [c for c in rows if c["accuracy"] >= card["full_accuracy"] - loss]
        chosen = min(ok, key=lambda c: c["mean_bytes"], default=None)
        return None if chosen is None else measured[chosen["config"]]

    def met_within(row: dict[str, Any] | None, loss: float, max_bytes: float) -> bool:
        return row is not None and row["accuracy"] >= full - loss \
            and row["mean_bytes"] <= max_bytes

    def brief(row: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if row is None else {k: row[k] for k in ("config", "accuracy",
                                                             "mean_bytes", "head_macs")}

    all_configs = result["configs"]
    bytes_span = (max(c["mean_bytes"] for c in all_configs)
                  / min(c["mean_bytes"] for c in all_configs))
    macs_span = (max(c["head_macs"] for c in all_configs)
                 / min(c["head_macs"] for c in all_configs))
    card_configs = [c for c in card["configs"] if not c["raw"]]
    small = best_within([c for c in card_configs if c["mean_bytes"] <= t["small_bytes"]],
                        t["small_max_loss"])
    switch, reload = result["switch_ms_median"], result["reload_ms_median"]
    chosen = result.get("chosen_exit")
    out: dict[str, dict[str, Any]] = {
        f"full_accuracy>={t['full_accuracy']}": {"measured": full,
                                                 "met": full >= t["full_accuracy"]},
        f"bottleneck<={t['small_bytes']}B_within_{t['small_max_loss'] * 100:g}pt"
        " (chosen on the card)": {
            "measured": brief(small),
            "met": met_within(small, t["small_max_loss"], t["small_bytes"])},
        "bytes_span>=10x": {"measured": bytes_span, "met": bytes_span >= t["bytes_span"]},
        "head_macs_span>=4x": {"measured": macs_span, "met": macs_span >= t["head_macs_span"]},
        "switch<=1ms_and_reload>=100x": {
            "measured": {"switch_ms": switch, "reload_ms": reload,
                         "ratio": reload / switch if switch > 0 else None},
            "met": switch <= t["switch_ms"] and reload >= 100 * switch},
        f"exit>={t['exit_fraction']:.0%}_within_{t['exit_max_loss'] * 100:g}pt"
        " (threshold chosen on the card's held-apart images)": {
            "measured": chosen,
            "met": chosen is not None and chosen["exit_fraction"] >= t["exit_fraction"]
            and chosen["loss"] <= t["exit_max_loss"]},
    }
    if t.get("cheap_head_fraction"):
        cheap_rows = [c for c in card_configs
                      if c["head_macs"] <= t["cheap_head_fraction"] * result["full_macs"]
                      and c["mean_bytes"] <= t["cheap_head_bytes"]]
        cheap = best_within(cheap_rows, t["cheap_head_max_loss"])
        out[f"head<={t['cheap_head_fraction']:.0%}_MACs_<={t['cheap_head_bytes']}B_within_"
            f"{t['cheap_head_max_loss'] * 100:g}pt (chosen on the card)"] = {
            "measured": brief(cheap),
            "met": met_within(cheap, t["cheap_head_max_loss"], t["cheap_head_bytes"])}
    if "int8" in result and "int8_max_loss" in t:
        int8 = result["int8"]
        loss = full - int8["full_accuracy"]
        worst = max((c["accuracy"] - c["int8_accuracy"] for c in result["configs"]
                     if c["int8_accuracy"] is not None), default=0.0)
        out[f"int8_within_{t['int8_max_loss'] * 100:g}pt"] = {
            "measured": {"fp32": full, "int8": int8["full_accuracy"], "loss": loss,
                         "worst_split_config_loss": worst},
            "met": loss <= t["int8_max_loss"]}
        local = int8["head_timing"][str(LOCAL)]
        out[f"int8_head>={t['int8_speedup']}x_faster"] = {
            "measured": local, "met": local["speedup"] >= t["int8_speedup"]}
    if "entropy" in result:
        out.update(entropy_targets(result, t))
    return out


def entropy_targets(result: dict[str, Any], t: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The learned entropy bottleneck's targets (shallow split, rate curve, int8, coder)."""
    entropy, full = result["entropy"], result["full_accuracy"]
    rows = entropy["rates"]
    chosen = entropy["chosen_on_card"]
    shallow: dict[str, Any] | None = None
    if chosen is not None:
        row = next(r for r in rows if r["config"] == chosen["config"])
        shallow = {"config": row["config"], "accuracy": row["accuracy"],
                   "loss": full - row["accuracy"], "mean_bytes": row["mean_bytes"],
                   "head_fraction": row["head_macs"] / result["full_macs"]}
    span = max(r["mean_bytes"] for r in rows) / min(r["mean_bytes"] for r in rows)
    above_jpeg = all(r["jpeg_accuracy_at_size"] is None
                     or r["accuracy"] >= r["jpeg_accuracy_at_size"] for r in rows)
    int8_loss = max(r["accuracy"] - r["int8_accuracy"] for r in rows
                    if r["int8_accuracy"] is not None)
    shares = {k: v["coder_share"] for k, v in entropy["coding_time"].items()}
    failures = sum(entropy["round_trip_failures"].values())
    met_shallow = (shallow is not None and shallow["loss"] <= t["shallow_max_loss"]
                   and shallow["mean_bytes"] <= t["shallow_bytes"]
                   and shallow["head_fraction"] <= t["shallow_head_fraction"])
    return {
        f"shallow_split: head<={t['shallow_head_fraction']:.0%}_MACs, within "
        f"{t['shallow_max_loss'] * 100:g}pt, <={t['shallow_bytes']}B (chosen on the card)": {
            "measured": shallow, "met": met_shallow,
            "stretch_met": met_shallow and shallow is not None
            and shallow["mean_bytes"] <= t["shallow_stretch_bytes"]},
        f"rate_curve: >={t['rate_points']} points, >={t['rate_bytes_span']}x bytes, each "
        "at or above JPEG of its size": {
            "measured": {"points": len(rows), "bytes_span": span,
                         "above_jpeg": above_jpeg},
            "met": len(rows) >= t["rate_points"] and span >= t["rate_bytes_span"]
            and above_jpeg},
        f"entropy_int8_within_{t['int8_max_loss'] * 100:g}pt": {
            "measured": {"worst_loss": int8_loss}, "met": int8_loss <= t["int8_max_loss"]},
        f"coder_share<={t['coder_share']:.0%} (host, int8 head)": {
            "measured": shares, "met": max(shares.values()) <= t["coder_share"]},
        "coder_round_trip_bit_exact": {
            "measured": {"payloads": entropy["payloads_checked"], "failures": failures},
            "met": failures == 0},
    }


def markdown(result: dict[str, Any]) -> str:
    """The benchmark as Markdown tables."""
    lines = [f"# splitnet benchmark: {result['model_id']}", "",
             f"Images: {result['images']}. Full model (LOCAL) accuracy: "
             f"**{result['full_accuracy']:.4f}**.", "",
             "| config | accuracy | int8 head accuracy | mean B | p95 B | head MMAC | "
             "tail MMAC |", "|---|---:|---:|---:|---:|---:|---:|"]
    for c in result["configs"]:
        int8 = "" if c["int8_accuracy"] is None else f"{c['int8_accuracy']:.4f}"
        lines.append(f"| {c['config']} | {c['accuracy']:.4f} | {int8} | {c['mean_bytes']:.1f} "
                     f"| {c['p95_bytes']:.0f} | {c['head_macs'] / 1e6:.2f} | "
                     f"{c['tail_macs'] / 1e6:.2f} |")
    if "int8" in result:
        lines += ["", f"int8 head ({result['int8']['engine']}), LOCAL accuracy "
                  f"{result['int8']['full_accuracy']:.4f}; device ms per image, 1 thread, "
                  "interleaved medians:", "", "| config | fp32 ms | int8 ms | speed-up |",
                  "|---|---:|---:|---:|"]
        lines += [f"| {name} | {t['fp32_ms']:.2f} | {t['int8_ms']:.2f} | {t['speedup']:.2f}x |"
                  for name, t in result["int8"]["head_timing"].items()]
    lines += ["", "| input codec | accuracy | mean B | encode ms | decode ms |",
              "|---|---:|---:|---:|---:|"]
    lines += [f"| {c['codec']} | {c['accuracy']:.4f} | {c['mean_bytes']:.1f} | "
              f"{c['encode_ms'] or 0:.2f} | {c['decode_ms'] or 0:.2f} |"
              for c in result["input_codecs"]]
    lines += ["", f"Device-side exit (after stage {result['exit_point']}):", "",
              "| threshold | exit fraction | overall accuracy |", "|---:|---:|---:|"]
    lines += [f"| {e['threshold']} | {e['exit_fraction']:.3f} | {e['overall_accuracy']:.4f} |"
              for e in result["exit"]]
    if "entropy" in result:
        lines += entropy_markdown(result["entropy"], result["full_macs"])
    lines += ["", f"Switch config: {result['switch_ms_median'] * 1000:.1f} µs median; "
              f"reload model: {result['reload_ms_median']:.1f} ms median.", "",
              "| target | measured | met |", "|---|---|---|"]
    lines += [f"| {name} | {json.dumps(t['measured'])} | {'met' if t['met'] else 'NOT met'} |"
              for name, t in result["targets"].items()]
    return "\n".join(lines) + "\n"


def entropy_markdown(entropy: dict[str, Any], full_macs: int) -> list[str]:
    """The rate–accuracy table beside the JPEG sweep."""
    lines = ["", "Learned entropy bottleneck, one set of weights (bytes: every payload's "
             "length, header included):", "",
             "| config | accuracy | int8-head accuracy | mean B | p95 B | head MMAC "
             "(% of net) | best JPEG no larger | int8 head ms | with coding ms |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in entropy["rates"]:
        jpeg = r["jpeg_accuracy_at_size"]
        timing = entropy["coding_time"].get(f"{r['config']}/int8", {})
        lines.append(
            f"| {r['config']} | {r['accuracy']:.4f} | {r['int8_accuracy'] or 0:.4f} | "
            f"{r['mean_bytes']:.0f} | {r['p95_bytes']:.0f} | {r['head_macs'] / 1e6:.0f} "
            f"({r['head_macs'] / full_macs:.1%}) | "
            f"{'none that small' if jpeg is None else f'{jpeg:.4f}'} | "
            f"{timing.get('head_ms', 0):.2f} | {timing.get('head_and_coding_ms', 0):.2f} |")
    lines += ["", "JPEG sweep (the whole network on each image resized to the side, "
              "JPEG-coded, decoded and resized back):", "",
              "| side px | quality | mean B | accuracy |", "|---:|---:|---:|---:|"]
    lines += [f"| {j['side']} | {j['quality']} | {j['mean_bytes']:.0f} | {j['accuracy']:.4f} |"
              for j in entropy["jpeg_sweep"]]
    return lines


def plot_rate_accuracy(result: dict[str, Any], path: Path) -> Path | None:
    """Accuracy against mean bytes: the entropy bottleneck's rates, the slimmable
    bottlenecks and the JPEG sweep; None where matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    entropy = result["entropy"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, rows, style in (
            ("entropy bottleneck (split 1)", entropy["rates"], "o-"),
            ("slimmable bottleneck, split 1", [c for c in result["configs"]
                                               if c["split"] == 1 and c["width"]], "s"),
            ("JPEG sweep (whole network)", entropy["jpeg_sweep"], "^--")):
        rows = sorted(rows, key=lambda r: r["mean_bytes"])
        ax.plot([r["mean_bytes"] for r in rows], [r["accuracy"] for r in rows], style,
                label=label)
    ax.axhline(result["full_accuracy"], color="grey", lw=0.8, label="whole network")
    ax.axhline(result["full_accuracy"] - 0.01, color="grey", lw=0.8, ls=":",
               label="whole network − 1 point")
    ax.set_xscale("log")
    ax.set_xlabel("mean bytes per image (log)")
    ax.set_ylabel(f"top-1 accuracy, {result['test_images']} images")
    ax.set_title(f"{result['model']}: rate and accuracy")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m splitnet.bench",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Evaluate a shipped model afresh on its evaluation images (Fashion-MNIST "
                    "test half B, or all 3,925 Imagenette val images): every split config's "
                    "accuracy, payload bytes and MACs, input codecs, the device-side exits, "
                    "the int8 head, and config switching versus model reloading. Prints the "
                    "targets met / not met (or JSON with --json) and writes a Markdown table.",
        epilog="targets checked (see docs/targets.md):\n" + "\n".join(
            f"  {name}: {', '.join(f'{k}={v}' for k, v in t.items() if v is not None)}"
            for name, t in TARGETS.items()))
    parser.add_argument("--json", action="store_true", help="print one JSON object to stdout")
    parser.add_argument("--model", choices=list_zoo(), default="mnv2_fmnist",
                        help="the shipped model to benchmark (default: %(default)s)")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="benchmark this checkpoint instead (of the --model architecture)")
    parser.add_argument("--data-dir", default=None,
                        help="folder with the data set (Fashion-MNIST IDX files, or Imagenette "
                             "in the ImageFolder layout)")
    parser.add_argument("--limit", type=int, default=None,
                        help="first N evaluation images only (default: all)")
    parser.add_argument("--repeats", type=int, default=100,
                        help="switch/reload repetitions (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=None,
                        help="results folder: meta.json (commit, host, command), "
                             "bench.json, bench.md and the rate plot "
                             "(default: results/bench-<model>)")
    args = parser.parse_args(argv)
    out = args.out or RESULTS_DIR / f"bench-{args.model}"
    meta = start_results(out, command_line("splitnet.bench", argv))
    try:
        checkpoint = args.checkpoint or checkpoint_for(args.model)
        result = run_bench(args.model, checkpoint, args.data_dir, args.limit, args.repeats)
    except (CheckpointError, DatasetNotFoundError, CardError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    (out / "bench.md").write_text(markdown(result))
    (out / "bench.json").write_text(json.dumps(result, indent=1) + "\n")
    if "entropy" in result:
        plot = plot_rate_accuracy(result, out / "rate-accuracy.png")
        if plot is not None:
            print(f"wrote {plot}", file=sys.stderr)
    finish_results(out, meta)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        for name, target in result["targets"].items():
            print(f"{'met    ' if target['met'] else 'NOT met'}  {name}: "
                  f"{json.dumps(target['measured'])}")
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
