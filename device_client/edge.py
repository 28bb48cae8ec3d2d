"""The device's connection to the edge: one long-lived stream, probes, model info.

    infer(request, timeout) ──► StreamSession: request queue ═► InferStream ═► reader thread
                                   ▲                                              │
                                   └── Future per request_id ◄── InferReply ◄─────┘

Every input has its own deadline, enforced here; the stream itself is long-lived. Unary
calls (probe, model info) carry a deadline of their own. Any failure raises EdgeError, and
the caller finishes that input locally.
"""

from __future__ import annotations

import itertools
import os
import queue
import socket
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any

import grpc
from splitnet_proto.messages import (
    AUTH_METADATA,
    DEVICE_ID_METADATA,
    MODEL_ID_METADATA,
    InferReply,
    InferRequest,
    LoadReport,
    ModelInfo,
    load_from_probe_reply,
    model_info_request,
    probe_request,
)
from splitnet_proto.v1 import inference_pb2_grpc as pb_grpc

from splitnet import faults

KEEPALIVE_TIME_MS = 20_000
KEEPALIVE_TIMEOUT_MS = 5_000


def device_id() -> str:
    """This device's name for the edge's per-device share: the host and the process."""
    return f"{socket.gethostname()}-{os.getpid()}"


class EdgeError(RuntimeError):
    """The edge did not produce a result for this input."""

    def __init__(self, message: str, code: grpc.StatusCode | None = None,
                 timed_out: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.timed_out = timed_out


class _StreamSession:
    """One open InferStream with replies matched to requests by id.

    The reader thread never dies with a pending input unanswered: a reply that cannot be
    parsed fails only its own input (found by its request id), and anything else that ends
    the reader marks the session broken and fails every pending input with EdgeError, so
    the device finishes them itself; the next input opens a new stream. A session whose
    input timed out is retired: new inputs go to a new stream, so none queues behind the
    abandoned one, and the old stream is closed once its last pending input is settled."""

    def __init__(self, stub: pb_grpc.EdgeInferenceStub, metadata: tuple[tuple[str, str], ...]):
        self._outgoing: queue.Queue[Any] = queue.Queue()
        self._pending: dict[int, Future[InferReply]] = {}
        self._lock = threading.Lock()
        self.broken: EdgeError | None = None
        self.retired = False
        self.malformed_replies = 0
        self._call = stub.InferStream(iter(self._outgoing.get, None), metadata=metadata)
        self._reader = threading.Thread(target=self._read, name="edge-stream", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            for message in self._call:
                self._settle(message)
            error = EdgeError("the edge closed the stream")
        except grpc.RpcError as rpc_error:
            error = EdgeError(f"stream failed: {rpc_error.code().name}: {rpc_error.details()}",
                              code=rpc_error.code())
        except Exception as failure:  # noqa: BLE001 - the reader must answer what it holds
            error = EdgeError(f"stream reader failed: {failure!r}")
        with self._lock:
            self.broken = error
            pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(error)

    def _settle(self, message: Any) -> None:
        """One reply to its input's future; a reply that does not parse fails that input."""
        request_id = int(getattr(message, "request_id", 0) or 0)
        try:
            faults.point("device.reader")
            reply: InferReply | EdgeError = InferReply.from_message(message)
        except Exception as error:  # noqa: BLE001 - any malformed reply is the edge's fault
            self.malformed_replies += 1
            reply = EdgeError(f"malformed reply from the edge: {error}")
        with self._lock:
            future = self._pending.pop(request_id, None)
            idle = self.retired and not self._pending
        if future is not None and not future.done():
            if isinstance(reply, EdgeError):
                future.set_exception(reply)
            else:
                future.set_result(reply)
        if idle:
            self.close()

    def submit(self, request: InferRequest) -> Future[InferReply]:
        future: Future[InferReply] = Future()
        with self._lock:
            if self.broken is not None:
                raise self.broken
            self._pending[request.request_id] = future
        self._outgoing.put(request.to_message())
        return future

    def forget(self, request_id: int) -> None:
        with self._lock:
            self._pending.pop(request_id, None)

    def retire(self) -> None:
        """Take no more inputs; close once nothing is pending."""
        with self._lock:
            self.retired = True
            idle = not self._pending
        if idle:
            self.close()

    def close(self) -> None:
        self._outgoing.put(None)
        self._call.cancel()


class EdgeLink:
    """Talks to one edge target (``host:port``, or a gRPC name with several addresses,
    e.g. ``ipv4:10.0.0.1:50051,10.0.0.2:50051``, balanced round-robin)."""

    def __init__(self, target: str, model_id: str, token: str | None = None,
                 tls_ca: Path | None = None,
                 tls_identity: tuple[Path, Path] | None = None) -> None:
        self.target = target
        self.model_id = model_id
        metadata = [(MODEL_ID_METADATA, model_id), (DEVICE_ID_METADATA, device_id())]
        if token:
            metadata.append((AUTH_METADATA, f"Bearer {token}"))
        self.metadata = tuple(metadata)
        options = [("grpc.lb_policy_name", "round_robin"),
                   ("grpc.enable_retries", 0),
                   ("grpc.initial_reconnect_backoff_ms", 100),
                   ("grpc.max_reconnect_backoff_ms", 1000),
                   # a link that went silent is found by keepalive on the open stream (the
                   # server allows a ping every 10 s while a call is open, none without)
                   ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
                   ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
                   ("grpc.keepalive_permit_without_calls", 0),
                   ("grpc.http2.bdp_probe", 0)]
        if tls_ca is not None:
            cert, key = tls_identity or (None, None)  # mutual TLS: this device's certificate
            credentials = grpc.ssl_channel_credentials(
                root_certificates=tls_ca.read_bytes(),
                private_key=key.read_bytes() if key else None,
                certificate_chain=cert.read_bytes() if cert else None)
            self.channel = grpc.secure_channel(target, credentials, options=options)
        else:
            self.channel = grpc.insecure_channel(target, options=options)
        self.stub = pb_grpc.EdgeInferenceStub(self.channel)
        self._ids = itertools.count(1)
        self._session: _StreamSession | None = None
        self._session_lock = threading.Lock()

    def next_request_id(self) -> int:
        return next(self._ids)

    def _stream(self) -> _StreamSession:
        with self._session_lock:
            if self._session is None or self._session.broken is not None \
                    or self._session.retired:
                if self._session is not None and not self._session.retired:
                    self._session.close()
                self._session = _StreamSession(self.stub, self.metadata)
            return self._session

    def infer(self, request: InferRequest, timeout_s: float) -> InferReply:
        """Send one input over the stream and wait for its reply, at most ``timeout_s``."""
        session = self._stream()
        future = session.submit(request)
        try:
            reply = future.result(timeout=timeout_s)
        except FutureTimeout:
            session.forget(request.request_id)
            with self._session_lock:  # the next input must not queue behind this one
                if self._session is session:
                    self._session = None
            session.retire()
            raise EdgeError(f"no reply within {timeout_s * 1000:.0f} ms",
                            code=grpc.StatusCode.DEADLINE_EXCEEDED, timed_out=True) from None
        except EdgeError:
            raise
        if reply.error is not None:
            code = next((c for c in grpc.StatusCode if c.value[0] == reply.error.code), None)
            raise EdgeError(f"edge refused the input: {reply.error.message}", code=code)
        return reply

    def infer_unary(self, request: InferRequest, timeout_s: float) -> InferReply:
        """The same over a unary call (one HTTP/2 stream per input)."""
        try:
            message = self.stub.Infer(request.to_message(), timeout=timeout_s,
                                      metadata=self.metadata)
        except grpc.RpcError as error:
            raise EdgeError(f"{error.code().name}: {error.details()}", code=error.code(),
                            timed_out=error.code() is grpc.StatusCode.DEADLINE_EXCEEDED) from None
        return InferReply.from_message(message)

    def probe(self, padding_bytes: int, timeout_s: float) -> tuple[float, LoadReport]:
        """Round-trip time of a probe carrying ``padding_bytes``, and the edge's load."""
        start = time.perf_counter()
        try:
            message = self.stub.Probe(probe_request(padding_bytes), timeout=timeout_s,
                                      metadata=self.metadata, wait_for_ready=False)
        except grpc.RpcError as error:
            raise EdgeError(f"probe failed: {error.code().name}: {error.details()}",
                            code=error.code(),
                            timed_out=error.code() is grpc.StatusCode.DEADLINE_EXCEEDED) from None
        return (time.perf_counter() - start) * 1000, load_from_probe_reply(message)

    def model_info(self, timeout_s: float = 5.0) -> ModelInfo:
        try:
            return ModelInfo.from_message(self.stub.GetModelInfo(
                model_info_request(), timeout=timeout_s, metadata=self.metadata))
        except grpc.RpcError as error:
            raise EdgeError(f"GetModelInfo failed: {error.code().name}: {error.details()}",
                            code=error.code()) from None

    def reset_stream(self) -> None:
        with self._session_lock:
            if self._session is not None:
                self._session.close()
                self._session = None

    def close(self) -> None:
        self.reset_stream()
        self.channel.close()
