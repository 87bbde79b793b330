"""A model's boundary as the artifact's manifest records it: names, shapes and dtypes of its
inputs and outputs, and the Q/DQ parameters that sit on them.

A device runs only the `.so`; the deploy commands learn from this description what input to
make and how big one output quantization step is.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from compile.artifact import QuantParams, TensorInfo
from compile.frontend.onnx_loader import LoadedModel


def io_description(model: LoadedModel) -> tuple[list[TensorInfo], list[TensorInfo]]:
    """(inputs, outputs): names, shapes, dtypes, and the Q/DQ parameters at the graph boundary."""
    inits = {i.name: numpy_helper.to_array(i) for i in model.proto.graph.initializer}
    graph = model.proto.graph
    made_by = {o: n for n in graph.node for o in n.output}
    read_by = {}
    for node in graph.node:
        for name in node.input:
            read_by.setdefault(name, node)

    def qparams(node: onnx.NodeProto | None) -> QuantParams | None:
        if node is None or node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            return None
        zp = inits.get(node.input[2]) if len(node.input) > 2 else None
        return QuantParams(
            op=node.op_type,
            scale=np.asarray(inits[node.input[1]]).tolist(),
            zero_point=None if zp is None else np.asarray(zp).tolist(),
            dtype=None if zp is None else str(zp.dtype),
        )

    def describe(value: onnx.ValueInfoProto, node: onnx.NodeProto | None) -> TensorInfo:
        tensor = value.type.tensor_type
        shape = model.input_shapes.get(value.name) or [d.dim_value for d in tensor.shape.dim]
        return TensorInfo(name=value.name, shape=list(shape),
                          dtype=onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name, quant=qparams(node))

    inputs = [describe(v, read_by.get(v.name)) for v in graph.input if v.name not in inits]
    outputs = [describe(v, made_by.get(v.name)) for v in graph.output]
    return inputs, outputs
