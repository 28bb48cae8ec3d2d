"""Run one scenario: every policy on the same images and the same stretch of trace.

    edge server (subprocess, one per lane) ◄── link per device (restarted at the same trace
    offset for every policy) ◄── device worker per device (subprocess, device time emulated)
                                      └─ records ─ZMQ PUSH──► runner (PULL) ─► records.jsonl
    lanes: ``scenario.lanes`` run at the same time, each on its own edge server; each takes
    the next policy, in a seeded random order, when it is free (a slow policy does not hold
    up the ones dealt after it).

The runner only orchestrates: model, wire and decisions all live in the library packages.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import zmq
from tqdm import tqdm

from experiments.calibration import calibrate, host_times
from experiments.device_profiles import PROFILES
from experiments.emulation import describe
from experiments.launch import start_edge_process, stop_edge_process
from experiments.link import UserspaceLink
from experiments.netns import KernelLink
from experiments.oracle import REPLAY_POLICY
from experiments.scenario import Scenario, ScenarioError
from experiments.traces import Trace
from splitnet.zoo import DEFAULT_CHECKPOINT

STARTUP_GRACE_S = 4.0  # the trace clock's provisional start, until the devices are ready
STARTUP_TIMEOUT_S = 180.0  # a device worker that is not ready by then has failed
_RECORDS_LOCK = threading.Lock()  # lanes append to one records file
_STOPPING = threading.Event()  # set by SIGTERM or SIGINT: lanes take no further policy
_STOPPED_BY: list[int] = []  # which of them
_WORKERS: set[subprocess.Popen[str]] = set()  # device workers running now


class StoppedError(Exception):
    """The run was stopped by a signal (its edge servers and device workers are gone)."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.exit_code = 128 + signum


def stop_on_signals() -> None:
    """On SIGTERM or SIGINT (Ctrl-C), stop cleanly: kill the device workers, take no
    further policy, and let every edge server and link stop on the way out (raises
    ``StoppedError`` in the main thread). Without this, a stopped grid left its edge servers
    running. Call it from the main thread."""
    def stop(signum: int, frame: FrameType | None) -> None:
        _STOPPED_BY.append(signum)
        _STOPPING.set()
        for process in list(_WORKERS):
            with contextlib.suppress(OSError):
                process.kill()
        raise StoppedError(signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)


@dataclass
class PolicyRun:
    """What one policy produced in one scenario."""

    policy: str
    records: list[dict[str, Any]]
    expected: int
    bytes_up: int
    bytes_down: int
    seconds: float
    device_emulation: dict[str, Any] = field(default_factory=dict)
    stream: list[dict[str, Any]] = field(default_factory=list)  # per device, stream mode


class DeviceWorker:
    """A served device worker process (``experiments.device_worker --serve``): it runs one
    job after another, keeping torch and the model loaded, so a grid does not pay a
    process's start-up for every policy and repetition. Its stderr goes to a file (a pipe
    no one reads would fill and block it)."""

    def __init__(self) -> None:
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - lives as long as the worker
            prefix="splitnet-device-", suffix=".log", delete=False)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "experiments.device_worker", "--serve"],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self.log, text=True)
        _WORKERS.add(self.process)

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def submit(self, argv: list[str]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(argv) + "\n")
        self.process.stdin.flush()

    def tail(self) -> str:
        return Path(self.log.name).read_text(errors="replace")[-2000:]

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            assert self.process.stdin is not None
            self.process.stdin.write("null\n")
            self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        _WORKERS.discard(self.process)
        Path(self.log.name).unlink(missing_ok=True)


class WorkerPool:
    """Served device workers for one lane: one per emulated device, replaced if one died."""

    def __init__(self) -> None:
        self.workers: list[DeviceWorker] = []

    def get(self, count: int) -> list[DeviceWorker]:
        self.workers = [w if w.alive else DeviceWorker() for w in self.workers]
        while len(self.workers) < count:
            self.workers.append(DeviceWorker())
        return self.workers[:count]

    def close(self) -> None:
        for worker in self.workers:
            worker.close()
        self.workers = []


@contextlib.contextmanager
def worker_pools(count: int) -> Iterator[list[WorkerPool]]:
    """One pool of served device workers per lane, closed on the way out."""
    pools = [WorkerPool() for _ in range(count)]
    try:
        yield pools
    finally:
        for pool in pools:
            pool.close()


@contextlib.contextmanager
def edge_server(checkpoint: Path, host: str = "127.0.0.1",
                prefix: list[str] | None = None) -> Iterator[int]:
    """A real edge server process (inside a namespace when prefixed); yields its port."""
    process, port = start_edge_process(checkpoint, host, args=("--threads", "1"),
                                       prefix=tuple(prefix or ()))
    try:
        yield port
    finally:
        stop_edge_process(process)


@contextlib.contextmanager
def edge_servers(checkpoint: Path, count: int) -> Iterator[list[int]]:
    """``count`` edge server processes on loopback, started side by side; yields their
    ports. A grid keeps them for all of a model's cells and repetitions (``run_scenario``'s
    ``edges``): an edge holds no state about a device between runs, and starting one took
    several seconds of every repetition."""
    with contextlib.ExitStack() as stack, ThreadPoolExecutor(max(count, 1)) as pool:
        yield list(pool.map(lambda _: stack.enter_context(edge_server(checkpoint)),
                            range(count)))


def run_policy(scenario: Scenario, policy: str, edge_port: int, checkpoint: Path,
               records_path: Path, show_progress: bool = True,
               kernel_link: KernelLink | None = None,
               schedule: Path | None = None,
               stream: tuple[float, float] | None = None,
               pool: WorkerPool | None = None) -> PolicyRun:
    """One policy, all devices, on a link (re)started at the scenario's trace offset.

    Userspace: a fresh shaper per device. Kernel: the scenario's namespaces, with the
    trace clock reset, the device worker run inside the device namespace. ``stream``
    (fps, seconds): frame-stream mode instead of the camera clock. ``pool``: served
    workers to run on (a process each otherwise).
    """
    run = _PolicyRun(scenario, policy, edge_port, checkpoint, kernel_link, schedule, stream)
    try:
        processes, served = run.launch(pool)
        t0 = _start_together(processes, [w.process for w in served], run.collector,
                             run.poller)
        for link in run.links:
            link.started_at = t0  # the trace clock starts with frame 0
        run.collect(t0, processes + [w.process for w in served], show_progress)
        run.report_failures(processes, served)
    finally:
        run.close()
    with _RECORDS_LOCK, records_path.open("a") as f:
        for record in run.records:
            f.write(json.dumps(record) + "\n")
    return run.result()


class _PolicyRun:
    """The pieces of one ``run_policy``: links, device workers, the records' collector."""

    def __init__(self, scenario: Scenario, policy: str, edge_port: int, checkpoint: Path,
                 kernel_link: KernelLink | None, schedule: Path | None,
                 stream: tuple[float, float] | None) -> None:
        self.scenario, self.policy, self.edge_port = scenario, policy, edge_port
        self.checkpoint, self.kernel_link = checkpoint, kernel_link
        self.schedule, self.stream = schedule, stream
        trace = Trace.load(scenario.trace, scenario.scale)
        profile = PROFILES[scenario.device]
        self.calibration = calibrate(profile)
        self.emulation = describe(profile, self.calibration)
        self.collector: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.PULL)
        self.address = f"ipc://{tempfile.gettempdir()}/splitnet-records-{os.getpid()}-{policy}"
        self.collector.bind(self.address)
        self.poller = zmq.Poller()
        self.poller.register(self.collector, zmq.POLLIN)
        self.links: list[Any] = [kernel_link] if kernel_link else [
            UserspaceLink(trace, edge_port, scenario.one_way_delay_ms, scenario.loss,
                          scenario.trace_start_s, seed=scenario.seed + k)
            for k in range(scenario.devices)]
        self.counters_before = [(link.bytes_up, link.bytes_down) if kernel_link else (0, 0)
                                for link in self.links]
        self.processes: list[subprocess.Popen[str]] = []
        self.records: list[dict[str, Any]] = []
        self.streams: list[dict[str, Any]] = []
        self.expected = scenario.devices * (int(stream[0] * stream[1]) if stream
                                            else scenario.images)
        self.run_s = stream[1] if stream else scenario.images / scenario.rate_hz
        self.started = time.monotonic()

    def job(self, k: int, edge_address: str) -> list[str]:
        """Device ``k``'s arguments for experiments.device_worker."""
        sc, calibration, stream = self.scenario, self.calibration, self.stream
        return [
            "--edge", edge_address, "--policy", self.policy, "--records", self.address,
            "--device-id", str(k), "--device", sc.device,
            "--start", str(sc.first_image + k * sc.images), "--count", str(sc.images),
            "--rate-hz", str(sc.rate_hz), "--battery", str(sc.battery),
            "--deadline-ms", str(sc.deadline_ms), "--accuracy-floor", str(sc.accuracy_floor),
            "--fixed-config", sc.fixed_config, "--checkpoint", str(self.checkpoint),
            "--fp32-factor", str(calibration.fp32_factor),
            "--int8-factor", str(calibration.int8_factor),
            *(("--schedule", str(self.schedule)) if self.schedule is not None else ()),
            *(("--stream-fps", str(stream[0]), "--stream-seconds", str(stream[1]))
              if stream else ()),
            *(("--busy", *map(str, sc.busy)) if sc.busy else ())]

    def launch(self, pool: WorkerPool | None) -> tuple[list[subprocess.Popen[str]],
                                                        list[DeviceWorker]]:
        """Start every device's link and its job: on the pool's served workers, or on a
        worker process each (the kernel link runs them inside the device namespace)."""
        served = pool.get(len(self.links)) if pool is not None and not self.kernel_link \
            else []
        provisional_t0 = time.monotonic() + STARTUP_GRACE_S  # until every device is ready
        for k, link in enumerate(self.links):
            prefix: list[str] = []
            if self.kernel_link is None:
                link.start()
                edge_address = f"127.0.0.1:{link.port}"
            else:
                prefix = self.kernel_link.exec_prefix("device")
                edge_address = f"{self.kernel_link.edge_ip}:{self.edge_port}"
                self.emulation["link_not_emulated"] = self.kernel_link.not_emulated
            link.started_at = provisional_t0
            if _STOPPING.is_set():
                break
            if served:
                served[k].submit(self.job(k, edge_address))
                continue
            self.processes.append(subprocess.Popen(
                [*prefix, sys.executable, "-m", "experiments.device_worker",
                 *self.job(k, edge_address)],
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                text=True))
            _WORKERS.add(self.processes[-1])
        return self.processes, served

    def collect(self, t0: float, running: list[subprocess.Popen[str]],
                show_progress: bool) -> None:
        """Every device's records until each says it is done (or the time is up)."""
        done = 0
        bar = tqdm(total=self.expected, desc=f"  {self.policy:<14}",
                   disable=None if show_progress else True)
        deadline = t0 + self.run_s + 120
        while done < len(running) and time.monotonic() < deadline:
            if not self.poller.poll(500):
                if all(p.poll() is not None for p in running):
                    break  # every worker exited (a crash shows up as lost frames)
                continue
            message = json.loads(self.collector.recv())
            if message.get("done"):
                done += 1
            elif "stream" in message:  # a frame stream's statistics
                self.streams.append(message["stream"])
            else:
                self.records.append(self._timed(message, t0))
                bar.update()
        bar.close()

    def _timed(self, message: dict[str, Any], t0: float) -> dict[str, Any]:
        """A record with its time in the run (``t``): an answered frame's when the device
        took it up (which is when the link mattered to it), with the link's true capacity
        around then; a dropped frame's when it arrived."""
        if message.get("dropped"):
            message["t"] = message["t_arrival"] - t0
            return message
        link = self.links[message["device"]]
        message["true_capacity_bps"] = link.capacity_bps(message["t_start"] - 0.5,
                                                         message["t_start"] + 0.5)
        message["t"] = message["t_start"] - t0
        return message

    def report_failures(self, processes: list[subprocess.Popen[str]],
                        served: list[DeviceWorker]) -> None:
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
            if process.returncode and process.stderr:
                print(f"device worker for {self.policy} failed:\n"
                      f"{process.stderr.read()[-2000:]}", file=sys.stderr)
        for worker in served:
            if not worker.alive:
                print(f"device worker for {self.policy} failed:\n{worker.tail()}",
                      file=sys.stderr)

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            _WORKERS.discard(process)
        self.bytes_up = sum(link.bytes_up - before[0] for link, before
                            in zip(self.links, self.counters_before, strict=True))
        self.bytes_down = sum(link.bytes_down - before[1] for link, before
                              in zip(self.links, self.counters_before, strict=True))
        if self.kernel_link is None:
            for link in self.links:
                link.stop()
        self.collector.close(linger=0)

    def result(self) -> PolicyRun:
        return PolicyRun(self.policy, self.records, self.expected, self.bytes_up,
                         self.bytes_down, time.monotonic() - self.started, self.emulation,
                         self.streams)


def _start_together(processes: list[subprocess.Popen[str]],
                    served: list[subprocess.Popen[str]], collector: zmq.Socket[bytes],
                    poller: zmq.Poller) -> float:
    """Wait until every device worker has loaded and warmed up (each PUSHes ``ready``),
    then give them all frame 0's time on stdin; returns it. A worker that exits or is not
    ready within ``STARTUP_TIMEOUT_S`` is left to show up as lost frames. One-shot workers'
    stdin is closed after it; served ones keep theirs for their next job."""
    ready = 0
    everyone = processes + served
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while ready < len(everyone) and time.monotonic() < deadline:
        if poller.poll(200):
            ready += bool(json.loads(collector.recv()).get("ready"))
        elif any(p.poll() is not None for p in everyone):
            break
    t0 = time.monotonic() + 0.05
    for process in everyone:
        with contextlib.suppress(OSError, ValueError):  # a worker that already exited
            assert process.stdin is not None
            process.stdin.write(f"{t0!r}\n")
            process.stdin.flush()
            if process in processes:
                process.stdin.close()
    return t0


Replay = Callable[[dict[str, PolicyRun]], dict[int, str]]


def run_scenario(scenario: Scenario, out_dir: Path, checkpoint: Path = DEFAULT_CHECKPOINT,
                 show_progress: bool = True, replay: Replay | None = None,
                 stream: tuple[float, float] | None = None,
                 edges: Sequence[int] = (),
                 pools: Sequence[WorkerPool] = ()) -> dict[str, PolicyRun]:
    """Every policy of ``scenario``, in a seeded random order (so no policy always runs on
    a warm or a cold machine); records go to ``out_dir/records.jsonl``.

    ``oracle-replay``, when listed, runs last: ``replay`` turns the other policies' runs
    into the oracle's per-input configs, which are then run for real. ``stream`` (fps,
    seconds): each policy gets a camera's frame stream instead (no replay then). ``edges``:
    the ports of running edge servers of ``checkpoint`` (``edge_servers``) for the lanes to
    use; without enough of them (or on the kernel link), the run starts its own. ``pools``:
    served device workers, one pool per lane (else a process per device and policy).

    Long because: the lanes, the replay and the two link modes share one queue of policies."""
    host_times()  # the anchors again, while nothing else runs (see experiments.calibration)
    out_dir.mkdir(parents=True, exist_ok=True)
    records_path = out_dir / "records.jsonl"
    records_path.write_text("")
    policies = [p for p in scenario.policies if p != REPLAY_POLICY]
    random.Random(scenario.seed).shuffle(policies)
    replayed = REPLAY_POLICY in scenario.policies and replay is not None and stream is None
    runs: dict[str, PolicyRun] = {}

    lanes = max(min(scenario.lanes, len(policies)), 1)
    bars = show_progress and lanes == 1  # lanes: each bar's final line only
    queue = iter(policies)  # each lane takes the next policy when it is free
    queue_lock = threading.Lock()

    def run_lane(lane: int, port: int, kernel_link: KernelLink | None) -> None:
        while True:
            with queue_lock:
                policy = next(queue, None)
            if policy is None or _STOPPING.is_set():
                return
            runs[policy] = run_policy(scenario, policy, port, checkpoint, records_path,
                                      bars, kernel_link=kernel_link, stream=stream,
                                      pool=pools[lane] if lane < len(pools) else None)

    def run_all(ports: list[int], kernel_link: KernelLink | None) -> None:
        with ThreadPoolExecutor(len(ports)) as executor:
            for done in [executor.submit(run_lane, lane, port, kernel_link)
                         for lane, port in enumerate(ports)]:
                done.result()
        if _STOPPING.is_set():
            raise StoppedError(_STOPPED_BY[0])
        if replayed and replay is not None:
            schedule = out_dir / "oracle_schedule.json"
            schedule.write_text(json.dumps(replay(runs)))
            runs[REPLAY_POLICY] = run_policy(scenario, REPLAY_POLICY, ports[0], checkpoint,
                                             records_path, bars, kernel_link=kernel_link,
                                             schedule=schedule,
                                             pool=pools[0] if pools else None)

    if scenario.link == "kernel":
        if scenario.devices != 1:
            raise ScenarioError("the kernel link emulates one device per run; set devices = 1")
        trace = Trace.load(scenario.trace, scenario.scale)
        with KernelLink(trace, scenario.one_way_delay_ms,
                        start_offset_s=scenario.trace_start_s) as link, \
                edge_server(checkpoint, link.edge_ip, link.exec_prefix("edge")) as port:
            run_all([port], link)
        return runs
    if len(edges) >= lanes:
        run_all(list(edges[:lanes]), None)
        return runs
    with edge_servers(checkpoint, lanes) as ports:
        run_all(ports, None)
    return runs
