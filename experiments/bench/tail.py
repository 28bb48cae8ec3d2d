"""The edge's model work alone: each tail in a tight loop at batch sizes 1 to 32.

    real images ─► the device's part ─► payloads ─► Engine.prepare (once)
    for each batch size, rounds interleaved: Engine.run_batch(batch) ─► ms (median)
    ─► results/edge-profile-host/profile.json: ms per batch for each (model, config),
       the decode ms of one request, and the raw throughput at the best batch size

This is the ceiling the server is judged against (its served throughput ÷ this raw
throughput is its efficiency, ``experiments.bench.edge``), and the host's edge profile the
simulator uses (``experiments.sim.edge``). One torch thread, as a served model has.

Usage: ``python -m experiments.bench.tail --json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from edge_server.engine import Decoded, Engine
from splitnet import codec
from splitnet.card import ModelCard
from splitnet.checkpoint import load_checkpoint
from splitnet.config import Config, Placement
from splitnet.data.eval_sets import stream_images
from splitnet.input_codecs import encode_image
from splitnet.preprocess import images_to_input
from splitnet.provenance import RESULTS_DIR, command_line, finish_results, start_results
from splitnet.zoo import DEFAULT_MODEL, SMALL_MODEL, checkpoint_for, load_card

BATCH_SIZES = (1, 2, 4, 8, 16, 32)
# per model: a config of every kind of tail the edge runs (split points, the entropy
# bottleneck, raw activations, whole frames)
PROFILED = {
    DEFAULT_MODEL: ("split1/rate3", "split1/w12/b2", "split2/w12/b2", "split3/w12/b2",
                    "split1/raw/b8", "split3/raw/b8", "offload/jpeg90"),
    SMALL_MODEL: ("split1/w8/b4", "split2/w4/b4", "split3/w4/b4", "split1/raw/b8",
                  "offload/png"),
}
PROFILE_FOLDER = RESULTS_DIR / "edge-profile-host"


def payloads(engine: Engine, config: Config, count: int) -> list[bytes]:
    """``count`` payloads of ``config`` from the model's evaluation images."""
    spec = engine.model.spec
    pixels = stream_images(spec.name).images[:count]
    if config.placement is Placement.OFFLOAD_INPUT:
        assert config.input_codec is not None
        return [encode_image(p, config.input_codec) for p in pixels]
    with torch.no_grad():
        head = engine.model.forward_head(images_to_input(pixels), config.without_exit())
    assert head.code is not None
    return codec.encode_batch(head.code)


def profile_config(engine: Engine, card: ModelCard, config: Config,
                   rounds: int) -> dict[str, Any]:
    """Median ms per batch at each batch size (sizes interleaved in every round), and the
    median ms to decode one request."""
    sent = payloads(engine, config, max(BATCH_SIZES))
    decode_ms: list[float] = []
    decoded: list[Decoded] = []
    for payload in sent:
        started = time.perf_counter()
        decoded.append(engine.prepare(config, payload))
        decode_ms.append((time.perf_counter() - started) * 1000)
    engine.run_batch(config, decoded[:1])  # warm up
    times: dict[int, list[float]] = {b: [] for b in BATCH_SIZES}
    for _ in range(rounds):
        for size in BATCH_SIZES:
            started = time.perf_counter()
            engine.run_batch(config, decoded[:size])
            times[size].append((time.perf_counter() - started) * 1000)
    batch_ms = {size: statistics.median(ms) for size, ms in times.items()}
    best = max(BATCH_SIZES, key=lambda b: b / batch_ms[b])
    return {"batch_ms": batch_ms, "decode_ms": statistics.median(decode_ms),
            "best_batch": best, "raw_rps": best / batch_ms[best] * 1000,
            "tail_mmac": tail_mmac(card, config)}


def tail_mmac(card: ModelCard, config: Config) -> float:
    """What the edge computes for ``config``, in MMAC (the whole network for a frame)."""
    row = card.config_row(config) if config.placement is Placement.SPLIT else None
    return (row.tail_macs if row is not None else card.full.macs) / 1e6


def profile(rounds: int = 7, models: tuple[str, ...] = tuple(PROFILED)) -> dict[str, Any]:
    """Every profiled tail of ``models`` (see PROFILED)."""
    torch.set_num_threads(1)
    out: dict[str, Any] = {"batch_sizes": list(BATCH_SIZES), "torch_threads": 1,
                           "models": {}}
    for model in models:
        configs = PROFILED[model]
        engine = Engine(load_checkpoint(checkpoint_for(model)))
        card = load_card(checkpoint_for(model))
        out["models"][model] = {
            "model_id": engine.model_id, "precision": engine.precision,
            "full_mmac": card.full.macs / 1e6,
            "configs": {c: profile_config(engine, card, Config.parse(c), rounds)
                        for c in configs}}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.bench.tail",
        description="Time each kind of tail the edge runs, model alone in a tight loop, at "
                    "batch sizes 1-32 (one torch thread, sizes interleaved, medians): the "
                    "raw throughput the server's efficiency is measured against, and the "
                    "host's edge profile for the simulator. Writes "
                    f"{PROFILE_FOLDER}/profile.json.")
    parser.add_argument("--rounds", type=int, default=7, help="timed runs of each size")
    parser.add_argument("--models", nargs="+", choices=list(PROFILED), default=list(PROFILED))
    parser.add_argument("--out", type=Path, default=PROFILE_FOLDER)
    parser.add_argument("--json", action="store_true", help="print the JSON")
    args = parser.parse_args(argv)
    meta = start_results(args.out, command_line("experiments.bench.tail", argv))
    result = profile(args.rounds, tuple(args.models))
    (args.out / "profile.json").write_text(json.dumps(result, indent=1) + "\n")
    finish_results(args.out, meta)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        for model, entry in result["models"].items():
            for config, row in entry["configs"].items():
                print(f"{model} {config}: " + ", ".join(
                    f"b{b} {ms:.1f} ms" for b, ms in row["batch_ms"].items())
                      + f"; raw {row['raw_rps']:.0f}/s at batch {row['best_batch']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
