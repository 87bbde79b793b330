"""Compiler tests: import, integer folding, numerics against ONNX Runtime, builds, errors."""

import json
import re
import shutil

import numpy as np
import onnx
import pytest
import tvm
from onnx import helper
from tvm import relax

from compile.artifact import Manifest, sha256
from compile.backend.kernel_names import HASH_CHARS, MAX_NAME, short_name
from compile.backend.schedules import build_with_default_schedules
from compile.backend.targets import all_targets, get_target
from compile.frontend.fold import fold_qdq
from compile.frontend.inspect import integer_ops
from compile.frontend.onnx_loader import load_onnx, to_relax
from compile.frontend.rewrites.exact_int8 import ExactInt8
from compile.frontend.rewrites.exact_statistics import ExactStatistics
from compile.frontend.rewrites.integer_arithmetic import IntegerArithmetic
from qatie.references import WITHIN_ONE_STEP_REQUIRED, OrtMode, ort_output
from tests.conv_cases import conv_code
from tests.helpers import assert_one_line_error, compile_here, run_compile, run_library
from tests.qdq_models import float_classifier_net, float_conv_net, ort_quantized

# An FMA-capable x86 target: float contraction is on, so any float rounding difference shows.
FMA_TARGET = {"kind": "llvm", "mcpu": "haswell"}


def _tvm_runner(mod: tvm.IRModule, target: dict):
    """`mod` built as `qatie-compile` builds (with the default CPU schedules), as a function of
    the input."""
    vm = relax.VirtualMachine(build_with_default_schedules(mod, tvm.target.Target(target)), tvm.cpu())
    return lambda x: vm["main"](tvm.runtime.tensor(x)).numpy()


def _output_scale(proto: onnx.ModelProto) -> float:
    made_by = {o: n for n in proto.graph.node for o in n.output}
    dq = made_by[proto.graph.output[0].name]
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in proto.graph.initializer}
    return float(inits[dq.input[1]])


@pytest.fixture(scope="module")
def ort_qdq(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ortq")
    return ort_quantized(float_conv_net(folder / "float.onnx"), folder / "qdq.onnx")


def test_qatie_model_folds_to_100_percent_integer_and_matches_ort_exactly(tiny_onnx, tiny_x86):
    model = load_onnx(tiny_onnx[0])
    folded, log = fold_qdq(to_relax(model))
    ops = integer_ops(folded)
    assert log.applied["integer-conv"] == ops.integer_convs == 35 and ops.float_convs == 0
    assert "integer-conv" not in log.skipped
    assert ops.integer_fraction == 1.0
    # max-pool, the 3 nearest resizes, the 7 concats (5 sharing their quantizer, 2 re-quantized by
    # powers of two) and the 4 tanh (as tables)
    assert ops.ops["relax.nn.max_pool2d"] == 1 and ops.ops["relax.image.resize2d"] == 3
    assert ops.ops["relax.concat"] == 7 and ops.ops["relax.take"] == 4
    assert "exact-int8" not in log.skipped
    assert log.applied["integer-arithmetic"] == 7 and "integer-arithmetic" not in log.skipped  # 5 adds, 2 gates
    assert log.applied["exact-statistics"] == 10  # mean and variance of the 5 InstanceNorms
    x = np.random.default_rng(0).random((1, 3, 40, 36), dtype=np.float32)
    want = ort_output(model.proto.SerializeToString(), x)
    # the library `qatie-compile` built (host CPU: FMA on every x86 host we run, so float
    # contraction is on and any float rounding difference would show)
    steps = np.abs(run_library(tiny_x86[0] / "model.so", x) - want) / _output_scale(model.proto)
    # power-of-two scales: integer kernels and the QDQ float definition agree bit for bit
    assert steps.max() == 0.0


def test_instance_norm_statistics_are_the_exact_values_rounded_once():
    """mean and variance of DQ(int8 codes) from integer sums: numpy's float64 statistics rounded
    to float32, for a count (37 x 53) that is no power of two."""
    codes = np.random.default_rng(7).integers(-128, 128, (1, 4, 37, 53)).astype(np.int8)
    scale, zero = 0.0078125, -9
    builder = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(codes.shape, "int8"))
    with builder.function("main", [x]):
        with builder.dataflow():
            real = builder.emit(relax.op.dequantize(x, relax.const(scale, "float32"), relax.const(zero, "int8"), axis=1))
            stats = [builder.emit(op(real, axis=[2, 3], keepdims=True)) for op in (relax.op.mean, relax.op.variance)]
            out = builder.emit_output(relax.Tuple(stats))
        builder.emit_func_output(out)
    folded, log = fold_qdq(builder.get(), (ExactStatistics(),))
    assert log.applied["exact-statistics"] == 2
    vm = relax.VirtualMachine(build_with_default_schedules(folded, tvm.target.Target(FMA_TARGET)), tvm.cpu())
    mean, variance = (t.numpy() for t in vm["main"](tvm.runtime.tensor(codes)))
    exact = (codes.astype(np.float64) - zero) * scale
    assert np.array_equal(mean, exact.mean(axis=(2, 3), keepdims=True).astype(np.float32))
    assert np.array_equal(variance, exact.var(axis=(2, 3), keepdims=True).astype(np.float32))


def test_a_concat_of_power_of_two_scales_requantizes_on_integer_codes_as_q_and_dq_do():
    """A concat whose inputs' scales are the output's times 2^k (k = -3, -1, 0, 2; zero points
    apart) becomes integer re-quantizes of the codes, equal to the float Q(concat(DQ)) on every
    int8 code, ties rounded to even included; a scale ratio that is no power of two stays float."""
    codes = np.tile(np.arange(-128, 128, dtype=np.int8), (4, 1)).reshape(4, 1, 1, 16, 16)  # every code, per input
    out_scale, out_zero = 2.0 ** -4, -49
    inputs = [(2.0 ** (k - 4), zero) for k, zero in ((-3, 31), (-1, -20), (0, -49), (2, 7))]

    def concat_module(scales):
        builder = relax.BlockBuilder()
        xs = [relax.Var(f"x{i}", relax.TensorType((1, 1, 16, 16), "int8")) for i in range(4)]
        with builder.function("main", xs):
            with builder.dataflow():
                real = [builder.emit(relax.op.dequantize(x, relax.const(scale, "float32"), relax.const(zero, "int8"), axis=1))
                        for x, (scale, zero) in zip(xs, scales, strict=True)]
                joined = builder.emit(relax.op.concat(real, axis=1))
                out = builder.emit_output(relax.op.quantize(joined, relax.const(out_scale, "float32"),
                                                            relax.const(out_zero, "int8"), axis=1, out_dtype="int8"))
            builder.emit_func_output(out)
        return builder.get()

    def run(mod):
        vm = relax.VirtualMachine(build_with_default_schedules(mod, tvm.target.Target(FMA_TARGET)), tvm.cpu())
        return vm["main"](*(tvm.runtime.tensor(c) for c in codes)).numpy()

    module = concat_module(inputs)
    folded, log = fold_qdq(module, (ExactInt8(),))
    assert log.applied["exact-int8"] == 1 and "relax.dequantize" not in folded.script()
    want = np.concatenate([np.clip(np.round((c.astype(np.float64) - zero) * scale / out_scale) + out_zero, -128, 127)
                           for c, (scale, zero) in zip(codes, inputs, strict=True)], axis=1).astype(np.int8)
    assert np.array_equal(run(module), want)  # the float definition (numpy rounds half to even too)
    assert np.array_equal(run(folded), want)
    _, log = fold_qdq(concat_module([*inputs[:3], (0.1, 0)]), (ExactInt8(),))
    assert "exact-int8" not in log.applied and "exact-int8" in log.skipped


@pytest.mark.parametrize(("op", "exponents", "dtypes"), [
    ("add", (-7, -6, -6), ("int8", "int8", "int8")),  # QATIE's residual adds: one input re-scaled
    ("add", (-4, -5, -3), ("int8", "int8", "int8")),  # the output coarser: sums rounded, ties to even
    ("add", (-8, -1, -1), ("uint8", "int8", "uint8")),  # 7 apart: a coarse term shifted 7 up
    ("multiply", (-7, -7, -8), ("int8", "int8", "int8")),  # QATIE's gate products
    ("multiply", (-3, -4, -8), ("int8", "uint8", "int8")),  # the output finer: a left shift, clamped
])
def test_sums_and_products_of_power_of_two_scales_run_on_integer_codes_as_q_and_dq_do(op, exponents, dtypes):
    """Q(DQ(a) + DQ(b)) and Q(DQ(a) * DQ(b)) become integer arithmetic on the codes, equal to the
    float definition for every pair of codes (ties rounded half to even included); a scale that
    is no power of two stays float, and so do sums too far apart for float32 to be exact."""
    t_a, t_b, t_out = dtypes
    zeros = (-7 if t_a == "int8" else 131, 23 if t_b == "int8" else 100, -3 if t_out == "int8" else 120)
    a = np.arange(np.iinfo(t_a).min, np.iinfo(t_a).max + 1).astype(t_a).reshape(1, 1, 256, 1)
    b = np.arange(np.iinfo(t_b).min, np.iinfo(t_b).max + 1).astype(t_b).reshape(1, 1, 1, 256)

    def module(scales):
        builder = relax.BlockBuilder()
        xs = [relax.Var(name, relax.TensorType(x.shape, str(x.dtype))) for name, x in (("a", a), ("b", b))]
        with builder.function("main", xs):
            with builder.dataflow():
                real = [builder.emit(relax.op.dequantize(x, relax.const(s, "float32"), relax.const(z, str(x.ty.dtype))))
                        for x, s, z in zip(xs, scales, zeros, strict=False)]
                value = builder.emit(getattr(relax.op, op)(*real))
                out = builder.emit_output(relax.op.quantize(value, relax.const(scales[2], "float32"),
                                                            relax.const(zeros[2], t_out), out_dtype=t_out))
            builder.emit_func_output(out)
        return builder.get()

    def run(mod):
        vm = relax.VirtualMachine(build_with_default_schedules(mod, tvm.target.Target(FMA_TARGET)), tvm.cpu())
        return vm["main"](tvm.runtime.tensor(a), tvm.runtime.tensor(b)).numpy()

    scales = [2.0 ** p for p in exponents]
    real_a, real_b = ((x.astype(np.float64) - z) * s for x, z, s in zip((a, b), zeros, scales, strict=False))
    value = real_a + real_b if op == "add" else real_a * real_b
    info = np.iinfo(t_out)
    want = np.clip(np.round(value / scales[2]) + zeros[2], info.min, info.max).astype(t_out)  # numpy: half to even
    assert len(np.unique(want)) > 100
    folded, log = fold_qdq(module(scales), (IntegerArithmetic(),))
    assert log.applied["integer-arithmetic"] == 1 and "relax.dequantize" not in folded.script()
    assert np.array_equal(run(module(scales)), want)  # the float build: the definition
    assert np.array_equal(run(folded), want)
    for other in ([0.1, *scales[1:]], [2.0 ** -20, 2.0 ** -4, 2.0 ** -4] if op == "add" else None):
        if other is not None:
            _, log = fold_qdq(module(other), (IntegerArithmetic(),))
            assert "integer-arithmetic" not in log.applied and "integer-arithmetic" in log.skipped


def test_ort_quantize_static_model_uint8_per_channel_matches_ort(ort_qdq):
    model = load_onnx(ort_qdq)
    folded, log = fold_qdq(to_relax(model))
    # 3x3, depthwise stride 2, 1x1; uint8 activations
    assert log.applied["integer-conv"] == 3 and "integer-conv" not in log.skipped
    x = np.random.default_rng(5).random((1, 3, 24, 24), dtype=np.float32)
    got = _tvm_runner(folded, FMA_TARGET)(x)
    # ORT's spec semantics, and its integer runtime with exact kernels (its default x86 kernels
    # without VNNI saturate int16 pair sums: `OrtMode`)
    for mode in (OrtMode.SPEC, OrtMode.EXACT):
        steps = np.abs(got - ort_output(model.proto.SerializeToString(), x, mode)) / _output_scale(model.proto)
        assert np.mean(steps <= 1.0 + 1e-3) >= WITHIN_ONE_STEP_REQUIRED, (mode, steps.max())


def test_a_float_scale_conv_requantizes_with_one_multiply(ort_qdq, tmp_path):
    """Requantize is float(acc) * ((s_x s_w) / s_y), ORT's QLinearConv scale: no division left
    in any conv kernel of a float-scale model (vdivps made the epilogue the costliest part of a
    depthwise conv), and the result is ORT's exact integer runtime's, bit for bit."""
    from compile.backend.build import BuildOptions, build

    build(ort_qdq, get_target("x86-host"), tmp_path / "art", BuildOptions(emit_source=True, use_tuning=False))
    code = conv_code(tmp_path / "art")
    divisions = [conv for conv, (_, body) in code.items() if "divps" in body or "divss" in body]
    assert len(code) == 3 and not divisions, divisions
    x = np.random.default_rng(5).random((1, 3, 24, 24), dtype=np.float32)
    assert np.array_equal(run_library(tmp_path / "art" / "model.so", x), ort_output(ort_qdq, x, OrtMode.EXACT))


@pytest.mark.parametrize(("dot", "rows"), [("vnni", {25: 25, 50: 50, 100: 100, 1920: 1920, 13: 15, 7: 8, 3: 3}),
                                           ("sdot", {25: 25, 50: 50, 13: 15, 6: 8, 3: 3})])
def test_a_row_is_computed_in_whole_tiles_of_the_width_that_adds_the_fewest_columns(dot, rows):
    """Rows of 25 and 50 pixels (the paper's model at 100x100) take tiles of 5 pixels, not 28
    and 52 columns in tiles of 4; rows that 4 divides keep 4 (the default's, on a tie); rows
    narrower than the default tile stay as they are."""
    from compile.backend.dot_products import by_name
    from compile.backend.packed_conv import tiled_width

    multiples = by_name(dot).row_multiples(pointwise=False)
    assert {row: tiled_width(row, multiples) for row in rows} == rows


def test_a_row_that_is_no_whole_number_of_tiles_is_computed_in_whole_tiles(tmp_path):
    """At 26x26 the 1x1 conv after the stride-2 depthwise one has rows of 13 pixels, no whole
    number of any default register tile: it reads zero columns up to whole tiles and its extra
    outputs are dropped (the outputs equal ORT's exact integer runtime bit for bit), and the
    manifest counts the conv's own MACs."""
    from compile.backend.build import BuildOptions, build
    from compile.backend.dot_products import by_name
    from compile.backend.packed_conv import tiled_width

    size, row = 26, 13
    qdq = ort_quantized(float_conv_net(tmp_path / "float.onnx", size=size), tmp_path / "qdq.onnx", size=size)
    build(qdq, get_target("x86-host"), tmp_path / "art", BuildOptions(use_tuning=False))
    kernels = json.loads((tmp_path / "art" / "manifest.json").read_text())["kernels"]["kernels"]
    # conv3 (8 -> 4 channels, 1x1), found by the MACs the manifest counts: the conv's own, not the whole tiles'
    convs = [k for k in kernels if k["macs"] == 4 * 8 * row * row]
    assert len(convs) == 1, [(k["name"], k["macs"]) for k in kernels if k["macs"]]
    width = tiled_width(row, by_name(convs[0]["dot_product"]).row_multiples(pointwise=True))
    assert width > row and convs[0]["args"][0]["shape"][3] == width  # zero columns up to whole tiles
    x = np.random.default_rng(6).random((1, 3, size, size), dtype=np.float32)
    assert np.array_equal(run_library(tmp_path / "art" / "model.so", x), ort_output(qdq, x, OrtMode.EXACT))


def test_ort_quantized_gemm_and_matmul_run_as_packed_integer_convs(tmp_path):
    """A classifier head (Gemm with transB, MatMul) quantized by ORT folds to integer 1x1
    convs, which the backend packs onto the host's dot product; outputs within one step of
    ORT's spec semantics (float scales: rounding of the bias onto the accumulator grid)."""
    from compile.backend.build import BuildOptions, build

    onnx_path = ort_quantized(float_classifier_net(tmp_path / "float.onnx"), tmp_path / "qdq.onnx", size=16)
    model = load_onnx(onnx_path)
    folded, log = fold_qdq(to_relax(model))
    assert log.applied["integer-gemm"] == 2 and "integer-gemm" not in log.skipped
    ops = integer_ops(folded)
    assert ops.float_convs == 0 and "relax.matmul" not in ops.ops
    rng = np.random.default_rng(7)
    run = _tvm_runner(folded, FMA_TARGET)
    steps = np.concatenate([
        np.abs(run(x) - ort_output(model.proto.SerializeToString(), x)).reshape(-1)
        for x in (rng.random((1, 3, 16, 16), dtype=np.float32) for _ in range(20))]) / _output_scale(model.proto)
    assert np.mean(steps <= 1.0 + 1e-3) >= WITHIN_ONE_STEP_REQUIRED, steps.max()
    manifest = build(onnx_path, get_target("x86-host"), tmp_path / "out", BuildOptions(use_tuning=False))
    convs = [k for k in manifest.kernels.kernels if k.macs > 0 and "sum" not in k.name]
    assert len(convs) == 3 and all(k.dot_product for k in convs), [(k.name, k.dot_product) for k in convs]


@pytest.mark.xdist_group("deploy")
def test_build_x86_host_writes_loadable_library_and_manifest(tiny_onnx, tiny_x86):
    out, manifest = tiny_x86
    assert sorted(p.name for p in out.iterdir()) == ["kernels.s", "kernels.so", "manifest.json", "model.so"]
    on_disk = Manifest.model_validate_json((out / "manifest.json").read_text())
    assert on_disk == manifest
    assert on_disk.library.sha256 == sha256(out / "model.so")
    assert on_disk.kernel_library.sha256 == sha256(out / "kernels.so")
    table = on_disk.kernels
    assert sum(k.calls for k in table.kernels) == len(table.call_order)
    # the kernel table's MACs are the conv MACs (plus InstanceNorm's squared sums)
    assert sum(k.macs * k.calls for k in table.kernels) >= on_disk.integer.integer_macs
    assert on_disk.model.sha256 == sha256(tiny_onnx[0])
    assert on_disk.model.inputs[0].shape == [1, 3, 40, 36]
    assert on_disk.model.inputs[0].quant.zero_point == -128
    assert on_disk.integer.integer_mac_fraction == 1.0
    assert on_disk.tvm_version == tvm.__version__
    x = np.random.default_rng(3).random((1, 3, 40, 36), dtype=np.float32)
    got = run_library(out / "model.so", x)
    assert np.array_equal(got, ort_output(tiny_onnx[0], x))


def test_kernel_names_are_short_enough_to_be_file_names(tiny_x86):
    """FuseOps names the tiny net's integer concat kernels with over 300 characters (PoCL could
    not cache one: `test_opencl_run.py`); every name is at most MAX_NAME, a shortened one is its
    beginning and a hash of the whole, and `kernels.so` exports each under the manifest's name."""
    out, manifest = tiny_x86
    names = [k.name for k in manifest.kernels.kernels]
    assert max(map(len, names)) <= MAX_NAME
    shortened = [n for n in names if re.fullmatch(rf".+_[0-9a-f]{{{HASH_CHARS}}}", n) and len(n) == MAX_NAME]
    assert shortened
    library = tvm.runtime.load_module(str(out / "kernels.so"))
    assert all(library.implements_function(n) for n in names)
    prefix = "fused_" + "add_" * 100
    assert short_name(prefix + "a") != short_name(prefix + "b") and short_name(prefix + "a") == short_name(prefix + "a")
    assert short_name("fused_conv2d_add") == "fused_conv2d_add"


def test_only_integer_codes_travel_between_kernels(tiny_x86):
    """Each kernel writes integer codes (int8, the packed int8/int16 layouts, InstanceNorm's
    int32 sums); only the last one writes float, the model's output. A dequantize with two
    consumers is computed in each (the gates' tanh outputs feed a multiply and a concat), and
    a tanh table lookup fuses with its index computation and its consumers; a conv's kernel
    ends at its codes (the layout copy after it is injective, so what follows fuses forward).
    Only InstanceNorm's sums write int32: an integer re-quantize's final cast to int8 is not
    computed per consumer (its producer would write the int32 values)."""
    _, manifest = tiny_x86
    table = {k.name: k for k in manifest.kernels.kernels}
    writes = [(name, table[name].args[-1].dtype) for name in manifest.kernels.call_order]
    assert [name for name, dtype in writes if not dtype.startswith(("int", "uint"))] == [writes[-1][0]]
    wide = [name for name, dtype in writes if dtype == "int32"]
    assert len(wide) == 10 and all(name.endswith(("sum", "sum1", "sum2")) for name in wide)
    lookups = [name for name in table if "lookup" in name]
    assert len(lookups) >= 2 and all("subtract" in name for name in lookups)
    assert "take" not in table


@pytest.mark.cross
@pytest.mark.xdist_group("arm")
def test_arm64_linux_library_is_really_cross_compiled(tiny_arm):
    header = (tiny_arm["arm64-linux"] / "model.so").read_bytes()[:20]
    assert header[:4] == b"\x7fELF" and int.from_bytes(header[18:20], "little") == 183  # EM_AARCH64


def test_every_target_file_is_a_valid_tvm_target_and_new_files_are_picked_up(tmp_path, monkeypatch):
    names = {t.name for t in all_targets()}
    assert {"x86-host", "arm64-android", "arm64-linux", "mali-opencl", "adreno-opencl"} <= names
    for spec in all_targets():
        spec.tvm_target()
    shutil.copy(get_target("arm64-linux").path, tmp_path / "my-board.json")
    monkeypatch.setenv("QATIE_TARGETS_DIR", str(tmp_path))
    assert [t.name for t in all_targets()] == ["my-board"]


def test_missing_ndk_is_one_clear_line(monkeypatch):
    from qatie.errors import QatieError

    monkeypatch.delenv("TVM_NDK_CC", raising=False)
    monkeypatch.delenv("ANDROID_NDK_HOME", raising=False)
    with pytest.raises(QatieError, match="TVM_NDK_CC.*ANDROID_NDK_HOME"):
        get_target("arm64-android").compiler()


def _broken_models(tiny_onnx, folder):
    src = onnx.load(tiny_onnx[0])
    truncated = folder / "truncated.onnx"
    truncated.write_bytes(tiny_onnx[0].read_bytes()[:3000])

    old = onnx.ModelProto()
    old.CopyFrom(src)
    old.opset_import[0].version = 9
    onnx.save(old, folder / "opset9.onnx")

    dynamic = onnx.ModelProto()
    dynamic.CopyFrom(src)
    dynamic.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "height"
    onnx.save(dynamic, folder / "dynamic.onnx")

    unsupported = onnx.ModelProto()
    unsupported.CopyFrom(src)
    out = unsupported.graph.output[0].name
    last = next(n for n in unsupported.graph.node if out in n.output)
    last.output[0] = "before_celu"
    unsupported.graph.node.append(helper.make_node("Celu", ["before_celu"], [out], name="my_celu"))
    onnx.save(unsupported, folder / "celu.onnx")

    axis = onnx.ModelProto()
    axis.CopyFrom(src)
    inits = {i.name for i in axis.graph.initializer}
    weight_dq = next(n for n in axis.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits)
    next(a for a in weight_dq.attribute if a.name == "axis").i = 1
    onnx.save(axis, folder / "axis.onnx")
    return {
        "truncated.onnx": ["truncated"],
        "opset9.onnx": ["opset 9"],
        "dynamic.onnx": ["dynamic shape", "--input-shape"],
        "celu.onnx": ["unsupported op types", "Celu", "my_celu"],
        "axis.onnx": [weight_dq.name, "axis"],
    }


def test_malformed_onnx_is_one_line_exit_2_and_leaves_no_artifact(tiny_onnx, tmp_path):
    for name, needles in _broken_models(tiny_onnx, tmp_path).items():
        out = tmp_path / f"out-{name}"
        result = compile_here("--target", "x86-host", tmp_path / name, "-o", out)
        assert_one_line_error(result.stderr, result.returncode, name, *needles)
        assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_inspect_reports_integer_mac_fraction_per_target(tiny_onnx):
    result = run_compile("inspect", tiny_onnx[0])
    assert result.returncode == 0, result.stderr
    names = {spec.name for spec in all_targets()}
    lines = result.stdout.strip().splitlines()
    per_target = [line for line in lines if line.split()[0] in names]
    assert len(per_target) == len(all_targets())
    assert all("(100.0 %)" in line and "35/35" in line for line in per_target)
    # every integer op, the float islands, and each rewrite with why it left matches float
    (integer,) = [line for line in lines if line.startswith("integer ops: ")]
    assert "conv2d 35" in integer and "max_pool2d 1" in integer and "take 4" in integer
    assert any(line.startswith("float islands: ") for line in lines)
    assert "rewrites applied: exact-int8" in result.stdout and "integer-conv 35" in result.stdout


def test_inspect_says_why_a_match_stays_float(tmp_path):
    """A concat of inputs whose scales differ from its output's and are not powers of two stays
    float, and `inspect` names the rewrite and the reason."""
    def qdq(name, source, scale):
        return [helper.make_node("QuantizeLinear", [source, f"s_{name}", "zero"], [f"q_{name}"]),
                helper.make_node("DequantizeLinear", [f"q_{name}", f"s_{name}", "zero"], [name])]

    scales = {"a": 0.1, "b": 0.07, "y": 0.05}
    nodes = [*qdq("a", "x", scales["a"]), *qdq("b", "x", scales["b"]),
             helper.make_node("Concat", ["a", "b"], ["c"], axis=1), *qdq("y", "c", scales["y"])]
    inits = [helper.make_tensor(f"s_{n}", onnx.TensorProto.FLOAT, [], [v]) for n, v in scales.items()]
    inits.append(helper.make_tensor("zero", onnx.TensorProto.INT8, [], [0]))
    graph = helper.make_graph(nodes, "concat", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 2, 4, 4])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4, 4, 4])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)]), tmp_path / "concat.onnx")
    result = run_compile("inspect", tmp_path / "concat.onnx")
    assert result.returncode == 0, result.stderr
    assert "not rewritten by exact-int8: 1 match(es): inputs and output have different Q/DQ parameters" in result.stdout


@pytest.mark.long
@pytest.mark.pocl
def test_mali_and_adreno_kernels_compile_with_a_real_opencl_compiler(tiny_onnx):
    result = run_compile("check-opencl", tiny_onnx[0])
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["mali-opencl", "adreno-opencl"]
    for line in lines:
        done, total = line.split(": ")[1].split(" ")[0].split("/")
        assert done == total and int(total) > 30 and "Portable Computing Language" in line


@pytest.mark.pocl
def test_opencl_check_names_the_kernel_that_fails():
    from compile.offline.opencl_check import check_opencl

    source = (  # TVM declares every kernel first; a declaration is not the kernel
        "__kernel void good_kernel(__global float* x);\n__kernel void bad_kernel(__global float* x);\n"
        "__kernel void good_kernel(__global float* x) { x[get_global_id(0)] = 1.0f; }\n"
        "__kernel void bad_kernel(__global float* x) { x[0] = undefined_thing; }\n"
    )
    result = check_opencl(source + source)  # TVM repeats the module source; names are de-duplicated
    assert result.kernels == ["bad_kernel", "good_kernel"]
    assert list(result.failed) == ["bad_kernel"] and "undefined_thing" in result.failed["bad_kernel"]


def test_adreno_texture_target_refuses_to_build(tiny_onnx, tmp_path):
    out = tmp_path / "tex"
    result = run_compile("--target", "adreno-opencl-texture", tiny_onnx[0], "-o", out)
    assert_one_line_error(result.stderr, result.returncode, "adreno-opencl-texture refuses to build", "adreno-opencl")
    assert not out.exists()
