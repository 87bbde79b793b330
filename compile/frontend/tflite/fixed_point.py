"""TFLite's integer requantization, exactly: `QuantizeMultiplier` (a real multiplier as a Q31
integer and a power of two, from the double product of the float32 scales) and
`MultiplyByQuantizedMultiplier` (the default build: a saturating rounding doubling high
multiply, then a rounding right shift; two roundings, as `tensorflow/lite/kernels/internal/common.h`).

Each is here twice, for numpy (lookup tables of 8-bit ops, built at import) and for Relax (the
graph), and the two are tested against each other and against LiteRT's reference kernels.
In int64, with x * 2^left already applied:

    high = (x * M + 2^30) >> 31             SaturatingRoundingDoublingHighMul: rounds half up
    out  = (high + half + (high < 0 ? -1 : 0 when r > 0)) >> r
                                            RoundingDivideByPOT: rounds half away from zero

`x * M` needs 62 bits, so no float type computes it exactly; the vector int64 multiply does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from tvm import relax
from tvm.relax.dpl import DFPattern, is_const, is_op, wildcard

Q31 = 1 << 31


def tflite_round(value: float) -> int:
    """`TfLiteRound` (std::round): half away from zero."""
    return int(math.copysign(math.floor(abs(value) + 0.5), value))


def quantize_multiplier(real: float) -> tuple[int, int]:
    """`QuantizeMultiplier`: (Q31 multiplier, shift) with real = M * 2^(shift - 31)."""
    if real == 0.0:
        return 0, 0
    fraction, shift = math.frexp(real)
    q = tflite_round(fraction * Q31)
    if q == Q31:
        q //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    return q, shift


INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


def _wrap32(value: int) -> int:
    return (value - INT32_MIN) % 2**32 + INT32_MIN


def rounding_doubling_high_mul(a: int, b: int) -> int:
    """gemmlowp's SaturatingRoundingDoublingHighMul on int32 scalars."""
    if a == b == INT32_MIN:
        return INT32_MAX
    total = a * b + ((1 << 30) if a * b >= 0 else 1 - (1 << 30))
    return total // Q31 if total >= 0 else -(-total // Q31)  # C++ division truncates


def rounding_divide_by_pot(x: int, exponent: int) -> int:
    mask = (1 << exponent) - 1
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> exponent) + (1 if (x & mask) > threshold else 0)


def multiply_by_quantized_multiplier(x: int, multiplier: int, shift: int) -> int:
    """Scalar `MultiplyByQuantizedMultiplier`, int32 wrap of `x * 2^left` included."""
    left, right = max(shift, 0), max(-shift, 0)
    return rounding_divide_by_pot(rounding_doubling_high_mul(_wrap32(x * (1 << left)), multiplier), right)


def _saturating_multiply_by_pot(x: int, exponent: int) -> int:
    if exponent < 0:
        return rounding_divide_by_pot(x, -exponent)
    threshold = (1 << (31 - exponent)) - 1
    return INT32_MAX if x > threshold else INT32_MIN if x < -threshold else x << exponent


def inverse_sqrt(value: int) -> tuple[int, int]:
    """`GetInvSqrtQuantizedMultiplierExp(value, reverse_shift=-1)`: 1/sqrt(value) as a Q31
    multiplier and shift, by the kernel's five Newton-Raphson steps in gemmlowp fixed point
    (Q3.28 values; a product of Qa and Qb is Q(a+b), rescaled with saturating shifts)."""
    if value <= 1:
        return INT32_MAX, 0
    shift = 11
    while value >= 1 << 29:
        value //= 4
        shift += 1
    pairs = (32 - value.bit_length() - 1) // 2 - 1  # (CountLeadingZeros - 1) / 2 - 1
    shift -= pairs
    value <<= 2 * pairs
    x_in = value >> 1
    half_input = rounding_divide_by_pot(x_in, 1)
    half_three = (1 << 28) + (1 << 27)
    x = 1 << 28  # one in Q3.28
    mul = rounding_doubling_high_mul
    for _ in range(5):
        cube = _saturating_multiply_by_pot(mul(mul(x, x), x), 6)  # Q9 -> Q3
        x = _saturating_multiply_by_pot(_wrap32(mul(half_three, x) - mul(half_input, cube)), 3)  # Q6 -> Q3
    x = mul(x, 1518500250)  # sqrt(2) / 2 in Q0.31
    if shift < 0:
        x <<= -shift
        shift = 0
    return x, -shift


@dataclass(frozen=True)
class Multiplier:
    """One real multiplier per channel (or one), as `MultiplyByQuantizedMultiplier` applies it:
    `multiplier` already times 2^left (the left shift of a multiplier > 1), `right` >= 0."""

    multiplier: np.ndarray  # int64
    right: np.ndarray  # int64

    @classmethod
    def of(cls, reals) -> Multiplier:
        pairs = [quantize_multiplier(float(r)) for r in np.atleast_1d(np.asarray(reals, np.float64))]
        return cls.from_pairs(pairs)

    @classmethod
    def from_pairs(cls, pairs) -> Multiplier:
        m = np.array([q << max(s, 0) for q, s in pairs], np.int64)
        return cls(m, np.array([max(-s, 0) for _, s in pairs], np.int64))

    def apply(self, x: np.ndarray) -> np.ndarray:
        """numpy: `MultiplyByQuantizedMultiplier(x, M, shift)` elementwise (broadcast on the last axis)."""
        high = (np.asarray(x, np.int64) * self.multiplier + (1 << 30)) >> 31
        half = (np.int64(1) << self.right) >> 1
        return (high + half + np.where((high < 0) & (self.right > 0), -1, 0)) >> self.right

    def emit(self, x: relax.Expr, shape: tuple[int, ...], narrow: bool = False) -> relax.Expr:
        """Relax: the same on int64 `x`; per-channel constants reshaped to `shape` (broadcasting
        like the channel axis of `x`), a single multiplier as scalars. `narrow`: the rounding
        shift on the int32 high half (as the kernel computes it), twice the lanes per vector;
        the backend's packed convs use it (their epilogue runs once per output)."""
        high = relax.op.right_shift(relax.op.add(relax.op.multiply(x, _const(self.multiplier, shape, "int64")),
                                                 relax.const(1 << 30, "int64")), relax.const(31, "int64"))
        if narrow:
            high = relax.op.astype(high, "int32")
        return self.divide(high, shape, "int32" if narrow else "int64")

    def divide(self, high: relax.Expr, shape: tuple[int, ...], dtype: str) -> relax.Expr:
        """RoundingDivideByPOT of the high half (`dtype` int32 or int64), the second rounding."""
        half = (np.int64(1) << self.right) >> 1
        # (high >> bits - 1) is -1 for a negative value: the -1 that RoundingDivideByPOT's threshold adds
        negative = relax.op.bitwise_and(relax.op.right_shift(high, relax.const(31 if dtype == "int32" else 63, dtype)),
                                        _const(np.where(self.right > 0, -1, 0), shape, dtype))
        rounded = relax.op.add(relax.op.add(high, _const(half, shape, dtype)), negative)
        return relax.op.right_shift(rounded, _const(self.right, shape, dtype))

    def fits_int32(self) -> bool:
        """No multiplier has a left shift folded in: each is an int32, as the kernels hold it."""
        return bool(self.multiplier.max() <= INT32_MAX)

    def blocked(self, out_channels: int, lanes: int) -> Multiplier:
        """Per-channel arrays laid out like a packed conv's output blocks (padded channels
        multiply by 0); a single multiplier stays one."""
        if self.multiplier.size == 1:
            return self
        blocks = -(-out_channels // lanes)
        pad = blocks * lanes - out_channels
        return Multiplier(np.pad(self.multiplier, (0, pad)), np.pad(self.right, (0, pad)))


def _const(values: np.ndarray, shape: tuple[int, ...], dtype: str) -> relax.Expr:
    """Per-channel values reshaped to `shape`, or a single one as a scalar."""
    if values.size == 1:
        return relax.const(int(values.reshape(-1)[0]), dtype)
    return relax.const(values.reshape(shape).astype(dtype), dtype)


@dataclass(frozen=True)
class Requantize:
    """The end of every TFLite integer op: `MultiplyByQuantizedMultiplier`, + the output zero
    point, clamped to the activation range, as 8-bit codes. `RequantizePattern` matches what
    `emit` makes, so the backend finds a conv's epilogue and re-emits it on packed blocks."""

    multiplier: Multiplier
    zero: int
    low: int
    high: int
    dtype: str

    def emit(self, value: relax.Expr, shape: tuple[int, ...], narrow: bool = False) -> relax.Expr:
        """Codes from an int64 `value` (per-channel constants reshaped to `shape`; `narrow`:
        see `Multiplier.emit`)."""
        return self.finish(self.multiplier.emit(value, shape, narrow), "int32" if narrow else "int64")

    def finish(self, scaled: relax.Expr, dtype: str) -> relax.Expr:
        """The output zero point and the clamp on the multiplied value (`dtype`), as codes."""
        value = relax.op.add(scaled, relax.const(self.zero, dtype))
        return relax.op.astype(relax.op.clip(value, self.low, self.high), self.dtype)


class RequantizePattern:
    """`Requantize.emit` on `astype(acc, int64)`, as a dataflow pattern."""

    def __init__(self, acc: DFPattern) -> None:
        self.multiplier, self.half, self.negative, self.right, self.zero = (is_const() for _ in range(5))
        product = is_op("relax.multiply")(is_op("relax.astype")(acc), self.multiplier)
        high = is_op("relax.right_shift")(is_op("relax.add")(product, is_const()), is_const())
        negative = is_op("relax.bitwise_and")(is_op("relax.right_shift")(high, is_const()), self.negative)
        shifted = is_op("relax.right_shift")(is_op("relax.add")(is_op("relax.add")(high, self.half), negative),
                                             self.right)
        self.clip = is_op("relax.clip")(is_op("relax.add")(shifted, self.zero), wildcard(), wildcard())
        self.root = is_op("relax.astype")(self.clip)

    def requantize(self, match: dict) -> Requantize:
        def values(part) -> np.ndarray:
            return match[part].value.numpy().astype(np.int64).reshape(-1)

        clip = match[self.clip]
        return Requantize(Multiplier(values(self.multiplier), values(self.right)), int(values(self.zero)[0]),
                          int(clip.args[1].value), int(clip.args[2].value), str(match[self.root].attrs.dtype))
