"""Load a QDQ ONNX file, validate it, and import it into TVM Relax.

Validation happens on the ONNX graph, before TVM sees it, so every problem is reported with the
file, node and option names a user knows: a truncated file, an opset TVM's frontend does not
cover, a dynamic input without `--input-shape`, unsupported op types (all of them at once,
with node names), and Q/DQ pairs whose axis disagree with their scales.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import onnx
from onnx import numpy_helper

from qatie.errors import QatieError

MIN_OPSET, MAX_OPSET = 13, 21
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
    except onnx.checker.ValidationError as exc:
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
    """Relax IRModule with weights as constants (what the QDQ folding pass rewrites)."""
    from tvm.relax.frontend.onnx import from_onnx

    return from_onnx(model.proto, shape_dict=model.input_shapes, keep_params_in_input=False)
