"""`qatie`: info / train / eval / export. User mistakes end in one line and exit code 2."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import click

from qatie.atomic import check_writable_file
from qatie.errors import QatieError

SIZE_PATTERN = re.compile(r"^(\d+)x(\d+)$")


class QatieGroup(click.Group):
    """Turns QatieError into `error: ...` on stderr with exit code 2, like click's usage errors."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except QatieError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)


def parse_size(_ctx, param: click.Parameter, value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    match = SIZE_PATTERN.match(value)
    if not match:
        raise click.BadParameter(f"'{value}' is not HxW, e.g. 256x256", param=param)
    return int(match.group(1)), int(match.group(2))


def _load(path: Path) -> dict:
    from qatie.checkpoint import load_checkpoint

    return load_checkpoint(path)


@click.group(cls=QatieGroup, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """QATIE: train the gated-encoder enhancement net with int8 QAT and export it as QDQ ONNX."""


@main.command()
@click.option("--width", default=32, show_default=True, type=click.IntRange(min=1), help="Base channel width c.")
@click.option("--size", default="256x256", show_default=True, callback=parse_size, help="Input size HxW for MACs.")
def info(width: int, size: tuple[int, int]) -> None:
    """Parameter count and conv multiply-accumulates per output pixel."""
    from qatie.model import MIN_SIZE, ModelConfig, QATIENet, count_parameters, macs_per_pixel

    if min(size) < MIN_SIZE:
        raise QatieError(f"--size {size[0]}x{size[1]}: both sides must be >= {MIN_SIZE}")
    model = QATIENet(ModelConfig(width=width))
    params, macs = count_parameters(model), macs_per_pixel(model, *size)
    click.echo(f"width {width}: {params:,} parameters ({params / 1e6:.3f} M), {macs / 1e3:.2f} K MAC/pixel at {size[0]}x{size[1]}")


@main.command()
@click.option("-o", "--out", required=True, type=click.Path(path_type=Path, dir_okay=False), help="Checkpoint file to write.")
@click.option("--data", default="synthetic", show_default=True, help="'synthetic' or a DPED-layout folder (phone/ + canon/).")
@click.option("--width", default=32, show_default=True, type=int)
@click.option("--range-method", type=click.Choice(["lsq", "ema"]), default="lsq", show_default=True,
              help="Activation ranges learned (LSQ-style) or EMA-observed during QAT.")
@click.option("--scales", type=click.Choice(["pow2", "float"]), default="pow2", show_default=True,
              help="Power-of-two scales make float and integer kernels agree bit for bit (see README).")
@click.option("--patch", default=64, show_default=True, type=int)
@click.option("--batch", default=8, show_default=True, type=int)
@click.option("--fp32-steps", default=1000, show_default=True, type=int, help="Float pre-training steps (0: QAT from scratch).")
@click.option("--qat-steps", default=500, show_default=True, type=int, help="QAT fine-tuning steps (0: float only).")
@click.option("--lr", default=1e-3, show_default=True, type=float)
@click.option("--qat-lr", default=1e-4, show_default=True, type=float)
@click.option("--ssim-weight", default=0.5, show_default=True, type=float)
@click.option("--calib-batches", default=8, show_default=True, type=int)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--ckpt-every", default=100, show_default=True, type=int)
@click.option("--resume", is_flag=True, help="Continue the run stored in --out with the config it started with.")
def train(out: Path, resume: bool, width: int, range_method: str, scales: str, **options) -> None:
    """FP32 pre-training then QAT fine-tuning; runs data-parallel under torchrun."""
    from qatie.model import ModelConfig
    from qatie.train import TrainConfig
    from qatie.train import train as run_training

    check_writable_file(out)
    cfg = TrainConfig(model=ModelConfig(width=width, range_method=range_method, pow2_scales=scales == "pow2"), **options)
    last = run_training(cfg, out, resume)
    if last:
        click.echo(f"step {last['step']} ({last['phase']}): loss {last['loss']:.4f}, PSNR {last['psnr']:.2f} dB -> {out}")


@main.command(name="eval")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--data", default="synthetic", show_default=True, help="'synthetic' or a DPED-layout folder.")
@click.option("--ptq-batches", default=16, show_default=True, type=click.IntRange(min=1), help="Calibration batches for the PTQ row.")
@click.option("--json", "json_out", type=click.Path(path_type=Path, dir_okay=False), help="Write the table as JSON.")
@click.option("--png", type=click.Path(path_type=Path, dir_okay=False), help="Side-by-side input | FP32 | QAT | target.")
def evaluate(checkpoint: Path, data: str, ptq_batches: int, json_out: Path | None, png: Path | None) -> None:
    """PSNR/SSIM of FP32, PTQ int8 and QAT int8 on held-out pairs."""
    from dataclasses import asdict

    from qatie.evaluate import evaluate as run_eval
    from qatie.evaluate import format_table

    for path, option in ((json_out, "--json"), (png, "--png")):
        if path is not None:
            check_writable_file(path, option)
    ckpt = _load(checkpoint)
    rows, meta = run_eval(ckpt, data, ptq_batches, png)
    click.echo(format_table(rows))
    if json_out is not None:
        from qatie.atomic import write_text_atomic

        payload = {"checkpoint": str(checkpoint), "ptq_batches": ptq_batches, **meta, "rows": [asdict(r) for r in rows]}
        write_text_atomic(json.dumps(payload, indent=2), json_out)


@main.command()
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--size", required=True, callback=parse_size, help="Input size HxW baked into the ONNX graph.")
@click.option("-o", "--out", required=True, type=click.Path(path_type=Path, dir_okay=False))
@click.option("--fp32", is_flag=True, help="Export the float network (no Q/DQ).")
def export(checkpoint: Path, size: tuple[int, int], out: Path, fp32: bool) -> None:
    """QDQ ONNX (opset 20, onnxsim-simplified), verified against ONNX Runtime."""
    check_writable_file(out)  # before importing torch and the exporter
    from qatie.export import export as run_export
    from qatie.references import WITHIN_ONE_STEP_REQUIRED

    convs, verification = run_export(_load(checkpoint), size[0], size[1], out, fp32)
    kind = "float" if fp32 else "QDQ int8, every Conv input and weight through DequantizeLinear"
    click.echo(f"{out}: {convs} Conv ({kind})")
    click.echo(f"  ORT vs PyTorch: {verification.required} [ORT, graph optimizations off: ONNX operator semantics, "
               f"InstanceNorm in one arithmetic on both sides; required >= {100 * WITHIN_ONE_STEP_REQUIRED:g} %]")
    click.echo(f"  ORT vs PyTorch: {verification.as_trained} [the same, PyTorch's own InstanceNorm arithmetic; reported only]")
    click.echo(f"  ORT vs PyTorch: {verification.fused} [ORT default: its fused int8 kernels; reported only]")
