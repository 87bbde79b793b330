"""Small ONNX models for compiler tests, built with onnx.helper and ONNX Runtime's quantizer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_static,
)


def _save_net(path: Path, name: str, nodes: list, size: int, out_shape: list[int], weights: dict, seed: int) -> Path:
    """A float graph of `nodes` on a [1, 3, size, size] input `x` with output `y`, its
    initializers drawn from N(0, scale^2) (`weights`: name -> (shape, scale)), checked and saved."""
    rng = np.random.default_rng(seed)
    graph = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
        [numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), w)
         for w, (shape, scale) in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def float_conv_net(path: Path, size: int = 24, seed: int = 0) -> Path:
    """conv3x3 -> relu -> conv3x3/2 (depthwise) -> relu -> conv1x1 -> leaky: 1x1, 3x3, stride 2, groups."""
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2], group=8, name="dwconv2"),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("Conv", ["r2", "w3", "b3"], ["c3"], name="conv3"),
        helper.make_node("LeakyRelu", ["c3"], ["y"], alpha=0.2, name="leaky3"),
    ]
    weights = {"w1": ((8, 3, 3, 3), 0.4), "b1": ((8,), 0.1), "w2": ((8, 1, 3, 3), 0.5), "b2": ((8,), 0.1),
               "w3": ((4, 8, 1, 1), 0.5), "b3": ((4,), 0.1)}
    return _save_net(path, "convnet", nodes, size, [1, 4, size // 2, size // 2], weights, seed)


def float_classifier_net(path: Path, size: int = 16, seed: int = 0) -> Path:
    """conv3x3 -> relu -> global average pool -> flatten -> Gemm (transB) -> relu -> MatMul:
    a classifier head, with both ways ONNX writes a dense layer."""
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("GlobalAveragePool", ["r1"], ["p"], name="pool"),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "w2", "b2"], ["g"], transB=1, name="gemm"),
        helper.make_node("Relu", ["g"], ["r2"], name="relu2"),
        helper.make_node("MatMul", ["r2", "w3"], ["y"], name="matmul"),
    ]
    weights = {"w1": ((16, 3, 3, 3), 0.4), "b1": ((16,), 0.1), "w2": ((24, 16), 0.4), "b2": ((24,), 0.1),
               "w3": ((24, 6), 0.4)}
    return _save_net(path, "classifier", nodes, size, [1, 6], weights, seed)


class _Images(CalibrationDataReader):
    def __init__(self, size: int, count: int = 8) -> None:
        rng = np.random.default_rng(1)
        self._batches = iter([{"x": rng.random((1, 3, size, size), dtype=np.float32)} for _ in range(count)])

    def get_next(self):
        return next(self._batches, None)


def ort_quantized(float_path: Path, out: Path, size: int = 24) -> Path:
    """ONNX Runtime's own QDQ quantization: uint8 activations, int8 per-channel weights."""
    quantize_static(
        str(float_path), str(out), _Images(size), quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
    )
    return out
