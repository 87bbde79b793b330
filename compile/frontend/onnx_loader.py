"""Load a QDQ ONNX file, validate it, and import it into TVM Relax.

Validation happens on the ONNX graph, before TVM sees it, so every problem is reported with the
file, node and option names a user knows: a truncated file, an opset TVM's frontend does not
cover, a dynamic input without `--input-shape`, unsupported op types (all of them at once,
with node names), and Q/DQ pairs whose axis disagree with their scales.
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import onnx
from onnx import numpy_helper

from qatie.errors import QatieError

MIN_OPSET, MAX_OPSET = 13, 21
INT32_MAX = 2**31 - 1
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


@dataclass
class LoadedModel:
    path: Path
    proto: onnx.ModelProto
    input_shapes: dict[str, list[int]]


def load_onnx(path: Path, input_shapes: dict[str, list[int]] | None = None) -> LoadedModel:
    """Read and check `path`; simplify with onnxsim when the graph was not simplified."""
    if not path.is_file():
        raise QatieError(f"{path}: ONNX file not found")
    try:
        proto = onnx.load(str(path))
    except Exception as exc:  # protobuf's DecodeError and friends
        raise QatieError(f"{path}: not a readable ONNX file ({_first_line(exc)}); it may be truncated") from None
    _check_opset(path, proto)
    try:
        onnx.checker.check_model(proto)
    except (onnx.checker.ValidationError, ValueError) as exc:  # ValueError: undecodable strings too
        raise QatieError(f"{path}: onnx.checker rejects the model: {_first_line(exc)}") from None
    shapes = _static_input_shapes(path, proto, input_shapes or {})
    _check_supported_ops(path, proto)
    _check_qdq_axes(path, proto)
    if _needs_simplify(proto):
        proto = _simplify(path, proto, shapes)
    return LoadedModel(path, proto, shapes)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _check_opset(path: Path, proto: onnx.ModelProto) -> None:
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None or not MIN_OPSET <= opset <= MAX_OPSET:
        raise QatieError(
            f"{path}: opset {opset} is not supported (need {MIN_OPSET}..{MAX_OPSET}); "
            f"re-export with opset_version=20 or convert with onnx.version_converter"
        )


def _static_input_shapes(path: Path, proto: onnx.ModelProto, given: dict[str, list[int]]) -> dict[str, list[int]]:
    initializers = {init.name for init in proto.graph.initializer}
    shapes: dict[str, list[int]] = {}
    for value in proto.graph.input:
        if value.name in initializers:
            continue
        dims = value.type.tensor_type.shape.dim
        if value.name in given:
            if len(given[value.name]) != len(dims):
                raise QatieError(f"{path}: --input-shape for '{value.name}' has rank {len(given[value.name])}, the model {len(dims)}")
            if min(given[value.name]) < 1:
                raise QatieError(f"{path}: --input-shape {value.name}:{'x'.join(map(str, given[value.name]))} has an "
                                 f"empty dimension; every dimension must be >= 1")
            shapes[value.name] = list(given[value.name])
            continue
        if any(not d.HasField("dim_value") or d.dim_value <= 0 for d in dims):
            shown = "x".join(d.dim_param or "?" if not d.HasField("dim_value") else str(d.dim_value) for d in dims)
            raise QatieError(
                f"{path}: input '{value.name}' has a dynamic shape ({shown}); "
                f"fix it with --input-shape {value.name}:1x3x256x256"
            )
        shapes[value.name] = [d.dim_value for d in dims]
    unknown = set(given) - set(shapes)
    if unknown:
        raise QatieError(f"{path}: --input-shape names unknown input(s) {sorted(unknown)}; inputs are {sorted(shapes)}")
    return shapes


def _check_supported_ops(path: Path, proto: onnx.ModelProto) -> None:
    from compile.tvm_private import onnx_converters

    supported = onnx_converters()
    missing: dict[str, list[str]] = {}
    for node in proto.graph.node:
        if node.op_type not in supported or node.domain not in ("", "ai.onnx"):
            missing.setdefault(node.op_type, []).append(node.name or "<unnamed>")
    if missing:
        listed = "; ".join(f"{op} ({', '.join(names[:3])}{', ...' if len(names) > 3 else ''})" for op, names in sorted(missing.items()))
        raise QatieError(f"{path}: unsupported op types: {listed}")


def _check_qdq_axes(path: Path, proto: onnx.ModelProto) -> None:
    """Per-channel Q/DQ: the scale length must match the input's size along `axis`."""
    inits = {init.name: init for init in proto.graph.initializer}
    for node in proto.graph.node:
        if node.op_type not in QDQ_OPS or node.input[1] not in inits:
            continue
        scale = numpy_helper.to_array(inits[node.input[1]])
        if scale.ndim == 0 or scale.size == 1:
            continue
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        data = inits.get(node.input[0])
        if data is not None:
            dims = list(data.dims)
            if not -len(dims) <= axis < len(dims) or dims[axis] != scale.size:
                raise QatieError(
                    f"{path}: {node.op_type} '{node.name}' has {scale.size} scales but its input "
                    f"'{node.input[0]}' has shape {dims} along axis {axis}; the Q/DQ axis is wrong"
                )


def _needs_simplify(proto: onnx.ModelProto) -> bool:
    return not any(p.key == "onnxsim" for p in proto.metadata_props) and any(
        n.op_type in ("Constant", "Identity", "Shape") for n in proto.graph.node
    )


def _simplify(path: Path, proto: onnx.ModelProto, shapes: dict[str, list[int]]) -> onnx.ModelProto:
    import onnxsim

    simplified, ok = onnxsim.simplify(proto, overwrite_input_shapes=shapes)
    if not ok:
        raise QatieError(f"{path}: onnxsim could not validate the simplified graph; simplify it yourself and retry")
    return simplified


def to_relax(model: LoadedModel):
    """Relax IRModule with weights as constants (what the QDQ folding pass rewrites).

    TVM's frontend checks shapes while it imports; a model that is valid ONNX but not at these
    input sizes (a pooling window larger than its input, say) fails there with a traceback, so
    its first line becomes the user's error. Tensors too large to index with int32 (TVM's index
    type) or to hold in this machine's memory are refused here, before any compilation."""
    from tvm.relax.frontend.onnx import from_onnx

    error = None
    with _quiet_native_output():
        try:
            mod = from_onnx(model.proto, shape_dict=model.input_shapes, keep_params_in_input=False)
        except Exception as exc:  # the frontend raises TVM, Python and assertion errors alike
            error = _first_line(exc)
        gc.collect()  # the failed import's block builder warns when destroyed: let that happen here
    if error is not None:
        raise QatieError(f"{model.path}: TVM's ONNX frontend cannot import the model at input shape(s) "
                         f"{_shapes_text(model.input_shapes)}: {error}; check --input-shape")
    _check_tensor_sizes(model, mod)
    return mod


@contextlib.contextmanager
def _quiet_native_output():
    """Silence stdout and stderr at the file-descriptor level: on a failed import TVM's frontend
    prints the failing operator's inputs and its C++ block builder logs a warning, which would
    bury the one-line error. What they printed is dropped; the exception carries the cause."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(os.devnull, "w") as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def _shapes_text(shapes: dict[str, list[int]]) -> str:
    return ", ".join(f"{name}:{'x'.join(map(str, dims))}" for name, dims in shapes.items())


def _check_tensor_sizes(model: LoadedModel, mod) -> None:
    """The largest tensor of the imported graph must fit int32 indexing and this machine's memory."""
    import psutil
    import tvm
    from tvm import relax

    largest: tuple[int, int, str] = (0, 0, "")

    def visit(expr) -> None:
        nonlocal largest
        ty = getattr(expr, "ty", None)
        if not isinstance(expr, relax.Call) or not isinstance(ty, relax.TensorType) or ty.shape is None:
            return
        elements = math.prod(int(d) for d in ty.shape if isinstance(d, tvm.tirx.IntImm))
        if elements > largest[0]:
            largest = (elements, elements * tvm.DataType(ty.dtype).bits // 8, getattr(expr.op, "name", "?"))

    for func in mod.functions.values():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    elements, size, op = largest
    shapes = _shapes_text(model.input_shapes)
    if elements > INT32_MAX:
        raise QatieError(f"{model.path}: at input shape(s) {shapes} the largest tensor ({op}) has {elements:,} "
                         f"elements, beyond int32 indexing ({INT32_MAX:,}); use a smaller --input-shape")
    memory = psutil.virtual_memory().total
    if size > memory:
        raise QatieError(f"{model.path}: at input shape(s) {shapes} the largest tensor ({op}) needs "
                         f"{size / 2**30:.1f} GiB, more than this machine's {memory / 2**30:.1f} GiB; "
                         f"use a smaller --input-shape")
