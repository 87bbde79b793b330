"""`qatie-compile`: per-target compilation of QDQ ONNX models. User mistakes exit with code 2."""

from __future__ import annotations

import re
from pathlib import Path

import click

from qatie.atomic import check_writable_file, check_writable_folder
from qatie.cli import QatieGroup
from qatie.errors import QatieError

SHAPE_PATTERN = re.compile(r"^([^:]+):(\d+(?:x\d+)*)$")


class BuildByDefault(QatieGroup):
    """`qatie-compile --target NAME model.onnx -o OUT` means `qatie-compile build ...`."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["build", *args]
        return super().parse_args(ctx, args)


def parse_input_shapes(_ctx, param: click.Parameter, values: tuple[str, ...]) -> dict[str, list[int]]:
    shapes = {}
    for value in values:
        match = SHAPE_PATTERN.match(value)
        if not match:
            raise click.BadParameter(f"'{value}' is not NAME:DxDxDxD, e.g. input:1x3x256x256", param=param)
        shapes[match.group(1)] = [int(d) for d in match.group(2).split("x")]
    return shapes


def _echo_err(line: str) -> None:
    click.echo(line, err=True)


input_shape_option = click.option(
    "--input-shape", "input_shapes", multiple=True, callback=parse_input_shapes,
    help="Fix a dynamic input, NAME:1x3xHxW (repeatable).",
)


@click.group(cls=BuildByDefault, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """QATIE compiler: QDQ ONNX to TVM int8 kernels for mobile targets.

    Build: qatie-compile --target NAME model.onnx -o OUT/
    """


@main.command()
@click.argument("model", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--target", "target_name", required=True, help="A target file name from `qatie-compile targets`.")
@click.option("-o", "--out", required=True, type=click.Path(path_type=Path, file_okay=False), help="Artifact folder.")
@input_shape_option
@click.option("--emit-source", is_flag=True, help="Also write the kernels: kernels.so disassembled with the target's objdump (kernels.s), OpenCL C (kernels.cl).")
@click.option("--tuning-log", type=click.Path(path_type=Path, file_okay=False),
              help="Tuning log folder to apply (default: tuning_logs/<target>/ when it exists).")
@click.option("--no-tuning", is_flag=True, help="Ignore tuning logs; every kernel gets the default schedule.")
@click.option("--require-int8", is_flag=True, help="Fail when no conv is quantized (a float model) instead of warning.")
def build(model: Path, target_name: str, out: Path, input_shapes: dict, emit_source: bool,
          tuning_log: Path | None, no_tuning: bool, require_int8: bool) -> None:
    """Compile MODEL for a target: OUT/model.so and OUT/manifest.json."""
    from compile.artifact import check_output

    check_output(out)  # output mistakes cost a second, not an import of the compiler
    from compile.backend.build import BuildOptions
    from compile.backend.build import build as run_build
    from compile.backend.targets import get_target

    if tuning_log and no_tuning:
        raise QatieError("--tuning-log and --no-tuning contradict each other; give one")
    options = BuildOptions(input_shapes=input_shapes, emit_source=emit_source, tuning_log=tuning_log,
                           use_tuning=not no_tuning, require_int8=require_int8)
    manifest = run_build(model, get_target(target_name), out, options)
    integer, tuning = manifest.integer, manifest.tuning
    for line in tuning.repaired:
        click.echo(f"tuning log repaired: {line}", err=True)
    for line in tuning.notes:
        click.echo(f"note: {line}", err=True)
    if integer.float_convs and not integer.integer_convs:
        click.echo(f"WARNING: nothing was quantized: 0 of {integer.float_convs} convs run in integer arithmetic "
                   f"(a float model, or Q/DQ nodes no rewrite recognises); the library computes in float. "
                   f"Pass --require-int8 to make this an error", err=True)
    source = f"from {tuning.database}" if tuning.database else "no tuning log"
    click.echo(
        f"{out}/model.so for {target_name}: {integer.integer_convs} of "
        f"{integer.integer_convs + integer.float_convs} convs integer "
        f"({100 * integer.integer_mac_fraction:.1f} % of conv MACs), {tuning.kernels_tuned} of "
        f"{tuning.kernels} kernels tuned ({source}), built in {manifest.build_seconds} s"
    )


@main.command()
@click.argument("model", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--target", "target_name", required=True, help="A target file name from `qatie-compile targets`.")
@click.option("--trials", type=click.IntRange(min=1), required=True,
              help="Measured candidates for this model in all (records already in the log count).")
@click.option("--per-task", type=click.IntRange(min=1), help="At most this many trials per kernel.")
@click.option("--tracker", help="RPC tracker HOST:PORT; measure on the devices registered there.")
@click.option("--key", help="Device key at the tracker (default: the target file's rpc_key).")
@click.option("--log-dir", type=click.Path(path_type=Path, file_okay=False),
              help="Tuning log folder (default: tuning_logs/<target>/).")
@click.option("--device-timeout", type=click.FloatRange(min=0), default=60, show_default=True,
              help="Seconds to wait for a free device under the key.")
@click.option("--builder-timeout", type=click.FloatRange(min=1), default=600, show_default=True,
              help="Seconds one builder batch may take (TVM's 30 s fails every candidate on 2 cores).")
@click.option("--curve", type=click.Path(path_type=Path, dir_okay=False),
              help="Write the tuning curve (estimated model latency vs minutes) as JSON here.")
@click.option("--only", multiple=True, help="Tune only kernels whose name contains this, e.g. conv2d (repeatable).")
@click.option("--population", type=click.IntRange(min=8), default=128, show_default=True,
              help="Evolutionary search population per round (TVM's default 512 is slow on small hosts).")
@click.option("--rounds", type=click.IntRange(min=1), default=3, show_default=True,
              help="Interleaved timing rounds of a packed conv's tiles; each keeps its fastest (a shared host drifts).")
@input_shape_option
def tune(model: Path, target_name: str, trials: int, per_task: int | None, tracker: str | None, key: str | None,
         log_dir: Path | None, device_timeout: float, builder_timeout: float, curve: Path | None,
         only: tuple[str, ...], population: int, rounds: int, input_shapes: dict) -> None:
    """Tune MODEL's integer kernels for a target with MetaSchedule (XGBoost cost model)."""
    from compile.backend.targets import get_target
    from compile.backend.tuning_db import default_log_dir
    from compile.deploy.rpc import parse_tracker

    spec = get_target(target_name)
    if key and not tracker:
        raise QatieError("--key needs --tracker HOST:PORT")
    folder = log_dir or default_log_dir(spec.name)
    check_writable_folder(folder, "--log-dir")  # before importing the compiler
    if curve:
        check_writable_file(curve, "--curve")
    from compile.tuning.report import print_report, write_curve
    from compile.tuning.tune import TuneOptions, refuse_emulator_timings_in_shipped_logs
    from compile.tuning.tune import tune as run_tune

    options = TuneOptions(trials=trials, per_task=per_task, tracker=parse_tracker(tracker) if tracker else None,
                          key=key, device_timeout_s=device_timeout, builder_timeout_s=builder_timeout,
                          population=population, rounds=rounds, only=only)
    emulated = None
    if options.tracker:
        emulated = refuse_emulator_timings_in_shipped_logs(options.tracker, key or spec.rpc_key or "",
                                                           device_timeout, folder)
    report = run_tune(model, input_shapes, spec, folder, options)
    print_report(report, folder, emulated)
    if curve:
        write_curve(report, curve, model, spec.name, emulated)


@main.command()
@click.argument("model", type=click.Path(path_type=Path, dir_okay=False))
@input_shape_option
def inspect(model: Path, input_shapes: dict) -> None:
    """What runs in integer arithmetic after QDQ folding: conv MACs per target, every integer op,
    and why each pattern left in float was not rewritten."""
    from compile.backend.targets import scan_targets
    from compile.frontend import load_and_fold
    from compile.frontend.inspect import integer_ops

    folder = scan_targets()
    imported = load_and_fold(model, input_shapes)
    mod, log = imported.mod, imported.log
    ops = integer_ops(mod)
    convs, total = ops.integer_convs + ops.float_convs, ops.integer_macs + ops.float_macs
    # Folding runs before any target-specific pass, so every target gets the same split.
    _warn_broken(folder)
    for spec in folder.specs:
        click.echo(f"{spec.name:22s} integer convs {ops.integer_convs:3d}/{convs:<3d} "
                   f"integer MACs {ops.integer_macs:,}/{total:,} ({100 * ops.integer_fraction:.1f} %)")
    click.echo("integer ops: " + ", ".join(f"{name.removeprefix('relax.')} {count}"
                                            for name, count in sorted(ops.ops.items())))
    click.echo("float islands: " + ", ".join(f"{name.removeprefix('relax.')} {count}"
                                              for name, count in sorted(ops.boundaries.items())))
    click.echo("rewrites applied: " + ", ".join(f"{name} {count}" for name, count in sorted(log.applied.items())))
    for rewrite, reasons in log.reasons().items():
        for reason, count in sorted(reasons.items()):
            click.echo(f"not rewritten by {rewrite}: {count} match(es): {reason}")


@main.command()
def targets() -> None:
    """List the target files: TVM target, cross compiler (and whether it is installed), RPC key."""
    from compile.backend.targets import scan_targets, targets_dir

    folder = scan_targets()
    rows = []
    for spec in folder.specs:
        try:
            spec.tvm_target()  # a file TVM rejects is reported here, not at build time
        except QatieError as exc:
            _warn_skipped(str(exc))
            continue
        try:
            compiler = spec.compiler()
        except QatieError as exc:
            compiler = f"MISSING: {str(exc).split(': ', 1)[1]}"
        if spec.refuse:
            compiler = f"REFUSES TO BUILD: {spec.refuse.split(';')[0]}"
        rows.append((spec.name, spec.rpc_key or "-", str(spec.threads or "all"), compiler, spec.description))
    click.echo(f"targets in {targets_dir()}:")
    for name, key, threads, compiler, description in rows:
        click.echo(f"  {name:22s} rpc key {key:15s} threads {threads:4s} {description}")
        click.echo(f"  {'':22s} compiler: {compiler}")
    _warn_broken(folder)


def _warn_broken(folder) -> None:
    """Broken target files, each by name, on stderr; the valid ones keep working."""
    for reason in folder.broken.values():
        _warn_skipped(reason)


def _warn_skipped(reason: str) -> None:
    _echo_err(f"warning: target file skipped: {reason}")


@main.command(name="check-opencl")
@click.argument("model", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--target", "target_names", multiple=True, default=("mali-opencl", "adreno-opencl"), show_default=True,
              help="OpenCL target file(s) to generate kernels for.")
@click.option("--run", "run_kernels", is_flag=True,
              help="Also run every kernel on the OpenCL device and compare with the CPU build and ONNX Runtime.")
@click.option("--input", "input_npy", type=click.Path(path_type=Path, dir_okay=False),
              help="Input tensor as .npy for --run (default: a held-out photo at the model's size).")
@input_shape_option
def check_opencl_command(model: Path, target_names: tuple[str, ...], run_kernels: bool, input_npy: Path | None,
                         input_shapes: dict) -> None:
    """Compile MODEL's OpenCL kernels with the local OpenCL compiler (e.g. PoCL); name any failure.

    Without --run this proves the generated OpenCL C is valid. With --run every kernel also runs
    on that device (PoCL: a CPU, no fp16, no GPU timing), is checked against the same kernel on
    the CPU, and the model's output against ONNX Runtime and the CPU build, in output steps.
    """
    import tvm

    from compile.backend.pass_config import pass_config
    from compile.backend.schedules import build_with_default_schedules
    from compile.backend.targets import get_target
    from compile.frontend import check_gpu_import, load_and_fold
    from compile.offline.opencl_check import check_opencl, opencl_source

    specs = [get_target(name) for name in target_names]
    for spec in specs:
        if not spec.is_gpu:
            raise QatieError(f"target {spec.name} is not an OpenCL target")
        spec.check_buildable()
        check_gpu_import(model, spec.name)
    if run_kernels:
        from compile.offline.opencl_run import check_model_on_opencl

        passed = [_report_opencl_run(result) for result in check_model_on_opencl(model, specs, input_shapes, input_npy)]
        if not all(passed):
            raise SystemExit(1)
        return
    mod = load_and_fold(model, input_shapes).mod
    failures = 0
    for spec in specs:
        target = spec.tvm_target()
        with tvm.transform.PassContext(config=pass_config(target)):
            result = check_opencl(opencl_source(build_with_default_schedules(mod, target).mod))
        click.echo(f"{spec.name}: {len(result.kernels) - len(result.failed)}/{len(result.kernels)} kernels compile "
                   f"on {result.device}")
        for kernel, error in sorted(result.failed.items()):
            click.echo(f"  FAILED {kernel}: {error}")
        failures += len(result.failed)
    if failures:
        raise SystemExit(1)


def _report_opencl_run(result) -> bool:
    """One target's `check-opencl --run` report; True when everything agrees."""
    compiled = result.run.compile_check
    click.echo(f"{result.target}: {len(compiled.kernels) - len(compiled.failed)}/{len(compiled.kernels)} kernels compile "
               f"on {compiled.device}")
    for kernel, error in sorted(compiled.failed.items()):
        click.echo(f"  FAILED {kernel}: {error}")
    if result.run.output is None:
        return False
    kernels = result.run.kernels.values()
    agreeing = sum(k.agrees for k in kernels)
    click.echo(f"{result.target}: ran {len(result.run.call_order)} kernel calls; {agreeing}/{len(kernels)} kernels agree "
               f"with the same kernel compiled for the CPU")
    for kernel in kernels:
        if not kernel.agrees:
            first = " (first in call order)" if kernel is result.run.first_disagreeing else ""
            click.echo(f"  DISAGREES {kernel.name}{first}: max integer diff {kernel.max_int_diff}, "
                       f"max float diff {100 * kernel.max_float_rel_diff:.3g} % of range")
    for name, agree in result.agreement.items():
        click.echo(f"{result.target}: output vs {name}: max {agree.max_steps:.1f} steps, "
                   f"{100 * agree.within_one_step:.3f} % within 1 step, PSNR {agree.psnr_db:.2f} dB")
    return result.passed


@main.command()
@click.option("--tracker", required=True, help="RPC tracker HOST:PORT.")
def devices(tracker: str) -> None:
    """The device keys an RPC tracker holds, with registered and free device counts."""
    from compile.deploy.rpc import device_counts, parse_tracker, tracker_summary

    address = parse_tracker(tracker)
    counts = device_counts(tracker_summary(address))
    click.echo(f"RPC tracker {address}: {len(counts)} key(s)")
    for key, (registered, free) in counts.items():
        click.echo(f"  {key:24s} {registered} registered, {free} free")


def _estimates_if_emulated(artifact, x, rows: list[dict], model_path: Path | None) -> dict:
    """Emulator timings say nothing of a phone; the instructions it ran do. With an emulated
    device among `rows`: {"estimates": each core's estimate of one inference on this host, with
    the aarch64 estimate of the runtime the artifact's model format ships with (ONNX Runtime,
    LiteRT) on the artifact's model file beside it when that file is there}."""
    if not any(row["emulated"] for row in rows):
        return {}
    from compile.offline.estimate import cores_for, estimate_here

    try:
        models = [artifact.source_model(model_path)]
    except QatieError as exc:
        models = []
        _echo_err(f"note: no peer runtime's estimate beside ours: {exc}")
    return {"estimates": estimate_here(artifact, x, cores_for(artifact, ()), None, _echo_err, models)}


def _placement_options(command):
    """--tracker/--key or --local, and the timing protocol, shared by bench and profile."""
    options = [
        click.argument("artifact", type=click.Path(path_type=Path, file_okay=False)),
        click.option("--tracker", help="RPC tracker HOST:PORT; run on every device under --key."),
        click.option("--key", help="Device key at the tracker (default: the artifact's rpc_key)."),
        click.option("--local", is_flag=True, help="Run on this machine (TVM's in-process RPC session)."),
        click.option("--device-timeout", type=click.FloatRange(min=0), default=60, show_default=True,
                     help="Seconds to wait for a free device."),
        click.option("--session-timeout", type=click.FloatRange(min=1), default=300, show_default=True,
                     help="Seconds one device may take for its whole job (handshake, upload, runs) before it "
                          "counts as lost."),
        click.option("--repeats", type=click.IntRange(min=1), default=10, show_default=True, help="Timed runs."),
        click.option("--warmup", type=click.IntRange(min=0), default=2, show_default=True, help="Untimed runs first."),
        click.option("--min-ms", type=click.IntRange(min=0), default=0, show_default=True,
                     help="Each timed run repeats the call until it lasts this long (for short kernels)."),
        click.option("--threads", type=click.IntRange(min=0),
                     help="Threads the library runs with on the device (default: the target's `threads`, 0 = all cores)."),
        click.option("--input", "input_npy", type=click.Path(path_type=Path, dir_okay=False),
                     help="Input tensor as .npy (default: a held-out photo at the model's size)."),
        click.option("-o", "--out", type=click.Path(path_type=Path, file_okay=False),
                     help="Report folder (default: ARTIFACT/reports)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@main.command()
@_placement_options
@click.option("--model", "--onnx", "onnx_path", type=click.Path(path_type=Path, dir_okay=False),
              help="The model file (QDQ ONNX or TFLite) the artifact was built from (default: the manifest's path).")
@click.option("--ckpt", type=click.Path(path_type=Path, dir_okay=False),
              help="Also compare with the PyTorch QAT model of this checkpoint.")
def bench(artifact: Path, tracker: str | None, key: str | None, local: bool, device_timeout: float,
          session_timeout: float, repeats: int, warmup: int, min_ms: int, threads: int | None, input_npy: Path | None,
          out: Path | None, onnx_path: Path | None, ckpt: Path | None) -> None:
    """Run ARTIFACT on each device: output vs ONNX Runtime (and PyTorch), latency statistics."""
    from compile.deploy.bench import bench_on, pytorch_reference, source_reference
    from compile.deploy.deployment import Deployment
    from compile.deploy.reports import BENCH_FORMATS, bench_table
    from compile.deploy.timing import Timing

    deployment = Deployment.from_options(artifact, tracker, key, local, device_timeout, session_timeout,
                                         Timing(warmup, repeats, min_ms), threads, out)
    loaded = deployment.artifact
    x = deployment.model_input(input_npy)
    references = source_reference(loaded, onnx_path, x)
    if ckpt:
        references["pytorch"] = pytorch_reference(ckpt, x)
    rows = deployment.run(lambda device: bench_on(device, loaded, x, references, deployment.timing, deployment.threads),
                          _echo_err)
    report = deployment.report(rows, **_estimates_if_emulated(loaded, x, rows, onnx_path))
    deployment.write(report, BENCH_FORMATS)
    click.echo(bench_table(report))


@main.command()
@_placement_options
@click.option("--model", "--onnx", "onnx_path", type=click.Path(path_type=Path, dir_okay=False),
              help="The artifact's model file, for its peer runtime's estimate (ONNX Runtime, LiteRT) on an emulated "
                   "device (default: the manifest's path).")
def profile(artifact: Path, tracker: str | None, key: str | None, local: bool, device_timeout: float,
            session_timeout: float, repeats: int, warmup: int, min_ms: int, threads: int | None,
            input_npy: Path | None, out: Path | None, onnx_path: Path | None) -> None:
    """Per-kernel time of ARTIFACT on each device: table, CSV, JSON, Chrome trace, PNG."""
    from compile.deploy.deployment import Deployment
    from compile.deploy.profile import profile_on
    from compile.deploy.reports import PROFILE_FORMATS, profile_tables
    from compile.deploy.timing import Timing

    deployment = Deployment.from_options(artifact, tracker, key, local, device_timeout, session_timeout,
                                         Timing(warmup, repeats, min_ms), threads, out)
    loaded = deployment.artifact
    x = deployment.model_input(input_npy)
    rows = deployment.run(lambda device: profile_on(device, loaded, x, deployment.timing, deployment.threads),
                          _echo_err)
    report = deployment.report(rows, call_order=loaded.manifest.kernels.call_order,
                               **_estimates_if_emulated(loaded, x, rows, onnx_path))
    written = deployment.write(report, PROFILE_FORMATS)
    click.echo(profile_tables(report))
    click.echo(f"written: {', '.join(str(path) for path in written)}")


@main.command()
@click.argument("artifact", type=click.Path(path_type=Path, file_okay=False))
@click.option("--core", "core_names", multiple=True,
              help="ARM core whose llvm-mca model to use: cortex-a53, cortex-a55, cortex-a76 (repeatable; "
                   "default: every one the build can run on).")
@click.option("--clock-ghz", type=click.FloatRange(min=0.1, max=10), help="Clock for the milliseconds (default: each core's stated typical clock).")
@click.option("--input", "input_npy", type=click.Path(path_type=Path, dir_okay=False),
              help="Input .npy (default: the reference photo at the model's size).")
@click.option("--peer", "--onnxruntime", "with_peer", is_flag=True,
              help="Also estimate the runtime the artifact's model format ships with, on the same file under the "
                   "same plugin: ONNX Runtime for a QDQ ONNX model, LiteRT (XNNPACK) for a TFLite one.")
@click.option("--model", "--onnx", "model_path", type=click.Path(path_type=Path, dir_okay=False),
              help="The model file the artifact was built from (default: the path its manifest names).")
@click.option("--onnxruntime-model", "ort_models", multiple=True, type=click.Path(path_type=Path, dir_okay=False),
              help="Another export of the same network to estimate in ONNX Runtime (e.g. `qatie export --fp32`, "
                   "or a uint8-activation model from its quantize_static); repeatable, implies --peer.")
@click.option("-o", "--out", type=click.Path(path_type=Path, file_okay=False), help="Write estimate.json here.")
def estimate(artifact: Path, core_names: tuple[str, ...], clock_ghz: float | None, input_npy: Path | None,
             with_peer: bool, model_path: Path | None, ort_models: tuple[Path, ...], out: Path | None) -> None:
    """Estimated cycles per kernel of an aarch64 ARTIFACT on ARM cores (qemu block counts, llvm-mca)."""
    import json

    from compile.artifact import load_artifact
    from compile.deploy.inputs import model_input
    from compile.deploy.reports import estimate_table
    from compile.offline.arm64_peers import check_interface
    from compile.offline.estimate import cores_for, estimate_here
    from qatie.atomic import write_text_atomic

    if out:
        check_writable_folder(out)
    with_peer = with_peer or bool(ort_models)
    if model_path and not with_peer:
        raise QatieError("--model names the file the peer runtime runs; add --peer")
    loaded = load_artifact(artifact)
    cores = cores_for(loaded, core_names)
    source = Path(loaded.manifest.model.path)
    if ort_models and source.suffix.lower() != ".onnx":
        raise QatieError(f"--onnxruntime-model: {artifact} is built from {source.name}, not an ONNX model; "
                         f"other exports are compared in ONNX Runtime with an ONNX build (--peer alone runs LiteRT)")
    models = [loaded.source_model(model_path), *ort_models] if with_peer else []
    for model in ort_models:
        check_interface(model, loaded.manifest.model)
    estimates = estimate_here(loaded, model_input(loaded.manifest.model.inputs[0], input_npy), cores, clock_ghz,
                              _echo_err, models)
    click.echo(estimate_table(estimates, f"{loaded.library} ({loaded.target_name})"))
    if out:
        out.mkdir(parents=True, exist_ok=True)
        report = {"artifact": str(artifact), "target": loaded.target_name, "threads": 1, "estimates": estimates}
        write_text_atomic(json.dumps(report, indent=2), out / "estimate.json")
        click.echo(f"written: {out / 'estimate.json'}")


@main.group()
def rpc() -> None:
    """TVM's RPC tracker and server, bound to 127.0.0.1 unless --host says otherwise.

    An RPC server runs whatever library it is sent: never expose it on a public interface.
    """


@rpc.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=9190, show_default=True)
def tracker(host: str, port: int) -> None:
    """Start an RPC tracker (TVM's) in this process; it serves until stopped."""
    from compile.deploy.servers import public_warning, serve_tracker

    _warn(public_warning(host))
    serve_tracker(host, port)


@rpc.command()
@click.option("--tracker", "tracker_address", required=True, help="RPC tracker HOST:PORT to register with.")
@click.option("--key", required=True, help="Device key to register under, e.g. a target file's rpc_key.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(1, 65535 - 100), default=9090, show_default=True,
              help="First port to try (up to 100 above it).")
def server(tracker_address: str, key: str, host: str, port: int) -> None:
    """Start an RPC server for this machine (TVM's) in this process, registered with a tracker."""
    from compile.deploy.rpc import parse_tracker
    from compile.deploy.servers import public_warning, serve_rpc

    address = parse_tracker(tracker_address)
    _warn(public_warning(host))
    serve_rpc(str(address), key, host, port)


def _warn(warning: str | None) -> None:
    if warning:
        _echo_err(warning)


@main.group()
def emulate() -> None:
    """Stand-in devices on this machine, to check a build before a phone is at hand.

    Timings measured on them are emulator timings, labelled so everywhere, never device figures.
    """


@emulate.command()
@click.option("--tracker", "tracker_address", required=True, help="RPC tracker HOST:PORT to register with.")
@click.option("--target", "target_name", default="arm64-linux", show_default=True,
              help="Target file whose CPU (its qemu_cpu) to emulate.")
@click.option("--cpu", help="qemu CPU model instead of the target's, e.g. cortex-a53, cortex-a76, neoverse-n1.")
@click.option("--key", help="Device key (default: the target's rpc_key + '-emu').")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(min=0), default=0, show_default=True, help="Port (0: any free one).")
def arm64(tracker_address: str, target_name: str, cpu: str | None, key: str | None, host: str, port: int) -> None:
    """An aarch64 device under qemu-aarch64, registered with a tracker; serves until interrupted."""
    import logging

    from compile.backend.targets import get_target
    from compile.deploy.rpc import parse_tracker, tracker_summary
    from compile.deploy.servers import public_warning, stop_descendants_on_signal
    from compile.offline.arm64_runtime import ensure_runtime
    from compile.offline.emulator import serve

    spec = get_target(target_name)
    qemu_cpu = cpu or spec.qemu_cpu
    if not qemu_cpu:
        raise QatieError(f"target {spec.name} has no qemu_cpu; pass --cpu (e.g. cortex-a53)")
    address = parse_tracker(tracker_address)
    tracker_summary(address)  # a dead tracker is a one-line error now, not a silent retry loop
    runtime = ensure_runtime(_echo_err)
    _warn(public_warning(host))
    stop_descendants_on_signal()  # a session running under qemu ends with the device
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    serve(runtime, qemu_cpu, address, key or f"{spec.rpc_key or spec.name}-emu", host, port)
