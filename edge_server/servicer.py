"""The EdgeInference servicer (grpc.aio): decode, compute, encode. Nothing else lives here.

    event loop:   metadata model id ─► ModelSet.engine
                  InferRequest ─► messages.InferRequest ─► Engine.prepare (checks)
                               ─► DynamicBatcher.submit ─► await the batch's future
    batch worker (a thread that holds the model) ─► probabilities, timing ─┘
                  InferReply ◄─ messages.InferReply
    every request, answered or refused ─► EdgeMetrics (status, seconds, bytes)

Parsing and checks run in the event loop: they are microseconds of Python, and doing them
before a request is queued lets a bad one be refused without touching the worker. Decoding
an offloaded image (up to tens of ms for a PNG) runs on a small thread pool instead.

Errors (unary Infer aborts with the status; InferStream replies with ``error`` set and
keeps the stream open):

    model id in metadata not served    FAILED_PRECONDITION (whole call; served ids named)
    malformed/oversized payload,       INVALID_ARGUMENT
      unknown configuration
    queue full, or this device past    RESOURCE_EXHAUSTED
      its share of the queue
    the batch worker stalled on it     UNAVAILABLE (the device finishes it itself)
    the model failed on its batch      INTERNAL
    a stream idle for too long         ends with OK (the device opens a new one)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import NoReturn

import grpc
from splitnet_proto.messages import (
    MODEL_ID_METADATA,
    InferReply,
    InferRequest,
    ModelInfo,
    RemoteError,
    ServedModel,
    probe_reply,
)
from splitnet_proto.v1 import inference_pb2 as pb
from splitnet_proto.v1 import inference_pb2_grpc as pb_grpc

from edge_server.auth import Identities
from edge_server.batching import (
    BatchResult,
    DynamicBatcher,
    QueueFullError,
    WorkerStalledError,
)
from edge_server.engine import BatchKey, Decoded, Engine, ModelSet, UnknownModelError
from edge_server.load_reports import load_report
from edge_server.metrics import UNKNOWN_MODEL, EdgeMetrics
from splitnet.codec import PayloadError
from splitnet.config import ConfigError, Placement


class RequestError(Exception):
    """A request refused with a specific status code."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


async def _abort(context: grpc.aio.ServicerContext, code: grpc.StatusCode,
                 message: str) -> NoReturn:
    """End the call with ``code``; ``context.abort`` raises, this tells the type checker."""
    await context.abort(code, message)
    raise AssertionError("context.abort returned")


class EdgeInferenceServicer(pb_grpc.EdgeInferenceServicer):
    """Serves the tails and full networks of every model in ``models``."""

    def __init__(self, models: ModelSet, batcher: DynamicBatcher[BatchKey, Decoded],
                 metrics: EdgeMetrics, per_device_in_flight: int = 8,
                 idle_stream_s: float = 120.0, over_share_delay_s: float = 0.25,
                 max_wait_s: float = 120.0, identities: Identities | None = None) -> None:
        self.models = models
        self.batcher = batcher
        self.metrics = metrics
        self.per_device_in_flight = per_device_in_flight
        self.idle_stream_s = idle_stream_s
        self.over_share_delay_s = over_share_delay_s
        self.max_wait_s = max_wait_s  # the longest any request waits for its batch
        self.identities = identities or Identities()  # what the per-device share is keyed on
        self._decoders = ThreadPoolExecutor(max_workers=2, thread_name_prefix="image-decode")
        self._in_flight: dict[str, int] = {}  # per device; touched only in the event loop

    # ---------------------------------------------------------------- checks
    async def _engine_for(self, context: grpc.aio.ServicerContext, method: str) -> Engine:
        sent = dict(context.invocation_metadata() or ()).get(MODEL_ID_METADATA)
        try:
            return self.models.engine(sent)
        except UnknownModelError as error:
            self.metrics.request(UNKNOWN_MODEL, method, grpc.StatusCode.FAILED_PRECONDITION,
                                 0.0, 0, 0)
            await _abort(context, grpc.StatusCode.FAILED_PRECONDITION,
                   f"{error}; send '{MODEL_ID_METADATA}' metadata naming one of GetModelInfo's "
                   "models, or point the device at a server with its model")

    async def _submit(self, engine: Engine, message: pb.InferRequest
                      ) -> tuple[InferRequest, asyncio.Future[BatchResult]]:
        try:
            request = InferRequest.from_message(message)
            if request.config.placement is Placement.OFFLOAD_INPUT \
                    or request.config.rate is not None:
                # an image takes up to tens of ms to decode (a PNG), an entropy-coded code
                # about a millisecond (rANS in numpy): off the event loop, which serves
                # every other device meanwhile
                decoded = await asyncio.get_running_loop().run_in_executor(
                    self._decoders, engine.prepare, request.config, request.payload)
            else:  # a slimmable code decodes in microseconds: a hand-off would cost more
                decoded = engine.prepare(request.config, request.payload)
        except (ConfigError, PayloadError) as error:
            kind = "configuration" if isinstance(error, ConfigError) else "payload"
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"bad {kind} in request {message.request_id}: {error}") from error
        try:
            return request, self.batcher.submit((engine.model_id, request.config), decoded)
        except QueueFullError as error:
            raise RequestError(grpc.StatusCode.RESOURCE_EXHAUSTED, str(error)) from error

    async def _compute(self, engine: Engine, device: str, message: pb.InferRequest,
                       timeout_s: float | None) -> tuple[InferRequest, BatchResult]:
        """Check, queue and await one input, within this device's share of the queue."""
        held = self._in_flight.get(device, 0)
        if held >= self.per_device_in_flight:
            # Refused, but not at once: a device that ignores the refusal and sends again
            # straight away would otherwise spend the event loop (and the others' latency)
            # on refusals. A sleeping call holds no queue slot and costs next to nothing.
            await asyncio.sleep(self.over_share_delay_s)
            raise RequestError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                               f"this device already has {held} requests in flight, its "
                               f"share of the edge ({self.per_device_in_flight}); wait for "
                               "their replies or run this input on the device")
        self._in_flight[device] = held + 1
        try:
            parsed, future = await self._submit(engine, message)
            # never unbounded: a stalled worker answers its batch, and this bound backs it up
            bound = self.max_wait_s if timeout_s is None else min(timeout_s, self.max_wait_s)
            try:
                return parsed, await asyncio.wait_for(future, bound)
            except TimeoutError as error:
                raise RequestError(grpc.StatusCode.DEADLINE_EXCEEDED,
                                   "deadline passed in the queue") from error
            except WorkerStalledError as error:
                raise RequestError(grpc.StatusCode.UNAVAILABLE, str(error)) from error
            except Exception as error:  # noqa: BLE001 - any model failure is internal
                raise RequestError(grpc.StatusCode.INTERNAL,
                                   f"inference failed: {error}") from error
        finally:
            left = self._in_flight[device] - 1
            if left:
                self._in_flight[device] = left
            else:
                del self._in_flight[device]

    def _reply(self, engine: Engine, request: InferRequest,
               result: BatchResult) -> pb.InferReply:
        probabilities = result.probabilities
        return InferReply(
            request_id=request.request_id, config=request.config,
            probabilities=tuple(probabilities),
            label=max(range(len(probabilities)), key=probabilities.__getitem__),
            queue_ms=result.queue_ms,
            compute_ms=result.compute_ms, batch_size=result.batch_size,
            load=load_report(self.batcher), model_tag=engine.model_tag).to_message()

    def _error_reply(self, request_id: int, error: RequestError) -> pb.InferReply:
        return InferReply(request_id=request_id, config=None,
                          error=RemoteError(error.code.value[0], error.message),
                          load=load_report(self.batcher)).to_message()

    def _count(self, engine: Engine, method: str, started: float, message: pb.InferRequest,
               reply: pb.InferReply | None, code: grpc.StatusCode,
               result: BatchResult | None = None) -> None:
        self.metrics.request(
            engine.model_id, method, code, time.perf_counter() - started, message.ByteSize(),
            0 if reply is None else reply.ByteSize(),
            None if result is None else result.queue_ms / 1000,
            None if result is None else result.compute_ms / 1000)

    # ---------------------------------------------------------------- RPCs
    async def Infer(self, request: pb.InferRequest,  # noqa: N802 - gRPC method name
                    context: grpc.aio.ServicerContext) -> pb.InferReply:
        started = time.perf_counter()
        engine = await self._engine_for(context, "Infer")
        try:
            parsed, result = await self._compute(engine, self.identities.of(context), request,
                                                 context.time_remaining())
        except RequestError as error:
            self._count(engine, "Infer", started, request, None, error.code)
            await _abort(context, error.code, error.message)
        reply = self._reply(engine, parsed, result)
        self._count(engine, "Infer", started, request, reply, grpc.StatusCode.OK, result)
        return reply

    async def InferStream(self, request_iterator: AsyncIterator[pb.InferRequest],  # noqa: N802
                          context: grpc.aio.ServicerContext) -> AsyncIterator[pb.InferReply]:
        engine = await self._engine_for(context, "InferStream")
        device = self.identities.of(context)
        # One input at a time per stream, in order: a device waits for each result anyway.
        # Batching happens across streams.
        incoming = request_iterator.__aiter__()
        while True:
            try:
                # asyncio.timeout re-arms one timer; wait_for made a task per message
                async with asyncio.timeout(self.idle_stream_s):
                    message = await incoming.__anext__()
            except (StopAsyncIteration, TimeoutError):
                return  # the device is done, or has sent nothing for too long
            started = time.perf_counter()
            try:
                parsed, result = await self._compute(engine, device, message, None)
            except RequestError as error:
                reply = self._error_reply(message.request_id, error)
                self._count(engine, "InferStream", started, message, reply, error.code)
            else:
                reply = self._reply(engine, parsed, result)
                self._count(engine, "InferStream", started, message, reply,
                            grpc.StatusCode.OK, result)
            yield reply

    async def GetModelInfo(self, request: pb.ModelInfoRequest,  # noqa: N802
                           context: grpc.aio.ServicerContext) -> pb.ModelInfo:
        served = tuple(ServedModel(e.model_id, e.model.spec.name, e.configs)
                       for e in self.models.engines.values())
        return ModelInfo(served, load_report(self.batcher)).to_message()

    async def Probe(self, request: pb.ProbeRequest,  # noqa: N802
                    context: grpc.aio.ServicerContext) -> pb.ProbeReply:
        return probe_reply(len(request.padding), load_report(self.batcher))
