"""Every OpenCL kernel of the shipped model executed on PoCL (a real OpenCL implementation on
this CPU): each kernel checked against its CPU compilation, the output against ONNX Runtime and
the CPU build; and the harness catching TVM's int8 gather-load codegen bug when the workaround
is switched off."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from qatie.references import WITHIN_ONE_STEP_REQUIRED
from tests.helpers import run_console, run_console_script

pytestmark = pytest.mark.pocl
SHIPPED_CHECKPOINT = Path(__file__).resolve().parents[1] / "checkpoints" / "qatie-c16.pt"


@pytest.fixture(scope="module")
def shipped_onnx(tmp_path_factory) -> Path:
    """The shipped checkpoint exported at 32x32: every layer of the real model, small tensors."""
    out = tmp_path_factory.mktemp("shipped") / "qatie-32.onnx"
    result = run_console("export", SHIPPED_CHECKPOINT, "--size", "32x32", "-o", out)
    assert result.returncode == 0, result.stderr
    return out


@pytest.mark.long
def test_shipped_model_runs_on_pocl_for_mali_and_adreno(shipped_onnx):
    result = run_console_script("qatie-compile", "check-opencl", shipped_onnx, "--run", timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    for target in ("mali-opencl", "adreno-opencl"):
        (kernels,) = re.findall(rf"^{target}: ran (\d+) kernel calls; (\d+)/(\d+) kernels agree", result.stdout, re.MULTILINE)
        calls, agreeing, total = map(int, kernels)
        assert calls >= total > 30 and agreeing == total, result.stdout
        for reference in ("onnxruntime", "cpu build"):
            (within,) = re.findall(rf"^{target}: output vs {reference}: max [\d.]+ steps, ([\d.]+) % within", result.stdout, re.MULTILINE)
            assert float(within) >= 100 * WITHIN_ONE_STEP_REQUIRED, result.stdout


@pytest.mark.long
def test_harness_names_the_kernel_tvms_vectorized_int8_gather_breaks(tiny_onnx):
    """With TVM's default (vectorized) GPU code the int8 convs load their weights through the
    broken char-vector gather: the harness must name such a kernel; with our pass config none."""
    from compile.backend.targets import get_target
    from compile.frontend import load_and_fold
    from compile.offline.opencl_run import run_on_opencl

    mod = load_and_fold(tiny_onnx[0]).mod
    x = np.random.default_rng(0).random((1, 3, 40, 36), dtype=np.float32)
    broken = run_on_opencl(mod, get_target("mali-opencl").tvm_target(), [x], config={})
    assert broken.first_disagreeing is not None and "conv2d" in broken.first_disagreeing.name
    assert broken.first_disagreeing.max_int_diff > 1
