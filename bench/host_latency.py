"""Host latency of the compiled QATIE model against ONNX Runtime (int8 QDQ and fp32), same threads.

Writes JSON and a markdown table. Usage:
    python bench/host_latency.py --ckpt checkpoints/qatie-c16.pt --size 256x256 --threads 1 --out bench/results
"""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

import click


def _time(fn, repeats: int) -> list[float]:
    fn()  # warm-up
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1e3)
    return samples


@click.command()
@click.option("--ckpt", default="checkpoints/qatie-c16.pt", type=click.Path(path_type=Path))
@click.option("--size", default="256x256")
@click.option("--threads", default=1, type=int)
@click.option("--repeats", default=10, type=click.IntRange(min=10))
@click.option("--out", default="bench/results", type=click.Path(path_type=Path))
def main(ckpt: Path, size: str, threads: int, repeats: int, out: Path) -> None:
    os.environ["TVM_NUM_THREADS"] = str(threads)
    import onnxruntime as ort
    import tvm
    from tvm import relax

    from compile.build import build
    from compile.targets import get_target
    from qatie.checkpoint import load_checkpoint
    from qatie.export import export, reference_input

    height, width = (int(v) for v in size.split("x"))
    out.mkdir(parents=True, exist_ok=True)
    ckpt_data = load_checkpoint(ckpt)
    qdq, fp32 = out / f"qatie-{size}.onnx", out / f"qatie-{size}-fp32.onnx"
    export(ckpt_data, height, width, qdq, fp32=False)
    export(ckpt_data, height, width, fp32, fp32=True)
    manifest = build(qdq, get_target("x86-host"), out / f"x86-host-{size}")
    x = reference_input(height, width).numpy()

    def ort_runner(path: Path):
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return lambda: session.run(None, {"input": x})

    vm = relax.VirtualMachine(tvm.runtime.load_module(str(out / f"x86-host-{size}" / "model.so")), tvm.cpu())
    x_tvm = tvm.runtime.tensor(x)
    rows = {
        "TVM int8 (untuned, default schedules)": _time(lambda: vm["main"](x_tvm), repeats),
        "ONNX Runtime int8 (QDQ)": _time(ort_runner(qdq), repeats),
        "ONNX Runtime fp32": _time(ort_runner(fp32), repeats),
    }
    reference = statistics.median(rows["ONNX Runtime int8 (QDQ)"])
    result = {
        "command": f"python bench/host_latency.py --ckpt {ckpt} --size {size} --threads {threads} --repeats {repeats}",
        "size": size, "threads": threads, "repeats": repeats, "cpu": tvm.target.codegen.llvm_get_system_cpu(),
        "integer_mac_fraction": manifest["integer"]["integer_mac_fraction"],
        "rows": {name: {"median_ms": statistics.median(s), "min_ms": min(s), "max_ms": max(s)} for name, s in rows.items()},
    }
    lines = [f"| {size}, {threads} thread(s) | median ms | min–max ms | vs ORT int8 |", "|---|---|---|---|"]
    for name, s in rows.items():
        med = statistics.median(s)
        lines.append(f"| {name} | {med:.2f} | {min(s):.2f}–{max(s):.2f} | {med / reference:.2f}x |")
    table = "\n".join(lines)
    stem = out / f"host_latency-{size}-t{threads}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2))
    stem.with_suffix(".md").write_text(table + "\n")
    click.echo(f"integer conv MACs: {100 * result['integer_mac_fraction']:.1f} %")
    click.echo(table)


if __name__ == "__main__":
    main()
