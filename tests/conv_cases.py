"""One small int8 conv per dot product with its exact answer (numpy, int64), and the packed
conv kernels that compute it, one per register tile: the exactness tests run them on this host
(`test_kernels.py`) and on the emulated ARM cores (`test_emulate.py`). Also: which dot-product
instruction each conv kernel of a built artifact contains (its disassembled kernels)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tvm
from tvm import s_tir

from compile.backend.dot_products import DotProduct
from compile.backend.packed_conv import (
    pack_data,
    pack_pixel_weight,
    pack_weight,
    packed_conv_kernel,
)
from compile.backend.schedules import conv_tiles, packed_conv_space

# two input-channel blocks for every dot product (so a chunked tile loops over blocks), two
# output-channel blocks of the widest (so tiles of 2 blocks apply to it), and 80 output pixels
# per row at stride 1 (every register tile's 4, 5, 8 or 16 pixels fit, several chunks per row)
CHANNELS, OUTPUTS, SIZE = 16, 32, (6, 82)
PIXEL_OUTPUTS = 3  # a pixels-in-lanes dot product's conv: the paper's last conv's outputs
# what each dot product's conv kernels must contain in their assembly (sadalp: smull alone is plain int8 code)
INSTRUCTIONS = {"vnni": "vpdpbusd", "vnni-ymm": "vpdpbusd", "avx512bw-u8": "vpmaddubsw", "avx512bw-i16": "vpmaddwd",
                "avx2-u8": "vpmaddubsw", "avx2-i16": "vpmaddwd", "sdot": "sdot",
                "neon-smull": "sadalp", "vnni-pixels": "vpdpbusd", "sdot-pixels": "sdot", "neon-smull-pixels": "sadalp"}


@dataclass
class ConvCase:
    dot: DotProduct
    stride: int
    data: np.ndarray  # packed activations [1, C/G, H, W, G]
    weight: np.ndarray  # packed weights
    expected: np.ndarray  # (OUTPUTS, OH, OW) int64

    @property
    def out_shape(self) -> tuple[int, ...]:
        if self.dot.pixels:  # [1, O, OH, OW/lanes, lanes]
            return (1, *self.expected.shape[:2], self.expected.shape[2] // self.dot.lanes, self.dot.lanes)
        return (1, OUTPUTS // self.dot.lanes, *self.expected.shape[1:], self.dot.lanes)

    def unpacked(self, out: np.ndarray) -> np.ndarray:
        return out.reshape(self.expected.shape) if self.dot.pixels else out.transpose(0, 1, 4, 2, 3).reshape(self.expected.shape)


def conv_case(dot: DotProduct, stride: int, seed: int) -> ConvCase:
    """Random int8 codes and weights with extreme values (activation code 127 on a row, largest
    weights the instruction allows on one tap) through a 3x3 conv."""
    rng = np.random.default_rng(seed)
    low, high = (-64, 64) if dot.pairs_must_fit_int16 else (-128, 127)
    w = rng.integers(low, high + 1, (PIXEL_OUTPUTS if dot.pixels else OUTPUTS, CHANNELS, 3, 3)).astype(np.int8)
    w[0, :, 0, 0] = high
    w[1, :, 1, 1] = low
    assert dot.exact_for(w)
    codes = rng.integers(-128, 128, (1, CHANNELS, *SIZE))
    codes[0, :, 0, :] = 127
    codes[0, :, 1, :] = -128
    x = codes + dot.shift_from("int8")  # the values the instruction multiplies
    expected = np.zeros((w.shape[0], (SIZE[0] - 3) // stride + 1, (SIZE[1] - 3) // stride + 1), np.int64)
    for ky in range(3):
        for kx in range(3):
            window = x[0, :, ky::stride, kx::stride][:, :expected.shape[1], :expected.shape[2]].astype(np.int64)
            expected += np.einsum("oc,chw->ohw", w[:, :, ky, kx].astype(np.int64), window)
    weight = pack_pixel_weight(w, dot) if dot.pixels else pack_weight(w, dot)
    return ConvCase(dot, stride, pack_data(codes.astype(np.int8), dot), weight, expected)


def tile_kernels(case: ConvCase, all_tiles: bool = True) -> tvm.IRModule:
    """The case's packed conv scheduled at each register tile (or the default one), one function
    per tile named `tile_<blocks>x<pixels>[_<chunk>]`, in one module (one library to upload to a device)."""
    sch = s_tir.Schedule(packed_conv_kernel(case.dot, case.data.shape, case.weight.shape, (case.stride,) * 2))
    tiled = list(zip(conv_tiles(sch).tiles, packed_conv_space(sch)))
    functions = {}
    for tile, space in tiled if all_tiles else tiled[:1]:
        name = "tile_" + tile.name.replace("/", "_")
        functions[name] = space.mod["main"].with_attr("global_symbol", name)
    return tvm.IRModule(functions)


def _kernel_functions(disassembly: str) -> dict[str, str]:
    """Instructions per function of objdump's listing (TVM puts a kernel's parallel body in
    `<kernel>_compute_...`)."""
    bodies, name = {}, None
    for line in disassembly.splitlines():
        label = re.match(r"^[0-9a-f]+ <(.+)>:$", line)
        if label:
            name = label.group(1)
            bodies[name] = ""
        elif name:
            bodies[name] += line + "\n"
    return bodies


def conv_code(artifact: Path) -> dict[str, tuple[str | None, str]]:
    """Per conv kernel of the artifact (MACs in the manifest): the dot product the manifest
    names, and its machine code (every function of kernels.s named after it)."""
    manifest = json.loads((artifact / "manifest.json").read_text())
    functions = _kernel_functions((artifact / "kernels.s").read_text())
    convs = {k["name"]: k["dot_product"] for k in manifest["kernels"]["kernels"] if k["macs"] > 0}
    assert convs
    return {conv: (dot, "".join(body for f, body in functions.items() if f.startswith(conv))) for conv, dot in convs.items()}


def conv_kernels(artifact: Path) -> dict[str, tuple[str | None, set[str]]]:
    """Per conv kernel of the artifact: the dot product the manifest names, and which of the
    dot-product instructions its code uses."""
    return {conv: (dot, {i for i in INSTRUCTIONS.values() if i in code}) for conv, (dot, code) in conv_code(artifact).items()}
