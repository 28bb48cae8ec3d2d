"""Profile a checkpoint on its held-apart images and write its model card.

    checkpoint.pt ─► Evaluator(card images, see splitnet.data.eval_sets) ─► ModelCard
                     ─► <checkpoint>.card.json {model_id, full, configs[], exits[],
                                                input_codecs[], dataset, int8_engine}

The planner reads the card; the edge server serves only requests naming its ``model_id``.
Usage: ``python -m splitnet.profile [--model NAME | --checkpoint PATH]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

import torch

from splitnet.card import CARD_VERSION, CardError, ModelCard
from splitnet.checkpoint import CheckpointError, LoadedModel, load_checkpoint
from splitnet.data import DatasetNotFoundError
from splitnet.data.eval_sets import LabelledImages, card_images, dataset_of
from splitnet.evaluate import EXIT_THRESHOLDS, Evaluator
from splitnet.zoo import card_path_for, checkpoint_for, list_zoo

DATASETS = {
    "fashion-mnist": {
        "name": "Fashion-MNIST (Zalando Research), 28x28 greyscale",
        "licence": "MIT",
        "trained_on": "Fashion-MNIST train (60,000 images)",
    },
    "imagenette": {
        "name": "Imagenette v2 (fast.ai), ten ImageNet classes, resized to 224x224",
        "licence": "ImageNet terms: non-commercial research and education only; the images "
                   "are not redistributed with this model",
        "trained_on": "Imagenette train less the held-apart 10 % (seed 0)",
    },
}


def build_card(loaded: LoadedModel, evaluator: Evaluator, data: LabelledImages,
               latency_repeats: int = 30) -> ModelCard:
    """Every number the planner needs about one model, measured on ``evaluator``'s data."""
    model = loaded.model
    spec = model.spec
    threads = torch.get_num_threads()
    return ModelCard(
        card_version=CARD_VERSION,
        model_id=loaded.model_id,
        arch=spec.name,
        checkpoint=loaded.path.name,
        profiled_on=data.description,
        images=len(evaluator.labels),
        input_shape=list(spec.input_shape),
        split_points={str(p): list(model.feature_shape(p)) for p in model.split_points},
        widths=list(spec.bottleneck_widths),
        bits=list(spec.bits),
        exit_points=list(spec.exit_points),
        exit_thresholds=list(EXIT_THRESHOLDS),
        latency_measured_on=f"{platform.machine()} {platform.processor() or ''}, "
                            f"1 torch thread (of {threads}), torch {torch.__version__}"
                            .replace("  ", " "),
        train_minutes=loaded.meta.get("train_minutes"),
        full=evaluator.local(latency_repeats),
        configs=evaluator.all_split_configs(latency_repeats),
        exits=evaluator.exits(),
        input_codecs=evaluator.input_codecs(),
        dataset=DATASETS[dataset_of(spec.name)],
        int8_engine=getattr(model.int8_head, "engine", None) if model.has_int8 else None,
    )


def write_card(checkpoint: str | os.PathLike[str], data_dir: str | None = None,
               limit: int | None = None, latency_repeats: int = 30,
               exits_only: bool = False) -> Path:
    """Profile ``checkpoint`` and write ``<name>.card.json`` beside it. With ``exits_only``,
    re-measure only the exits of the card already there, on the images it names, and keep
    every other figure (its timings come from the host that wrote it)."""
    loaded = load_checkpoint(checkpoint)
    data = card_images(loaded.model.spec.name, data_dir).head(limit)
    evaluator = Evaluator(loaded.model, data.images, data.labels)
    path = card_path_for(checkpoint)
    if exits_only:
        card = ModelCard.load(path)
        if card.images != len(data.labels) or card.profiled_on != data.description:
            raise CardError(f"{path} was measured on {card.images} images ({card.profiled_on})"
                            f", not these {len(data.labels)} ({data.description}); profile "
                            "the whole card instead")
        card.exits = evaluator.exits()
    else:
        card = build_card(loaded, evaluator, data, latency_repeats)
    card.save(path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m splitnet.profile",
        description="Measure a checkpoint on its held-apart images (accuracy, payload bytes, "
                    "MACs, head latency in fp32 and int8, exits, input codecs) and write its "
                    "model card as <checkpoint>.card.json. The images are never those the "
                    "benchmark scores: Fashion-MNIST test half A, or the held-apart 10 %% of "
                    "Imagenette train.")
    parser.add_argument("--model", choices=list_zoo(), default=None,
                        help="a shipped model to profile (default: mnv2_fmnist)")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="profile this checkpoint instead of a shipped one")
    parser.add_argument("--data-dir", default=None,
                        help="folder with the data set (Fashion-MNIST IDX files, or Imagenette "
                             "in the ImageFolder layout)")
    parser.add_argument("--limit", type=int, default=None,
                        help="profile on the first N card images only (default: all)")
    parser.add_argument("--exits-only", action="store_true",
                        help="re-measure only the exits of the existing card (same images) "
                             "and keep its other figures, timings included")
    args = parser.parse_args(argv)
    checkpoint = args.checkpoint or checkpoint_for(args.model or "mnv2_fmnist")
    try:
        path = write_card(checkpoint, args.data_dir, args.limit, exits_only=args.exits_only)
    except (CheckpointError, CardError, DatasetNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
