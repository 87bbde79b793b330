"""`qatie export`: the trained network as a QDQ ONNX file, verified against ONNX Runtime.

Exporter path: `torch.onnx.export(..., dynamo=True, opset_version=20)`. With torch 2.13 it
translates `torch.fake_quantize_per_{tensor,channel}_affine` into QuantizeLinear /
DequantizeLinear carrying the frozen scale and zero-point buffers unchanged; torch.ao's fused
fake-quant op, by contrast, has no ONNX translation. The graph is then given int8 weight
initializers (`onnx_qdq.fold_weight_quantization`), simplified with onnxsim, checked with
`onnx.checker`, and run in ONNX Runtime next to the PyTorch model before anything is written
(`Verification`: spec semantics required, with InstanceNorm in one arithmetic on both sides;
PyTorch's own norm arithmetic and ORT's default session reported).
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import onnx
import torch
from torch import nn

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


@dataclass(frozen=True)
class Verification:
    """The exported file on a real photo next to the trained network, in output steps.

    `required`: ORT with spec semantics vs PyTorch with every InstanceNorm in the reference's
    arithmetic (exact statistics, then the spec's float32 formula: `qatie.exact_statistics`), so
    that the file and the network compute the same float operations and any difference is the
    file's. `as_trained`: the same file vs PyTorch's own InstanceNorm arithmetic (float64 sums,
    then x * alpha + beta), reported: each norm's statistics span the whole image, so one code
    flipped by a float32 ulp moves a whole channel, and at 512x512 a c=32 checkpoint ends 83.8 %
    within one step of it while the compiled model equals the file bit for bit. `fused`: ORT's
    default session (its fused int8 kernels) vs PyTorch's own arithmetic, reported."""

    required: Agreement
    as_trained: Agreement
    fused: Agreement


def _spec_norm(module: nn.InstanceNorm2d, inputs: tuple[torch.Tensor], _output: torch.Tensor) -> torch.Tensor:
    """Forward hook: the norm's output in the reference's arithmetic, op for op as the ONNX
    graph of `qatie.exact_statistics` computes it (float64 two-pass statistics rounded once,
    then sub, div, mul, add in float32: each correctly rounded, so PyTorch and ORT agree bit for
    bit)."""
    (x,) = inputs
    axes = tuple(range(2, x.dim()))
    x64 = x.double()
    mean64 = x64.mean(axes, keepdim=True)
    variance64 = ((x64 - mean64) ** 2).mean(axes, keepdim=True)
    epsilon = torch.tensor(module.eps, dtype=x.dtype)
    normalized = (x - mean64.to(x.dtype)) / torch.sqrt(variance64.to(x.dtype) + epsilon)
    if not module.affine:  # exported with scale 1 and bias 0: x * 1 + 0 is x in float32
        return normalized
    channel = (-1,) + (1,) * (x.dim() - 2)
    return normalized * module.weight.reshape(channel) + module.bias.reshape(channel)


@contextlib.contextmanager
def spec_norms(model: nn.Module):
    """Every InstanceNorm2d of `model` computes `_spec_norm` while inside."""
    hooks = [m.register_forward_hook(_spec_norm) for m in model.modules() if isinstance(m, nn.InstanceNorm2d)]
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()


def verify(proto: onnx.ModelProto, model: QATIENet, x: torch.Tensor) -> Verification:
    """ONNX Runtime on the exported graph vs the PyTorch model on `x` (see `Verification`)."""
    serialized, inputs = proto.SerializeToString(), x.numpy()
    spec = ort_output(serialized, inputs, OrtMode.SPEC)
    with torch.no_grad():
        with spec_norms(model):
            same_arithmetic = model(x).numpy()
        as_trained = model(x).numpy()
    return Verification(required=agreement(spec, same_arithmetic, IMAGE_SCALE),
                        as_trained=agreement(spec, as_trained, IMAGE_SCALE),
                        fused=agreement(ort_output(serialized, inputs, OrtMode.DEFAULT), as_trained, IMAGE_SCALE))


def export(ckpt: dict, height: int, width: int, out: Path, fp32: bool) -> tuple[int, Verification]:
    """Export the QAT network (or the float one with `fp32`); returns the Conv count and the
    verification. Nothing is written unless the required agreement holds."""
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
    verification = verify(proto, model, torch.from_numpy(reference_input(height, width)))
    if not verification.required.passed:
        raise QatieError(f"--size {height}x{width}: the exported file does not compute what the network does, "
                         f"nothing written: ORT vs PyTorch: {verification.required}")
    with atomic_path(out) as tmp:
        onnx.save(proto, tmp)
    return convs, verification
