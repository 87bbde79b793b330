"""The ARM cycle estimate's method checked where truth exists: on this x86 host, kernel by kernel.

`qatie-compile estimate` counts the blocks one inference executes under qemu and costs each with
llvm-mca's model of a core. No ARM device is here to check that against; this host is. The same
method is applied to the shipped model's x86-host build (untuned): one inference under
qemu-x86_64 (`-cpu max`: qemu 7.2's TCG runs AVX2 and FMA) with the same plugin, each block
placed in its kernel by `model.so`'s symbols and costed by llvm-mca with this host's core model
(`-mcpu` = LLVM's name for it), then compared with each kernel's measured time (the `profile`
protocol, 1 thread). Reported: the Spearman rank correlation of estimated cycles and measured
time, and each kernel's ratio (cycles per measured nanosecond, an implied clock) and its spread,
for conv kernels and the rest. Writes estimate_validation.{json,md,png}.

    python bench/estimate_validation.py
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import click
import numpy as np
from host_latency import write_report

os.environ.setdefault("TVM_NUM_THREADS", "1")  # before TVM starts its pool

ROOT = Path(__file__).resolve().parents[1]
# One inference of the library in TVM's runtime, in a Python process run under qemu-x86_64.
RUN_ONCE = """
import sys, numpy as np, tvm
from tvm import relax
library, inputs, maps = sys.argv[1:]
dev = tvm.cpu(0)
relax.VirtualMachine(tvm.runtime.load_module(library), dev)["main"](tvm.runtime.tensor(np.load(inputs), dev))
open(maps, "w").write(open("/proc/self/maps").read())
"""


def _blocks_under_qemu(library: Path, x: np.ndarray) -> list:
    from compile.offline.block_profile import (
        ensure_plugin,
        plugin_arguments,
        read_blocks,
    )

    with tempfile.TemporaryDirectory(prefix="qatie-validate-") as work:
        work = Path(work)
        np.save(work / "x.npy", x)
        blocks, maps = work / "blocks.txt", work / "maps.txt"
        command = ["qemu-x86_64", "-cpu", "max", "-plugin", ",".join(plugin_arguments(ensure_plugin(), blocks)),
                   sys.executable, "-c", RUN_ONCE, str(library), str(work / "x.npy"), str(maps)]
        subprocess.run(command, check=True, env={**os.environ, "TVM_NUM_THREADS": "1"})
        return read_blocks(blocks, maps.read_text())


def _estimate(artifact, x: np.ndarray, cpu: str) -> tuple[dict[str, float], str]:
    """Estimated cycles of each kernel (all its calls) and the cost model's label."""
    from compile.offline.code_map import CodeMap
    from compile.offline.cycle_model import Core, CycleModel

    names = {k.name for k in artifact.manifest.kernels.kernels}
    code = CodeMap.of(artifact.library, names)
    per_kernel = defaultdict(list)
    for block in _blocks_under_qemu(artifact.library, x):
        per_kernel[code.kernel_of(block)].append(block)
    model = CycleModel(Core(cpu, frozenset(), 1.0, "max", triple="x86_64", mattr=""))
    cycles = model.totals({name: blocks for name, blocks in per_kernel.items() if name})  # not the interpreter's
    return ({name: cycles.get(name, 0.0) for name in names},
            model.label.replace("qemu block counts", "qemu-x86_64 block counts"))


def _spread(ratios: list[float]) -> dict:
    values = np.asarray(ratios)
    median = float(np.median(values))
    return {"kernels": int(values.size), "median_cycles_per_ns": median,
            "p10_over_median": float(np.percentile(values, 10) / median),
            "p90_over_median": float(np.percentile(values, 90) / median),
            "min_over_median": float(values.min() / median), "max_over_median": float(values.max() / median)}


def _markdown(report: dict) -> str:
    lines = [f"Measured with `{report['command']}` on {report['cpu']} (1 thread): {report['model']}.",
             (f"Estimate: {report['label']}. Measured: per-kernel median of {report['repeats']} timed runs "
             f"(`profile` protocol, min {report['min_ms']} ms each)."), "",
             (f"Spearman rank correlation of estimated cycles and measured time, all {report['all']['kernels']} kernels: "
             f"**{report['spearman']['all']:.3f}**; conv kernels: **{report['spearman']['conv']:.3f}**; "
             f"the rest: **{report['spearman']['other']:.3f}**."), "",
             "| kernels | count | median cycles per measured ns | p10 / median | p90 / median | min / median | max / median |",
             "|---|---|---|---|---|---|---|"]
    for group in ("all", "conv", "other"):
        s = report[group]
        lines.append(f"| {group} | {s['kernels']} | {s['median_cycles_per_ns']:.2f} | {s['p10_over_median']:.2f} | "
                     f"{s['p90_over_median']:.2f} | {s['min_over_median']:.2f} | {s['max_over_median']:.2f} |")
    lines += ["", (f"Whole model: estimated {report['total_cycles'] / 1e6:.1f} M cycles, kernels measured "
              f"{report['total_ms']:.2f} ms: {report['total_cycles'] / (report['total_ms'] * 1e6):.2f} cycles per ns."), ""]
    return "\n".join(lines)


def _plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6.5, 5))
    for group, colour in (("conv", "tab:blue"), ("other", "tab:orange")):
        rows = [k for k in report["kernels"] if k["group"] == group]
        axes.scatter([k["measured_ms"] for k in rows], [k["estimated_cycles"] / 1e6 for k in rows], s=14,
                     color=colour, label=f"{group} (Spearman {report['spearman'][group]:.2f})")
    axes.set(xscale="log", yscale="log", xlabel="measured ms (this host, 1 thread)", ylabel="estimated M cycles",
             title=f"Estimate vs measurement, {report['cpu']}")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)


@click.command()
@click.option("--ckpt", default=ROOT / "checkpoints" / "qatie-c16.pt", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--size", default="256x256", show_default=True, help="HxW the model is exported at.")
@click.option("--repeats", default=10, show_default=True)
@click.option("--min-ms", default=20, show_default=True)
@click.option("--work", default="out/bench/validate", type=click.Path(path_type=Path, file_okay=False))
@click.option("--out", default="bench/results", type=click.Path(path_type=Path, file_okay=False))
def main(ckpt: Path, size: str, repeats: int, min_ms: int, work: Path, out: Path) -> None:
    """Build, estimate under qemu-x86_64, measure; write estimate_validation.{json,md,png}."""
    import tvm
    from scipy.stats import spearmanr

    from compile.artifact import load_artifact
    from compile.backend.build import BuildOptions, build
    from compile.backend.targets import get_target
    from compile.deploy.inputs import model_input
    from compile.deploy.profile import profile_on
    from compile.deploy.rpc import local_device
    from compile.deploy.timing import Timing
    from qatie.checkpoint import load_checkpoint
    from qatie.export import export

    height, width = (int(v) for v in size.split("x"))
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    onnx = work / f"qatie-{size}.onnx"
    export(load_checkpoint(ckpt), height, width, onnx, fp32=False)
    build(onnx, get_target("x86-host"), work / "x86-host", BuildOptions(use_tuning=False))
    artifact = load_artifact(work / "x86-host")
    x = model_input(artifact.manifest.model.inputs[0], None)
    cpu = tvm.target.codegen.llvm_get_system_cpu()
    estimated, label = _estimate(artifact, x, cpu)
    measured = profile_on(local_device(), artifact, x, Timing(2, repeats, min_ms), 1)
    kernels = [{"name": row["name"], "group": "conv" if "conv2d" in row["name"] else "other",
                "measured_ms": row["total_ms"], "estimated_cycles": estimated[row["name"]],
                "cycles_per_ns": estimated[row["name"]] / (row["total_ms"] * 1e6)} for row in measured["kernels"]]
    report = {"command": ("python bench/estimate_validation.py " + shlex.join(sys.argv[1:])).strip(), "cpu": cpu,
              "model": f"{ckpt.name} exported at {size}, x86-host build untuned ({len(kernels)} kernels)",
              "label": label, "repeats": repeats, "min_ms": min_ms, "kernels": kernels,
              "total_cycles": sum(estimated.values()), "total_ms": measured["kernel_sum_ms"], "spearman": {}}
    for group in ("all", "conv", "other"):
        rows = [k for k in kernels if group in ("all", k["group"])]
        report[group] = _spread([k["cycles_per_ns"] for k in rows])
        report["spearman"][group] = float(spearmanr([k["estimated_cycles"] for k in rows],
                                                    [k["measured_ms"] for k in rows]).statistic)
    write_report(out, "estimate_validation", report, _markdown(report), _plot)


if __name__ == "__main__":
    main()
