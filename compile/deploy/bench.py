"""`qatie-compile bench`: the shipped library on each device — output vs the host reference,
and end-to-end latency.

References: the runtime that defines the source model (`SOURCE_REFERENCES`: ONNX Runtime with
spec semantics for a QDQ ONNX file, LiteRT's reference kernels for an int8 TFLite file), and
the PyTorch QAT model when a checkpoint is given (`qatie.references`). Differences are counted
in output quantization steps, the unit in which "deployed == trained" is judged.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from compile.artifact import Artifact
from compile.deploy.device import check_device, device_of, load_on_device, set_threads
from compile.deploy.rpc import Device
from compile.deploy.timing import Timing, latency_stats, time_model
from qatie.references import litert_output, ort_output

# model suffix -> (reference name, its output on an input)
SOURCE_REFERENCES = {".onnx": ("onnxruntime", ort_output), ".tflite": ("litert-reference", litert_output)}


def reference_output(model: Path, x: np.ndarray) -> tuple[str, np.ndarray]:
    """(name, output) of the runtime that defines `model`'s format, on `x`."""
    name, output = SOURCE_REFERENCES[model.suffix.lower()]
    return name, output(model, x)


def source_reference(artifact: Artifact, model_path: Path | None, x: np.ndarray) -> dict[str, np.ndarray]:
    """The defining runtime's output on the very model file the artifact was built from."""
    return dict([reference_output(artifact.source_model(model_path), x)])


def pytorch_reference(checkpoint: Path, x: np.ndarray) -> np.ndarray:
    import torch

    from qatie.checkpoint import build_model, load_checkpoint
    from qatie.quant.fake_quant import set_quant_mode

    model = build_model(load_checkpoint(checkpoint))
    set_quant_mode(model, "frozen")
    model.eval()
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def bench_on(device: Device, artifact: Artifact, x: np.ndarray, references: dict[str, np.ndarray],
             timing: Timing, threads: int) -> dict:
    """Upload, load, run once for the output, then time; one result row."""
    import tvm
    from tvm import relax

    info = check_device(device, artifact)
    executable = load_on_device(device, artifact, artifact.library)
    dev = device_of(device, artifact)
    used_threads = set_threads(device, threads)
    vm = relax.VirtualMachine(executable, dev)
    inputs = tvm.runtime.tensor(x, dev)
    output = artifact.manifest.model.outputs[0]
    got = vm["main"](inputs).numpy()
    seconds = time_model(vm, dev, timing, inputs)
    return {**info, "threads": used_threads, "latency": latency_stats(seconds),
            "agreement": {name: output.agreement(got, want).as_dict() for name, want in references.items()}}
