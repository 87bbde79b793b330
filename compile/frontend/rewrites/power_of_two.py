"""Re-quantizing integer values by a power of two, bit for bit as float Q(...) does.

QATIE's scales are powers of two. Then what QDQ computes in float between a dequantize and a
quantize (a re-quantize, a sum, a product) is an integer V times 2^k, and float32 holds V
exactly while it has at most 24 bits: Q rounds V * 2^k half to even, adds the zero point and
clamps. On integer codes that is a shift, and for k < 0 a rounding from the bits shifted out;
no conversion to float and back per code, and only shifts, masks and adds, which the blocked
layout and the narrow-integer pass carry between convs. The arithmetic is done in the
narrowest type that holds it (`working_type`): int16 where it can, twice the lanes of int32
per vector (a Cortex-A55's int32 version of a residual add took longer than the float one).
"""

from __future__ import annotations

import math

import numpy as np
from tvm import relax

from compile.frontend.rewrite import constant

FLOAT32_EXACT_BITS = 24  # integers float32 holds exactly: |V| < 2^24
CODE_BITS = 8  # |code - zero point| <= 255 < 2^8
WORKING_TYPES = (("int16", 15), ("int32", 31))  # signed types, narrowest first, and their magnitude bits


def const(value: int, dtype: str) -> relax.Expr:
    return relax.const(int(value), dtype)


def exponent(scale: relax.Expr) -> int | None:
    """p where a per-tensor scale constant is exactly 2^p, else None."""
    value = constant(scale)
    if value.size != 1 or not float(value.reshape(-1)[0]) > 0:
        return None
    mantissa, exp = math.frexp(float(value.reshape(-1)[0]))
    return exp - 1 if mantissa == 0.5 else None


def working_type(bits: int, k: int) -> str | None:
    """The narrowest type in which `requantize` of values below 2^bits by 2^k stays exact (its
    rounding adds up to 2^(-k-1) before the shift), or None if none does."""
    return next((dtype for dtype, magnitude in WORKING_TYPES if bits + max(k, 0) < magnitude and -k < magnitude), None)


def centred(dq: relax.Call, dtype: str) -> relax.Expr:
    """A dequantize's codes minus its zero point, in `dtype` (magnitude below 2^CODE_BITS)."""
    return relax.op.subtract(relax.op.astype(dq.args[0], dtype), const(constant(dq.args[2]).reshape(-1)[0], dtype))


def requantize(value: relax.Expr, k: int, q: relax.Call, dtype: str) -> relax.Expr:
    """Q(value * 2^k) with the parameters of quantize `q`: value * 2^k, rounded, plus q's zero
    point, clamped to q's type; `value` and the arithmetic in `dtype` (from `working_type`).
    For k < 0 the shift rounds half to even, as Q does: adding half - 1 plus the lowest bit
    kept (1 on an odd result) carries into the kept bits exactly when the bits shifted out
    exceed half, or equal it on an odd result."""
    if k >= 0:
        scaled = relax.op.left_shift(value, const(k, dtype))
    else:
        odd = relax.op.bitwise_and(relax.op.right_shift(value, const(-k, dtype)), const(1, dtype))
        rounded = relax.op.add(relax.op.add(value, const((1 << (-k - 1)) - 1, dtype)), odd)
        scaled = relax.op.right_shift(rounded, const(-k, dtype))
    out = str(q.attrs.out_dtype)
    info = np.iinfo(out)
    shifted = relax.op.add(scaled, const(constant(q.args[2]).reshape(-1)[0], dtype))
    return relax.op.astype(relax.op.clip(shifted, int(info.min), int(info.max)), out)
