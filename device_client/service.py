"""The device as a long-running service: frames from a source, one JSON line per result.

    config file (TOML) ─► DeviceClient (edge replicas, model, policy, battery, token, TLS)
    [source] frames, one of:
             camera = N    picamera2, else V4L2 /dev/videoN, pipelined (pipeline.py)
             video = FILE  a video file at its own frame rate, pipelined
             images = DIR  every image file in a folder, in name order, once; or with
                           loop = true, watched: each new file once (a camera daemon's
                           drop folder), at most rate_hz per second
             ─► infer ─► one JSON line per frame on stdout, and on a ZMQ PUB socket if set
    SIGTERM / SIGINT ─► the frame in flight finishes and is written; then a summary on
                        stderr ("N frames started, N answered") and exit 0
    a failure it cannot go on from (camera, output, a stalled stage) ─► exit 1, reason on
                        stderr; under systemd, READY=1 after warm-up and WATCHDOG=1 only
                        while the stages make progress (device_client/systemd.py)

    [device]                              # every key is optional but edge
    edge = "10.0.0.5:50051,10.0.0.6:50051"
    model = "resnet18_imagenette"
    policy = "adaptive"
    battery = "auto"
    token_file = "/etc/splitnet/token"    # or $SPLITNET_TOKEN (systemd: a credential)
    tls_ca = "/etc/splitnet/ca.crt"       # TLS; with tls_cert and tls_key: mutual TLS
    [source]                              # one of camera, video, images
    camera = 0
    # video = "/var/lib/splitnet/clip.mp4"; loop = true
    # images = "/var/lib/splitnet/frames"; loop = false; rate_hz = 2
    [results]
    stdout = true
    zmq_pub = "tcp://*:5560"              # each result as b"result " + JSON

``python -m device_client --config FILE`` runs it; device_client/splitnet-device.service
is the systemd unit.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from device_client import systemd
from device_client.systemd import WatchdogFeeder, watchdog_interval_s
from splitnet import faults
from splitnet.images import ImageDecodeError
from splitnet.settings import SettingsError, from_table
from splitnet.supervision import Stopped, Supervisor

RESULT_TOPIC = b"result"
FRAME_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class ServiceConfigError(SettingsError):
    """A device config file that cannot run."""


@dataclass(frozen=True)
class ServiceConfig:
    edge: str = ""  # required: the edge address(es)
    images: Path | None = None
    video: Path | None = None
    camera: int | None = None
    model: str = "resnet18_imagenette"
    policy: str = "adaptive"
    battery: str = "auto"
    token_file: Path | None = None
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    probe_interval_s: float = 5.0  # idle bandwidth probes (see the README's data cost)
    loop: bool = False
    rate_hz: float = 2.0
    stdout: bool = True
    zmq_pub: str | None = None

    def __post_init__(self) -> None:
        given = [k for k in ("camera", "video", "images") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ServiceConfigError(f"[source] needs exactly one of camera, video, images "
                                     f"(got {given or 'none'})")
        if not self.edge:
            raise ServiceConfigError("'edge' is required")
        if not 0 < self.rate_hz <= 100:
            raise ServiceConfigError("rate_hz must be in (0, 100]")
        if not 0.2 <= self.probe_interval_s <= 3600:
            raise ServiceConfigError("probe_interval_s must be in [0.2, 3600] seconds")


SECTIONS = {"device": ("edge", "model", "policy", "battery", "token_file", "tls_ca",
                       "tls_cert", "tls_key", "probe_interval_s"),
            "source": ("camera", "video", "images", "loop", "rate_hz"),
            "results": ("stdout", "zmq_pub")}


def load_service_config(path: Path) -> ServiceConfig:
    """A device config from TOML; ServiceConfigError names what is wrong."""
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ServiceConfigError(f"{path}: {error}") from None
    unknown_sections = sorted(set(data) - set(SECTIONS))
    if unknown_sections:
        raise ServiceConfigError(f"{path}: unknown sections {unknown_sections}; "
                                 f"known: {list(SECTIONS)}")
    values: dict[str, Any] = {}
    for section, keys in SECTIONS.items():
        table = data.get(section, {})
        if not isinstance(table, dict):
            raise ServiceConfigError(f"{path}: [{section}] must be a table")
        unknown = sorted(set(table) - set(keys))
        if unknown:
            raise ServiceConfigError(f"{path}: unknown keys {unknown} in [{section}]; "
                                     f"known: {list(keys)}")
        values.update(table)
    try:  # paths are relative to the config file
        config = from_table(ServiceConfig, values, str(path), relative_to=path.parent)
    except SettingsError as error:
        raise ServiceConfigError(str(error)) from None
    if config.images is not None and not config.images.is_dir():
        raise ServiceConfigError(f"{path}: images = {config.images} is not a folder")
    if config.video is not None and not config.video.is_file():
        raise ServiceConfigError(f"{path}: video = {config.video} is not a file")
    return config


def frames(folder: Path, loop: bool, stop: threading.Event,
           wait: Callable[[float], bool] | None = None) -> Iterator[Path]:
    """Image files under ``folder`` in name order. With ``loop``, the folder is watched:
    each pass yields only the files not yielded before (a camera daemon's drop folder), and
    a file that is replaced (a newer modification time) counts as new. ``wait(seconds)``
    sleeps between passes and says whether to stop (default: ``stop.wait``)."""
    wait = wait or stop.wait
    seen: dict[Path, int] = {}
    while not stop.is_set():
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in FRAME_SUFFIXES)
        fresh = []
        for path in files:
            with contextlib.suppress(OSError):  # removed meanwhile
                mtime = path.stat().st_mtime_ns
                if seen.get(path) != mtime:
                    fresh.append(path)
                    seen[path] = mtime
        if loop:  # forget files that are gone, so the record stays the folder's size
            present = set(files)
            for path in [p for p in seen if p not in present]:
                del seen[path]
        for path in fresh:
            if stop.is_set():
                return
            yield path
        if not loop:
            return
        if not fresh and wait(1.0):
            return


class Progress:
    """When the service last moved (monotonic seconds): what the watchdog feeds on."""

    def __init__(self) -> None:
        self.at = time.monotonic()

    def set(self, at: float | None = None) -> None:
        self.at = time.monotonic() if at is None else at


def run_service(config: ServiceConfig, out: TextIO = sys.stdout) -> int:
    """Run until the source ends or SIGTERM/SIGINT; every frame started is answered.

    Exit status: 0 when the source ended or a signal stopped it; 1 when the service could
    not go on (a camera failure, results that cannot be written, a stalled stage, a
    background loop of the client that kept failing), with the reason on stderr."""
    from device_client.client import DeviceClient
    from device_client.options import DeviceOptions, LinkOptions
    from splitnet.tokens import read_token
    from splitnet.zoo import checkpoint_for

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()  # the frame in flight finishes; no new one starts
        systemd.notify("STOPPING=1")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    identity = (config.tls_cert, config.tls_key) if config.tls_cert and config.tls_key \
        else None
    publisher = _publisher(config.zmq_pub) if config.zmq_pub else None

    def emit(record: dict[str, Any]) -> None:
        line = json.dumps(record | {"t": time.time()})
        if config.stdout:
            out.write(line + "\n")
            out.flush()
        if publisher is not None:
            publisher.send(RESULT_TOPIC + b" " + line.encode())

    progress = Progress()
    interval = watchdog_interval_s()
    feeder: WatchdogFeeder | None = None
    try:
        with DeviceClient(checkpoint_for(config.model), config.edge, policy=config.policy,
                          link=LinkOptions(token=read_token(config.token_file),
                                           tls_ca=config.tls_ca, tls_identity=identity,
                                           probe_interval_s=float(config.probe_interval_s)),
                          device=DeviceOptions(battery=config.battery)) as client:
            client.warm_up()
            progress.set()
            systemd.notify("READY=1")  # systemd's watchdog runs from here
            if interval:
                feeder = WatchdogFeeder(interval, lambda: progress.at)
            if config.images is not None:
                status = _run_folder(client, config, stop, emit, progress)
            else:
                status = _run_stream(client, config, stop, emit, progress)
            if status == 0 and not client.healthy:
                print(f"error: {client.supervisor.failure}", file=sys.stderr, flush=True)
                status = 1
    finally:
        if feeder is not None:
            feeder.close()
        if publisher is not None:
            publisher.close(linger=500)
    return status


def _run_folder(client: Any, config: ServiceConfig, stop: threading.Event,
                emit: Callable[[dict[str, Any]], None], progress: Progress) -> int:
    """Image files from a folder, one at a time, at most rate_hz per second, on a
    supervised thread (a file whose classification raises is answered with the error; a
    stalled round or results that cannot be written stop the service).

    Long because: the folder's round is a closure over its pacing and counters, which the
    supervisor runs."""
    from device_client.pipeline import STALL_S
    from device_client.results import failed_result

    assert config.images is not None
    counts = {"started": 0, "answered": 0, "skipped": 0}
    interval = 1.0 / float(config.rate_hz)
    next_at = time.monotonic()
    failure: list[str] = []

    def fatal(name: str, reason: str) -> None:
        failure.append(f"{name} {reason}")
        stop.set()

    supervisor = Supervisor(fatal, max_restarts=0)
    beat_box: list[Callable[[], None]] = []

    def wait(seconds: float) -> bool:
        """Sleep, beating, in pieces of at most half a second; True to stop."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            if stop.wait(min(left, 0.5)):
                return True
            if beat_box:
                beat_box[0]()
        return stop.is_set()

    files = frames(config.images, config.loop, stop, wait)

    def one_file(beat: Callable[[], None]) -> None:
        nonlocal next_at
        beat_box[:] = [beat]
        path = next(files, None)
        if path is None:
            raise Stopped
        if wait(max(next_at - time.monotonic(), 0.0)):
            raise Stopped
        next_at = max(next_at + interval, time.monotonic())
        counts["started"] += 1
        try:
            result = client.infer(path)
        except ImageDecodeError as error:
            counts["skipped"] += 1
            print(f"skipped: {error}", file=sys.stderr, flush=True)
            return
        except Exception as error:  # noqa: BLE001 - the file is still answered
            result = failed_result(None, error)
        try:
            faults.point("device.sink")
            emit(result.record() | {"file": str(path)})
        except Exception as error:  # noqa: BLE001 - results cannot be delivered
            fatal("result sink", f"failed: {type(error).__name__}: {error}")
            raise Stopped from None
        counts["answered"] += 1

    supervisor.start("folder", one_file, STALL_S)
    while not failure and not all(loop.finished for loop in supervisor.loops.values()):
        progress.set(supervisor.last_progress())
        time.sleep(0.1)
    supervisor.stop_event.set()
    print(f"stopped: {counts['started']} frames started, {counts['answered']} answered, "
          f"{counts['skipped']} skipped (unreadable or too large)", file=sys.stderr,
          flush=True)
    if failure:
        print(f"error: {failure[0]}", file=sys.stderr, flush=True)
        return 1
    return 0


def _run_stream(client: Any, config: ServiceConfig, stop: threading.Event,
                emit: Callable[[dict[str, Any]], None], progress: Progress) -> int:
    """A camera or a video file, pipelined; stale frames dropped and counted."""
    from device_client.pipeline import StreamResult, run_stream
    from device_client.sources import SourceError, open_source

    def on_result(done: StreamResult) -> None:
        emit(done.result.record() | {"frame": done.index,
                                     "latency_from_capture_ms": done.latency_ms})

    try:
        source = open_source(config.camera, config.video, config.loop)
    except SourceError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return 2
    with source:
        stats = run_stream(client, source, None, on_result, stop, progress=progress.set)
    print(f"stopped: {stats.captured - stats.dropped} frames started, {stats.answered} "
          f"answered, {stats.dropped} dropped (stale)", file=sys.stderr, flush=True)
    if stats.source_error or stats.failure:
        print(f"error: {stats.source_error or stats.failure}", file=sys.stderr, flush=True)
        return 1
    return 0


def _publisher(address: str) -> Any:
    import zmq

    socket: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.PUB)
    socket.bind(address)
    return socket
