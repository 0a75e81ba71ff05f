from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DataType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DATA_TYPE_UNSPECIFIED: _ClassVar[DataType]
    DATA_TYPE_FLOAT32: _ClassVar[DataType]
    DATA_TYPE_FLOAT64: _ClassVar[DataType]
    DATA_TYPE_FLOAT16: _ClassVar[DataType]
    DATA_TYPE_UINT8: _ClassVar[DataType]
    DATA_TYPE_INT32: _ClassVar[DataType]
    DATA_TYPE_INT64: _ClassVar[DataType]

class Mode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODE_UNSPECIFIED: _ClassVar[Mode]
    MODE_DETERMINISTIC: _ClassVar[Mode]
    MODE_MC_DROPOUT: _ClassVar[Mode]

class Task(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_UNSPECIFIED: _ClassVar[Task]
    TASK_CLASSIFICATION: _ClassVar[Task]
    TASK_REGRESSION: _ClassVar[Task]
DATA_TYPE_UNSPECIFIED: DataType
DATA_TYPE_FLOAT32: DataType
DATA_TYPE_FLOAT64: DataType
DATA_TYPE_FLOAT16: DataType
DATA_TYPE_UINT8: DataType
DATA_TYPE_INT32: DataType
DATA_TYPE_INT64: DataType
MODE_UNSPECIFIED: Mode
MODE_DETERMINISTIC: Mode
MODE_MC_DROPOUT: Mode
TASK_UNSPECIFIED: Task
TASK_CLASSIFICATION: Task
TASK_REGRESSION: Task

class Tensor(_message.Message):
    __slots__ = ("shape", "dtype", "data")
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    shape: _containers.RepeatedScalarFieldContainer[int]
    dtype: DataType
    data: bytes
    def __init__(self, shape: _Optional[_Iterable[int]] = ..., dtype: _Optional[_Union[DataType, str]] = ..., data: _Optional[bytes] = ...) -> None: ...

class PredictRequest(_message.Message):
    __slots__ = ("model", "version", "input", "mode", "mc_samples", "seed", "outputs")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    MC_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: str
    input: Tensor
    mode: Mode
    mc_samples: int
    seed: int
    outputs: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, model: _Optional[str] = ..., version: _Optional[str] = ..., input: _Optional[_Union[Tensor, _Mapping]] = ..., mode: _Optional[_Union[Mode, str]] = ..., mc_samples: _Optional[int] = ..., seed: _Optional[int] = ..., outputs: _Optional[_Iterable[str]] = ...) -> None: ...

class PredictResponse(_message.Message):
    __slots__ = ("model", "version", "seed", "probabilities", "predicted_class", "logits", "std", "predictive_entropy", "mutual_information", "samples", "prediction", "mean")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_CLASS_FIELD_NUMBER: _ClassVar[int]
    LOGITS_FIELD_NUMBER: _ClassVar[int]
    STD_FIELD_NUMBER: _ClassVar[int]
    PREDICTIVE_ENTROPY_FIELD_NUMBER: _ClassVar[int]
    MUTUAL_INFORMATION_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    PREDICTION_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: str
    seed: int
    probabilities: Tensor
    predicted_class: Tensor
    logits: Tensor
    std: Tensor
    predictive_entropy: Tensor
    mutual_information: Tensor
    samples: Tensor
    prediction: Tensor
    mean: Tensor
    def __init__(self, model: _Optional[str] = ..., version: _Optional[str] = ..., seed: _Optional[int] = ..., probabilities: _Optional[_Union[Tensor, _Mapping]] = ..., predicted_class: _Optional[_Union[Tensor, _Mapping]] = ..., logits: _Optional[_Union[Tensor, _Mapping]] = ..., std: _Optional[_Union[Tensor, _Mapping]] = ..., predictive_entropy: _Optional[_Union[Tensor, _Mapping]] = ..., mutual_information: _Optional[_Union[Tensor, _Mapping]] = ..., samples: _Optional[_Union[Tensor, _Mapping]] = ..., prediction: _Optional[_Union[Tensor, _Mapping]] = ..., mean: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelSummary]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelSummary, _Mapping]]] = ...) -> None: ...

class ModelSummary(_message.Message):
    __slots__ = ("name", "versions", "latest", "ready")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    LATEST_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    name: str
    versions: _containers.RepeatedScalarFieldContainer[str]
    latest: str
    ready: bool
    def __init__(self, name: _Optional[str] = ..., versions: _Optional[_Iterable[str]] = ..., latest: _Optional[str] = ..., ready: _Optional[bool] = ...) -> None: ...

class GetModelRequest(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class TensorSpec(_message.Message):
    __slots__ = ("name", "dtype", "shape")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    dtype: DataType
    shape: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, name: _Optional[str] = ..., dtype: _Optional[_Union[DataType, str]] = ..., shape: _Optional[_Iterable[int]] = ...) -> None: ...

class Normalisation(_message.Message):
    __slots__ = ("mean", "std", "in_graph")
    MEAN_FIELD_NUMBER: _ClassVar[int]
    STD_FIELD_NUMBER: _ClassVar[int]
    IN_GRAPH_FIELD_NUMBER: _ClassVar[int]
    mean: float
    std: float
    in_graph: bool
    def __init__(self, mean: _Optional[float] = ..., std: _Optional[float] = ..., in_graph: _Optional[bool] = ...) -> None: ...

class Dropout(_message.Message):
    __slots__ = ("flavour", "retain")
    FLAVOUR_FIELD_NUMBER: _ClassVar[int]
    RETAIN_FIELD_NUMBER: _ClassVar[int]
    flavour: str
    retain: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, flavour: _Optional[str] = ..., retain: _Optional[_Iterable[float]] = ...) -> None: ...

class MonteCarlo(_message.Message):
    __slots__ = ("max_samples", "rng")
    MAX_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    RNG_FIELD_NUMBER: _ClassVar[int]
    max_samples: int
    rng: str
    def __init__(self, max_samples: _Optional[int] = ..., rng: _Optional[str] = ...) -> None: ...

class Onnx(_message.Message):
    __slots__ = ("opset", "ir_version")
    OPSET_FIELD_NUMBER: _ClassVar[int]
    IR_VERSION_FIELD_NUMBER: _ClassVar[int]
    opset: int
    ir_version: int
    def __init__(self, opset: _Optional[int] = ..., ir_version: _Optional[int] = ...) -> None: ...

class GetModelResponse(_message.Message):
    __slots__ = ("name", "version", "input", "value_range", "normalisation", "classes", "dropout", "max_norm", "metrics", "onnx", "mc", "deterministic_outputs", "mc_outputs", "manifest_json", "task", "targets")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    VALUE_RANGE_FIELD_NUMBER: _ClassVar[int]
    NORMALISATION_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    DROPOUT_FIELD_NUMBER: _ClassVar[int]
    MAX_NORM_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    ONNX_FIELD_NUMBER: _ClassVar[int]
    MC_FIELD_NUMBER: _ClassVar[int]
    DETERMINISTIC_OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    MC_OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_JSON_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    input: TensorSpec
    value_range: _containers.RepeatedScalarFieldContainer[float]
    normalisation: Normalisation
    classes: _containers.RepeatedScalarFieldContainer[str]
    dropout: Dropout
    max_norm: _containers.RepeatedScalarFieldContainer[float]
    metrics: _containers.ScalarMap[str, float]
    onnx: Onnx
    mc: MonteCarlo
    deterministic_outputs: _containers.RepeatedCompositeFieldContainer[TensorSpec]
    mc_outputs: _containers.RepeatedCompositeFieldContainer[TensorSpec]
    manifest_json: str
    task: Task
    targets: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., input: _Optional[_Union[TensorSpec, _Mapping]] = ..., value_range: _Optional[_Iterable[float]] = ..., normalisation: _Optional[_Union[Normalisation, _Mapping]] = ..., classes: _Optional[_Iterable[str]] = ..., dropout: _Optional[_Union[Dropout, _Mapping]] = ..., max_norm: _Optional[_Iterable[float]] = ..., metrics: _Optional[_Mapping[str, float]] = ..., onnx: _Optional[_Union[Onnx, _Mapping]] = ..., mc: _Optional[_Union[MonteCarlo, _Mapping]] = ..., deterministic_outputs: _Optional[_Iterable[_Union[TensorSpec, _Mapping]]] = ..., mc_outputs: _Optional[_Iterable[_Union[TensorSpec, _Mapping]]] = ..., manifest_json: _Optional[str] = ..., task: _Optional[_Union[Task, str]] = ..., targets: _Optional[_Iterable[str]] = ...) -> None: ...
