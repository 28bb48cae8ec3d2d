"""One emulated device: paced inputs through a DeviceClient, records pushed over ZMQ.

    runner ──spawns──► device_worker (--serve: one job per stdin line, the process kept)
    job: loads (once per process), warms up a new DeviceClient ──ZMQ PUSH {"ready"}──► runner
    runner ──stdin: t0 (monotonic time of frame 0, once every device is ready)──► worker
    worker (device time emulated): frame i arrives at t0 + i/rate; whenever the device is
        free it takes the newest arrived frame, and the ones it passed over are dropped
                                              └─ ZMQ PUSH: one JSON record per frame
                                                 (answered or dropped), then
                                                 {"done": true, "device": k}
    frame-stream mode (--stream-fps): the frames as a video file at that rate (the camera)
    through the pipelined client;
    one record per answered frame, then {"stream": statistics}, then done

Started by ``experiments.runner``; not meant to be run by hand.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import zmq

from device_client.client import DeviceClient
from device_client.energy import PowerProfile
from device_client.options import DeviceOptions, PolicyOptions
from experiments.calibration import LeastCpu
from experiments.device_profiles import PROFILES
from experiments.emulation import emulate
from experiments.oracle import REPLAY_POLICY
from splitnet.config import Config
from splitnet.data.eval_sets import default_cache_dir, stream_images


class CompetingLoad:
    """A competing load taking ``share`` of the device's CPU from ``start_s`` to ``end_s``
    after input 0: the device's own work then takes 1 / (1 − share) as long. Calling it
    gives that slowdown now; none before ``t0`` (input 0's time) is set."""

    def __init__(self, busy: tuple[float, float, float] | None, t0: float = math.inf):
        self.busy = busy
        self.t0 = t0

    def __call__(self) -> float:
        if self.busy is None:
            return 1.0
        start_s, end_s, share = self.busy
        return 1 / (1 - share) if start_s <= time.monotonic() - self.t0 < end_s else 1.0


def main(argv: list[str] | None = None) -> int:
    """One run (the arguments given), or with ``--serve`` one run per line of stdin: each
    line a JSON list of arguments, the runner's next job for this device. A served worker
    keeps its process, torch and the loaded model between runs; each run gets a new
    DeviceClient, so nothing it learnt carries over."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] != ["--serve"]:
        return run_job(argv)
    while line := sys.stdin.readline():
        job = json.loads(line)
        if not job:
            return 0
        run_job(job)
    return 0


_MODELS: dict[Path | None, Any] = {}  # a served worker's loaded checkpoints


def run_job(argv: list[str]) -> int:
    """Long because: one declarative list of the worker's arguments, then the job's steps in
    order."""
    parser = argparse.ArgumentParser(prog="python -m experiments.device_worker")
    parser.add_argument("--edge", required=True)
    parser.add_argument("--policy", required=True)
    parser.add_argument("--records", required=True, help="ZMQ address to PUSH records to")
    parser.add_argument("--device-id", type=int, default=0)
    parser.add_argument("--device", default="rpi4")
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--rate-hz", type=float, default=10.0)
    parser.add_argument("--battery", type=float, default=1.0)
    parser.add_argument("--deadline-ms", type=float, default=None)
    parser.add_argument("--accuracy-floor", type=float, default=None)
    parser.add_argument("--fixed-config", default="")
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--fp32-factor", type=float, required=True,
                        help="device ms per host CPU ms for fp32 work (experiments.calibration)")
    parser.add_argument("--int8-factor", type=float, required=True,
                        help="device ms per host CPU ms for int8 work")
    parser.add_argument("--schedule", type=Path, default=None,
                        help="JSON {input index: config}: run these configs (oracle replay)")
    parser.add_argument("--stream-fps", type=float, default=None,
                        help="frame-stream mode: a camera at this rate, pipelined, newest "
                             "frame wins (device_client.pipeline); --count frames loop")
    parser.add_argument("--stream-seconds", type=float, default=20.0)
    parser.add_argument("--busy", type=float, nargs=3, default=None,
                        metavar=("START_S", "END_S", "SHARE"),
                        help="a competing load takes SHARE of the CPU in this window")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    profile = PROFILES[args.device]
    power: PowerProfile = profile.power
    socket: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.PUSH)
    socket.setsockopt(zmq.LINGER, 5000)
    socket.connect(args.records)
    fixed = Config.parse(args.fixed_config) if args.fixed_config else None
    floor = args.accuracy_floor or None
    schedule: dict[int, Config] = {}
    if args.schedule is not None:  # the replay runs the adaptive client's machinery
        schedule = {int(i): Config.parse(c)
                    for i, c in json.loads(args.schedule.read_text()).items()}
    client_policy = "adaptive" if args.policy == REPLAY_POLICY else args.policy
    if args.checkpoint not in _MODELS:
        from splitnet.zoo import load_pretrained

        _MODELS[args.checkpoint] = load_pretrained(args.checkpoint)
    with DeviceClient(_MODELS[args.checkpoint], args.edge,
                      policy=PolicyOptions(client_policy, deadline_ms=args.deadline_ms,
                                           accuracy_floor=floor, fixed_config=fixed),
                      device=DeviceOptions(battery=f"sim:{args.battery}", power=power)) as client:
        images = stream_images(client.model.spec.name, cache_dir=default_cache_dir(),
                               window=slice(args.start, args.start + args.count)).images
        load = CompetingLoad(args.busy and tuple(args.busy))
        least_cpu = emulate(client, args.fp32_factor, args.int8_factor, load,
                            LeastCpu(client.model.spec.name))
        client.warm_up()  # as a real device would at start-up, before input 0 is due
        socket.send(json.dumps({"ready": True, "device": args.device_id}).encode())
        line = sys.stdin.readline()  # the runner answers once every device is ready
        if not line.strip():
            return 1  # the runner went away
        args.t0 = load.t0 = float(line)
        if args.stream_fps:
            _stream(client, images, args, socket)
            least_cpu.save()
            return 0
        for record in camera_clock(client, images, args, schedule):
            socket.send(json.dumps(record).encode())
        least_cpu.save()  # what this device found, for the devices after it
    socket.send(json.dumps({"done": True, "device": args.device_id}).encode())
    socket.close()
    return 0


def camera_clock(client: DeviceClient, images: Any, args: argparse.Namespace,
                 schedule: dict[int, Config]) -> Iterator[dict[str, Any]]:
    """Frames arrive at ``args.rate_hz`` from ``args.t0``, one per image, whatever the
    device does; the device takes the newest frame that has arrived whenever it is free,
    and the frames it passed over are dropped (newest wins, as a camera app does).

    Yields one record per frame: an answered one with its arrival time and response time
    (``response_ms``, from arrival to result), a dropped one with ``dropped`` and the time
    a newer frame superseded it. Every policy meets the same frames at the same times on
    the same stretch of trace."""
    count, rate = len(images), args.rate_hz
    taken = 0  # frames before this one are answered or dropped
    while taken < count:
        now = time.monotonic()
        arrived = min(count, int(math.floor((now - args.t0) * rate)) + 1)
        if arrived <= taken:  # the next frame is not there yet: wait for it
            time.sleep(max(args.t0 + taken / rate - now, 0.0))
            continue
        newest = arrived - 1
        for skipped in range(taken, newest):
            yield {"dropped": True, "device": args.device_id, "index": args.start + skipped,
                   "frame": skipped, "policy": args.policy,
                   "t_arrival": args.t0 + skipped / rate, "t_dropped": now}
        arrival = args.t0 + newest / rate
        started = time.monotonic()
        result = client.infer(images[newest], schedule.get(args.start + newest))
        ended = time.monotonic()
        record = result.record()
        record.update(device=args.device_id, index=args.start + newest, frame=newest,
                      policy=args.policy, t_arrival=arrival, t_start=started, t_end=ended,
                      response_ms=(ended - arrival) * 1000, edge_up=client.health.up,
                      rtt_estimate_ms=client.rtt.estimate_ms)
        yield record
        taken = newest + 1


def _stream(client: DeviceClient, images: Any, args: argparse.Namespace,
            socket: zmq.Socket[bytes]) -> None:
    """Frame-stream mode: one record per answered frame, then the stream's statistics."""
    import tempfile

    from device_client.pipeline import StreamResult, run_stream
    from device_client.sources import VideoFile, write_video

    def send(done: StreamResult) -> None:
        record = done.result.record()
        record.update(device=args.device_id, index=args.start + done.index % len(images),
                      frame=done.index, policy=args.policy,
                      latency_from_capture_ms=done.latency_ms, t_start=time.monotonic())
        socket.send(json.dumps(record).encode())

    with tempfile.TemporaryDirectory() as folder:
        # the camera is a video file of the frames, played at its own rate (looping)
        video = write_video(Path(folder) / "camera.avi", list(images), args.stream_fps)
        with VideoFile(video, loop=True) as source:
            time.sleep(max(args.t0 - time.monotonic(), 0.0))
            stats = run_stream(client, source, args.stream_seconds, send)
    socket.send(json.dumps({"stream": stats.summary(), "device": args.device_id,
                            "policy": args.policy}).encode())
    socket.send(json.dumps({"done": True, "device": args.device_id}).encode())
    socket.close()


if __name__ == "__main__":
    raise SystemExit(main())
