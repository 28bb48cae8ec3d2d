"""Coverage-guided fuzzing (atheris, libFuzzer) of every parser that reads outside input.

    python -m tests.fuzz --seconds 60 --json        every target for 60 s each
    python -m tests.fuzz --runs 2000 codec          one target, a fixed number of inputs

Each target runs in a child process (libFuzzer exits its process when done); the parent
reads libFuzzer's final statistics and prints, per target: executions, coverage (edges),
corpus entries, and crashes (an exception the parser does not document as its refusal).

    codec     splitnet.codec.decode: a payload for every split config shape and bit depth
    entropy   splitnet.codec.decode_entropy: the camera model's entropy-coded latents at
              every rate, with its shipped tables (half the inputs get a valid header)
    request   the servicer's checks, in process: protobuf InferRequest ─► config ─►
              Engine.prepare (payload or input image) for the small model
    reply     the device's reading of an edge's reply: protobuf InferReply ─►
              messages.InferReply ─► its check against what was sent (a malformed reply is
              refused as such, never a crash of the stream reader)
    image     the device's image loader (splitnet.images.decode_image): any file a
              drop folder may hold, refused with ImageDecodeError when it is not an image
    scenario  experiments.scenario.parse_scenario: TOML text
    trace     experiments.traces.Trace.parse: Mahimahi text

A crash leaves its input in ``runs/fuzz/<target>/crash-*``; rerun it with
``python -m tests.fuzz --runs 1 <target> --input FILE``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

TARGETS = ("codec", "entropy", "request", "reply", "image", "scenario", "trace")
OUT_DIR = Path("runs/fuzz")
# libFuzzer's memory ceiling per target process. The interpreter with the camera model
# loaded starts near 0.4 GB, and under atheris the entropy target's RSS climbs by a few kB
# per input (the same inputs decoded without atheris stay flat): libFuzzer's default of
# 2 GB stopped it near 270,000 inputs.
RSS_LIMIT_MB = 8192


def _target(name: str) -> Callable[[bytes], None]:
    """The fuzz target ``name``, its modules imported under atheris' instrumentation."""
    import atheris

    with atheris.instrument_imports(include=["splitnet", "edge_server", "experiments"]):
        if name == "codec":
            from splitnet import codec
            from splitnet.codec import PayloadError
            from splitnet.model import create_model

            model = create_model("mnv2_fmnist")
            shapes = [(model.code_shape(c), c.bits) for c in model.split_configs()]

            def run(data: bytes) -> None:
                if not data:
                    return
                shape, bits = shapes[data[0] % len(shapes)]
                with contextlib.suppress(PayloadError):
                    codec.decode(data[1:], shape, bits)
            return run
        if name == "entropy":
            from splitnet import codec
            from splitnet.codec import PayloadError
            from splitnet.config import Config
            from splitnet.zoo import checkpoint_for, load_pretrained

            model = load_pretrained(checkpoint_for("resnet18_imagenette")).model
            tables = model.coding_tables
            shape = model.code_shape(Config(split=1, rate=0))
            header = bytes([0xB1, 0, *shape])

            def run(data: bytes) -> None:
                if not data:
                    return
                rate = data[0] % tables.rates
                payload = data[1:]
                if data[0] & 0x80:
                    payload = header[:1] + bytes([rate]) + header[2:] + payload
                with contextlib.suppress(PayloadError):
                    codec.decode_entropy(payload, tables, rate, shape)
            return run
        if name == "request":
            from google.protobuf.message import DecodeError
            from splitnet_proto.messages import InferRequest
            from splitnet_proto.v1 import inference_pb2 as pb

            from edge_server.engine import Engine
            from splitnet.codec import PayloadError
            from splitnet.config import ConfigError
            from splitnet.zoo import checkpoint_for, load_pretrained

            engine = Engine(load_pretrained(checkpoint_for("mnv2_fmnist")))

            def run(data: bytes) -> None:
                try:
                    request = InferRequest.from_message(pb.InferRequest.FromString(data))
                    engine.prepare(request.config, request.payload)
                except (DecodeError, ConfigError, PayloadError):
                    pass
            return run
        if name == "reply":
            from google.protobuf.message import DecodeError
            from splitnet_proto.messages import InferReply
            from splitnet_proto.v1 import inference_pb2 as pb

            from splitnet.config import Config, ConfigError

            sent = Config(split=3, width=4, bits=4)

            def run(data: bytes) -> None:
                try:
                    reply = InferReply.from_message(pb.InferReply.FromString(data))
                except (DecodeError, ConfigError):
                    return
                reply.problem(7, sent, "mnv2_fmnist-0123456789abcdef", 10)
            return run
        if name == "image":
            from splitnet.images import ImageDecodeError, decode_image

            def run(data: bytes) -> None:
                with contextlib.suppress(ImageDecodeError):
                    decode_image(data, 224, max_pixels=4_000_000)
            return run
        if name == "scenario":
            from experiments.scenario import ScenarioError, parse_scenario
            from experiments.traces import TraceError

            def run(data: bytes) -> None:
                with contextlib.suppress(ScenarioError, TraceError):
                    parse_scenario(data.decode("utf-8", "replace"), "fuzz")
            return run
        if name == "trace":
            from experiments.traces import Trace, TraceError

            def run(data: bytes) -> None:
                try:
                    trace = Trace.parse(data.decode("utf-8", "replace"), "fuzz")
                    trace.capacity_bps(0, 1000)
                except TraceError:
                    pass
            return run
    raise ValueError(f"unknown target {name!r}; choose from {', '.join(TARGETS)}")


def _seeds(name: str) -> list[bytes]:
    """Well-formed inputs to start the corpus from, so that mutation starts past the
    magic bytes and headers: real payloads, real requests, the shipped files."""
    import numpy as np
    import torch
    from splitnet_proto.messages import InferRequest

    from experiments.scenario import SCENARIO_DIR
    from experiments.traces import resolve_trace
    from splitnet import codec
    from splitnet.config import Config
    from splitnet.data.eval_sets import stream_images
    from splitnet.input_codecs import encode_image
    from splitnet.preprocess import images_to_input
    from splitnet.zoo import checkpoint_for, load_pretrained

    if name == "scenario":
        return [p.read_bytes() for p in sorted(SCENARIO_DIR.glob("*.toml"))]
    if name == "trace":
        return [b"\n".join(resolve_trace(t).read_bytes().split(b"\n")[:200])
                for t in ("ATT-LTE-driving.up", "TMobile-LTE-short.up")]
    if name == "entropy":
        camera = load_pretrained(checkpoint_for("resnet18_imagenette")).model
        photos = stream_images("resnet18_imagenette").images[:2] if _has_imagenette() \
            else np.random.default_rng(0).integers(0, 255, (2, 224, 224, 3), np.uint8)
        eb = camera.require_entropy_bottleneck()
        entropy_seeds = []
        with torch.no_grad():
            for rate in range(eb.rates):
                head = camera.forward_head(images_to_input(photos[:1]),
                                           Config(split=eb.spec.point, rate=rate))
                assert head.code is not None
                entropy_seeds.append(bytes([rate]) + codec.encode(head.code))
        return entropy_seeds
    if name == "image":
        photo = stream_images("resnet18_imagenette").images[0] \
            if _has_imagenette() else np.full((64, 48, 3), 90, np.uint8)
        small = photo[::4, ::4]
        return [encode_image(small, "jpeg75"), encode_image(small, "png"),
                encode_image(small[..., 0], "png")]
    if name == "reply":
        from splitnet_proto.messages import InferReply

        reply = InferReply(7, Config(split=3, width=4, bits=4), (0.1,) * 10, 3, 1.0, 2.0, 4,
                           model_tag=0x01234567)
        return [reply.to_message().SerializeToString()]
    model = load_pretrained(checkpoint_for("mnv2_fmnist")).model
    images = stream_images("mnv2_fmnist").images[:2]
    configs = model.split_configs()
    seeds = []
    with torch.no_grad():
        for index, config in enumerate(configs[::3]):
            head = model.forward_head(images_to_input(images[:1]), config)
            assert head.code is not None
            payload = codec.encode(head.code)
            seeds.append(bytes([configs.index(config)]) + payload if name == "codec" else
                         InferRequest(index, config, payload).to_message().SerializeToString())
    if name == "request":
        for codec_name in ("png", "raw-zstd", "jpeg90"):
            seeds.append(InferRequest(0, Config.offload_input(codec_name),
                                      encode_image(images[1], codec_name))
                         .to_message().SerializeToString())
    return seeds


def _has_imagenette() -> bool:
    from splitnet.data.imagenette import find_imagenette

    try:
        find_imagenette()
    except Exception:  # noqa: BLE001 - any reason: fall back to a synthetic seed
        return False
    return True


def _child(name: str, seconds: float | None, runs: int | None, input_file: Path | None) -> None:
    import atheris

    run = _target(name)
    work = OUT_DIR / name
    corpus = work / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    if not any(corpus.iterdir()):
        for index, seed in enumerate(_seeds(name)):
            (corpus / f"seed-{index}").write_bytes(seed)
    args = [sys.argv[0], "-print_final_stats=1", f"-artifact_prefix={work}/",
            "-max_len=8192", f"-rss_limit_mb={RSS_LIMIT_MB}"]
    if seconds is not None:
        args.append(f"-max_total_time={int(seconds)}")
    if runs is not None:
        args.append(f"-runs={runs}")
    args.append(str(input_file) if input_file else str(work / "corpus"))
    atheris.Setup(args, run)
    atheris.Fuzz()


def fuzz(name: str, seconds: float | None, runs: int | None) -> dict[str, Any]:
    """Run one target in a child process; its executions, coverage, corpus and crashes."""
    command = [sys.executable, "-m", "tests.fuzz", "--child", name]
    command += ["--seconds", str(seconds)] if seconds is not None else []
    command += ["--runs", str(runs)] if runs is not None else []
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True,
                          timeout=(seconds or 0) + 600)
    log = done.stdout + done.stderr

    def last(pattern: str) -> int | None:
        found = re.findall(pattern, log)
        return int(found[-1]) if found else None

    crashes = sorted(str(p) for p in (OUT_DIR / name).glob("crash-*"))
    return {"target": name, "seconds": round(time.monotonic() - started, 1),
            "executions": last(r"stat::number_of_executed_units: (\d+)"),
            "edges_covered": last(r"cov: (\d+)"), "corpus_entries": last(r"corp: (\d+)/"),
            "crashed": done.returncode != 0, "crash_inputs": crashes,
            "log_tail": log[-1500:] if done.returncode != 0 else ""}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fuzz",
        description="Coverage-guided fuzzing (atheris) of the payload decoder, the edge's "
                    "request checks, and the scenario and trace parsers. Prints per target: "
                    "executions, edges covered, corpus entries and crashes. Target: >= 1,000,000 "
                    "executions per target and no crash (docs/targets.md).")
    parser.add_argument("targets", nargs="*", default=list(TARGETS),
                        help=f"which (default: all of {', '.join(TARGETS)})")
    parser.add_argument("--seconds", type=float, default=None,
                        help="time per target (default: 60 unless --runs is given)")
    parser.add_argument("--runs", type=int, default=None, help="inputs per target")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--input", type=Path, default=None,
                        help="run one saved input (a crash) through the target")
    args = parser.parse_args(argv)
    if args.child or args.input:
        _child(args.child or args.targets[0], args.seconds, args.runs, args.input)
        return 0
    seconds = args.seconds if args.seconds is not None or args.runs else 60.0
    results = [fuzz(t, seconds, args.runs) for t in args.targets]
    report = {"targets": results,
              "met": all(not r["crashed"] and (r["executions"] or 0) >= 1_000_000
                         for r in results)}
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        for r in results:
            print(f"{r['target']:<9} {r['executions']} executions in {r['seconds']} s, "
                  f"{r['edges_covered']} edges, {r['corpus_entries']} corpus entries, "
                  f"{'CRASHED: ' + ', '.join(r['crash_inputs']) if r['crashed'] else 'no crash'}")
    return 1 if any(r["crashed"] for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
