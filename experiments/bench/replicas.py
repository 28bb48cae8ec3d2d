"""Replica benchmarks; prints one JSON object.

    scaling   one replica, then two, each in a cgroup of its own limited to CPU_SHARE of a
              core (cgroup v1 cpu.cfs_quota_us); the same device pool (EdgePool, least
              loaded first) drives them with 16 closed-loop device threads sending the
              camera model's heaviest tail; rounds alternate 1 2 1 2 …, medians quoted.
              The load generator's CPU per request is measured apart (its own process).
    failover  16 DeviceClients against two replicas; one replica is killed (SIGKILL) half
              way through: every input still gets a result (lost = 0), and the latency
              percentiles in the second around the kill are reported next to the rest.

On this 2-core machine the replicas get half a core each, so that the load generator keeps
a core of its own; on a real edge, give each replica a core (see edge_server/k8s.yaml).

Usage: ``python -m experiments.bench.replicas --json`` (root, for the cgroups).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import numpy as np

from experiments.bench.edge import payloads_for, start_server
from experiments.launch import stop_edge_process
from splitnet.config import Config
from splitnet.zoo import DEFAULT_MODEL, checkpoint_for

CGROUP_CPU = Path("/sys/fs/cgroup/cpu")
CPU_SHARE = 0.5
DEVICES = 16
CONFIG = "split1/w12/b2"  # the camera model's heaviest tail


@contextmanager
def cpu_limited(pid: int, name: str, share: float) -> Iterator[None]:
    """Run process ``pid`` in a cgroup of its own, limited to ``share`` of one core."""
    group = CGROUP_CPU / f"splitnet-{name}-{os.getpid()}"
    group.mkdir(exist_ok=True)
    (group / "cpu.cfs_period_us").write_text("100000")
    (group / "cpu.cfs_quota_us").write_text(str(int(100000 * share)))
    (group / "cgroup.procs").write_text(str(pid))
    try:
        yield
    finally:
        with suppress(OSError):  # back to the root group, unless the process is gone
            (CGROUP_CPU / "cgroup.procs").write_text(str(pid))
        group.rmdir()


def _drive(targets: list[str], model_id: str, payloads: list[bytes],
           seconds: float) -> tuple[int, list[float]]:
    """DEVICES threads, each sending one input after another through one EdgePool."""
    from splitnet_proto.messages import InferRequest

    from device_client.replicas import EdgePool

    pool = EdgePool(targets, model_id)
    config = Config.parse(CONFIG)
    latencies: list[float] = []
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds

    def device(index: int) -> None:
        n = 0
        while time.perf_counter() < stop_at:
            request = InferRequest(pool.next_request_id(), config,
                                   payloads[(index * 31 + n) % len(payloads)])
            started = time.perf_counter()
            pool.infer(request, 10.0)
            with lock:
                latencies.append((time.perf_counter() - started) * 1000)
            n += 1

    threads = [threading.Thread(target=device, args=(i,)) for i in range(DEVICES)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    pool.close()
    return len(latencies), latencies


def scaling(rounds: int, seconds: float) -> dict[str, Any]:
    checkpoint = checkpoint_for(DEFAULT_MODEL)
    model_id, payloads = payloads_for(checkpoint, Config.parse(CONFIG), 64)
    servers = [start_server(checkpoint, 32, 1) for _ in range(2)]
    rps: dict[int, list[float]] = {1: [], 2: []}
    p99: dict[int, list[float]] = {1: [], 2: []}
    generator_cpu_ms: list[float] = []
    try:
        with cpu_limited(servers[0][0].pid, "a", CPU_SHARE), \
                cpu_limited(servers[1][0].pid, "b", CPU_SHARE):
            targets = [f"127.0.0.1:{port}" for _, port in servers]
            _drive(targets, model_id, payloads, 2.0)  # warm-up, both replicas
            for _ in range(rounds):
                for count in (1, 2):  # interleaved
                    cpu = time.process_time()
                    done, latencies = _drive(targets[:count], model_id, payloads, seconds)
                    generator_cpu_ms.append((time.process_time() - cpu) * 1000 / max(done, 1))
                    rps[count].append(done / seconds)
                    p99[count].append(float(np.percentile(latencies, 99)))
    finally:
        for process, _ in servers:
            stop_edge_process(process)
    one, two = statistics.median(rps[1]), statistics.median(rps[2])
    return {"config": CONFIG, "model_id": model_id, "devices": DEVICES,
            "cpu_share_per_replica": CPU_SHARE, "rounds": rounds, "round_seconds": seconds,
            "one_replica": {"rps_median": one, "rps_rounds": rps[1],
                            "p99_ms_median": statistics.median(p99[1])},
            "two_replicas": {"rps_median": two, "rps_rounds": rps[2],
                             "p99_ms_median": statistics.median(p99[2])},
            "speedup": two / one,
            "load_generator_cpu_ms_per_request": statistics.median(generator_cpu_ms)}


def failover(seconds: float) -> dict[str, Any]:
    from device_client.client import DeviceClient
    from device_client.options import DeviceOptions, LinkOptions, PolicyOptions
    from splitnet.data.eval_sets import stream_images

    checkpoint = checkpoint_for(DEFAULT_MODEL)
    images = stream_images(DEFAULT_MODEL).images[:64]
    servers = [start_server(checkpoint, 32, 1) for _ in range(2)]
    edge = ",".join(f"127.0.0.1:{port}" for _, port in servers)
    records: list[tuple[float, float, str, bool]] = []
    lock = threading.Lock()
    clients = [DeviceClient(checkpoint, edge,
                            policy=PolicyOptions("fixed-paper", fixed_config=Config.parse(CONFIG)),
                            link=LinkOptions(offload_timeout_ms=2000),
                            device=DeviceOptions(battery="1.0")) for _ in range(DEVICES)]
    t0 = time.perf_counter()

    def device(index: int) -> None:
        n = 0
        while time.perf_counter() - t0 < seconds:
            started = time.perf_counter() - t0
            result = clients[index].infer(images[(index * 7 + n) % len(images)])
            with lock:
                records.append((started, result.latency.total_ms, result.where,
                                result.label >= 0))
            n += 1

    threads = [threading.Thread(target=device, args=(i,)) for i in range(DEVICES)]
    try:
        for t in threads:
            t.start()
        time.sleep(seconds / 2)
        kill = time.perf_counter() - t0
        os.kill(servers[1][0].pid, signal.SIGKILL)
        for t in threads:
            t.join()
    finally:
        for client in clients:
            client.close()
        for process, _ in servers:
            stop_edge_process(process)

    def percentiles(rows: list[tuple[float, float, str, bool]]) -> dict[str, float]:
        values = [r[1] for r in rows]
        return {"inputs": len(values), "p50_ms": float(np.percentile(values, 50)),
                "p99_ms": float(np.percentile(values, 99))} if values else {"inputs": 0}

    around = [r for r in records if kill - 0.5 <= r[0] <= kill + 0.5]
    return {"devices": DEVICES, "seconds": seconds, "killed_at_s": round(kill, 2),
            "inputs": len(records), "lost": sum(1 for r in records if not r[3]),
            "finished_on_the_edge": sum(1 for r in records if r[2] == "edge"),
            "before": percentiles([r for r in records if r[0] < kill - 0.5]),
            "around_the_kill": percentiles(around),
            "after": percentiles([r for r in records if r[0] > kill + 0.5])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.bench.replicas",
        description="Two edge replicas against one, each limited to half a core by a cgroup, "
                    "driven by the device's own replica pool; and a replica killed mid-run. "
                    "Targets (docs/targets.md): two replicas >= 1.6x one; 0 lost in the "
                    "failover, with its p99 reported. Needs root (cgroups).")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each round")
    parser.add_argument("--failover-seconds", type=float, default=10.0)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if not os.access(CGROUP_CPU, os.W_OK):
        parser.error(f"cannot write {CGROUP_CPU}: run as root on a cgroup-v1 machine")
    result = {"scaling": scaling(args.rounds, args.seconds),
              "failover": failover(args.failover_seconds)}
    result["targets"] = {
        "two_replicas_over_one": {"measured": result["scaling"]["speedup"], "target": 1.6,
                                  "met": result["scaling"]["speedup"] >= 1.6},
        "lost_in_failover": {"measured": result["failover"]["lost"], "target": 0,
                             "met": result["failover"]["lost"] == 0},
    }
    print(json.dumps(result, indent=1) if args.json else
          f"two replicas {result['scaling']['speedup']:.2f}x one; failover lost "
          f"{result['failover']['lost']}, p99 around the kill "
          f"{result['failover']['around_the_kill'].get('p99_ms', float('nan')):.0f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
