"""Soak the edge server under churn; prints one JSON report (a benchmark, not a test).

    server process (--metrics-port) ◄── 8 client processes × 8 streams (grpc.aio)
        each stream, per request: 85 % valid, 5 % malformed payload, 5 % unknown config,
        5 % hang up mid-stream (cancel the call with a request in flight, open a new one)
    ◄── 1 flooding device: 48 unary calls in flight, in alternate 20 s phases (on, off,
        on, …), so that the others' latency with and without the flood is compared within
        one run
    each device (client process, or the flood) has its own token: the edge keys its
        per-device share on it
    faults injected into the batch worker (``--faults``, splitnet.faults; by default a
        batch that raises every 40th and a worker that stalls for 2 s every 400th, with a
        1 s stall limit): every valid request must still be answered
    every 10 s: the server's RSS and open file descriptors, from its own metrics

Report: RSS and open FDs over time, p50/p99 latency of valid requests per minute (flood
apart), the count of each status code per kind of request, and whether the server lived.
Targets (docs/targets.md): RSS growth <= 10 % after the first minute, open FDs flat, no
crash, every valid request answered OK or RESOURCE_EXHAUSTED.

Usage: ``python -m experiments.bench.soak --minutes 10``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import random
import sys
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from splitnet.provenance import RESULTS_DIR, command_line, save_report, start_results

CLIENTS = 8
STREAMS_PER_CLIENT = 8
FLOOD_IN_FLIGHT = 48
FLOOD_PHASE_S = 20.0
KINDS = ("valid", "malformed", "unknown-config", "hang-up")
MIX = (0.85, 0.05, 0.05, 0.05)
DEFAULT_FAULTS = "edge.batch=exception*0%40, edge.on_batch=hang:2*0%400"
STALL_S = 1.0  # the server's --worker-stall-s in the soak


def _payloads(model: str) -> tuple[str, str, list[bytes]]:
    from experiments.bench.edge import payloads_for
    from splitnet.config import Config
    from splitnet.zoo import checkpoint_for

    config = "split2/w4/b4"
    model_id, payloads = payloads_for(checkpoint_for(model), Config.parse(config), 64)
    return model_id, config, payloads


async def _client(index: int, port: int, model: str, seconds: float,
                  out: list[tuple[float, str, str, float]], token: str) -> None:
    import grpc
    from splitnet_proto.messages import AUTH_METADATA, MODEL_ID_METADATA, InferRequest
    from splitnet_proto.v1 import inference_pb2_grpc as pb_grpc

    from splitnet.config import Config

    model_id, config_text, payloads = _payloads(model)
    config = Config.parse(config_text)
    unknown = Config(split=9, width=4, bits=4)
    rng = random.Random(index)
    started = time.monotonic()
    metadata = ((MODEL_ID_METADATA, model_id), (AUTH_METADATA, f"Bearer {token}"))

    async def stream(number: int) -> None:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.EdgeInferenceStub(channel)
            while time.monotonic() - started < seconds:
                call = stub.InferStream(metadata=metadata)
                try:
                    for n in range(rng.randint(20, 200)):  # then a fresh stream
                        if time.monotonic() - started >= seconds:
                            break
                        kind = rng.choices(KINDS, MIX)[0]
                        payload = payloads[(number * 7 + n) % len(payloads)]
                        request = InferRequest(
                            n, unknown if kind == "unknown-config" else config,
                            payload[: len(payload) // 2] if kind == "malformed" else payload)
                        sent = time.monotonic()
                        await call.write(request.to_message())
                        if kind == "hang-up":
                            call.cancel()
                            out.append((sent - started, kind, "CANCELLED", 0.0))
                            break
                        reply = await call.read()
                        status = "OK" if not reply.HasField("error") else \
                            grpc.StatusCode(next(c for c in grpc.StatusCode
                                                 if c.value[0] == reply.error.code)).name
                        out.append((sent - started, kind, status,
                                    (time.monotonic() - sent) * 1000))
                    else:
                        await call.done_writing()
                except grpc.aio.AioRpcError as error:
                    out.append((time.monotonic() - started, "valid", error.code().name, 0.0))
                except asyncio.CancelledError:
                    pass

    await asyncio.gather(*(stream(i) for i in range(STREAMS_PER_CLIENT)))


async def _flood(port: int, model: str, seconds: float,
                 out: list[tuple[float, str, str, float]], token: str) -> None:
    import grpc
    from splitnet_proto.messages import AUTH_METADATA, MODEL_ID_METADATA, InferRequest
    from splitnet_proto.v1 import inference_pb2_grpc as pb_grpc

    from splitnet.config import Config

    model_id, config_text, payloads = _payloads(model)
    message = InferRequest(0, Config.parse(config_text), payloads[0]).to_message()
    metadata = ((MODEL_ID_METADATA, model_id), (AUTH_METADATA, f"Bearer {token}"))
    started = time.monotonic()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.EdgeInferenceStub(channel)

        async def one() -> None:
            while time.monotonic() - started < seconds:
                if not flooding(time.monotonic() - started):
                    await asyncio.sleep(0.2)
                    continue
                sent = time.monotonic()
                try:
                    await stub.Infer(message, metadata=metadata, timeout=10)
                    status = "OK"
                except grpc.aio.AioRpcError as error:
                    status = error.code().name
                out.append((sent - started, "flood", status, (time.monotonic() - sent) * 1000))

        await asyncio.gather(*(one() for _ in range(FLOOD_IN_FLIGHT)))


def flooding(t_s: float) -> bool:
    """Whether the flood is on at ``t_s`` into the run (odd phases)."""
    return int(t_s // FLOOD_PHASE_S) % 2 == 1


def _process(role: str, index: int, port: int, model: str, seconds: float,
             results: Any, token: str) -> None:
    out: list[tuple[float, str, str, float]] = []
    coroutine = _flood(port, model, seconds, out, token) if role == "flood" else \
        _client(index, port, model, seconds, out, token)
    asyncio.run(coroutine)
    results.put(out)


def soak(minutes: float, model: str, fault_plan: str = DEFAULT_FAULTS) -> dict[str, Any]:
    from experiments.bench.edge import BENCH_DEVICES, _free_port, bench_tokens, start_server
    from experiments.launch import stop_edge_process
    from splitnet import faults
    from splitnet.zoo import checkpoint_for

    faults.parse(fault_plan)  # a bad plan is refused here, not in the server's log
    metrics_port = _free_port()
    env = {"SPLITNET_FAULTS": fault_plan} if fault_plan else {}
    server, port = start_server(checkpoint_for(model), 32, 1, metrics_port, env=env,
                                args=("--worker-stall-s", str(STALL_S)))
    tokens = bench_tokens()
    seconds = minutes * 60
    samples: list[dict[str, float]] = []
    stop = threading.Event()

    watch_started = time.monotonic()

    def watch() -> None:
        started = watch_started
        while not stop.is_set():
            samples.append({"t_s": round(time.monotonic() - started, 1),
                            **_process_metrics(metrics_port)})
            stop.wait(10)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    roles = [("client", i) for i in range(CLIENTS)] + [("flood", 0)]
    processes = [context.Process(target=_process, args=(
        r, i, port, model, seconds, results,
        tokens[f"bench-{BENCH_DEVICES - 1 if r == 'flood' else i}"])) for r, i in roles]
    for p in processes:
        p.start()
    records: list[tuple[float, str, str, float]] = []
    for _ in processes:
        records += results.get(timeout=seconds + 300)
    clients_done_s = time.monotonic() - watch_started
    for p in processes:
        p.join(timeout=30)
    stop.set()
    watcher.join(timeout=15)
    samples.append({"t_s": round(time.monotonic() - watch_started, 1),
                    **_process_metrics(metrics_port)})
    alive = server.poll() is None
    stop_edge_process(server)
    return _report(records, samples, alive, minutes, clients_done_s) | {
        "faults": fault_plan or None, "worker_stall_s": STALL_S}


def _process_metrics(metrics_port: int) -> dict[str, float]:
    from urllib.request import urlopen

    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as response:
            text = response.read().decode()
    except OSError:
        return {"rss_mb": float("nan"), "open_fds": float("nan")}
    values = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
    return {"rss_mb": round(values.get("process_resident_memory_bytes", 0) / 2**20, 1),
            "open_fds": values.get("process_open_fds", float("nan"))}


def _report(records: list[tuple[float, str, str, float]], samples: list[dict[str, float]],
            alive: bool, minutes: float, clients_done_s: float) -> dict[str, Any]:
    statuses: dict[str, Counter[str]] = defaultdict(Counter)
    per_minute: dict[int, list[float]] = defaultdict(list)
    by_flood: dict[bool, list[float]] = {False: [], True: []}
    for t, kind, status, ms in records:
        statuses[kind][status] += 1
        if kind == "valid" and status == "OK":
            per_minute[int(t // 60)].append(ms)
            by_flood[flooding(t)].append(ms)
    p99 = {on: float(np.percentile(v, 99)) if v else float("nan") for on, v in by_flood.items()}
    fair = p99[True] / p99[False]
    latency = {minute: {"requests": len(v), "p50_ms": round(float(np.percentile(v, 50)), 2),
                        "p99_ms": round(float(np.percentile(v, 99)), 2)}
               for minute, v in sorted(per_minute.items())}
    after_first = [s for s in samples if s["t_s"] >= 60] or samples
    rss = [s["rss_mb"] for s in after_first]
    # while the clients run: once they have hung up, their connections' FDs close
    fds = [s["open_fds"] for s in after_first if s["t_s"] < clients_done_s] or \
        [s["open_fds"] for s in after_first]
    rss_growth = (rss[-1] - rss[0]) / rss[0] if rss and rss[0] else float("nan")
    bad_valid = sum(n for status, n in statuses["valid"].items()
                    if status not in ("OK", "RESOURCE_EXHAUSTED", "CANCELLED"))
    return {
        "minutes": minutes, "requests": len(records),
        "statuses": {k: dict(v) for k, v in statuses.items()},
        "latency_per_minute": latency, "process": samples,
        "others_p99_ms": {"flood_off": round(p99[False], 2), "flood_on": round(p99[True], 2)},
        "targets": {
            "rss_growth_after_first_minute": {"measured": round(rss_growth, 4),
                                              "target": 0.10, "met": rss_growth <= 0.10},
            "open_fds_flat": {"measured": [min(fds), max(fds)] if fds else None,
                              "met": bool(fds) and max(fds) - min(fds) <= 8},
            "server_alive": {"measured": alive, "met": alive},
            "valid_requests_answered": {"unexpected_statuses": bad_valid,
                                        "met": bad_valid == 0},
            "fair_share_p99_ratio": {"measured": round(fair, 3), "target": 1.5,
                                     "met": fair <= 1.5},
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.bench.soak", description=__doc__.split("\n\n")[0] + " " +
        "8 client processes with 64 streams (valid, malformed and unknown-config requests, "
        "hang-ups mid-stream) and one flooding device, against one server process.")
    parser.add_argument("--minutes", type=float, default=10.0,
                        help="how long to soak (default: %(default)s; the first minute is "
                             "warm-up, left out of the RSS growth)")
    parser.add_argument("--model", default="mnv2_fmnist",
                        help="the zoo model served (default: %(default)s, the light one: "
                             "the soak is about the server, not the model)")
    parser.add_argument("--faults", default=DEFAULT_FAULTS,
                        help="faults injected into the server (splitnet.faults: "
                             "POINT=KIND[:SECONDS][*TIMES][+AFTER][%%EVERY], comma-separated; "
                             "'' for none; default: %(default)s)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "soak",
                        help="results folder (default: %(default)s)")
    args = parser.parse_args(argv)
    meta = start_results(args.out, command_line("experiments.bench.soak", argv))
    try:
        report = soak(args.minutes, args.model, args.faults)
    except ValueError as error:
        parser.error(str(error))
    save_report(args.out, meta, report)
    print(json.dumps(report, indent=1))
    met = all(t["met"] for t in report["targets"].values())
    print("targets met" if met else "targets NOT met", file=sys.stderr)
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
