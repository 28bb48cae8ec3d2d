"""Frame streams through the pipelined device: every frame taken is answered, stale frames
are dropped and counted, and the head of the next frame overlaps the edge's wait."""

from __future__ import annotations

import threading
import time

import pytest

from device_client.client import DeviceClient
from device_client.pipeline import run_stream
from edge_server.server import EdgeServer, ServerOptions
from experiments.link import UserspaceLink
from experiments.traces import Trace
from splitnet.config import Config

FIXED = Config(split=3, width=4, bits=4)


@pytest.fixture(scope="module")
def edge(checkpoint):
    server = EdgeServer(ServerOptions(address="127.0.0.1:0", checkpoints=(checkpoint,),
                                      max_wait_ms=1)).start()
    yield server
    server.stop(1)


def test_a_device_that_cannot_keep_up_drops_stale_frames_and_answers_the_rest(checkpoint,
                                                                             test_split):
    with DeviceClient(None, "local", checkpoint, battery="1.0") as client:
        stats = run_stream(client, list(test_split.images[:20]), fps=2000, seconds=1.0)
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
        with DeviceClient(f"127.0.0.1:{link.port}", "fixed", checkpoint, fixed_config=FIXED,
                          battery="1.0", offload_timeout_ms=3000) as client:
            for stage in ("begin", "complete"):
                inner = getattr(client, stage)

                def timed(*args, _inner=inner, _stage=stage):
                    start = time.perf_counter()
                    out = _inner(*args)
                    with lock:
                        spans[_stage].append((start, time.perf_counter()))
                    return out

                setattr(client, stage, timed)
            results = []
            stats = run_stream(client, list(test_split.images[:20]), fps=30, seconds=1.5,
                               on_result=results.append)
    finally:
        link.stop()
    assert stats.answered == len(results) > 5
    assert all(r.result.where == "edge" for r in results)
    overlapping = sum(1 for b0, b1 in spans["begin"] for c0, c1 in spans["complete"]
                      if b0 < c1 and c0 < b1)
    assert overlapping >= 3  # heads ran during the edge's waits
    # one frame at the edge at a time, each at least a round trip: a latency near 80 ms
    assert min(r.latency_ms for r in results) >= 80
