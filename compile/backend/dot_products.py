"""Our int8 dot-product tensor intrinsics, one per instruction sequence, and which one a conv gets.

Each is `C[lanes] int32 += A[depth] · B[lanes, depth]`: `depth` input channels of one pixel
(broadcast to every lane) times the weights of `lanes` output channels, in one or two
instructions. The packed conv (`compile.backend.packed_conv`) lays its data out with `depth`
input channels innermost and its weights as [lanes][depth] blocks, so the innermost loops
tensorize with no shuffles. For a conv with a few output channels the same instructions take
output pixels in their lanes instead (`PIXEL_DOT_PRODUCTS`: `C[lanes] += A[lanes, depth] ·
B[depth]`, one output channel's weights broadcast).

Why ours and not TVM's (`tvm/s_tir/tensor_intrin/x86.py`): TVM 0.27's `dot_16x4_vnni` passes
`int32x16` operands where LLVM 22's `llvm.x86.avx512.vpdpbusd.512` takes `<64 x i8>` and fails
LLVM verification; there is no AVX2 intrinsic at all; and its AVX-512 one uses vpmaddubsw, which
saturates int16 pair sums (not exact for arbitrary weights).

- `vnni`: vpdpbusd, u8 x s8 -> s32 with no intermediate rounding. Exact.
- `avx2-u8`: vpmaddubsw + vpmaddwd. vpmaddubsw adds two u8·s8 products in *saturating* int16,
  so it is used only for a conv whose every adjacent weight pair has |w0| + |w1| <= 128
  (255 · 128 = 32640 fits int16): `exact_for` checks that per conv at build time.
- `avx2-i16`: the exact AVX2 path for all other convs: activations and weights widened to int16
  when packed, vpmaddwd (int16 pairs -> int32, no saturation). Half the MACs per instruction.
- `sdot` (ARMv8.2 +dotprod): sdot, s8 x s8 -> s32, 4 lanes x 4. Exact.
- `neon-smull` (ARMv8.0): smull (s8 x s8 -> s16, exact: |product| <= 2^14) then sadalp (adds
  adjacent int16 products into the int32 accumulator, widening, so no int16 sum can overflow):
  2 instructions per 8 MACs, where TVM's own neon kernel takes 6 per 16 (two of each of smull,
  saddlp, plus addp and add).

x86 multiplies unsigned activations by signed weights, ARM signed by signed: an activation code
of the other signedness is shifted exactly by ±128 (`shift_from`), and the conv takes
shift · sum(w) per output channel back out.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from tvm.s_tir import TensorIntrin
from tvm.script.ir_builder import IRBuilder
from tvm.tirx import PrimFunc
from tvm.tirx.script import builder as T

from compile.backend.targets import cpu_has

PREFIX = "qatie_"
ANNOTATION = "qatie.dot_product"  # on a kernel's block computed with a dot product: its name
# on a conv block that executes another number of MACs than its conv has (a Winograd GEMM: 16/36
# of them; a direct conv over whole tiles: a few more): the conv's own MACs, which the kernel
# table reports, so its GMAC/s compare with any other conv's
DIRECT_MACS = "qatie.direct_macs"
U8_PAIR_LIMIT = 128  # |w0| + |w1| <= 128: 255 * 128 = 32640 <= int16 max


@dataclass(frozen=True)
class DotProduct:
    """One tensor intrinsic and how the conv around it is laid out and scheduled."""

    name: str
    lanes: int  # output channels per instruction (the weight block's rows)
    depth: int  # input channels per lane (contiguous, innermost in the packed data)
    data_dtype: str  # the packed activations' type
    weight_dtype: str  # the packed weights' type
    features: tuple[str, ...]  # LLVM CPU features the target must have
    # (output-channel blocks, output pixels) per register tile, best first; the first whose
    # sizes divide the conv's is the untuned default (tuning samples all of them)
    tiles: tuple[tuple[int, int], ...]
    # the instruction sequence: (int32 accumulators, broadcast pixel, weight block) -> accumulators
    update: object = field(compare=False, repr=False)
    pairs_must_fit_int16: bool = False
    # the order for 1x1 convs where it was measured to differ (None: `tiles`)
    pointwise_tiles: tuple[tuple[int, int], ...] | None = None
    # whether the default tile of a 1x1 conv, and of a conv whose register tile's weights exceed
    # half an L1, is chunked (`schedules.Tile`): faster on AVX2 (znver3), slower with vpdpbusd
    chunk_by_default: bool = True
    # a narrower vector of a wider sibling listed after it, for convs with at most this many
    # output channels only (None: any conv); the padded lanes of a conv's last block compute
    # nothing, so a 3-output conv on 16 lanes wastes 13 of them, on 8 lanes 5
    max_outputs: int | None = None
    # lanes are output pixels, not channels (`PIXEL_DOT_PRODUCTS`): `C[lanes] += A[lanes, depth] .
    # B[depth]`, `depth` channels of `lanes` adjacent pixels times one output channel's weights
    pixels: bool = False

    def fits(self, weight: np.ndarray) -> bool:
        """Whether this instruction may compute the conv with weights `weight`: exact for them,
        and within `max_outputs`."""
        return self.exact_for(weight) and (self.max_outputs is None or weight.shape[0] <= self.max_outputs)

    def row_multiples(self, pointwise: bool) -> list[int]:
        """The output pixels of the register tiles at least as wide as the default (of a 1x1
        conv's where they differ), the default's first: a conv's output width is computed in
        whole multiples of one of them (`packed_conv.tiled_width`)."""
        tiles = (self.pointwise_tiles or self.tiles) if pointwise else self.tiles
        return list(dict.fromkeys(p for _, p in tiles if p >= tiles[0][1]))

    def shift_from(self, codes_dtype: str) -> int:
        """What packing adds to activation codes of `codes_dtype` to give exactly the values this
        instruction multiplies (int8 -> uint8: +128, uint8 -> int8: -128; widening: 0)."""
        if codes_dtype == self.data_dtype or self.data_dtype == "int16":
            return 0
        return {"uint8": 128, "int8": -128}[self.data_dtype]

    @property
    def intrin(self) -> str:
        return PREFIX + self.name.replace("-", "_")

    def exact_for(self, weight: np.ndarray) -> bool:
        """Whether this instruction computes the conv with weights `weight` (O, I, KH, KW) exactly."""
        if not self.pairs_must_fit_int16:
            return True
        w = np.abs(weight.astype(np.int32))
        channels = w.shape[1] + (-w.shape[1]) % self.depth
        w = np.pad(w, ((0, 0), (0, channels - w.shape[1]), (0, 0), (0, 0)))
        return bool((w[:, 0::2] + w[:, 1::2]).max(initial=0) <= U8_PAIR_LIMIT)


def _intrinsic(name: str, lanes: int, depth: int, a_dtype: str, b_dtype: str, body, pixels: bool = False) -> PrimFunc:
    """`C[lanes] int32, A[depth] a_dtype, B[lanes, depth] b_dtype` (`pixels`: `A[lanes, depth]`,
    `B[depth]`) and `body(A, B, C)` as a PrimFunc.

    Built with TVMScript's IR builder, not its parser: the `@T.prim_func` decorator calls
    `inspect.stack()`, which resolves the module of every frame on the stack and cost 0.2-0.6 s
    per function (2-6 s for the ten functions here, in every process that imports this module:
    each build, each MetaSchedule worker); the builder takes milliseconds."""
    with IRBuilder() as builder, T.prim_func(s_tir=True):
        T.func_name(name)
        a_shape, b_shape = ((lanes, depth), (depth,)) if pixels else ((depth,), (lanes, depth))
        a = T.arg("A", T.buffer(a_shape, a_dtype, offset_factor=1))
        b = T.arg("B", T.buffer(b_shape, b_dtype, offset_factor=1))
        c = T.arg("C", T.buffer((lanes,), "int32", offset_factor=1))
        with T.sblock("root"):
            T.reads(c[0:lanes], *(buffer[tuple(slice(0, int(d)) for d in shape)]
                                  for buffer, shape in ((a, a_shape), (b, b_shape))))
            T.writes(c[0:lanes])
            body(a, b, c)
    return builder.get()


def _description(lanes: int, depth: int, a_dtype: str, b_dtype: str) -> PrimFunc:
    """What the intrinsic computes, the pattern tensorize matches: a `lanes` x `depth` reduction."""
    def body(a, b, c):
        with T.serial(0, lanes) as i, T.serial(0, depth) as k, T.sblock("update"):
            vi, vk = T.axis.remap("SR", [i, k])
            T.buffer_store(c, c[vi] + T.cast(a[vk], "int32") * T.cast(b[vi, vk], "int32"), [vi])

    return _intrinsic("description", lanes, depth, a_dtype, b_dtype, body)


def _implementation(lanes: int, depth: int, a_dtype: str, b_dtype: str, update) -> PrimFunc:
    """The intrinsic's body: the pixel's `depth` codes broadcast to every lane, the weight block
    as one vector, and `update(accumulators, pixel, weights)` -> the new int32 accumulators."""
    bits = np.dtype(a_dtype).itemsize * 8 * depth  # the pixel's codes as one integer

    def body(a, b, c):
        pixel = T.reinterpret(T.broadcast(T.reinterpret(a.vload([0], f"{a_dtype}x{depth}"), dtype=f"int{bits}"),
                                          lanes), dtype=f"{a_dtype}x{lanes * depth}")
        accumulators = update(c.vload([0], dtype=f"int32x{lanes}"), pixel,
                              b.vload([0, 0], dtype=f"{b_dtype}x{lanes * depth}"))
        T.buffer_store(c, accumulators, [T.ramp(T.int32(0), 1, lanes)])

    return _intrinsic("implementation", lanes, depth, a_dtype, b_dtype, body)


def _pixel_description(lanes: int, depth: int, a_dtype: str, b_dtype: str) -> PrimFunc:
    """The pixels-in-lanes pattern: lane i sums `depth` channels of pixel i times one output
    channel's weights."""
    def body(a, b, c):
        with T.serial(0, lanes) as i, T.serial(0, depth) as k, T.sblock("update"):
            vi, vk = T.axis.remap("SR", [i, k])
            T.buffer_store(c, c[vi] + T.cast(a[vi, vk], "int32") * T.cast(b[vk], "int32"), [vi])

    return _intrinsic("description", lanes, depth, a_dtype, b_dtype, body, pixels=True)


def _pixel_implementation(lanes: int, depth: int, a_dtype: str, b_dtype: str, update) -> PrimFunc:
    """`lanes` pixels' codes as one vector (contiguous: `depth` channels innermost), the output
    channel's `depth` weights broadcast to every lane, and the same instruction sequence."""
    bits = np.dtype(b_dtype).itemsize * 8 * depth

    def body(a, b, c):
        weights = T.reinterpret(T.broadcast(T.reinterpret(b.vload([0], f"{b_dtype}x{depth}"), dtype=f"int{bits}"),
                                            lanes), dtype=f"{b_dtype}x{lanes * depth}")
        accumulators = update(c.vload([0], dtype=f"int32x{lanes}"),
                              a.vload([0, 0], dtype=f"{a_dtype}x{lanes * depth}"), weights)
        T.buffer_store(c, accumulators, [T.ramp(T.int32(0), 1, lanes)])

    return _intrinsic("implementation", lanes, depth, a_dtype, b_dtype, body, pixels=True)


def _llvm(name: str, dtype: str, *args):
    return T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id(name), *args, dtype=dtype)


def _vpdpbusd(acc, pixel, weights):
    return _llvm("llvm.x86.avx512.vpdpbusd.512", "int32x16", acc, pixel, weights)


def _vpdpbusd_256(acc, pixel, weights):
    return _llvm("llvm.x86.avx512.vpdpbusd.256", "int32x8", acc, pixel, weights)


def _vpmaddubsw(acc, pixel, weights):
    pairs = _llvm("llvm.x86.avx2.pmadd.ub.sw", "int16x16", pixel, weights)
    return acc + _llvm("llvm.x86.avx2.pmadd.wd", "int32x8", pairs, T.broadcast(T.int16(1), 16))


def _vpmaddwd(acc, pixel, weights):
    return acc + _llvm("llvm.x86.avx2.pmadd.wd", "int32x8", pixel, weights)


def _vpmaddubsw_512(acc, pixel, weights):
    pairs = _llvm("llvm.x86.avx512.pmaddubs.w.512", "int16x32", pixel, weights)
    return acc + _llvm("llvm.x86.avx512.pmaddw.d.512", "int32x16", pairs, T.broadcast(T.int16(1), 32))


def _vpmaddwd_512(acc, pixel, weights):
    return acc + _llvm("llvm.x86.avx512.pmaddw.d.512", "int32x16", pixel, weights)


def _sdot(acc, pixel, weights):
    return _llvm("llvm.aarch64.neon.sdot.v4i32.v16i8", "int32x4", acc, pixel, weights)


def _smull_sadalp(acc, pixel, weights):
    products = _llvm("llvm.aarch64.neon.smull.v8i16", "int16x8", pixel, weights)
    return acc + _llvm("llvm.aarch64.neon.saddlp.v4i32.v8i16", "int32x4", products)  # add + saddlp: one sadalp


# NEON has 32 vector registers, AVX2 16: its tiles hold up to 16 accumulators. The ARM defaults
# are chosen by register count, not measured (no ARM hardware here; emulator time is no guide).
# Not chunked by default: a chunked tile keeps its accumulators in memory, a load and a store
# per sdot; estimated (`qatie-compile estimate`, the paper's 100x100 model) the 1x1 256 -> 64
# conv 6.0 -> 16.7 MACs/cycle on the A76 model (3.5 -> 7.6 on the A55), the 3x3 128 -> 64 ones
# 16.2 -> 23.0 (7.3 -> 9.1); a default tile's weights there are at most 18 KB, within the
# A55's and A76's 32-64 KB L1 (llvm-mca models every access as an L1 hit either way). Tiles of
# 5 pixels for rows of 25 and 50 (`packed_conv.tiled_width`), 4x5 first: the paper's 100x100
# model 45.19 -> 41.70 M cycles estimated on the A76, 105.95 -> 97.64 on the A55 (sdot), 315.8
# -> 296.1 on the A53 (smull); with 2x5 first instead, 46.82 on the A76: fewer MACs per load
NEON_TILES = ((4, 4), (4, 5), (2, 8), (4, 2), (2, 4), (2, 5), (1, 8), (1, 4), (1, 5), (1, 2), (1, 1))
DOT_PRODUCTS = (
    # vpdpbusd on ymm (AVX512-VL) for convs with at most 8 outputs (the model's last conv: 3),
    # so tiles of one block only. Zen 4, c=32 at 256x256: the last conv 1.66 -> 0.90 ms (16 ->
    # 8 lanes), its default 1x8 tile within 4 % of the best tuning found among these tiles
    DotProduct("vnni-ymm", 8, 4, "uint8", "int8", ("avx512vnni", "avx512vl"),
               ((1, 8), (1, 16), (1, 4), (1, 2), (1, 1)), _vpdpbusd_256, chunk_by_default=False, max_outputs=8),
    # measured on Zen 4 by tuning every tile of the c=32 model's 35 convs at 256x256: 2x4 whole
    # was the best or within 1-4 % of it for every conv, 3x3 and 1x1 alike; chunked tiles were
    # 2-10 % slower for the 3x3 convs and 30-60 % slower for the 1x1 ones. 5 pixels for rows of
    # 25 and 50, which 4 does not divide (the paper's 100x100 model, Zen 4, 1 thread, untuned:
    # its 3x3 64 -> 64 convs at 25x25 0.121 -> 0.108 ms, end to end 4.80 -> 4.53 ms; a 4x5 tile
    # first instead was within noise, +-5 % per conv)
    DotProduct("vnni", 16, 4, "uint8", "int8", ("avx512vnni",),
               ((2, 4), (2, 5), (2, 8), (1, 8), (1, 4), (1, 5), (1, 2), (1, 1)), _vpdpbusd, chunk_by_default=False),
    # AVX-512BW without VNNI (Skylake-SP, Cascade Lake without DL Boost): the AVX2 sequences on
    # zmm, 16 lanes; no such CPU here, so the tiles are the AVX2 ones (measured on znver3), not
    # measured for these; exactness is tested on any AVX-512BW host (Zen 4 has it)
    DotProduct("avx512bw-u8", 16, 4, "uint8", "int8", ("avx512bw",),
               ((4, 2), (2, 4), (1, 8), (2, 2), (1, 4), (1, 2), (1, 1)), _vpmaddubsw_512, pairs_must_fit_int16=True),
    DotProduct("avx512bw-i16", 16, 2, "int16", "int16", ("avx512bw",),
               ((2, 4), (1, 8), (1, 4), (2, 2), (1, 2), (1, 1)), _vpmaddwd_512,
               pointwise_tiles=((2, 2), (2, 4), (1, 8), (1, 4), (1, 2), (1, 1))),
    DotProduct("avx2-u8", 8, 4, "uint8", "int8", ("avx2",),
               ((4, 2), (2, 4), (1, 8), (2, 2), (1, 4), (1, 2), (1, 1)), _vpmaddubsw, pairs_must_fit_int16=True),
    # 1x1 convs: 2x2 before 2x4, 10-15 % faster on each 1x1 conv of the c=32 model (chunked, znver3)
    DotProduct("avx2-i16", 8, 2, "int16", "int16", ("avx2",),
               ((2, 4), (1, 8), (1, 4), (2, 2), (1, 2), (1, 1)), _vpmaddwd,
               pointwise_tiles=((2, 2), (2, 4), (1, 8), (1, 4), (1, 2), (1, 1))),
    DotProduct("sdot", 4, 4, "int8", "int8", ("dotprod",), NEON_TILES, _sdot, chunk_by_default=False),
    DotProduct("neon-smull", 4, 2, "int8", "int8", ("neon",), NEON_TILES, _smull_sadalp, chunk_by_default=False),
)


# A conv with a few output channels (the model's last: 3) wastes most lanes of the dot products
# above, whose lanes are output channels; with output pixels in the lanes, every lane computes
# (`compile.backend.packed_conv`: stride 1 only, the lanes' pixels adjacent in the packed row).
# For fewer outputs than the channel lanes fill: 4 of vnni-ymm's 8, 3 of NEON's 4.
# vpdpbusd on zmm, 16 pixels: the paper's last conv (3x3, 32 -> 3, 100x100) 0.149 -> 0.050 ms,
# 58 -> 172 GMAC/s (Zen 4, in the model); sdot, 4 pixels: 1.16 -> 0.46 M cycles (estimated,
# Cortex-A76); smull + sadalp, 4 pixels of 2 channels
PIXEL_DOT_PRODUCTS = (
    DotProduct("vnni-pixels", 16, 4, "uint8", "int8", ("avx512vnni",), (), _vpdpbusd, max_outputs=4, pixels=True),
    DotProduct("sdot-pixels", 4, 4, "int8", "int8", ("dotprod",), (), _sdot, max_outputs=3, pixels=True),
    DotProduct("neon-smull-pixels", 4, 2, "int8", "int8", ("neon",), (), _smull_sadalp, max_outputs=3, pixels=True),
)


def _register() -> None:
    """Register every intrinsic with TVM, on import: schedules and tuned traces name them, in the
    build process and in MetaSchedule's workers alike."""
    for dot in (*DOT_PRODUCTS, *PIXEL_DOT_PRODUCTS):
        shape = (dot.lanes, dot.depth, dot.data_dtype, dot.weight_dtype)
        description, implementation = ((_pixel_description, _pixel_implementation) if dot.pixels
                                       else (_description, _implementation))
        TensorIntrin.register(dot.intrin, description(*shape), implementation(*shape, dot.update), override=True)


_register()


def by_name(name: str) -> DotProduct:
    return next(dot for dot in (*DOT_PRODUCTS, *PIXEL_DOT_PRODUCTS) if dot.name == name)


def candidates(target) -> list[DotProduct]:
    """The dot products `target`'s CPU has, best first (a conv takes the first exact for it)."""
    return [dot for dot in DOT_PRODUCTS if cpu_has(target, dot.features)]


def reachable(target) -> list[DotProduct]:
    """The dot products a conv on `target` can get: the candidates up to the first that fits any
    conv (`choose` never passes it), and its pixels-in-lanes ones. A log tuned on another CPU
    kind holds kernels of others (an AVX2 log on a VNNI CPU), which no build here generates."""
    dots = candidates(target)
    fits_all = next((i for i, dot in enumerate(dots) if not dot.pairs_must_fit_int16 and dot.max_outputs is None),
                    len(dots) - 1)
    return dots[:fits_all + 1] + pixel_candidates(target)


def choose(target, weight: np.ndarray) -> DotProduct | None:
    """The fastest dot product that fits a conv with `weight` on `target`, or None (no packing)."""
    return next((dot for dot in candidates(target) if dot.fits(weight)), None)


def widest(target) -> DotProduct | None:
    """The target's first dot product for any number of channels: its lanes block the depthwise
    convs, which use no dot product (int32 multiply-adds) and take their neighbours' blocks."""
    return next((dot for dot in candidates(target) if dot.max_outputs is None), None)


def pixel_candidates(target) -> list[DotProduct]:
    """The pixels-in-lanes dot products `target`'s CPU has."""
    return [dot for dot in PIXEL_DOT_PRODUCTS if cpu_has(target, dot.features)]


def choose_pixels(target, weight: np.ndarray, strides, dilation, out_width: int) -> DotProduct | None:
    """The pixels-in-lanes dot product for a conv with `weight` where one fits: the target has
    it, the conv has at most its `max_outputs` channels, stride and dilation 1 (a vector's
    pixels adjacent in the input too) and a row of at least one vector."""
    if tuple(strides) != (1, 1) or tuple(dilation) != (1, 1):
        return None
    return next((dot for dot in pixel_candidates(target)
                 if weight.shape[0] <= dot.max_outputs and out_width >= dot.lanes), None)
