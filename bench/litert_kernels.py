"""How far LiteRT's own kernel families agree on an int8 TFLite model: its reference kernels
(`BUILTIN_REF`: TFLite's definition of each quantized operator), its optimized builtin kernels
and XNNPACK (LiteRT's default), each run on the reference photo at the model's size. For each
pair: the output's agreement in output steps; for the two builtin families, whose intermediate
tensors LiteRT keeps, every operator whose int8 output differs (share of elements, largest
difference in codes), in graph order. A compiler asked to "match LiteRT" must choose which
LiteRT, and reproduce that family's integer rounding op by op: this shows how far apart the
choices are and where they part. Writes `litert_kernels.json` + `.md` + `.png`.

    pip install -e '.[peers]'
    python bench/litert_kernels.py --tflite bench/anchors/qatie_c32_int8_100x100.tflite

(The reference kernels are slow: about 1 GMAC/s, so the paper's 1920x1080 model takes minutes.)
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import click
import numpy as np
from host_latency import litert_interpreter, tflite_size, write_report

FAMILIES = {"reference": "BUILTIN_REF", "optimized": "BUILTIN_WITHOUT_DEFAULT_DELEGATES", "xnnpack": "BUILTIN"}
PAIRS = (("optimized", "reference"), ("xnnpack", "reference"), ("xnnpack", "optimized"))
PER_OP = ("optimized", "reference")  # XNNPACK replaces the graph: its intermediate tensors are not kept


@dataclass(frozen=True)
class OpDifference:
    """One operator whose output differs between two families."""

    index: int
    op: str
    differing: float  # share of the output's elements
    max_codes: float  # largest difference, in the output's codes (in its values for a float output)
    # share of the output's elements that differ although what they are computed from is
    # identical in both families (the operator's own kernels round differently): every element
    # when all inputs are identical; for an elementwise operator, elements whose input is; else None
    own: float | None


def _run(tflite: Path, family: str, x: np.ndarray):
    """The interpreter of `family` after one invoke on NCHW `x`, all intermediate tensors kept."""
    from ai_edge_litert.interpreter import OpResolverType

    interpreter = litert_interpreter(tflite, x, 1, experimental_preserve_all_tensors=True,
                                     experimental_op_resolver_type=getattr(OpResolverType, FAMILIES[family]))
    interpreter.invoke()
    return interpreter


def _graph(interpreter) -> list[tuple[str, list[int], int]]:
    """(operator name, input tensors, first output tensor) in graph order. LiteRT has no public
    operator list; `_get_ops_details` is the one its own tools use (of a run without a delegate,
    which would replace the operators)."""
    return [(d["op_name"], [int(i) for i in d["inputs"]], int(d["outputs"][0]))
            for d in interpreter._get_ops_details()]


def _output_step(interpreter, ops: list[tuple[str, list[int], int]]) -> float:
    """One level of the output grid: the output's own scale, or, for a float output made by
    DEQUANTIZE, the scale of the codes it dequantizes."""
    detail = interpreter.get_output_details()[0]
    if detail["dtype"] != np.float32:
        return float(detail["quantization"][0])
    name, inputs, _ = next(op for op in ops if op[2] == detail["index"])
    if name != "DEQUANTIZE":
        raise click.ClickException(f"the output is float and not made by DEQUANTIZE ({name}): it has no step")
    scales = {t["index"]: t["quantization"][0] for t in interpreter.get_tensor_details()}
    return float(scales[inputs[0]])


def _op_differences(a, b, ops: list[tuple[str, list[int], int]]) -> list[OpDifference]:
    def differs(tensor: int) -> np.ndarray:
        x, y = a.get_tensor(tensor), b.get_tensor(tensor)
        wide = np.float64 if x.dtype == np.float32 else np.int64
        return np.abs(x.astype(wide) - y.astype(wide))

    found = []
    for index, (name, inputs, tensor) in enumerate(ops):
        diff = differs(tensor)
        if not (diff.size and diff.max() > 0):
            continue
        input_diffs = [differs(t) for t in inputs if t >= 0]
        if not any(d.any() for d in input_diffs):
            own = float(np.mean(diff > 0))
        elif len(input_diffs) == 1 and input_diffs[0].shape == diff.shape:
            own = float(np.mean((diff > 0) & (input_diffs[0] == 0)))
        else:
            own = None
        found.append(OpDifference(index, name, float(np.mean(diff > 0)), float(diff.max()), own))
    return found


def measure(tflite: Path) -> dict:
    from qatie.references import agreement, reference_input

    height, width = tflite_size(tflite)
    x = reference_input(height, width)
    runs = {family: _run(tflite, family, x) for family in FAMILIES}
    ops = _graph(runs["reference"])
    outputs = {f: r.get_tensor(r.get_output_details()[0]["index"]) for f, r in runs.items()}
    step = _output_step(runs["reference"], ops)
    pairs = {f"{a} vs {b}": agreement(outputs[a], outputs[b], step).as_dict() for a, b in PAIRS}
    per_op = _op_differences(runs[PER_OP[0]], runs[PER_OP[1]], ops)
    return {"tflite": str(tflite), "size": f"{height}x{width}", "operators": len(ops), "output_step": step,
            "outputs": pairs, "per_op": {"pair": " vs ".join(PER_OP), "operators_differing": len(per_op),
                                         "differences": [asdict(d) for d in per_op]}}


def _table(report: dict) -> str:
    lines = [f"Measured with `{report['command']}`, 1 thread, on the reference photo.", ""]
    for model in report["models"]:
        heading = (f"**{model['tflite']}** ({model['size']}, {model['operators']} operators, output step "
                   f"{model['output_step']:.6g}):")
        lines += [heading, "",
                  "| pair | within 1 output step | max steps | PSNR dB |", "|---|---|---|---|"]
        lines += [f"| {pair} | {100 * a['within_one_step']:.3f} % | {a['max_steps']:.0f} | {a['psnr_db']:.2f} |"
                  for pair, a in model["outputs"].items()]
        per_op = model["per_op"]
        own = sorted({d["op"] for d in per_op["differences"] if d["own"]})
        summary = (f"{per_op['pair']}: {per_op['operators_differing']} of {model['operators']} operators' "
                   f"outputs differ; operators whose own kernels round differently (outputs differing where "
                   f"their inputs do not): {', '.join(own) or 'none'}. The first ten:")
        lines += ["", summary, "",
                  "| # | operator | elements differing | of them on identical inputs | max difference (codes) |",
                  "|---|---|---|---|---|"]
        lines += [f"| {d['index']} | {d['op']} | {100 * d['differing']:.3f} % | {_percent(d['own'])} | "
                  f"{d['max_codes']:g} |" for d in per_op["differences"][:10]]
        lines.append("")
    return "\n".join(lines)


def _percent(share: float | None) -> str:
    return "-" if share is None else f"{100 * share:.3f} %"


def _plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    for model in report["models"]:
        differences = model["per_op"]["differences"]
        ax.semilogy([d["index"] for d in differences], [d["differing"] for d in differences], "o-",
                    label=f"{Path(model['tflite']).name}: {model['per_op']['pair']}")
    ax.set_xlabel("operator (graph order)")
    ax.set_ylabel("share of output elements differing")
    ax.set_title("LiteRT's kernel families, operator by operator")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


@click.command()
@click.option("--tflite", "tflites", multiple=True, required=True,
              type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), default=Path("bench/results"))
def main(tflites: tuple[Path, ...], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    report = {"command": shlex.join(["python", *sys.argv]), "models": [measure(t) for t in tflites]}
    write_report(out, "litert_kernels", report, _table(report), _plot)


if __name__ == "__main__":
    main()
