"""A TFLite flatbuffer as typed records: tensors with their quantization and constant data,
operators with their builtin options, checked before anything is imported.

The file is read with the `tflite` package (the generated flatbuffer schema TVM's own TFLite
frontend reads too); nothing in it executes. Every problem is one line naming the file and the
operator or tensor: a truncated file, more than one subgraph, custom or unsupported operators
(all of them at once), float arithmetic inside the graph (only the input QUANTIZE and the output
DEQUANTIZE may touch float), asymmetric or per-channel activations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qatie.errors import QatieError

INT32_MAX = 2**31 - 1
NUMPY_TYPES = {"FLOAT32": np.float32, "INT8": np.int8, "UINT8": np.uint8, "INT32": np.int32, "INT64": np.int64,
               "INT16": np.int16, "BOOL": np.bool_, "FLOAT16": np.float16}


@dataclass(frozen=True)
class Quantization:
    """A tensor's affine quantization: real = scale * (code - zero_point), per `axis` when
    there is more than one scale."""

    scale: np.ndarray  # float32
    zero_point: np.ndarray  # int64
    axis: int

    @property
    def per_tensor(self) -> tuple[float, int]:
        return float(self.scale[0]), int(self.zero_point[0])


@dataclass(frozen=True)
class Tensor:
    index: int
    name: str
    shape: tuple[int, ...]
    dtype: str  # numpy name
    quant: Quantization | None
    data: np.ndarray | None  # constants (weights, biases, axes, paddings)


@dataclass(frozen=True)
class Operator:
    index: int
    code: str  # the builtin operator's name, e.g. CONV_2D
    inputs: tuple[int, ...]  # tensor indices; -1 for an omitted optional input
    outputs: tuple[int, ...]
    options: object | None  # the tflite options table (Conv2DOptions, ...), or None

    def describe(self) -> str:
        return f"operator {self.index} ({self.code})"


@dataclass(frozen=True)
class Graph:
    path: Path
    tensors: tuple[Tensor, ...]
    operators: tuple[Operator, ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]


def _enum_names(enum_class) -> dict[int, str]:
    return {value: name for name, value in vars(enum_class).items() if not name.startswith("_")}


def read_graph(path: Path) -> Graph:
    """The file's one subgraph as records; one-line errors for what cannot be a TFLite model."""
    import tflite
    from tflite.BuiltinOperator import BuiltinOperator
    from tflite.BuiltinOptions import BuiltinOptions
    from tflite.TensorType import TensorType

    if not path.is_file():
        raise QatieError(f"{path}: TFLite file not found")
    buffer = path.read_bytes()
    if len(buffer) < 8 or buffer[4:8] != b"TFL3":
        raise QatieError(f"{path}: not a TFLite flatbuffer (no TFL3 identifier); it may be truncated or another format")
    try:
        model = tflite.Model.GetRootAsModel(buffer, 0)
        if model.SubgraphsLength() != 1:
            raise QatieError(f"{path}: {model.SubgraphsLength()} subgraphs; qatie-compile imports single-subgraph "
                             f"models (no control flow)")
        graph = model.Subgraphs(0)
        operator_names, option_names, type_names = (_enum_names(e) for e in (BuiltinOperator, BuiltinOptions,
                                                                               TensorType))
        tensors = tuple(_tensor(model, graph.Tensors(k), k, type_names, path) for k in range(graph.TensorsLength()))
        operators = []
        for k in range(graph.OperatorsLength()):
            op = graph.Operators(k)
            code = model.OperatorCodes(op.OpcodeIndex())
            builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
            name = operator_names.get(builtin, f"builtin {builtin}")
            if name == "CUSTOM":
                name = f"CUSTOM {(code.CustomCode() or b'?').decode(errors='replace')}"
            operators.append(Operator(k, name, tuple(int(i) for i in op.InputsAsNumpy()),
                                      tuple(int(i) for i in op.OutputsAsNumpy()),
                                      _options(op, option_names)))
        inputs = tuple(int(i) for i in graph.InputsAsNumpy())
        outputs = tuple(int(i) for i in graph.OutputsAsNumpy())
    except QatieError:
        raise
    except Exception as exc:  # flatbuffers raises struct errors and IndexError on a damaged file
        raise QatieError(f"{path}: not a readable TFLite model ({type(exc).__name__}: {exc}); it may be truncated") from None
    for index in (*inputs, *outputs, *(i for op in operators for i in (*op.inputs, *op.outputs) if i >= 0)):
        if not 0 <= index < len(tensors):
            raise QatieError(f"{path}: tensor index {index} out of range ({len(tensors)} tensors); the file is damaged")
    for tensor in tensors:
        if math.prod(tensor.shape) > INT32_MAX or (tensor.data is None and min(tensor.shape, default=1) < 1):
            raise QatieError(f"{path}: tensor {tensor.index} ({tensor.name}) has shape {list(tensor.shape)}: empty, "
                             f"dynamic or beyond int32 indexing; qatie-compile needs static shapes that fit")
    return Graph(path, tensors, tuple(operators), inputs, outputs)


def _tensor(model, tensor, index: int, type_names: dict[int, str], path: Path) -> Tensor:
    type_name = type_names.get(tensor.Type(), str(tensor.Type()))
    if type_name not in NUMPY_TYPES:
        raise QatieError(f"{path}: tensor {index} ({tensor.Name().decode(errors='replace')}) has type {type_name}; "
                         f"qatie-compile imports int8 models")
    dtype = np.dtype(NUMPY_TYPES[type_name])
    shape = tuple(int(d) for d in tensor.ShapeAsNumpy()) if tensor.ShapeLength() else ()
    quant = None
    q = tensor.Quantization()
    if q is not None and q.ScaleLength():
        quant = Quantization(q.ScaleAsNumpy().astype(np.float32), q.ZeroPointAsNumpy().astype(np.int64),
                             int(q.QuantizedDimension()))
    data = None
    buffer = model.Buffers(tensor.Buffer())
    if buffer is not None and buffer.DataLength():
        raw = buffer.DataAsNumpy().tobytes()
        expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if len(raw) != expected:
            raise QatieError(f"{path}: tensor {index} ({tensor.Name().decode(errors='replace')}) holds {len(raw)} "
                             f"bytes for shape {list(shape)} of {dtype.name} ({expected}); the file is damaged")
        data = np.frombuffer(raw, dtype).reshape(shape)
    return Tensor(index, tensor.Name().decode(errors="replace"), shape, dtype.name, quant, data)


def _options(op, option_names: dict[int, str]):
    """The operator's builtin options table, decoded with the schema class of its type."""
    import tflite

    name = option_names.get(op.BuiltinOptionsType())
    table = op.BuiltinOptions()
    if table is None or name in (None, "NONE") or not hasattr(tflite, name):
        return None
    options = getattr(tflite, name)()
    options.Init(table.Bytes, table.Pos)
    return options
