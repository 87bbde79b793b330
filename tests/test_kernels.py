"""The int8 conv kernels: each dot-product intrinsic computes a conv exactly, the build picks the
instruction from the target's CPU features and the weights, and x86 builds' conv kernels contain
it (asm); likewise the vector table lookups of AVX-512 VBMI; and which loops an elementwise
kernel's vector spans. Runs what this host can execute
(AVX2 everywhere in CI, VNNI and VBMI where the CPU has them) and compiles, without running,
for a CPU it does not have."""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pytest
import tvm
from tvm import s_tir, te
from tvm.target import codegen

from compile.backend import table_lookup
from compile.backend.build import BuildOptions, build
from compile.backend.dot_products import (
    DOT_PRODUCTS,
    PIXEL_DOT_PRODUCTS,
    by_name,
    candidates,
    choose,
    pixel_candidates,
)
from compile.backend.packed_conv import pack_depthwise_weight, pack_input, packed_depthwise_kernel
from compile.backend.schedules import build_with_default_schedules, default_schedule
from compile.backend.table_lookup import TABLE_LOOKUPS
from compile.backend.targets import get_target
from compile.backend.tuning_db import (
    check_log_dir,
    check_targets,
    default_log_dir,
    foreign_dot_products,
)
from qatie.references import ort_output, reference_input
from tests.conv_cases import (
    INSTRUCTIONS,
    conv_case,
    conv_code,
    conv_kernels,
    tile_kernels,
)
from tests.helpers import TINY, run_library
from tests.lookup_cases import lookup_case

VNNI_CPU = "znver4"  # an AVX-512 VNNI CPU LLVM knows; compiled for, not run, on hosts without it
AVX512BW_CPU = "skylake-avx512"  # AVX-512BW without VNNI
AVX2_TARGET = {"kind": "llvm", "mcpu": "haswell"}  # AVX2 without VNNI: 8-lane dot products on any x86 host


def _host_target() -> tvm.target.Target:
    return get_target("x86-host").tvm_target()


@pytest.mark.parametrize("stride", [1, 2])
def test_every_dot_product_of_this_cpu_computes_the_conv_exactly(stride):
    """Every register tile (stride 1) or the default one (stride 2), extreme codes included
    (activation codes -128/127, weights -128/127 where the instruction allows them), against
    numpy; the pixels-in-lanes dot products too (stride 1: the only one they take)."""
    target = _host_target()
    usable = candidates(target)
    assert usable, f"x86-host ({target}) has none of {[d.name for d in DOT_PRODUCTS]}"
    for dot in usable + (pixel_candidates(target) if stride == 1 else []):  # pixels in lanes: stride 1 only
        case = conv_case(dot, stride, seed=stride)
        tiles = tile_kernels(case, all_tiles=stride == 1)
        kernels = tvm.compile(tiles, target=target)
        for tile in tiles.functions:
            out = tvm.runtime.empty(case.out_shape, "int32")
            kernels[tile.name_hint](tvm.runtime.tensor(case.data), tvm.runtime.tensor(case.weight), out)
            assert np.array_equal(case.unpacked(out.numpy()), case.expected), (dot.name, tile.name_hint)


@pytest.mark.parametrize(("stride", "dtype"), [(1, "int8"), (2, "uint8")])
def test_a_packed_depthwise_conv_is_exact(stride, dtype):
    """A depthwise conv in the packed layout (channels not a whole number of blocks, extreme
    codes and weights) with its default schedule, against numpy."""
    target = _host_target()
    lanes = candidates(target)[0].lanes
    rng = np.random.default_rng(stride)
    info = np.iinfo(dtype)
    codes = rng.integers(info.min, info.max + 1, (1, 12, 11, 19)).astype(dtype)
    codes[0, :, 0] = info.max
    weight = rng.integers(-128, 128, (12, 1, 3, 3)).astype(np.int8)
    weight[:, 0, 0, 0] = -128
    padded = np.zeros((1, -(-12 // lanes) * lanes, 11, 19), dtype)  # whole channel blocks
    padded[:, :12] = codes
    packed = padded.reshape(1, -1, lanes, 11, 19).transpose(0, 1, 3, 4, 2).copy()
    packed_w = pack_depthwise_weight(weight, lanes)
    kernel = default_schedule(packed_depthwise_kernel(packed.shape, packed_w.shape, dtype, (stride, stride)), target)
    expected = np.zeros((12, (11 - 3) // stride + 1, (19 - 3) // stride + 1), np.int64)
    for ky in range(3):
        for kx in range(3):
            window = codes[0, :, ky::stride, kx::stride][:, :expected.shape[1], :expected.shape[2]].astype(np.int64)
            expected += weight[:, 0, ky, kx, None, None].astype(np.int64) * window
    out = tvm.runtime.empty((1, packed.shape[1], *expected.shape[1:], lanes), "int32")
    tvm.compile(kernel, target=target)(tvm.runtime.tensor(packed), tvm.runtime.tensor(packed_w), out)
    got = out.numpy().transpose(0, 1, 4, 2, 3).reshape(-1, *expected.shape[1:])[:12]
    assert np.array_equal(got, expected)


def _arm(cpu: str, *mattr: str) -> tvm.target.Target:
    return tvm.target.Target({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": cpu, "mattr": list(mattr)})


def test_the_build_picks_the_instruction_from_cpu_features_and_weights():
    safe = np.full((16, 8, 3, 3), 64, np.int8)
    saturating = safe.copy()
    saturating[3, 4:6, 1, 1] = (100, 100)  # 255 * 200 overflows vpmaddubsw's int16 pair sum
    cpu = lambda name: tvm.target.Target({"kind": "llvm", "mcpu": name})
    assert choose(cpu(VNNI_CPU), saturating).name == "vnni"  # vpdpbusd has no int16 step
    assert choose(cpu(VNNI_CPU), safe[:3]).name == "vnni-ymm"  # at most 8 outputs: 8 lanes
    assert choose(cpu(AVX512BW_CPU), safe).name == "avx512bw-u8"
    assert choose(cpu(AVX512BW_CPU), saturating).name == "avx512bw-i16"
    assert choose(cpu("znver3"), safe).name == "avx2-u8"
    assert choose(cpu("znver3"), saturating).name == "avx2-i16"
    assert choose(cpu("x86-64"), safe) is None  # no AVX2: the plain integer conv stays
    assert choose(_arm("cortex-a76", "+dotprod"), saturating).name == "sdot"  # signed x signed: exact
    assert choose(_arm("cortex-a53", "+neon"), saturating).name == "neon-smull"
    # the pairs are those vpmaddubsw adds: channels (0,1), (2,3) of each 4-channel group
    across = np.zeros_like(safe)
    across[0, 1:3, 0, 0] = (100, 100)
    assert by_name("avx2-u8").exact_for(across)


def test_every_conv_kernel_of_the_host_build_uses_its_dot_product_instruction(tiny_x86):
    host = [d.name for d in candidates(_host_target()) + pixel_candidates(_host_target())]
    convs = conv_kernels(tiny_x86[0])
    wrong = {conv: (dot, found) for conv, (dot, found) in convs.items() if dot not in host or INSTRUCTIONS[dot] not in found}
    assert not wrong, wrong


@pytest.mark.long
@pytest.mark.parametrize(("cpu", "dots"), [(VNNI_CPU, {"vnni": "zmm", "vnni-ymm": "ymm", "vnni-pixels": "zmm"}),
                                           (AVX512BW_CPU, {"avx512bw-u8": "zmm", "avx512bw-i16": "zmm"})])
def test_an_avx512_build_uses_its_dot_product_in_every_conv_kernel(cpu, dots, tiny_onnx, tmp_path, monkeypatch):
    """Compiled for an AVX-512 CPU whatever this host is: every conv kernel on one of that CPU's
    dot products, its instruction on the right registers; run, and equal to ONNX Runtime bit for
    bit, where this host has the CPU's features."""
    host = _host_target()
    folder = tmp_path / "targets"
    folder.mkdir()
    (folder / "x86-avx512.json").write_text(json.dumps({
        "description": f"x86 server, {cpu} (test)", "target": {"kind": "llvm", "mcpu": cpu},
        "host": None, "cross_compiler": {"kind": "system", "cc": "g++"}, "rpc_key": None, "threads": 0,
        "qemu_cpu": None}))
    monkeypatch.setenv("QATIE_TARGETS_DIR", str(folder))
    spec = get_target("x86-avx512")
    build(tiny_onnx[0], spec, tmp_path / "art", BuildOptions(emit_source=True, use_tuning=False))
    wrong = {conv: dot for conv, (dot, code) in conv_code(tmp_path / "art").items()
             if dot not in dots or not re.search(rf"{INSTRUCTIONS[dot]}\s.*%{dots[dot]}", code)}
    assert not wrong, wrong
    features = {dot.features for dot in DOT_PRODUCTS + PIXEL_DOT_PRODUCTS if dot.name in dots}
    if all(codegen.target_has_features(list(f), host) for f in features):
        x = reference_input(40, 36)
        assert np.array_equal(run_library(tmp_path / "art" / "model.so", x), ort_output(tiny_onnx[0], x))


def test_the_integer_winograd_conv_equals_the_direct_conv(monkeypatch):
    """Winograd F(2x2, 3x3) on the avx2-i16 dot product with every tile of its space (two row
    segments, one and two groups of output-channel blocks), two input-channel blocks, codes and
    weights at their extremes (int8 and uint8 codes), against numpy's direct conv; and the
    build-time bound refuses weights whose int32 sums could overflow."""
    from compile.backend import schedules
    from compile.backend.packed_conv import pack_data
    from compile.backend.winograd import (
        exact_for,
        transform_weight,
        winograd_conv_kernel,
    )

    monkeypatch.setattr(schedules, "SEGMENT_BYTES", 8 * 16 * 16 * 2)  # 8 of the row's 16 tiles
    dot = by_name("avx2-i16")
    target = _host_target()
    rng = np.random.default_rng(3)
    weight = rng.integers(-128, 128, (64, 16, 3, 3)).astype(np.int8)
    weight[0] = -128
    weight[1] = 127
    assert exact_for(weight)
    assert not exact_for(np.full((8, 512, 3, 3), -128, np.int8))
    u = transform_weight(weight, dot, dot.lanes)
    cases = []
    for dtype in ("int8", "uint8"):
        info = np.iinfo(dtype)
        codes = rng.integers(info.min, info.max + 1, (1, 16, 10, 34)).astype(dtype)
        codes[0, :, :4, :4] = info.max
        codes[0, :, 4:8, 4:8] = info.min
        expected = np.zeros((64, 8, 32), np.int64)
        for ky in range(3):
            for kx in range(3):
                expected += np.einsum("oi,ihw->ohw", weight[:, :, ky, kx].astype(np.int64),
                                      codes[0, :, ky:ky + 8, kx:kx + 32].astype(np.int64))
        cases.append((dtype, pack_data(codes, dot, winograd=True), expected))
    for dtype, data, expected in cases:
        kernel = winograd_conv_kernel(dot, data.shape, u.shape, dtype)
        sch = tvm.s_tir.Schedule(kernel)
        tiles = schedules.winograd_tiles(sch, schedules.winograd_block(sch)[0])
        # register tiles 2x2, 4x2 and 1x2 (8, 4 or 2 tiles per step), 2x4 (8 or 4), groups of 4 and 8
        assert len(tiles) == 22 and tiles[0] == schedules.WinogradTile(8, 2, 4, 2)
        for tile in tiles if dtype == "int8" else tiles[:1]:  # uint8 codes: the default tile
            scheduled = tvm.s_tir.Schedule(kernel)
            schedules.schedule_winograd(scheduled, dot, tile)
            compiled = tvm.compile(scheduled.mod, target=target)
            out = tvm.runtime.empty((1, 8, 4, 2, 16, 2, 8), "int32")
            compiled(tvm.runtime.tensor(data), tvm.runtime.tensor(u), out)
            got = out.numpy().reshape(8, 8, 32, 8).transpose(0, 3, 1, 2).reshape(64, 8, 32)
            assert np.array_equal(got, expected), (tile.name, dtype)


@pytest.fixture(scope="module")
def width8_onnx(tmp_path_factory):
    """The QATIE net at width 8 (every tensor between two convs whole 8-channel blocks) after 3
    float and 3 QAT steps, exported at 40x36."""
    from qatie.checkpoint import load_checkpoint
    from qatie.export import export
    from qatie.model import ModelConfig
    from qatie.train import TrainConfig, train

    folder = tmp_path_factory.mktemp("width8")
    train(TrainConfig(**{**TINY, "model": ModelConfig(width=8)}), folder / "w8.pt")
    export(load_checkpoint(folder / "w8.pt"), 40, 36, folder / "w8.onnx", fp32=False)
    return folder / "w8.onnx"


@pytest.mark.long
def test_the_ops_between_convs_run_in_the_blocked_layout(width8_onnx):
    """On an AVX2 target (8 lanes) every tensor between two convs of a width-8 net stays in the
    convs' blocked layout: NCHW is left at the edges only (the image's pack, the 3-channel
    output's unpack); the gates, InstanceNorms, concats, resizes and the max-pool run blocked;
    and the build still matches ORT bit for bit."""
    from tvm import relax

    from compile.backend.blocked_layout import blocked_layout
    from compile.backend.packed_conv import PACK_SHIFT, UNPACK, pack_convs
    from compile.frontend import fold_qdq, load_onnx, to_relax
    from qatie.references import ort_output

    target = tvm.target.Target(AVX2_TARGET)
    folded, _ = fold_qdq(to_relax(load_onnx(width8_onnx)))
    with target:
        mod = tvm.transform.Sequential([pack_convs(target), blocked_layout()])(folded)
    calls = []
    relax.analysis.post_order_visit(mod["main"], lambda e: calls.append(e) if isinstance(e, relax.Call) else None)
    layout_changes = [(mod[c.args[0]].attrs or {}, c) for c in calls if c.op == tvm.ir.Op.get("relax.call_tir")]
    unpacks = [c for attrs, c in layout_changes if UNPACK in attrs]
    nchw_packs = [c for attrs, c in layout_changes if PACK_SHIFT in attrs and len(c.args[1].fields[0].ty.shape) == 4]
    assert len(unpacks) == 1 and len(nchw_packs) == 1, (len(unpacks), len(nchw_packs))
    blocked = {name: [c for c in calls if isinstance(c.op, tvm.ir.Op) and c.op.name == name]
               for name in ("relax.image.resize2d", "relax.nn.max_pool2d", "relax.concat", "relax.sum", "relax.take")}
    assert [c.attrs.layout for c in blocked["relax.image.resize2d"]] == ["NCHW8c"] * 3
    assert [c.attrs.layout for c in blocked["relax.nn.max_pool2d"]] == ["NCHW8c"]
    assert len(blocked["relax.concat"]) == 7 and len(blocked["relax.sum"]) == 10 and len(blocked["relax.take"]) == 4
    assert all(len(c.ty.shape) == 5 for name in ("relax.concat", "relax.sum", "relax.take") for c in blocked[name])
    model = load_onnx(width8_onnx)
    vm = relax.VirtualMachine(build_with_default_schedules(folded, target), tvm.cpu())
    for seed in (0, 1):
        x = np.random.default_rng(seed).random((1, 3, 40, 36), dtype=np.float32)
        assert np.array_equal(vm["main"](tvm.runtime.tensor(x)).numpy(), ort_output(model.proto.SerializeToString(), x))


def test_a_log_of_another_cpu_kinds_dot_products_is_named_as_not_applying():
    """The shipped x86-host log was tuned on an AVX2 CPU: on a VNNI CPU every conv is a vpdpbusd
    kernel, so its records cannot apply and the build's note says why; on another AVX2 CPU they
    do apply (their timings being the other CPU's). Records of the pixels-in-lanes `vnni-pixels`
    cannot apply on AVX2 either."""
    folder = default_log_dir("x86-host")
    check = check_log_dir(folder)
    assert {t.mcpu for t in check.targets} == {"znver3"}
    vnni = tvm.target.Target({"kind": "llvm", "mcpu": VNNI_CPU})
    assert foreign_dot_products(check, vnni) == ["avx2-i16", "avx2-u8"]
    (note,) = check_targets(folder, check, vnni)
    assert "avx2-i16 or avx2-u8 dot product cannot apply (this CPU's convs use vnni-ymm, vnni, vnni-pixels)" in note, note
    haswell = tvm.target.Target(AVX2_TARGET)
    assert foreign_dot_products(check, haswell) == []
    (note,) = check_targets(folder, check, haswell)
    assert note.endswith("their schedules apply, their timings are another CPU's"), note
    # a VNNI CPU's log holds its last conv on the pixels-in-lanes dot product, which AVX2 lacks
    vnni_log = dataclasses.replace(check, intrinsics=check.intrinsics | {by_name("vnni-pixels").intrin})
    assert foreign_dot_products(vnni_log, haswell) == ["vnni-pixels"]
    assert foreign_dot_products(vnni_log, vnni) == ["avx2-i16", "avx2-u8"]


@pytest.mark.parametrize("lookup", [t for t in TABLE_LOOKUPS if "avx512vbmi" in t.features], ids=lambda t: t.name)
def test_an_avx512_vbmi_table_lookup_uses_its_permute_and_equals_the_gather(lookup):
    """The vector lookup for a VBMI CPU (compiled on any host): its code permutes bytes in
    registers, with no byte gathered from the table; on a host that has the features (Zen 4)
    it is also run: every code and clipped indices, against numpy."""
    target = tvm.target.Target({"kind": "llvm", "mcpu": VNNI_CPU})
    assert lookup in table_lookup.for_target(target)
    case = lookup_case(lookup)
    library = tvm.compile(case.kernel, target=target)
    assembly = library.mod.inspect_source("asm")
    assert re.search(r"vperm[it]2b\s+%" + {64: "zmm", 32: "ymm", 16: "xmm"}[lookup.lanes], assembly), lookup.name
    assert "vpinsrb" not in assembly and "movzbl" not in assembly  # no lane taken from the table one by one
    if codegen.target_has_features(list(lookup.features), _host_target()):
        out = tvm.runtime.empty(case.index.shape, "int8")
        library["main"](tvm.runtime.tensor(case.table), tvm.runtime.tensor(case.index), out)
        assert np.array_equal(out.numpy(), case.expected)


# (source shape, output shape, output index -> source index, vector lanes, extents of the output
# axes the vector spans)
TRANSPOSES = {
    # an NHWC image quantized into NCHW codes: H x W give 16 lanes, the channel stays outside
    "nhwc-to-nchw": ((1, 100, 100, 3), (1, 3, 100, 100), lambda n, c, h, w: (n, h, w, c), 16, {100}),
    # NCHW planes into an NHWC output of 3 channels: H, W and C would give 16 lanes but the
    # planes do not read them as one index; W alone gives 8
    "nchw-to-nhwc": ((1, 3, 64, 40), (1, 64, 40, 3), lambda n, h, w, c: (n, c, h, w), 8, {40}),
    # rows padded to 112 cropped to 100 (a pixels-in-lanes conv's output): H x W would give 16
    # lanes, each a division by 100; W alone gives 4
    "cropped-rows": ((1, 3, 100, 112), (1, 3, 100, 100), lambda n, c, h, w: (n, c, h, w), 4, {100}),
}


@pytest.mark.parametrize("case", sorted(TRANSPOSES))
def test_an_elementwise_vector_spans_only_the_axes_its_lanes_need(case):
    """The default schedule of an elementwise kernel that moves data between layouts vectorizes
    over the fewest output axes that give its vector its lanes where every access reads them as
    one strided index, else along the innermost axis that alone gives at least 4 lanes: each
    lane's indices would be divisions by the axes' extents (the paper's input quantize 55 -> 9
    us; its output kernel 77 -> 35 us; the 1080p model's NHWC output kernel 16.0 -> 6.4 ms, Zen
    4). The kernel computes the same either way. (The extents of the spanned axes identify them
    here: H and W are both 100 in the first and third case.)"""
    source_shape, shape, index, lanes, spans = TRANSPOSES[case]
    source = te.placeholder(source_shape, "float32", "source")
    codes = te.compute(shape, lambda *i: te.round(source[index(*i)] * 255.0), name="quantize")
    scheduled = default_schedule(tvm.IRModule({"main": te.create_prim_func([source, codes])}), _host_target())
    script = scheduled["main"].script()
    (vector,) = re.findall(rf"for (\w+) in T.vectorized\({lanes}\)", script)
    bindings = re.findall(r"= T.axis.spatial\((\d+), (.*)\)$", script, re.MULTILINE)
    assert {int(extent) for extent, binding in bindings if vector in binding} == spans, script
    x = np.random.default_rng(0).uniform(0, 1, source_shape).astype(np.float32)
    out = tvm.runtime.empty(shape, "float32")
    tvm.compile(scheduled, target=_host_target())["main"](tvm.runtime.tensor(x), out)
    np.testing.assert_array_equal(out.numpy(), np.round(x[index(*np.indices(shape))] * np.float32(255.0)))


def test_a_repack_into_narrower_groups_reads_each_input_pixel_once():
    """16-channel blocks -> 4-channel groups (a pixels-in-lanes conv's input): the 4 groups of
    one input block are the innermost loop but for the vector, under W, so each input pixel is
    read once, whole (the 1080p model's repack 14.6 -> 8.0 ms, Zen 4); the result is the packing."""
    blocked = te.placeholder((1, 2, 3, 8, 16), "int8", "blocked")
    nchw = te.compute((1, 32, 3, 8), lambda n, c, h, w: blocked[n, c // 16, h, w, c % 16], name="unpack")
    packed = pack_input(nchw, group=4, dtype="uint8", shift=128, size=(3, 8))
    scheduled = default_schedule(tvm.IRModule({"main": te.create_prim_func([blocked, packed])}), _host_target())
    script = scheduled["main"].script()
    *_, width, group, vector = re.findall(r"for (\w+) in", script)
    (channel,) = re.findall(r"v0 = T.axis.spatial\(8, (.*)\)$", script, re.MULTILINE)
    assert group in channel and width not in channel and vector not in channel, script
    x = np.random.default_rng(0).integers(-128, 128, (1, 2, 3, 8, 16)).astype(np.int8)
    out = tvm.runtime.empty((1, 8, 3, 8, 4), "uint8")
    tvm.compile(scheduled, target=_host_target())["main"](tvm.runtime.tensor(x), out)
    want = (x.transpose(0, 1, 4, 2, 3).reshape(1, 8, 4, 3, 8).transpose(0, 1, 3, 4, 2).astype(np.int32) + 128)
    np.testing.assert_array_equal(out.numpy(), want.astype(np.uint8))


def test_the_even_odd_high_multiply_equals_the_int64_form():
    """The packed convs' bias add and high multiply with `vpmuldq` on even and odd lanes
    (`EvenOddHighMultiply`, every width this CPU has) against `(x * M + 2^30) >> 31` on int64:
    int32 extremes, the bias wrapping as int32 adds do, multipliers at both ends of [2^30, 2^31),
    negative halves that round, random values."""
    from compile.backend.high_multiply import EVEN_ODD_HIGH_MULTIPLIES, even_odd_for, even_odd_te

    def plus(acc: te.Tensor, bias: te.Tensor) -> te.Tensor:
        return te.compute(acc.shape, lambda r, i: acc[r, i] + bias[0, i], name="T_add")

    target = _host_target()
    usable = [e for e in EVEN_ODD_HIGH_MULTIPLIES if even_odd_for(target, e.lanes) is e]
    assert usable, f"x86-host ({target}) has none of {[e.name for e in EVEN_ODD_HIGH_MULTIPLIES]}"
    rng = np.random.default_rng(3)
    for even_odd in usable:
        lanes, rows = even_odd.lanes, 64
        acc = te.placeholder((rows, lanes), "int32", "acc")
        bias = te.placeholder((1, lanes), "int32", "bias")
        multiplier = te.placeholder((1, lanes), "int32", "multiplier")
        high = even_odd_te(plus(acc, bias), multiplier)
        sch = s_tir.Schedule(te.create_prim_func([acc, bias, multiplier, high]))
        sch.compute_inline(sch.get_sblock("T_add"))
        sch.tensorize(sch.get_loops(sch.get_sblock(high.op.name))[-1], even_odd.intrin)
        a = rng.integers(-2**31, 2**31, (rows, lanes), dtype=np.int64)
        a[0, :8] = [-2**31, 2**31 - 1, 0, -1, 1, -2**30, 2**30, -3]
        b = rng.integers(-2**20, 2**20, (1, lanes), dtype=np.int64)
        b[0, :2] = [2**20, -2**20]  # with a[0, :2], the int32 sum wraps
        m = rng.integers(2**30, 2**31, (1, lanes), dtype=np.int64)
        m[0, :2] = [2**31 - 1, 2**30]
        x = ((a + b + 2**31) % 2**32 - 2**31)  # the int32 add, wrapped
        want = ((x * m + (1 << 30)) >> 31).astype(np.int32)
        out = tvm.runtime.empty((rows, lanes), "int32")
        tvm.compile(sch.mod, target=target)["main"](*(tvm.runtime.tensor(v.astype(np.int32)) for v in (a, b, m)), out)
        np.testing.assert_array_equal(out.numpy(), want, err_msg=even_odd.name)
