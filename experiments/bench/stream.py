"""Memory over a long frame stream the device cannot keep up with (a benchmark, not a test).

    eval frames ─► video file (MJPEG, --fps, looping) ─► VideoFile ─► run_stream ─► DeviceClient
                                                                        │      (adaptive) ─► edge
    every 10 s: this process's RSS (VmRSS) and open file descriptors    │       server process
                                                                        └─ drops stale frames

The source runs faster than the device (the camera model at 240 fps, one thread), so the
pipeline drops frames the whole time: the case where an unbounded queue would grow. The
edge runs in its own process, so the RSS is the device's alone.

Report: RSS and FDs over time, growth after the first minute (target ≤ 10 %), sustained fps,
drop rate and p95 latency. Usage: ``python -m experiments.bench.stream --minutes 10``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from splitnet.zoo import DEFAULT_MODEL, checkpoint_for, list_zoo


def rss_mb() -> float:
    """This process's resident set, from /proc."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def main(argv: list[str] | None = None) -> int:
    """Long because: a benchmark's steps in order: options, server, client, the stream and its
    samples."""
    parser = argparse.ArgumentParser(
        prog="python -m experiments.bench.stream",
        description="Stream a video file faster than the device can keep up with, for "
                    "minutes, and report the device process's RSS and open FDs over time "
                    "(target: RSS growth <= 10 %% after the first minute), with the fps it "
                    "sustained, its drop rate and p95 latency. Prints JSON.")
    parser.add_argument("--minutes", type=float, default=10.0,
                        help="how long to stream (default: %(default)s)")
    parser.add_argument("--fps", type=float, default=240.0,
                        help="the video's frame rate (default: %(default)s, more than the "
                             "device sustains)")
    parser.add_argument("--policy", default="adaptive", help="device policy (default: "
                                                             "%(default)s)")
    parser.add_argument("--model", default=DEFAULT_MODEL, choices=list_zoo())
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)

    import torch

    from device_client.client import DeviceClient
    from device_client.options import DeviceOptions
    from device_client.pipeline import StreamResult, run_stream
    from device_client.sources import VideoFile, write_video
    from experiments.bench.edge import start_server
    from experiments.launch import stop_edge_process
    from splitnet.data import DatasetNotFoundError
    from splitnet.data.eval_sets import default_cache_dir, stream_images

    torch.set_num_threads(1)  # a Pi-like device: one core for the model
    checkpoint = checkpoint_for(args.model)
    seconds = args.minutes * 60
    try:
        # copies: a slice would keep the whole decoded eval set (~600 MB) in this process
        frames = [image.copy() for image in
                  stream_images(args.model, cache_dir=default_cache_dir()).images[:200]]
    except DatasetNotFoundError as error:
        parser.error(str(error))
    server, port = start_server(checkpoint, 8, 1)
    samples: list[dict[str, float]] = []
    stop = threading.Event()
    answered = [0]
    try:
        with tempfile.TemporaryDirectory() as folder, \
                VideoFile(write_video(Path(folder) / "camera.avi", frames, args.fps),
                          loop=True) as source, \
                DeviceClient(checkpoint, f"127.0.0.1:{port}", policy=args.policy,
                             device=DeviceOptions(battery="1.0")) as client:
            client.warm_up()
            started = time.monotonic()

            def watch() -> None:
                ticks = tqdm(range(int(seconds // 10)), desc="stream (10 s ticks)", disable=None)
                while not stop.is_set():
                    samples.append({"t_s": round(time.monotonic() - started, 1),
                                    "rss_mb": round(rss_mb(), 1), "open_fds": open_fds(),
                                    "answered": answered[0]})
                    if stop.wait(10):
                        break
                    next(ticks, None)

            def count(_: StreamResult) -> None:
                answered[0] += 1

            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            stats = run_stream(client, source, seconds, count)
            stop.set()
            watcher.join(timeout=15)
            samples.append({"t_s": round(time.monotonic() - started, 1),
                            "rss_mb": round(rss_mb(), 1), "open_fds": open_fds(),
                            "answered": answered[0]})
    finally:
        stop_edge_process(server)
    report = _report(stats.summary(), samples, args)
    text = json.dumps(report, indent=1)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)
    return 0 if report["targets"]["rss_growth_after_first_minute"]["met"] else 1


def _report(stream: dict[str, Any], samples: list[dict[str, float]],
            args: argparse.Namespace) -> dict[str, Any]:
    after_first = [s for s in samples if s["t_s"] >= 60] or samples
    first, last = after_first[0]["rss_mb"], after_first[-1]["rss_mb"]
    growth = (last - first) / first
    fds = [s["open_fds"] for s in samples]
    return {"minutes": args.minutes, "fps_source": args.fps, "policy": args.policy,
            "model": args.model, "stream": stream, "samples": samples,
            "targets": {
                "rss_growth_after_first_minute": {
                    "measured": round(growth, 4), "rss_mb_at_1_min": first,
                    "rss_mb_at_end": last, "peak_rss_mb": max(s["rss_mb"] for s in samples),
                    "target": 0.10, "met": growth <= 0.10},
                "open_fds": {"measured": [min(fds), max(fds)],
                             "met": max(fds) - min(fds) <= 8}}}


if __name__ == "__main__":
    raise SystemExit(main())
