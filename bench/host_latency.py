"""Host latency of the QATIE model: PyTorch fp32, ONNX Runtime fp32, int8 (our QDQ file) and int8
(the same net quantized by ORT with uint8 activations, ORT's fastest x86 int8 path), LiteRT int8
(XNNPACK) on each `--tflite` model whose input has the size (the paper's own width-32 models, or
ours converted by a user's route; needs `.[peers]`), TVM int8
untuned and tuned, at each size and thread count, in one run on one machine. The ratio column
compares every row with the fastest of the peers (everything but TVM) in the same setting.

Each thread count is measured in its own process: TVM sizes its thread pool once per process.
Writes `host_latency.json` + `.md` + `.png`, and from the tuning curves that `qatie-compile tune --curve`
wrote, `tuning_curve.md` + `.png`. Usage (the numbers in docs/performance.md):

    python bench/host_latency.py --ckpt out/bench/qatie-c32.pt --size 100x100 --size 256x256 \\
        --threads 1 --threads 0 --tflite bench/anchors/qatie_c32_int8_100x100.tflite
"""

from __future__ import annotations

import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import click

TORCH, ORT_FP32, ORT_QDQ, ORT_U8 = ("PyTorch fp32 (eager)", "ONNX Runtime fp32", "ONNX Runtime int8 (our QDQ file)",
                                   "ONNX Runtime int8 (ORT-quantized, uint8 activations)")
TVM_ROWS = ("TVM int8 untuned (default schedules)", "TVM int8 tuned (MetaSchedule)")
CALIBRATION_IMAGES = 4
SWITCH_PAUSE_S = 0.3  # between runtimes when they use several threads: see timed_rows


def write_report(out: Path, name: str, report: dict, table: str, plot_to: Callable[[dict, Path], None]) -> None:
    """A bench's one run as the project keeps it: NAME.json (the report), NAME.md (its table, also
    printed) and NAME.png (`plot_to`'s figure), in `out`."""
    (out / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / f"{name}.md").write_text(table)
    plot_to(report, out / f"{name}.png")
    click.echo(table)


def timed_rows(runners: dict, repeats: int, min_seconds: float, pause_s: float = 0.0) -> dict[str, dict]:
    """Each runner warmed up once, then timed in rounds that run every runner once, for at
    least `repeats` rounds and `min_seconds` per runner: on a shared host whose speed drifts by
    tens of percent within a minute, every runtime then sees the same drift, where timing them
    one after another would credit it to one of them. With several threads, pass `pause_s`
    (`SWITCH_PAUSE_S`): ORT's, PyTorch's and TVM's worker threads spin for a while after a call,
    and with every core in use a spinning pool took a core from the runtime timed next
    (identical TVM builds at 100x100, 2 threads: 14.5 and 34.3 ms without a pause, one right
    after ORT; 16.2 and 14.1 ms with 0.3 s, 0.05 s was not enough). Returns per runner:
    median, min, max (ms) and the number of runs."""
    for fn in runners.values():
        fn()
    samples = {name: [] for name in runners}
    started = time.perf_counter()
    while (len(samples[next(iter(samples))]) < repeats
           or time.perf_counter() - started < min_seconds * len(runners)):
        for name, fn in runners.items():
            time.sleep(pause_s)
            begin = time.perf_counter()
            fn()
            samples[name].append((time.perf_counter() - begin) * 1e3)
    return {name: {"median_ms": statistics.median(runs), "min_ms": min(runs), "max_ms": max(runs), "runs": len(runs)}
            for name, runs in samples.items()}


@click.group(invoke_without_command=True)
@click.option("--ckpt", default="out/bench/qatie-c32.pt", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--size", "sizes", multiple=True, default=("256x256", "512x512"))
@click.option("--threads", "thread_counts", multiple=True, type=int, default=(1, 0), help="0: all cores.")
@click.option("--repeats", default=10, type=click.IntRange(min=10))
@click.option("--tuning-log", default="tuning_logs/x86-host", type=click.Path(path_type=Path, file_okay=False))
@click.option("--curve", "curves", multiple=True, type=click.Path(path_type=Path, dir_okay=False))
@click.option("--work", default="out/bench", type=click.Path(path_type=Path, file_okay=False))
@click.option("--out", default="bench/results", type=click.Path(path_type=Path, file_okay=False))
@click.option("--tflite", "tflites", multiple=True, type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="A TFLite model run with LiteRT at the size its input has (repeatable; the paper's "
                   "models do not resize: XNNPACK fails to reshape them).")
@click.pass_context
def main(ctx: click.Context, ckpt: Path, sizes: tuple[str, ...], thread_counts: tuple[int, ...], repeats: int,
         tuning_log: Path, curves: tuple[Path, ...], work: Path, out: Path, tflites: tuple[Path, ...]) -> None:
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
        ort_quantized(fp32, work / f"qatie-{size}-ort-u8.onnx", height, width)
        untuned = build(qdq, get_target("x86-host"), work / f"x86-host-{size}-untuned", BuildOptions(use_tuning=False))
        tuned = build(qdq, get_target("x86-host"), work / f"x86-host-{size}-tuned", BuildOptions(tuning_log=tuning_log))
        builds[size] = {"kernels_tuned": tuned.tuning.kernels_tuned, "kernels": tuned.tuning.kernels,
                        "integer_mac_fraction": untuned.integer.integer_mac_fraction}

    results = []
    for size in sizes:
        for threads in thread_counts:
            measured = subprocess.run(
                [sys.executable, __file__, "--ckpt", str(ckpt), "--work", str(work),
                 *(a for t in tflites for a in ("--tflite", str(t))), "measure",
                 "--size", size, "--threads", str(threads), "--repeats", str(repeats)],
                check=True, capture_output=True, text=True,
            )
            results.append(json.loads(measured.stdout.strip().splitlines()[-1]))
            click.echo(f"measured {size} with {results[-1]['threads']} thread(s)")

    import tvm

    report = {"command": command, "cpu": tvm.target.codegen.llvm_get_system_cpu(), "cores": os.cpu_count(),
              "cpu_features": _dot_product_features(), "checkpoint": str(ckpt), "tflite": [str(t) for t in tflites],
              "builds": builds, "results": results}
    write_report(out, "host_latency", report, _markdown(report), plot)
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

    runners = {TORCH: torch_run, ORT_FP32: ort_run(work / f"qatie-{size}-fp32.onnx"),
               ORT_QDQ: ort_run(work / f"qatie-{size}.onnx"), ORT_U8: ort_run(work / f"qatie-{size}-ort-u8.onnx")}
    for tflite in (t for t in ctx.parent.params["tflites"] if tflite_size(t) == (height, width)):
        runners[f"LiteRT int8, XNNPACK ({tflite.name})"] = litert_interpreter(tflite, x_np, threads).invoke
    runners.update(zip(TVM_ROWS, (tvm_run(work / f"x86-host-{size}-untuned"), tvm_run(work / f"x86-host-{size}-tuned"))))
    rows = timed_rows(runners, repeats, min_seconds=2.0, pause_s=SWITCH_PAUSE_S if threads > 1 else 0.0)
    click.echo(json.dumps({"size": size, "threads": threads, "rows": rows}))


def tflite_size(tflite: Path) -> tuple[int, int]:
    """A TFLite model's input height and width (NHWC)."""
    from ai_edge_litert.interpreter import Interpreter

    _, height, width, _ = Interpreter(model_path=str(tflite)).get_input_details()[0]["shape"]
    return int(height), int(width)


def litert_interpreter(tflite: Path, x_np, threads: int, **options):
    """LiteRT's interpreter (XNNPACK delegate unless `options` choose another op resolver) on
    `tflite`, with NCHW `x_np` set as its input: NHWC, quantized to the model's input codes if
    it takes codes. `options`: further `Interpreter` arguments (op resolver, kept tensors)."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(tflite), num_threads=threads, **options)
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    nhwc = x_np.transpose(0, 2, 3, 1)
    if detail["dtype"] != np.float32:
        scale, zero = detail["quantization"]
        info = np.iinfo(detail["dtype"])
        nhwc = np.clip(np.round(nhwc / scale) + zero, info.min, info.max)
    interpreter.set_tensor(detail["index"], nhwc.astype(detail["dtype"]))
    return interpreter


def ort_quantized(fp32: Path, out: Path, height: int, width: int) -> None:
    """The float export quantized by ONNX Runtime's own tool the way its docs show: QDQ, uint8
    activations, per-channel int8 weights, calibrated on crops of the reference image."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from qatie.references import reference_input

    class Images(CalibrationDataReader):
        def __init__(self) -> None:
            image = reference_input(height * 2, width * 2)
            crops = [image[:, :, y:y + height, x:x + width] for y in (0, height) for x in (0, width)]
            self.batches = iter([{"input": c.copy()} for c in crops[:CALIBRATION_IMAGES]])

        def get_next(self):
            return next(self.batches, None)

    quantize_static(str(fp32), str(out), Images(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)


def _dot_product_features() -> list[str]:
    from compile.backend.dot_products import candidates
    from compile.backend.targets import get_target

    return [d.name for d in candidates(get_target("x86-host").tvm_target())]


def _fastest_peer(result: dict) -> tuple[str, float]:
    """The fastest runtime that is not ours in one setting, and its median ms."""
    peers = {name: row["median_ms"] for name, row in result["rows"].items() if name not in TVM_ROWS}
    fastest = min(peers, key=peers.get)
    return fastest, peers[fastest]


def _markdown(report: dict) -> str:
    lines = [(f"Measured with `{report['command']}` on {report['cpu']} ({report['cores']} cores; "
              f"int8 dot products: {', '.join(report['cpu_features']) or 'none'}). The runtimes of one "
              "table are timed in interleaved rounds (each runs once per round, with a pause between "
              "runtimes when they use several threads), so the shared host's speed drift hits them alike."), ""]
    for result in report["results"]:
        size, threads = result["size"], result["threads"]
        build = report["builds"][size]
        fastest, reference = _fastest_peer(result)
        lines += [f"| {size}, {threads} thread(s) | median ms | min–max ms | runs | fastest peer / this |",
                  "|---|---|---|---|---|"]
        for name, row in result["rows"].items():
            lines.append(f"| {name} | {row['median_ms']:.1f} | {row['min_ms']:.1f}–{row['max_ms']:.1f} | "
                         f"{row['runs']} | {reference / row['median_ms']:.2f}x |")
        lines += ["", f"Fastest peer: {fastest}."]
        lines += ["", f"Tuned build: {build['kernels_tuned']} of {build['kernels']} kernels from the tuning log.", ""]
    return "\n".join(lines)


def speed_bars(path: Path, settings: list[str], series: dict[str, list[float]], ylabel: str, title: str,
               size=(10, 4.5), fontsize: int = 8) -> None:
    """Grouped bars, one group per setting, one bar per series (its speed ratio there), and a
    line at 1: the figure of the benches that compare runtimes (> 1: faster)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=size)
    width = 0.8 / len(series)
    for k, (name, ratios) in enumerate(series.items()):
        axis.bar([i + k * width for i in range(len(ratios))], ratios, width, label=name)
    axis.axhline(1.0, color="black", linewidth=0.8)
    axis.set_xticks([i + 0.4 - width / 2 for i in range(len(settings))], settings, fontsize=fontsize)
    axis.set_ylabel(ylabel)
    axis.set_title(title)
    axis.legend(fontsize=fontsize - 2, loc="upper left")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def plot(report: dict, path: Path) -> None:
    """Each row's speed relative to the fastest peer, per size and thread count (> 1: faster)."""
    settings = [f"{r['size']}\n{r['threads']} thread(s)" for r in report["results"]]
    names = list(dict.fromkeys(name for r in report["results"] for name in r["rows"]))
    series = {name: [_fastest_peer(result)[1] / result["rows"][name]["median_ms"] if name in result["rows"] else 0.0
                     for result in report["results"]] for name in names}
    speed_bars(path, settings, series, "speed vs fastest peer (median)",
               f"QATIE c=32 on {report['cpu']}: higher is faster")


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
