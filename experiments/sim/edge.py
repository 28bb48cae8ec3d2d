"""A simulated edge replica: the server's queue and batching rules over a measured
batch-size → service-time curve.

    request arrives ─► front (parse + decode: the profile's ms, on its front workers)
      ─► queue full (max_queue)? RESOURCE_EXHAUSTED at once
      ─► this device past its share (per_device_in_flight)? RESOURCE_EXHAUSTED after
         over_share_delay_s
      ─► pending ─► worker (one per replica): the oldest request's config is the key; run
         when max_batch_size of that key wait or the oldest has waited max_wait_ms
         (edge_server.batching.DynamicBatcher) ─► batch_ms(kind, MMAC, size)
      ─► every reply carries the load: depth, recent service ms (EWMA 0.2), recent queue
         ms (EWMA 0.1), as edge_server.load_reports reports them

Edge profiles (``PROFILES``) give the service time of a batch of any tail. ``host`` is
measured on this machine (``python -m experiments.bench.tail``); the others come from
published MLPerf Inference v1.1 results for ResNet-50, scaled to each tail by its MACs
(ResNet-50 4,100 MMAC; a tail of m MMAC takes m / 4,100 of the time): a statement of what
such hardware does with an optimised runtime, not a measurement of this code on it.
"""

from __future__ import annotations

import bisect
import collections
import heapq
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from splitnet_proto.messages import LoadReport

from experiments.sim.engine import Simulation
from splitnet.config import Config, Placement

RESNET50_MMAC = 4100.0  # what the MLPerf figures below ran (ResNet-50 v1.5, 224 px)
HOST_PROFILE = Path("results/edge-profile-host/profile.json")


def tail_kind(config: Config) -> str:
    """What kind of work a config's tail is: whole frames, raw, slimmable or entropy."""
    if config.placement is Placement.OFFLOAD_INPUT:
        return "image"
    if config.raw:
        return f"raw{config.split}"
    if config.rate is not None:
        return f"entropy{config.split}"
    return f"slimmable{config.split}"


@dataclass(frozen=True)
class EdgeProfile:
    """How long an edge takes: a batch of a tail, and each request's own front work."""

    name: str
    description: str
    source: str
    batch_ms: Callable[[str, float, int], float]  # (tail kind, tail MMAC, batch size) → ms
    decode_ms: Callable[[str], float]  # per request of a tail kind, on a front worker
    front_ms: float  # per request outside the model and decoding (parse, reply)
    front_workers: int  # requests the front handles at once


def fitted(fixed_ms: float, per_item_ms: float) -> Callable[[str, float, int], float]:
    """A published ResNet-50 curve (fixed + size × per item) scaled to a tail's MACs."""
    def batch_ms(kind: str, mmac: float, size: int) -> float:
        return (fixed_ms + size * per_item_ms) * mmac / RESNET50_MMAC
    return batch_ms


def host_profile(path: Path = HOST_PROFILE, model: str = "resnet18_imagenette") -> EdgeProfile:
    """This machine's edge (one core, one torch thread), from the tail benchmark: each
    kind of tail at batch sizes 1-32, linear in between."""
    data = json.loads(path.read_text())
    entry = data["models"][model]
    curves: dict[str, tuple[float, list[int], list[float]]] = {}
    decode: dict[str, float] = {}
    for name, row in entry["configs"].items():
        kind = tail_kind(Config.parse(name))
        sizes = sorted(int(b) for b in row["batch_ms"])
        curves[kind] = (row["tail_mmac"], sizes, [row["batch_ms"][str(b)] for b in sizes])
        decode[kind] = row["decode_ms"]

    def batch_ms(kind: str, mmac: float, size: int) -> float:
        if kind in curves:
            _, sizes, ms = curves[kind]
            return interpolate(sizes, ms, size)
        # a kind not profiled: the profiled tail nearest in MACs, scaled by MACs
        tail_mmac, sizes, ms = min(curves.values(), key=lambda c: abs(c[0] - mmac))
        return interpolate(sizes, ms, size) * mmac / tail_mmac

    return EdgeProfile(
        "host", "this machine: one core of the 2-core host, one torch thread, fp32",
        f"measured: python -m experiments.bench.tail ({path.parent})", batch_ms,
        lambda kind: decode.get(kind, 0.05), front_ms=0.3, front_workers=1)


def interpolate(sizes: list[int], ms: list[float], size: int) -> float:
    """ms at ``size`` from measured (sizes, ms): linear in between, and past the largest
    size at its per-item cost."""
    if size >= sizes[-1]:
        return ms[-1] * size / sizes[-1]
    i = bisect.bisect_left(sizes, size)
    if sizes[i] == size or i == 0:
        return ms[i]
    lo, hi = sizes[i - 1], sizes[i]
    return ms[i - 1] + (ms[i] - ms[i - 1]) * (size - lo) / (hi - lo)


# MLPerf Inference v1.1, closed division (github.com/mlcommons/inference_results_v1.1):
# - NVIDIA A100-PCIe-80GB x1, TensorRT int8: SingleStream mean 0.473 ms; Offline 36,905
#   samples/s (results/A100-PCIe-80GBx1_TRT/resnet50/*/performance/run_1/mlperf_log_summary)
# - Intel 2-socket Xeon (Ice Lake), OpenVINO int8: Offline 4,223 samples/s; Server minimum
#   latency 4.74 ms (results/1-node-2S-ICX-OpenVINO-INT8/resnet50/*/performance/run_1/...)
# Per item: 1 / offline throughput; fixed: single-item latency less one item.
GPU_PER_ITEM_MS = 1000 / 36905.1
GPU_FIXED_MS = 0.4726 - GPU_PER_ITEM_MS
CPU_PER_ITEM_MS = 1000 / 4223.33
CPU_FIXED_MS = 4.7385 - CPU_PER_ITEM_MS
MLPERF_SOURCE = "MLPerf Inference v1.1 closed (mlcommons/inference_results_v1.1), ResNet-50 " \
                "scaled by MACs"


def published_profiles(host: EdgeProfile) -> dict[str, EdgeProfile]:
    """The many-core CPU and data-centre GPU edges; decoding and the front run on the
    server's host cores (this machine's per-request times, 16 at once)."""
    return {
        "manycore-cpu": EdgeProfile(
            "manycore-cpu", "2-socket Xeon (Ice Lake), OpenVINO int8",
            f"{MLPERF_SOURCE}: 1-node-2S-ICX-OpenVINO-INT8",
            fitted(CPU_FIXED_MS, CPU_PER_ITEM_MS), host.decode_ms, 0.3, 16),
        "gpu": EdgeProfile(
            "gpu", "NVIDIA A100-PCIe 80 GB, TensorRT int8",
            f"{MLPERF_SOURCE}: A100-PCIe-80GBx1_TRT", fitted(GPU_FIXED_MS, GPU_PER_ITEM_MS),
            host.decode_ms, 0.3, 16),
    }


def profiles(path: Path = HOST_PROFILE) -> dict[str, EdgeProfile]:
    host = host_profile(path)
    return {"host": host, **published_profiles(host)}


@dataclass
class EdgeReply:
    queue_ms: float
    compute_ms: float
    load: LoadReport


@dataclass
class Job:
    """One request at the edge."""

    device: int
    config: Config
    created: float
    on_reply: Callable[[EdgeReply], None]
    on_refused: Callable[[str], None]
    tail_mmac: float = 0.0
    enqueued: float = 0.0


class SimEdge:
    """One replica (see the module docstring)."""

    def __init__(self, sim: Simulation, profile: EdgeProfile, tail_mmac: Callable[[Config], float],
                 max_batch_size: int = 32, max_wait_ms: float = 2.0, max_queue: int = 256,
                 per_device_in_flight: int = 8, over_share_delay_s: float = 0.25) -> None:
        self.sim, self.profile, self.tail_mmac = sim, profile, tail_mmac
        self.max_batch_size, self.max_wait_s = max_batch_size, max_wait_ms / 1000
        self.max_queue, self.per_device = max_queue, per_device_in_flight
        self.over_share_delay_s = over_share_delay_s
        self.pending: collections.deque[Job] = collections.deque()
        self.per_key: collections.Counter[Config] = collections.Counter()
        self.in_flight: collections.Counter[int] = collections.Counter()
        self.depth = 0
        self.worker_busy = False
        self.wake_at: float | None = None
        self.front_free: list[float] = [0.0] * profile.front_workers
        self.service_ms = 0.0
        self.queue_ms = 0.0
        self.busy_s = 0.0
        self.served = 0
        self.refused = 0
        self.batches = 0

    def load_report(self) -> LoadReport:
        return LoadReport(self.depth, self.service_ms, self.queue_ms, self.max_batch_size)

    def submit(self, job: Job) -> None:
        """A request has arrived: through the front, then into the queue."""
        job.tail_mmac = self.tail_mmac(job.config)
        start = max(self.sim.now, heapq.heappop(self.front_free))
        work_ms = self.profile.front_ms + self.profile.decode_ms(tail_kind(job.config))
        done = start + work_ms / 1000
        heapq.heappush(self.front_free, done)
        self.sim.at(done, self._enqueue, job)

    def _enqueue(self, job: Job) -> None:
        if self.depth >= self.max_queue:
            self.refused += 1
            job.on_refused("the edge's queue is full")
            return
        if self.in_flight[job.device] >= self.per_device:
            self.refused += 1
            self.sim.after(self.over_share_delay_s, job.on_refused, "past this device's share")
            return
        job.enqueued = self.sim.now
        self.depth += 1
        self.in_flight[job.device] += 1
        self.pending.append(job)
        self.per_key[job.config] += 1
        if not self.worker_busy:
            self._gather()

    def _gather(self) -> None:
        """The worker is free: run a batch now, or wait for the oldest's deadline."""
        if self.worker_busy or not self.pending:
            return
        oldest = self.pending[0]
        deadline = oldest.enqueued + self.max_wait_s
        if self.per_key[oldest.config] < self.max_batch_size and self.sim.now < deadline - 1e-12:
            if self.wake_at != deadline:
                self.wake_at = deadline
                self.sim.at(deadline, self._wake)
            return
        self._run(self._take(oldest.config))

    def _wake(self) -> None:
        self.wake_at = None
        self._gather()

    def _take(self, key: Config) -> list[Job]:
        batch: list[Job] = []
        passed: list[Job] = []
        while self.pending and len(batch) < self.max_batch_size:
            job = self.pending.popleft()
            (batch if job.config == key else passed).append(job)
        self.pending.extendleft(reversed(passed))
        self.per_key[key] -= len(batch)
        return batch

    def _run(self, batch: list[Job]) -> None:
        first = batch[0]
        compute_ms = self.profile.batch_ms(tail_kind(first.config), first.tail_mmac, len(batch))
        self.worker_busy = True
        self.busy_s += compute_ms / 1000
        self.batches += 1
        self.sim.after(compute_ms / 1000, self._finished, batch, self.sim.now, compute_ms)

    def _finished(self, batch: list[Job], started: float, compute_ms: float) -> None:
        self.worker_busy = False
        for job in batch:
            self.queue_ms = 0.9 * self.queue_ms + 0.1 * (started - job.enqueued) * 1000
        self.service_ms = 0.8 * self.service_ms + 0.2 * compute_ms
        self.depth -= len(batch)
        self.served += len(batch)
        load = self.load_report()
        for job in batch:
            self.in_flight[job.device] -= 1
            job.on_reply(EdgeReply((started - job.enqueued) * 1000, compute_ms, load))
        self._gather()
