"""The EdgeInference servicer: decode, compute, encode. Nothing else lives here.

    metadata model id ─► ModelSet.engine
    InferRequest ─► messages.InferRequest ─► Engine.prepare (checks) ─► DynamicBatcher
                                                                          │
    InferReply   ◄─ messages.InferReply  ◄──────── probabilities, timing ◄┘

Errors (unary Infer aborts with the status; InferStream replies with ``error`` set and
keeps the stream open):

    model id in metadata not served    FAILED_PRECONDITION (whole call; served ids named)
    malformed/oversized payload,       INVALID_ARGUMENT
      unknown configuration
    queue full                         RESOURCE_EXHAUSTED
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future
from typing import NoReturn

import grpc

from edge_server.batching import BatchResult, DynamicBatcher, QueueFullError
from edge_server.engine import BatchKey, Decoded, Engine, ModelSet, UnknownModelError
from edge_server.telemetry import load_report
from splitnet.codec import PayloadError
from splitnet.config import ConfigError
from splitnet.messages import (
    MODEL_ID_METADATA,
    InferReply,
    InferRequest,
    ModelInfo,
    RemoteError,
    ServedModel,
    probe_reply,
)
from splitnet.v1 import inference_pb2 as pb
from splitnet.v1 import inference_pb2_grpc as pb_grpc


class RequestError(Exception):
    """A request refused with a specific status code."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _abort(context: grpc.ServicerContext, code: grpc.StatusCode, message: str) -> NoReturn:
    """End the call with ``code``; ``context.abort`` raises, this tells the type checker."""
    context.abort(code, message)
    raise AssertionError("context.abort returned")


class EdgeInferenceServicer(pb_grpc.EdgeInferenceServicer):
    """Serves the tails and full networks of every model in ``models``."""

    def __init__(self, models: ModelSet, batcher: DynamicBatcher[BatchKey, Decoded]) -> None:
        self.models = models
        self.batcher = batcher

    # ---------------------------------------------------------------- checks
    def _engine_for(self, context: grpc.ServicerContext) -> Engine:
        sent = dict(context.invocation_metadata() or ()).get(MODEL_ID_METADATA)
        try:
            return self.models.engine(sent)
        except UnknownModelError as error:
            _abort(context, grpc.StatusCode.FAILED_PRECONDITION,
                   f"{error}; send '{MODEL_ID_METADATA}' metadata naming one of GetModelInfo's "
                   "models, or point the device at a server with its model")

    def _submit(self, engine: Engine, message: pb.InferRequest
                ) -> tuple[InferRequest, Future[BatchResult]]:
        try:
            request = InferRequest.from_message(message)
            decoded = engine.prepare(request.config, request.payload)
        except (ConfigError, PayloadError) as error:
            kind = "configuration" if isinstance(error, ConfigError) else "payload"
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"bad {kind} in request {message.request_id}: {error}") from error
        try:
            return request, self.batcher.submit((engine.model_id, request.config), decoded)
        except QueueFullError as error:
            raise RequestError(grpc.StatusCode.RESOURCE_EXHAUSTED, str(error)) from error

    def _reply(self, request: InferRequest, result: BatchResult) -> pb.InferReply:
        probabilities = result.probabilities
        return InferReply(
            request_id=request.request_id, config=request.config,
            probabilities=tuple(probabilities.tolist()),
            label=int(probabilities.argmax()), queue_ms=result.queue_ms,
            compute_ms=result.compute_ms, batch_size=result.batch_size,
            load=load_report(self.batcher)).to_message()

    def _error_reply(self, request_id: int, error: RequestError) -> pb.InferReply:
        return InferReply(request_id=request_id, config=None,
                          error=RemoteError(error.code.value[0], error.message),
                          load=load_report(self.batcher)).to_message()

    # ---------------------------------------------------------------- RPCs
    def Infer(self, request: pb.InferRequest,  # noqa: N802 - gRPC method name
              context: grpc.ServicerContext) -> pb.InferReply:
        engine = self._engine_for(context)
        try:
            parsed, future = self._submit(engine, request)
        except RequestError as error:
            _abort(context, error.code, error.message)
        timeout = context.time_remaining()
        try:
            return self._reply(parsed, future.result(timeout=timeout))
        except TimeoutError:
            _abort(context, grpc.StatusCode.DEADLINE_EXCEEDED, "deadline passed in the queue")
        except Exception as error:  # noqa: BLE001 - any model failure is an internal error
            _abort(context, grpc.StatusCode.INTERNAL, f"inference failed: {error}")

    def InferStream(self, request_iterator: Iterator[pb.InferRequest],  # noqa: N802
                    context: grpc.ServicerContext) -> Iterator[pb.InferReply]:
        engine = self._engine_for(context)
        # One input at a time per stream, in order: a device waits for each result anyway,
        # and a thread per stream would only add contention. Batching happens across streams.
        for message in request_iterator:
            try:
                parsed, future = self._submit(engine, message)
            except RequestError as error:
                yield self._error_reply(message.request_id, error)
                continue
            try:
                yield self._reply(parsed, future.result())
            except Exception as error:  # noqa: BLE001
                yield self._error_reply(parsed.request_id, RequestError(
                    grpc.StatusCode.INTERNAL, f"inference failed: {error}"))

    def GetModelInfo(self, request: pb.ModelInfoRequest,  # noqa: N802
                     context: grpc.ServicerContext) -> pb.ModelInfo:
        served = tuple(ServedModel(e.model_id, e.model.spec.name, e.configs)
                       for e in self.models.engines.values())
        return ModelInfo(served, load_report(self.batcher)).to_message()

    def Probe(self, request: pb.ProbeRequest,  # noqa: N802
              context: grpc.ServicerContext) -> pb.ProbeReply:
        return probe_reply(len(request.padding), load_report(self.batcher))
