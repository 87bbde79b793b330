"""The training-deployment gap of a TFLite conversion: a QAT checkpoint's TFLite models (made by
any route, e.g. onnx2tf with TFLite's int8 calibration, as the paper deployed) run with LiteRT,
against the QAT network in PyTorch, in output steps, on the reference photo at each model's
input size. Each model is run with XNNPACK (LiteRT's default) and with the reference kernels.
Also reported: the QAT network with its quantizers off (its float weights), the gap a float
conversion inherits. Writes `tflite_fidelity.json` + `.md` + `.png`.

    pip install -e '.[peers]'
    python bench/tflite_fidelity.py --ckpt out/bench/qatie-c32.pt --tflite MODEL.tflite ...

A route that does not carry the trained quantization re-calibrates every scale, so it cannot
reproduce QAT's rounding; `qatie export` carries it (its compiled model: max 0 steps).
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click
import numpy as np
from host_latency import litert_interpreter, tflite_size, write_report

KERNELS = {"XNNPACK": "AUTO", "reference kernels": "BUILTIN_REF"}


def _litert(tflite: Path, x: np.ndarray, kernels: str) -> np.ndarray:
    """LiteRT's output on NCHW `x` (fed as NHWC, quantized if the model takes codes), as NCHW float."""
    from ai_edge_litert.interpreter import OpResolverType

    interpreter = litert_interpreter(tflite, x, 1,
                                     experimental_op_resolver_type=getattr(OpResolverType, KERNELS[kernels]))
    interpreter.invoke()
    out = interpreter.get_output_details()[0]
    y = interpreter.get_tensor(out["index"]).astype(np.float32)
    if out["dtype"] != np.float32:
        scale, zero = out["quantization"]
        y = (y - zero) * scale
    return y if y.shape[1] == x.shape[1] else y.transpose(0, 3, 1, 2)


def measure(ckpt: Path, tflites: tuple[Path, ...]) -> dict:
    import torch

    from qatie.checkpoint import build_model, load_checkpoint
    from qatie.quant.fake_quant import set_quant_mode
    from qatie.quant.layout import IMAGE_SCALE
    from qatie.references import agreement, reference_input

    checkpoint = load_checkpoint(ckpt)
    qat, weights = build_model(checkpoint), build_model(checkpoint)
    set_quant_mode(qat, "frozen")
    set_quant_mode(weights, "off")
    rows, sizes = [], {}
    for tflite in tflites:
        height, width = tflite_size(tflite)
        size = f"{height}x{width}"
        if size not in sizes:  # the photo, the QAT network's output and its float weights' row, once per size
            x = reference_input(height, width)
            with torch.no_grad():
                sizes[size] = x, qat(torch.from_numpy(x)).numpy()
                float_weights = weights(torch.from_numpy(x)).numpy()
            rows.append({"model": "the QAT network, quantizers off (PyTorch)", "size": size,
                         **agreement(float_weights, sizes[size][1], IMAGE_SCALE).as_dict()})
        x, want = sizes[size]
        rows += [{"model": f"{tflite.name}, LiteRT {kernels}", "size": size,
                  **agreement(_litert(tflite, x, kernels), want, IMAGE_SCALE).as_dict()} for kernels in KERNELS]
    return {"command": shlex.join(["python", *sys.argv]), "checkpoint": str(ckpt), "rows": rows}


def _table(report: dict) -> str:
    heading = (f"Measured with `{report['command']}`: against the QAT network in PyTorch "
               f"({report['checkpoint']}), on the reference photo, in output steps (1/255).")
    lines = [heading, "",
             "| model | size | within 1 output step | max steps | PSNR dB |", "|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['size']} | {100 * r['within_one_step']:.3f} % | {r['max_steps']:.2f} | "
              f"{r['psnr_db']:.2f} |" for r in report["rows"]]
    return "\n".join(lines) + "\n"


def _plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 0.5 + 0.45 * len(report["rows"])))
    labels = [f"{r['model']} ({r['size']})" for r in report["rows"]]
    ax.barh(labels, [100 * r["within_one_step"] for r in report["rows"]])
    ax.set_xlabel("% of outputs within one output step of the QAT network")
    ax.set_xlim(0, 100)
    ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


@click.command()
@click.option("--ckpt", required=True, type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--tflite", "tflites", multiple=True, required=True,
              type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), default=Path("bench/results"))
def main(ckpt: Path, tflites: tuple[Path, ...], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    report = measure(ckpt, tflites)
    write_report(out, "tflite_fidelity", report, _table(report), _plot)


if __name__ == "__main__":
    main()
