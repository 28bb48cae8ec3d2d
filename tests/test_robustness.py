"""The device and the edge as long-running services: camera stills of any size, timed-out
probes, malformed replies, drop folders, the token's help, and systemd's watchdog.

Each test here failed on the code before the fix it names."""

from __future__ import annotations

import asyncio
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image
from splitnet_proto.messages import MODEL_ID_METADATA, InferReply, InferRequest
from splitnet_proto.v1 import inference_pb2 as pb
from splitnet_proto.v1 import inference_pb2_grpc as pb_grpc

from device_client.client import DeviceClient
from device_client.edge import EdgeError, EdgeLink
from device_client.options import DeviceOptions, LinkOptions
from device_client.service import frames, load_service_config, run_service
from edge_server.server import EdgeServer, ServerOptions
from splitnet.config import Config
from splitnet.images import ImageDecodeError, decode_image
from splitnet.input_codecs import encode_image

SPLIT = Config(split=3, width=4, bits=4)


def _photo(width: int, height: int) -> Image.Image:
    """A still at a camera's size, smooth like a photograph (what is tested here is the
    size: the decoder's limits, draft mode and memory, not what the image shows)."""
    rng = np.random.default_rng(width)
    base = rng.integers(0, 255, (height // 64 + 1, width // 64 + 1, 3), np.uint8)
    return Image.fromarray(base).resize((width, height), Image.Resampling.BILINEAR)


def _with_declared_size(jpeg: bytes, width: int, height: int) -> bytes:
    """A JPEG whose frame header (SOF0) declares another size: what a 100 MP file looks
    like to a decoder that reads the header first."""
    at = jpeg.index(b"\xff\xc0") + 5
    return jpeg[:at] + height.to_bytes(2, "big") + width.to_bytes(2, "big") + jpeg[at + 4:]


@pytest.fixture(scope="module")
def stills(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("stills")
    _photo(4056, 3040).save(folder / "a-hq-camera-12mp.jpg", quality=90)
    _photo(5664, 4248).save(folder / "b-24mp.jpg", quality=85)
    _photo(4056, 3040).save(folder / "c-12mp.png", compress_level=1)
    small = io.BytesIO()
    _photo(320, 240).save(small, "JPEG", quality=80)
    (folder / "d-100mp.jpg").write_bytes(_with_declared_size(small.getvalue(), 12000, 8400))
    _photo(1280, 960).save(folder / "e-after.jpg", quality=90)
    return folder


def test_camera_stills_are_classified_after_the_codecs_ran(edge, checkpoint, stills):
    """Before: the warm-up's image encoding lowered Pillow's process-wide bomb limit to
    1024², and the next 12 MP still raised DecompressionBombError (not an ImageDecodeError),
    which killed the client."""
    encode_image(np.zeros((28, 28), np.uint8), "png")  # what the warm-up does
    with DeviceClient(checkpoint, f"127.0.0.1:{edge.port}", policy="offload-input",
                      link=LinkOptions(monitor=False),
                      device=DeviceOptions(battery="1.0")) as client:
        results = {}
        for path in sorted(stills.iterdir()):
            try:
                results[path.name] = client.infer(path)
            except ImageDecodeError as error:
                results[path.name] = error
    assert isinstance(results["d-100mp.jpg"], ImageDecodeError)
    assert "100.8 MP" in str(results["d-100mp.jpg"])
    for name in ("a-hq-camera-12mp.jpg", "b-24mp.jpg", "c-12mp.png", "e-after.jpg"):
        assert results[name].label >= 0 and results[name].where == "edge", name


def test_a_drop_folder_service_skips_a_too_large_file_and_answers_the_next(edge, stills,
                                                                          tmp_path):
    config = tmp_path / "device.toml"
    config.write_text(f'[device]\nedge = "127.0.0.1:{edge.port}"\nmodel = "mnv2_fmnist"\n'
                      f'policy = "offload-input"\nbattery = "1.0"\n'
                      f'[source]\nimages = "{stills}"\nrate_hz = 50\n')
    out = io.StringIO()
    assert run_service(load_service_config(config), out) == 0
    answered = [json.loads(line)["file"] for line in out.getvalue().splitlines()]
    assert [Path(f).name for f in answered] == ["a-hq-camera-12mp.jpg", "b-24mp.jpg",
                                                 "c-12mp.png", "e-after.jpg"]


def test_jpeg_stills_decode_in_draft_mode():
    buffer = io.BytesIO()
    _photo(4056, 3040).save(buffer, "JPEG", quality=90)
    with Image.open(io.BytesIO(buffer.getvalue())) as img:
        img.draft("RGB", (224, 224))
        assert img.size == (507, 380)  # 1/8 scale: what decode_image inflates
    assert decode_image(buffer.getvalue(), 224).shape == (224, 224, 3)


def test_a_probe_that_times_out_says_so():
    """Before: EdgeLink.probe never set timed_out, so a slow probe marked the edge down."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()  # accepts connections, never speaks HTTP/2
    link = EdgeLink(f"127.0.0.1:{silent.getsockname()[1]}", "any-model")
    try:
        started = time.monotonic()
        with pytest.raises(EdgeError) as caught:
            link.probe(0, timeout_s=0.3)
        assert caught.value.timed_out
        assert caught.value.code is grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - started < 5
    finally:
        link.close()
        silent.close()


class _BadReplies(pb_grpc.EdgeInferenceServicer):
    """An edge whose first reply on a stream carries a config no splitnet accepts."""

    async def InferStream(self, request_iterator, context):  # noqa: N802
        first = True
        async for message in request_iterator:
            reply = InferReply(message.request_id, Config(split=3, width=4, bits=4),
                               (0.1,) * 10, 1).to_message()
            if first:
                reply.config.bits = 3  # not 2, 4 or 8: parsing it raises ConfigError
                first = False
            yield reply


def test_a_malformed_reply_fails_only_its_own_input_and_the_stream_goes_on():
    """Before: the reader thread caught only RpcError; a ConfigError killed it while the
    session still looked open, and every later input waited out its timeout."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def serve() -> tuple[grpc.aio.Server, int]:
        server = grpc.aio.server()
        pb_grpc.add_EdgeInferenceServicer_to_server(_BadReplies(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        return server, port

    server, port = asyncio.run_coroutine_threadsafe(serve(), loop).result()
    link = EdgeLink(f"127.0.0.1:{port}", "any-model")
    try:
        with pytest.raises(EdgeError, match="malformed reply"):
            link.infer(InferRequest(1, SPLIT, b"x"), timeout_s=5)
        started = time.monotonic()
        reply = link.infer(InferRequest(2, SPLIT, b"x"), timeout_s=5)
        assert reply.request_id == 2 and time.monotonic() - started < 2
    finally:
        link.close()
        asyncio.run_coroutine_threadsafe(server.stop(0), loop).result()
        loop.call_soon_threadsafe(loop.stop)


def test_a_looping_drop_folder_classifies_each_new_file_once(tmp_path):
    """Before: with loop = true every old file was classified again on each pass."""
    stop = threading.Event()
    (tmp_path / "1.png").write_bytes(b"a")
    seen: list[str] = []
    passes = 0

    def wait(seconds: float) -> bool:
        nonlocal passes
        passes += 1
        if passes == 1:
            (tmp_path / "2.png").write_bytes(b"b")
        if passes == 2:
            os.utime(tmp_path / "1.png", ns=(1, 10**18))  # replaced: a newer file
        return passes >= 4

    for path in frames(tmp_path, True, stop, wait):
        seen.append(path.name)
    assert seen == ["1.png", "2.png", "1.png"]


def test_unauthenticated_tells_the_device_how_to_give_its_token(checkpoint, shipped):
    """Before: it said to pass --token, which the device's command line refuses."""
    server = EdgeServer(ServerOptions(address="127.0.0.1:0", checkpoints=(checkpoint,),
                                      token="secret")).start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel, \
                pytest.raises(grpc.RpcError) as caught:
            pb_grpc.EdgeInferenceStub(channel).Probe(
                pb.ProbeRequest(), timeout=5, metadata=((MODEL_ID_METADATA, shipped.model_id),))
        assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
        assert "--token-file" in caught.value.details()
        assert "$SPLITNET_TOKEN" in caught.value.details()
    finally:
        server.stop(1)


# ------------------------------------------------------------------------ watchdog
class _Systemd:
    """What systemd does for Type=notify with WatchdogSec=: listen on a datagram socket
    (NOTIFY_SOCKET) and restart the service when WATCHDOG=1 stops for an interval."""

    def __init__(self, folder: Path, interval_s: float) -> None:
        self.path = folder / "notify.sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.sock.settimeout(0.1)
        self.interval_s = interval_s

    def env(self) -> dict[str, str]:
        return {**os.environ, "NOTIFY_SOCKET": str(self.path),
                "WATCHDOG_USEC": str(int(self.interval_s * 1e6))}

    def supervise(self, process: subprocess.Popen, limit_s: float) -> list[str]:
        """Messages until the process exits, or it is killed for a silent watchdog
        (appends "killed"), or ``limit_s`` passes."""
        messages: list[str] = []
        last_feed = None
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline and process.poll() is None:
            try:
                message = self.sock.recv(256).decode()
                messages.append(message)
                if message in ("READY=1", "WATCHDOG=1"):
                    last_feed = time.monotonic()
            except TimeoutError:
                pass
            if last_feed is not None and time.monotonic() - last_feed > self.interval_s:
                process.kill()  # systemd: SIGABRT then SIGKILL, then Restart=
                messages.append("killed")
                break
        return messages

    def close(self) -> None:
        self.sock.close()


def test_a_stalled_pipeline_is_restarted_by_the_watchdog(edge, tmp_path, test_split):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(40):
        Image.fromarray(test_split.images[i]).save(folder / f"{i:03d}.png")
    config = tmp_path / "device.toml"
    config.write_text(f'[device]\nedge = "127.0.0.1:{edge.port}"\nmodel = "mnv2_fmnist"\n'
                      f'battery = "1.0"\n[source]\nimages = "{folder}"\nloop = true\n'
                      f'rate_hz = 20\n')
    systemd = _Systemd(tmp_path, interval_s=2.0)
    command = [sys.executable, "-m", "device_client", "--config", str(config)]
    try:
        # a service whose pipeline hangs after five frames, while its process lives on
        env = systemd.env() | {"SPLITNET_FAULTS": "device.sink=hang:3600+5"}
        hung = subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True)
        messages = systemd.supervise(hung, limit_s=120)
        assert messages[0] == "READY=1" and "WATCHDOG=1" in messages
        assert messages[-1] == "killed"  # the watchdog went silent: systemd restarts it
        hung.wait(timeout=10)
        answered_before = len(hung.stdout.read().splitlines()) if hung.stdout else 0
        assert answered_before == 5
        restarted = subprocess.Popen(command, env=systemd.env(), stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        messages = systemd.supervise(restarted, limit_s=max(10.0, 4 * systemd.interval_s))
        assert messages.count("WATCHDOG=1") >= 2 and "killed" not in messages
        restarted.terminate()
        assert restarted.wait(timeout=30) == 0
    finally:
        systemd.close()
