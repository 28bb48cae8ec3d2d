"""``python -m device_client``: classify Fashion-MNIST test images through an edge server."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from device_client.client import WHERE_EDGE, WHERE_EXIT, WHERE_LOCAL, DeviceClient, InferenceResult
from device_client.planner import POLICIES
from splitnet.checkpoint import CheckpointError
from splitnet.config import Config, ConfigError
from splitnet.data import DatasetNotFoundError
from splitnet.progress import progress
from splitnet.workloads import eval_images


def summarize(results: list[InferenceResult], labels: np.ndarray) -> dict[str, Any]:
    """The summary the CLI prints: counts, accuracy, latency, bytes, energy."""
    latencies = np.array([r.latency.total_ms for r in results])
    predicted = np.array([r.label for r in results])
    return {
        "n": len(labels),
        "results": len(results),
        "accuracy": float((predicted == labels[: len(results)]).mean()) if results else 0.0,
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m device_client",
        description="Run the first N Fashion-MNIST test images through splitnet's device "
                    "client: for each image the policy picks split point, bottleneck width, "
                    "bits and exit threshold (or LOCAL / OFFLOAD_INPUT) from live bandwidth, "
                    "RTT, server load, head speed and battery estimates. Every image gets a "
                    "result: if the edge fails, it is finished on the device.",
        epilog="Examples:\n"
               "  python -m edge_server &                  # in another shell\n"
               "  python -m device_client --edge 127.0.0.1:50051 --n 200\n"
               "  python -m device_client --edge 127.0.0.1:50051 --policy neurosurgeon --json\n"
               "  python -m device_client --policy local --n 100   # no edge needed\n"
               f"Policies: {', '.join(POLICIES)}.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--edge", default=None,
                        help="edge server HOST:PORT (or a gRPC target with several addresses); "
                             "without it everything runs on the device")
    parser.add_argument("--policy", default="adaptive", choices=POLICIES,
                        help="how to choose per input (default: %(default)s)")
    parser.add_argument("--n", type=int, default=100,
                        help="number of evaluation images, Fashion-MNIST test half B "
                             "(default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print one JSON summary object")
    parser.add_argument("--token", default=None, help="bearer token the edge requires")
    parser.add_argument("--tls-ca", type=Path, default=None,
                        help="PEM CA certificate: connect with TLS and trust this CA")
    parser.add_argument("--deadline-ms", type=float, default=None,
                        help="per-input latency deadline; late offloads finish locally")
    parser.add_argument("--accuracy-floor", type=float, default=None,
                        help="lowest expected accuracy the planner accepts "
                             "(default: full model − 1 point)")
    parser.add_argument("--config", default=None,
                        help="the config for --policy fixed, e.g. split2/w4/b4 "
                             "(default: smallest bottleneck meeting the floor)")
    parser.add_argument("--battery", default="auto",
                        help="auto | sysfs | sim[:LEVEL] | LEVEL in [0,1] (default: auto)")
    parser.add_argument("--load-feed", default=None,
                        help="ZMQ address of the edge's load feed, e.g. tcp://HOST:50052")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="model checkpoint (default: the shipped model)")
    parser.add_argument("--data-dir", default=None,
                        help="folder holding the four Fashion-MNIST IDX files")
    parser.add_argument("--records", type=Path, default=None,
                        help="write one JSON line per input to this file")
    args = parser.parse_args(argv)
    try:
        fixed = Config.parse(args.config) if args.config else None
        test = eval_images("mnv2_fmnist", args.data_dir)
        client = DeviceClient(args.edge, args.policy, args.checkpoint, args.token, args.tls_ca,
                              args.deadline_ms, args.accuracy_floor, args.battery,
                              fixed_config=fixed, load_feed=args.load_feed)
    except (ConfigError, DatasetNotFoundError, CheckpointError, FileNotFoundError,
            ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    images, labels = test.images[: args.n], test.labels[: args.n]
    results: list[InferenceResult] = []
    records = args.records.open("w") if args.records else None
    with client:
        try:
            for image in progress(images, desc=f"{args.policy}"):
                result = client.infer(image)
                results.append(result)
                if records is not None:
                    records.write(json.dumps(result.record()) + "\n")
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
        finally:
            if records is not None:
                records.close()
    summary = summarize(results, labels)
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        for key, value in summary.items():
            print(f"{key:>20}: {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
