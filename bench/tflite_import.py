"""Pre-quantized TFLite models compiled by qatie-compile against LiteRT, the runtime they were
made for: latency of LiteRT (XNNPACK, its fastest CPU path) and of our builds (untuned, and tuned
where `--tuning-log` is given), 1 thread and all cores, and each one's output against LiteRT's
reference kernels (the only int8 TFLite kernels with a definition), in output steps.

    python bench/tflite_import.py --tflite bench/anchors/qatie_c32_int8_100x100.tflite \\
        --tflite bench/anchors/qatie_c32_int8_1920x1080.tflite --threads 1 --threads 0

`--arm` adds the phones: our untuned builds for `arm64-linux` (Cortex-A53) and
`arm64-linux-dotprod` (A55, A76) and LiteRT's own aarch64 runtime (XNNPACK) on the same file,
each one inference's instructions counted under qemu and costed by llvm-mca's model of the core
(`qatie-compile estimate --peer`): estimated cycles, 1 thread, not device times. Under qemu a
1920x1080 model takes hours; use it with the 100x100 one.

Writes `tflite_import.json` + `.md` + `.png`.
"""

from __future__ import annotations

import functools
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import click
from host_latency import SWITCH_PAUSE_S, litert_interpreter, speed_bars, timed_rows, write_report

LITERT = "LiteRT int8, XNNPACK"
ARM_TARGETS = ("arm64-linux", "arm64-linux-dotprod")
TVM_UNTUNED, TVM_TUNED = "TVM int8 untuned (default schedules)", "TVM int8 tuned (MetaSchedule)"


@click.group(invoke_without_command=True)
@click.option("--tflite", "tflites", multiple=True, required=True,
              type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--threads", "thread_counts", multiple=True, type=int, default=(1, 0), help="0: all cores.")
@click.option("--repeats", default=10, type=click.IntRange(min=10))
@click.option("--tuning-log", type=click.Path(path_type=Path, file_okay=False),
              help="A log tuned for these models (qatie-compile tune MODEL.tflite): adds the tuned rows.")
@click.option("--work", default="out/bench/tflite-import", type=click.Path(path_type=Path, file_okay=False))
@click.option("--out", default="bench/results", type=click.Path(path_type=Path, file_okay=False))
@click.option("--pause-s", type=click.FloatRange(min=0), default=SWITCH_PAUSE_S, show_default=True,
              help="Pause before each timed run with several threads (host_latency.timed_rows); 0: back to "
                   "back, each runtime's threads still awake from its previous run.")
@click.option("--arm", is_flag=True, help="Also estimated ARM cycles against LiteRT's aarch64 runtime (see above).")
@click.pass_context
def main(ctx: click.Context, tflites: tuple[Path, ...], thread_counts: tuple[int, ...], repeats: int,
         tuning_log: Path | None, work: Path, out: Path, pause_s: float, arm: bool) -> None:
    if ctx.invoked_subcommand:
        return
    import tvm

    from compile.backend.build import BuildOptions, build
    from compile.backend.targets import get_target

    command = "python bench/tflite_import.py " + shlex.join(sys.argv[1:])
    out.mkdir(parents=True, exist_ok=True)
    models = []
    for tflite in tflites:
        folder = work / tflite.stem
        untuned = build(tflite, get_target("x86-host"), folder / "untuned", BuildOptions(use_tuning=False))
        model = {"tflite": str(tflite), "kernels": untuned.tuning.kernels, "build_s": untuned.build_seconds}
        if tuning_log:
            tuned = build(tflite, get_target("x86-host"), folder / "tuned", BuildOptions(tuning_log=tuning_log))
            model["kernels_tuned"] = tuned.tuning.kernels_tuned
        model["fidelity"] = _fidelity(tflite, folder)
        if arm:
            model["arm"] = _arm_estimates(tflite, folder)
        model["results"] = []
        for threads in thread_counts:
            measured = subprocess.run(
                [sys.executable, __file__, "--tflite", str(tflite), "--work", str(work), "--pause-s", str(pause_s), "measure",
                 "--threads", str(threads), "--repeats", str(repeats)],
                check=True, capture_output=True, text=True)
            model["results"].append(json.loads(measured.stdout.strip().splitlines()[-1]))
            click.echo(f"measured {tflite.name} with {model['results'][-1]['threads']} thread(s)")
        models.append(model)
    report = {"command": command, "cpu": tvm.target.codegen.llvm_get_system_cpu(), "cores": os.cpu_count(),
              "models": models}
    write_report(out, "tflite_import", report, _markdown(report), _plot)


def _fidelity(tflite: Path, folder: Path) -> dict:
    """Our builds' and XNNPACK's output against LiteRT's reference kernels on the reference photo,
    in the output's steps (`TensorInfo.agreement`: codes compared as the real values they stand for)."""
    import numpy as np
    import tvm
    from ai_edge_litert.interpreter import OpResolverType
    from tvm import relax

    from compile.artifact import load_artifact
    from qatie.references import LiteRtKernels, litert_output

    reference = litert_interpreter(tflite, _photo(tflite), 1, experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    x = reference.get_tensor(reference.get_input_details()[0]["index"])
    reference.invoke()
    want = reference.get_tensor(reference.get_output_details()[0]["index"])
    output = load_artifact(folder / "untuned").manifest.model.outputs[0]
    outputs = {}
    for name, build in ((TVM_UNTUNED, "untuned"), (TVM_TUNED, "tuned")):
        if (folder / build).is_dir():
            vm = relax.VirtualMachine(tvm.runtime.load_module(str(folder / build / "model.so")), tvm.cpu())
            outputs[name] = vm["main"](tvm.runtime.tensor(x)).numpy()
    outputs[LITERT] = litert_output(tflite, x, LiteRtKernels.XNNPACK)
    return {name: {**output.agreement(got, want).as_dict(), "equal": float(np.mean(got == want))}
            for name, got in outputs.items()}


def _arm_estimates(tflite: Path, folder: Path) -> list[dict]:
    """Each ARM target's untuned build and LiteRT's aarch64 runtime on `tflite`, estimated per core."""
    from compile.artifact import load_artifact
    from compile.backend.build import BuildOptions, build
    from compile.backend.targets import get_target
    from compile.deploy.inputs import model_input
    from compile.offline.estimate import cores_for, estimate_here

    rows = []
    for target in ARM_TARGETS:
        build(tflite, get_target(target), folder / target, BuildOptions(use_tuning=False))
        artifact = load_artifact(folder / target)
        x = model_input(artifact.manifest.model.inputs[0], None)
        for estimate in estimate_here(artifact, x, cores_for(artifact, ()), None, click.echo, [tflite]):
            (litert,) = estimate["peers"]
            rows.append({"target": target, "core": estimate["core"], "label": estimate["label"],
                         "clock_ghz": estimate["clock_ghz"], "ours": {"cycles": estimate["cycles"], "ms": estimate["ms"]},
                         "litert": {key: litert[key] for key in ("runtime", "cycles", "ms", "instructions", "agreement")},
                         "speedup": litert["speedup"]})
        click.echo(f"estimated {tflite.name} on {target}")
    return rows


def _photo(tflite: Path):
    from host_latency import tflite_size

    from qatie.references import reference_input

    return reference_input(*tflite_size(tflite))


@main.command()
@click.option("--threads", required=True, type=int)
@click.option("--repeats", default=10, type=int)
@click.pass_context
def measure(ctx: click.Context, threads: int, repeats: int) -> None:
    """One model, one thread count: LiteRT and our builds on the same input; one JSON line."""
    threads = threads or os.cpu_count() or 1
    os.environ["TVM_NUM_THREADS"] = str(threads)
    import tvm
    from tvm import relax

    (tflite,) = ctx.parent.params["tflites"]
    folder = ctx.parent.params["work"] / tflite.stem
    interpreter = litert_interpreter(tflite, _photo(tflite), threads)
    x = tvm.runtime.tensor(interpreter.get_tensor(interpreter.get_input_details()[0]["index"]))
    runners = {LITERT: interpreter.invoke}
    for name, build in ((TVM_UNTUNED, "untuned"), (TVM_TUNED, "tuned")):
        if (folder / build).is_dir():
            vm = relax.VirtualMachine(tvm.runtime.load_module(str(folder / build / "model.so")), tvm.cpu())
            runners[name] = functools.partial(vm["main"], x)
    rows = timed_rows(runners, repeats, min_seconds=2.0, pause_s=ctx.parent.params["pause_s"] if threads > 1 else 0.0)
    click.echo(json.dumps({"threads": threads, "rows": rows}))


def _markdown(report: dict) -> str:
    lines = [(f"Measured with `{report['command']}` on {report['cpu']} ({report['cores']} cores). Each table's "
              "runtimes are timed in interleaved rounds on the reference photo; fidelity is against LiteRT's "
              "reference kernels (`OpResolverType.BUILTIN_REF`) on the same photo, in output steps."), ""]
    for model in report["models"]:
        name = Path(model["tflite"]).name
        lines += [f"### {name}", "", "| output vs LiteRT reference kernels | equal | within 1 step | max steps |",
                  "|---|---|---|---|"]
        lines += [f"| {row} | {100 * f['equal']:.3f} % | {100 * f['within_one_step']:.3f} % | {f['max_steps']:.0f} |"
                  for row, f in model["fidelity"].items()]
        for result in model["results"]:
            litert = result["rows"][LITERT]["median_ms"]
            lines += ["", f"| {name}, {result['threads']} thread(s) | median ms | min–max ms | runs | LiteRT / this |",
                      "|---|---|---|---|---|"]
            lines += [f"| {row} | {r['median_ms']:.2f} | {r['min_ms']:.2f}–{r['max_ms']:.2f} | {r['runs']} | "
                      f"{litert / r['median_ms']:.2f}x |" for row, r in result["rows"].items()]
        if model.get("arm"):
            lines += ["", (f"| {name}, estimated ARM cycles, 1 thread | ours M cycles (ms) | LiteRT aarch64 M "
                           "cycles (ms) | LiteRT / ours |"), "|---|---|---|---|"]
            lines += [f"| `{r['target']}` on {r['core']} at {r['clock_ghz']:g} GHz | {r['ours']['cycles'] / 1e6:.1f} "
                      f"({r['ours']['ms']:.1f}) | {r['litert']['cycles'] / 1e6:.1f} ({r['litert']['ms']:.1f}) | "
                      f"{r['speedup']:.2f}x |" for r in model["arm"]]
            lines += ["", (f"Estimated: qemu block counts costed by llvm-mca's model of each core (each row's label "
                           f"in the JSON); LiteRT: {model['arm'][0]['litert']['runtime']}, run as each core under "
                           f"qemu (`qatie-compile estimate --peer`). Not device times.")]
        tuned = f", tuned build: {model['kernels_tuned']} of {model['kernels']} kernels from the log" \
            if "kernels_tuned" in model else ""
        lines += ["", f"Built in {model['build_s']} s{tuned}.", ""]
    return "\n".join(lines)


def _plot(report: dict, path: Path) -> None:
    """Speed relative to LiteRT (XNNPACK) per model and thread count (> 1: faster)."""
    settings, ratios = [], {}
    for model in report["models"]:
        for result in model["results"]:
            settings.append(f"{Path(model['tflite']).stem}\n{result['threads']} thread(s)")
            litert = result["rows"][LITERT]["median_ms"]
            for row, r in result["rows"].items():
                ratios.setdefault(row, []).append(litert / r["median_ms"])
        for r in model.get("arm", []):  # estimated: LiteRT's aarch64 runtime and our untuned build
            settings.append(f"{r['target']}\n{r['core']}\n(estimated)")
            for row, values in ratios.items():
                values.append({LITERT: 1.0, TVM_UNTUNED: r["speedup"]}.get(row, 0.0))
    speed_bars(path, settings, ratios, "speed vs LiteRT XNNPACK (median)",
               f"TFLite models compiled by qatie-compile, {report['cpu']}: higher is faster", size=(9, 4), fontsize=7)


if __name__ == "__main__":
    main()
