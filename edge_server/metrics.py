"""Prometheus metrics for the edge server, served on their own HTTP port (``--metrics-port``).

    servicer, per request ─► requests{model, method, code}, bytes in / out,
                             queue / compute / total seconds{model}
    batcher, per batch    ─► batch size{model}, model seconds{model}
    at scrape time        ─► queue depth (read from the batcher), models served
                             ──► prometheus_client registry ──► GET http://HOST:PORT/metrics

Every metric is named ``splitnet_edge_*``, besides the standard ``process_*`` ones (CPU
seconds, resident memory, open file descriptors). Label values come from the server's own set
(served model ids, RPC names, gRPC status names), never from what a client sends, so a
client cannot grow the number of series.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIServer

import grpc
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    start_http_server,
)

UNKNOWN_MODEL = "unknown"  # the label of calls that named no model this server serves
# seconds: from well under a millisecond (a queue with no wait) to a few seconds (a full one)
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class EdgeMetrics:
    """The server's metrics in a registry of their own (one per server, so tests and
    several servers in one process do not collide)."""

    def __init__(self, depth: Callable[[], float], models: Iterable[tuple[str, str]]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("splitnet_edge_requests", "Requests answered, by status",
                                ["model", "method", "code"], registry=r)
        self.queue_seconds = Histogram("splitnet_edge_queue_seconds",
                                       "Time a request waited for its batch", ["model"],
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.compute_seconds = Histogram("splitnet_edge_compute_seconds",
                                         "Model time of the batch a request ran in", ["model"],
                                         buckets=LATENCY_BUCKETS, registry=r)
        self.total_seconds = Histogram("splitnet_edge_request_seconds",
                                       "Server time of a request, parse to reply", ["model"],
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("splitnet_edge_batch_size", "Requests per batch run",
                                    ["model"], buckets=BATCH_BUCKETS, registry=r)
        self.model_seconds = Counter("splitnet_edge_model_seconds",
                                     "Time spent running batches in the model", ["model"],
                                     registry=r)
        # with one torch thread the model runs on the batch worker's thread: its CPU time
        # there is the model's, like for like with the process CPU time beside it
        self.model_cpu_seconds = Counter("splitnet_edge_model_cpu_seconds",
                                         "CPU time of the thread running batches in the "
                                         "model", ["model"], registry=r)
        ProcessCollector(registry=r)
        self.bytes_in = Counter("splitnet_edge_received_bytes",
                                "Request message bytes received", ["model"], registry=r)
        self.bytes_out = Counter("splitnet_edge_sent_bytes", "Reply message bytes sent",
                                 ["model"], registry=r)
        self.queue_depth = Gauge("splitnet_edge_queue_depth", "Requests waiting or running",
                                 registry=r)
        self.queue_depth.set_function(depth)
        self.models = Gauge("splitnet_edge_model_served", "1 for each model served",
                            ["model", "architecture"], registry=r)
        for model_id, architecture in models:
            self.models.labels(model_id, architecture).set(1)
        self._http: tuple[WSGIServer, threading.Thread] | None = None
        # per (model, method, code): the labelled series one request moves (a few keys:
        # labels come from the server's own sets, see the module docstring)
        self._series: dict[tuple[str, str, grpc.StatusCode], tuple[Any, ...]] = {}

    def request(self, model: str, method: str, code: grpc.StatusCode, total_s: float,
                bytes_in: int, bytes_out: int, queue_s: float | None = None,
                compute_s: float | None = None) -> None:
        """Count one request (answered or refused) and what it cost."""
        key = (model, method, code)
        series = self._series.get(key)
        if series is None:  # labels() looks its child up under a lock: once per key
            series = self._series[key] = (
                self.requests.labels(model, method, code.name),
                self.total_seconds.labels(model), self.bytes_in.labels(model),
                self.bytes_out.labels(model), self.queue_seconds.labels(model),
                self.compute_seconds.labels(model))
        requests, total, received, sent, queued, computed = series
        requests.inc()
        total.observe(total_s)
        received.inc(bytes_in)
        sent.inc(bytes_out)
        if queue_s is not None:
            queued.observe(queue_s)
        if compute_s is not None:
            computed.observe(compute_s)

    def batch(self, model: str, size: int, seconds: float, cpu_seconds: float) -> None:
        """One batch of ``size`` requests ran in the model for ``seconds`` (wall), using
        ``cpu_seconds`` of its thread's CPU."""
        self.batch_size.labels(model).observe(size)
        self.model_seconds.labels(model).inc(seconds)
        self.model_cpu_seconds.labels(model).inc(cpu_seconds)

    def serve(self, port: int, address: str = "0.0.0.0") -> int:
        """Serve ``/metrics`` over HTTP on ``port`` (0: any free port); returns the port."""
        server, thread = start_http_server(port, address, registry=self.registry)
        self._http = (server, thread)
        return int(server.server_port)

    def close(self) -> None:
        if self._http is not None:
            server, thread = self._http
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)
            self._http = None
