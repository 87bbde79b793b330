"""int8 TFLite models in (`compile.frontend.tflite`): the paper's own published model (GenAI4E/
QATIE, shipped in bench/anchors/) imported operator by operator as LiteRT's reference kernels
compute it, checked op by op and end to end against those kernels, bit for bit; its build on
the packed int8 kernels; TFLite's fixed-point arithmetic against its C definition, and its int64
chains narrowed to int32 by the backend; hostile files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tvm
from ai_edge_litert.interpreter import Interpreter, OpResolverType
from tvm import relax

from compile.frontend.tflite.fixed_point import (
    Multiplier,
    multiply_by_quantized_multiplier,
    quantize_multiplier,
)
from compile.frontend.tflite.graph import read_graph
from compile.frontend.tflite.importer import to_relax
from qatie.references import litert_output, reference_input
from tests.helpers import (
    PAPER_MODEL,
    assert_one_line_error,
    compile_here,
    run_compile,
    run_library,
)
from tests.tflite_models import mobile_block

pytestmark = pytest.mark.xdist_group("tflite")


def _photo(size: int = 100) -> np.ndarray:
    return np.ascontiguousarray(reference_input(size, size).transpose(0, 2, 3, 1))  # NHWC, as the model takes it


def test_multiply_by_quantized_multiplier_is_tflites_double_rounding():
    """The vector form (one int64 multiply, shifts) against the scalar transliteration of
    TFLite's C++ (SaturatingRoundingDoublingHighMul, then RoundingDivideByPOT), on random values
    and on the ties where the two roundings differ from one."""
    rng = np.random.default_rng(0)
    reals = np.exp(rng.uniform(-14, 4, 400))
    for real in [*reals, 0.5, 1.0, 2.0**-20, 0.75]:
        q, shift = quantize_multiplier(float(real))
        assert q == 0 or 2**30 <= q < 2**31, (real, q)
        multiplier = Multiplier.from_pairs([(q, shift)])
        x = np.concatenate([rng.integers(-(2**20), 2**20, 50), rng.integers(-300, 300, 50),
                            [0, 1, -1, 2**19, -(2**19), 3, -3, 5, -5]])
        want = [multiply_by_quantized_multiplier(int(v), q, shift) for v in x]
        assert multiplier.apply(x).tolist() == want, real
    # QuantizeMultiplier's rounding to 2^31 moves to the next power of two
    assert quantize_multiplier(1 - 2**-40) == (2**30, 1)


def _operators_differing(model: Path, x: np.ndarray) -> dict[str, float]:
    """Each operator imported alone, fed the tensors LiteRT's reference kernels computed before
    it: {operator: max difference} where its output is not theirs bit for bit."""
    graph = read_graph(model)
    interpreter = Interpreter(str(model), experimental_op_resolver_type=OpResolverType.BUILTIN_REF,
                              experimental_preserve_all_tensors=True)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    target = tvm.target.Target({"kind": "llvm"})
    differing = {}
    for op in graph.operators:
        vm = relax.VirtualMachine(tvm.compile(to_relax(graph, (op.index,)), target=target), tvm.cpu())
        inputs = [tvm.runtime.tensor(np.ascontiguousarray(interpreter.get_tensor(i)))
                  for i in op.inputs if i >= 0 and graph.tensors[i].data is None]
        got, want = vm["main"](*inputs).numpy(), interpreter.get_tensor(op.outputs[0])
        if not np.array_equal(got, want):
            differing[f"{op.index} {op.code}"] = float(np.abs(got.astype(np.float64) - want).max())
    return differing


def test_every_operator_of_the_papers_model_equals_litert_reference_kernels():
    """All 139 operators, one by one: a difference is pinned to one op."""
    assert len(read_graph(PAPER_MODEL).operators) == 139
    assert not _operators_differing(PAPER_MODEL, _photo())


def test_depthwise_fully_connected_and_pooling_equal_litert_reference_kernels(tmp_path):
    """Operators the paper's model does not use (a SAME conv with RELU, a stride-2 depthwise conv
    with RELU6, a global average pool, reshape, fully connected), in small models written here
    with random weights and float scales: op by op, and built for this host end to end."""
    for seed in range(3):
        model = tmp_path / f"block{seed}.tflite"
        model.write_bytes(mobile_block(seed))
        x = np.random.default_rng(seed).uniform(0, 1, (1, 12, 12, 3)).astype(np.float32)
        assert not _operators_differing(model, x), seed
    built = run_compile("--target", "x86-host", model, "-o", tmp_path / "x86", "--no-tuning")
    assert built.returncode == 0, built.stderr
    for image in (x, np.zeros_like(x), np.ones_like(x)):
        np.testing.assert_array_equal(run_library(tmp_path / "x86" / "model.so", image), litert_output(model, image))


@pytest.fixture(scope="module")
def paper_x86(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("paper") / "x86"
    result = run_compile("--target", "x86-host", PAPER_MODEL, "-o", out, "--no-tuning")
    assert result.returncode == 0, result.stderr
    assert "35 of 35 convs integer" in result.stdout, result.stdout
    return out


@pytest.mark.long
def test_the_papers_model_builds_on_packed_kernels_and_equals_litert_reference_kernels(paper_x86, tmp_path):
    """The whole model, built for this host: every conv on the CPU's int8 dot product, the
    output equal to LiteRT's reference kernels on a photo and on noise; `bench` compares with
    the same reference by itself (the manifest names the .tflite)."""
    manifest = json.loads((paper_x86 / "manifest.json").read_text())
    convs = [k for k in manifest["kernels"]["kernels"] if "conv2d" in k["name"]]
    assert len(convs) >= 35 and all(k["dot_product"] for k in convs), [k["name"] for k in convs if not k["dot_product"]]
    assert manifest["model"]["inputs"][0]["layout"] == "NHWC"
    noise = np.random.default_rng(1).uniform(0, 1, (1, 100, 100, 3)).astype(np.float32)
    for x in (_photo(), noise):
        np.testing.assert_array_equal(run_library(paper_x86 / "model.so", x), litert_output(PAPER_MODEL, x))
    result = run_compile("bench", paper_x86, "--local", "--repeats", 2, "--warmup", 1, "-o", tmp_path)
    assert result.returncode == 0, result.stderr
    (row,) = json.loads((tmp_path / "bench.json").read_text())["devices"]
    assert row["agreement"]["litert-reference"]["max_steps"] == 0, row


def test_a_tflite_model_that_cannot_be_imported_is_a_one_line_error(tmp_path):
    """A truncated file, another format under the suffix, an operator without a converter
    (all listed), and --input-shape (a TFLite model's shapes are fixed): exit 2, one line."""
    data = PAPER_MODEL.read_bytes()
    truncated = tmp_path / "truncated.tflite"
    truncated.write_bytes(data[: len(data) // 3])
    onnx_bytes = tmp_path / "other.tflite"
    onnx_bytes.write_bytes(b"\x08\x07\x12\x04onnx" * 4)
    unsupported = tmp_path / "gelu.tflite"
    unsupported.write_bytes(_with_operator_renamed(data, "TANH", "GELU"))
    cases = [
        ((truncated,), "not a readable TFLite model"),
        ((onnx_bytes,), "not a TFLite flatbuffer"),
        ((unsupported,), "unsupported TFLite operators: GELU (operator 3, 7, 33, ...)"),
        ((PAPER_MODEL, "--input-shape", "x:1x64x64x3"), "--input-shape does not apply to a TFLite model"),
        ((tmp_path / "model.pb",), "unknown model format '.pb'"),
    ]
    (tmp_path / "model.pb").write_bytes(b"x")
    for args, needle in cases:
        result = compile_here("--target", "x86-host", *args, "-o", tmp_path / "out")
        assert_one_line_error(result.stderr, result.returncode, needle)
        assert not (tmp_path / "out").exists()
    result = compile_here("inspect", unsupported)
    assert_one_line_error(result.stderr, result.returncode, "GELU")
    # OpenCL: TVM's GPU schedule rules assert on these kernels, so the build says so first
    for args in (("--target", "mali-opencl", PAPER_MODEL, "-o", tmp_path / "out"), ("check-opencl", PAPER_MODEL)):
        result = compile_here(*args)
        assert_one_line_error(result.stderr, result.returncode, "TFLite imports do not build for OpenCL targets")
    assert not (tmp_path / "out").exists()


def _with_operator_renamed(data: bytes, old: str, new: str) -> bytes:
    """The flatbuffer with operator code `old` changed in place to builtin `new`."""
    import tflite
    from tflite.BuiltinOperator import BuiltinOperator

    model = tflite.Model.GetRootAsModel(data, 0)
    patched = bytearray(data)
    for k in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(k)
        if max(code.BuiltinCode(), code.DeprecatedBuiltinCode()) != getattr(BuiltinOperator, old):
            continue
        new_code = getattr(BuiltinOperator, new)
        for field, size in ((4, 1), (10, 4)):  # DeprecatedBuiltinCode (int8), BuiltinCode (int32)
            offset = code._tab.Offset(field)
            if offset:
                value = min(new_code, 127) if size == 1 else new_code
                patched[code._tab.Pos + offset: code._tab.Pos + offset + size] = value.to_bytes(size, "little", signed=True)
    return bytes(patched)


def _int64_ops(mod: tvm.IRModule) -> int:
    found = []
    relax.analysis.post_order_visit(mod["main"], lambda e: found.append(
        isinstance(e, relax.Call) and isinstance(e.ty, relax.TensorType) and str(e.ty.dtype) == "int64"))
    return sum(found)


def test_requantize_chains_narrowed_to_int32_compute_what_int64_computes():
    """`compile.backend.narrow_integers` on requantizes as the import writes them (per-channel
    multipliers, one above 1, with its left shift folded in): what provably fits int32 is computed
    there, a value that does not (a product beyond 2^31) stays int64, and every code of the input
    gives the same output before and after."""
    from compile.backend.narrow_integers import narrow_integers
    from compile.frontend.tflite.fixed_point import Requantize

    shape, channel = (1, 4, 16, 16), (1, 4, 1, 1)
    builder = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape, "int8"))
    with builder.function("main", [x]):
        with builder.dataflow():
            codes = builder.emit(relax.op.subtract(relax.op.astype(x, "int64"), relax.const(-7, "int64")))
            small = Requantize(Multiplier.of([0.37, 1.9, 0.002, 3.5]), 3, -128, 127, "int8")
            wide = builder.emit(relax.op.multiply(codes, relax.const(2**28, "int64")))  # up to 2^35
            outputs = [builder.emit(small.emit(codes, channel)),
                       builder.emit(Requantize(Multiplier.of([0.37] * 4), -1, -128, 127, "int8").emit(wide, channel))]
            result = builder.emit_output(relax.Tuple(outputs))
        builder.emit_func_output(result)
    wide_mod = relax.transform.Normalize()(builder.get())
    narrow_mod = narrow_integers()(wide_mod)
    assert 0 < _int64_ops(narrow_mod) < _int64_ops(wide_mod)
    codes = np.resize(np.arange(-128, 128, dtype=np.int8), shape)
    results = []
    for mod in (wide_mod, narrow_mod):
        vm = relax.VirtualMachine(tvm.compile(mod, target=tvm.target.Target({"kind": "llvm"})), tvm.cpu())
        results.append([out.numpy() for out in vm["main"](tvm.runtime.tensor(codes))])
    assert all(np.array_equal(a, b) for a, b in zip(*results))
    assert len(np.unique(results[0][0])) > 100  # the outputs vary: the chain is exercised


def test_the_narrowing_intervals_bound_every_result():
    """Each op's interval in `narrow_integers` (what decides that int32 is exact) against every
    result of small operand ranges, negative ones included."""
    import itertools

    from compile.backend.narrow_integers import BINARY, Interval

    ranges = [(-9, -3), (-5, 4), (-1, 0), (0, 0), (2, 11), (-64, -1), (1, 3)]
    ops = {"relax.add": np.add, "relax.subtract": np.subtract, "relax.multiply": np.multiply,
           "relax.minimum": np.minimum, "relax.maximum": np.maximum, "relax.right_shift": np.right_shift,
           "relax.bitwise_and": np.bitwise_and}
    assert set(ops) == set(BINARY)
    for name, (a, b) in itertools.product(ops, itertools.product(ranges, repeat=2)):
        bound = BINARY[name](Interval(*a), Interval(*b))
        if bound is None:
            continue
        x, y = np.meshgrid(np.arange(a[0], a[1] + 1), np.arange(b[0], b[1] + 1))
        values = ops[name](x, y)
        assert bound.low <= values.min() and values.max() <= bound.high, (name, a, b, bound)
