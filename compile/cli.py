"""`qatie-compile`: per-target compilation of QDQ ONNX models. User mistakes exit with code 2."""

from __future__ import annotations

import click

from qatie.cli import QatieGroup
from qatie.errors import QatieError


@click.group(cls=QatieGroup, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """QATIE compiler: QDQ ONNX to TVM int8 kernels for mobile targets."""


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
        rows.append((spec.name, spec.rpc_key or "-", str(spec.threads or "all"), compiler, spec.description))
    click.echo(f"targets in {targets_dir()}:")
    for name, key, threads, compiler, description in rows:
        click.echo(f"  {name:16s} rpc key {key:15s} threads {threads:4s} {description}")
        click.echo(f"  {'':16s} compiler: {compiler}")
