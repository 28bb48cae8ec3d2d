"""The result tables quoted in the README and docs/, generated from results folders.

    README.md, docs/*.md ──► each block between
        <!-- table: KIND results/FOLDER -->  and  <!-- /table -->
    results/FOLDER/{grid.json | summary.json | bench.json | validate.json | ...}
        ──► render(KIND) ──► the block

Kinds: ``grid`` (the camera model's grid: each policy's geometric mean over the cells and
the headline ratio), ``run`` (one scenario's policies), ``bench`` (a model's rate curve
and its targets), and the simulator's ``sim-validate``, ``sim-profiles`` and
``sim-fleet``. ``python -m experiments.tables`` rewrites every block; ``--check`` only
says which are stale, so a test can hold the docs to the folders they name.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = ("README.md", "docs/*.md")
BLOCK = re.compile(r"(<!-- table: ([\w-]+) (results/[\w./-]+) -->\n)(.*?)(<!-- /table -->)",
                   re.S)
CAMERA = "resnet18_imagenette"


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f}"


def _ratio(entry: dict[str, Any]) -> str:
    low, high = entry.get("ci95_low"), entry.get("ci95_high")
    interval = "" if low is None or high is None else f" [{low:.2f}, {high:.2f}]"
    return f"{entry['ratio']:.2f}{interval}"


def grid_table(folder: Path) -> str:
    """The camera model's grid: per policy, geometric means over the cells of mean and p95
    response time, mean accuracy and dropped frames; then the headline ratio."""
    data = json.loads((folder / "grid.json").read_text())
    model = data["models"][CAMERA]
    cells, targets = model["cells"], model["targets"]
    names = sorted(targets["geomean_response_ms"], key=targets["geomean_response_ms"].get)

    def geo(policy: str, key: str) -> float:
        return math.exp(sum(math.log(max(c["policies"][policy][key], 1e-6)) for c in cells)
                        / len(cells))

    lines = ["| policy | mean response ms (geo. mean) | p95 ms (geo. mean) "
             "| accuracy (every frame) | dropped frames |", "|---|---:|---:|---:|---:|"]
    for name in names:
        accuracy = sum(c["policies"][name]["accuracy"] for c in cells) / len(cells)
        lines.append(f"| {name} | {_ms(geo(name, 'mean_response_ms'))} | "
                     f"{_ms(geo(name, 'p95_response_ms'))} | {accuracy:.3f} | "
                     f"{targets['dropped_frames'].get(name, 0)} |")
    head = targets["headline_adaptive_over_best_peer"]
    lines += ["", f"{len(cells)} cells; adaptive ÷ the strongest peer ({head['best_peer']}), "
              f"paired over repetitions: {_ratio(head)} (target ≤ {head['target']}: "
              f"{head['verdict']}); frames lost: {targets['lost_frames']['measured']}."]
    return "\n".join(lines) + "\n"


def run_table(folder: Path) -> str:
    """One scenario: per policy, mean response ± 95 %, p95, accuracy, drop rate and where
    frames finished."""
    summary = json.loads((folder / "summary.json").read_text())
    rows = sorted(summary["policies"].items(), key=lambda kv: kv[1]["mean_response_ms"])
    lines = ["| policy | mean response ms | p95 ms | accuracy | dropped | local / split / "
             "input % |", "|---|---:|---:|---:|---:|---|"]
    for name, row in rows:
        half = row.get("ci95_response_ms")
        spread = "" if half is None else f" ± {half:.0f}"
        shares = row.get("placements") or {}
        mix = " / ".join(f"{100 * shares.get(p, 0):.0f}"
                         for p in ("local", "split", "offload-input"))
        lines.append(f"| {name} | {row['mean_response_ms']:.0f}{spread} | "
                     f"{row['p95_response_ms']:.0f} | {row['accuracy']:.3f} | "
                     f"{100 * row['drop_rate']:.0f} % | {mix} |")
    return "\n".join(lines) + "\n"


def bench_table(folder: Path) -> str:
    """A model's benchmark: each target, what was measured and whether it was met."""
    data = json.loads((folder / "bench.json").read_text())
    lines = ["| target | measured | met |", "|---|---|---|"]
    for name, target in data["targets"].items():
        met = {True: "met", False: "not met"}.get(target.get("met"), "–")
        lines.append(f"| {name.replace('_', ' ')} | {_compact(target.get('measured'))} "
                     f"| {met} |")
    return "\n".join(lines) + "\n"


def sim_validate_table(folder: Path) -> str:
    """The simulator against the emulated grid, per model: rows within the target, worst."""
    data = json.loads((folder / "validate.json").read_text())
    lines = ["| model | cell × policy rows within 10 % and 10 points | worst ratio "
             "(simulated ÷ emulated) | worst share gap (points) |", "|---|---:|---:|---:|"]
    for model, entry in data["models"].items():
        lines.append(f"| {model} | {entry['within']} of {entry['rows']} | "
                     f"{entry['worst_ratio']:.2f} | {entry['worst_share_gap_points']:.0f} |")
    return "\n".join(lines) + "\n"


def sim_profiles_table(folder: Path) -> str:
    """The grid's cells at each edge profile: the adaptive policy against its best peer and
    the per-frame bound."""
    data = json.loads((folder / "profiles.json").read_text())
    lines = ["| edge profile | adaptive ÷ best peer (geo. mean) | worst cell | adaptive ÷ "
             "per-frame bound (geo. mean) | source |", "|---|---:|---:|---:|---|"]
    for entry in data["profiles"]:
        lines.append(f"| {entry['profile']} | {entry['geomean_adaptive_over_best_peer']:.3f} | "
                     f"{entry['worst_adaptive_over_best_peer']:.3f} | "
                     f"{entry['geomean_adaptive_over_bound']:.3f} | {entry['source']} |")
    return "\n".join(lines) + "\n"


def sim_fleet_table(folder: Path) -> str:
    """Fleets: per replica count and fleet size, each policy's goodput (frames/s at full
    accuracy) and p95 response; then the knees and the offload share's spread."""
    data = json.loads((folder / "fleet.json").read_text())
    rows = data["rows"]
    policies = sorted({r["policy"] for r in rows}, key=lambda p: (p != "adaptive", p))
    by_key = {(r["replicas"], r["devices"], r["policy"]): r for r in rows}
    lines = ["| replicas | devices | " + " | ".join(policies) + " |",
             "|---:|---:|" + "---:|" * len(policies)]
    for replicas, devices in sorted({(r["replicas"], r["devices"]) for r in rows}):
        cells = [by_key.get((replicas, devices, p)) for p in policies]
        lines.append(f"| {replicas} | {devices} | " + " | ".join(
            "–" if c is None else f"{c['goodput_fps']:.0f} / {_ms(c['p95_response_ms'])}"
            for c in cells) + " |")
    herding = data["no_herding"]
    knees = ", ".join(f"{k} {v['knee_devices']}" for k, v in data["knees"].items()
                      if k.startswith("adaptive@"))
    spread = ", ".join(f"{k} replica(s) {v:.1f}"
                       for k, v in herding["measured_points"].items())
    lines += ["", "Each cell: goodput (frames/s at full accuracy) / p95 response ms. "
              f"Adaptive goodput within 1 % of every peer's at every size: "
              f"{'met' if data['adaptive_goodput']['met'] else 'not met'}; adaptive knees "
              f"(replicas@devices): {knees}; offload share's spread over 10 s windows at "
              f"the largest fleet, points: {spread} (target ≤ {herding['target_points']}: "
              f"{'met' if herding['met'] else 'not met'})."]
    return "\n".join(lines) + "\n"


def _compact(value: Any) -> str:
    """A measured figure in a table cell: floats to 4 significant digits, dicts inline."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k.replace('_', ' ')} {_compact(v)}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(_compact(v) for v in value)
    return "–" if value is None else str(value)


RENDERERS: dict[str, Callable[[Path], str]] = {
    "grid": grid_table, "run": run_table, "bench": bench_table,
    "sim-validate": sim_validate_table, "sim-profiles": sim_profiles_table,
    "sim-fleet": sim_fleet_table}


def documents(root: Path = ROOT) -> list[Path]:
    return [p for pattern in DOCUMENTS for p in sorted(root.glob(pattern))]


def refresh(text: str, root: Path = ROOT) -> tuple[str, list[str]]:
    """``text`` with every table block rendered afresh, and the folders whose block
    changed. A block naming a missing folder or an unknown kind raises ValueError."""
    changed: list[str] = []

    def render(match: re.Match[str]) -> str:
        kind, folder = match.group(2), match.group(3)
        if kind not in RENDERERS:
            raise ValueError(f"unknown table kind {kind!r}; kinds: {', '.join(RENDERERS)}")
        if not (root / folder).is_dir():
            raise ValueError(f"{folder} does not exist: run the command that writes it, or "
                             "remove the table")
        body = RENDERERS[kind](root / folder)
        if body != match.group(4):
            changed.append(folder)
        return match.group(1) + body + match.group(5)

    return BLOCK.sub(render, text), changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.tables",
        description="Regenerate the result tables in README.md and docs/*.md from the "
                    "results folders each names (<!-- table: KIND results/FOLDER -->).")
    parser.add_argument("--check", action="store_true",
                        help="change nothing; exit 1 if a table differs from its folder")
    args = parser.parse_args(argv)
    stale = []
    for path in documents():
        text, changed = refresh(path.read_text())
        stale += [f"{path.relative_to(ROOT)}: {folder}" for folder in changed]
        if changed and not args.check:
            path.write_text(text)
    for entry in stale:
        print(("stale " if args.check else "rewrote ") + entry)
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    raise SystemExit(main())
