"""Frame streams through the pipelined device: every frame taken is answered, stale frames
are dropped and counted, and the head of the next frame overlaps the edge's wait."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from device_client.client import DeviceClient
from device_client.options import DeviceOptions, LinkOptions, PolicyOptions
from device_client.pipeline import run_stream
from device_client.sources import FrameList, VideoFile, write_video
from edge_server.server import EdgeServer, ServerOptions
from experiments.link import UserspaceLink
from experiments.traces import Trace
from splitnet.config import Config, Placement

FIXED = Config(split=3, width=4, bits=4)


def test_a_device_that_cannot_keep_up_drops_stale_frames_and_answers_the_rest(checkpoint,
                                                                             test_split):
    with DeviceClient(checkpoint, None, policy="local",
                      device=DeviceOptions(battery="1.0")) as client:
        stats = run_stream(client, FrameList(list(test_split.images[:20]), fps=2000),
                           seconds=1.0)
    assert stats.captured == stats.answered + stats.dropped  # nothing lost, nothing queued
    assert stats.dropped > 0 and stats.answered > 10
    assert stats.summary()["drop_rate"] > 0


def test_the_next_head_runs_while_the_edge_answers(edge, checkpoint, test_split):
    """Over a link with 40 ms each way, frame i waits on the edge while frame i + 1's head
    runs: their intervals overlap."""
    link = UserspaceLink(Trace.constant(50.0, seconds=10), edge.port,
                         one_way_delay_ms=40).start()
    link.started_at = time.monotonic()
    spans: dict[str, list[tuple[float, float]]] = {"begin": [], "complete": []}
    lock = threading.Lock()
    try:
        with DeviceClient(checkpoint, f"127.0.0.1:{link.port}",
                          policy=PolicyOptions("fixed-paper", fixed_config=FIXED),
                          link=LinkOptions(offload_timeout_ms=3000),
                          device=DeviceOptions(battery="1.0")) as client:
            for stage in ("begin", "complete"):
                inner = getattr(client, stage)

                def timed(*args, _inner=inner, _stage=stage, **kwargs):
                    start = time.perf_counter()
                    out = _inner(*args, **kwargs)
                    with lock:
                        spans[_stage].append((start, time.perf_counter()))
                    return out

                setattr(client, stage, timed)
            results = []
            stats = run_stream(client, FrameList(list(test_split.images[:20]), fps=30),
                               seconds=1.5, on_result=results.append)
    finally:
        link.stop()
    assert stats.answered == len(results) > 5
    assert all(r.result.where == "edge" for r in results)
    overlapping = sum(1 for b0, b1 in spans["begin"] for c0, c1 in spans["complete"]
                      if b0 < c1 and c0 < b1)
    assert overlapping >= 3  # heads ran during the edge's waits
    # one frame at the edge at a time, each at least a round trip: a latency near 80 ms
    assert min(r.latency_ms for r in results) >= 80


def test_a_video_file_streams_at_its_own_rate_and_every_frame_is_accounted_for(
        checkpoint, test_split, tmp_path):
    """A Motion-JPEG file written at 30 fps plays at 30 fps: each frame is answered or
    dropped as stale, and the answers are those of the frames themselves."""
    images = [np.repeat(image[..., None], 3, axis=2) for image in test_split.images[:20]]
    video = write_video(tmp_path / "clip.avi", images, fps=30)
    with VideoFile(video) as source, \
            DeviceClient(checkpoint, None, policy="local",
                         device=DeviceOptions(battery="1.0")) as client:
        assert source.fps == pytest.approx(30) and source.frame_count == 20
        expected = [client.infer(image).label for image in test_split.images[:20]]
        results: list = []
        stats = run_stream(client, source, on_result=results.append)
    assert stats.captured == 20 == stats.answered + stats.dropped
    assert stats.seconds >= 19 / 30  # paced at the file's rate, not read as fast as it goes
    agree = np.mean([r.result.label == expected[r.index] for r in results])
    assert agree >= 0.8  # JPEG in the file moves a few borderline frames


def test_the_cli_streams_a_video_and_names_a_missing_camera_or_video(test_split, tmp_path):
    images = [np.repeat(image[..., None], 3, axis=2) for image in test_split.images[:12]]
    video = write_video(tmp_path / "clip.avi", images, fps=24)
    records = tmp_path / "records.jsonl"
    result = subprocess.run([sys.executable, "-m", "device_client", "--policy", "local",
                             "--model", "mnv2_fmnist", "--battery", "1.0", "--video",
                             str(video), "--records", str(records), "--json"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["fps_target"] == pytest.approx(24) and summary["captured"] == 12
    assert summary["answered"] + summary["dropped"] == 12 == summary["n"]
    lines = [json.loads(line) for line in records.read_text().splitlines()]
    assert len(lines) == summary["answered"] and all(line["class_name"] for line in lines)
    for flag, expected in ((["--camera", "7"], "/dev/video7"),
                           (["--video", str(tmp_path / "none.mp4")], "no such file")):
        result = subprocess.run([sys.executable, "-m", "device_client", "--policy", "local",
                                 "--model", "mnv2_fmnist", *flag],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 2 and expected in result.stderr, result.stderr
        assert "Traceback" not in result.stderr


def test_when_the_device_cannot_keep_up_it_finishes_frames_while_one_is_at_the_edge(
        tmp_path):
    """The camera model at a rate nothing keeps up with, over a link 150 ms away each way:
    the adaptive policy sends a frame when the edge lane is free and finishes the frames
    that arrive meanwhile on the device, answering them at once, out of capture order."""
    from splitnet.data import DatasetNotFoundError
    from splitnet.data.imagenette import find_imagenette, list_image_folder
    from splitnet.images import decode_image
    from splitnet.zoo import checkpoint_for

    try:
        root = find_imagenette()
    except DatasetNotFoundError as error:
        pytest.skip(f"Imagenette is not on this machine: {error}")
    items, _ = list_image_folder(root / "val")
    frames = [decode_image(path) for path, _ in items[:: len(items) // 8][:8]]
    camera = checkpoint_for("resnet18_imagenette")
    server = EdgeServer(ServerOptions(address="127.0.0.1:0", checkpoints=(camera,),
                                      max_wait_ms=1)).start()
    link = UserspaceLink(Trace.constant(50.0, seconds=30), server.port,
                         one_way_delay_ms=150).start()
    link.started_at = time.monotonic()
    answered_at: list[tuple[str, float, int]] = []
    try:
        with DeviceClient(camera, f"127.0.0.1:{link.port}", policy="adaptive",
                          link=LinkOptions(offload_timeout_ms=5000),
                          device=DeviceOptions(battery="1.0")) as client:
            results: list = []

            def on_result(done) -> None:
                answered_at.append((done.result.where, time.perf_counter(), done.index))
                results.append(done)

            stats = run_stream(client, FrameList(frames, fps=1000), seconds=4.0,
                               on_result=on_result)
    finally:
        link.stop()
        server.stop(1)
    assert stats.captured == stats.answered + stats.dropped == len(results) + stats.dropped
    sent = [r for r in results if r.result.where == "edge"]
    kept = [r for r in results if r.result.where != "edge"]
    assert sent and kept and not any(r.result.fallback for r in results)
    # frames the device ran whole (LOCAL) were answered while a sent frame was at the edge
    in_flight = [(at - r.latency_ms / 1000, at) for r, (_, at, _) in zip(
        results, answered_at, strict=True) if r.result.where == "edge"]
    alongside = [at for r, (_, at, _) in zip(results, answered_at, strict=True)
                 if r.result.config.placement is Placement.LOCAL
                 and any(start < at < end for start, end in in_flight)]
    assert len(alongside) >= 10
    # and the edge lane was kept busy: a frame went out whenever one came back (a round
    # trip is ≥ 0.3 s); a single lane that flips between LOCAL and sending, as the
    # estimates settle, sent 3 in the same 4 s
    assert len(sent) >= 0.5 * stats.seconds / 0.3
    assert all(r.latency_ms >= 300 for r in sent)  # each at least the round trip
