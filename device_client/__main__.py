"""``python -m device_client``: classify camera or video frames (or a folder of images)
through an edge server, or on the device alone."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from device_client.client import (
    WHERE_EDGE,
    WHERE_EXIT,
    WHERE_LOCAL,
    DeviceClient,
    Frame,
    InferenceResult,
)
from device_client.options import DeviceOptions, LinkOptions, PolicyOptions
from device_client.pipeline import StreamResult, run_stream
from device_client.planner import POLICIES
from device_client.service import (
    FRAME_SUFFIXES,
    ServiceConfigError,
    load_service_config,
    run_service,
)
from device_client.sources import FrameSource, SourceError, open_source
from splitnet.checkpoint import CheckpointError
from splitnet.config import Config, ConfigError
from splitnet.data import DatasetNotFoundError
from splitnet.data.eval_sets import class_names, default_cache_dir, stream_images
from splitnet.images import ImageDecodeError
from splitnet.tokens import (
    TokenError,
    add_token_options,
    host_of,
    plaintext_token_problem,
    read_token,
)
from splitnet.zoo import DEFAULT_MODEL, checkpoint_for, list_zoo


def summarize(results: list[InferenceResult], labels: np.ndarray | None,
              n: int) -> dict[str, Any]:
    """The summary the CLI prints: counts, accuracy (when labels are known), latency, bytes,
    energy."""
    latencies = np.array([r.latency.total_ms for r in results])
    predicted = np.array([r.label for r in results])
    accuracy = (float((predicted == labels[: len(results)]).mean())
                if results and labels is not None else None)
    return {
        "n": n,
        "results": len(results),
        "accuracy": accuracy,
        "offloaded": sum(r.where == WHERE_EDGE for r in results),
        "exited_on_device": sum(r.where == WHERE_EXIT for r in results),
        "local": sum(r.where == WHERE_LOCAL for r in results),
        "fallbacks": sum(r.fallback for r in results),
        "mean_latency_ms": float(latencies.mean()) if results else 0.0,
        "p95_latency_ms": float(np.percentile(latencies, 95)) if results else 0.0,
        "bytes_sent": sum(r.bytes_sent for r in results),
        "energy_mj": float(sum(r.energy_mj for r in results)),
        "median_overhead_ms": float(np.median([r.overhead_ms for r in results]))
        if results else 0.0,
        "configs": dict(sorted(_count(str(r.config) for r in results).items())),
    }


def _count(items: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in items:
        counts[item] = counts.get(item, 0) + 1
    return counts


def build_parser() -> argparse.ArgumentParser:
    """The command's options. Long because: one declarative list of every option, each with
    the help a user reads; splitting it would only scatter them."""
    parser = argparse.ArgumentParser(
        prog="python -m device_client",
        description="Run images through splitnet's device client: N evaluation images of "
                    "the model's dataset, every class mixed in a fixed random order "
                    "(Imagenette val for the camera model, Fashion-MNIST test half B for the "
                    "small one), every image file in a "
                    "folder (--images), or a live camera or a video file at its own frame "
                    "rate (--camera, --video). For each image the policy picks split point, "
                    "bottleneck width, bits, int8 or fp32 head and exit threshold (or LOCAL, "
                    "or OFFLOAD_INPUT at a JPEG quality) from live bandwidth, RTT, server "
                    "load, head speed and battery estimates. Every image gets a result: if "
                    "the edge fails, it is finished on the device.",
        epilog="Examples:\n"
               "  python -m edge_server &                  # in another shell\n"
               "  python -m device_client --edge 127.0.0.1:50051 --n 200\n"
               "  python -m device_client --edge 127.0.0.1:50051 --images ~/frames --records r.jl\n"
               "  python -m device_client --edge 127.0.0.1:50051 --policy neurosurgeon --json\n"
               "  python -m device_client --model mnv2_fmnist --policy local --n 100  # no edge\n"
               "  python -m device_client --edge 127.0.0.1:50051 --camera      # a live camera\n"
               "  python -m device_client --edge 127.0.0.1:50051 --video clip.mp4 --records r.jl\n"
               f"Policies: {', '.join(POLICIES)}.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--edge", default=None,
                        help="edge server HOST:PORT; several replicas as HOST:PORT,HOST:PORT "
                             "or dns:///NAME:PORT (each input goes to the least loaded "
                             "replica that is up, and is retried on another if one fails); "
                             "without it everything runs on the device")
    parser.add_argument("--policy", default="adaptive", choices=POLICIES,
                        help="how to choose per input (default: %(default)s)")
    parser.add_argument("--model", default=DEFAULT_MODEL, choices=list_zoo(),
                        help="which zoo model (default: %(default)s, the camera model)")
    parser.add_argument("--images", type=Path, default=None,
                        help="classify every image file under this folder (JPEG, PNG, ...) "
                             "instead of the evaluation images; frames are decoded and "
                             "resized on the device, inside the measured latency")
    parser.add_argument("--camera", type=int, nargs="?", const=0, default=None,
                        metavar="N",
                        help="stream frames from camera N (default 0): picamera2 when "
                             "installed, else V4L2 /dev/videoN through OpenCV; pipelined "
                             "(the next frame's head runs while the edge answers this one), "
                             "stale frames dropped; Ctrl-C stops after the frame in flight")
    parser.add_argument("--video", type=Path, default=None, metavar="FILE",
                        help="stream a video file at its own frame rate, like --camera")
    parser.add_argument("--loop", action="store_true", help="loop --video")
    parser.add_argument("--seconds", type=float, default=None,
                        help="stop a --camera or --video stream after this long")
    parser.add_argument("--n", type=int, default=100,
                        help="number of images (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print one JSON summary object")
    add_token_options(parser, "the edge requires")
    parser.add_argument("--tls-ca", type=Path, default=None,
                        help="PEM CA certificate: connect with TLS and trust this CA")
    parser.add_argument("--tls-cert", type=Path, default=None,
                        help="this device's PEM certificate, for an edge that requires mutual "
                             "TLS (with --tls-key and --tls-ca)")
    parser.add_argument("--tls-key", type=Path, default=None,
                        help="this device's PEM private key (with --tls-cert)")
    parser.add_argument("--probe-interval-s", type=float, default=5.0, metavar="S",
                        help="while inputs send too little to time the uplink, probe it "
                             "once every S seconds, and every S/5 while the latest probes "
                             "disagree by more than 2x (an outage began or ended) "
                             "(default: %(default)s; each probe sends ~50 ms of traffic: "
                             "17-63 MB an hour on the shipped LTE traces, see `python -m "
                             "experiments.bench.probe_study`)")
    parser.add_argument("--deadline-ms", type=float, default=None,
                        help="per-input latency deadline; late offloads finish locally")
    parser.add_argument("--accuracy-floor", type=float, default=None,
                        help="lowest expected accuracy the planner accepts "
                             "(default: full model − 1 point)")
    parser.add_argument("--config", type=Path, default=None, metavar="FILE",
                        help="run as a service from a device config file (TOML: edge, "
                             "model, policy, battery, token file, TLS, an image folder as "
                             "the frame source, where results go); see "
                             "device_client/service.py. One JSON line per frame on stdout")
    parser.add_argument("--fixed-config", default=None,
                        help="the config for --policy fixed, e.g. split2/w4/b4 "
                             "(default: smallest bottleneck meeting the floor)")
    parser.add_argument("--battery", default="auto",
                        help="auto | sysfs | sim[:LEVEL] | LEVEL in [0,1] (default: auto)")
    parser.add_argument("--load-feed", default=None,
                        help="ZMQ address of the edge's load feed, e.g. tcp://HOST:50052")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="a checkpoint file instead of the zoo's --model")
    parser.add_argument("--data-dir", default=None,
                        help="the dataset's folder: Imagenette's (with val/) or the one "
                             "holding the four Fashion-MNIST IDX files")
    parser.add_argument("--records", type=Path, default=None,
                        help="write one JSON line per input to this file")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.config is not None:
        try:
            service = load_service_config(args.config)
        except ServiceConfigError as error:
            parser.error(str(error))
        return run_service(service)
    token = _check(parser, args)
    try:
        client = _client(args, token)
        if args.camera is not None or args.video is not None:
            return _stream(client, open_source(args.camera, args.video, args.loop), args)
        inputs, labels, names = _inputs(args, client.model.spec.name)
    except (ConfigError, DatasetNotFoundError, CheckpointError, FileNotFoundError,
            ValueError, SourceError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return _classify(client, inputs, labels, names, args)


def _check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> str | None:
    """Refuse option combinations that cannot run (parser.error); returns the token."""
    if bool(args.tls_cert) != bool(args.tls_key) or (args.tls_cert and not args.tls_ca):
        parser.error("--tls-cert and --tls-key go together, and with --tls-ca")
    try:
        token = read_token(args.token_file)
    except TokenError as error:
        parser.error(str(error))
    if args.edge:
        problem = plaintext_token_problem([host_of(t) for t in args.edge.split(",")], token,
                                          args.tls_ca is not None, args.insecure)
        if problem:
            parser.error(problem)
    if not 0.2 <= args.probe_interval_s <= 3600:
        parser.error(f"--probe-interval-s {args.probe_interval_s:g}: give 0.2 to 3600 seconds")
    if args.camera is not None and args.video is not None:
        parser.error("--camera and --video are two frame sources; give one")
    if (args.camera is not None or args.video is not None) and args.images is not None:
        parser.error("--images is a third frame source; give one of --camera, --video, "
                     "--images")
    return token


def _client(args: argparse.Namespace, token: str | None) -> DeviceClient:
    fixed = Config.parse(args.fixed_config) if args.fixed_config else None
    identity = (args.tls_cert, args.tls_key) if args.tls_cert else None
    return DeviceClient(args.checkpoint or checkpoint_for(args.model), args.edge,
                        policy=PolicyOptions(args.policy, deadline_ms=args.deadline_ms,
                                             accuracy_floor=args.accuracy_floor,
                                             fixed_config=fixed),
                        link=LinkOptions(token=token, tls_ca=args.tls_ca,
                                         tls_identity=identity,
                                         probe_interval_s=args.probe_interval_s,
                                         load_feed=args.load_feed),
                        device=DeviceOptions(battery=args.battery))


def _classify(client: DeviceClient, inputs: Sequence[Frame], labels: Any,
              names: tuple[str, ...], args: argparse.Namespace) -> int:
    """Every input through the client, one JSON line each to --records; the summary."""
    client.warm_up()
    results: list[InferenceResult] = []
    skipped: list[str] = []
    records = args.records.open("w") if args.records else None
    with client:
        try:
            for index, frame in enumerate(tqdm(inputs, desc=f"{args.policy}", disable=None)):
                try:
                    result = client.infer(frame)
                except ImageDecodeError as error:  # a corrupt file: say so, go on
                    print(f"skipped: {error}", file=sys.stderr)
                    skipped.append(str(frame))
                    continue
                results.append(result)
                if records is not None:
                    record = result.record()
                    if isinstance(frame, Path):
                        record["file"] = str(frame)
                    elif labels is not None:
                        record["true_label"] = int(labels[index])
                    records.write(json.dumps(record) + "\n")
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
        finally:
            if records is not None:
                records.close()
    summary = summarize(results, labels, len(inputs))
    if skipped:
        summary["skipped_files"] = skipped
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        for key, value in summary.items():
            print(f"{key:>20}: {value}")
    return 0


def _stream(client: DeviceClient, source: FrameSource, args: argparse.Namespace) -> int:
    """A camera or video stream, pipelined: one JSON line per frame to --records, then the
    stream's summary."""
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())  # finish the frame in flight
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    results: list[InferenceResult] = []
    records = args.records.open("w") if args.records else None

    def on_result(done: StreamResult) -> None:
        results.append(done.result)
        if records is not None:
            record = done.result.record() | {"frame": done.index,
                                             "latency_from_capture_ms": done.latency_ms}
            records.write(json.dumps(record) + "\n")

    print(f"streaming {source.name} at {source.fps:g} fps; Ctrl-C stops", file=sys.stderr)
    with client, source:
        client.warm_up()
        try:
            stats = run_stream(client, source, args.seconds, on_result, stop)
        finally:
            if records is not None:
                records.close()
    summary = stats.summary() | summarize(results, None, stats.captured)
    if stats.source_error:
        print(f"error: {stats.source_error}", file=sys.stderr)
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        for key, value in summary.items():
            print(f"{key:>22}: {value}")
    return 1 if stats.source_error else 0


def _inputs(args: argparse.Namespace, model: str
            ) -> tuple[Sequence[Frame], np.ndarray | None, tuple[str, ...]]:
    """What to classify: image files under --images (no labels), or evaluation images."""
    if args.images is not None:
        if not args.images.is_dir():
            raise FileNotFoundError(f"--images {args.images} is not a folder")
        files = sorted(p for p in args.images.rglob("*") if p.suffix.lower() in FRAME_SUFFIXES)
        if not files:
            raise FileNotFoundError(f"no image files ({', '.join(FRAME_SUFFIXES)}) under "
                                    f"{args.images}")
        return files[: args.n], None, class_names(model)
    data = stream_images(model, args.data_dir, cache_dir=default_cache_dir()).head(args.n)
    return list(data.images), data.labels, data.class_names


if __name__ == "__main__":
    raise SystemExit(main())
