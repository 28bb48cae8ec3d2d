"""Benchmark the shipped checkpoint afresh on the real test set; print one JSON object.

    checkpoint ─► Evaluator(test set) ─► configs, exits, input codecs   ┐
    interleaved timing: switch config  vs  reload the checkpoint        ├─► JSON (stdout)
    targets of the core issue, each marked met / not met                ┘   + Markdown table

Nothing is read back from the model card. Usage: ``python -m splitnet.bench --json``.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from splitnet.checkpoint import CheckpointError, load_checkpoint
from splitnet.config import LOCAL, Config
from splitnet.data import DatasetNotFoundError, load_split
from splitnet.evaluate import Evaluator
from splitnet.model import SplitModel
from splitnet.zoo import DEFAULT_CHECKPOINT


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


def run_bench(checkpoint: Path, data_dir: str | None, limit: int | None,
              repeats: int) -> dict[str, Any]:
    loaded = load_checkpoint(checkpoint)
    model = loaded.model
    test = load_split("test", data_dir)
    evaluator = Evaluator(model, test.images[:limit], test.labels[:limit])
    full_accuracy = evaluator.full_accuracy()
    configs = [{
        "config": s.config, "split": s.split, "width": s.width, "bits": s.bits, "raw": s.raw,
        "accuracy": s.accuracy, "mean_bytes": s.mean_bytes, "p95_bytes": s.p95_bytes,
        "head_macs": s.head_macs, "tail_macs": s.tail_macs,
    } for s in evaluator.all_split_configs()]
    device_exit = max(model.spec.exit_points)  # the exit used by LOCAL and the deep splits
    exit_rows = next(e for e in evaluator.exits() if e["exit_point"] == device_exit)
    timing = time_switch_vs_reload(checkpoint, model, repeats)
    result: dict[str, Any] = {
        "model_id": loaded.model_id,
        "test_images": len(evaluator.labels),
        "full_accuracy": full_accuracy,
        "configs": configs,
        "input_codecs": evaluator.input_codecs(),
        "exit_point": device_exit,
        "exit": [{k: row[k] for k in ("threshold", "exit_fraction", "overall_accuracy")}
                 for row in exit_rows["thresholds"]],
        **timing,
        "torch_threads": torch.get_num_threads(),
    }
    result["targets"] = check_targets(result)
    return result


def check_targets(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The core issue's targets, each with the measured figure and met / not met."""
    full = result["full_accuracy"]
    configs = [c for c in result["configs"] if not c["raw"]]
    small = [c for c in configs if c["mean_bytes"] <= 45 and c["accuracy"] >= full - 0.01]
    best_small = max(small, key=lambda c: c["accuracy"], default=None)
    all_configs = result["configs"]
    bytes_span = (max(c["mean_bytes"] for c in all_configs)
                  / min(c["mean_bytes"] for c in all_configs))
    macs_span = (max(c["head_macs"] for c in all_configs)
                 / min(c["head_macs"] for c in all_configs))
    exit_ok = [e for e in result["exit"]
               if e["exit_fraction"] >= 0.40 and e["overall_accuracy"] >= full - 0.01]
    switch, reload = result["switch_ms_median"], result["reload_ms_median"]
    return {
        "full_accuracy>=0.94": {"measured": full, "met": full >= 0.94},
        "bottleneck<=45B_within_1pt": {
            "measured": None if best_small is None else {
                k: best_small[k] for k in ("config", "accuracy", "mean_bytes")},
            "met": best_small is not None},
        "bytes_span>=10x": {"measured": bytes_span, "met": bytes_span >= 10},
        "head_macs_span>=4x": {"measured": macs_span, "met": macs_span >= 4},
        "switch<=1ms_and_reload>=100x": {
            "measured": {"switch_ms": switch, "reload_ms": reload,
                         "ratio": reload / switch if switch > 0 else None},
            "met": switch <= 1.0 and reload >= 100 * switch},
        "exit>=40%_within_1pt": {
            "measured": None if not exit_ok else max(exit_ok,
                                                     key=lambda e: e["exit_fraction"]),
            "met": bool(exit_ok)},
    }


def markdown(result: dict[str, Any]) -> str:
    """The benchmark as Markdown tables."""
    lines = [f"# splitnet benchmark: {result['model_id']}", "",
             f"Test images: {result['test_images']}. Full model (LOCAL) accuracy: "
             f"**{result['full_accuracy']:.4f}**.", "",
             "| config | accuracy | mean B | p95 B | head MMAC | tail MMAC |",
             "|---|---:|---:|---:|---:|---:|"]
    for c in result["configs"]:
        lines.append(f"| {c['config']} | {c['accuracy']:.4f} | {c['mean_bytes']:.1f} | "
                     f"{c['p95_bytes']:.0f} | {c['head_macs'] / 1e6:.2f} | "
                     f"{c['tail_macs'] / 1e6:.2f} |")
    lines += ["", "| input codec | accuracy | mean B |", "|---|---:|---:|"]
    lines += [f"| {c['codec']} | {c['accuracy']:.4f} | {c['mean_bytes']:.1f} |"
              for c in result["input_codecs"]]
    lines += ["", f"Device-side exit (after stage {result['exit_point']}):", "",
              "| threshold | exit fraction | overall accuracy |", "|---:|---:|---:|"]
    lines += [f"| {e['threshold']} | {e['exit_fraction']:.3f} | {e['overall_accuracy']:.4f} |"
              for e in result["exit"]]
    lines += ["", f"Switch config: {result['switch_ms_median'] * 1000:.1f} µs median; "
              f"reload model: {result['reload_ms_median']:.1f} ms median.", "",
              "| target | measured | met |", "|---|---|---|"]
    lines += [f"| {name} | {json.dumps(t['measured'])} | {'met' if t['met'] else 'NOT met'} |"
              for name, t in result["targets"].items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m splitnet.bench",
        description="Evaluate the shipped checkpoint afresh on the Fashion-MNIST test set: "
                    "every split config's accuracy, payload bytes and MACs, input codecs, the "
                    "device-side exit, and config switching versus model reloading. Prints a "
                    "summary (or JSON with --json) and writes a Markdown table.")
    parser.add_argument("--json", action="store_true", help="print one JSON object to stdout")
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT,
                        help="checkpoint to benchmark (default: the shipped model)")
    parser.add_argument("--data-dir", default=None,
                        help="folder holding the four Fashion-MNIST IDX files")
    parser.add_argument("--limit", type=int, default=None,
                        help="first N test images only (default: all 10,000)")
    parser.add_argument("--repeats", type=int, default=100,
                        help="switch/reload repetitions (default: %(default)s)")
    parser.add_argument("--markdown", type=Path, default=Path("runs/bench/bench.md"),
                        help="where to write the Markdown table (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        result = run_bench(args.checkpoint, args.data_dir, args.limit, args.repeats)
    except (CheckpointError, DatasetNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    args.markdown.parent.mkdir(parents=True, exist_ok=True)
    args.markdown.write_text(markdown(result))
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        for name, target in result["targets"].items():
            print(f"{'met    ' if target['met'] else 'NOT met'}  {name}: "
                  f"{json.dumps(target['measured'])}")
    print(f"wrote {args.markdown}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
