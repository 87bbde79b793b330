"""Default CPU schedules for untuned kernels, as dlight rules, plus the CPU Relax pipeline.

TVM 0.27's CPU pipeline legalizes and fuses but schedules nothing: every kernel is a naive
loop nest. These rules give each fused kernel a reasonable schedule without tuning; tuning
records (MetaSchedule) replace them where they exist.

- `DirectConv`: a conv reduction with its elementwise neighbours inlined where TVM allows;
  a tile of W outputs innermost (unrolled for LLVM's vectorizer), output channels and rows in
  parallel; the requantize epilogue as its own parallel, vectorized loop.
- `PackedConv`: a conv the packing pass (`compile.backend.packed_conv`) laid out for a dot-product
  instruction: a register tile of output-channel blocks x output pixels, the instruction
  tensorized innermost, chunks of a row sharing each input-channel block's weights when they
  would not stay in L1 (`Tile`), the requantize epilogue computed per tile while it is in cache.
- `BlockedLayout`: an elementwise kernel writing the blocked layout (a conv's input packing, the
  ops between convs) with its producers inlined: a pixel's channel block as the vector; after
  a channel concat, the channel-block loop partitioned at the concat's inputs.
- `IntegerReduction`: an integer sum over the innermost axes (InstanceNorm's statistics): one
  vector of partial sums per output.
- `Elementwise`: any other kernel: producers inlined, the last block's loops fused, split into
  a parallel outer loop and a vectorized inner one.
"""

from __future__ import annotations

import functools
import itertools
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm import relax, s_tir, tirx
from tvm.relax.backend.cpu_generic.pipeline import (
    dataflow_lower_passes,
    finalize_passes,
    legalize_passes,
    library_dispatch_passes,
)
from tvm.s_tir import dlight as dl
from tvm.s_tir.dlight.analysis import normalize_prim_func
from tvm.s_tir.dlight.base import try_inline
from tvm.s_tir.dlight.cpu.base import CPUScheduleRule
from tvm.tirx.analysis import undefined_vars

from compile.backend.blocked_layout import blocked_layout
from compile.backend.dot_products import DotProduct, by_name
from compile.backend.high_multiply import (
    EVEN_ODD_BLOCK,
    HIGH_BLOCK,
    even_odd_of_lanes,
    for_target,
    high_multiplies,
)
from compile.backend.kernel_boundaries import (
    LOOKUP_BLOCK,
    injective_tables,
    per_consumer,
)
from compile.backend.kernel_names import after_fusion, gpu_pipeline
from compile.backend.kernel_table import shape_free_key
from compile.backend.narrow_integers import narrow_integers
from compile.backend.packed_conv import (
    ANNOTATION,
    CONV_BLOCK,
    DEPTHWISE_BLOCK,
    PIXEL_BLOCK,
    most_pixel_vectors,
    pack_convs,
)
from compile.backend.table_lookup import LANES_ATTR
from compile.backend.targets import target_kind
from compile.backend.winograd import OUTPUT_BLOCK, PRODUCT_BLOCK

VECTOR_LANES = (16, 8, 4, 2)
MIN_LANES = 4  # an elementwise vector along one loop rather than lane-by-lane indices (`_parallel_vectorize`)
CONV_KINDS = re.compile(r"^S{3,4}R{1,3}$")
CHUNK_PIXELS = 32  # output pixels per input-channel block pass of a packed conv (see Tile)
CHUNK_ABOVE_BYTES = 16 * 1024  # a register tile's weights above this (half an L1) are chunked by default
PACK_UNROLL = 4  # pixels per iteration of a packing kernel's W loop
REDUCTION_LANES = (32, 16, 8)  # partial sums per output of an integer reduction, first that divides
DEPTHWISE_PIXELS = (4, 2, 1)  # output pixels per register tile of a packed depthwise conv, first that divides
CONCAT_BLOCK = "T_concat"  # TOPI's concatenate block
BLOCKED_RANK = 5  # [N, C/G, H, W, G]: the rank of a tensor in the convs' blocked layout
BLOCK_LANES = (4, 8, 16)  # its G: the lanes of our dot products (NEON, AVX2, AVX-512)


def _divisor(extent: int, widest: int = VECTOR_LANES[0]) -> int:
    """The widest vector of up to `widest` lanes that divides `extent` (1: none)."""
    return next((lanes for lanes in VECTOR_LANES if lanes <= widest and extent % lanes == 0), 1)


def _extent(sch: s_tir.Schedule, loop) -> int | None:
    value = sch.get(loop).extent
    return int(value) if isinstance(value, tirx.IntImm) else None


def _normalized(rule: CPUScheduleRule, func, target):
    """(schedule, block infos) for a PrimFunc this rule may schedule, else None."""
    if not isinstance(func, tirx.PrimFunc) or not rule.is_target_available(target):
        return None
    sch = s_tir.Schedule(func)
    infos = normalize_prim_func(sch)
    return None if infos is None else (sch, infos)


def _only_reduction(infos):
    """The block info of a kernel's one reduction, or None if it has none or several."""
    reductions = [b for b in infos if not b.is_injective()]
    return reductions[0] if len(reductions) == 1 else None


def _block_named(sch: s_tir.Schedule, name: str):
    """The kernel's block called `name`, or None."""
    try:
        return sch.get_sblock(name)
    except Exception:  # noqa: BLE001 - TVM raises a plain error for a block that is not there
        return None


def _annotated_block(sch: s_tir.Schedule, name: str):
    """The kernel's block `name` and the dot product it is annotated with, or None. Looked up by
    name, so a tuning record's trace names it (a record for another kernel fails loudly, not
    silently)."""
    block = _block_named(sch, name)
    dot = None if block is None else sch.get(block).annotations.get(ANNOTATION)
    return None if dot is None else (block, by_name(str(dot)))


def packed_conv_block(sch: s_tir.Schedule):
    """The packed conv block of a kernel and its dot product, or None."""
    return _annotated_block(sch, CONV_BLOCK)


def _inline_epilogue(sch: s_tir.Schedule, name: str):
    """Every block after the block `name` inlined into the kernel's last block, the epilogue
    (None if there is none)."""
    return _inline_epilogue_but(sch, name, None)[0]


def _inline_epilogue_but(sch: s_tir.Schedule, name: str, keep: str | None):
    """`_inline_epilogue`, but the block named `keep` stays (what precedes it inlined into it
    instead): (the epilogue, that block or None)."""
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    epilogue = blocks[[sch.get(b).name_hint for b in blocks].index(name) + 1:]
    kept = next((b for b in epilogue[:-1] if sch.get(b).name_hint == keep), None)
    for block in epilogue[:-1]:
        if block != kept:
            sch.compute_inline(block)
    return (epilogue[-1] if epilogue else None), kept


def _epilogue_per_tile(sch: s_tir.Schedule, conv, epilogue, tile, reduction, high=None, intrin=None) -> None:
    """The epilogue computed (vectorized) under the register-tile loop `tile` while the
    accumulators are in cache, after `high` (a bias add and high multiply, tensorized with
    `intrin`) where given; the accumulators' init split off at the first reduction loop and
    vectorized. (The order of these steps is part of the tuning records' traces.)"""
    epilogue = epilogue if epilogue is not None else sch.cache_write(conv, 0, "global")
    if high is not None:
        sch.reverse_compute_at(high, tile)
    sch.reverse_compute_at(epilogue, tile)
    if high is not None:
        sch.tensorize(sch.get_loops(high)[-1], intrin)
    sch.vectorize(sch.get_loops(epilogue)[-1])
    init = sch.decompose_reduction(conv, reduction)
    sch.vectorize(sch.get_loops(init)[-1])


@dataclass(frozen=True)
class Tile:
    """How a packed conv is tiled: `out_blocks` x `pixels` int32 accumulators in registers, and
    `chunk` output pixels of one row that run through one input-channel block before the next,
    so its weights (9 taps x a block) stay in L1 while `chunk / pixels` tiles use them. With
    `chunk == pixels` each tile runs the whole reduction alone: best for a 3x3 conv while the
    register tile's weights stay in L1, but above that every tile re-reads them from L2. Measured
    on znver3 (AVX2), 1 thread, best of 25 interleaved: 128 -> 64 channels 3x3 at 64x64 (37 KB
    of weights per 2x4 tile) 59 -> 66 GMAC/s, 64 -> 32 at 128x128 (18 KB) 60 -> 66. A 1x1 conv
    has no taps to reuse a loaded pixel, and unchunked its tile reads a few pixels from every
    input-channel block's plane (one stream per block): chunked, the 1x1 convs of the c=32 model
    at 256x256 took 3-53 % less time (best of 15 interleaved; 256 -> 64 channels at 64x64:
    2.57 -> 1.21 ms with the 2x2 tile)."""

    out_blocks: int
    pixels: int
    chunk: int

    @property
    def name(self) -> str:
        return f"{self.out_blocks}x{self.pixels}" + (f"/{self.chunk}" if self.chunk != self.pixels else "")


def _chunk(pixels: int, width: int) -> int:
    """The widest multiple of `pixels` up to `CHUNK_PIXELS` that divides the row."""
    return max(c for c in range(pixels, max(CHUNK_PIXELS, pixels) + 1, pixels) if width % c == 0)


def packed_tiles(sch: s_tir.Schedule, conv, dot: DotProduct) -> list[Tile]:
    """The tiles that fit this conv (its dot product's register tiles dividing its channel blocks
    and width), each whole and chunked; the first is the untuned default, chunked when the
    register tile's weights would not stay in L1 (`CHUNK_ABOVE_BYTES`) and for every 1x1 conv
    (see `Tile`) where the dot product chunks by default, in its order for 1x1 convs where it
    has one."""
    _, blocks, _, width, lanes, *reduction = (_extent(sch, loop) for loop in sch.get_loops(conv))
    block_bytes = lanes * math.prod(reduction) * np.dtype(dot.weight_dtype).itemsize
    pointwise = reduction[1] * reduction[2] == 1  # (input-channel blocks, ky, kx, groups, depth)
    tiles = []
    for out_blocks, pixels in (dot.pointwise_tiles or dot.tiles) if pointwise else dot.tiles:
        if blocks % out_blocks == 0 and width % pixels == 0:
            pair = [Tile(out_blocks, pixels, pixels), Tile(out_blocks, pixels, _chunk(pixels, width))]
            chunked_first = dot.chunk_by_default and (pointwise or out_blocks * block_bytes > CHUNK_ABOVE_BYTES)
            tiles += list(dict.fromkeys(pair[::-1] if chunked_first else pair))
    return tiles


def schedule_packed_conv(sch: s_tir.Schedule, conv, dot: DotProduct, tile: Tile) -> None:
    """Register tile (out_blocks x pixels) with the instruction innermost; the taps and channel
    groups of one input-channel block outside it, the block loop outside the chunk's tiles;
    rows and channel blocks in parallel; the epilogue (everything after the conv, inlined into
    one block) computed per chunk."""
    epilogue, high = _inline_epilogue_but(sch, CONV_BLOCK, EVEN_ODD_BLOCK)
    n, o, y, x, lane, ic, ky, kx, group, inner = sch.get_loops(conv)
    o_outer, o_inner = sch.split(o, [None, tile.out_blocks])
    if tile.chunk == tile.pixels:
        x_outer, x_inner = sch.split(x, [None, tile.pixels])
        sch.reorder(n, o_outer, y, x_outer, ic, ky, kx, group, o_inner, x_inner, lane, inner)
    else:
        x_outer, x_tiles, x_inner = sch.split(x, [None, tile.chunk // tile.pixels, tile.pixels])
        sch.reorder(n, o_outer, y, x_outer, ic, x_tiles, ky, kx, group, o_inner, x_inner, lane, inner)
    sch.parallel(sch.fuse(n, o_outer, y))
    intrin = even_odd_of_lanes(dot.lanes).intrin if high is not None else None
    _epilogue_per_tile(sch, conv, epilogue, x_outer, ic, high, intrin)
    sch.tensorize(lane, dot.intrin)
    sch.unroll(o_inner)
    sch.unroll(x_inner)


@dataclass(frozen=True)
class PixelTile:
    """A pixels-in-lanes conv's register tile: every output channel times `vectors` adjacent
    vectors of pixels, the row's taps and input-channel blocks outside it."""

    vectors: int

    @property
    def name(self) -> str:
        return f"all x {self.vectors}"


def pixel_tiles(sch: s_tir.Schedule, conv) -> list[PixelTile]:
    """Every tile whose vectors divide the row's (which the packing made whole tiles of
    `packed_conv.pixel_tile`) within `packed_conv.most_pixel_vectors`, widest first: the default."""
    _, outputs, _, vectors, *_ = (_extent(sch, loop) for loop in sch.get_loops(conv))
    return [PixelTile(t) for t in range(most_pixel_vectors(vectors, outputs), 0, -1) if vectors % t == 0]


def schedule_pixel_conv(sch: s_tir.Schedule, conv, dot: DotProduct, tile: PixelTile) -> None:
    """The tile's accumulators innermost (unrolled: output channels x vectors, the instruction
    over a vector's pixels and channel group), taps and input-channel blocks outside it, rows
    in parallel, the epilogue per tile."""
    epilogue = _inline_epilogue(sch, PIXEL_BLOCK)
    n, o, y, x, lane, ic, ky, kx, inner = sch.get_loops(conv)
    x_outer, x_inner = sch.split(x, [None, tile.vectors])
    sch.reorder(n, y, x_outer, ic, ky, kx, o, x_inner, lane, inner)
    sch.parallel(sch.fuse(n, y))
    _epilogue_per_tile(sch, conv, epilogue, x_outer, ic)
    sch.tensorize(lane, dot.intrin)
    sch.unroll(o)
    sch.unroll(x_inner)


@dataclass(frozen=True)
class WinogradTile:
    """How a Winograd conv is tiled: the input transform of a segment of a row of tiles (up to
    `SEGMENT_BYTES` of transformed input, kept in L2), then per group of `channel_blocks`
    output-channel blocks, per step of `steps` tiles: their 16 GEMMs (register tiles of
    `out_blocks` output-channel blocks x `pixels` tiles) and the output transform, in L1. The
    group keeps a slice of the transformed weights in cache while it runs through the segment.
    Measured on the c=32 model at 256x256 (znver3), against transforming the input per step
    with every output channel, min of 15 interleaved rounds of both builds' kernels: up to 9 %
    less time per Winograd kernel (64 -> 64 channels at 64x64 1.65 -> 1.51 ms), the 32-channel
    ones alike; the model's conv kernels 56.1 -> 54.2 ms."""

    steps: int
    out_blocks: int
    channel_blocks: int
    pixels: int

    @property
    def name(self) -> str:
        return f"winograd {self.steps}/{self.out_blocks}x{self.pixels}/{self.channel_blocks}"


# Each list default first. Register tiles (output-channel blocks, tiles): 2x4 and 4x2 hold 8
# accumulators and load 0.75 vectors per vpmaddwd (2x2: 1.0; 1x2, 1.5, for an odd block count).
# A lone conv writing int32 ran 3-9 % faster at 4/2x4/8 than at the default 8/2x2/4 (znver3,
# `python bench/conv_kernels.py --channels 32 --size 256x256` times every tile), but in the c=32
# model, requantizing in the output transform, its 32-channel 256x256 convs ran 6-22 % slower
# (per-kernel interleaved timing of two builds): the default stays, tuning picks per kernel.
WINOGRAD_REGISTER_TILES = ((2, 2), (2, 4), (4, 2), (1, 2))
WINOGRAD_STEPS = (8, 4, 2)
WINOGRAD_CHANNEL_BLOCKS = (4, 8)  # output-channel blocks per pass over a segment
SEGMENT_BYTES = 128 * 1024  # transformed input of a row segment (a quarter of a Zen 3 core's L2)


def winograd_block(sch: s_tir.Schedule):
    """The Winograd conv's GEMM block of a kernel and its dot product, or None."""
    return _annotated_block(sch, PRODUCT_BLOCK)


def winograd_tiles(sch: s_tir.Schedule, product) -> list[WinogradTile]:
    """The tiles that fit, default first: steps dividing the row's tiles, register tiles whose
    tiles divide the steps and whose blocks divide the group, groups of 4 or 8 blocks (fewer
    where the conv has fewer; each group once)."""
    tiles_per_row, _, _, blocks = (_extent(sch, loop) for loop in sch.get_loops(product)[2:6])
    return [WinogradTile(steps, out_blocks, group, pixels)
            for out_blocks, pixels in WINOGRAD_REGISTER_TILES for steps in WINOGRAD_STEPS
            for group in dict.fromkeys(min(g, blocks) for g in WINOGRAD_CHANNEL_BLOCKS)
            if tiles_per_row % steps == 0 and steps % pixels == 0 and blocks % group == 0 and group % out_blocks == 0]


def _segment(tiles_per_row: int, steps: int, tile_bytes: int) -> int:
    """Tiles per row segment: the most whose transformed input fits `SEGMENT_BYTES`, whole steps
    dividing the row (at least one step)."""
    fitting = [d for d in range(steps, tiles_per_row + 1, steps)
               if tiles_per_row % d == 0 and d * tile_bytes <= SEGMENT_BYTES]
    return max(fitting, default=steps)


def schedule_winograd(sch: s_tir.Schedule, dot: DotProduct, tile: WinogradTile) -> None:
    """The epilogue inlined into the output transform; per segment of a row of tiles: its input
    transform (unrolled, vectorized over the channel group), then per group of output-channel
    blocks, per step of `tile.steps` tiles: the 16 GEMMs (tensorized register tiles) and output
    transform + epilogue; rows of tiles in parallel."""
    epilogue = _inline_epilogue(sch, OUTPUT_BLOCK)
    output = sch.get_sblock(OUTPUT_BLOCK)
    if epilogue is not None:
        sch.compute_inline(output)
        output = epilogue
    product, transformed = sch.get_sblock(PRODUCT_BLOCK), sch.get_sblock("winograd_input")
    *_, channels, group = (_extent(sch, loop) for loop in sch.get_loops(transformed))
    n, o, ty, r, tx, s, lane = sch.get_loops(output)
    segment = _segment(_extent(sch, tx), tile.steps, 16 * channels * group * 2)  # int16 values
    seg, step, within = sch.split(tx, [None, segment // tile.steps, tile.steps])
    o_outer, o_inner = sch.split(o, [None, tile.channel_blocks])
    sch.reorder(n, ty, seg, o_outer, step, o_inner, within, r, s, lane)
    sch.parallel(sch.fuse(n, ty))
    # unit loops kept (one input-channel or output-channel block), so loops are found by position
    sch.compute_at(product, step, preserve_unit_loops=True)
    sch.compute_at(transformed, seg, preserve_unit_loops=True)
    tiles, a, b, channels, group = sch.get_loops(transformed)[-5:]
    sch.reorder(tiles, channels, a, b, group)
    sch.unroll(a)
    sch.unroll(b)
    sch.vectorize(group)
    tiles, a, b, out_blocks, lanes, channels, pairs, k = sch.get_loops(product)[-8:]
    blocks_outer, blocks_inner = sch.split(out_blocks, [None, tile.out_blocks])
    tiles_outer, tiles_inner = sch.split(tiles, [None, tile.pixels])
    sch.reorder(a, b, blocks_outer, tiles_outer, channels, pairs, blocks_inner, tiles_inner, lanes, k)
    init = sch.decompose_reduction(product, channels)
    sch.tensorize(lanes, dot.intrin)
    sch.unroll(blocks_inner)
    sch.unroll(tiles_inner)
    sch.vectorize(sch.get_loops(init)[-1])
    sch.unroll(r)
    sch.unroll(s)
    sch.vectorize(lane)


@dataclass(frozen=True)
class ConvTiles:
    """A tensorized conv kernel's tiles (the first is the untuned default) and `schedule(sch,
    tile)`, which applies one."""

    tiles: list
    schedule: Callable[[s_tir.Schedule, object], None]


def conv_tiles(sch: s_tir.Schedule) -> ConvTiles | None:
    """The tiles of a Winograd, packed or pixels-in-lanes conv kernel, or None if it is none of them."""
    found = winograd_block(sch)
    if found is not None:
        product, dot = found
        return ConvTiles(winograd_tiles(sch, product), functools.partial(schedule_winograd, dot=dot))
    found = packed_conv_block(sch)
    if found is not None:
        conv, dot = found
        return ConvTiles(packed_tiles(sch, conv, dot), functools.partial(schedule_packed_conv, conv=conv, dot=dot))
    found = _annotated_block(sch, PIXEL_BLOCK)
    if found is not None:
        conv, dot = found
        return ConvTiles(pixel_tiles(sch, conv), functools.partial(schedule_pixel_conv, conv=conv, dot=dot))
    return None


def packed_conv_space(sch: s_tir.Schedule) -> list[s_tir.Schedule]:
    """MetaSchedule's design space for a Winograd or packed conv kernel: one schedule per tile
    that fits (the untuned default among them), so every tuning record is a tensorized kernel."""
    found = conv_tiles(sch)
    spaces = []
    for tile in found.tiles:
        space = sch.copy()
        found.schedule(space, tile=tile)
        spaces.append(space)
    return spaces


def packed_space_size(kernel: tvm.IRModule) -> int | None:
    """How many schedules `packed_conv_space` has for this kernel; None if it is no packed or
    Winograd conv (its space, MetaSchedule's default, has no useful bound)."""
    found = conv_tiles(s_tir.Schedule(kernel))
    return None if found is None else len(found.tiles)


class PackedConv(CPUScheduleRule):
    """A packed or Winograd conv kernel with its first fitting tile."""

    def apply(self, func: tirx.PrimFunc, target, _tunable: bool):
        if not isinstance(func, tirx.PrimFunc) or not self.is_target_available(target):
            return None
        sch = s_tir.Schedule(func)
        found = conv_tiles(sch)
        if found is None:
            return None
        found.schedule(sch, tile=found.tiles[0])
        return sch


class PackedDepthwise(CPUScheduleRule):
    """A depthwise conv in the packed layout: `DEPTHWISE_PIXELS` output pixels x the channel
    lanes as int32 vectors per register tile, taps outside it, rows and channel blocks in
    parallel, the epilogue per tile (no dot product: each output channel has one input)."""

    def apply(self, func: tirx.PrimFunc, target, _tunable: bool):
        if not isinstance(func, tirx.PrimFunc) or not self.is_target_available(target):
            return None
        sch = s_tir.Schedule(func)
        conv = _block_named(sch, DEPTHWISE_BLOCK)
        if conv is None:
            return None
        epilogue = _inline_epilogue(sch, DEPTHWISE_BLOCK)
        n, c, y, x, lanes, ky, kx = sch.get_loops(conv)
        pixels = next(p for p in DEPTHWISE_PIXELS if (_extent(sch, x) or 1) % p == 0)
        x_outer, x_inner = sch.split(x, [None, pixels])
        sch.reorder(n, c, y, x_outer, ky, kx, x_inner, lanes)
        sch.parallel(sch.fuse(n, c, y))
        _epilogue_per_tile(sch, conv, epilogue, x_outer, ky)
        sch.unroll(x_inner)
        sch.unroll(lanes)  # the update block takes no `vectorize` (see DirectConv); LLVM's SLP packs the lanes
        return sch


def _is_lookup(sch: s_tir.Schedule, block) -> bool:
    """Whether `block` is a table lookup (`kernel_boundaries`: a gather from a 1-D table)."""
    return sch.get(block).name_hint.startswith(LOOKUP_BLOCK)


def _is_high_multiply(sch: s_tir.Schedule, block) -> bool:
    """Whether `block` is a requantize's high multiply (`compile.backend.high_multiply`)."""
    return sch.get(block).name_hint.startswith(HIGH_BLOCK)


def _exact_lanes(sch: s_tir.Schedule, block) -> int | None:
    """The vector width a block computed by a fixed-width instruction must have, or None
    (`compile.backend.table_lookup`: its table loads are registers only at that width)."""
    lanes = sch.get(block).annotations.get(LANES_ATTR)
    return None if lanes is None else int(lanes)


def _fixed_width(sch: s_tir.Schedule, infos) -> list:
    """The block infos of `infos` computed by a fixed-width instruction (`_exact_lanes`)."""
    return [info for info in infos if _exact_lanes(sch, info.block_rv)]


def vectorize_exactly(sch: s_tir.Schedule, blocks: list) -> None:
    """Each of `blocks` a loop nest of its own, never inlined: its innermost loop split at
    exactly its lanes and vectorized (lane j: every innermost index j modulo the lanes), the
    loops outside fused and parallel."""
    for block in blocks:
        *outer, inner = sch.get_loops(block)
        lanes = _exact_lanes(sch, block)
        if _extent(sch, inner) != lanes:
            more, inner = sch.split(inner, [None, lanes])
            outer.append(more)
        sch.vectorize(inner)
        if outer:
            sch.parallel(sch.fuse(*outer) if len(outer) > 1 else outer[0])


def _concat_channel_offsets(sch: s_tir.Schedule, infos) -> list[int] | None:
    """Where each input of a channel concat in the kernel starts (channels, sorted, from 0), or None if
    there is no concat or it joins another axis. Read from the concat block's input regions:
    input k is read at channel `c - offset_k` and at the output's own index on every other
    axis (a unit axis normalized away is read at 0)."""
    concat = next((info.block_rv for info in infos if sch.get(info.block_rv).name_hint.startswith(CONCAT_BLOCK)), None)
    if concat is None:
        return None
    block = sch.get(concat)
    analyzer = tvm.sym.Analyzer()

    def shift(index) -> int | None:
        """index = (some iter var) - shift, or a unit axis read at 0: the shift, else None."""
        for v in block.iter_vars:
            delta = analyzer.simplify(v.var - index)
            if isinstance(delta, tirx.IntImm):
                return int(delta)
        return 0 if isinstance(index, tirx.IntImm) and int(index) == 0 else None

    offsets = set()
    for read in block.reads:
        shifts = [shift(r.min) for r in read.region]
        if len(shifts) < 2 or None in shifts or any(d for k, d in enumerate(shifts) if k != 1):
            return None
        offsets.add(shifts[1])
    shape = block.writes[0].source.shape
    per_block = int(shape[-1]) if len(shape) == BLOCKED_RANK else 1  # a concat of blocks: offsets in blocks
    return sorted(o * per_block for o in offsets)


class BlockedLayout(CPUScheduleRule):
    """An elementwise kernel that writes the blocked layout [N, C/G, H, W, G]: a conv's input
    packing, or anything between convs (`compile.backend.blocked_layout`), with what produces it
    (pad, resize, InstanceNorm's affine, ...) inlined: rows in parallel, the G channels of a
    pixel as one vector (contiguous in the output and in every blocked input), W unrolled by
    `PACK_UNROLL` pixels. A per-channel operand ([N, C/G, 1, 1, G]: InstanceNorm's statistics)
    is then one vector per row, which LLVM hoists out of the W loop; with all loops fused into
    one vector of 16, the c=32 model's InstanceNorm kernels (float64 statistics recomputed per
    element) took 0.4-4.1 ms instead of 0.2-0.4. Measured on the c=32 model at 256x256 (znver3),
    NCHW input: resize + pad + pack 4.77 -> 0.50 ms, unpack + pad + pack 0.44 -> 0.06 ms against
    vectorizing W with the channels unrolled.

    After a channel concat, which input a channel comes from is a select per lane, so every
    lane would read every input. Where the inputs start at whole G-blocks, the channel-block
    loop is partitioned at those starts: each part reads one input, its selects fold away, and
    it takes the same schedule (concat of four 32-channel tensors + requantize + pack at
    128x128: 2.02 -> 1.25 ms, best of 30). Otherwise (an NCHW concat of channel counts that are
    not whole blocks) W is vectorized with the channels unrolled, which reads both sides of a
    select with contiguous loads (5.46 -> 1.46 ms against the channels as the vector there)."""

    def apply(self, func: tirx.PrimFunc, target, _tunable: bool):
        normalized = _normalized(self, func, target)
        if normalized is None:
            return None
        sch, infos = normalized
        last = infos[-1]
        shape = sch.get(last.block_rv).writes[0].source.shape
        if not last.is_injective() or len(shape) != BLOCKED_RANK or int(shape[-1]) not in BLOCK_LANES:
            return None  # not the blocked layout (a model's own 5-D tensor)
        exact = _fixed_width(sch, infos)
        if last in exact:
            return None  # a kernel that is a vector lookup: Elementwise's
        offsets = _concat_channel_offsets(sch, infos)  # before inlining removes the concat block
        lookups = [info for info in infos[:-1] if _is_lookup(sch, info.block_rv)]
        highs = [info for info in infos[:-1] if _is_high_multiply(sch, info.block_rv)]
        if try_inline(sch, [info for info in infos[:-1] if info not in lookups + highs + exact]):
            return None
        # a vector lookup as wide as a pixel's vector is computed per pixel too (no buffer between)
        pixel_wide = [info for info in exact if _exact_lanes(sch, info.block_rv) == int(shape[-1])]
        per_pixel = self._schedule(sch, infos, offsets, lookups, highs + pixel_wide)
        if per_pixel is None:
            return None
        for info in highs:
            if info not in per_pixel:  # a loop of its own (see Elementwise)
                _parallel_vectorize(sch, info.block_rv, for_target(target).lanes)
        vectorize_exactly(sch, [info.block_rv for info in exact if info not in per_pixel])
        return sch

    def _schedule(self, sch: s_tir.Schedule, infos, offsets, lookups: list, highs: list) -> list | None:
        """The output block's loops; the blocks computed per pixel (None: a lookup could not be inlined)."""
        last = infos[-1]
        loops = sch.get_loops(last.block_rv)
        if len(loops) == 1:  # one channel block of one pixel (a dense layer's 16 outputs): unit loops are gone
            if try_inline(sch, lookups):
                return None
            sch.vectorize(loops[0])
            return []
        *rows, width, lanes = loops
        group = _extent(sch, lanes)
        if offsets is not None and len(rows) >= 2 and all(o % group == 0 for o in offsets):
            blocks = [o // group for o in offsets] + [_extent(sch, rows[-2])]
            sizes = [b - a for a, b in itertools.pairwise(blocks)]
            # each part of a partitioned loop is a block scope of its own, which no lookup can be
            # computed at (and TVM 0.27's loop_partition crashes on a loop holding two blocks):
            # there a lookup stays inlined in the vector (its lanes one by one as well: the same
            # time on x86, 0.19x the estimated cycles on the A76 model, but twice the build time)
            if len(sizes) > 1 and try_inline(sch, lookups):
                return None
            per_pixel = lookups + highs if len(sizes) == 1 else []
            for part in sch.loop_partition(rows[-2], [*sizes[:-1], None]) if len(sizes) > 1 else [rows[-2]]:
                *_, row, width, lanes = sch.get_loops(sch.get_child_blocks(part)[-1])
                sch.parallel(row)  # partitioned loops cannot fuse (they do not start at 0)
                self._per_pixel(sch, infos, per_pixel, self._pixels(sch, width, lanes))
            return per_pixel
        per_pixel = lookups + highs
        rows = self._whole_input_pixels(sch, last.block_rv, rows, width, group) if not per_pixel else rows
        if rows:
            sch.parallel(sch.fuse(*rows) if len(rows) > 1 else rows[0])
        if offsets is not None:
            if try_inline(sch, lookups):
                return None
            sch.reorder(lanes, width)
            sch.unroll(lanes)
            _split_vectorized(sch, width)
            return []
        self._per_pixel(sch, infos, per_pixel, self._pixels(sch, width, lanes, _is_lookup(sch, last.block_rv)))
        return per_pixel

    @staticmethod
    def _whole_input_pixels(sch: s_tir.Schedule, block, rows: list, width, group: int) -> list:
        """Where the output's groups are narrower than a blocked input's (16-channel blocks
        repacked as 4-channel groups for a pixels-in-lanes conv), the output groups of one input
        block innermost but for the lanes: each input pixel is read once, whole, and its groups
        go to their planes. With the group loop outside the rows, each pass over the input read
        every cache line for a quarter of it: the 1920x1080 model's repack 14.6 -> 8.0 ms (Zen 4,
        1 thread, min of 2000 runs; 0.039 -> 0.034 ms at 100x100). The rows left to run in
        parallel."""
        groups = max((int(r.source.shape[-1]) for r in sch.get(block).reads if len(r.source.shape) == BLOCKED_RANK),
                     default=group) // group  # output groups per block of the widest blocked input
        if len(rows) < 2 or groups < 2 or (_extent(sch, rows[-2]) or 1) % groups:
            return rows
        outer, inner = sch.split(rows[-2], [None, groups])  # (..., channel blocks, H)
        sch.reorder(rows[-1], width, inner)
        sch.unroll(inner)
        return [*rows[:-2], outer, rows[-1]]

    @staticmethod
    def _pixels(sch: s_tir.Schedule, width, lanes, looks_up: bool = False):
        """A pixel's channels as one vector, W unrolled by `PACK_UNROLL`; the pixel's loop. Where
        the kernel's vector `looks_up` in a table, its lanes one by one instead: TVM writes a
        vector load from computed addresses as a scalar load per lane, each lane's index taken out
        of a vector register and each loaded value put back into one (`CodeGenLLVM::
        BufferAccessHelper`), which is slower than scalar code (see `_per_pixel`)."""
        if (_extent(sch, width) or 1) % PACK_UNROLL == 0:
            width = sch.split(width, [None, PACK_UNROLL])[1]
            sch.unroll(width)
        if looks_up:
            sch.unroll(lanes)
        else:
            sch.vectorize(lanes)
        return width

    @staticmethod
    def _per_pixel(sch: s_tir.Schedule, infos, blocks: list, pixel) -> None:
        """`blocks` computed per pixel into small buffers the pixel's vector then reads (last
        first: a block's consumers must be there before it), so the arithmetic around them stays
        vectorized. A table lookup lane by lane (scalar loads); measured on the paper's TFLite
        model at 100x100: x86 (Zen 5), the lookup kernels 0.75 -> 0.71 ms, where all lanes one by
        one made them slower (0.89 ms: the arithmetic scalar too); arm64 (estimated, Cortex-A76
        model), 23.4 -> 14.2 M cycles (docs/performance.md). A high multiply as one vector: not
        inlined, so a chain of requantizes stays one small expression per step (see Elementwise)."""
        for info in reversed([info for info in infos if info in blocks]):
            sch.compute_at(info.block_rv, pixel)
            loops = sch.get_loops(info.block_rv)
            depth = next(i for i, loop in enumerate(loops) if sch.get(loop).same_as(sch.get(pixel)))
            for loop in loops[depth + 1:]:
                sch.unroll(loop) if _is_lookup(sch, info.block_rv) else sch.vectorize(loop)


class DirectConv(CPUScheduleRule):
    """NCHW conv2d (spatial n, f, y, x; reduction c, ky, kx) with inlined neighbours."""

    def apply(self, func: tirx.PrimFunc, target, _tunable: bool):
        normalized = _normalized(self, func, target)
        if normalized is None:
            return None
        sch, infos = normalized
        reduction = _only_reduction(infos)
        kinds = reduction.dom_kind() if reduction is not None else ""
        # unit loops are dropped by normalization: batch 1 -> SSS..., a 1x1 kernel -> ...R
        if not CONV_KINDS.match(kinds):
            return None
        conv = reduction.block_rv
        remaining = try_inline(sch, [b for b in infos if b.block_rv != conv])
        if len(remaining) > 1:
            return None
        loops = sch.get_loops(conv)
        spatial = kinds.count("S")
        *rows, x = loops[:spatial]
        reduction = loops[spatial:]
        width = _extent(sch, x)
        if width is None:
            return None
        xo, xi = sch.split(x, [None, _divisor(width)])
        sch.reorder(*rows, xo, *reduction, xi)
        outer = sch.fuse(*rows)
        sch.parallel(outer)
        if remaining:
            _parallel_vectorize(sch, remaining[0].block_rv)
        init = sch.decompose_reduction(conv, reduction[0])
        sch.vectorize(sch.get_loops(init)[-1])
        # The update block cannot take `vectorize` once its init is split off (TVM requires a
        # complete or reduction block); unrolled, LLVM's SLP vectorizer packs the lanes.
        sch.unroll(xi)
        return sch


class IntegerReduction(CPUScheduleRule):
    """An integer reduction with nothing after it (InstanceNorm's per-channel sums over H x W),
    vectorized. In NCHW the reduced axes are innermost: fused, split by `REDUCTION_LANES` and
    rfactored, so one vector accumulates that many partial sums per output, which a last loop
    adds up. In the blocked layout the innermost axis is a channel block's lanes, one output
    each: that loop goes innermost and is the vector. Integer addition is associative, so the
    result is the same; float reductions are left to TVM's rule (the order would change their
    rounding). The statistics of the c=32 model at 256x256 (znver3): 0.02-0.31 -> 0.01-0.04 ms
    per kernel, against TVM's rule, which accumulates one scalar per output."""

    def apply(self, func: tirx.PrimFunc, target, _tunable: bool):
        normalized = _normalized(self, func, target)
        if normalized is None:
            return None
        sch, infos = normalized
        reduction = _only_reduction(infos)
        if reduction is None or not re.fullmatch("S*R+", reduction.dom_kind()):
            return None
        block, kinds = reduction.block_rv, reduction.dom_kind()
        if tvm.DataType(sch.get(block).writes[0].source.dtype).type_code != tvm.DataTypeCode.INT:
            return None
        exact = _fixed_width(sch, infos)
        if try_inline(sch, [b for b in infos if b.block_rv != block and b not in exact]):
            return None  # something after the reduction: TVM's rule
        vectorize_exactly(sch, [info.block_rv for info in exact])
        loops = sch.get_loops(block)
        spatial = kinds.count("S")
        outputs, reduced = loops[:spatial], loops[spatial:]
        if outputs and self._reads_lanes(sch.get(block)):
            sch.reorder(*outputs[:-1], *reduced, outputs[-1])
            sch.vectorize(outputs[-1])
            outputs = outputs[:-1]
        else:
            fused = sch.fuse(*reduced) if len(reduced) > 1 else reduced[0]
            extent = _extent(sch, fused)
            lanes = next((n for n in REDUCTION_LANES if extent and extent % n == 0 and extent > n), None)
            if lanes is None:
                return None
            partial = sch.rfactor(sch.split(fused, [None, lanes])[1], factor_axis=spatial)
            *outputs, _, lane = sch.get_loops(partial)
            sch.vectorize(lane)
        if outputs:
            sch.parallel(sch.fuse(*outputs) if len(outputs) > 1 else outputs[0])
        return sch

    @staticmethod
    def _reads_lanes(block) -> bool:
        """Whether the innermost axis of what the reduction reads is one of its outputs' axes."""
        innermost = block.reads[0].region[-1].min
        return any(v.iter_type == tirx.IterVar.DataPar and v.var.same_as(innermost) for v in block.iter_vars)


class Elementwise(CPUScheduleRule):
    """Everything else: inline what can be inlined; parallel + vectorize each remaining block."""

    def apply(self, func: tirx.PrimFunc, target, _tunable: bool):
        normalized = _normalized(self, func, target)
        if normalized is None:
            return None
        sch, infos = normalized
        # a high multiply stays a block of its own: inlined, a chain of requantizes is one expression
        # that doubles at each (the rounding reads the high half twice), and TVM's simplifier blows up
        highs = [info for info in infos[:-1] if _is_high_multiply(sch, info.block_rv)]
        exact = _fixed_width(sch, infos)
        remaining = try_inline(sch, [info for info in infos[:-1] if info not in highs + exact])
        remaining += [infos[-1]] if infos[-1] not in exact else []
        for info in highs:  # the instruction's own vector width: LLVM cannot split a target intrinsic
            _parallel_vectorize(sch, info.block_rv, for_target(target).lanes)
        vectorize_exactly(sch, [info.block_rv for info in exact])
        for info in remaining:
            if info.is_injective():
                _parallel_vectorize(sch, info.block_rv)
                continue
            kinds = info.dom_kind()
            leading = len(kinds) - len(kinds.lstrip("S"))
            if leading:
                loops = sch.get_loops(info.block_rv)[:leading]
                sch.parallel(sch.fuse(*loops) if leading > 1 else loops[0])
        return sch


def _split_vectorized(sch: s_tir.Schedule, loop, widest: int = VECTOR_LANES[0]):
    """Split off the widest vector (up to `widest` lanes) the loop's extent allows and vectorize
    it; the outer loop."""
    extent = _extent(sch, loop)
    lanes = _divisor(extent, widest) if extent else 1
    if lanes == 1:
        return loop
    outer, inner = sch.split(loop, [None, lanes])
    sch.vectorize(inner)
    return outer


def _one_strided_index(sch: s_tir.Schedule, block, extents: list[int]) -> bool:
    """Whether every buffer access of `block` reads its innermost loops (of `extents`) as one
    index at a constant stride: their variables are axes of their own, consecutive and in order,
    each but the first over its axis' whole length (or the access does not use them: a
    broadcast). Then a vector over those loops fused is a strided access per buffer, with no
    division per lane."""
    stmt = sch.get(block)
    count = len(extents)
    group = [iv.var for iv in stmt.iter_vars][-count:]
    for region in (*stmt.reads, *stmt.writes):
        indices = [r.min for r in region.region]
        axes = [k for k, index in enumerate(indices) if any(index.same_as(v) for v in group)]
        rest = [index for k, index in enumerate(indices) if k not in axes]
        if any(u.same_as(v) for index in rest for u in undefined_vars(index) for v in group):
            return False
        if axes and ([next(j for j, v in enumerate(group) if indices[k].same_as(v)) for k in axes] != list(range(count))
                     or axes != list(range(axes[0], axes[0] + count))
                     or any(int(region.source.shape[k]) != e for k, e in zip(axes[1:], extents[1:], strict=True))):
            return False
    return True


def _parallel_vectorize(sch: s_tir.Schedule, block, widest: int = VECTOR_LANES[0]) -> None:
    """Fuse a data-parallel block's loops; parallel outer part, vectorized inner part. The vector
    spans the fewest innermost loops that give it its lanes, where every access reads them as one
    strided index (`_one_strided_index`: the paper's input quantize, NHWC float -> NCHW codes of a
    100 x 100 x 3 image, vectorized over H x W: 55 us with the channel in the vector too, 9 us,
    Zen 4). Where an access does not, each lane's index is a division of the fused index by the
    extents, which LLVM computes lane by lane: then the innermost loop that alone gives at least
    `MIN_LANES` lanes, moved innermost (the 100x100 model's output kernel, reading a conv's rows
    padded to 112: 77 us with 16 lanes across H and W, 35 us with 4 along W; the 1080p model's,
    NHWC with 3 channels: 16.0 ms with 16 lanes across H, W and C, 6.4 ms with 8 along W)."""
    loops = sch.get_loops(block)
    extents = [_extent(sch, loop) for loop in loops]
    spanned, alone = len(loops), None  # unknown extents: every loop fused, as it comes
    if None not in extents:
        lanes = _divisor(math.prod(extents), widest)
        spanned = next(k for k in range(1, len(loops) + 1) if _divisor(math.prod(extents[-k:]), widest) == lanes)
        alone = next((i for i in reversed(range(len(loops))) if _divisor(extents[i], widest) >= MIN_LANES), None)
    if spanned > 1 and alone is not None and not _one_strided_index(sch, block, extents[-spanned:]):
        outer, inner = sch.split(loops[alone], [None, _divisor(extents[alone], widest)])
        sch.reorder(*loops[:alone], outer, *loops[alone + 1:], inner)
        sch.vectorize(inner)
        parallel = [*loops[:alone], outer]
    else:
        inner = _split_vectorized(sch, sch.fuse(*loops[-spanned:]) if spanned > 1 else loops[-1], widest)
        parallel = [*loops[:-spanned], inner]
    sch.parallel(sch.fuse(*parallel) if len(parallel) > 1 else parallel[0])


def fuse_kernels(target: tvm.target.Target) -> list[tvm.transform.Pass]:
    """Legalize and fuse: the kernels these passes produce are the tuning tasks, so tuning and
    building must both use exactly this list for database lookups to hit."""
    # int32 chains only where high multiplies cut them into blocks of their own: inlined whole
    # (x86), TVM's StmtSimplify took 699 s on the paper's model (25 s without) for 5.06 -> 5.02 ms
    narrowing = [narrow_integers()] if for_target(target) is not None else []
    # constants folded before the rewrites that write target instructions (vector lookups, high
    # multiplies): TVM's FoldConstant evaluates what is left constant later by building its
    # kernels unscheduled for the host, where those do not compile (a lookup of a constant grid)
    return (library_dispatch_passes(target)
            + [pack_convs(target), blocked_layout(), relax.transform.FoldConstant(), injective_tables(target),
               per_consumer(), *narrowing, high_multiplies(target)]
            + after_fusion(legalize_passes(target)))


@dataclass
class TunedKernels:
    """How many of the model's kernels took a schedule from the tuning database."""

    applied: int = 0
    total: int = 0
    names: set[str] = field(default_factory=set)
    applying: bool = False  # True while records are applied: an error then is the log's
    other_shapes: int = 0  # untuned kernels the log holds records for at other sizes (or constants) only
    records: int = 0  # records in the log (none of them applying, and none for another size:
    # the log is another model's, or an earlier compiler generated other kernels)


def _apply_database(database, tuned: TunedKernels) -> tvm.transform.Pass:
    """Replace kernels the database has records for; count them for the manifest."""

    @tvm.transform.module_pass(opt_level=0)
    def _apply(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        if database is not None:
            tuned.applying = True
            with database:
                mod = relax.transform.MetaScheduleApplyDatabase()(mod)
            tuned.applying = False
        kernels = {g.name_hint: f for g, f in mod.functions.items() if isinstance(f, tirx.PrimFunc)}
        tuned.total = len(kernels)
        tuned.names = {name for name, f in kernels.items() if f.attrs and f.attrs.get("tirx.is_scheduled", False)}
        tuned.applied = len(tuned.names)
        if database is not None and tuned.applied < tuned.total:
            records = database.get_all_tuning_records()
            logged = {shape_free_key(r.workload.mod["main"]) for r in records}
            tuned.other_shapes = sum(1 for name, f in kernels.items()
                                     if name not in tuned.names and shape_free_key(f) in logged)
            tuned.records = len(records)
        return mod

    return _apply


def default_schedule(kernel: tvm.IRModule, target: tvm.target.Target) -> tvm.IRModule:
    """One fused kernel with the schedule an untuned build gives it (`kernel` is left as it is:
    the pass would otherwise mark the caller's module scheduled in place)."""
    with target:
        return _default_rules()(tvm.IRModule({"main": kernel["main"]}))


def _default_rules() -> tvm.transform.Pass:
    return dl.ApplyDefaultSchedule(PackedConv(), PackedDepthwise(), BlockedLayout(), DirectConv(), IntegerReduction(),
                                   dl.cpu.Reduction(), Elementwise())


def cpu_pipeline(target: tvm.target.Target, database=None, tuned: TunedKernels | None = None) -> tvm.transform.Pass:
    """TVM's CPU pipeline: fuse, take tuned schedules from `database` where it has them, give
    every other kernel our default schedule, lower."""

    @tvm.transform.module_pass(opt_level=0)
    def _pipeline(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        with target:
            passes = (
                fuse_kernels(target)
                + [_apply_database(database, tuned or TunedKernels())]
                + [_default_rules()]
                + dataflow_lower_passes(target)
                + finalize_passes(target)
            )
            return tvm.transform.Sequential(passes)(mod)

    return _pipeline


def build_with_default_schedules(mod: tvm.IRModule, target: tvm.target.Target, database=None,
                                 tuned: TunedKernels | None = None):
    """relax.build with our CPU pipeline (tuned records first) for CPU targets, TVM's default
    elsewhere (both with short kernel names)."""
    if target_kind(target) == "cpu":
        return relax.build(mod, target, relax_pipeline=cpu_pipeline(target, database, tuned))
    return relax.build(mod, target, relax_pipeline=gpu_pipeline(target))
