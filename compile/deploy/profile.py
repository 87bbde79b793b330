"""`qatie-compile profile`: where one inference's time goes, kernel by kernel, on the device.

TVM 0.27 has no VM profiler, and `VirtualMachine.set_instrument` needs a Python callback in
the same process, so it cannot reach a phone. Instead the artifact ships `kernels.so` (the
very kernels of `model.so` as top-level functions) and the manifest lists each kernel's
arguments and call count: every kernel is timed on the device with TVM's time evaluator on
arguments of its real shapes and dtypes, and multiplied by its call count. The whole model is
timed between the kernels, its runs spread evenly over the kernels' measurement, so the report
can say how far the kernel sum is from it (the VM's own work — allocation, shape checks, calls —
plus cache effects). Timing the model before or after all kernels compared two different
minutes of a device whose speed drifts (other load, thermal throttling): on a CI host whose
other test worker was training, the kernel sum came out 1.88x the end-to-end time.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from compile.artifact import Artifact, KernelArg
from compile.deploy.device import check_device, device_of, load_on_device, set_threads
from compile.deploy.rpc import Device
from compile.deploy.timing import Timing, latency_stats, time_calls, warm_model


def _argument(spec: KernelArg, dev, rng: np.random.Generator):
    """A device tensor of the kernel's shape and dtype. Integer tensors are zero (some are
    indices or table offsets; zero is always in range); float tensors are uniform in [-1, 1).
    Kernel run time does not depend on the values for these dense kernels."""
    import tvm

    if spec.dtype.startswith("float"):
        data = rng.uniform(-1, 1, spec.shape).astype(spec.dtype)
    else:
        data = np.zeros(spec.shape, spec.dtype)
    return tvm.runtime.tensor(data, dev)


def profile_on(device: Device, artifact: Artifact, x: np.ndarray, timing: Timing, threads: int) -> dict:
    """Per-kernel mean times and the end-to-end latency, measured in one session."""
    import tvm
    from tvm import relax

    info = check_device(device, artifact)
    dev = device_of(device, artifact)
    used_threads = set_threads(device, threads)
    kernels_lib = load_on_device(device, artifact, artifact.kernel_library)
    model = warm_model(relax.VirtualMachine(load_on_device(device, artifact, artifact.library), dev), dev, timing,
                       tvm.runtime.tensor(x, dev))
    rng = np.random.default_rng(0)
    # Kernels are timed as they run inside the model, without warm-up calls of their own: each
    # runs once per inference after other kernels evicted its data (the end-to-end time is warm).
    cold = replace(timing, warmup=0)
    kernels = artifact.manifest.kernels.kernels
    rows, model_seconds = [], []
    for index, kernel in enumerate(kernels):
        args = [_argument(spec, dev, rng) for spec in kernel.args]
        mean_s = float(np.median(time_calls(kernels_lib, kernel.name, dev, cold, *args)))
        rows.append({"name": kernel.name, "calls": kernel.calls, "macs": kernel.macs, "bytes": kernel.bytes,
                     "tuned": kernel.tuned, "dot_product": kernel.dot_product, "mean_ms": mean_s * 1e3,
                     "total_ms": mean_s * 1e3 * kernel.calls})
        # the model's `repeats` runs, spread evenly: after kernel i, those due by then
        due = (index + 1) * timing.repeats // len(kernels) - index * timing.repeats // len(kernels)
        model_seconds += [model() for _ in range(due)]
    end_to_end = latency_stats(model_seconds)
    kernel_sum = sum(r["total_ms"] for r in rows)
    for row in rows:
        row["share"] = row["total_ms"] / kernel_sum if kernel_sum else 0.0
        seconds = row["total_ms"] / 1e3
        row["gmac_per_s"] = row["macs"] * row["calls"] / seconds / 1e9 if seconds else 0.0
        row["gb_per_s"] = row["bytes"] * row["calls"] / seconds / 1e9 if seconds else 0.0
    rows.sort(key=lambda r: r["total_ms"], reverse=True)
    return {**info, "threads": used_threads, "kernels": rows, "kernel_sum_ms": kernel_sum, "end_to_end": end_to_end,
            "difference": (end_to_end["median_ms"] - kernel_sum) / end_to_end["median_ms"]}
