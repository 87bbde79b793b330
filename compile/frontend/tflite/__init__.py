"""int8 TFLite models in: each operator converted to the integer arithmetic of LiteRT's
reference kernels, bit for bit (`converters`, `tables`, `fixed_point`), in channels-first
layout for the backend's packed kernels (`importer`), from a checked flatbuffer (`graph`).

TVM's own Relax TFLite frontend imports quantized operators as float arithmetic between
quantize and dequantize: its build of the paper's model agreed with LiteRT's reference
kernels on 9.5 % of outputs (max 47 steps). Rounding differently at one op moves codes that
every later op then moves further; only the same integer arithmetic op by op stays exact.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from compile.artifact import QuantParams, TensorInfo
from compile.frontend.fold import FoldLog
from compile.frontend.tflite.graph import Graph, Tensor, read_graph
from qatie.errors import QatieError


def check_supported(graph: Graph) -> None:
    """Every operator has a converter: else one line naming all missing ones, with indices."""
    from compile.frontend.tflite.converters import CONVERTERS

    missing: dict[str, list[int]] = {}
    for op in graph.operators:
        if op.code not in CONVERTERS:
            missing.setdefault(op.code, []).append(op.index)
    if missing:
        listed = "; ".join(f"{code} (operator {', '.join(map(str, found[:3]))}{', ...' if len(found) > 3 else ''})"
                           for code, found in sorted(missing.items()))
        raise QatieError(f"{graph.path}: unsupported TFLite operators: {listed}; supported: {', '.join(sorted(CONVERTERS))}")


def _describe(graph: Graph, tensor: Tensor, boundary_op: str) -> TensorInfo:
    """A graph input (read by QUANTIZE) or output (made by DEQUANTIZE): its float side, with
    the parameters of the codes on the other side."""
    ops = [op for op in graph.operators if (tensor.index in op.inputs if boundary_op == "QUANTIZE"
                                           else tensor.index in op.outputs)]
    quant = None
    if ops and ops[0].code == boundary_op:
        codes = graph.tensors[ops[0].outputs[0] if boundary_op == "QUANTIZE" else ops[0].inputs[0]]
        if codes.quant is not None:
            scale, zero = codes.quant.per_tensor
            quant = QuantParams(op=boundary_op, scale=scale, zero_point=zero, dtype=codes.dtype)
    elif tensor.quant is not None:  # an 8-bit boundary
        scale, zero = tensor.quant.per_tensor
        quant = QuantParams(op="none", scale=scale, zero_point=zero, dtype=tensor.dtype)
    return TensorInfo(name=tensor.name, shape=list(tensor.shape), dtype=tensor.dtype, quant=quant, layout="NHWC")


def import_tflite(path: Path, input_shapes: dict):
    """The `compile.frontend.Imported` of an int8 TFLite file."""
    from compile.frontend import Imported
    from compile.frontend.tflite.code_tables import tabulate
    from compile.frontend.tflite.importer import to_relax

    if input_shapes:
        raise QatieError(f"{path}: --input-shape does not apply to a TFLite model (its shapes are fixed in the file; "
                         f"convert it at the size you need)")
    graph = read_graph(path)
    check_supported(graph)
    mod = tabulate(to_relax(graph))
    log = FoldLog(applied=Counter(f"tflite-{op.code.lower().replace('_', '-')}" for op in graph.operators))
    inputs = [_describe(graph, graph.tensors[i], "QUANTIZE") for i in graph.inputs]
    outputs = [_describe(graph, graph.tensors[i], "DEQUANTIZE") for i in graph.outputs]
    return Imported(path, mod, log, inputs, outputs)
