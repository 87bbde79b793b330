"""Standard CNN shapes quantized by ONNX Runtime's own `quantize_static` (QDQ, uint8 activations,
per-channel int8 weights: what a user of ORT's tooling brings), built untuned by `qatie-compile`
for x86-host, against ONNX Runtime int8 on the same file and ORT fp32 on the float file, in one
run, 1 thread. Agreement of TVM's output is reported against three ORT references (the guide's
rule for float-scale models; `qatie.references.OrtMode`): its spec semantics (graph
optimizations off), its integer runtime (the default session), and the integer runtime with its
exact x86 kernels (`session.x64quantprecision=1`; without it, on an AVX2 CPU without VNNI, ORT's
u8 x s8 kernels saturate int16 pair sums). Writes `standard_cnns.json` + `.md` + `.png`.

    python bench/standard_cnns.py

The nets are built here from their published layer shapes (no torchvision in the environment),
with random weights: ResNet-18's stem and first two stages, MobileNetV2's first inverted
residual blocks (depthwise), a VGG-style stack of 3x3 convs; each ends in global average
pooling and a 1000-way Gemm, as their classifiers do.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

import click

os.environ.setdefault("TVM_NUM_THREADS", "1")  # before TVM starts its pool

from host_latency import ORT_FP32, ORT_U8, ort_quantized, timed_rows, write_report

TVM_UNTUNED = "TVM int8 untuned (default schedules)"
SIZE = 224


def _nets():
    import torch
    from torch import nn

    torch.manual_seed(0)  # the same weights every run, so runs compare (the nets are built here)

    def conv(cin, cout, k=3, stride=1, groups=1):
        return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups), nn.ReLU())

    class Basic(nn.Module):
        """ResNet basic block (BatchNorm folded away: inference weights)."""

        def __init__(self, cin, cout, stride):
            super().__init__()
            self.a = conv(cin, cout, 3, stride)
            self.b = nn.Conv2d(cout, cout, 3, 1, 1)
            self.skip = nn.Conv2d(cin, cout, 1, stride) if stride != 1 or cin != cout else nn.Identity()

        def forward(self, x):
            return torch.relu(self.b(self.a(x)) + self.skip(x))

    class InvertedResidual(nn.Module):
        """MobileNetV2 block: 1x1 expand, 3x3 depthwise, 1x1 project (+ residual)."""

        def __init__(self, cin, cout, stride, expand=6):
            super().__init__()
            hidden = cin * expand
            self.body = nn.Sequential(conv(cin, hidden, 1), conv(hidden, hidden, 3, stride, hidden),
                                      nn.Conv2d(hidden, cout, 1))
            self.residual = stride == 1 and cin == cout

        def forward(self, x):
            return x + self.body(x) if self.residual else self.body(x)

    def classifier(channels):
        return [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, 1000)]

    return {
        "resnet18-stages1-2": nn.Sequential(conv(3, 64, 7, 2), nn.MaxPool2d(3, 2, 1), Basic(64, 64, 1), Basic(64, 64, 1),
                                            Basic(64, 128, 2), Basic(128, 128, 1), *classifier(128)),
        "mobilenetv2-blocks1-4": nn.Sequential(conv(3, 32, 3, 2), conv(32, 32, 3, 1, 32), nn.Conv2d(32, 16, 1),
                                               InvertedResidual(16, 24, 2), InvertedResidual(24, 24, 1),
                                               InvertedResidual(24, 32, 2), *classifier(32)),
        "vgg-style-3x3": nn.Sequential(conv(3, 32, 3, 2), conv(32, 64), nn.MaxPool2d(2), conv(64, 64), conv(64, 128),
                                       *classifier(128)),
    }


def _export(net, path: Path) -> None:
    import torch

    torch.onnx.export(net.eval(), torch.zeros(1, 3, SIZE, SIZE), str(path), input_names=["input"],
                      output_names=["output"], opset_version=20, dynamo=False)


def _measure(name: str, fp32: Path, qdq: Path, artifact: Path, step: float) -> dict:
    import onnxruntime as ort
    import tvm
    from tvm import relax

    from qatie.references import OrtMode, agreement, ort_output, reference_input

    x = reference_input(SIZE, SIZE)
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
    sessions = {label: ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
                for label, path in ((ORT_FP32, fp32), (ORT_U8, qdq))}
    vm = relax.VirtualMachine(tvm.runtime.load_module(str(artifact / "model.so")), tvm.cpu())
    x_tvm = tvm.runtime.tensor(x)
    runners = {label: (lambda s=s: s.run(None, {"input": x})) for label, s in sessions.items()}
    runners[TVM_UNTUNED] = lambda: vm["main"](x_tvm)
    rows = timed_rows(runners, repeats=10, min_seconds=2.0)
    got = vm["main"](x_tvm).numpy()
    return {"net": name, "rows": rows, "agreement": {
        "ORT spec semantics": agreement(got, ort_output(qdq, x), step).as_dict(),
        "ORT integer runtime": agreement(got, sessions[ORT_U8].run(None, {"input": x})[0], step).as_dict(),
        "ORT integer runtime, exact kernels": agreement(got, ort_output(qdq, x, OrtMode.EXACT), step).as_dict()}}


def _markdown(report: dict) -> str:
    lines = [(f"Measured with `{report['command']}` on {report['cpu']}, 1 thread, {SIZE}x{SIZE}, "
              "random weights, ORT's `quantize_static` (QDQ, uint8 activations, per-channel int8 weights)."), "",
             ("| net | GMAC | integer MACs | convs on a dot product | ORT fp32 ms | ORT int8 ms | TVM untuned ms | "
              "ORT int8 / TVM | TVM within 1 step of ORT spec / ORT integer runtime / ORT exact integer kernels |"),
             "|---|---|---|---|---|---|---|---|---|"]
    for result in report["results"]:
        rows, agree, build = result["rows"], result["agreement"], result["build"]
        ratio = rows[ORT_U8]["median_ms"] / rows[TVM_UNTUNED]["median_ms"]
        lines.append(f"| {result['net']} | {build['gmac']:.2f} | {100 * build['integer_mac_fraction']:.1f} % | "
                     f"{build['convs_on_dot_products']} of {build['convs']} ({', '.join(build['dot_products'])}) | "
                     f"{rows[ORT_FP32]['median_ms']:.1f} | {rows[ORT_U8]['median_ms']:.1f} | "
                     f"{rows[TVM_UNTUNED]['median_ms']:.1f} | {ratio:.2f}x | "
                     f"{agree['ORT spec semantics']['within_one_step']:.3%} / "
                     f"{agree['ORT integer runtime']['within_one_step']:.3%} / "
                     f"{agree['ORT integer runtime, exact kernels']['within_one_step']:.3%} |")
    lines += ["", ("Medians of >= 10 runs and >= 2 s per runtime, the runtimes of a net timed in interleaved "
                   "rounds; min–max in the JSON. Ratio > 1: TVM faster.")]
    return "\n".join(lines) + "\n"


def _plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [ORT_FP32, ORT_U8, TVM_UNTUNED]
    nets = [r["net"] for r in report["results"]]
    figure, axis = plt.subplots(figsize=(8, 4))
    width = 0.8 / len(labels)
    for k, label in enumerate(labels):
        axis.bar([i + k * width for i in range(len(nets))],
                 [r["rows"][label]["median_ms"] for r in report["results"]], width, label=label)
    axis.set_xticks([i + width for i in range(len(nets))], nets)
    axis.set_ylabel("median ms, 1 thread")
    axis.set_title(f"ORT-quantized CNNs at {SIZE}x{SIZE} on {report['cpu']}")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


@click.command()
@click.option("--work", default="out/bench/cnns", type=click.Path(path_type=Path, file_okay=False))
@click.option("--out", default="bench/results", type=click.Path(path_type=Path, file_okay=False))
def main(work: Path, out: Path) -> None:
    """Export, quantize with ORT, build untuned, measure; write standard_cnns.{json,md,png}."""
    import tvm

    from compile.backend.build import BuildOptions, build
    from compile.backend.targets import get_target

    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for name, net in _nets().items():
        fp32, qdq = work / f"{name}-fp32.onnx", work / f"{name}-ort-u8.onnx"
        _export(net, fp32)
        ort_quantized(fp32, qdq, SIZE, SIZE)
        manifest = build(qdq, get_target("x86-host"), work / name, BuildOptions(use_tuning=False))
        result = _measure(name, fp32, qdq, work / name, manifest.model.output_step)
        result["build"] = {"gmac": (manifest.integer.integer_macs + manifest.integer.float_macs) / 1e9,
                           "integer_mac_fraction": manifest.integer.integer_mac_fraction,
                           "dot_products": sorted({k.dot_product for k in manifest.kernels.kernels if k.dot_product}),
                           "convs_on_dot_products": sum(k.calls for k in manifest.kernels.kernels if k.dot_product),
                           "convs": manifest.integer.integer_convs}
        results.append(result)
        click.echo(f"measured {name}")
    report = {"command": "python " + shlex.join(sys.argv), "cpu": tvm.target.codegen.llvm_get_system_cpu(),
              "results": results}
    write_report(out, "standard_cnns", report, _markdown(report), _plot)


if __name__ == "__main__":
    main()
