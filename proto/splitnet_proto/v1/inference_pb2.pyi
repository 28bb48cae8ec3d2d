from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Placement(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PLACEMENT_UNSPECIFIED: _ClassVar[Placement]
    PLACEMENT_SPLIT: _ClassVar[Placement]
    PLACEMENT_OFFLOAD_INPUT: _ClassVar[Placement]
PLACEMENT_UNSPECIFIED: Placement
PLACEMENT_SPLIT: Placement
PLACEMENT_OFFLOAD_INPUT: Placement

class Config(_message.Message):
    __slots__ = ("placement", "split", "width", "bits", "input_codec")
    PLACEMENT_FIELD_NUMBER: _ClassVar[int]
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    BITS_FIELD_NUMBER: _ClassVar[int]
    INPUT_CODEC_FIELD_NUMBER: _ClassVar[int]
    placement: Placement
    split: int
    width: int
    bits: int
    input_codec: str
    def __init__(self, placement: _Optional[_Union[Placement, str]] = ..., split: _Optional[int] = ..., width: _Optional[int] = ..., bits: _Optional[int] = ..., input_codec: _Optional[str] = ...) -> None: ...

class InferRequest(_message.Message):
    __slots__ = ("request_id", "config", "payload")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    config: Config
    payload: bytes
    def __init__(self, request_id: _Optional[int] = ..., config: _Optional[_Union[Config, _Mapping]] = ..., payload: _Optional[bytes] = ...) -> None: ...

class LoadReport(_message.Message):
    __slots__ = ("queue_depth", "service_ms", "queue_ms_recent", "max_batch_size")
    QUEUE_DEPTH_FIELD_NUMBER: _ClassVar[int]
    SERVICE_MS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_MS_RECENT_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    queue_depth: int
    service_ms: float
    queue_ms_recent: float
    max_batch_size: int
    def __init__(self, queue_depth: _Optional[int] = ..., service_ms: _Optional[float] = ..., queue_ms_recent: _Optional[float] = ..., max_batch_size: _Optional[int] = ...) -> None: ...

class Error(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class InferReply(_message.Message):
    __slots__ = ("request_id", "config", "probabilities", "label", "queue_ms", "compute_ms", "batch_size", "load", "error", "model_tag")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    QUEUE_MS_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_MS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    MODEL_TAG_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    config: Config
    probabilities: _containers.RepeatedScalarFieldContainer[float]
    label: int
    queue_ms: float
    compute_ms: float
    batch_size: int
    load: LoadReport
    error: Error
    model_tag: int
    def __init__(self, request_id: _Optional[int] = ..., config: _Optional[_Union[Config, _Mapping]] = ..., probabilities: _Optional[_Iterable[float]] = ..., label: _Optional[int] = ..., queue_ms: _Optional[float] = ..., compute_ms: _Optional[float] = ..., batch_size: _Optional[int] = ..., load: _Optional[_Union[LoadReport, _Mapping]] = ..., error: _Optional[_Union[Error, _Mapping]] = ..., model_tag: _Optional[int] = ...) -> None: ...

class ModelInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ServedModel(_message.Message):
    __slots__ = ("model_id", "arch", "configs")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    ARCH_FIELD_NUMBER: _ClassVar[int]
    CONFIGS_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    arch: str
    configs: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, model_id: _Optional[str] = ..., arch: _Optional[str] = ..., configs: _Optional[_Iterable[str]] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("model_id", "arch", "configs", "load", "models")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    ARCH_FIELD_NUMBER: _ClassVar[int]
    CONFIGS_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    arch: str
    configs: _containers.RepeatedScalarFieldContainer[str]
    load: LoadReport
    models: _containers.RepeatedCompositeFieldContainer[ServedModel]
    def __init__(self, model_id: _Optional[str] = ..., arch: _Optional[str] = ..., configs: _Optional[_Iterable[str]] = ..., load: _Optional[_Union[LoadReport, _Mapping]] = ..., models: _Optional[_Iterable[_Union[ServedModel, _Mapping]]] = ...) -> None: ...

class ProbeRequest(_message.Message):
    __slots__ = ("padding",)
    PADDING_FIELD_NUMBER: _ClassVar[int]
    padding: bytes
    def __init__(self, padding: _Optional[bytes] = ...) -> None: ...

class ProbeReply(_message.Message):
    __slots__ = ("received_bytes", "load")
    RECEIVED_BYTES_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    received_bytes: int
    load: LoadReport
    def __init__(self, received_bytes: _Optional[int] = ..., load: _Optional[_Union[LoadReport, _Mapping]] = ...) -> None: ...
