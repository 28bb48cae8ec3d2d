"""Several edge replicas: each input goes to the least loaded one that is up, and an input
a replica fails on is retried on another while its time lasts.

    infer(request, timeout) ──► pick: replicas up (or due a re-probe), least loaded first
          │                        load = requests ahead there: its last reported queue ms
          │                               ÷ its service ms (fading as the report ages)
          │                               + this device's requests in flight there
          │                        ties (to the whole request) ─► round robin
          ├─ reply ──► record its load report ──► return
          └─ replica failed (unreachable, stream broken, queue full) ──► mark it down
                 (backoff, as EdgeHealth) ──► next replica with the time left ──► …
                 none left ──► EdgeError (the device finishes the input itself)

Each replica has its own channel and its own long-lived stream, so balancing is per input:
no stream pins a device to one replica. A refusal of the input itself (a bad payload or
configuration) is not retried: another replica would refuse it too.

Targets: ``host:port,host:port,...``; or ``dns:///name:port`` (every address the name
resolves to, once, at start-up); or one ``host:port`` (one replica).
"""

from __future__ import annotations

import itertools
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

import grpc
from splitnet_proto.messages import InferReply, InferRequest, LoadReport, ModelInfo

from device_client.edge import EdgeError, EdgeLink
from device_client.fallback import EdgeHealth

# a replica that failed these may answer the next input: try another one for this input
RETRYABLE = {None, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED,
             grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL,
             grpc.StatusCode.FAILED_PRECONDITION}


def resolve_targets(edge: str) -> list[str]:
    """The replica addresses ``edge`` names (see the module docstring)."""
    if edge.startswith("dns:"):
        name = edge.split("///", 1)[-1] if "///" in edge else edge[4:]
        host, _, port = name.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"{edge}: give dns:///HOST:PORT")
        try:
            infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
        except socket.gaierror as error:
            raise ValueError(f"{edge}: cannot resolve {host}: {error}") from None
        addresses = dict.fromkeys(
            f"[{info[4][0]}]:{port}" if info[0] == socket.AF_INET6 else f"{info[4][0]}:{port}"
            for info in infos)
        return list(addresses)
    if ":" in edge.split(",")[0] and not edge.startswith(("ipv4:", "ipv6:", "unix:")):
        return [t.strip() for t in edge.split(",") if t.strip()]
    return [edge]  # a gRPC target of its own (unix:, ipv4:a,b with gRPC's round robin)


LOAD_FRESH_S = 2.0  # a load report this old says nothing about the queue now


@dataclass
class Replica:
    """One edge replica and what this device knows of it."""

    address: str
    link: EdgeLink
    health: EdgeHealth
    load: LoadReport | None = None
    load_at: float = float("-inf")  # when ``load`` was reported (monotonic s)
    in_flight: int = 0
    answered: int = 0
    failed: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def requests_ahead(self, now: float) -> int:
        return requests_ahead(self.load, self.load_at, self.in_flight, now)


def requests_ahead(load: LoadReport | None, load_at: float, in_flight: int, now: float) -> int:
    """What an input sent now would wait behind at a replica, in whole requests: its
    reported queueing (in units of its service time, trusted less as the report ages, since
    only a chosen replica gets a new one) plus what this device already has there. Closer
    replicas are a tie, which round robin breaks; without the ageing, a replica that once
    reported a little more queueing would be shunned until its report expired while the
    other's kept being renewed."""
    queued = 0.0
    if load is not None:
        trust = max(0.0, 1.0 - (now - load_at) / LOAD_FRESH_S)
        queued = trust * load.queue_ms_recent / max(load.service_ms, 1.0)
    return round(queued + in_flight)


class ReplicaLike(Protocol):
    health: EdgeHealth

    def requests_ahead(self, now: float) -> int: ...


R = TypeVar("R", bound=ReplicaLike)


def replica_order(replicas: Sequence[R], now: float, turn: int) -> list[R]:
    """Replicas to try, best first: those up by expected wait (ties in round-robin order
    from ``turn``), then those down whose next probe is due (an input is their probe)."""
    n = len(replicas)
    rotated = [replicas[(turn + i) % n] for i in range(n)]
    up = sorted((r for r in rotated if r.health.up), key=lambda r: r.requests_ahead(now))
    due = [r for r in rotated if r.health.probe_due(now)]
    return up + due


class EdgePool:
    """The edge as several replicas, with the interface of one :class:`EdgeLink`."""

    def __init__(self, targets: list[str], model_id: str, token: str | None = None,
                 tls_ca: Path | None = None,
                 tls_identity: tuple[Path, Path] | None = None) -> None:
        if not targets:
            raise ValueError("no edge replica given")
        self.model_id = model_id
        self.replicas = [
            Replica(t, EdgeLink(t, model_id, token, tls_ca, tls_identity), EdgeHealth())
            for t in targets]
        self._ids = itertools.count(1)
        self._turn = itertools.count()
        self._lock = threading.Lock()

    @property
    def target(self) -> str:
        return ",".join(r.address for r in self.replicas)

    def next_request_id(self) -> int:
        return next(self._ids)

    def _order(self, now: float) -> list[Replica]:
        return replica_order(self.replicas, now, next(self._turn))

    def infer(self, request: InferRequest, timeout_s: float) -> InferReply:
        """Send one input to the best replica; on a replica's failure, the next one, while
        ``timeout_s`` lasts. Raises EdgeError when no replica answered."""
        deadline = time.monotonic() + timeout_s
        errors: list[str] = []
        last: EdgeError | None = None
        for replica in self._order(time.monotonic()):
            remaining = deadline - time.monotonic()
            if remaining <= 0.001:
                break
            with replica.lock:
                replica.in_flight += 1
            try:
                reply = replica.link.infer(request, remaining)
            except EdgeError as error:
                last = error
                errors.append(f"{replica.address}: {error}")
                if error.timed_out or error.code not in RETRYABLE:
                    raise  # out of time, or the input itself was refused
                with replica.lock:
                    replica.failed += 1
                replica.health.failure(str(error))
                replica.link.reset_stream()
                continue
            finally:
                with replica.lock:
                    replica.in_flight -= 1
            with replica.lock:
                replica.answered += 1
                replica.load, replica.load_at = reply.load, time.monotonic()
            replica.health.success()
            return reply
        if last is not None and len(errors) == 1:
            raise last
        raise EdgeError("no edge replica answered: " + ("; ".join(errors) or "none is up"),
                        code=last.code if last else grpc.StatusCode.UNAVAILABLE,
                        timed_out=bool(last and last.timed_out))

    def probe(self, padding_bytes: int, timeout_s: float) -> tuple[float, LoadReport]:
        """A probe to the best replica (or, when none is up, each one due a probe until one
        answers); its round-trip ms and load."""
        order = self._order(time.monotonic()) or self.replicas
        last: EdgeError | None = None
        for replica in order:
            try:
                result = replica.link.probe(padding_bytes, timeout_s)
            except EdgeError as error:
                last = error
                if error.timed_out:
                    raise  # a slow link, not a dead replica: the caller bounds the rate
                replica.health.failure(str(error))
                continue
            replica.load, replica.load_at = result[1], time.monotonic()
            if not replica.health.up:
                replica.link.reset_stream()
            replica.health.success()
            return result
        assert last is not None
        raise last

    def model_info(self, timeout_s: float = 5.0) -> ModelInfo:
        return self.replicas[0].link.model_info(timeout_s)

    def reset_stream(self) -> None:
        for replica in self.replicas:
            replica.link.reset_stream()

    def requests_per_replica(self) -> dict[str, int]:
        return {r.address: r.answered for r in self.replicas}

    def close(self) -> None:
        for replica in self.replicas:
            replica.link.close()
