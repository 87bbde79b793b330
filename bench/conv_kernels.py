"""One int8 conv, kernel against kernel: each dot-product path this CPU has (every register tile
of our packed conv schedule, and every tile of the Winograd kernel for an int16 dot product)
against ONNX Runtime's float Conv and its QLinearConv (u8 x s8), on the same shape, 1 thread,
timed in interleaved rounds. Writes `conv_kernels.json` + `.md` + `.png`.

    python bench/conv_kernels.py --channels 32 --size 256x256
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

import click
import numpy as np

os.environ.setdefault("TVM_NUM_THREADS", "1")  # before TVM starts its pool

from host_latency import timed_rows, write_report

REPEATS = 15  # interleaved rounds: every kernel runs once per round, so the host's drift hits all alike


def _tvm_runners(channels: int, height: int, width: int) -> dict:
    import tvm

    from compile.backend.dot_products import candidates
    from compile.backend.packed_conv import pack_data, pack_weight, packed_conv_kernel
    from compile.backend.targets import get_target
    from compile.backend.winograd import transform_weight, winograd_conv_kernel

    target = get_target("x86-host").tvm_target()
    rng = np.random.default_rng(0)
    runners = {}
    for dot in candidates(target):
        weight = rng.integers(-64, 65, (channels, channels, 3, 3)).astype(np.int8)
        data = pack_data(np.zeros((1, channels, height + 2, width + 2), np.int8), dot)
        packed = pack_weight(weight, dot)
        out = tvm.runtime.empty((1, channels // dot.lanes, height, width, dot.lanes), "int32")
        runners |= _space_runners(dot, packed_conv_kernel(dot, data.shape, packed.shape), [data, packed, out], target)
        if dot.data_dtype == "int16":  # the exact integer Winograd kernel on the same conv (int8 codes in)
            u = transform_weight(weight, dot, dot.lanes)
            codes = pack_data(np.zeros((1, channels, height + 2, width + 2), np.int8), dot, winograd=True)
            out = tvm.runtime.empty((1, u.shape[2], height // 2, 2, width // 2, 2, dot.lanes), "int32")
            runners |= _space_runners(dot, winograd_conv_kernel(dot, codes.shape, u.shape), [codes, u, out], target)
    return runners


def _space_runners(dot, kernel, args: list, target) -> dict:
    """The kernel compiled with each tile of its tuning space: label -> call."""
    import tvm
    from tvm import s_tir

    from compile.backend.schedules import conv_tiles, packed_conv_space

    sch = s_tir.Schedule(kernel)
    tiles = conv_tiles(sch).tiles
    args = [tvm.runtime.tensor(a) if isinstance(a, np.ndarray) else a for a in args]
    runners = {}
    for tile, space in zip(tiles, packed_conv_space(sch)):
        compiled = tvm.compile(space.mod, target=target)
        label = f"TVM {dot.name}, tile {tile.name}" + (" (default)" if tile == tiles[0] else "")
        runners[label] = lambda compiled=compiled: compiled(*args)
    return runners


def _ort_runners(channels: int, height: int, width: int) -> dict:
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    shape = [1, channels, height + 2, width + 2]
    weight = rng.standard_normal((channels, channels, 3, 3)).astype(np.float32)
    scale = lambda name, v: numpy_helper.from_array(np.array(v, np.float32), name)  # noqa: E731
    zero = lambda name, v, dt: numpy_helper.from_array(np.array(v, dt), name)  # noqa: E731
    float_graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"])], "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(weight, "w")])
    int_graph = helper.make_graph(
        [helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["y"])], "qconv",
        [helper.make_tensor_value_info("x", TensorProto.UINT8, shape)], [helper.make_tensor_value_info("y", TensorProto.UINT8, None)],
        [numpy_helper.from_array(rng.integers(-64, 65, weight.shape).astype(np.int8), "w"), scale("xs", 0.02),
         zero("xz", 128, np.uint8), scale("ws", np.full(channels, 0.01, np.float32)), zero("wz", np.zeros(channels, np.int8), np.int8),
         scale("ys", 0.05), zero("yz", 128, np.uint8)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    runners = {}
    for name, graph, x in (("ONNX Runtime Conv (fp32)", float_graph, rng.standard_normal(shape).astype(np.float32)),
                           ("ONNX Runtime QLinearConv (u8 x s8)", int_graph, rng.integers(0, 256, shape).astype(np.uint8))):
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        runners[name] = lambda session=session, x=x: session.run(None, {"x": x})
    return runners


@click.command()
@click.option("--channels", default=32, type=click.IntRange(min=16))
@click.option("--size", default="256x256")
@click.option("--out", default="bench/results", type=click.Path(path_type=Path, file_okay=False))
def main(channels: int, size: str, out: Path) -> None:
    import tvm

    height, width = (int(v) for v in size.split("x"))
    macs = channels * channels * 9 * height * width
    timed = timed_rows(_tvm_runners(channels, height, width) | _ort_runners(channels, height, width),
                       repeats=REPEATS, min_seconds=0)
    rows = [{"kernel": name, "ms": t["min_ms"], "median_ms": t["median_ms"], "runs": t["runs"],
             "gmac_per_s": macs / t["min_ms"] / 1e6} for name, t in timed.items()]
    report = {"command": "python bench/conv_kernels.py " + shlex.join(sys.argv[1:]),
              "cpu": tvm.target.codegen.llvm_get_system_cpu(), "threads": 1,
              "conv": f"{channels}->{channels} 3x3, {size} output, {macs / 1e9:.3f} GMAC", "rows": rows}
    out.mkdir(parents=True, exist_ok=True)
    lines = [f"Measured with `{report['command']}` on {report['cpu']}, 1 thread, best of {REPEATS} interleaved rounds: "
             f"{report['conv']}.", "", "| kernel | ms | GMAC/s |", "|---|---|---|"]
    lines += [f"| {r['kernel']} | {r['ms']:.2f} | {r['gmac_per_s']:.1f} |" for r in rows]
    write_report(out, "conv_kernels", report, "\n".join(lines) + "\n", _plot)


def _plot(report: dict, path: Path) -> None:
    """GMAC/s per kernel, one bar each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["rows"]
    figure, axis = plt.subplots(figsize=(8, 0.4 * len(rows) + 1.2))
    axis.barh([r["kernel"] for r in rows][::-1], [r["gmac_per_s"] for r in rows][::-1])
    axis.set_xlabel("GMAC/s (1 thread)")
    axis.set_title(f"{report['conv']} on {report['cpu']}")
    figure.tight_layout()
    figure.savefig(path, dpi=110)

if __name__ == "__main__":
    main()
