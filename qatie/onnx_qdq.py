"""ONNX graph edits and checks for QDQ models, done with the onnx library.

The exporter writes float weights followed by QuantizeLinear -> DequantizeLinear. Deployment
tools (ONNX Runtime's quantizer, TVM's pre-quantized import) expect what ORT itself writes: an
int8 weight initializer read by a DequantizeLinear. The int8 values are recovered from torch's
own fake-quant output, so they are exactly the integers training simulated.
"""

from __future__ import annotations

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from qatie.errors import QatieError
from qatie.quant.layout import INT8_MAX, INT8_MIN


def _initializers(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    return {init.name: init for init in model.graph.initializer}


def fold_weight_quantization(model: onnx.ModelProto) -> int:
    """Replace QuantizeLinear(float constant) with an int8 initializer; returns how many were folded."""
    inits = _initializers(model)
    consumers: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers[name] = consumers.get(name, 0) + 1
    folded = []
    for node in model.graph.node:
        if node.op_type != "QuantizeLinear" or node.input[0] not in inits:
            continue
        weight = numpy_helper.to_array(inits[node.input[0]])
        scale = numpy_helper.to_array(inits[node.input[1]])
        zero_point = numpy_helper.to_array(inits[node.input[2]])
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        q = _torch_quantize(weight, scale, zero_point, axis)
        quantized = numpy_helper.from_array(q.astype(zero_point.dtype), name=node.output[0])
        model.graph.initializer.append(quantized)
        folded.append(node)
        consumers[node.input[0]] -= 1
    for node in folded:
        model.graph.node.remove(node)
    unused = [init for init in model.graph.initializer if consumers.get(init.name, 1) == 0]
    for init in unused:
        model.graph.initializer.remove(init)
    return len(folded)


def _torch_quantize(weight: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, axis: int) -> np.ndarray:
    """The integers torch's fake-quant op simulated: round(fake_quant(w) / s) + zp, exactly."""
    w = torch.from_numpy(np.array(weight, dtype=np.float32))
    s = torch.from_numpy(np.atleast_1d(scale).astype(np.float32))
    zp = torch.from_numpy(np.atleast_1d(zero_point).astype(np.int32))
    if scale.ndim == 0:
        fq = torch.fake_quantize_per_tensor_affine(w, s[0], zp[0], INT8_MIN, INT8_MAX)
        shape = [1] * w.dim()
    else:
        fq = torch.fake_quantize_per_channel_affine(w, s, zp, axis, INT8_MIN, INT8_MAX)
        shape = [-1 if d == axis else 1 for d in range(w.dim())]
    q = torch.round(fq / s.reshape(shape)) + zp.reshape(shape)
    return q.numpy().astype(np.int32)


def producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {out: node for node in model.graph.node for out in node.output}


def check_conv_qdq(model: onnx.ModelProto) -> int:
    """Every Conv must read a DequantizeLinear on its input and on its weight; returns Conv count."""
    made_by = producers(model)
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    for conv in convs:
        for role, name in (("input", conv.input[0]), ("weight", conv.input[1])):
            src = made_by.get(name)
            if src is None or src.op_type != "DequantizeLinear":
                raise QatieError(f"Conv '{conv.name}': its {role} '{name}' is not read through a DequantizeLinear")
    return len(convs)


def qdq_params(model: onnx.ModelProto) -> list[tuple[np.ndarray, np.ndarray]]:
    """(scale, zero point) of every DequantizeLinear, in graph order."""
    inits = _initializers(model)
    return [
        (numpy_helper.to_array(inits[n.input[1]]), numpy_helper.to_array(inits[n.input[2]]))
        for n in model.graph.node
        if n.op_type == "DequantizeLinear"
    ]
