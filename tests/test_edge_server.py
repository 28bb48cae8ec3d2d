"""A real edge server on a loopback port, with the real model, and real gRPC clients."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from pathlib import Path

import grpc
import pytest
import torch
import zmq
from grpc_health.v1 import health_pb2, health_pb2_grpc
from splitnet_proto.messages import (
    AUTH_METADATA,
    MODEL_ID_METADATA,
    InferReply,
    InferRequest,
    ModelInfo,
    model_info_request,
)
from splitnet_proto.v1 import inference_pb2_grpc as pb_grpc

from edge_server.server import EdgeServer, ServerOptions
from experiments.launch import start_edge_process
from splitnet import codec
from splitnet.checkpoint import load_checkpoint
from splitnet.config import Config
from splitnet.data import DatasetNotFoundError
from splitnet.data.imagenette import find_imagenette, list_image_folder
from splitnet.images import decode_image
from splitnet.input_codecs import encode_image
from splitnet.preprocess import images_to_input
from splitnet.zoo import checkpoint_for

BOTTLENECK = Config(split=3, width=4, bits=4)
RAW = Config(split=1, bits=8)


@pytest.fixture(scope="module")
def edge(checkpoint):
    server = EdgeServer(ServerOptions(address="127.0.0.1:0", checkpoints=(checkpoint,),
                                      load_pub="tcp://127.0.0.1:0", max_wait_ms=5)).start()
    yield server
    server.stop(1)


def stub_for(port: int) -> pb_grpc.EdgeInferenceStub:
    return pb_grpc.EdgeInferenceStub(grpc.insecure_channel(f"127.0.0.1:{port}"))


def metadata(model_id: str) -> tuple[tuple[str, str], ...]:
    return ((MODEL_ID_METADATA, model_id),)


def request_for(model, image, config: Config, request_id: int = 1) -> InferRequest:
    if config.input_codec:
        return InferRequest(request_id, config, encode_image(image, config.input_codec))
    head = model.forward_head(images_to_input(image[None]), config)
    return InferRequest(request_id, config, codec.encode(head.code))


def test_model_info_names_the_model_and_its_configs(edge, shipped):
    info = ModelInfo.from_message(stub_for(edge.port).GetModelInfo(model_info_request(),
                                                                   timeout=5))
    served = info.model(shipped.model_id)
    assert [m.model_id for m in info.models] == [shipped.model_id] and served is not None
    assert BOTTLENECK in served.configs and RAW in served.configs
    assert Config.offload_input("png") in served.configs


def test_one_server_serves_every_zoo_model_and_names_them(test_split):
    """With no model named, the server serves the whole zoo; each request picks its model
    by metadata, and a model it does not serve is refused naming the ones it does."""
    fmnist = load_checkpoint(checkpoint_for("mnv2_fmnist"))
    camera = load_checkpoint(checkpoint_for("resnet18_imagenette"))
    try:
        root = find_imagenette()
    except DatasetNotFoundError as error:
        pytest.skip(f"Imagenette is not on this machine: {error}")
    frame = decode_image(list_image_folder(root / "val")[0][0][0])
    server = EdgeServer(ServerOptions(address="127.0.0.1:0", max_wait_ms=1)).start()
    try:
        stub = stub_for(server.port)
        info = ModelInfo.from_message(stub.GetModelInfo(model_info_request(), timeout=5))
        assert {m.model_id for m in info.models} == {fmnist.model_id, camera.model_id}
        cases = [(fmnist, test_split.images[0], BOTTLENECK),
                 (camera, frame, Config(split=2, width=8, bits=4)),
                 (camera, frame, Config.offload_input("jpeg75"))]
        for loaded, image, config in cases:
            request = request_for(loaded.model, image, config)
            reply = InferReply.from_message(stub.Infer(
                request.to_message(), timeout=30, metadata=metadata(loaded.model_id)))
            sent = (decode_image(request.payload) if config.input_codec else image)[None]
            expected = torch.softmax(loaded.model(images_to_input(sent), config), 1)[0]
            assert reply.config == config and reply.label == int(expected.argmax())
            torch.testing.assert_close(torch.tensor(reply.probabilities), expected,
                                       atol=0.03, rtol=0)  # the camera edge may run in bf16
        good = request_for(fmnist.model, test_split.images[0], BOTTLENECK).to_message()
        code, details = _status(lambda: stub.Infer(good, timeout=5,
                                                   metadata=metadata("resnet50-0000")))
        assert code is grpc.StatusCode.FAILED_PRECONDITION
        assert "resnet50-0000" in details
        assert fmnist.model_id in details and camera.model_id in details
    finally:
        server.stop(1)


def test_the_edge_runs_bf16_only_where_this_cpu_runs_it_clearly_faster(shipped):
    from edge_server.engine import Engine

    camera = load_checkpoint(checkpoint_for("resnet18_imagenette"))
    assert camera.model.spec.edge_precision == "bf16"
    chosen = Engine(camera)  # "auto": timed here
    ms = chosen.precision_ms
    assert set(ms) == {"fp32", "bf16"} and all(v > 0 for v in ms.values())
    assert (chosen.precision == "bf16") == (ms["bf16"] < 0.9 * ms["fp32"])
    assert Engine(camera, "bf16").precision == "bf16"  # as told, untimed
    assert Engine(camera, "fp32").precision_ms == {}
    assert Engine(shipped).precision == "fp32"  # an fp32 model is not timed
    with pytest.raises(ValueError, match="fp16"):
        Engine(camera, "fp16")


@pytest.mark.parametrize("config", [BOTTLENECK, RAW, Config(split=2, width=1, bits=2),
                                    Config.offload_input("png")], ids=str)
def test_offloaded_result_equals_the_local_result(edge, shipped, test_split, config):
    stub, model = stub_for(edge.port), shipped.model
    for i in range(5):
        image = test_split.images[i]
        request = request_for(model, image, config, i)
        reply = InferReply.from_message(stub.Infer(request.to_message(), timeout=10,
                                                   metadata=metadata(shipped.model_id)))
        x = torch.tensor(image).float().div(255).reshape(1, 1, 28, 28)
        expected = torch.softmax(model(x, config), 1)[0]
        torch.testing.assert_close(torch.tensor(reply.probabilities), expected,
                                   rtol=1e-4, atol=1e-5)
        assert reply.label == int(expected.argmax()) and reply.config == config
        assert reply.compute_ms > 0 and reply.load.max_batch_size == 32


def test_concurrent_clients_are_batched_and_each_gets_its_answer(edge, shipped, test_split):
    model, errors, batch_sizes = shipped.model, [], []

    def client(offset: int) -> None:
        stub = stub_for(edge.port)
        requests = [request_for(model, test_split.images[offset + i], BOTTLENECK, i)
                    for i in range(10)]
        replies = stub.InferStream(iter([r.to_message() for r in requests]), timeout=30,
                                   metadata=metadata(shipped.model_id))
        for request, message in zip(requests, replies, strict=True):
            reply = InferReply.from_message(message)
            image = test_split.images[offset + request.request_id]
            x = torch.tensor(image).float().div(255).reshape(1, 1, 28, 28)
            if reply.label != int(model(x, BOTTLENECK).argmax()):
                errors.append((offset, request.request_id))
            batch_sizes.append(reply.batch_size)

    threads = [threading.Thread(target=client, args=(k * 10,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == [] and len(batch_sizes) == 80
    assert max(batch_sizes) > 1  # requests from different clients shared a batch


def _status(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code(), info.value.details()


def test_each_bad_input_gets_its_own_status_and_the_server_keeps_serving(edge, shipped,
                                                                         test_split):
    stub, model = stub_for(edge.port), shipped.model
    good = request_for(model, test_split.images[0], BOTTLENECK)
    meta = metadata(shipped.model_id)

    def ok() -> None:
        assert InferReply.from_message(stub.Infer(good.to_message(), timeout=10,
                                                  metadata=meta)).error is None

    code, details = _status(lambda: stub.Infer(good.to_message(), timeout=5,
                                               metadata=metadata("mnv2_fmnist-0000")))
    assert code is grpc.StatusCode.FAILED_PRECONDITION
    assert "mnv2_fmnist-0000" in details and shipped.model_id in details
    ok()
    corrupt = InferRequest(2, BOTTLENECK, good.payload[:-2])
    code, details = _status(lambda: stub.Infer(corrupt.to_message(), timeout=5, metadata=meta))
    assert code is grpc.StatusCode.INVALID_ARGUMENT and "payload" in details
    ok()
    # larger than any legal request to the models served: gRPC refuses it before it is read
    oversized = InferRequest(3, BOTTLENECK, bytes(edge.max_message_bytes + 10))
    code, details = _status(lambda: stub.Infer(oversized.to_message(), timeout=5,
                                               metadata=meta))
    assert code is grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in details
    ok()
    unknown = InferRequest(4, Config(split=9, width=4, bits=4), good.payload)
    code, details = _status(lambda: stub.Infer(unknown.to_message(), timeout=5, metadata=meta))
    assert code is grpc.StatusCode.INVALID_ARGUMENT and "configuration" in details
    ok()
    mismatched = InferRequest(5, Config(split=3, width=8, bits=4), good.payload)
    code, _ = _status(lambda: stub.Infer(mismatched.to_message(), timeout=5, metadata=meta))
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    ok()


def test_a_bad_input_on_a_stream_gets_an_error_reply_and_the_stream_goes_on(edge, shipped,
                                                                           test_split):
    good = request_for(shipped.model, test_split.images[0], BOTTLENECK)
    requests = [InferRequest(i, BOTTLENECK, good.payload if i % 2 else b"junk").to_message()
                for i in range(6)]
    replies = [InferReply.from_message(m) for m in stub_for(edge.port).InferStream(
        iter(requests), timeout=20, metadata=metadata(shipped.model_id))]
    assert [r.request_id for r in replies] == list(range(6))
    for r in replies:
        if r.request_id % 2:
            assert r.error is None and r.label == replies[1].label
        else:
            assert r.error is not None
            assert r.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]


def test_a_full_queue_answers_resource_exhausted(checkpoint, shipped, test_split):
    # One place in the queue, and the worker holds each request 300 ms hoping to batch it:
    # of several devices calling at once, one is queued and the others are turned away.
    server = EdgeServer(ServerOptions(address="127.0.0.1:0", checkpoints=(checkpoint,),
                                      max_queue=1, max_wait_ms=300)).start()
    try:
        good = request_for(shipped.model, test_split.images[0], BOTTLENECK).to_message()
        stub, meta = stub_for(server.port), metadata(shipped.model_id)
        calls = [stub.Infer.future(good, timeout=10, metadata=meta) for _ in range(4)]
        codes = []
        for call in calls:
            try:
                call.result()
                codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as error:
                codes.append(error.code())
        assert codes.count(grpc.StatusCode.OK) >= 1
        assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes
        # and the queue drains: the next request is served
        assert not stub.Infer(good, timeout=10, metadata=meta).HasField("error")
    finally:
        server.stop(1)


def test_a_call_that_gives_up_in_the_queue_does_not_stop_the_batch_worker(checkpoint,
                                                                         shipped, test_split):
    # the worker holds each request 300 ms hoping to batch it: a 50 ms call gives up first
    server = EdgeServer(ServerOptions(address="127.0.0.1:0", checkpoints=(checkpoint,),
                                      max_wait_ms=300)).start()
    try:
        good = request_for(shipped.model, test_split.images[0], BOTTLENECK).to_message()
        stub, meta = stub_for(server.port), metadata(shipped.model_id)
        code, _ = _status(lambda: stub.Infer(good, timeout=0.05, metadata=meta))
        assert code is grpc.StatusCode.DEADLINE_EXCEEDED
        time.sleep(0.4)  # its batch comes due with nobody waiting
        assert not stub.Infer(good, timeout=10, metadata=meta).HasField("error")
        assert server.batcher.depth == 0
    finally:
        server.stop(1)


def test_the_batcher_settles_a_batch_in_the_event_loop_and_skips_a_caller_that_left():
    import asyncio

    from edge_server.batching import DynamicBatcher

    def run_batch(key: str, items: list[float]) -> torch.Tensor:
        if key == "broken":
            raise ValueError("the model failed")
        return torch.tensor(items)[:, None].repeat(1, 3)

    batcher: DynamicBatcher[str, float] = DynamicBatcher(run_batch, max_wait_ms=50)

    async def main() -> None:
        futures = [batcher.submit("ok", float(i)) for i in range(5)]
        futures[2].cancel()  # its caller gave up before the batch ran
        results = await asyncio.gather(*futures, return_exceptions=True)
        assert isinstance(results[2], asyncio.CancelledError)
        assert [r.probabilities[0] for r in results if not isinstance(r, BaseException)] \
            == [0.0, 1.0, 3.0, 4.0]
        assert {r.batch_size for r in results if not isinstance(r, BaseException)} == {4}
        with pytest.raises(ValueError, match="the model failed"):
            await batcher.submit("broken", 1.0)  # each caller gets the model's error
        # two keys interleaved: each batch holds one key, every input its own answer
        mixed = [batcher.submit(key, float(i)) for i, key in enumerate("ababa")]
        answers = await asyncio.gather(*mixed)
        assert [a.probabilities[0] for a in answers] == [0.0, 1.0, 2.0, 3.0, 4.0]
        assert [a.batch_size for a in answers] == [3, 2, 3, 2, 3]

    try:
        asyncio.run(asyncio.wait_for(main(), 10))  # a lost result fails, not hangs
        assert batcher.depth == 0
    finally:
        batcher.close()


@pytest.mark.parametrize("rotate_ids", [False, True])
def test_one_device_past_its_share_is_refused_and_the_others_are_served(checkpoint, shipped,
                                                                          test_split,
                                                                          rotate_ids):
    """The share is keyed on what the edge authenticated (here, each device's own token),
    so a device that sends a new self-reported id with every call gains nothing."""
    from splitnet_proto.messages import AUTH_METADATA, DEVICE_ID_METADATA

    from edge_server.server import Limits

    # each request waits 300 ms hoping to batch: the flood's calls are all in flight at once
    server = EdgeServer(ServerOptions(address="127.0.0.1:0", checkpoints=(checkpoint,),
                                      max_wait_ms=300,
                                      device_tokens={"tok-flood": "flood", "tok-calm": "calm"},
                                      limits=Limits(per_device_in_flight=2,
                                                    over_share_delay_ms=500))).start()
    try:
        good = request_for(shipped.model, test_split.images[0], BOTTLENECK).to_message()
        stub = stub_for(server.port)

        def as_device(name: str, claimed: str):
            return metadata(shipped.model_id) + ((AUTH_METADATA, f"Bearer tok-{name}"),
                                                 (DEVICE_ID_METADATA, claimed))

        sent = time.perf_counter()
        flood = [stub.Infer.future(good, timeout=10, metadata=as_device(
                     "flood", f"flood-{i}" if rotate_ids else "flood")) for i in range(6)]
        calm = stub.Infer.future(good, timeout=10, metadata=as_device("calm", "calm"))
        assert not calm.result().HasField("error")  # the other device is served
        codes = []
        for call in flood:
            try:
                call.result()
                codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as error:
                codes.append(error.code())
                assert "share" in error.details()
        assert codes.count(grpc.StatusCode.OK) == 2
        assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == 4
        # the refusals came late: a flood that resends at once is slowed to their pace
        assert time.perf_counter() - sent >= 0.5
    finally:
        server.stop(1)


def test_a_stream_idle_past_the_limit_is_ended(checkpoint, shipped, test_split):
    import queue

    from edge_server.server import Limits

    server = EdgeServer(ServerOptions(address="127.0.0.1:0", checkpoints=(checkpoint,),
                                      limits=Limits(idle_stream_s=0.3))).start()
    try:
        good = request_for(shipped.model, test_split.images[0], BOTTLENECK).to_message()
        outgoing: queue.Queue = queue.Queue()
        replies = stub_for(server.port).InferStream(iter(outgoing.get, None), timeout=10,
                                                    metadata=metadata(shipped.model_id))
        outgoing.put(good)
        assert not next(replies).HasField("error")
        started = time.monotonic()
        with pytest.raises(StopIteration):  # nothing sent for 0.3 s: the edge ends it
            next(replies)
        assert time.monotonic() - started < 5
        outgoing.put(None)
    finally:
        server.stop(1)


def test_the_largest_bandwidth_probe_fits_the_message_limit(edge, shipped):
    """The device pads probes up to MAX_PROBE_PADDING_BYTES; the small model's own payloads
    are far smaller, and the limit must not cut the probes off (it once did)."""
    from splitnet_proto.messages import MAX_PROBE_PADDING_BYTES, probe_request

    reply = stub_for(edge.port).Probe(probe_request(MAX_PROBE_PADDING_BYTES), timeout=10,
                                      metadata=metadata(shipped.model_id))
    assert reply.received_bytes == MAX_PROBE_PADDING_BYTES


def test_health_service_answers_serving(edge):
    channel = grpc.insecure_channel(f"127.0.0.1:{edge.port}")
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "splitnet.v1.EdgeInference"):
        response = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_load_is_published_on_zmq(edge, shipped):
    socket = zmq.Context.instance().socket(zmq.SUB)
    socket.setsockopt(zmq.SUBSCRIBE, b"load")
    socket.setsockopt(zmq.RCVTIMEO, 5000)
    socket.connect(edge.publisher.address)
    try:
        topic, body = socket.recv().split(b" ", 1)
    finally:
        socket.close(linger=0)
    report = json.loads(body)
    assert topic == b"load" and report["model_ids"] == [shipped.model_id]
    assert {"queue_depth", "service_ms", "queue_ms_recent", "max_batch_size"} <= set(report)


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample at http://127.0.0.1:PORT/metrics, by (name, sorted labels)."""
    from urllib.request import urlopen

    from prometheus_client.parser import text_string_to_metric_families

    with urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_prometheus_metrics_are_scraped_over_http_and_move(checkpoint, shipped, test_split):
    server = EdgeServer(ServerOptions(address="127.0.0.1:0", checkpoints=(checkpoint,),
                                      metrics_port=0, metrics_address="127.0.0.1")).start()
    try:
        model_id = shipped.model_id
        before = scrape(server.metrics_port)
        assert before[("splitnet_edge_model_served",
                       (("architecture", shipped.model.spec.name), ("model", model_id)))] == 1
        assert before[("splitnet_edge_queue_depth", ())] == 0
        stub, meta = stub_for(server.port), metadata(model_id)
        good = request_for(shipped.model, test_split.images[0], BOTTLENECK)
        for _ in range(3):
            stub.Infer(good.to_message(), timeout=10, metadata=meta)
        _status(lambda: stub.Infer(InferRequest(2, BOTTLENECK, b"junk").to_message(),
                                   timeout=5, metadata=meta))
        _status(lambda: stub.Infer(good.to_message(), timeout=5, metadata=metadata("nope")))
        list(stub.InferStream(iter([good.to_message()] * 2), timeout=10, metadata=meta))
        after = scrape(server.metrics_port)

        def moved(name: str, **labels: str) -> float:
            key = (name, tuple(sorted(labels.items())))
            return after.get(key, 0.0) - before.get(key, 0.0)

        requests = "splitnet_edge_requests_total"
        assert moved(requests, model=model_id, method="Infer", code="OK") == 3
        assert moved(requests, model=model_id, method="Infer", code="INVALID_ARGUMENT") == 1
        assert moved(requests, model="unknown", method="Infer",
                     code="FAILED_PRECONDITION") == 1
        assert moved(requests, model=model_id, method="InferStream", code="OK") == 2
        for histogram in ("queue_seconds", "compute_seconds"):  # answered requests only
            assert moved(f"splitnet_edge_{histogram}_count", model=model_id) == 5
        assert moved("splitnet_edge_request_seconds_count", model=model_id) == 6
        assert moved("splitnet_edge_batch_size_count", model=model_id) >= 1
        assert moved("splitnet_edge_batch_size_sum", model=model_id) == 5
        assert moved("splitnet_edge_model_seconds_total", model=model_id) > 0
        assert moved("splitnet_edge_model_cpu_seconds_total", model=model_id) > 0
        assert after[("process_cpu_seconds_total", ())] > 0
        assert moved("splitnet_edge_received_bytes_total", model=model_id) >= 5 * len(
            good.payload)
        assert moved("splitnet_edge_sent_bytes_total", model=model_id) > 0
    finally:
        server.stop(1)
    with pytest.raises(OSError):  # stop() closed the metrics port too
        scrape(server.metrics_port)


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "server.crt", folder / "server.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


def test_tls_and_token(checkpoint, shipped, test_split, tls_files):
    cert, key = tls_files
    server = EdgeServer(ServerOptions(address="localhost:0", checkpoints=(checkpoint,),
                                      token="s3cret", tls_cert=cert, tls_key=key)).start()
    try:
        credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        channel = grpc.secure_channel(f"localhost:{server.port}", credentials)
        stub = pb_grpc.EdgeInferenceStub(channel)
        good = request_for(shipped.model, test_split.images[0], BOTTLENECK).to_message()
        meta = metadata(shipped.model_id)
        reply = stub.Infer(good, timeout=10, metadata=meta + ((AUTH_METADATA, "Bearer s3cret"),))
        assert not reply.HasField("error")
        code, details = _status(lambda: stub.Infer(good, timeout=5, metadata=meta))
        assert code is grpc.StatusCode.UNAUTHENTICATED and "token" in details
        code, _ = _status(lambda: stub.Infer(
            good, timeout=5, metadata=meta + ((AUTH_METADATA, "Bearer wrong"),)))
        assert code is grpc.StatusCode.UNAUTHENTICATED
        code, _ = _status(lambda: list(stub.InferStream(iter([good]), timeout=5,
                                                        metadata=meta)))
        assert code is grpc.StatusCode.UNAUTHENTICATED
        # stock health probes need no token
        health = health_pb2_grpc.HealthStub(channel)
        assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == \
            health_pb2.HealthCheckResponse.SERVING
        # and a plaintext client cannot talk to a TLS server
        plain = stub_for(server.port)
        code, _ = _status(lambda: plain.Infer(good, timeout=3, metadata=meta))
        assert code is grpc.StatusCode.UNAVAILABLE
    finally:
        server.stop(1)


def test_sigterm_lets_in_flight_requests_finish(checkpoint, shipped, test_split):
    process, port = start_edge_process(checkpoint, args=("--max-wait-ms", "400",
                                                         "--threads", "1"))
    try:
        stub = stub_for(port)
        good = request_for(shipped.model, test_split.images[0], BOTTLENECK).to_message()
        future = stub.Infer.future(good, timeout=10, metadata=metadata(shipped.model_id))
        time.sleep(0.15)  # the request is now waiting in the batcher
        process.send_signal(signal.SIGTERM)
        reply = future.result()
        assert not reply.HasField("error") and reply.queue_ms > 100
        code = process.wait(timeout=15)
        assert code == 0, process.stdout.read() if process.stdout else ""
    finally:
        process.kill()


def test_the_launcher_keeps_reading_the_servers_output(tmp_path):
    """After its serving line, a chatty server (here a stand-in that prints it, then 1 MB,
    far more than a pipe holds) must not block on a full pipe."""
    done = tmp_path / "done"
    script = (f"echo 'serving m on port 5'; head -c 1000000 /dev/zero | tr '\\0' x; "
              f"echo; touch {done}")
    process, port = start_edge_process(Path("unused.pt"), prefix=("sh", "-c", script, "sh"))
    try:
        assert port == 5
        assert process.wait(timeout=20) == 0 and done.exists()
    finally:
        process.kill()


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def test_mutual_tls_serves_devices_with_a_certificate_from_its_ca_only(checkpoint, test_split,
                                                                       tmp_path):
    """The README's openssl recipe: a CA, a server certificate, a device certificate."""
    from device_client.client import WHERE_EDGE, DeviceClient
    from device_client.options import DeviceOptions, LinkOptions, PolicyOptions

    ca, ca_key = tmp_path / "ca.crt", tmp_path / "ca.key"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
             "-subj", "/CN=splitnet test CA", "-keyout", str(ca_key), "-out", str(ca))
    for name, subject in (("server", "/CN=localhost"), ("device", "/CN=camera-1"),
                          ("stranger", "/CN=camera-2")):
        key, csr = tmp_path / f"{name}.key", tmp_path / f"{name}.csr"
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", subject,
                 "-keyout", str(key), "-out", str(csr))
        issuer = ("-signkey", str(key)) if name == "stranger" else (
            "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial")
        extension = tmp_path / f"{name}.ext"
        extension.write_text("subjectAltName=DNS:localhost\n")
        _openssl("x509", "-req", "-in", str(csr), *issuer, "-days", "1",
                 "-extfile", str(extension), "-out", str(tmp_path / f"{name}.crt"))
    server = EdgeServer(ServerOptions(
        address="localhost:0", checkpoints=(checkpoint,), tls_cert=tmp_path / "server.crt",
        tls_key=tmp_path / "server.key", tls_client_ca=ca)).start()
    image = test_split.images[0]
    try:
        def run_as(identity):
            with DeviceClient(checkpoint, f"localhost:{server.port}",
                              policy=PolicyOptions("fixed-paper", fixed_config=BOTTLENECK),
                              link=LinkOptions(tls_ca=ca, tls_identity=identity,
                                               offload_timeout_ms=3000, monitor=False),
                              device=DeviceOptions(battery="1.0")) as client:
                return client.infer(image)

        assert run_as((tmp_path / "device.crt", tmp_path / "device.key")).where == WHERE_EDGE
        for refused in ((tmp_path / "stranger.crt", tmp_path / "stranger.key"), None):
            result = run_as(refused)  # the handshake fails: the device finishes the input
            assert result.fallback and result.label >= 0
    finally:
        server.stop(1)


def _frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + \
        stream.to_bytes(4, "big") + payload


def _grpc_headers() -> bytes:
    """An HPACK block for a gRPC call: :method POST, :scheme http, :path, content-type, te."""
    def literal(name_index: int, value: bytes) -> bytes:  # without indexing, indexed name
        prefix = bytes([name_index]) if name_index < 15 else bytes([0x0F, name_index - 15])
        return prefix + bytes([len(value)]) + value

    path = b"/splitnet.v1.EdgeInference/Infer"
    return (b"\x83\x86" + literal(4, path) + literal(31, b"application/grpc")
            + b"\x00\x02te\x08trailers")


def test_garbage_on_raw_sockets_leaves_the_server_serving(edge, shipped, test_split):
    """Bytes no gRPC client would send: the server drops those connections and goes on
    answering a well-behaved client meanwhile."""
    import socket

    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    good = request_for(shipped.model, test_split.images[0], BOTTLENECK).to_message()
    stub, meta = stub_for(edge.port), metadata(shipped.model_id)
    attacks = {
        "garbage after the preface": preface + bytes(range(256)) * 16,
        "a truncated preface": preface[:10],
        "HEADERS without DATA, 500 streams": preface + _frame(4, 0, 0) + b"".join(
            _frame(1, 0x4, stream, _grpc_headers()) for stream in range(1, 1001, 2)),
    }
    for name, data in attacks.items():
        with socket.create_connection(("127.0.0.1", edge.port), timeout=5) as raw:
            raw.sendall(data)
            for _ in range(3):  # the well-behaved client, while the connection is open
                assert not stub.Infer(good, timeout=10, metadata=meta).HasField("error"), name
            raw.settimeout(2)
            try:
                while raw.recv(65536):  # the server answers with frames, or closes
                    pass
            except (TimeoutError, ConnectionResetError):
                pass  # still open (the truncated preface waits) or reset: either way, alive
    assert not stub.Infer(good, timeout=10, metadata=meta).HasField("error")


def _burn_cpu(seconds: float) -> None:
    """Spin until this thread has spent ``seconds`` of CPU."""
    started = time.thread_time()
    while time.thread_time() - started < seconds:
        pass


def test_the_benchmark_counts_a_process_cpu_to_well_under_a_tick():
    """The server CPU per request is a difference of two readings over a round of about
    100 camera requests: 10 ms ticks would be a tenth of a millisecond per request.

    A thread burns 3 ms and then waits, and is read while it waits: the scheduler's count
    of a thread that is running lags until its next tick (4 ms here; reading this very
    thread once read 5-6 ms for 3), but a waiting thread's is exact."""
    import os

    from experiments.bench.edge import process_cpu_s, thread_cpu_s

    pid, burnt, done, release = os.getpid(), [0.0], threading.Event(), threading.Event()

    def burn() -> None:
        _burn_cpu(0.003)
        burnt[0] = time.thread_time()  # this thread's whole CPU so far
        done.set()
        release.wait(10)

    worker = threading.Thread(target=burn)
    worker.start()
    try:
        assert done.wait(10)
        time.sleep(0.01)  # the worker is waiting on ``release`` now
        assert worker.native_id is not None
        counted = thread_cpu_s(pid)[worker.native_id][1]
        process_after = process_cpu_s(pid)
    finally:
        release.set()
        worker.join()
    assert abs(counted - burnt[0]) < 0.0005  # ticks would read 0 or 10 ms
    assert process_after >= counted  # the process's sum holds it


def test_the_benchmark_splits_a_process_cpu_by_thread_and_finds_the_busiest():
    import os

    from experiments.bench.edge import cpu_by_thread, thread_cpu_s

    burnt, read = threading.Event(), threading.Event()

    def model() -> None:  # the batch worker: the most CPU, alive across both readings
        _burn_cpu(0.03)
        burnt.set()
        read.wait(10)

    # a running thread's count lags until the scheduler's next tick: this thread sleeps
    # before each reading, so its count is brought up to date when it is switched out
    time.sleep(0.01)
    before = thread_cpu_s(os.getpid())
    worker = threading.Thread(target=model)
    worker.start()
    try:
        burnt.wait(10)
        _burn_cpu(0.005)  # this (main) thread: one of the process's other Python threads
        time.sleep(0.01)
        parts = cpu_by_thread(os.getpid(), before, thread_cpu_s(os.getpid()))
    finally:
        read.set()
        worker.join()
    assert 0.03 <= parts["batch_worker"] < 0.04
    assert 0.005 <= parts["other_python_threads"] < 0.015
