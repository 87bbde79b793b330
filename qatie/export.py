"""`qatie export`: the trained network as a QDQ ONNX file, verified against ONNX Runtime.

Exporter path: `torch.onnx.export(..., dynamo=True, opset_version=20)`. With torch 2.13 it
translates `torch.fake_quantize_per_{tensor,channel}_affine` into QuantizeLinear /
DequantizeLinear carrying the frozen scale and zero-point buffers unchanged; torch.ao's fused
fake-quant op, by contrast, has no ONNX translation. The graph is then given int8 weight
initializers (`onnx_qdq.fold_weight_quantization`), simplified with onnxsim, checked with
`onnx.checker`, and run in ONNX Runtime next to the PyTorch model before anything is written
(`qatie.references`: spec semantics required, ORT's default session reported).
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

import onnx
import torch

from qatie.atomic import atomic_path
from qatie.checkpoint import build_model
from qatie.errors import QatieError
from qatie.model import MIN_SIZE, QATIENet
from qatie.onnx_qdq import check_conv_qdq, fold_weight_quantization
from qatie.quant.fake_quant import set_quant_mode
from qatie.quant.layout import IMAGE_SCALE
from qatie.references import Agreement, OrtMode, agreement, ort_output, reference_input

OPSET = 20
INPUT_NAME, OUTPUT_NAME = "input", "output"


def export_model(model: QATIENet, height: int, width: int) -> onnx.ModelProto:
    """Trace, translate to ONNX, fold weight quantization, simplify and check."""
    if min(height, width) < MIN_SIZE:
        raise QatieError(f"--size {height}x{width}: both sides must be >= {MIN_SIZE}")
    model.eval()
    # The exporter narrates every stage on stdout and warns about torch internals; keep our
    # command's output to its own result.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model, (torch.zeros(1, 3, height, width),), dynamo=True, opset_version=OPSET,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], verbose=False,
        )
    proto = program.model_proto
    fold_weight_quantization(proto)
    import onnxsim  # here, not at the top: 0.7 s that a refused checkpoint or size should not wait for

    simplified, ok = onnxsim.simplify(proto)
    if not ok:
        raise RuntimeError("onnxsim could not validate the simplified model")
    onnx.checker.check_model(simplified, full_check=True)
    return simplified


def ort_parity(proto: onnx.ModelProto, model: QATIENet, x: torch.Tensor, mode: OrtMode) -> Agreement:
    """ONNX Runtime on the exported graph vs the PyTorch model on `x`, in output steps: with spec
    semantics this checks that the file means what training simulated (required); ORT's default
    session is reported only."""
    got = ort_output(proto.SerializeToString(), x.numpy(), mode)
    with torch.no_grad():
        want = model(x).numpy()
    return agreement(got, want, IMAGE_SCALE)


def export(ckpt: dict, height: int, width: int, out: Path, fp32: bool) -> tuple[int, Agreement, Agreement]:
    """Export the QAT network (or the float one with `fp32`).

    Returns the Conv count and the parity against ORT as specified (required) and as fused by
    ORT's default optimizations (reported).
    """
    if fp32:
        model = build_model(ckpt, "fp32_model" if ckpt.get("fp32_model") is not None else "model")
        set_quant_mode(model, "off")
    else:
        if ckpt["config"]["train"]["qat_steps"] == 0:
            raise QatieError("this checkpoint has no QAT phase (--qat-steps 0); export it with --fp32")
        model = build_model(ckpt)
        set_quant_mode(model, "frozen")
    proto = export_model(model, height, width)
    convs = sum(n.op_type == "Conv" for n in proto.graph.node) if fp32 else check_conv_qdq(proto)
    x = torch.from_numpy(reference_input(height, width))
    report = ort_parity(proto, model, x, OrtMode.SPEC)
    if not report.passed:
        raise RuntimeError(f"export failed verification, nothing written: ORT vs PyTorch: {report}")
    with atomic_path(out) as tmp:
        onnx.save(proto, tmp)
    return convs, report, ort_parity(proto, model, x, OrtMode.DEFAULT)
