"""Profile a checkpoint on the real test set and write its model card.

    checkpoint.pt ─► Evaluator(10,000 test images) ─► card JSON next to the checkpoint
                                                      {model_id, full, configs[], exits[],
                                                       input_codecs[]}

The planner reads the card; the edge server serves only requests naming its ``model_id``.
Usage: ``python -m splitnet.profile [--checkpoint PATH]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from splitnet.checkpoint import CheckpointError, LoadedModel, load_checkpoint
from splitnet.data import DatasetNotFoundError, load_split
from splitnet.evaluate import EXIT_THRESHOLDS, Evaluator
from splitnet.zoo import DEFAULT_CHECKPOINT, card_path_for

CARD_VERSION = 1


def build_card(loaded: LoadedModel, evaluator: Evaluator,
               latency_repeats: int = 30) -> dict[str, Any]:
    """Every number the planner needs about one model, measured on ``evaluator``'s data."""
    model = loaded.model
    spec = model.spec
    return {
        "card_version": CARD_VERSION,
        "model_id": loaded.model_id,
        "arch": spec.name,
        "checkpoint": loaded.path.name,
        "test_images": len(evaluator.labels),
        "split_points": {str(p): list(model.feature_shape(p)) for p in model.split_points},
        "widths": list(spec.bottleneck_widths),
        "bits": list(spec.bits),
        "exit_points": list(spec.exit_points),
        "exit_thresholds": list(EXIT_THRESHOLDS),
        "latency_measured_on": f"{platform.machine()} {platform.processor() or ''}, "
                               f"1 torch thread, torch {torch.__version__}".replace("  ", " "),
        "train_minutes": loaded.meta.get("train_minutes"),
        "full": evaluator.local(latency_repeats),
        "configs": [asdict(s) for s in evaluator.all_split_configs(latency_repeats)],
        "exits": evaluator.exits(),
        "input_codecs": evaluator.input_codecs(),
    }


def write_card(checkpoint: str | os.PathLike[str] = DEFAULT_CHECKPOINT,
               data_dir: str | None = None, limit: int | None = None,
               latency_repeats: int = 30) -> Path:
    """Profile ``checkpoint`` and write ``<name>.card.json`` beside it."""
    loaded = load_checkpoint(checkpoint)
    test = load_split("test", data_dir)
    evaluator = Evaluator(loaded.model, test.images[:limit], test.labels[:limit])
    card = build_card(loaded, evaluator, latency_repeats)
    path = card_path_for(checkpoint)
    path.write_text(json.dumps(card, indent=1) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m splitnet.profile",
        description="Measure a checkpoint on the Fashion-MNIST test set (accuracy, payload "
                    "bytes, MACs, head latency, exits, input codecs) and write its model card "
                    "as <checkpoint>.card.json.")
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT,
                        help="checkpoint to profile (default: the shipped model)")
    parser.add_argument("--data-dir", default=None,
                        help="folder holding the four Fashion-MNIST IDX files")
    parser.add_argument("--limit", type=int, default=None,
                        help="profile on the first N test images only (default: all 10,000)")
    args = parser.parse_args(argv)
    try:
        path = write_card(args.checkpoint, args.data_dir, args.limit)
    except (CheckpointError, DatasetNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
