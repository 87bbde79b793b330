"""`qatie-compile bench`: the shipped library on each device — output vs the host reference,
and end-to-end latency.

Reference: ONNX Runtime on the QDQ model the artifact was built from, every node as the ONNX
spec defines it (graph optimizations off: ORT's fused QLinear kernels round differently), and
the PyTorch QAT model when a checkpoint is given. Differences are counted in output
quantization steps, the unit in which "deployed == trained" is judged.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from compile.artifact import Artifact
from compile.build import sha256
from compile.deploy import check_device, device_of, latency_stats, load_on_device
from compile.rpc_devices import Device
from qatie.errors import QatieError


@dataclass(frozen=True)
class Timing:
    """Latency protocol: `warmup` untimed runs, then `repeats` timed runs of at least `min_ms` each
    (TVM's time evaluator repeats the call inside one measurement until `min_ms` is reached)."""

    warmup: int = 2
    repeats: int = 10
    min_ms: int = 0


def bench_input(model: dict, npy: Path | None) -> np.ndarray:
    """The given .npy, else a real degraded photo (held-out synthetic pair) at the model's size
    (`model`: a manifest's model description)."""
    spec = model["inputs"][0]
    if npy is not None:
        try:
            x = np.load(npy)
        except (OSError, ValueError) as exc:
            raise QatieError(f"--input {npy}: not a readable .npy file ({exc})") from None
        if list(x.shape) != spec["shape"]:
            raise QatieError(f"--input {npy}: shape {list(x.shape)}, the model takes {spec['shape']}")
        return x.astype(spec["dtype"])
    from qatie.export import reference_input

    *_, height, width = spec["shape"]
    return reference_input(height, width).numpy().astype(spec["dtype"])


def output_step(model: dict) -> float:
    """One quantization step of the output (its Q/DQ scale in a manifest's model description);
    1/255 for a float output."""
    quant = model["outputs"][0].get("quant")
    return float(np.max(quant["scale"])) if quant else 1 / 255


def onnx_reference(artifact: Artifact, onnx_path: Path | None, x: np.ndarray) -> np.ndarray:
    model = artifact.manifest["model"]
    path = onnx_path or Path(model["path"])
    if not path.is_file():
        raise QatieError(f"{path}: the artifact's ONNX model is not there; pass it with --onnx")
    if sha256(path) != model["sha256"]:
        raise QatieError(f"{path}: not the ONNX model this artifact was built from (sha256 differs); pass it with --onnx")
    return ort_reference(path, model["inputs"][0]["name"], x)


def ort_reference(path: Path, input_name: str, x: np.ndarray) -> np.ndarray:
    """ONNX Runtime with graph optimizations off: every node as the ONNX spec defines it."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, {input_name: x})[0]


def pytorch_reference(checkpoint: Path, x: np.ndarray) -> np.ndarray:
    import torch

    from qatie.checkpoint import build_model, load_checkpoint
    from qatie.quant.fake_quant import set_quant_mode

    model = build_model(load_checkpoint(checkpoint))
    set_quant_mode(model, "frozen")
    model.eval()
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def agreement(got: np.ndarray, want: np.ndarray, step: float) -> dict:
    """Max |diff| in output steps, share within one step, PSNR (peak 1.0: images in [0, 1])."""
    steps = np.abs(got.astype(np.float64) - want) / step
    mse = float(np.mean((got.astype(np.float64) - want) ** 2))
    return {"max_steps": float(steps.max()), "within_one_step": float(np.mean(steps <= 1.0 + 1e-3)),
            "psnr_db": float("inf") if mse == 0 else float(10 * np.log10(1.0 / mse))}


def bench_on(device: Device, artifact: Artifact, x: np.ndarray, references: dict[str, np.ndarray],
             timing: Timing) -> dict:
    """Upload, load, run once for the output, then time; one result row."""
    import tvm
    from tvm import relax

    info = check_device(device, artifact)
    executable = load_on_device(device, artifact, artifact.library)
    dev = device_of(device, artifact)
    vm = relax.VirtualMachine(executable, dev)
    inputs = tvm.runtime.tensor(x, dev)
    got = vm["main"](inputs).numpy()
    step = output_step(artifact.manifest["model"])
    vm.set_input("main", inputs)
    for _ in range(timing.warmup):
        vm.invoke_stateful("main")
    timer = vm.time_evaluator("invoke_stateful", dev, number=1, repeat=timing.repeats, min_repeat_ms=timing.min_ms)
    seconds = list(timer("main").results)
    return {**info, "latency": latency_stats(seconds),
            "agreement": {name: agreement(got, want, step) for name, want in references.items()}}
