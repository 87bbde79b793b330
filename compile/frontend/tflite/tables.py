"""Tables of output codes for TFLite ops of one 8-bit input, from each reference kernel's
own formula: integer ones (`Multiplier`) evaluated in int64 exactly as the kernel does, float
ones (tanh, logistic: `LUTPopulate`) in float32 with the kernel's order of operations and
`TfLiteRound`. A table indexed by `code - min code` is what the converter's `take` reads.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from compile.frontend.tflite.fixed_point import (
    Multiplier,
    inverse_sqrt,
    multiply_by_quantized_multiplier,
    quantize_multiplier,
)


@dataclass(frozen=True)
class Codes:
    """One side of an op of one 8-bit input: its 8-bit type and quantization."""

    dtype: str
    scale: float
    zero: int

    def all(self) -> np.ndarray:
        """Every code of the type, in order: a table's index is code - its first."""
        info = np.iinfo(self.dtype)
        return np.arange(info.min, info.max + 1, dtype=np.int64)

    def centered(self) -> np.ndarray:
        return self.all() - self.zero

    def clamp(self, values: np.ndarray, low: int | None = None) -> np.ndarray:
        info = np.iinfo(self.dtype)
        return np.clip(values, info.min if low is None else low, info.max).astype(self.dtype)


def _round(values: np.ndarray) -> np.ndarray:
    """`TfLiteRound` on float32: half away from zero."""
    return np.sign(values) * np.floor(np.abs(values).astype(np.float64) + 0.5)


def _float_lut(function, x: Codes, y: Codes) -> np.ndarray:
    """`LUTPopulate`: dequantize in float32, transform, multiply by 1 / output scale, round,
    add the zero point in float, clamp."""
    real = (np.float32(x.scale) * x.centered().astype(np.float32)).astype(np.float32)
    transformed = function(real.astype(np.float64)).astype(np.float32)  # correctly rounded float32
    rescaled = _round((transformed * (np.float32(1) / np.float32(y.scale))).astype(np.float32)).astype(np.float32)
    return y.clamp((rescaled + np.float32(y.zero)).astype(np.int64))


def tanh(x: Codes, y: Codes, _options) -> np.ndarray:
    return _float_lut(np.tanh, x, y)


def logistic(x: Codes, y: Codes, _options) -> np.ndarray:
    return _float_lut(lambda v: 1.0 / (1.0 + np.exp(-v)), x, y)


def rsqrt(x: Codes, y: Codes, _options) -> np.ndarray:
    """RSQRT (int8) is integer arithmetic at run time in the kernel (gemmlowp fixed point,
    Newton-Raphson in `GetInvSqrtQuantizedMultiplierExp`), of one input code: evaluated here
    for every code, in int32 as the kernel does (`fixed_point.inverse_sqrt`). The multiplier
    is 1 / (sqrtf(s_x) * s_y) with the product in float32, as its Prepare. Codes below the
    zero point (a negative real, which the kernel refuses at run time) and the zero point
    itself give the largest code, as the kernel gives for 0."""
    multiplier, shift = quantize_multiplier(1.0 / float(np.float32(np.sqrt(np.float32(x.scale)) * np.float32(y.scale))))
    kernel_shift = 20  # the kernel's kShift, which keeps the intermediate an integer
    out = []
    for value in x.centered():
        if value <= 0:
            out.append(np.iinfo(y.dtype).max)
            continue
        inverse, inverse_shift = inverse_sqrt(int(value))
        data = multiply_by_quantized_multiplier(1, inverse, inverse_shift + kernel_shift)
        out.append(multiply_by_quantized_multiplier(data, multiplier, shift - kernel_shift) + y.zero)
    return y.clamp(np.array(out, np.int64))


def leaky_relu(x: Codes, y: Codes, options) -> np.ndarray:
    """`QuantizeLeakyRelu`: two multipliers, input scale / output scale with and without alpha,
    each computed in float32 before `QuantizeMultiplier` widens it; a negative alpha is the
    negated product with -alpha (LiteRT's kernel)."""
    alpha = np.float32(options.Alpha())
    identity = Multiplier.of(np.float64(np.float32(x.scale) / np.float32(y.scale)))
    real = np.float64(np.float32(np.float32(x.scale) * alpha) / np.float32(y.scale))
    below = Multiplier.of(abs(real)).apply(x.centered()) * (1 if real >= 0 else -1)
    return y.clamp(np.where(x.centered() >= 0, identity.apply(x.centered()), below) + y.zero)


def relu(x: Codes, y: Codes, _options) -> np.ndarray:
    """`ReluX` on codes: requantize by input / output scale (float32), clamp below at the
    output zero point."""
    out = Multiplier.of(np.float64(np.float32(x.scale) / np.float32(y.scale))).apply(x.centered())
    return y.clamp(out + y.zero, low=max(y.zero, np.iinfo(y.dtype).min))


def requantize(x: Codes, y: Codes, _options) -> np.ndarray:
    """QUANTIZE of 8-bit codes (`Requantize`): (code - z_x) times s_x / s_y (double), + z_y."""
    return y.clamp(Multiplier.of(np.float64(x.scale) / np.float64(y.scale)).apply(x.centered()) + y.zero)


def dequantize(x: Codes, _y, _options) -> np.ndarray:
    """DEQUANTIZE: scale * (code - zero point), one float32 rounding."""
    return (np.float64(x.scale) * x.centered()).astype(np.float32)


def nearest_indices(size: int, out: int, align_corners: bool, half_pixel: bool) -> np.ndarray:
    """RESIZE_NEAREST_NEIGHBOR's source index of each output row (or column), in float32."""
    scale = (np.float32(size - 1) / np.float32(out - 1) if align_corners and out > 1
             else np.float32(size) / np.float32(out))
    offset = np.float32(0.5 if half_pixel else 0.0)
    position = ((np.arange(out, dtype=np.float32) + offset) * scale).astype(np.float32)
    index = _round(position) if align_corners else np.floor(position)
    index = np.minimum(index.astype(np.int64), size - 1)
    return np.maximum(index, 0) if half_pixel else index
