"""What a deployed model is judged against, and the unit it is judged in.

"Deployed == trained" is measured in output quantization steps: the output tensor is a grid of
int8 codes, so a difference of one step is one rounding bin, and anything within one step on
(nearly) every element is the same image. Export, `bench`, `check-opencl --run` and the tests
all use this one metric and this one threshold.

The reference for a QDQ model is ONNX Runtime with graph optimizations off: every node runs as
the ONNX spec defines it, InstanceNorm with exact statistics (`qatie.exact_statistics`: ORT's
float32 sums drift with the image size, enough to refuse a correct file at 384x384). ORT's default session replaces QDQ groups with its own fused integer
kernels (QLinearConv, ...), so it is reported beside, never required (`OrtMode`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path

import numpy as np

# Share of output elements that must lie within one output step of the reference.
WITHIN_ONE_STEP_REQUIRED = 0.999
# Float slack on "one step": |diff| / step is computed in float64 from float32 outputs.
STEP_SLACK = 1e-3


@dataclass(frozen=True)
class Agreement:
    """How closely an output reproduces a reference, in output steps."""

    elements: int
    max_steps: float
    within_one_step: float
    psnr_db: float

    @property
    def passed(self) -> bool:
        return self.within_one_step >= WITHIN_ONE_STEP_REQUIRED

    def as_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return (f"{100 * self.within_one_step:.3f} % of {self.elements} outputs within 1 output step; "
                f"max {self.max_steps:.2f} steps, PSNR {self.psnr_db:.2f} dB")


def agreement(got: np.ndarray, want: np.ndarray, step: float) -> Agreement:
    """Max |diff| in output steps, share within one step, PSNR (peak 1.0: images in [0, 1])."""
    diff = got.astype(np.float64) - want.astype(np.float64)
    steps = np.abs(diff) / step
    mse = float(np.mean(diff**2))
    return Agreement(elements=int(steps.size), max_steps=float(steps.max()),
                     within_one_step=float(np.mean(steps <= 1.0 + STEP_SLACK)),
                     psnr_db=float("inf") if mse == 0 else float(10 * np.log10(1.0 / mse)))


class OrtMode(Enum):
    """How ONNX Runtime runs a QDQ model.

    SPEC: graph optimizations off, every node as the ONNX spec defines it, InstanceNorm's
    statistics exact (the reference).
    DEFAULT: ORT's default session, its fused integer kernels (QLinearConv, QLinearAdd, ...); on
    x86 with AVX2 but no VNNI its u8 x s8 convs and Gemms multiply with vpmaddubsw, which
    saturates the int16 sum of each pair of products (ORT's docs: `reduce_range`), so for
    full-range int8 weights it departs from the spec wherever a pair exceeds 32767.
    EXACT: the fused kernels with `session.x64quantprecision=1`, which moves those convs to
    ORT's exact u8 x u8 kernels (no effect on a VNNI CPU, whose vpdpbusd is exact already).
    Measured on ORT-quantized nets (`bench/standard_cnns.py`, znver3): our builds agree with
    SPEC and EXACT on 100 % of outputs, with DEFAULT on 64.1-100 %; EXACT vs DEFAULT the same
    64.1-100 %, so the gap is ORT's saturation, not rounding."""

    SPEC = "spec"
    DEFAULT = "default"
    EXACT = "exact"


def ort_session(model: Path | bytes, mode: OrtMode = OrtMode.SPEC):
    """An ONNX Runtime CPU session on a file or serialized model, run as `mode` says."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    source = str(model) if isinstance(model, Path) else model
    if mode is OrtMode.SPEC:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        source = _spec_graph(model)
    if mode is OrtMode.EXACT:
        options.add_session_config_entry("session.x64quantprecision", "1")
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def _spec_graph(model: Path | bytes) -> bytes:
    """The serialized model with InstanceNorm's statistics exact (`qatie.exact_statistics`)."""
    import onnx

    from qatie.exact_statistics import with_exact_statistics

    proto = onnx.load_from_string(model.read_bytes() if isinstance(model, Path) else model)
    with_exact_statistics(proto)
    return proto.SerializeToString()


def ort_output(model: Path | bytes, x: np.ndarray, mode: OrtMode = OrtMode.SPEC) -> np.ndarray:
    """The first output of `model` on `x` (fed to its first input)."""
    session = ort_session(model, mode)
    return session.run(None, {session.get_inputs()[0].name: x})[0]


class LiteRtKernels(Enum):
    """Which of LiteRT's int8 kernels run a TFLite model (`OpResolverType` names).

    REFERENCE: the reference kernels (`BUILTIN_REF`), the one family with a definition: the
    reference for our builds. XNNPACK: LiteRT's default (`AUTO`: the builtin kernels with the
    XNNPACK delegate), what an app ships; it rounds differently from the reference."""

    REFERENCE = "BUILTIN_REF"
    XNNPACK = "AUTO"


def litert_output(model: Path, x: np.ndarray, kernels: LiteRtKernels = LiteRtKernels.REFERENCE) -> np.ndarray:
    """The first output of an int8 TFLite `model` on `x` (its own input layout and type) under
    LiteRT's `kernels`, 1 thread."""
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError:
        from qatie.errors import QatieError

        raise QatieError(f"{model}: comparing with the TFLite reference needs LiteRT: pip install "
                         f"'qatie[peers]' (ai-edge-litert)") from None
    interpreter = Interpreter(str(model), experimental_op_resolver_type=OpResolverType[kernels.value], num_threads=1)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def reference_input(height: int, width: int) -> np.ndarray:
    """A real degraded photo (held-out synthetic pair) resized to H x W, as 1 x 3 x H x W float32:
    realistic activations, unlike noise, which saturates every quantizer."""
    from PIL import Image

    from qatie.data.synthetic import synthetic_pairs

    img = synthetic_pairs("heldout")[0].inp
    pil = Image.fromarray(np.round(img * 255).astype(np.uint8)).resize((width, height), Image.BILINEAR)
    chw = (np.asarray(pil, dtype=np.float32) / 255.0).transpose(2, 0, 1)
    return np.ascontiguousarray(chw)[None]
