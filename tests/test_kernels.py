"""The int8 conv kernels: each dot-product intrinsic computes a conv exactly, the build picks the
instruction from the target's CPU features and the weights, and x86 builds' conv kernels contain
it (asm). Runs what this host can execute (AVX2 everywhere in CI, VNNI where the CPU has it) and
compiles, without running, for a CPU it does not have."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import tvm
from tvm import s_tir

from compile.backend.dot_products import DOT_PRODUCTS, by_name, candidates, choose
from compile.backend.packed_conv import pack_weight, packed_conv_kernel
from compile.backend.schedules import packed_conv_block, packed_conv_space, packed_tiles
from compile.backend.targets import get_target
from tests.helpers import run_compile

# what each dot product's conv kernels must contain in x86 assembly
INSTRUCTIONS = {"vnni": "vpdpbusd", "avx2-u8": "vpmaddubsw", "avx2-i16": "vpmaddwd"}
VNNI_CPU = "znver4"  # an AVX-512 VNNI CPU LLVM knows; compiled for, not run, on hosts without it


def _host_target() -> tvm.target.Target:
    return get_target("x86-host").tvm_target()


@pytest.mark.parametrize("stride", [1, 2])
def test_every_dot_product_of_this_cpu_computes_the_conv_exactly(stride):
    """Every register tile (stride 1) or the default one (stride 2), extreme codes included
    (0/255 activations, -128/127 weights where the instruction allows them), against numpy."""
    target = _host_target()
    usable = candidates(target)
    assert usable, f"x86-host ({target}) has none of {[d.name for d in DOT_PRODUCTS]}"
    rng = np.random.default_rng(stride)
    channels, outputs, size = 8, 16, (9, 17)
    for dot in usable:
        low, high = (-64, 64) if dot.pairs_must_fit_int16 else (-128, 127)
        w = rng.integers(low, high + 1, (outputs, channels, 3, 3)).astype(np.int8)
        w[0, :, 0, 0] = high  # extreme products
        assert dot.exact_for(w)
        codes = rng.integers(-128, 128, (1, channels, *size))
        codes[0, :, 0, :] = 127
        x = (codes + dot.shift).astype(dot.data_dtype)
        packed_x = x.reshape(1, channels // dot.depth, dot.depth, *size).transpose(0, 1, 3, 4, 2).copy()
        packed_w = pack_weight(w, dot)
        mod = packed_conv_kernel(dot, packed_x.shape, packed_w.shape, (stride, stride))
        expected = np.zeros((outputs, (size[0] - 3) // stride + 1, (size[1] - 3) // stride + 1), np.int64)
        for ky in range(3):
            for kx in range(3):
                window = x[0, :, ky::stride, kx::stride][:, :expected.shape[1], :expected.shape[2]].astype(np.int64)
                expected += np.einsum("oc,chw->ohw", w[:, :, ky, kx].astype(np.int64), window)
        sch = s_tir.Schedule(mod)
        conv, found = packed_conv_block(sch)
        assert found == dot
        tiled = list(zip(packed_tiles(sch, conv, dot), packed_conv_space(sch)))
        for tile, space in tiled if stride == 1 else tiled[:1]:
            kernel = tvm.compile(space.mod, target=target)
            out = tvm.runtime.empty((1, outputs // dot.lanes, *expected.shape[1:], dot.lanes), "int32")
            kernel(tvm.runtime.tensor(packed_x), tvm.runtime.tensor(packed_w), out)
            got = out.numpy().transpose(0, 1, 4, 2, 3).reshape(outputs, *expected.shape[1:])
            assert np.array_equal(got, expected), (dot.name, tile)


def test_the_build_picks_the_instruction_from_cpu_features_and_weights():
    safe = np.full((16, 8, 3, 3), 64, np.int8)
    saturating = safe.copy()
    saturating[3, 4:6, 1, 1] = (100, 100)  # 255 * 200 overflows vpmaddubsw's int16 pair sum
    cpu = lambda name: tvm.target.Target({"kind": "llvm", "mcpu": name})  # noqa: E731
    assert choose(cpu(VNNI_CPU), saturating).name == "vnni"  # vpdpbusd has no int16 step
    assert choose(cpu("znver3"), safe).name == "avx2-u8"
    assert choose(cpu("znver3"), saturating).name == "avx2-i16"
    assert choose(cpu("x86-64"), safe) is None  # no AVX2: the plain integer conv stays
    assert choose(tvm.target.Target({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a76"}), safe) is None
    # the pairs are those vpmaddubsw adds: channels (0,1), (2,3) of each 4-channel group
    across = np.zeros_like(safe)
    across[0, 1:3, 0, 0] = (100, 100)
    assert by_name("avx2-u8").exact_for(across)


def _kernel_functions(asm: str) -> dict[str, str]:
    """Assembly per function (TVM puts a kernel's parallel body in `<kernel>_compute_...`)."""
    bodies, name = {}, None
    for line in asm.splitlines():
        label = re.match(r"^([A-Za-z_][\w.]*):", line)
        if label and not label.group(1).startswith(".L"):
            name = label.group(1)
            bodies[name] = ""
        elif name:
            bodies[name] += line + "\n"
    return bodies


def _conv_kernels(artifact: Path) -> dict[str, tuple[str | None, set[str]]]:
    """Per conv kernel of the artifact: the dot product the manifest names, and which of the
    dot-product instructions its code uses."""
    manifest = json.loads((artifact / "manifest.json").read_text())
    functions = _kernel_functions((artifact / "kernels.s").read_text())
    convs = {k["name"]: k["dot_product"] for k in manifest["kernels"]["kernels"] if k["macs"] > 0}
    assert convs
    return {conv: (dot, {i for i in INSTRUCTIONS.values() for f, body in functions.items()
                         if f.startswith(conv) and i in body}) for conv, dot in convs.items()}


def test_every_conv_kernel_of_the_host_build_uses_its_dot_product_instruction(tiny_x86):
    host = [d.name for d in candidates(_host_target())]
    convs = _conv_kernels(tiny_x86[0])
    wrong = {conv: (dot, found) for conv, (dot, found) in convs.items() if dot not in host or INSTRUCTIONS[dot] not in found}
    assert not wrong, wrong


def test_a_vnni_build_uses_vpdpbusd_in_every_conv_kernel(tiny_onnx, tmp_path, monkeypatch):
    """Compiled for an AVX-512 VNNI CPU whatever this host is (the library is not run here)."""
    folder = tmp_path / "targets"
    folder.mkdir()
    (folder / "x86-vnni.json").write_text(json.dumps({
        "description": "x86 server with AVX-512 VNNI (test)", "target": {"kind": "llvm", "mcpu": VNNI_CPU},
        "host": None, "cross_compiler": {"kind": "system", "cc": "g++"}, "rpc_key": None, "threads": 0,
        "qemu_cpu": None}))
    monkeypatch.setenv("QATIE_TARGETS_DIR", str(folder))
    result = run_compile("--target", "x86-vnni", tiny_onnx[0], "-o", tmp_path / "vnni", "--emit-source", "--no-tuning")
    assert result.returncode == 0, result.stderr
    convs = _conv_kernels(tmp_path / "vnni")
    wrong = {conv: (dot, found) for conv, (dot, found) in convs.items() if dot != "vnni" or "vpdpbusd" not in found}
    assert not wrong, wrong
