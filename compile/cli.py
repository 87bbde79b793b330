"""`qatie-compile`: per-target compilation of QDQ ONNX models. User mistakes exit with code 2."""

from __future__ import annotations

import re
from pathlib import Path

import click

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
@click.option("--emit-source", is_flag=True, help="Also write the generated kernels (LLVM asm / OpenCL C).")
def build(model: Path, target_name: str, out: Path, input_shapes: dict, emit_source: bool) -> None:
    """Compile MODEL for a target: OUT/model.so and OUT/manifest.json."""
    from compile.build import build as run_build
    from compile.targets import get_target

    manifest = run_build(model, get_target(target_name), out, input_shapes, emit_source)
    integer = manifest["integer"]
    click.echo(
        f"{out}/model.so for {target_name}: {integer['integer_convs']} of "
        f"{integer['integer_convs'] + integer['float_convs']} convs integer "
        f"({100 * integer['integer_mac_fraction']:.1f} % of conv MACs), built in {manifest['build_seconds']} s"
    )


@main.command()
@click.argument("model", type=click.Path(path_type=Path, dir_okay=False))
@input_shape_option
def inspect(model: Path, input_shapes: dict) -> None:
    """How many conv MACs run in integer arithmetic after QDQ folding, per target."""
    from compile.build import load_and_fold
    from compile.inspect_macs import count_conv_macs
    from compile.targets import all_targets

    _, mod, log = load_and_fold(model, input_shapes)
    macs = count_conv_macs(mod)
    total = macs.integer_macs + macs.float_macs
    # Folding runs before any target-specific pass, so every target gets the same split.
    for spec in all_targets():
        click.echo(
            f"{spec.name:22s} integer convs {macs.integer_convs:3d}/{macs.integer_convs + macs.float_convs:<3d} "
            f"integer MACs {macs.integer_macs:,}/{total:,} ({100 * macs.integer_fraction:.1f} %)"
        )
    for reason in sorted(set(log.skipped)):
        click.echo(f"left in float: {log.skipped.count(reason)} conv(s): {reason}")


@main.command()
def targets() -> None:
    """List the target files: TVM target, cross compiler (and whether it is installed), RPC key."""
    from compile.targets import all_targets, targets_dir

    rows = []
    for spec in all_targets():
        spec.tvm_target()  # a file TVM rejects is an error here, not at build time
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


@main.command(name="check-opencl")
@click.argument("model", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--target", "target_names", multiple=True, default=("mali-opencl", "adreno-opencl"), show_default=True,
              help="OpenCL target file(s) to generate kernels for.")
@input_shape_option
def check_opencl_command(model: Path, target_names: tuple[str, ...], input_shapes: dict) -> None:
    """Compile MODEL's OpenCL kernels with the local OpenCL compiler (e.g. PoCL); name any failure.

    Proves the generated OpenCL C is valid; it does not run the kernels or check their numbers.
    """
    from compile.build import load_and_fold
    from compile.cpu_schedule import build_with_default_schedules
    from compile.opencl_check import check_opencl, opencl_source
    from compile.targets import get_target

    _, mod, _ = load_and_fold(model, input_shapes)
    failures = 0
    for name in target_names:
        spec = get_target(name)
        if spec.target.get("kind") != "opencl":
            raise QatieError(f"target {name} is not an OpenCL target")
        spec.check_buildable()
        result = check_opencl(opencl_source(build_with_default_schedules(mod, spec.tvm_target())))
        click.echo(f"{name}: {len(result.kernels) - len(result.failed)}/{len(result.kernels)} kernels compile on {result.device}")
        for kernel, error in sorted(result.failed.items()):
            click.echo(f"  FAILED {kernel}: {error}")
        failures += len(result.failed)
    if failures:
        raise SystemExit(1)
