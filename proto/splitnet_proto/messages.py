"""The one place where protobuf messages become splitnet types and back.

    splitnet.v1 protobuf  ◄── to_message() ── dataclass ── from_message() ──►  splitnet types

Servicers and clients use only these dataclasses; no other module touches a ``_pb2`` class.
The exit threshold never crosses the network: the device applies it before sending.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field

from splitnet.config import Config, ConfigError, Placement
from splitnet_proto.v1 import inference_pb2 as pb

MODEL_ID_METADATA = "x-splitnet-model-id"
DEVICE_ID_METADATA = "x-splitnet-device-id"  # the edge's per-device share is keyed on it
AUTH_METADATA = "authorization"


def config_to_message(config: Config) -> pb.Config:
    """A config as the edge needs it (placement, split, width, bits, input codec)."""
    if config.placement is Placement.SPLIT:
        return pb.Config(placement=pb.PLACEMENT_SPLIT, split=config.split or 0,
                         width=config.width or 0, bits=config.bits)
    if config.placement is Placement.OFFLOAD_INPUT:
        return pb.Config(placement=pb.PLACEMENT_OFFLOAD_INPUT,
                         input_codec=config.input_codec or "")
    raise ConfigError("a LOCAL config runs on the device and is never sent")


def config_from_message(message: pb.Config) -> Config:
    """Parse a received config; raises ConfigError when it is malformed."""
    if message.placement == pb.PLACEMENT_SPLIT:
        return Config(split=message.split, width=message.width or None, bits=message.bits)
    if message.placement == pb.PLACEMENT_OFFLOAD_INPUT:
        return Config.offload_input(message.input_codec)
    raise ConfigError(f"unknown placement {message.placement}; use SPLIT or OFFLOAD_INPUT")


@dataclass(frozen=True)
class LoadReport:
    """The server's load as it reports it with every reply and on its ZMQ feed."""

    queue_depth: int = 0
    service_ms: float = 0.0
    queue_ms_recent: float = 0.0
    max_batch_size: int = 1

    def to_message(self) -> pb.LoadReport:
        return pb.LoadReport(queue_depth=self.queue_depth, service_ms=self.service_ms,
                             queue_ms_recent=self.queue_ms_recent,
                             max_batch_size=self.max_batch_size)

    @classmethod
    def from_message(cls, message: pb.LoadReport) -> LoadReport:
        return cls(message.queue_depth, message.service_ms, message.queue_ms_recent,
                   message.max_batch_size)


@dataclass(frozen=True)
class InferRequest:
    request_id: int
    config: Config
    payload: bytes

    def to_message(self) -> pb.InferRequest:
        return pb.InferRequest(request_id=self.request_id,
                               config=config_to_message(self.config), payload=self.payload)

    @classmethod
    def from_message(cls, message: pb.InferRequest) -> InferRequest:
        return cls(message.request_id, config_from_message(message.config), message.payload)


@dataclass(frozen=True)
class RemoteError:
    """An input the edge refused: a grpc.StatusCode value and what was wrong."""

    code: int
    message: str


@dataclass(frozen=True)
class InferReply:
    request_id: int
    config: Config | None
    probabilities: tuple[float, ...] = ()
    label: int = 0
    queue_ms: float = 0.0
    compute_ms: float = 0.0
    batch_size: int = 0
    load: LoadReport = field(default_factory=LoadReport)
    error: RemoteError | None = None
    wire_bytes: int = 0  # size of the received message (set on receipt, never sent)
    model_tag: int = 0  # model_tag() of the model that answered

    def to_message(self) -> pb.InferReply:
        message = pb.InferReply(
            request_id=self.request_id, probabilities=self.probabilities, label=self.label,
            queue_ms=self.queue_ms, compute_ms=self.compute_ms, batch_size=self.batch_size,
            load=self.load.to_message(), model_tag=self.model_tag)
        if self.config is not None:
            message.config.CopyFrom(config_to_message(self.config))
        if self.error is not None:
            message.error.CopyFrom(pb.Error(code=self.error.code, message=self.error.message))
        return message

    @classmethod
    def from_message(cls, message: pb.InferReply) -> InferReply:
        error = (RemoteError(message.error.code, message.error.message)
                 if message.HasField("error") else None)
        config = config_from_message(message.config) if message.HasField("config") else None
        return cls(message.request_id, config, tuple(message.probabilities), message.label,
                   message.queue_ms, message.compute_ms, message.batch_size,
                   LoadReport.from_message(message.load), error, message.ByteSize(),
                   message.model_tag)

    def problem(self, request_id: int, config: Config, model_id: str,
                num_classes: int) -> str | None:
        """Why this reply cannot be the answer to ``request_id`` sent as ``config`` to
        ``model_id`` (a ``num_classes``-way classifier), or None when it can."""
        if self.request_id != request_id:
            return f"reply to request {self.request_id}, not {request_id}"
        if self.model_tag != model_tag(model_id):
            return (f"answered by another model (tag {self.model_tag:08x}, expected "
                    f"{model_tag(model_id):08x} for {model_id})")
        if self.config != config:
            return f"answered as {self.config}, sent as {config}"
        if len(self.probabilities) != num_classes:
            return f"{len(self.probabilities)} probabilities for {num_classes} classes"
        if not all(math.isfinite(p) and 0.0 <= p <= 1.0 for p in self.probabilities) or \
                abs(sum(self.probabilities) - 1.0) > 1e-3:
            return "probabilities that are not a distribution (NaN, out of range, or sum ≠ 1)"
        if not 0 <= self.label < num_classes:
            return f"label {self.label} outside 0..{num_classes - 1}"
        return None


def model_tag(model_id: str) -> int:
    """32 bits that tell models apart on every reply: the first 8 hex digits of the
    weights' hash in a ``name-<hex>`` model id (else a CRC-32 of the id)."""
    suffix = model_id.rsplit("-", 1)[-1]
    try:
        return int(suffix[:8], 16) if len(suffix) >= 8 else zlib.crc32(model_id.encode())
    except ValueError:
        return zlib.crc32(model_id.encode())


@dataclass(frozen=True)
class ServedModel:
    """One model an edge server serves: its id, architecture and accepted configs."""

    model_id: str
    arch: str
    configs: tuple[Config, ...]

    def to_message(self) -> pb.ServedModel:
        return pb.ServedModel(model_id=self.model_id, arch=self.arch,
                              configs=[str(c) for c in self.configs])

    @classmethod
    def from_message(cls, message: pb.ServedModel | pb.ModelInfo) -> ServedModel:
        return cls(message.model_id, message.arch,
                   tuple(Config.parse(c) for c in message.configs))


@dataclass(frozen=True)
class ModelInfo:
    """Every model a server serves, and its load."""

    models: tuple[ServedModel, ...]
    load: LoadReport = field(default_factory=LoadReport)

    def model(self, model_id: str) -> ServedModel | None:
        return next((m for m in self.models if m.model_id == model_id), None)

    def to_message(self) -> pb.ModelInfo:
        message = pb.ModelInfo(models=[m.to_message() for m in self.models],
                               load=self.load.to_message())
        if self.models:  # fields 1-3 repeat the first model for older clients
            first = self.models[0]
            message.model_id, message.arch = first.model_id, first.arch
            message.configs.extend(str(c) for c in first.configs)
        return message

    @classmethod
    def from_message(cls, message: pb.ModelInfo) -> ModelInfo:
        models = tuple(ServedModel.from_message(m) for m in message.models)
        if not models and message.model_id:  # a server that predates `models`
            models = (ServedModel.from_message(message),)
        return cls(models, LoadReport.from_message(message.load))


MAX_PROBE_PADDING_BYTES = 32_000  # the edge accepts probes up to this (and its limit allows)


def probe_request(padding_bytes: int) -> pb.ProbeRequest:
    if not 0 <= padding_bytes <= MAX_PROBE_PADDING_BYTES:
        raise ValueError(f"probe padding {padding_bytes} is outside 0..{MAX_PROBE_PADDING_BYTES}")
    return pb.ProbeRequest(padding=bytes(padding_bytes))


def probe_reply(received_bytes: int, load: LoadReport) -> pb.ProbeReply:
    return pb.ProbeReply(received_bytes=received_bytes, load=load.to_message())


def load_from_probe_reply(message: pb.ProbeReply) -> LoadReport:
    return LoadReport.from_message(message.load)


def model_info_request() -> pb.ModelInfoRequest:
    return pb.ModelInfoRequest()
