"""Small int8 TFLite models written with the flatbuffer schema (no TensorFlow here): a few
operators with random weights and scales, for operators the paper's model does not use
(depthwise and SAME-padded convs, fully connected, average pool, reshape), checked against
LiteRT's reference kernels like the paper's model."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import flatbuffers
import numpy as np
import tflite
from tflite.BuiltinOperator import BuiltinOperator
from tflite.BuiltinOptions import BuiltinOptions
from tflite.TensorType import TensorType

TYPES = {"float32": TensorType.FLOAT32, "int8": TensorType.INT8, "int32": TensorType.INT32}


@dataclass
class Tensor:
    shape: tuple[int, ...]
    dtype: str = "int8"
    scale: list[float] | None = None
    zero: list[int] | None = None
    axis: int = 0
    data: np.ndarray | None = None


@dataclass
class Op:
    code: str
    inputs: list[int]
    outputs: list[int]
    options: Callable | None = None  # builder -> (BuiltinOptions member, offset)


@dataclass
class Model:
    tensors: list[Tensor] = field(default_factory=list)
    ops: list[Op] = field(default_factory=list)

    def add(self, tensor: Tensor) -> int:
        self.tensors.append(tensor)
        return len(self.tensors) - 1

    def serialize(self, inputs: list[int], outputs: list[int]) -> bytes:
        b = flatbuffers.Builder(4096)
        buffers = [_table(b, tflite.BufferStart, tflite.BufferEnd)]  # buffer 0: the empty one
        tensors = []
        for k, tensor in enumerate(self.tensors):
            buffer = 0
            if tensor.data is not None:
                data = b.CreateNumpyVector(np.ascontiguousarray(tensor.data, tensor.dtype).view(np.uint8).reshape(-1))
                buffers.append(_table(b, tflite.BufferStart, tflite.BufferEnd, (tflite.BufferAddData, data)))
                buffer = len(buffers) - 1
            quant = None
            if tensor.scale is not None:
                scale = b.CreateNumpyVector(np.asarray(tensor.scale, np.float32))
                zero = b.CreateNumpyVector(np.asarray(tensor.zero, np.int64))
                quant = _table(b, tflite.QuantizationParametersStart, tflite.QuantizationParametersEnd,
                               (tflite.QuantizationParametersAddScale, scale),
                               (tflite.QuantizationParametersAddZeroPoint, zero),
                               (tflite.QuantizationParametersAddQuantizedDimension, tensor.axis))
            name, shape = b.CreateString(f"t{k}"), b.CreateNumpyVector(np.asarray(tensor.shape, np.int32))
            parts = [(tflite.TensorAddShape, shape), (tflite.TensorAddType, TYPES[tensor.dtype]),
                     (tflite.TensorAddBuffer, buffer), (tflite.TensorAddName, name)]
            if quant is not None:
                parts.append((tflite.TensorAddQuantization, quant))
            tensors.append(_table(b, tflite.TensorStart, tflite.TensorEnd, *parts))
        codes = list(dict.fromkeys(op.code for op in self.ops))
        code_tables = [_table(b, tflite.OperatorCodeStart, tflite.OperatorCodeEnd,
                              (tflite.OperatorCodeAddDeprecatedBuiltinCode, min(getattr(BuiltinOperator, c), 127)),
                              (tflite.OperatorCodeAddBuiltinCode, getattr(BuiltinOperator, c)),
                              (tflite.OperatorCodeAddVersion, 1)) for c in codes]
        operators = []
        for op in self.ops:
            options = op.options(b) if op.options else None
            parts = [(tflite.OperatorAddOpcodeIndex, codes.index(op.code)),
                     (tflite.OperatorAddInputs, b.CreateNumpyVector(np.asarray(op.inputs, np.int32))),
                     (tflite.OperatorAddOutputs, b.CreateNumpyVector(np.asarray(op.outputs, np.int32)))]
            if options is not None:
                parts += [(tflite.OperatorAddBuiltinOptionsType, options[0]), (tflite.OperatorAddBuiltinOptions, options[1])]
            operators.append(_table(b, tflite.OperatorStart, tflite.OperatorEnd, *parts))
        subgraph = _table(b, tflite.SubGraphStart, tflite.SubGraphEnd,
                          (tflite.SubGraphAddTensors, _vector(b, tensors)),
                          (tflite.SubGraphAddInputs, b.CreateNumpyVector(np.asarray(inputs, np.int32))),
                          (tflite.SubGraphAddOutputs, b.CreateNumpyVector(np.asarray(outputs, np.int32))),
                          (tflite.SubGraphAddOperators, _vector(b, operators)))
        model = _table(b, tflite.ModelStart, tflite.ModelEnd, (tflite.ModelAddVersion, 3),
                       (tflite.ModelAddOperatorCodes, _vector(b, code_tables)),
                       (tflite.ModelAddSubgraphs, _vector(b, [subgraph])), (tflite.ModelAddBuffers, _vector(b, buffers)))
        b.Finish(model, file_identifier=b"TFL3")
        return bytes(b.Output())


def _table(b: flatbuffers.Builder, start, end, *fields) -> int:
    start(b)
    for add, value in fields:
        add(b, value)
    return end(b)


def _vector(b: flatbuffers.Builder, offsets: list[int]) -> int:
    b.StartVector(4, len(offsets), 4)
    for offset in reversed(offsets):
        b.PrependUOffsetTRelative(offset)
    return b.EndVector()


def _options(name: str, **values) -> Callable:
    """A builtin options table of `name` with `values` (AddX methods), for `Op.options`."""

    def build(b: flatbuffers.Builder):
        start, end = getattr(tflite, f"{name}Start"), getattr(tflite, f"{name}End")
        return getattr(BuiltinOptions, name), _table(b, start, end,
                                                     *((getattr(tflite, f"{name}Add{k}"), v) for k, v in values.items()))

    return build


def mobile_block(seed: int = 0, size: int = 12, channels: int = 8, classes: int = 5) -> bytes:
    """float image -> QUANTIZE -> CONV_2D 3x3 SAME + RELU -> DEPTHWISE_CONV_2D 3x3 stride 2
    SAME + RELU6 -> AVERAGE_POOL_2D (whole image) -> RESHAPE -> FULLY_CONNECTED -> DEQUANTIZE,
    random int8 weights with per-channel scales, and float scales everywhere (rounding ties
    of every kind)."""
    rng = np.random.default_rng(seed)
    m = Model()

    def act(shape, scale, zero):
        return m.add(Tensor(shape, scale=[scale], zero=[zero]))

    def weights(shape, axis):
        n = shape[axis]
        return m.add(Tensor(shape, data=rng.integers(-127, 128, shape).astype(np.int8),
                            scale=list(rng.uniform(0.002, 0.02, n)), zero=[0] * n, axis=axis))

    def bias(n, scale):
        return m.add(Tensor((n,), "int32", data=rng.integers(-2000, 2000, n).astype(np.int32), scale=[scale] * n,
                            zero=[0] * n))

    image = m.add(Tensor((1, size, size, 3), "float32"))
    codes = act((1, size, size, 3), 1 / 255, -128)
    conv = act((1, size, size, channels), 0.031, -7)
    half = (size + 1) // 2
    depthwise = act((1, half, half, channels), 0.047, -128)
    pooled = act((1, 1, 1, channels), 0.047, -128)
    flat = act((1, channels), 0.047, -128)
    logits = act((1, classes), 0.11, 3)
    out = m.add(Tensor((1, classes), "float32"))
    w1, w2, w3 = weights((channels, 3, 3, 3), 0), weights((1, 3, 3, channels), 3), weights((classes, channels), 0)
    b1, b2, b3 = bias(channels, 1e-4), bias(channels, 1e-4), bias(classes, 1e-4)
    shape = m.add(Tensor((2,), "int32", data=np.array([1, channels], np.int32)))
    m.ops = [
        Op("QUANTIZE", [image], [codes]),
        Op("CONV_2D", [codes, w1, b1], [conv], _options("Conv2DOptions", Padding=0, StrideW=1, StrideH=1,
                                                        FusedActivationFunction=1, DilationWFactor=1,
                                                        DilationHFactor=1)),
        Op("DEPTHWISE_CONV_2D", [conv, w2, b2], [depthwise],
           _options("DepthwiseConv2DOptions", Padding=0, StrideW=2, StrideH=2, DepthMultiplier=1,
                    FusedActivationFunction=3, DilationWFactor=1, DilationHFactor=1)),
        Op("AVERAGE_POOL_2D", [depthwise], [pooled], _options("Pool2DOptions", Padding=1, StrideW=1, StrideH=1,
                                                               FilterWidth=half, FilterHeight=half)),
        Op("RESHAPE", [pooled, shape], [flat]),
        Op("FULLY_CONNECTED", [flat, w3, b3], [logits], _options("FullyConnectedOptions")),
        Op("DEQUANTIZE", [logits], [out]),
    ]
    return m.serialize([image], [out])
