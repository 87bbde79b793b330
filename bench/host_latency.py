"""Host latency of the QATIE model: PyTorch fp32, ONNX Runtime fp32 and int8 (QDQ), TVM int8
untuned and tuned, at each size and thread count, in one run on one machine.

Each thread count is measured in its own process: TVM sizes its thread pool once per process.
Writes `host_latency.json` + `.md`, and from the tuning curves that `qatie-compile tune --curve`
wrote, `tuning_curve.md` + `.png`. Usage (the numbers in the README):

    python bench/host_latency.py --ckpt out/bench/qatie-c32.pt --size 256x256 --size 512x512 \\
        --threads 1 --threads 0 --curve bench/results/tuning_curve-c32-256.json \\
        --curve bench/results/tuning_curve-c32-512.json
"""

from __future__ import annotations

import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import click

ROWS = ("PyTorch fp32 (eager)", "ONNX Runtime fp32", "ONNX Runtime int8 (QDQ)",
        "TVM int8 untuned (default schedules)", "TVM int8 tuned (MetaSchedule)")
REFERENCE = "ONNX Runtime int8 (QDQ)"


def _time_ms(fn, repeats: int, min_seconds: float) -> list[float]:
    """Warm up once, then at least `repeats` runs and at least `min_seconds` of them."""
    fn()
    samples, started = [], time.perf_counter()
    while len(samples) < repeats or time.perf_counter() - started < min_seconds:
        begin = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - begin) * 1e3)
    return samples


@click.group(invoke_without_command=True)
@click.option("--ckpt", default="out/bench/qatie-c32.pt", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--size", "sizes", multiple=True, default=("256x256", "512x512"))
@click.option("--threads", "thread_counts", multiple=True, type=int, default=(1, 0), help="0: all cores.")
@click.option("--repeats", default=10, type=click.IntRange(min=10))
@click.option("--tuning-log", default="tuning_logs/x86-host", type=click.Path(path_type=Path, file_okay=False))
@click.option("--curve", "curves", multiple=True, type=click.Path(path_type=Path, dir_okay=False))
@click.option("--work", default="out/bench", type=click.Path(path_type=Path, file_okay=False))
@click.option("--out", default="bench/results", type=click.Path(path_type=Path, file_okay=False))
@click.pass_context
def main(ctx: click.Context, ckpt: Path, sizes: tuple[str, ...], thread_counts: tuple[int, ...], repeats: int,
         tuning_log: Path, curves: tuple[Path, ...], work: Path, out: Path) -> None:
    if ctx.invoked_subcommand:
        return
    from compile.backend.build import BuildOptions, build
    from compile.backend.targets import get_target
    from qatie.checkpoint import load_checkpoint
    from qatie.export import export

    command = "python bench/host_latency.py " + shlex.join(sys.argv[1:])
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_data = load_checkpoint(ckpt)
    builds = {}
    for size in sizes:
        height, width = (int(v) for v in size.split("x"))
        qdq, fp32 = work / f"qatie-{size}.onnx", work / f"qatie-{size}-fp32.onnx"
        export(ckpt_data, height, width, qdq, fp32=False)
        export(ckpt_data, height, width, fp32, fp32=True)
        untuned = build(qdq, get_target("x86-host"), work / f"x86-host-{size}-untuned", BuildOptions(use_tuning=False))
        tuned = build(qdq, get_target("x86-host"), work / f"x86-host-{size}-tuned", BuildOptions(tuning_log=tuning_log))
        builds[size] = {"kernels_tuned": tuned.tuning.kernels_tuned, "kernels": tuned.tuning.kernels,
                        "integer_mac_fraction": untuned.integer.integer_mac_fraction}

    results = []
    for size in sizes:
        for threads in thread_counts:
            measured = subprocess.run(
                [sys.executable, __file__, "--ckpt", str(ckpt), "--work", str(work), "measure",
                 "--size", size, "--threads", str(threads), "--repeats", str(repeats)],
                check=True, capture_output=True, text=True,
            )
            results.append(json.loads(measured.stdout.strip().splitlines()[-1]))
            click.echo(f"measured {size} with {results[-1]['threads']} thread(s)")

    import tvm

    report = {"command": command, "cpu": tvm.target.codegen.llvm_get_system_cpu(), "cores": os.cpu_count(),
              "checkpoint": str(ckpt), "builds": builds, "results": results}
    (out / "host_latency.json").write_text(json.dumps(report, indent=2))
    table = _markdown(report)
    (out / "host_latency.md").write_text(table)
    click.echo(table)
    if curves:
        click.echo(_write_curves(curves, out))


@main.command()
@click.option("--size", required=True)
@click.option("--threads", required=True, type=int)
@click.option("--repeats", default=10, type=int)
@click.pass_context
def measure(ctx: click.Context, size: str, threads: int, repeats: int) -> None:
    """One size, one thread count: every runtime on the same input; prints one JSON line."""
    threads = threads or os.cpu_count() or 1
    os.environ["TVM_NUM_THREADS"] = str(threads)
    import onnxruntime as ort
    import torch
    import tvm
    from tvm import relax

    from qatie.checkpoint import build_model, load_checkpoint
    from qatie.quant.fake_quant import set_quant_mode
    from qatie.references import reference_input

    work, ckpt = ctx.parent.params["work"], ctx.parent.params["ckpt"]
    height, width = (int(v) for v in size.split("x"))
    x_np = reference_input(height, width)
    x = torch.from_numpy(x_np)
    torch.set_num_threads(threads)
    model = build_model(load_checkpoint(ckpt)).eval()
    set_quant_mode(model, "off")

    def torch_run():
        with torch.inference_mode():
            model(x)

    def ort_run(path: Path):
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return lambda: session.run(None, {"input": x_np})

    def tvm_run(folder: Path):
        vm = relax.VirtualMachine(tvm.runtime.load_module(str(folder / "model.so")), tvm.cpu())
        x_tvm = tvm.runtime.tensor(x_np)
        return lambda: vm["main"](x_tvm)

    runners = dict(zip(ROWS, (torch_run, ort_run(work / f"qatie-{size}-fp32.onnx"), ort_run(work / f"qatie-{size}.onnx"),
                              tvm_run(work / f"x86-host-{size}-untuned"), tvm_run(work / f"x86-host-{size}-tuned"))))
    rows = {}
    for name, fn in runners.items():
        samples = _time_ms(fn, repeats, min_seconds=2.0)
        rows[name] = {"median_ms": statistics.median(samples), "min_ms": min(samples), "max_ms": max(samples),
                      "runs": len(samples)}
    click.echo(json.dumps({"size": size, "threads": threads, "rows": rows}))


def _markdown(report: dict) -> str:
    lines = [f"Measured with `{report['command']}` on {report['cpu']} ({report['cores']} cores).", ""]
    for result in report["results"]:
        size, threads = result["size"], result["threads"]
        build = report["builds"][size]
        reference = result["rows"][REFERENCE]["median_ms"]
        lines += [f"| {size}, {threads} thread(s) | median ms | min–max ms | runs | ORT int8 time / this |",
                  "|---|---|---|---|---|"]
        for name, row in result["rows"].items():
            lines.append(f"| {name} | {row['median_ms']:.1f} | {row['min_ms']:.1f}–{row['max_ms']:.1f} | "
                         f"{row['runs']} | {reference / row['median_ms']:.2f}x |")
        lines += ["", f"Tuned build: {build['kernels_tuned']} of {build['kernels']} kernels from the tuning log.", ""]
    return "\n".join(lines)


def _write_curves(paths: tuple[Path, ...], out: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4))
    lines = ["| model | minutes | trials | estimated ms (tuned kernels) |", "|---|---|---|---|"]
    for path in paths:
        data = json.loads(path.read_text())
        points = data["curve"]
        label = Path(data["model"]).stem
        axis.plot([p["minutes"] for p in points], [p["estimated_ms"] for p in points], marker=".", label=label)
        for point in points[:: max(1, len(points) // 8)] + points[-1:]:
            lines.append(f"| {label} | {point['minutes']:.1f} | {point['trials']} | {point['estimated_ms']:.1f} |")
    axis.set_xlabel("tuning minutes (2-core host)")
    axis.set_ylabel("estimated latency of tuned kernels (ms)")
    axis.set_title("MetaSchedule tuning curve, x86-host")
    axis.legend()
    figure.tight_layout()
    figure.savefig(out / "tuning_curve.png", dpi=120)
    table = "\n".join(lines) + "\n"
    (out / "tuning_curve.md").write_text(table)
    return table


if __name__ == "__main__":
    main()
