"""The converter registry: TFLite builtin operator -> its integer definition in Relax.

Each converter reproduces what LiteRT's reference kernels (`OpResolverType.BUILTIN_REF`, the
only int8 kernels with a definition; XNNPACK and the optimized kernels round differently)
compute, bit for bit: the same multipliers from the same float and double arithmetic
(`fixed_point`), the same rounding, the same clamps. An op of one 8-bit input is a 256-entry
table of output codes built here from the kernel's own formula (`tables`), and becomes a
`take`, as the ONNX path's tanh. Convs keep the form the backend packs: codes padded with the
input zero point, `conv2d` int8 x int8 -> int32, a per-channel int32 offset, then the
requantize epilogue (elementwise, fused into the conv kernel).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from tvm import relax

from compile.frontend.tflite import tables
from compile.frontend.tflite.fixed_point import (
    Multiplier,
    Requantize,
    quantize_multiplier,
    tflite_round,
)
from compile.frontend.tflite.graph import Operator
from compile.frontend.tflite.importer import NCHW, Importer, Value, identity

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
# tflite.ActivationFunctionType -> the real interval it clamps to (None: no bound)
ACTIVATIONS = {0: (None, None), 1: (0.0, None), 2: (-1.0, 1.0), 3: (0.0, 6.0)}


def quant(importer: Importer, op: Operator, index: int) -> tuple[float, int]:
    """A per-tensor (scale, zero point) of an 8-bit tensor, or a one-line error."""
    tensor = importer.tensor(index)
    if tensor.dtype not in ("int8", "uint8") or tensor.quant is None:
        raise importer.fail(op, f"tensor '{tensor.name}' is {tensor.dtype}{'' if tensor.quant else ' unquantized'}; "
                                f"only 8-bit quantized tensors are imported")
    if tensor.quant.scale.size != 1:
        raise importer.fail(op, f"tensor '{tensor.name}' is quantized per channel; activations must be per tensor")
    return tensor.quant.per_tensor


def activation_range(importer: Importer, op: Operator, activation: int, output: int) -> tuple[int, int]:
    """`CalculateActivationRangeQuantized`: the fused activation as a clamp of output codes."""
    if activation not in ACTIVATIONS:
        raise importer.fail(op, f"fused activation {activation} is not supported (NONE, RELU, RELU_N1_TO_1, RELU6)")
    scale, zero = quant(importer, op, output)
    info = np.iinfo(importer.tensor(output).dtype)
    low, high = ACTIVATIONS[activation]

    def code(real: float) -> int:
        return zero + tflite_round(float(np.float32(real) / np.float32(scale)))

    return (info.min if low is None else max(info.min, code(low)),
            info.max if high is None else min(info.max, code(high)))


def requantize(importer: Importer, op: Operator, multiplier: Multiplier, low: int | None = None,
               high: int | None = None) -> Requantize:
    """The op's output requantize: `multiplier`, the output's zero point, the clamp (default:
    the whole code range)."""
    y = op.outputs[0]
    info = np.iinfo(importer.tensor(y).dtype)
    _, zero = quant(importer, op, y)
    return Requantize(multiplier, zero, info.min if low is None else low, info.max if high is None else high,
                      importer.tensor(y).dtype)


def _int64(expr: relax.Expr) -> relax.Expr:
    return relax.op.astype(expr, "int64")


def _scaled(importer: Importer, op: Operator, index: int, perm, rank: int, left: int = 0,
            multiplier: Multiplier | None = None) -> relax.Expr:
    """An 8-bit operand as the kernels take it: (code - zero point) * 2^left, then times
    `multiplier` when given, in int64; a constant operand is evaluated here (a per-channel
    constant the backend's blocked layout keeps, and no work at run time)."""
    _, zero = quant(importer, op, index)
    if importer.tensor(index).data is not None:
        value = (importer.array(index, perm, rank).astype(np.int64) - zero) << left
        value = multiplier.apply(value) if multiplier is not None else value
        return relax.const(value.item() if value.ndim == 0 else value, "int64")
    value = relax.op.subtract(_int64(importer.value(index, perm, rank)), relax.const(zero, "int64"))
    if left:
        value = relax.op.multiply(value, relax.const(1 << left, "int64"))
    return multiplier.emit(value, ()) if multiplier is not None else value


# -- convolution ---------------------------------------------------------------------------------

def _same_padding(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TFLite's SAME padding: the extra row or column at the end."""
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def _integer_conv(importer: Importer, op: Operator, data: relax.Expr, weight: np.ndarray, groups: int,
                  strides=(1, 1), dilation=(1, 1), padding=(0, 0, 0, 0), activation: int = 0) -> relax.Expr:
    """The reference kernels' int8 conv (`ConvPerChannel`, `DepthwiseConvPerChannel`,
    `FullyConnected`): int8 x int8 -> int32 over NCHW codes padded with the input zero point
    (the kernels skip the taps outside, which is the same sum), bias and zero-point correction as
    one int32 per output channel, then the per-channel requantize by double(s_x) *
    double(s_w[c]) / double(s_y). `weight` is OIHW."""
    x, w, y = op.inputs[0], op.inputs[1], op.outputs[0]
    w_quant = importer.tensor(w).quant
    if weight.dtype != np.int8 or w_quant is None or np.any(w_quant.zero_point != 0):
        raise importer.fail(op, "weights must be int8 with zero points 0 (symmetric)")
    (s_x, z_x), (s_y, _) = quant(importer, op, x), quant(importer, op, y)
    out_channels = weight.shape[0]
    top, left, bottom, right = padding
    if top or bottom or left or right:
        data = relax.op.nn.pad(data, [0, 0, 0, 0, top, bottom, left, right], pad_value=float(z_x))
    bias = importer.constant(op, op.inputs[2]).astype(np.int64).reshape(-1) if len(op.inputs) > 2 \
        and op.inputs[2] >= 0 else np.zeros(out_channels, np.int64)
    offset = bias - z_x * weight.astype(np.int64).sum(axis=(1, 2, 3))
    if offset.min() < INT32_MIN or offset.max() > INT32_MAX:
        raise importer.fail(op, "bias does not fit the int32 accumulator")
    acc = relax.op.nn.conv2d(data, relax.const(np.ascontiguousarray(weight), "int8"), strides=strides,
                             dilation=dilation, groups=groups, out_dtype="int32")
    channel = (1, out_channels, 1, 1)
    acc = relax.op.add(acc, relax.const(offset.astype(np.int32).reshape(channel), "int32"))
    s_w = np.broadcast_to(w_quant.scale, (out_channels,))
    multiplier = Multiplier.of([np.float64(s_x) * np.float64(s) / np.float64(s_y) for s in s_w])
    low, high = activation_range(importer, op, activation, y)
    return requantize(importer, op, multiplier, low, high).emit(_int64(acc), channel)


def _window_padding(importer: Importer, op: Operator, kernel: tuple[int, int], dilation=(1, 1)) -> tuple[int, ...]:
    """(top, left, bottom, right) of a conv or pool: TFLite's SAME, or none for VALID."""
    options, shape = op.options, importer.tensor(op.inputs[0]).shape
    if options.Padding() != 0:
        return (0, 0, 0, 0)
    (top, bottom), (left, right) = (_same_padding(shape[1 + a], kernel[a], (options.StrideH(), options.StrideW())[a],
                                                  dilation[a]) for a in (0, 1))
    return (top, left, bottom, right)


def conv_2d(importer: Importer, op: Operator) -> None:
    options, weight = op.options, importer.constant(op, op.inputs[1])  # [O, KH, KW, I]
    dilation = (options.DilationHFactor(), options.DilationWFactor())
    importer.set(op.outputs[0], _integer_conv(
        importer, op, importer.value(op.inputs[0], NCHW), weight.transpose(0, 3, 1, 2),
        importer.tensor(op.inputs[0]).shape[3] // weight.shape[3], (options.StrideH(), options.StrideW()), dilation,
        _window_padding(importer, op, weight.shape[1:3], dilation), options.FusedActivationFunction()), NCHW)


def depthwise_conv_2d(importer: Importer, op: Operator) -> None:
    """Weights [1, KH, KW, C * M]: output channel c * M + m reads input channel c, a grouped
    conv with C groups (the backend packs it when M = 1)."""
    options, weight = op.options, importer.constant(op, op.inputs[1])
    dilation = (options.DilationHFactor(), options.DilationWFactor())
    importer.set(op.outputs[0], _integer_conv(
        importer, op, importer.value(op.inputs[0], NCHW), weight[0].transpose(2, 0, 1)[:, None],
        importer.tensor(op.inputs[0]).shape[3], (options.StrideH(), options.StrideW()), dilation,
        _window_padding(importer, op, weight.shape[1:3], dilation), options.FusedActivationFunction()), NCHW)


def fully_connected(importer: Importer, op: Operator) -> None:
    """Weights [O, K] on the input flattened to [N, K]: a 1x1 conv on [N, K, 1, 1], which the
    backend packs onto the dot product like any conv."""
    x, y = op.inputs[0], op.outputs[0]
    weight = importer.constant(op, op.inputs[1])
    if weight.ndim != 2 or importer.tensor(x).shape[-1] != weight.shape[1]:
        raise importer.fail(op, f"weights of shape {list(weight.shape)} for an input of shape "
                                f"{list(importer.tensor(x).shape)}")
    rows = int(np.prod(importer.tensor(x).shape)) // weight.shape[1]
    data = relax.op.reshape(importer.value(x, identity(len(importer.tensor(x).shape))), (rows, weight.shape[1], 1, 1))
    out = _integer_conv(importer, op, data, weight[:, :, None, None], 1,
                        activation=op.options.FusedActivationFunction())
    importer.set(y, relax.op.reshape(out, importer.tensor(y).shape))


def average_pool_2d(importer: Importer, op: Operator) -> None:
    """`reference_integer_ops::AveragePool`: the sum of the codes in the window (clamped to the
    image) divided by their count, rounding half away from zero, clamped; no requantize. The
    sum is a grouped conv with weights of one (padding adds zeros), the counts are constants."""
    x, y = op.inputs[0], op.outputs[0]
    options = op.options
    _, height, width, channels = importer.tensor(x).shape
    kernel, strides = (options.FilterHeight(), options.FilterWidth()), (options.StrideH(), options.StrideW())
    top, left, bottom, right = _window_padding(importer, op, kernel)
    data = relax.op.nn.pad(importer.value(x, NCHW), [0, 0, 0, 0, top, bottom, left, right]) \
        if top or left or bottom or right else importer.value(x, NCHW)
    total = relax.op.nn.conv2d(data, relax.const(np.ones((channels, 1, *kernel), np.int8), "int8"), strides=strides,
                               groups=channels, out_dtype="int32")
    inside = np.pad(np.ones((height, width), np.int64), ((top, bottom), (left, right)))
    counts = np.lib.stride_tricks.sliding_window_view(inside, kernel)[::strides[0], ::strides[1]].sum(axis=(2, 3))
    count = relax.const(counts.reshape(1, 1, *counts.shape).astype(np.int32), "int32")
    half = relax.const((counts // 2).reshape(1, 1, *counts.shape).astype(np.int32), "int32")
    above = relax.op.floor_divide(relax.op.add(total, half), count)
    below = relax.op.negative(relax.op.floor_divide(relax.op.subtract(half, total), count))  # C++ truncation
    low, high = activation_range(importer, op, options.FusedActivationFunction(), y)
    rounded = relax.op.where(relax.op.greater(total, relax.const(0, "int32")), above, below)
    importer.set(y, relax.op.astype(relax.op.clip(rounded, low, high), importer.tensor(y).dtype), NCHW)


def reshape(importer: Importer, op: Operator) -> None:
    """On the logical (TFLite) layout: the output tensor's static shape."""
    x, y = op.inputs[0], op.outputs[0]
    importer.set(y, relax.op.reshape(importer.value(x, identity(len(importer.tensor(x).shape))),
                                     importer.tensor(y).shape))


# -- elementwise arithmetic of two 8-bit tensors -------------------------------------------------

def _binary_layout(importer: Importer, op: Operator) -> tuple[tuple[int, ...], int]:
    """The layout of a binary op's result: channels-first if a full-rank operand is held so (the
    backend's layout; a residual add of the NHWC input and a conv's output then transposes the
    input, not the conv's output and the result), else that of its first full-rank operand."""
    rank = len(importer.tensor(op.outputs[0]).shape)
    perms = [importer.perm(i) for i in op.inputs[:2]
             if importer.tensor(i).data is None and len(importer.tensor(i).shape) == rank]
    return (NCHW if NCHW in perms else perms[0] if perms else identity(rank)), rank


def _fused_activation(op: Operator) -> int:
    return op.options.FusedActivationFunction() if op.options else 0


def _shared_scale(importer: Importer, op: Operator, perm, rank: int,
                  left: int) -> tuple[list[relax.Expr], np.float64, np.float64]:
    """Both inputs as ADD, SUB and SQUARED_DIFFERENCE's Prepare rescale them: (code - zero
    point) * 2^left times the input's share of twice the larger input scale. Returns the two
    scaled operands (int64), twice the larger scale, and the output scale."""
    a, b, y = op.inputs[0], op.inputs[1], op.outputs[0]
    (s_a, _), (s_b, _), (s_y, _) = (quant(importer, op, i) for i in (a, b, y))
    twice = 2 * max(np.float64(s_a), np.float64(s_b))
    scaled = [_scaled(importer, op, i, perm, rank, left, Multiplier.of(np.float64(s) / twice))
              for i, s in ((a, s_a), (b, s_b))]
    return scaled, twice, np.float64(s_y)


def _add_like(sign: int) -> Callable[[Importer, Operator], None]:
    """ADD (sign 1) and SUB (-1): each input scaled by 2^20 and by its share of twice the larger
    input scale, summed, then requantized (`reference_integer_ops::Add`, `reference_ops::Sub`)."""

    def convert(importer: Importer, op: Operator) -> None:
        perm, rank = _binary_layout(importer, op)
        scaled, twice, s_y = _shared_scale(importer, op, perm, rank, 20)
        raw = relax.op.add(*scaled) if sign > 0 else relax.op.subtract(*scaled)
        low, high = activation_range(importer, op, _fused_activation(op), op.outputs[0])
        out = Multiplier.of(twice / ((1 << 20) * s_y))
        importer.set(op.outputs[0], requantize(importer, op, out, low, high).emit(raw, ()), perm)

    return convert


def mul(importer: Importer, op: Operator) -> None:
    a, b, y = op.inputs[0], op.inputs[1], op.outputs[0]
    perm, rank = _binary_layout(importer, op)
    (s_a, _), (s_b, _), (s_y, _) = (quant(importer, op, i) for i in (a, b, y))
    product = relax.op.multiply(_scaled(importer, op, a, perm, rank), _scaled(importer, op, b, perm, rank))
    real = np.float32(np.float32(s_a) * np.float32(s_b)) / np.float32(s_y)  # float32, as the kernel's Prepare
    low, high = activation_range(importer, op, _fused_activation(op), y)
    importer.set(y, requantize(importer, op, Multiplier.of(np.float64(real)), low, high).emit(product, ()), perm)


def squared_difference(importer: Importer, op: Operator) -> None:
    """Both inputs scaled by 2^7 and their share of twice the larger scale, the difference
    squared, requantized (`squared_difference.cc`, int8)."""
    perm, rank = _binary_layout(importer, op)
    scaled, twice, s_y = _shared_scale(importer, op, perm, rank, 7)
    diff = relax.op.subtract(*scaled)
    out = Multiplier.of(twice * twice / ((1 << 14) * s_y))
    importer.set(op.outputs[0], requantize(importer, op, out).emit(relax.op.multiply(diff, diff), ()), perm)


def minimum_maximum(function) -> Callable[[Importer, Operator], None]:
    """MINIMUM / MAXIMUM: on the codes, whatever their parameters (the kernel compares codes)."""

    def convert(importer: Importer, op: Operator) -> None:
        a, b, y = op.inputs[0], op.inputs[1], op.outputs[0]
        perm, rank = _binary_layout(importer, op)
        importer.set(y, function(importer.value(a, perm, rank), importer.value(b, perm, rank)), perm)

    return convert


# -- ops of one 8-bit input: tables --------------------------------------------------------------

def table_op(build: Callable) -> Callable[[Importer, Operator], None]:
    """An op whose output depends on one input code only: `take` from the table that
    `build(x: Codes, y: Codes | None, options)` makes (an output per code, in code order)."""

    def convert(importer: Importer, op: Operator) -> None:
        x, y = op.inputs[0], op.outputs[0]
        sides = [tables.Codes(importer.tensor(i).dtype, *quant(importer, op, i))
                 if importer.tensor(i).dtype in ("int8", "uint8") else None for i in (x, y)]
        table = build(*sides, op.options)
        first = int(np.iinfo(importer.tensor(x).dtype).min)
        index = relax.op.subtract(relax.op.astype(importer.value(x), "int32"), relax.const(first, "int32"))
        importer.set(y, relax.op.take(relax.const(table), index, axis=0, mode="clip"), importer.perm(x))

    return convert


# -- data movement -------------------------------------------------------------------------------

def transpose(importer: Importer, op: Operator) -> None:
    """No data moves: the output is the input with its logical axes relabelled."""
    x, y = op.inputs[0], op.outputs[0]
    order = [int(a) for a in importer.constant(op, op.inputs[1])]
    inverse = [order.index(a) for a in range(len(order))]
    if importer.tensor(x).data is not None:
        importer.set(y, relax.const(np.ascontiguousarray(importer.tensor(x).data.transpose(order)), importer.tensor(x).dtype))
        return
    held = importer.values[x]
    importer.values[y] = Value(held.expr, tuple(inverse[a] for a in held.perm))


def concatenation(importer: Importer, op: Operator) -> None:
    y = op.outputs[0]
    rank = len(importer.tensor(y).shape)
    axis = op.options.Axis() % rank
    if op.options.FusedActivationFunction():
        raise importer.fail(op, "a fused activation on a concatenation is not supported")
    if any(quant(importer, op, i) != quant(importer, op, y) for i in op.inputs):
        raise importer.fail(op, "inputs with other scales or zero points than the output (the int8 kernel "
                                "refuses them too)")
    perm = importer.perm(op.inputs[0])
    importer.set(y, relax.op.concat([importer.value(i, perm) for i in op.inputs], axis=perm.index(axis)), perm)


def pad(importer: Importer, op: Operator) -> None:
    """PAD of 8-bit codes pads with the output zero point (real 0)."""
    x, y = op.inputs[0], op.outputs[0]
    widths = importer.constant(op, op.inputs[1]).astype(int)
    perm = importer.perm(x)
    flat = [int(w) for axis in perm for w in widths[axis]]
    _, zero = quant(importer, op, y)
    importer.set(y, relax.op.nn.pad(importer.value(x), flat, pad_value=float(zero)), perm)


def mean(importer: Importer, op: Operator) -> None:
    """MEAN over H and W of a 4-D tensor, keeping them (`reference_ops::QuantizedMeanOrSum`):
    the int32 sum of codes minus z_x * N, times s_x / s_y with the division by N folded into the
    multiplier as the kernel folds it ((M << k) / N, k = min(floor(log2 N), 32, 31 + shift))."""
    x, y = op.inputs[0], op.outputs[0]
    axes = sorted(int(a) % 4 for a in importer.constant(op, op.inputs[1]).reshape(-1))
    if len(importer.tensor(x).shape) != 4 or axes != [1, 2] or not op.options.KeepDims():
        raise importer.fail(op, f"MEAN over axes {axes} (keep_dims {bool(op.options.KeepDims())}) is not supported; "
                                f"over H and W of a 4-D tensor with keep_dims it is")
    (s_x, z_x), (s_y, _) = quant(importer, op, x), quant(importer, op, y)
    count = importer.tensor(x).shape[1] * importer.tensor(x).shape[2]
    multiplier, shift = quantize_multiplier(float(np.float64(s_x) / np.float64(s_y)))
    k = min(count.bit_length() - 1, 32, 31 + shift)
    folded = Multiplier.from_pairs([((multiplier << k) // count, shift - k)])
    total = relax.op.sum(relax.op.astype(importer.value(x, NCHW), "int32"), axis=[2, 3], keepdims=True)
    centered = relax.op.subtract(_int64(total), relax.const(z_x * count, "int64"))
    importer.set(y, requantize(importer, op, folded).emit(centered, ()), NCHW)


def max_pool_2d(importer: Importer, op: Operator) -> None:
    x, y = op.inputs[0], op.outputs[0]
    options = op.options
    low, high = activation_range(importer, op, options.FusedActivationFunction(), y)  # codes are not requantized
    kernel = (options.FilterHeight(), options.FilterWidth())
    top, left, bottom, right = _window_padding(importer, op, kernel)
    pooled = relax.op.nn.max_pool2d(importer.value(x, NCHW), kernel, (options.StrideH(), options.StrideW()),
                                    [top, left, bottom, right])
    info = np.iinfo(importer.tensor(y).dtype)
    if (low, high) != (info.min, info.max):
        pooled = relax.op.clip(pooled, low, high)
    importer.set(y, pooled, NCHW)


def resize_nearest_neighbor(importer: Importer, op: Operator) -> None:
    """Nearest resize as `take` of the source rows and columns TFLite's reference kernel picks
    (its float index arithmetic evaluated here), so no interpolation formula has to agree."""
    x, y = op.inputs[0], op.outputs[0]
    _, in_h, in_w, _ = importer.tensor(x).shape
    _, out_h, out_w, _ = importer.tensor(y).shape
    options = op.options
    rows = tables.nearest_indices(in_h, out_h, options.AlignCorners(), options.HalfPixelCenters())
    cols = tables.nearest_indices(in_w, out_w, options.AlignCorners(), options.HalfPixelCenters())
    data = importer.value(x, NCHW)
    if not np.array_equal(rows, np.arange(out_h)):
        data = importer.builder.emit(relax.op.take(data, relax.const(rows, "int32"), axis=2, mode="clip"))
    if not np.array_equal(cols, np.arange(out_w)):
        data = relax.op.take(data, relax.const(cols, "int32"), axis=3, mode="clip")
    importer.set(y, data, NCHW)


# -- the graph's float boundary ------------------------------------------------------------------

def quantize(importer: Importer, op: Operator) -> None:
    """float -> codes: round(x / scale) half away from zero (`AffineQuantize`), + zero point;
    8-bit -> 8-bit: a requantize table."""
    x, y = op.inputs[0], op.outputs[0]
    if importer.tensor(x).dtype != "float32":
        table_op(tables.requantize)(importer, op)
        return
    scale, zero = quant(importer, op, y)
    perm = NCHW if len(importer.tensor(x).shape) == 4 else importer.perm(x)  # an NHWC image: codes channels-first
    value = relax.op.divide(importer.value(x, perm), relax.const(np.float32(scale), "float32"))
    whole = relax.op.trunc(value)
    tie = relax.op.greater_equal(relax.op.abs(relax.op.subtract(value, whole)), relax.const(0.5, "float32"))
    rounded = relax.op.add(whole, relax.op.where(tie, relax.op.sign(value), relax.const(0.0, "float32")))
    info = np.iinfo(importer.tensor(y).dtype)
    rounded = relax.op.clip(relax.op.add(rounded, relax.const(float(zero), "float32")), info.min, info.max)
    importer.set(y, relax.op.astype(rounded, importer.tensor(y).dtype), perm)


CONVERTERS: dict[str, Callable[[Importer, Operator], None]] = {
    "CONV_2D": conv_2d,
    "DEPTHWISE_CONV_2D": depthwise_conv_2d,
    "FULLY_CONNECTED": fully_connected,
    "AVERAGE_POOL_2D": average_pool_2d,
    "RESHAPE": reshape,
    "ADD": _add_like(1),
    "SUB": _add_like(-1),
    "MUL": mul,
    "SQUARED_DIFFERENCE": squared_difference,
    "MINIMUM": minimum_maximum(relax.op.minimum),
    "MAXIMUM": minimum_maximum(relax.op.maximum),
    "MEAN": mean,
    "TANH": table_op(tables.tanh),
    "LOGISTIC": table_op(tables.logistic),
    "RSQRT": table_op(tables.rsqrt),
    "LEAKY_RELU": table_op(tables.leaky_relu),
    "RELU": table_op(tables.relu),
    "QUANTIZE": quantize,
    "DEQUANTIZE": table_op(tables.dequantize),
    "TRANSPOSE": transpose,
    "CONCATENATION": concatenation,
    "PAD": pad,
    "MAX_POOL_2D": max_pool_2d,
    "RESIZE_NEAREST_NEIGHBOR": resize_nearest_neighbor,
}
