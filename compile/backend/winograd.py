"""Exact integer Winograd F(2x2, 3x3) for 3x3 stride-1 convs in the packed layout.

A 3x3 conv costs 36 multiplies per 2x2 output pixels per channel pair; Winograd's F(2x2, 3x3)
takes 16: each 4x4 input tile d and each filter g are transformed, multiplied elementwise, and
transformed back, Y = A^T [ (G g G^T) . (B^T d B) ] A, the products summed over input channels
in between (16 independent GEMMs, one per tile position, which the `avx2-i16` dot product
computes). In floats this rounds; here every step is integer and nothing can overflow, so the
result equals the direct conv exactly:

- B^T and A^T hold only 0 and +-1. V = B^T d B adds four codes per entry: |V| <= 4 * 255 for
  int8 or uint8 codes, int16.
- G holds halves, so the weights are transformed with G' = 2G: U' = G' g G'^T = 4U, integer,
  |U'| <= 3 * 3 * 128 = 1152, int16, computed at build time.
- vpmaddwd multiplies int16 pairs into int32 exactly; `exact_for` checks at build time that the
  sums over input channels and the output transform's nine terms stay within int32 for this
  conv's weights (every conv of the QATIE models does; over ~200 full-range input channels would not).
- A^T M A = 4y exactly, so y = (A^T M A) >> 2 with no rounding.

The packing pass (`compile.backend.packed_conv`) uses it for a 3x3 stride-1 conv whose dot
product widens to int16 (`avx2-i16`: AVX2 without VNNI) when `applies`, at any output size (odd
ones too: `tiled_size`); the schedule is `compile.backend.schedules.schedule_winograd`.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import te, tirx

from compile.backend.dot_products import ANNOTATION, DIRECT_MACS, DotProduct

BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]])  # input transform
G2 = np.array([[2, 0, 0], [1, 1, 1], [1, -1, 1], [0, 0, 2]])  # 2G: the weight transform, integer
AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]])  # output transform
INT32_MAX = 2**31 - 1
MAX_CODE = 255  # |code| bound of int8 and uint8 activations
PRODUCT_BLOCK = "winograd_product"  # the 16 GEMMs (found by name by the schedule, annotated with the dot product)
OUTPUT_BLOCK = "winograd_output"


def applies(dot: DotProduct, weight: np.ndarray, strides, dilation) -> bool:
    """Whether a conv runs as Winograd: 3x3, stride and dilation 1, an int16 dot product, and
    int32 sums that cannot overflow (`exact_for`). Any output size: see `tiled_size`."""
    return (dot.data_dtype == "int16" and weight.shape[2:] == (3, 3) and tuple(strides) == (1, 1)
            and tuple(dilation) == (1, 1) and exact_for(weight))


def tiled_size(out_size) -> tuple[int, int]:
    """The output size a Winograd conv computes for `out_size`: whole 2x2 tiles, and an even
    number of them per row (a step of the schedule takes 2, 4 or 8). The input is packed with
    zeros up to it, and the extra rows and columns are dropped where the output is read."""
    height, width = out_size
    return height + height % 2, -(-width // 4) * 4


def _transformed(weight: np.ndarray) -> np.ndarray:
    """U' = G' g G'^T of every (O, I) filter, as (4, 4, O, I) int64."""
    return np.einsum("ak,oikl,bl->aboi", G2, weight.astype(np.int64), G2)


def transform_weight(weight: np.ndarray, dot: DotProduct, group: int) -> np.ndarray:
    """(O, I, 3, 3) int8 -> U' = G' g G'^T as (4, 4, O/lanes, I/group, group/depth, lanes, depth)
    int16, zero-padded channels, in the order the dot product reads its weight block."""
    o, i = weight.shape[:2]
    lanes, depth = dot.lanes, dot.depth
    ob, ib = -(-o // lanes), -(-i // group)
    padded = np.zeros((ob * lanes, ib * group, 3, 3), np.int64)
    padded[:o, :i] = weight
    u = _transformed(padded)
    return np.ascontiguousarray(u.reshape(4, 4, ob, lanes, ib, group // depth, depth)
                                .transpose(0, 1, 2, 4, 5, 3, 6)).astype(np.int16)


def exact_for(weight: np.ndarray) -> bool:
    """Whether the int32 sums stay exact for these (O, I, 3, 3) weights and any int8/uint8 codes:
    per output channel, nine output-transform terms of sums over input channels of |V| * |U'|."""
    u = np.abs(_transformed(weight))
    return bool(9 * 4 * MAX_CODE * u.max(axis=(0, 1)).sum(axis=1).max(initial=0) <= INT32_MAX)


def _coefficient(matrix: np.ndarray, row, column: int):
    """matrix[row, column] for a loop variable `row`: a select chain that unrolling folds away."""
    value = tirx.const(0, "int32")
    for r in range(matrix.shape[0]):
        if matrix[r, column]:
            value = tirx.Select(row == r, tirx.const(int(matrix[r, column]), "int32"), value)
    return value


def winograd_conv(data: te.Tensor, u: te.Tensor, dot: DotProduct, direct_macs: int | None = None) -> te.Tensor:
    """[N, C/G, H, W, G] codes (padded; int8 or uint8, widened by the input transform) * U' ->
    int32, exactly the 3x3 stride-1 conv; the output size must be even (`tiled_size`). The
    output is [N, O/lanes, OH/2, 2, OW/2, 2, lanes]: the packed layout's memory with rows and
    columns split in pairs (indexing [N, O/lanes, OH, OW, lanes] by y // 2 and y % 2 instead did
    not simplify after the schedule's split and made the kernel 1.5x slower)."""
    n, cb, h, w, group = (int(d) for d in data.shape)
    _, _, ob, _, pairs, lanes, depth = (int(d) for d in u.shape)
    oh, ow = h - 2, w - 2
    assert oh % 2 == 0 and ow % 2 == 0, "Winograd F(2x2, 3x3) tiles need an even output size"
    v = te.compute((n, oh // 2, ow // 2, 4, 4, cb, group), lambda ni, ty, tx, a, b, c, g: sum(
        _coefficient(BT, a, i) * _coefficient(BT, b, j) * data[ni, c, 2 * ty + i, 2 * tx + j, g].astype("int32")
        for i in range(4) for j in range(4)).astype("int16"), name="winograd_input")
    c, p, k = te.reduce_axis((0, cb), "c"), te.reduce_axis((0, pairs), "p"), te.reduce_axis((0, depth), "k")
    m = te.compute((n, oh // 2, ow // 2, 4, 4, ob, lanes), lambda ni, ty, tx, a, b, o, lane: te.sum(
        v[ni, ty, tx, a, b, c, p * depth + k].astype("int32") * u[a, b, o, c, p, lane, k].astype("int32"),
        axis=[c, p, k]), name=PRODUCT_BLOCK,
        attrs={ANNOTATION: dot.name} | ({DIRECT_MACS: direct_macs} if direct_macs else {}))
    return te.compute((n, ob, oh // 2, 2, ow // 2, 2, lanes), lambda ni, o, ty, r, tx, s, lane: sum(
        _coefficient(AT, r, a) * _coefficient(AT, s, b) * m[ni, ty, tx, a, b, o, lane]
        for a in range(4) for b in range(4)) >> 2, name=OUTPUT_BLOCK)


def read_pairs(y: te.Tensor, ni, block, hi, wi, lane):
    """The Winograd conv's output `y` ([N, O/lanes, OH/2, 2, OW/2, 2, lanes]) at row `hi` and
    column `wi` of the packed layout it shares its memory with."""
    return y[ni, block, hi // 2, hi % 2, wi // 2, wi % 2, lane]


def winograd_conv_kernel(dot: DotProduct, data_shape, u_shape, data_dtype: str = "int8") -> tvm.IRModule:
    """The Winograd conv alone as a kernel (blocked codes, U' -> int32), for checking and
    measuring it against the direct packed conv."""
    data = te.placeholder(data_shape, data_dtype, "data")
    u = te.placeholder(u_shape, "int16", "u")
    return tvm.IRModule({"main": te.create_prim_func([data, u, winograd_conv(data, u, dot)])})
