"""Tables of output codes for TFLite ops of one 8-bit input, from each reference kernel's
own formula: integer ones (`Multiplier`) evaluated in int64 exactly as the kernel does, float
ones (tanh, logistic: `LUTPopulate`) in float32 with the kernel's order of operations and
`TfLiteRound`. A table indexed by `code - min code` is what the converter's `take` reads.
"""

from __future__ import annotations

import numpy as np

from compile.frontend.tflite.fixed_point import (
    Multiplier,
    inverse_sqrt,
    multiply_by_quantized_multiplier,
    quantize_multiplier,
)

QuantPair = tuple[float, int]  # (scale, zero point)


def _codes(dtype: str) -> np.ndarray:
    info = np.iinfo(dtype)
    return np.arange(info.min, info.max + 1, dtype=np.int64)


def _clamp(values: np.ndarray, dtype: str, low: int | None = None) -> np.ndarray:
    info = np.iinfo(dtype)
    return np.clip(values, info.min if low is None else low, info.max).astype(dtype)


def _round(values: np.ndarray) -> np.ndarray:
    """`TfLiteRound` on float32: half away from zero."""
    return np.sign(values) * np.floor(np.abs(values).astype(np.float64) + 0.5)


def _float_lut(function, x: QuantPair, y: QuantPair, dtype: str) -> np.ndarray:
    """`LUTPopulate`: dequantize in float32, transform, multiply by 1 / output scale, round,
    add the zero point in float, clamp."""
    (s_x, z_x), (s_y, z_y) = x, y
    real = (np.float32(s_x) * (_codes(dtype) - z_x).astype(np.float32)).astype(np.float32)
    transformed = function(real.astype(np.float64)).astype(np.float32)  # correctly rounded float32
    rescaled = _round((transformed * (np.float32(1) / np.float32(s_y))).astype(np.float32)).astype(np.float32)
    return _clamp((rescaled + np.float32(z_y)).astype(np.int64), dtype)


def tanh(importer, op) -> np.ndarray:
    from compile.frontend.tflite.converters import quant

    x, y = op.inputs[0], op.outputs[0]
    return _float_lut(np.tanh, quant(importer, op, x), quant(importer, op, y), importer.tensor(y).dtype)


def logistic(importer, op) -> np.ndarray:
    from compile.frontend.tflite.converters import quant

    x, y = op.inputs[0], op.outputs[0]
    return _float_lut(lambda v: 1.0 / (1.0 + np.exp(-v)), quant(importer, op, x), quant(importer, op, y),
                      importer.tensor(y).dtype)


def rsqrt(importer, op) -> np.ndarray:
    """RSQRT (int8) is integer arithmetic at run time in the kernel (gemmlowp fixed point,
    Newton-Raphson in `GetInvSqrtQuantizedMultiplierExp`), of one input code: evaluated here
    for every code, in int32 as the kernel does (`fixed_point.inverse_sqrt`). The multiplier
    is 1 / (sqrtf(s_x) * s_y) with the product in float32, as its Prepare. Codes below the
    zero point (a negative real, which the kernel refuses at run time) and the zero point
    itself give the largest code, as the kernel gives for 0."""
    from compile.frontend.tflite.converters import quant

    x, y = op.inputs[0], op.outputs[0]
    (s_x, z_x), (s_y, z_y) = quant(importer, op, x), quant(importer, op, y)
    dtype = importer.tensor(y).dtype
    multiplier, shift = quantize_multiplier(1.0 / float(np.float32(np.sqrt(np.float32(s_x)) * np.float32(s_y))))
    shift_20 = 20
    out = []
    for code in _codes(importer.tensor(x).dtype):
        value = int(code) - z_x
        if value <= 0:
            out.append(np.iinfo(dtype).max)
            continue
        inverse, inverse_shift = inverse_sqrt(value)
        data = multiply_by_quantized_multiplier(1, inverse, inverse_shift + shift_20)
        out.append(multiply_by_quantized_multiplier(data, multiplier, shift - shift_20) + z_y)
    return _clamp(np.array(out, np.int64), dtype)


def leaky_relu(importer, op) -> np.ndarray:
    """`QuantizeLeakyRelu`: two multipliers, input scale / output scale with and without alpha,
    each computed in float32 before `QuantizeMultiplier` widens it."""
    from compile.frontend.tflite.converters import quant

    x, y = op.inputs[0], op.outputs[0]
    (s_x, z_x), (s_y, z_y) = quant(importer, op, x), quant(importer, op, y)
    alpha = np.float32(op.options.Alpha())
    identity = Multiplier.of(np.float64(np.float32(s_x) / np.float32(s_y)))
    real = np.float64(np.float32(np.float32(s_x) * alpha) / np.float32(s_y))
    negative = Multiplier.of(abs(real))  # a negative alpha: the negated product with -alpha (LiteRT's kernel)
    centered = _codes(importer.tensor(x).dtype) - z_x
    below = negative.apply(centered) * (1 if real >= 0 else -1)
    out = np.where(centered >= 0, identity.apply(centered), below) + z_y
    return _clamp(out, importer.tensor(y).dtype)


def relu(importer, op) -> np.ndarray:
    """`ReluX` on codes: requantize by input / output scale (float32), clamp below at the
    output zero point."""
    from compile.frontend.tflite.converters import quant

    x, y = op.inputs[0], op.outputs[0]
    (s_x, z_x), (s_y, z_y) = quant(importer, op, x), quant(importer, op, y)
    out = Multiplier.of(np.float64(np.float32(s_x) / np.float32(s_y))).apply(_codes(importer.tensor(x).dtype) - z_x)
    return _clamp(out + z_y, importer.tensor(y).dtype, low=max(z_y, np.iinfo(importer.tensor(y).dtype).min))


def requantize(x: QuantPair, y: QuantPair, dtype: str) -> np.ndarray:
    """QUANTIZE of 8-bit codes (`Requantize`): (code - z_x) times s_x / s_y (double), + z_y."""
    (s_x, z_x), (s_y, z_y) = x, y
    out = Multiplier.of(np.float64(s_x) / np.float64(s_y)).apply(_codes(dtype) - z_x) + z_y
    return _clamp(out, dtype)


def dequantize(x: QuantPair, dtype: str) -> np.ndarray:
    """DEQUANTIZE: scale * (code - zero point), one float32 rounding."""
    scale, zero = x
    return (np.float64(scale) * (_codes(dtype) - zero)).astype(np.float32)


def nearest_indices(size: int, out: int, align_corners: bool, half_pixel: bool) -> np.ndarray:
    """RESIZE_NEAREST_NEIGHBOR's source index of each output row (or column), in float32."""
    scale = (np.float32(size - 1) / np.float32(out - 1) if align_corners and out > 1
             else np.float32(size) / np.float32(out))
    offset = np.float32(0.5 if half_pixel else 0.0)
    position = ((np.arange(out, dtype=np.float32) + offset) * scale).astype(np.float32)
    index = _round(position) if align_corners else np.floor(position)
    index = np.minimum(index.astype(np.int64), size - 1)
    return np.maximum(index, 0) if half_pixel else index
