"""Integer convs in a channel-blocked layout with their weights packed at build time.

The integer-conv rewrite (`compile.frontend.rewrites.integer_conv`) leaves, per conv,

    conv2d(x, W) int32 -> + offset -> float32 -> * scale [-> relu | leakyrelu] -> quantize

in NCHW. A dot-product instruction needs `depth` input channels of one pixel contiguous and
the weights of `lanes` output channels side by side, which NCHW is not, and tensorize never
changes a layout. This pass rewrites each such chain, for the dot product the target and the
conv's weights allow (`compile.backend.dot_products.choose`), into

    pack(x): [N, C/G, H, W, G]                   (shifted to the instruction's signedness / widened to int16)
    conv:    [N, O/lanes, OH, OW, lanes] int32   (weights [O/lanes, C/G, KH, KW, G/depth, lanes, depth])
    + offset -> float32 -> * scale [-> act] -> quantize    (same ops, per-channel constants blocked)
    unpack:  [N, O, OH, OW] int8

with channel groups of G = lanes input channels (fewer for a conv with fewer inputs): the
layout a conv writes is the layout the next conv reads, so between two convs the unpack and
the pack meet as an elementwise copy (index (g*G + l) // G = g), not a transposition; and one
pixel's G channels are contiguous, so a register tile streams its rows instead of touching
C/depth planes. Channels are padded to whole blocks (zero weights; padded outputs are dropped
by unpack). A depthwise conv (groups = channels) has no dot product, but gets the same layout
with G = lanes of the target's dot product (`_depthwise`: int32 multiply-adds, `lanes` channels
per vector, weights [C/lanes, KH, KW, lanes]), so it reads and writes the blocks of the convs
around it. The epilogue stays elementwise, so it fuses into the conv kernel; pack and unpack
are injective and fuse with their neighbours (the previous conv's unpack, the pad). The conv
block carries the annotation `qatie.dot_product`, by which the schedules
(`compile.backend.schedules.PackedConv`) find and tensorize it; the depthwise block is found
by its name (`PackedDepthwise`). A 3x3 stride-1 conv on an int16 dot product runs as exact
integer Winograd instead (`compile.backend.winograd`, when its bound holds): the same blocked
input, but the codes as they are (its input transform widens them: half the bytes of an int16
pack to write and read, 2-7 % faster Winograd kernels on znver3), weights transformed at build
time, output in the packed layout with rows and columns in pairs, which unpack reads.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import operator

import numpy as np
import tvm
from tvm import relax, te, tirx
from tvm.relax.dpl import is_const, is_op, wildcard

from compile.backend import high_multiply, winograd
from compile.backend.call_te import Emitted, call_te, rewrite_module
from compile.backend.dot_products import (
    ANNOTATION,
    DIRECT_MACS,
    DotProduct,
    choose,
    choose_pixels,
    widest,
)
from compile.frontend.rewrite import constant
from compile.frontend.tflite.fixed_point import RequantizePattern

CONV_BLOCK = "conv2d_packed"  # the conv block (the schedules find it by name)
PIXEL_BLOCK = "conv2d_pixels"  # a pixels-in-lanes conv's block (found by name too)
# int32 vectors a pixels-in-lanes register tile may hold: 32 registers (zmm, NEON) less the
# tile's pixel vectors and a broadcast weight
PIXEL_ACCUMULATORS = 24
DEPTHWISE_BLOCK = "depthwise_packed"  # a depthwise conv's block (found by name too)
PACK_BLOCK = "pack"  # the block that lays a conv's input out
# PrimFunc attributes by which `compile.backend.blocked_layout` recognizes the two layout changes
PACK_SHIFT = "qatie.pack_shift"  # on a pack: what it adds to the codes
UNPACK = "qatie.unpack"  # on an unpack
ACTIVATIONS = ("relax.nn.relu", "relax.nn.leakyrelu")
# TVM's OpPatternKind::kOutEWiseFusable, set on the Winograd conv so its epilogue fuses into it
# (TVM's analysis may call a function of three blocks opaque: the epilogue would be a kernel of its own)
OUT_ELEMWISE_FUSABLE = 4


def _blocks(channels: int, size: int) -> int:
    return -(-channels // size)


def channel_group(dot: DotProduct, channels: int) -> int:
    """G: input channels per pixel block, `lanes` (a conv's output block), or fewer for a conv
    with fewer inputs (an RGB image: 4, not 8 or 16), always whole `depth` groups; `depth` for
    a pixels-in-lanes dot product (a vector is `lanes` pixels of one group)."""
    return dot.depth if dot.pixels else min(dot.lanes, _blocks(channels, dot.depth) * dot.depth)


def pack_weight(weight: np.ndarray, dot: DotProduct) -> np.ndarray:
    """(O, I, KH, KW) int8 -> (O/lanes, I/G, KH, KW, G/depth, lanes, depth), zero-padded channels."""
    o, i, kh, kw = weight.shape
    group = channel_group(dot, i)
    ob, ib = _blocks(o, dot.lanes), _blocks(i, group)
    padded = np.zeros((ob * dot.lanes, ib * group, kh, kw), dtype=weight.dtype)
    padded[:o, :i] = weight
    blocked = padded.reshape(ob, dot.lanes, ib, group // dot.depth, dot.depth, kh, kw).transpose(0, 2, 5, 6, 3, 1, 4)
    return np.ascontiguousarray(blocked).astype(dot.weight_dtype)


def pack_data(codes: np.ndarray, dot: DotProduct, winograd: bool = False) -> np.ndarray:
    """What the pack kernel computes, in numpy: NCHW activation codes -> [N, C/G, H, W, G], for
    the instruction (or, for a Winograd conv, the codes as they are)."""
    n, c, h, w = codes.shape
    group = channel_group(dot, c)
    padded = np.zeros((n, _blocks(c, group) * group, h, w), dtype=np.int64)
    padded[:, :c] = codes.astype(np.int64) + (0 if winograd else dot.shift_from(str(codes.dtype)))
    blocked = padded.reshape(n, -1, group, h, w).transpose(0, 1, 3, 4, 2)
    return blocked.astype(codes.dtype if winograd else dot.data_dtype)


def blocked_channels(values: np.ndarray, out_channels: int, lanes: int, fill) -> np.ndarray:
    """A per-channel constant (O values) as (1, O/lanes, 1, 1, lanes), padded with `fill`."""
    ob = _blocks(out_channels, lanes)
    padded = np.full(ob * lanes, fill, dtype=values.dtype)
    padded[:out_channels] = np.broadcast_to(values.reshape(-1), (out_channels,))
    return padded.reshape(1, ob, 1, 1, lanes)


def pack_depthwise_weight(weight: np.ndarray, lanes: int) -> np.ndarray:
    """(C, 1, KH, KW) int8 -> (C/lanes, KH, KW, lanes), zero-padded channels."""
    c, _, kh, kw = weight.shape
    padded = np.zeros((_blocks(c, lanes) * lanes, kh, kw), dtype=weight.dtype)
    padded[:c] = weight[:, 0]
    return np.ascontiguousarray(padded.reshape(-1, lanes, kh, kw).transpose(0, 2, 3, 1))


def pack_input(x: te.Tensor, group: int, dtype: str, shift: int, size=None) -> te.Tensor:
    """A conv's input packing: codes -> [N, C/group, H, W, group] of `dtype`, each code plus
    `shift`, padded with 0 (channels up to whole groups; rows and columns up to `size` where
    given: a Winograd conv's whole tiles). `x` is NCHW, or already blocked with `group` lanes
    (`compile.backend.blocked_layout`), which makes the packing elementwise."""
    blocked = len(x.shape) == 5
    n, c, h, w = (int(d) for d in x.shape[:4])
    c = c * group if blocked else c
    height, width = size or (h, w)

    def value(ni, bi, hi, wi, li):
        channel = bi * group + li
        inside = []
        if c % group:
            channel, inside = tirx.min(channel, c - 1), [bi * group + li < c]
        if (height, width) != (h, w):
            hi, wi, inside = tirx.min(hi, h - 1), tirx.min(wi, w - 1), [*inside, hi < h, wi < w]
        code = (x[ni, bi, hi, wi, li] if blocked else x[ni, channel, hi, wi]).astype("int32")
        if shift:
            code = code + shift
        code = code.astype(dtype)
        return tirx.if_then_else(tirx.all(*inside), code, tirx.const(0, dtype)) if inside else code

    return te.compute((n, _blocks(c, group), height, width, group), value, name=PACK_BLOCK)


def tiled_width(width: int, multiples: list[int]) -> int:
    """The output width a direct packed conv computes for `width`: whole multiples of one of its
    register tiles' pixels (`DotProduct.row_multiples`, none narrower than the default's), the
    one that adds the fewest columns (the default's on a tie), so a tile that wide applies. TVM
    cannot tensorize a split that does not divide, so a row of 50 or 25 pixels fell back to 1x2
    or 1x1 tiles, at 40-60 % of the conv's speed (c=32 at 100x100, Zen 4 VNNI: the 50- and
    25-wide 3x3 convs at 86-138 GMAC/s against 220 for the 100-wide ones); in multiples of 4
    such rows computed 52 and 28 pixels, 4 and 12 % more than their own, where 5 adds none. The
    input is packed with zero columns up to it, and the extra outputs are dropped where the
    output is read, as for Winograd's whole tiles. Rows narrower than one tile stay as they are."""
    if width < multiples[0]:
        return width
    return min(-(-width // m) * m for m in multiples)


def _conv(data: te.Tensor, weight: te.Tensor, strides, dilation, dot: DotProduct,
          direct_macs: int | None = None) -> te.Tensor:
    """The packed conv; `direct_macs`: the conv's own MACs, which the kernel table reports, not
    those of whole tiles (`tiled_width`) or of input channels padded to whole groups (a first
    conv's 3 -> 4); without it, those the block computes."""
    n, cb, h, w, _ = (int(d) for d in data.shape)
    ob, _, kh, kw, groups, lanes, depth = (int(d) for d in weight.shape)
    (sy, sx), (dy, dx) = strides, dilation
    oh, ow = (h - (kh - 1) * dy - 1) // sy + 1, (w - (kw - 1) * dx - 1) // sx + 1
    ic = te.reduce_axis((0, cb), "ic")
    ky, kx = te.reduce_axis((0, kh), "ky"), te.reduce_axis((0, kw), "kx")
    ig, ii = te.reduce_axis((0, groups), "ig"), te.reduce_axis((0, depth), "ii")
    return te.compute(
        (n, ob, oh, ow, lanes),
        lambda ni, o, y, x, oi: te.sum(
            data[ni, ic, y * sy + ky * dy, x * sx + kx * dx, ig * depth + ii].astype("int32")
            * weight[o, ic, ky, kx, ig, oi, ii].astype("int32"),
            axis=[ic, ky, kx, ig, ii]),
        name=CONV_BLOCK, attrs={ANNOTATION: dot.name} | ({DIRECT_MACS: direct_macs} if direct_macs else {}))


def most_pixel_vectors(vectors: int, outputs: int) -> int:
    """The most pixel vectors a pixels-in-lanes register tile of `outputs` channels may hold
    (all its channels times at most `PIXEL_ACCUMULATORS` accumulators), of a row of `vectors`."""
    return max(1, min(vectors, PIXEL_ACCUMULATORS // outputs))


def pixel_tile(vectors: int, outputs: int) -> int:
    """Pixel vectors per register tile of a pixels-in-lanes conv whose row needs `vectors`: of
    those up to `most_pixel_vectors`, the count whose whole tiles cost least, counting a tile's
    weight broadcasts as one more vector's work (a row of 7 vectors: one tile of 7; of 13: two
    of 7, not 13 of 1)."""
    return min(range(most_pixel_vectors(vectors, outputs), 0, -1), key=lambda t: -(-vectors // t) * (t + 1))


def pack_pixel_weight(weight: np.ndarray, dot: DotProduct) -> np.ndarray:
    """(O, I, KH, KW) int8 -> (O, I/depth, KH, KW, depth), zero-padded channels."""
    o, i, kh, kw = weight.shape
    padded = np.zeros((o, _blocks(i, dot.depth) * dot.depth, kh, kw), dtype=weight.dtype)
    padded[:, :i] = weight
    return np.ascontiguousarray(padded.reshape(o, -1, dot.depth, kh, kw).transpose(0, 1, 3, 4, 2)).astype(dot.weight_dtype)


def _pixel_conv(data: te.Tensor, weight: te.Tensor, dot: DotProduct, direct_macs: int | None = None) -> te.Tensor:
    """A stride-1 conv with output pixels in the lanes: [N, O, OH, OW/lanes, lanes] int32 from
    data [N, C/depth, H, W, depth] (a vector's `lanes` pixels of one row are `lanes * depth`
    contiguous codes) and weights [O, C/depth, KH, KW, depth], each output channel's `depth`
    weights broadcast to every lane."""
    n, cb, h, w, depth = (int(d) for d in data.shape)
    o, _, kh, kw, _ = (int(d) for d in weight.shape)
    ic, ky, kx = te.reduce_axis((0, cb), "ic"), te.reduce_axis((0, kh), "ky"), te.reduce_axis((0, kw), "kx")
    ii = te.reduce_axis((0, depth), "ii")
    return te.compute(
        (n, o, h - kh + 1, (w - kw + 1) // dot.lanes, dot.lanes),
        lambda ni, oi, y, xv, xl: te.sum(
            data[ni, ic, y + ky, xv * dot.lanes + xl + kx, ii].astype("int32")
            * weight[oi, ic, ky, kx, ii].astype("int32"), axis=[ic, ky, kx, ii]),
        name=PIXEL_BLOCK, attrs={ANNOTATION: dot.name} | ({DIRECT_MACS: direct_macs} if direct_macs else {}))


def unpack_pixels(y: te.Tensor, size) -> te.Tensor:
    """A pixels-in-lanes conv's output [N, O, OH, OW'/lanes, lanes] (the same memory as [N, O,
    OH, OW']) -> [N, O, OH, OW], cropped to `size`."""
    lanes = int(y.shape[-1])
    return te.compute((int(y.shape[0]), int(y.shape[1]), *size),
                      lambda ni, c, hi, wi: y[ni, c, hi, wi // lanes, wi % lanes], name="unpack")


def _depthwise(data: te.Tensor, weight: te.Tensor, strides, dilation) -> te.Tensor:
    """Each channel with its own filter, `lanes` channels per vector: int32 multiply-adds."""
    n, cb, h, w, lanes = (int(d) for d in data.shape)
    _, kh, kw, _ = (int(d) for d in weight.shape)
    (sy, sx), (dy, dx) = strides, dilation
    oh, ow = (h - (kh - 1) * dy - 1) // sy + 1, (w - (kw - 1) * dx - 1) // sx + 1
    ky, kx = te.reduce_axis((0, kh), "ky"), te.reduce_axis((0, kw), "kx")
    return te.compute(
        (n, cb, oh, ow, lanes),
        lambda ni, c, y, x, li: te.sum(
            data[ni, c, y * sy + ky * dy, x * sx + kx * dx, li].astype("int32") * weight[c, ky, kx, li].astype("int32"),
            axis=[ky, kx]),
        name=DEPTHWISE_BLOCK)


def packed_conv_kernel(dot: DotProduct, data_shape, weight_shape, strides=(1, 1)) -> tvm.IRModule:
    """The packed conv alone as a kernel (packed data, packed weights -> int32), as it appears
    inside a model's fused kernel: for measuring or checking one conv on its own."""
    data = te.placeholder(data_shape, dot.data_dtype, "data")
    weight = te.placeholder(weight_shape, dot.weight_dtype, "weight")
    conv = _pixel_conv(data, weight, dot) if dot.pixels else _conv(data, weight, strides, (1, 1), dot)
    return tvm.IRModule({"main": te.create_prim_func([data, weight, conv])})


def packed_depthwise_kernel(data_shape, weight_shape, dtype: str, strides=(1, 1)) -> tvm.IRModule:
    """The packed depthwise conv alone as a kernel (packed codes, packed weights -> int32)."""
    data = te.placeholder(data_shape, dtype, "data")
    weight = te.placeholder(weight_shape, "int8", "weight")
    return tvm.IRModule({"main": te.create_prim_func([data, weight, _depthwise(data, weight, strides, (1, 1))])})


def read_output(y: te.Tensor, ni, block, hi, wi, lane):
    """A conv's output `y` at (block, row, column, lane) of the packed layout: [N, O/lanes, OH',
    OW', lanes], or the Winograd conv's [N, O/lanes, OH'/2, 2, OW'/2, 2, lanes] (the same
    memory, rows and columns in pairs). OH' x OW' are whole tiles; readers crop to the conv's size."""
    if len(y.shape) == 7:
        return winograd.read_pairs(y, ni, block, hi, wi, lane)
    return y[ni, block, hi, wi, lane]


def unpack(y: te.Tensor, channels: int, size=None) -> te.Tensor:
    """A conv's output (`read_output`) -> [N, O, OH, OW], cropped to `size`, the conv's output
    size; a blocked tensor [N, C/lanes, H, W, lanes] (no `size`) -> [N, C, H, W]."""
    n, lanes = int(y.shape[0]), int(y.shape[-1])
    size = size or [int(d) for d in y.shape[2:4]]
    return te.compute((n, channels, *size), lambda ni, c, hi, wi: read_output(y, ni, c // lanes, hi, wi, c % lanes),
                      name="unpack")


class FloatEpilogue:
    """The ONNX path's requantize (`integer_conv`): float32(acc) * scale [-> activation] ->
    quantize, with one output scale."""

    def __init__(self, acc) -> None:
        self.scale = is_const()
        value = is_op("relax.multiply")(is_op("relax.astype")(acc), self.scale)
        self.activations = [is_op(name)(value) for name in ACTIVATIONS]
        self.s_y, self.z_y = is_const(), is_const()
        self.root = is_op("relax.quantize")(functools.reduce(operator.or_, [*self.activations, value]),
                                            self.s_y, self.z_y)

    def accepts(self, match: dict) -> bool:
        return constant(match[self.s_y]).size == 1

    def emit(self, builder: relax.BlockBuilder, acc: Emitted, match: dict, out_channels: int, lanes: int,
             shape, target) -> relax.Expr:
        acc = acc.expr
        scale = blocked_channels(constant(match[self.scale]).astype(np.float32).reshape(-1), out_channels, lanes, 1)
        value = relax.op.multiply(relax.op.astype(acc, "float32"), relax.const(scale.reshape(shape)))
        activation = next((match[a] for a in self.activations if a in match), None)
        if activation is not None:
            value = relax.Call(activation.op, [value], activation.attrs)
        return relax.op.quantize(value, match[self.s_y], match[self.z_y], axis=1,
                                 out_dtype=match[self.root].attrs.out_dtype)


class FixedPointEpilogue:
    """The TFLite path's requantize (`compile.frontend.tflite.fixed_point.Requantize`):
    TFLite's integer multiply-and-shift, zero point, clamp; its high multiply as one instruction
    where the target has one (`compile.backend.high_multiply`), on x86 as `vpmuldq` on even and
    odd lanes (a block the conv's schedule tensorizes), else on int64."""

    def __init__(self, acc) -> None:
        self.pattern = RequantizePattern(acc)
        self.root = self.pattern.root

    def accepts(self, match: dict) -> bool:
        return True

    def emit(self, builder: relax.BlockBuilder, acc: Emitted, match: dict, out_channels: int, lanes: int,
             shape, target) -> relax.Expr:
        found = self.pattern.requantize(match)
        multiplier = found.multiplier.blocked(out_channels, lanes)
        blocked = dataclasses.replace(found, multiplier=multiplier)
        high = high_multiply.for_target(target)
        if high is not None:  # the instruction (ARM), its rounding divide too where it has one
            name, compute = "high_mul", functools.partial(high_multiply.high_te, high=high)
        elif high_multiply.even_odd_for(target, lanes) is not None:  # x86: vpmuldq, tensorized
            name, compute = "conv_high", high_multiply.even_odd_te
        else:
            compute = None
        if compute is None or not multiplier.fits_int32():
            return blocked.emit(relax.op.astype(acc.expr, "int64"), shape, narrow=True)

        def per_channel(values: np.ndarray) -> Emitted:  # one int32 per channel block lane (or one for all)
            values = np.broadcast_to(values, (math.prod(shape),)).reshape(shape).astype(np.int32)
            return Emitted(relax.const(values), list(shape), "int32")

        product = call_te(builder, name, compute, [acc, per_channel(multiplier.multiplier)])
        if high is None or high.divide is None:
            return blocked.finish(multiplier.divide(product.expr, shape, "int32"), "int32")
        divided = call_te(builder, "rounding_shift", functools.partial(high_multiply.divide_te, high=high),
                          [product, per_channel(-multiplier.right)])
        return blocked.finish(divided.expr, "int32")


EPILOGUES = (FloatEpilogue, FixedPointEpilogue)


class PackConvs:
    """The rewrite of one conv chain ending in one kind of epilogue; `__call__` applies it to a
    module for a target."""

    def __init__(self, epilogue) -> None:
        self.x, self.w, self.offset = wildcard(), is_const(), is_const()
        self.conv = is_op("relax.nn.conv2d")(self.x, self.w)
        self.epilogue = epilogue(is_op("relax.add")(self.conv, self.offset))
        self.root = self.epilogue.root

    def __call__(self, mod: tvm.IRModule, target: tvm.target.Target) -> tvm.IRModule:
        return rewrite_module(mod, self.root, lambda builder, call, match: self._rewrite(builder, target, call, match))

    def _rewrite(self, builder: relax.BlockBuilder, target, call: relax.Call, match: dict) -> relax.Expr:
        conv = match[self.conv]
        attrs = conv.attrs
        weight = constant(match[self.w])
        x = match[self.x]
        if (str(conv.ty.dtype) != "int32" or str(x.ty.dtype) not in ("int8", "uint8") or weight.dtype != np.int8
                or any(int(p) for p in attrs.padding)
                or (attrs.data_layout, attrs.kernel_layout) != ("NCHW", "OIHW")
                or not self.epilogue.accepts(match)):
            return call
        geometry = {"strides": tuple(int(s) for s in attrs.strides), "dilation": tuple(int(d) for d in attrs.dilation)}
        x_in = Emitted(x, [int(d) for d in x.ty.shape], str(x.ty.dtype))
        out_size = [int(d) for d in call.ty.shape][2:]
        macs = x_in.shape[0] * weight.size * math.prod(out_size)  # the conv's own (groups = 1)
        func_attrs = {}  # of the conv's PrimFunc
        offset = constant(match[self.offset]).astype(np.int64).reshape(-1)
        # the output read back as NCHW (with the attribute by which blocked_layout knows it)
        unpacker, unpack_attrs = functools.partial(unpack, channels=weight.shape[0], size=out_size), {UNPACK: True}
        if int(attrs.groups) == 1:
            pixels = choose_pixels(target, weight, out_width=out_size[1], **geometry)
            dot = pixels or choose(target, weight)
            if dot is None:
                return call
            lanes, group, size = dot.lanes, channel_group(dot, x_in.shape[1]), None
            if pixels is not None:  # output channels in blocks of one, `dot.lanes` pixels a vector
                vectors = -(-out_size[1] // dot.lanes)
                tile = pixel_tile(vectors, weight.shape[0])
                lanes = 1
                size = [x_in.shape[2], -(-vectors // tile) * tile * dot.lanes + weight.shape[3] - 1]  # whole tiles
                packed, dtype, shift = pack_pixel_weight(weight, dot), dot.data_dtype, dot.shift_from(x_in.dtype)
                compute = functools.partial(_pixel_conv, dot=dot, direct_macs=macs)
                unpacker, unpack_attrs = functools.partial(unpack_pixels, size=out_size), {}
            elif winograd.applies(dot, weight, **geometry):
                packed = winograd.transform_weight(weight, dot, group)
                compute = functools.partial(winograd.winograd_conv, dot=dot, direct_macs=macs)
                func_attrs = {"op_pattern": OUT_ELEMWISE_FUSABLE}
                dtype, shift = x_in.dtype, 0  # its input transform widens the codes itself
                size = [d + 2 for d in winograd.tiled_size(out_size)]  # whole tiles: zero rows and columns
            else:
                packed = pack_weight(weight, dot)
                dtype, shift = dot.data_dtype, dot.shift_from(x_in.dtype)
                width = tiled_width(out_size[1], dot.row_multiples(pointwise=weight.shape[2:] == (1, 1)))
                if width != out_size[1]:  # whole tiles: zero columns in, extra outputs dropped by the reader
                    (_, sx), (_, dx) = geometry["strides"], geometry["dilation"]
                    size = [x_in.shape[2], (width - 1) * sx + (weight.shape[3] - 1) * dx + 1]
                compute = functools.partial(_conv, dot=dot, direct_macs=macs, **geometry)
            data = call_te(builder, "pack_" + dot.name.replace("-", "_"), functools.partial(
                pack_input, group=group, dtype=dtype, shift=shift, size=size), [x_in], **{PACK_SHIFT: shift})
        elif int(attrs.groups) == weight.shape[0] == x_in.shape[1] and weight.shape[1] == 1:
            dot = widest(target)  # no dot product: the neighbours' channel blocks, int32 lanes
            if dot is None:
                return call
            lanes, shift = dot.lanes, 0
            data = call_te(builder, "pack_depthwise", functools.partial(
                pack_input, group=lanes, dtype=x_in.dtype, shift=0), [x_in], **{PACK_SHIFT: 0})
            packed = pack_depthwise_weight(weight, lanes)
            compute = functools.partial(_depthwise, **geometry)
        else:
            return call  # grouped conv: the plain integer conv stays
        out_channels = weight.shape[0]
        if shift:
            # packed data = code + shift: the conv gains shift * sum(w) per output channel
            offset = offset - shift * weight.astype(np.int64).sum(axis=(1, 2, 3))
        if offset.min() < np.iinfo(np.int32).min or offset.max() > np.iinfo(np.int32).max:
            return call  # the shifted offset leaves the int32 accumulator: keep the plain integer conv
        offset = blocked_channels(offset.astype(np.int32), out_channels, lanes, 0)

        acc = call_te(builder, "conv2d", compute, [data, Emitted(relax.const(packed), list(packed.shape),
                                                                  str(packed.dtype))], **func_attrs)
        # per-channel constants: (1, O/lanes, 1, 1, lanes), or with Winograd's row and column pairs
        shape = (*offset.shape[:2], *([1] * (len(acc.shape) - 3)), lanes)
        biased = Emitted(relax.op.add(acc.expr, relax.const(offset.reshape(shape))), acc.shape, acc.dtype)
        codes = self.epilogue.emit(builder, biased, match, out_channels, lanes, shape, target)
        return call_te(builder, "unpack", unpacker, [Emitted(codes, acc.shape, str(call.ty.dtype))], **unpack_attrs).expr


def pack_convs(target: tvm.target.Target) -> tvm.transform.Pass:
    """The module pass, for every kind of epilogue (a no-op where the target has none of our
    dot products)."""
    rewrites = [PackConvs(epilogue) for epilogue in EPILOGUES]

    @tvm.transform.module_pass(opt_level=0, name="QatiePackConvs")
    def _pass(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        for rewrite in rewrites:
            mod = rewrite(mod, target)
        return mod

    return _pass
