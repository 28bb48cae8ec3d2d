"""Fault injection into every supervised component, on both sides: an exception, a hang and
a slow call each. Every case checks that no input is lost, that nothing waits past its
stated bound, and the health or exit status the component promises (``splitnet.faults``
names the points; ``splitnet.supervision`` is what catches them).

Bounds are generous: these tests say what happens, not how fast (the benchmarks time)."""

from __future__ import annotations

import contextlib
import threading
import time

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from splitnet_proto.messages import MODEL_ID_METADATA, InferRequest
from splitnet_proto.v1 import inference_pb2_grpc as pb_grpc

from device_client import monitor as monitor_module
from device_client.client import DeviceClient
from device_client.options import DeviceOptions, LinkOptions, PolicyOptions
from device_client.pipeline import run_stream
from device_client.sources import FrameList
from edge_server.load_reports import LoadPublisher
from edge_server.server import EdgeServer, ServerOptions
from splitnet import faults
from splitnet.config import Config
from splitnet.preprocess import images_to_input

SPLIT = Config(split=3, width=4, bits=4)


@pytest.fixture(autouse=True)
def no_faults_left():
    faults.clear()
    yield
    faults.clear()


def _server(checkpoint, stall_s: float = 1.0) -> EdgeServer:
    from edge_server.server import Limits

    # one test client is one device: give it room for every call it sends at once
    return EdgeServer(ServerOptions(address="127.0.0.1:0", checkpoints=(checkpoint,),
                                    max_wait_ms=1, worker_stall_s=stall_s,
                                    limits=Limits(per_device_in_flight=64))).start()


def _health(port: int) -> int:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        return health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=5).status


def _requests(shipped, images, n: int) -> list:
    from splitnet import codec

    head = shipped.model.forward_head(images_to_input(images[:n]), SPLIT)
    return [InferRequest(i + 1, SPLIT, p).to_message()
            for i, p in enumerate(codec.encode_batch(head.code))]


def _send_all(port: int, model_id: str, messages: list, timeout_s: float = 30) -> list:
    """Every message as a unary call at once; the status of each."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.EdgeInferenceStub(channel)
        calls = [stub.Infer.future(m, timeout=timeout_s,
                                   metadata=((MODEL_ID_METADATA, model_id),)) for m in messages]
        codes = []
        for call in calls:
            try:
                call.result()
                codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as error:
                codes.append(error.code())
        return codes


# ------------------------------------------------------------------------ edge side
@pytest.mark.parametrize("kind", ["exception", "slow"])
def test_batch_worker_exception_or_slow_batch_loses_no_input(checkpoint, shipped, test_split,
                                                             kind):
    server = _server(checkpoint)
    try:
        faults.install(f"edge.batch={kind}:0.3")
        started = time.monotonic()
        codes = _send_all(server.port, shipped.model_id,
                          _requests(shipped, test_split.images, 12))
        assert codes == [grpc.StatusCode.OK] * 12  # a failed batch is run again
        assert faults.fired("edge.batch") == 1
        assert time.monotonic() - started < 20
        assert _health(server.port) == health_pb2.HealthCheckResponse.SERVING
        assert server.batcher.depth == 0
    finally:
        server.stop(1)


def test_a_batch_that_fails_twice_is_answered_internal_and_the_worker_goes_on(
        checkpoint, shipped, test_split):
    server = _server(checkpoint)
    try:
        messages = _requests(shipped, test_split.images, 2)
        faults.install("edge.batch=exception*2")
        assert _send_all(server.port, shipped.model_id, messages[:1]) \
            == [grpc.StatusCode.INTERNAL]
        assert _send_all(server.port, shipped.model_id, messages[1:]) == [grpc.StatusCode.OK]
        assert server.batcher.depth == 0
    finally:
        server.stop(1)


def test_a_hung_batch_worker_is_replaced_its_batch_rerun_and_health_tells(checkpoint, shipped,
                                                                          test_split):
    server = _server(checkpoint, stall_s=1.0)
    seen: list[int] = []
    # Health's Watch stream: every change the server makes is pushed, however short the
    # NOT_SERVING spell (polling with Check can miss it on a loaded host)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    watch = health_pb2_grpc.HealthStub(channel).Watch(
        health_pb2.HealthCheckRequest(service=""), timeout=60)

    def watch_health() -> None:
        with contextlib.suppress(grpc.RpcError):  # cancelled at the end
            seen.extend(reply.status for reply in watch)

    try:
        watcher = threading.Thread(target=watch_health, daemon=True)
        watcher.start()
        faults.install("edge.batch=hang:6")
        started = time.monotonic()
        codes = _send_all(server.port, shipped.model_id,
                          _requests(shipped, test_split.images, 4), timeout_s=20)
        waited = time.monotonic() - started
        serving, not_serving = (health_pb2.HealthCheckResponse.SERVING,
                                health_pb2.HealthCheckResponse.NOT_SERVING)
        deadline = time.monotonic() + 10  # the new worker's first round sets SERVING again
        while not (not_serving in seen and seen[-1] == serving) \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        watch.cancel()
        watcher.join(5)
        assert codes == [grpc.StatusCode.OK] * 4  # rerun by the worker that took over
        assert waited < 5  # the stall limit (1 s) and a rerun, not the 6 s hang
        assert seen[0] == serving and not_serving in seen and seen[-1] == serving
        assert _send_all(server.port, shipped.model_id,
                         _requests(shipped, test_split.images, 2)) == [grpc.StatusCode.OK] * 2
    finally:
        watch.cancel()
        channel.close()
        server.stop(1)


@pytest.mark.parametrize("kind", ["exception", "hang", "slow"])
def test_batch_metrics_faults_never_cost_an_answer(checkpoint, shipped, test_split, kind):
    server = _server(checkpoint, stall_s=1.0)
    try:
        faults.install(f"edge.on_batch={kind}:3")
        codes = _send_all(server.port, shipped.model_id,
                          _requests(shipped, test_split.images, 6), timeout_s=20)
        assert codes == [grpc.StatusCode.OK] * 6
        time.sleep(1.5 if kind == "hang" else 0.1)
        # a hung metrics call stalls the worker: it is replaced and the next inputs served
        assert _send_all(server.port, shipped.model_id,
                         _requests(shipped, test_split.images, 3), timeout_s=20) \
            == [grpc.StatusCode.OK] * 3
    finally:
        server.stop(1)


@pytest.mark.parametrize("kind", ["exception", "hang", "slow"])
def test_the_load_publisher_recovers_from_each_fault(kind):
    import json

    import zmq

    class Idle:  # the batcher's load, as the publisher reads it
        depth, recent_service_ms, recent_queue_ms, max_batch_size = 0, 0.0, 0.0, 1

    faults.install(f"edge.publisher={kind}:2")
    publisher = LoadPublisher(Idle(), "tcp://127.0.0.1:*", ("m",), interval_s=0.05)  # type: ignore[arg-type]
    socket = zmq.Context.instance().socket(zmq.SUB)
    socket.setsockopt(zmq.SUBSCRIBE, b"load")
    socket.setsockopt(zmq.RCVTIMEO, 500)
    socket.connect(publisher.address)
    try:
        deadline, got = time.monotonic() + 10, 0
        while time.monotonic() < deadline and got < 3:
            try:
                json.loads(socket.recv().split(b" ", 1)[1])
                got += 1
            except zmq.Again:
                continue
            if faults.fired("edge.publisher") == 0:
                got = 0  # only reports after the fault count
        assert faults.fired("edge.publisher") == 1 and got == 3
    finally:
        socket.close()
        publisher.close()


# ------------------------------------------------------------------------ device side
def _frames(test_split, n: int = 12) -> list[np.ndarray]:
    return list(test_split.images[:n])


@pytest.mark.parametrize("kind", ["exception", "hang", "slow"])
def test_stream_reader_faults_cost_no_input(edge, checkpoint, test_split, kind):
    faults.install(f"device.reader={kind}:0.3" if kind == "slow"
                   else f"device.reader={kind}:5")
    with DeviceClient(checkpoint, f"127.0.0.1:{edge.port}",
                      policy=PolicyOptions("fixed-paper", fixed_config=SPLIT),
                      link=LinkOptions(offload_timeout_ms=1000, monitor=False),
                      device=DeviceOptions(battery="1.0")) as client:
        started = time.monotonic()
        results = [client.infer(image) for image in _frames(test_split, 6)]
        waited = time.monotonic() - started
    assert all(r.label >= 0 for r in results)  # every input answered
    assert faults.fired("device.reader") == 1
    if kind != "slow":
        assert sum(r.fallback for r in results) == 1  # the one finished on the device
    assert waited < 15  # each wait bounded by the offload timeout


@pytest.mark.parametrize("point", ["device.monitor", "device.feed"])
@pytest.mark.parametrize("kind", ["exception", "hang", "slow"])
def test_monitor_and_feed_faults(edge, checkpoint, test_split, kind, point, monkeypatch):
    monkeypatch.setattr(monitor_module, "MONITOR_STALL_S", 1.0)
    faults.install(f"{point}={kind}:0.2" if kind == "slow" else f"{point}={kind}:5")
    # the feed's reader runs whether or not a publisher is there (each read waits 200 ms)
    with DeviceClient(checkpoint, f"127.0.0.1:{edge.port}", policy="adaptive",
                      link=LinkOptions(probe_interval_s=0.2, load_feed="tcp://127.0.0.1:9"),
                      device=DeviceOptions(battery="1.0")) as client:
        deadline = time.monotonic() + 10
        while faults.fired(point) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert faults.fired(point) == 1
        # a hang past the 1 s limit is this client's failure, seen within the wait below;
        # a crash is restarted and a slow round is only slow: the client stays healthy
        deadline = time.monotonic() + (10 if kind == "hang" else 1.6)
        while client.healthy and time.monotonic() < deadline:
            time.sleep(0.05)
        result = client.infer(test_split.images[0])
        assert result.label >= 0
        assert client.healthy is (kind != "hang")
        if kind == "hang":
            assert "stalled" in (client.supervisor.failure or "")


def _stream(edge, checkpoint, test_split, stall_s: float = 2.0, seconds: float = 2.0,
            fps: float = 20, on_result=None):
    answered: list = []

    def sink(done) -> None:
        answered.append(done)
        if on_result is not None:
            on_result(done)

    with DeviceClient(checkpoint, f"127.0.0.1:{edge.port}",
                      policy=PolicyOptions("fixed-paper", fixed_config=SPLIT),
                      link=LinkOptions(offload_timeout_ms=1000, monitor=False),
                      device=DeviceOptions(battery="1.0")) as client:
        started = time.monotonic()
        stats = run_stream(client, FrameList(_frames(test_split), fps=fps), seconds=seconds,
                           on_result=sink, stall_s=stall_s)
        return stats, answered, time.monotonic() - started


@pytest.mark.parametrize("point", ["device.head", "device.edge"])
@pytest.mark.parametrize("kind", ["exception", "slow"])
def test_a_stage_that_raises_or_is_slow_answers_its_frame_and_goes_on(edge, checkpoint,
                                                                      test_split, point,
                                                                      kind):
    faults.install(f"{point}={kind}:0.3*2+2")
    stats, answered, _ = _stream(edge, checkpoint, test_split)
    assert stats.failure is None and stats.source_error is None
    assert faults.fired(point) == 2
    assert stats.captured == stats.answered + stats.dropped == len(answered) + stats.dropped
    assert all(d.result.label >= 0 for d in answered)
    if kind == "exception":
        assert sum(d.result.fallback for d in answered) >= 2  # finished on the device


@pytest.mark.parametrize("point", ["device.head", "device.edge", "device.sink",
                                   "device.camera"])
def test_a_stage_that_hangs_stops_the_stream_with_a_failure(edge, checkpoint, test_split,
                                                             point):
    faults.install(f"{point}=hang:20+3")
    stats, answered, waited = _stream(edge, checkpoint, test_split, stall_s=1.5,
                                      seconds=30)
    assert stats.failure is not None and "stalled" in stats.failure
    assert waited < 10  # the stall limit, not the 20 s hang or the 30 s stream
    assert all(d.result.label >= 0 for d in answered)


@pytest.mark.parametrize("kind", ["exception", "slow"])
def test_a_camera_fault(edge, checkpoint, test_split, kind):
    faults.install(f"device.camera={kind}:0.2+4")
    stats, answered, _ = _stream(edge, checkpoint, test_split)
    if kind == "exception":  # the camera failed: the stream ends, saying why
        assert stats.source_error is not None and "fault injected" in stats.source_error
    else:
        assert stats.source_error is None
    assert stats.captured == stats.answered + stats.dropped == len(answered) + stats.dropped


@pytest.mark.parametrize("kind", ["exception", "slow"])
def test_a_result_sink_fault(edge, checkpoint, test_split, kind):
    faults.install(f"device.sink={kind}:0.2+3")
    stats, answered, _ = _stream(edge, checkpoint, test_split)
    if kind == "exception":  # results cannot be delivered: stop, non-zero for a service
        assert stats.failure is not None and "result sink" in stats.failure
    else:
        assert stats.failure is None
        assert stats.captured == stats.answered + stats.dropped
