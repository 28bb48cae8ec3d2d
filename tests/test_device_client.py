"""The device client against a real edge server: equal results, concurrency, no lost input."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from device_client.client import WHERE_EDGE, WHERE_EXIT, WHERE_LOCAL, DeviceClient
from device_client.options import DeviceOptions, LinkOptions, PolicyOptions
from edge_server.server import EdgeServer, ServerOptions
from splitnet.config import LOCAL, Config, Placement
from splitnet.preprocess import images_to_input
from tests.conftest import free_port

FIXED = Config(split=3, width=4, bits=4)


def start_server(checkpoint, port: int = 0) -> EdgeServer:
    return EdgeServer(ServerOptions(address=f"127.0.0.1:{port}", checkpoints=(checkpoint,),
                                    max_wait_ms=1)).start()


@pytest.fixture(scope="module")
def edge(checkpoint):
    server = start_server(checkpoint)
    yield server
    server.stop(1)


def local_probabilities(model, image: np.ndarray, config: Config) -> torch.Tensor:
    x = torch.tensor(image).float().div(255).reshape(1, 1, 28, 28)
    with torch.no_grad():
        return torch.softmax(model(x, config), 1)[0]


@pytest.mark.parametrize("config", [FIXED, Config(split=1, bits=8),
                                    Config.offload_input("png")], ids=str)
def test_offloaded_results_equal_local_results(edge, checkpoint, test_split, config):
    with DeviceClient(checkpoint, f"127.0.0.1:{edge.port}",
                      policy=PolicyOptions("fixed-paper", fixed_config=config),
                      link=LinkOptions(offload_timeout_ms=10_000, monitor=False),
                      device=DeviceOptions(battery="1.0")) as client:
        for image in test_split.images[:8]:
            result = client.infer(image)
            assert result.where == WHERE_EDGE and not result.fallback
            assert result.config == config and result.bytes_sent > 0
            assert result.bytes_received > 40  # ten float probabilities and the timings
            torch.testing.assert_close(torch.tensor(result.probabilities),
                                       local_probabilities(client.model, image, config),
                                       rtol=1e-4, atol=1e-5)
            assert result.latency.total_ms >= result.latency.device_ms
            assert result.energy_mj > 0


def test_an_exit_that_fires_sends_nothing(edge, checkpoint, test_split):
    config = FIXED.with_exit(0.9)
    with DeviceClient(checkpoint, f"127.0.0.1:{edge.port}",
                      policy=PolicyOptions("fixed-paper", fixed_config=config),
                      link=LinkOptions(monitor=False),
                      device=DeviceOptions(battery="1.0")) as client:
        results = [client.infer(image) for image in test_split.images[:30]]
        send_overhead_ms = client.estimates().send_overhead_ms
    exited = [r for r in results if r.where == "device-exit"]
    assert exited and all(r.bytes_sent == 0 for r in exited)
    assert any(r.where == WHERE_EDGE for r in results)
    # both kinds ran: the device now knows what sending costs it over a local input
    assert set(send_overhead_ms) == {Placement.SPLIT} and send_overhead_ms[Placement.SPLIT] >= 0


def test_several_clients_at_once(edge, checkpoint, test_split):
    import threading

    outcomes: list[list] = []

    # Four clients in one process share the GIL with the edge: on a busy two-core host a reply
    # can take longer than the 200 ms the timeout rule allows a tiny model, and one timeout
    # sends the rest of that client's inputs local. This test is about the edge serving
    # clients at once, so they wait as long as the CI host may need.
    def run(offset: int) -> None:
        with DeviceClient(checkpoint, f"127.0.0.1:{edge.port}",
                          policy=PolicyOptions("fixed-paper", fixed_config=FIXED),
                          link=LinkOptions(offload_timeout_ms=10_000, monitor=False),
                          device=DeviceOptions(battery="1.0")) as client:
            outcomes.append([client.infer(img) for img in test_split.images[offset:offset + 10]])

    threads = [threading.Thread(target=run, args=(k * 10,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(outcomes) == 4
    not_on_edge = [(r.where, r.error) for o in outcomes for r in o if r.where != WHERE_EDGE]
    assert all(len(o) == 10 for o in outcomes) and not not_on_edge, not_on_edge


def test_server_stopped_mid_run_loses_no_input_and_restart_resumes_offloading(checkpoint,
                                                                              test_split):
    port = free_port()
    server = start_server(checkpoint, port)
    images, labels = test_split.images[:60], test_split.labels[:60]
    results = []
    with DeviceClient(checkpoint, f"127.0.0.1:{port}",
                      policy=PolicyOptions("fixed-paper", fixed_config=FIXED),
                      link=LinkOptions(offload_timeout_ms=2000),
                      device=DeviceOptions(battery="1.0")) as client:
        for image in images[:20]:
            results.append(client.infer(image))
        server.stop(0)  # the edge disappears mid-run
        for image in images[20:40]:
            results.append(client.infer(image))
        assert not client.health.up
        server = start_server(checkpoint, port)  # and comes back on the same address
        deadline = time.monotonic() + 20
        for image in images[40:]:
            results.append(client.infer(image))
        while not client.health.up and time.monotonic() < deadline:
            time.sleep(0.1)
        resumed = client.infer(images[0])
    server.stop(1)
    assert len(results) == 60  # every input got exactly one result
    assert all(r.label >= 0 for r in results)
    assert all(r.where == WHERE_EDGE for r in results[:20])
    # The edge went down once; the first input after it found out (a fallback), unless the
    # client's monitor probed the stopped edge first, and then no input was even sent.
    assert client.health.failures >= 1
    assert all(r.where == WHERE_LOCAL for r in results[20:40])
    assert resumed.where == WHERE_EDGE and client.health.recoveries >= 1
    accuracy = np.mean([r.label == y for r, y in zip(results, labels, strict=True)])
    assert accuracy > 0.8


def test_unreachable_edge_from_the_start_runs_everything_locally(checkpoint, test_split):
    with DeviceClient(checkpoint, f"127.0.0.1:{free_port()}", policy="adaptive",
                      link=LinkOptions(offload_timeout_ms=500),
                      device=DeviceOptions(battery="1.0")) as client:
        results = [client.infer(image) for image in test_split.images[:10]]
    assert len(results) == 10 and all(r.where != WHERE_EDGE for r in results)


def test_cli_prints_the_summary(edge, checkpoint):
    result = subprocess.run(
        [sys.executable, "-m", "device_client", "--edge", f"127.0.0.1:{edge.port}",
         "--checkpoint", str(checkpoint), "--policy", "fixed-paper", "--fixed-config", str(FIXED),
         "--n", "20", "--json", "--deadline-ms", "5000"],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    for key in ("n", "results", "accuracy", "offloaded", "exited_on_device", "local",
                "fallbacks", "mean_latency_ms", "p95_latency_ms", "bytes_sent", "energy_mj"):
        assert key in summary
    assert summary["n"] == summary["results"] == 20 == summary["offloaded"]


def test_cli_rejects_a_bad_config_without_a_traceback(checkpoint):
    result = subprocess.run(
        [sys.executable, "-m", "device_client", "--policy", "fixed", "--fixed-config", "split9/w3",
         "--checkpoint", str(checkpoint)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "split9/w3" in result.stderr
    result = subprocess.run(
        [sys.executable, "-m", "device_client", "--probe-interval-s", "0", "--checkpoint",
         str(checkpoint)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "--probe-interval-s 0: give 0.2 to 3600" in result.stderr


# What `pip install 'splitnet[device]'` brings (pyproject.toml), and the modules those
# import of their own accord (grpc's Cython runtime; grpc looks for grpc_tools and
# grpc_health and goes on without them).
DEVICE_MODULES = {"torch", "torchgen", "typing_extensions", "numpy", "zstandard", "PIL",
                  "grpc", "google", "zmq", "splitnet", "splitnet_proto", "device_client",
                  "cython_runtime", "tqdm",
                  "grpc_tools", "grpc_health"}


def test_the_device_imports_only_what_its_install_brings():
    code = ("import sys\n"
            "import device_client.__main__, device_client.client, device_client.replicas\n"
            "from device_client.planner import Planner\n"
            "from splitnet.zoo import load_card\n"
            "Planner(load_card())\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} - set(sys.stdlib_module_names)"
            " - {'__main__', '__mp_main__'}))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    imported = {m for m in eval(result.stdout) if not m.startswith("_")}  # noqa: S307
    assert imported <= DEVICE_MODULES, imported - DEVICE_MODULES
    assert not imported & {"matplotlib", "edge_server", "experiments", "prometheus_client"}


@pytest.fixture(scope="module")
def camera_frames(tmp_path_factory):
    """Three real Imagenette val JPEGs of different classes, their labels, and a corrupt file."""
    from splitnet.data import DatasetNotFoundError
    from splitnet.data.imagenette import find_imagenette, list_image_folder

    try:
        root = find_imagenette()
    except DatasetNotFoundError as error:
        pytest.skip(f"Imagenette is not on this machine: {error}")
    items, _ = list_image_folder(root / "val")
    chosen = items[:: len(items) // 3][:3]
    folder = tmp_path_factory.mktemp("frames")
    for index, (path, _) in enumerate(chosen):
        (folder / f"{index}.jpg").write_bytes(Path(path).read_bytes())
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    return folder, [label for _, label in chosen]


def test_a_camera_frame_is_a_file_its_bytes_or_an_array_and_gets_the_same_answer(
        camera_frames):
    from PIL import Image

    from splitnet.images import decode_image
    from splitnet.zoo import checkpoint_for

    folder, _ = camera_frames
    path = folder / "0.jpg"
    camera_sized = np.asarray(Image.fromarray(decode_image(path)).resize((640, 480)))
    with DeviceClient(checkpoint_for("resnet18_imagenette"), None, policy="local") as client:
        answers = [client.infer(frame) for frame in
                   (path, str(path), path.read_bytes(), decode_image(path),
                    decode_image(path).astype(np.float32) / 255,
                    camera_sized)]  # a 640 x 480 camera frame: resized on the device
        with pytest.raises(ValueError, match=r"colour image \(H, W, 3\)"):
            client.infer(np.zeros((28, 28), dtype=np.uint8))
    assert len({a.label for a in answers}) == 1
    torch.testing.assert_close(torch.tensor(answers[0].probabilities),
                               torch.tensor(answers[3].probabilities))


def test_cli_classifies_a_folder_of_frames_through_the_edge_and_skips_a_broken_file(
        camera_frames, tmp_path):
    from splitnet.zoo import checkpoint_for

    folder, labels = camera_frames
    server = start_server(checkpoint_for("resnet18_imagenette"))
    try:
        result = subprocess.run(
            [sys.executable, "-m", "device_client", "--edge", f"127.0.0.1:{server.port}",
             "--images", str(folder), "--policy", "offload-input", "--json",
             "--records", str(tmp_path / "records.jsonl")],
            capture_output=True, text=True, timeout=120)
    finally:
        server.stop(1)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["n"] == 4 and summary["results"] == 3 == summary["offloaded"]
    assert summary["skipped_files"] == [str(folder / "broken.jpg")]
    assert "broken.jpg" in result.stderr and "Traceback" not in result.stderr
    records = [json.loads(line) for line in (tmp_path / "records.jsonl").read_text().splitlines()]
    assert [r["file"] for r in records] == [str(folder / f"{i}.jpg") for i in range(3)]
    assert all(r["config"] == "offload/jpeg90" and r["class_name"] for r in records)
    assert sum(r["label"] == label for r, label in zip(records, labels, strict=True)) >= 2


@pytest.mark.parametrize("corruption", ["wrong model", "wrong shape", "not finite"])
def test_every_bad_reply_is_caught_and_the_input_finished_on_the_device(
        checkpoint, test_split, monkeypatch, corruption):
    """A real edge server whose replies are corrupted on the way out (as a misconfigured or
    broken edge would send them): the device must not take any of them as an answer."""
    from edge_server.servicer import EdgeInferenceServicer

    reply_of = EdgeInferenceServicer._reply

    def corrupted(self, engine, request, result):
        message = reply_of(self, engine, request, result)
        if corruption == "wrong model":
            message.model_tag ^= 1
        elif corruption == "wrong shape":
            message.probabilities.append(0.0)
        else:
            message.probabilities[0] = float("nan")
        return message

    monkeypatch.setattr(EdgeInferenceServicer, "_reply", corrupted)
    server = start_server(checkpoint)
    images = test_split.images[:10]
    try:
        with DeviceClient(checkpoint, f"127.0.0.1:{server.port}",
                          policy=PolicyOptions("fixed-paper", fixed_config=FIXED),
                          link=LinkOptions(monitor=False),
                          device=DeviceOptions(battery="1.0")) as client:
            results = []
            for image in images:
                client.health.success()  # offload every input: each reply is checked
                results.append(client.infer(image))
            assert client.bad_replies == len(images)
    finally:
        server.stop(1)
    assert all(r.fallback and r.where == WHERE_LOCAL and "bad reply" in (r.error or "")
               for r in results)
    # the device's own answer: the rest of the network from where its head stopped
    expected = [local_probabilities(client.model, image, LOCAL).argmax() for image in images]
    assert [r.label for r in results] == [int(e) for e in expected]


def test_a_link_that_goes_silent_loses_no_input(edge, checkpoint, test_split):
    """The uplink delivers for 1.5 s, then nothing (a half-open connection: the device's
    bytes vanish, no error comes back). Inputs in flight then fall back in time."""
    from device_client.edge import KEEPALIVE_TIMEOUT_MS
    from experiments.link import UserspaceLink
    from experiments.traces import Trace

    opportunities = np.append(np.arange(1, 1500), 600_000)  # 1 per ms, then silence
    link = UserspaceLink(Trace.from_opportunities("silent", opportunities), edge.port,
                         one_way_delay_ms=5).start()
    results = []
    try:
        with DeviceClient(checkpoint, f"127.0.0.1:{link.port}",
                          policy=PolicyOptions("fixed-paper", fixed_config=FIXED),
                          device=DeviceOptions(battery="1.0")) as client:
            link.started_at = time.monotonic()  # the trace's clock starts with input 0
            for image in test_split.images[:30]:
                results.append(client.infer(image))
                time.sleep(0.1)
    finally:
        link.stop()
    assert len(results) == 30 and all(r.label >= 0 for r in results)
    assert any(r.where == WHERE_EDGE for r in results[:5])  # before the silence
    fallen = [r for r in results if r.fallback]
    assert fallen, "the silence was never noticed"
    assert all(r.latency.total_ms < 2 * KEEPALIVE_TIMEOUT_MS for r in fallen)
    assert all(r.where != WHERE_EDGE for r in results[-5:])  # nothing gets through any more


def test_warming_up_measures_the_edge_and_the_link_before_the_first_input(edge, checkpoint):
    """The prior guesses the edge's speed from the card's host and the uplink at 1 Mbit/s;
    warm-up offloads one blank frame and then probes the link, so the first input is
    planned with the edge's measured speed and a measured uplink (here 4 Mbit/s)."""
    from experiments.link import UserspaceLink
    from experiments.traces import Trace

    link = UserspaceLink(Trace.constant(4.0, seconds=30), edge.port, one_way_delay_ms=2).start()
    try:
        with DeviceClient(checkpoint, f"127.0.0.1:{link.port}", policy="adaptive",
                          link=LinkOptions(monitor=False),
                          device=DeviceOptions(battery="1.0")) as client:
            guess = client.knowledge.server.ms_per_mmac
            assert client.bandwidth.stale(60, settle_s=60)  # nothing measured yet
            client.warm_up()
            measured = client.knowledge.server.ms_per_mmac
            assert not client.bandwidth.stale(60, settle_s=60)  # probed after the warm-up
            estimate = client.bandwidth.estimate_bps
    finally:
        link.stop()
    assert measured != guess
    full_mmacs = client.card.full.macs / 1e6
    assert 0 < measured * full_mmacs < 1000  # the whole network on the edge, in ms
    assert 2e6 < estimate < 8e6, f"estimated {estimate / 1e6:.1f} Mbit/s on a 4 Mbit/s link"


def test_a_probe_that_crossed_in_one_burst_is_sent_again_larger(edge, checkpoint):
    """An uplink that delivers 5 packets (7.5 kB) at once every 10 ms: 6 Mbit/s on average.
    A 6 kB probe crosses in one burst (its time is only the wait for the burst), so the
    device sends a larger one and estimates the average rate."""
    from experiments.link import UserspaceLink
    from experiments.traces import Trace

    bursts = np.repeat(np.arange(10, 10_001, 10), 5)  # 5 opportunities every 10th ms
    link = UserspaceLink(Trace.from_opportunities("bursty", bursts), edge.port,
                         one_way_delay_ms=2).start()
    try:
        with DeviceClient(checkpoint, f"127.0.0.1:{link.port}", policy="adaptive",
                          link=LinkOptions(monitor=False),
                          device=DeviceOptions(battery="1.0")) as client:
            sent_before = link.bytes_up
            client.probe_once(padding_bytes=6000)
            estimate = client.bandwidth.estimate_bps
            sent = link.bytes_up - sent_before
    finally:
        link.stop()
    assert sent > 4 * 6000, "no larger probe followed the one that crossed in a burst"
    assert 3e6 < estimate < 12e6, f"estimated {estimate / 1e6:.1f} Mbit/s on a 6 Mbit/s link"


@pytest.mark.parametrize("source", ["images", "video"])
def test_the_service_runs_from_a_config_file_and_answers_every_frame_it_started(
        edge, checkpoint, test_split, tmp_path, source):
    """python -m device_client --config FILE, stopped with SIGTERM mid-stream: every frame
    it started has its JSON line, and it says so on the way out. The source is a folder of
    images, or a video file played at its own rate through the pipeline."""
    import signal

    from PIL import Image

    from device_client.sources import write_video

    frames = tmp_path / "frames"
    frames.mkdir()
    for index, image in enumerate(test_split.images[:6]):
        Image.fromarray(image).save(frames / f"{index:03d}.png")
    rgb = [np.repeat(image[..., None], 3, axis=2) for image in test_split.images[:6]]
    write_video(tmp_path / "clip.avi", rgb, fps=20)
    lines_of_source = {"images": 'images = "frames"\nloop = true\nrate_hz = 20',
                       "video": 'video = "clip.avi"\nloop = true'}
    config = tmp_path / "device.toml"
    config.write_text(f"""
[device]
edge = "127.0.0.1:{edge.port}"
model = "mnv2_fmnist"
battery = "1.0"
[source]
{lines_of_source[source]}
""")
    process = subprocess.Popen([sys.executable, "-m", "device_client", "--config", str(config)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # the service is running: a watched folder answers each of its 6 files once, a
        # looping video keeps coming
        lines = [process.stdout.readline() for _ in range(6 if source == "images" else 10)]
        process.send_signal(signal.SIGTERM)
        rest, errors = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 0, errors
    results = [json.loads(line) for line in lines + rest.splitlines() if line.strip()]
    started = int(errors.split("stopped: ")[1].split(" frames started")[0])
    assert len(results) == started >= 6  # every frame started was answered
    if source == "images":
        assert sorted(Path(r["file"]).name for r in results) == [f"{i:03d}.png"
                                                                for i in range(6)]
    else:
        assert [r["frame"] for r in results] == sorted({r["frame"] for r in results})
    assert all(r["label"] >= 0 for r in results)


def test_a_bad_service_config_is_named_without_a_traceback(tmp_path):
    config = tmp_path / "device.toml"
    config.write_text('[device]\nedge = "127.0.0.1:1"\ncolour = "red"\n')
    result = subprocess.run([sys.executable, "-m", "device_client", "--config", str(config)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "unknown keys ['colour']" in result.stderr
    assert "Traceback" not in result.stderr
    from device_client.service import ServiceConfigError, load_service_config

    (tmp_path / "frames").mkdir()
    config.write_text('[device]\nedge = "127.0.0.1:1"\nprobe_interval_s = 0.01\n'
                      '[source]\nimages = "frames"\n')
    with pytest.raises(ServiceConfigError, match="probe_interval_s must be in"):
        load_service_config(config)
    config.write_text(config.read_text().replace("0.01", "60"))
    assert load_service_config(config).probe_interval_s == 60


@pytest.fixture
def emulate():
    """``experiments.emulation.emulate``: it sets the client's compute seam, nothing else."""
    from experiments.emulation import emulate

    return emulate


@pytest.mark.parametrize("slower", [8.0, 120.0])
def test_inputs_that_exit_teach_the_device_its_speed(checkpoint, test_split, slower,
                                                    emulate):
    """A device ``slower`` x this host, running a config whose exit fires on most inputs:
    an exited input is measured against the card's time to the exit, so the very next plan
    knows how slow the device is. Learning only from inputs that did not exit, the
    prediction stayed at the card's figure while the exits fired; and a clamp at 50x kept
    a Pi Zero 2 (60-100x this host on the small model) priced too fast."""
    config = Config.local(exit_threshold=0.5)
    with DeviceClient(checkpoint, None, policy="adaptive",
                      device=DeviceOptions(battery="1.0")) as client:
        emulate(client, fp32_factor=slower, int8_factor=slower)
        exits = [image for image in test_split.images[:40]
                 if client.model.forward_head(images_to_input(image[None]), config)
                 .exited[0]]
        first = client.infer(exits[0], config)
        second = client.infer(exits[1], config)
        later = [client.infer(image, config) for image in test_split.images[:20]]
    assert first.where == second.where == WHERE_EXIT
    assert second.predicted_latency_ms > slower / 3 * first.predicted_latency_ms
    predicted = np.median([r.predicted_latency_ms for r in later])
    measured = np.median([r.latency.total_ms for r in later])
    assert abs(predicted - measured) / measured < 0.35, (predicted, measured)


def test_an_offloaded_frames_encoding_is_priced_once(edge, checkpoint, test_split, emulate):
    """A device 30 x this host offloading PNGs over a 50 Mbit/s link (20 ms RTT): the
    encoding is timed as the frame's device compute (the card times a head with its
    encoding too) and learnt as that config's own speed, not the network's. Before, the
    card's guessed 0.5 ms (it times no encoder for this model) was scaled by the device's
    speed on the network (60-100x on a Pi Zero 2), and the measured encoding was counted
    again in the send overhead: a Pi Zero 2's PNG offload was priced 85-91 ms in the grid
    where it took 60, and the adaptive policy kept every input local at 94 ms."""
    from experiments.link import UserspaceLink
    from experiments.traces import Trace

    offload = Config.offload_input("png")
    link = UserspaceLink(Trace.constant(50.0, seconds=60), edge.port,
                         one_way_delay_ms=10).start()
    try:
        with DeviceClient(checkpoint, f"127.0.0.1:{link.port}", policy="adaptive",
                          link=LinkOptions(monitor=False),
                          device=DeviceOptions(battery="1.0")) as client:
            emulate(client, fp32_factor=30.0, int8_factor=30.0)
            client.probe_once()  # the link's rate, not the 1 Mbit/s prior
            client.infer(test_split.images[0], LOCAL)  # the local overhead to compare with
            precision = client.head_speed.per_precision
            results = [client.infer(image, offload) for image in test_split.images[:15]]
            assert client.head_speed.per_precision == precision  # the network's: unmoved
            assert offload in client.head_speed.per_config
    finally:
        link.stop()
    assert all(r.where == WHERE_EDGE and r.latency.device_ms > 0 for r in results)
    predicted = np.median([r.predicted_latency_ms for r in results[5:]])
    measured = np.median([r.latency.total_ms for r in results[5:]])
    assert abs(predicted - measured) / measured < 0.25, (predicted, measured)
