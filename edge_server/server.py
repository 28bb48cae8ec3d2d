"""Assemble and run the edge server: servicer, batcher, health, auth, TLS, load feed.

    EdgeServer(options).start() ─► grpc.aio.server (its own event loop thread)
                                     ├─ splitnet.v1.EdgeInference (servicer → batcher → engines,
                                     │                             one per served model)
                                     ├─ grpc.health.v1.Health     (SERVING; NOT_SERVING
                                     │                             while no batch worker runs)
                                     └─ TokenAuthInterceptor      (when a token is set)
                                   ─► ZMQ PUB load feed           (when an address is set)
                                   ─► Prometheus /metrics (HTTP)  (when a port is set)
    stop(grace) ─► NOT_SERVING ─► in-flight requests finish ─► batcher drained
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from splitnet_proto.messages import MAX_PROBE_PADDING_BYTES
from splitnet_proto.v1 import inference_pb2_grpc as pb_grpc

from edge_server.auth import Identities, TokenAuthInterceptor
from edge_server.batching import DynamicBatcher
from edge_server.engine import BatchKey, Decoded, ModelSet
from edge_server.load_reports import LoadPublisher
from edge_server.metrics import EdgeMetrics
from edge_server.servicer import EdgeInferenceServicer
from splitnet.checkpoint import LoadedModel, load_checkpoint
from splitnet.zoo import ZOO_DIR, check_card, list_zoo

SERVICE_NAME = "splitnet.v1.EdgeInference"
T = TypeVar("T")


@dataclass(frozen=True)
class Limits:
    """Every bound the server puts on its clients, with its default. The largest message
    it accepts is not here: it follows from the models served (``max_payload_bytes``)."""

    per_device_in_flight: int = 8  # one device's share of the queue, then RESOURCE_EXHAUSTED
    over_share_delay_ms: float = 250.0  # ... sent this late, so a flood cannot spin on it
    max_concurrent_streams: int = 64  # per connection (a device needs one, plus probes)
    idle_stream_s: float = 120.0  # a stream with no input for this long is ended (OK)
    min_ping_interval_ms: int = 10_000  # closer keepalive pings are strikes ...
    max_ping_strikes: int = 2  # ... and past these the connection is closed (GOAWAY)
    max_connection_age_ms: int = 300_000  # connections are renewed every 5 min, so that
    max_connection_age_grace_ms: int = 30_000  # clients spread over new replicas
    max_connection_idle_ms: int = 600_000  # a connection with no call for 10 min is closed

    def grpc_options(self, max_message_bytes: int) -> list[tuple[str, int]]:
        return [("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_concurrent_streams", self.max_concurrent_streams),
                ("grpc.http2.min_ping_interval_without_data_ms", self.min_ping_interval_ms),
                ("grpc.http2.max_ping_strikes", self.max_ping_strikes),
                ("grpc.keepalive_permit_without_calls", 0),  # pings without calls: strikes
                ("grpc.max_connection_age_ms", self.max_connection_age_ms),
                ("grpc.max_connection_age_grace_ms", self.max_connection_age_grace_ms),
                ("grpc.max_connection_idle_ms", self.max_connection_idle_ms)]


@dataclass(frozen=True)
class ServerOptions:
    """Everything ``python -m edge_server`` can set."""

    address: str = "127.0.0.1:50051"
    checkpoints: tuple[Path, ...] = ()  # none: every model in the zoo
    max_batch_size: int = 32
    max_wait_ms: float = 2.0
    max_queue: int = 256
    token: str | None = None  # one token shared by every device
    device_tokens: dict[str, str] = field(default_factory=dict)  # token ─► device name
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None  # mutual TLS: devices must show a cert this CA signed
    load_pub: str | None = None  # e.g. "tcp://127.0.0.1:50052"
    torch_threads: int | None = None
    precision: str = "auto"  # the edge parts' precision (edge_server.engine.PRECISIONS)
    metrics_port: int | None = None  # Prometheus /metrics over HTTP (0: any free port)
    metrics_address: str = "0.0.0.0"
    limits: Limits = field(default_factory=Limits)
    # a batch worker round (one batch) longer than this is a stalled worker: its batch is
    # answered UNAVAILABLE, health turns NOT_SERVING and a fresh worker takes over
    worker_stall_s: float = 60.0


def _load_checked(path: Path) -> LoadedModel:
    """A checkpoint whose weights hash to its id, and to its card's when it has one."""
    loaded = load_checkpoint(path)
    if not check_card(path, loaded):
        logging.getLogger(__name__).warning(
            "%s has no model card beside it: serving it unchecked against one", path)
    return loaded


class EdgeServer:
    """A running edge server; ``port`` is the bound port (useful with ``:0``).

    The gRPC server is ``grpc.aio`` on an event loop of its own (a thread), so the server
    is driven from ordinary code: ``EdgeServer(options).start()``, ``stop()``, ``wait()``.
    """

    def __init__(self, options: ServerOptions) -> None:
        import torch

        if options.torch_threads:
            torch.set_num_threads(options.torch_threads)
        self.options = options
        checkpoints = options.checkpoints or tuple(ZOO_DIR / f"{m}.pt" for m in list_zoo())
        self.models = ModelSet((_load_checked(path) for path in checkpoints),
                               options.precision)
        self.metrics = EdgeMetrics(
            lambda: self.batcher.depth,
            [(e.model_id, e.model.spec.name) for e in self.models.engines.values()])
        self.batcher: DynamicBatcher[BatchKey, Decoded] = DynamicBatcher(
            self.models.run_batch, options.max_batch_size, options.max_wait_ms,
            options.max_queue,
            on_batch=lambda key, size, seconds, cpu_seconds: self.metrics.batch(
                key[0], size, seconds, cpu_seconds),
            stall_s=options.worker_stall_s, on_health=self._worker_health)
        self._serving = False  # set once started; health follows the worker after that
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="grpc-aio",
                                        daemon=True)
        self._thread.start()
        self._stopped = threading.Event()
        self._stopping = threading.Lock()
        try:
            self.port = self._call(self._build())
        except BaseException:
            self._close_loop()
            raise
        self.metrics_port: int | None = None  # bound by start() when metrics are served
        self.publisher: LoadPublisher | None = None
        if options.load_pub:
            self.publisher = LoadPublisher(self.batcher, options.load_pub, self.models.ids)

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    async def _build(self) -> int:
        """The aio server with its services, bound (not started); returns the port."""
        options = self.options
        interceptors = ([TokenAuthInterceptor(options.token, options.device_tokens)]
                        if options.token or options.device_tokens else [])
        limits = options.limits
        # the largest legal request: a payload of the largest kind, or a bandwidth probe
        self.max_message_bytes = max(self.models.max_payload_bytes,
                                     MAX_PROBE_PADDING_BYTES) + 1024
        self.server = grpc.aio.server(
            interceptors=interceptors, options=limits.grpc_options(self.max_message_bytes))
        pb_grpc.add_EdgeInferenceServicer_to_server(
            EdgeInferenceServicer(self.models, self.batcher, self.metrics,
                                  limits.per_device_in_flight, limits.idle_stream_s,
                                  limits.over_share_delay_ms / 1000,
                                  identities=Identities(options.device_tokens)),
            self.server)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        if options.tls_cert and options.tls_key:
            client_ca = options.tls_client_ca.read_bytes() if options.tls_client_ca else None
            credentials = grpc.ssl_server_credentials(
                [(options.tls_key.read_bytes(), options.tls_cert.read_bytes())],
                root_certificates=client_ca, require_client_auth=client_ca is not None)
            port = self.server.add_secure_port(options.address, credentials)
        else:
            port = self.server.add_insecure_port(options.address)
        if port == 0:
            raise OSError(f"cannot listen on {options.address}: is the port already in use?")
        return port

    def start(self) -> EdgeServer:
        if self.options.metrics_port is not None:
            self.metrics_port = self.metrics.serve(self.options.metrics_port,
                                                   self.options.metrics_address)

        async def start() -> None:
            await self.server.start()
            for name in ("", SERVICE_NAME):
                await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

        self._call(start())
        self._serving = True
        if not self.batcher.healthy:
            self._worker_health(False)
        return self

    def _worker_health(self, up: bool) -> None:
        """The batch worker went down or came back (called from the worker's supervisor):
        health follows, NOT_SERVING while no worker runs the models."""
        if not self._serving or self._stopped.is_set():
            return
        status = (health_pb2.HealthCheckResponse.SERVING if up
                  else health_pb2.HealthCheckResponse.NOT_SERVING)
        logging.getLogger(__name__).warning("batch worker %s: health %s",
                                            "back" if up else "down",
                                            "SERVING" if up else "NOT_SERVING")

        async def set_all() -> None:
            for name in ("", SERVICE_NAME):
                await self.health.set(name, status)

        with contextlib.suppress(RuntimeError):  # the loop closed: the server is stopping
            asyncio.run_coroutine_threadsafe(set_all(), self._loop)

    def stop(self, grace_s: float = 5.0) -> None:
        """Stop taking calls; let in-flight requests finish for up to ``grace_s``."""
        with self._stopping:
            if self._stopped.is_set():
                return

            self._serving = False

            async def stop() -> None:
                await self.health.enter_graceful_shutdown()
                await self.server.stop(grace_s)

            self._call(stop())
            self.batcher.close()
            if self.publisher is not None:
                self.publisher.close()
            self.metrics.close()
            self._close_loop()
            self._stopped.set()

    def _close_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def wait(self) -> None:
        """Block until the server has stopped."""
        self._stopped.wait()
