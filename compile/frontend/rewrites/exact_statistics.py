"""Mean and variance of a dequantized int8 tensor from integer sums: InstanceNorm's statistics.

ONNX InstanceNormalization imports as `mean(DQ(q))`, `variance(DQ(q))` over H and W, then
elementwise float ops up to the next Q. Both statistics are functions of the integer codes
alone: with c = q - z,

    mean = s * S1 / N,    variance = s^2 * (N * S2 - S1^2) / N^2,    S1 = sum(c), S2 = sum(c^2)

S1, S2 and N * S2 - S1^2 are exact integer arithmetic (the sums vectorize: integer addition
reassociates, where LLVM may not reorder a float sum); the scaling is one float64 multiply,
then one rounding to float32. The mean equals the float32 mean of any summation order (each partial sum of
codes times a power-of-two scale is exact in float32 up to 2^24 codes); the variance is the
exact value rounded once, where a float32 two-pass variance rounds at every step and depends on
the order. The elementwise normalize, affine, activation and Q that follow are unchanged and
fuse into one kernel.
"""

from __future__ import annotations

import functools
import operator

import numpy as np
from tvm import relax
from tvm.relax.dpl import is_const, is_op, wildcard

from compile.frontend.rewrite import INT8_TYPES, FoldLog, Rewrite, constant

INT32_MAX = np.iinfo(np.int32).max


class ExactStatistics(Rewrite):
    """`mean` / `variance` of a per-tensor DQ of 8-bit codes, from integer sums of the codes."""

    name = "exact-statistics"
    STATISTICS = ("relax.mean", "relax.variance")

    def __init__(self) -> None:
        self.x, self.s, self.z = wildcard(), is_const(), is_const()
        dq = is_op("relax.dequantize")(self.x, self.s, self.z)
        self.root = functools.reduce(operator.or_, (is_op(name)(dq) for name in self.STATISTICS))

    def rewrite(self, call: relax.Call, match: dict, log: FoldLog) -> relax.Expr:
        x = match[self.x]
        s, z = constant(match[self.s]), constant(match[self.z])
        if str(x.ty.dtype) not in INT8_TYPES:
            log.skip(self.name, f"{x.ty.dtype} input (codes must be 8-bit)")
            return call
        if s.size != 1 or z.size != 1:
            log.skip(self.name, "per-channel Q/DQ parameters")
            return call
        shape = [int(d) for d in x.ty.shape]
        axes = [int(a) % len(shape) for a in call.attrs.axis] if call.attrs.axis is not None else list(range(len(shape)))
        count = int(np.prod([shape[a] for a in axes]))
        keepdims = bool(call.attrs.keepdims)
        # |c| <= 255: S1 fits int32 below 2^23 elements; c^2 <= 65025 sums in int64 when int32 could overflow
        if count * 255 > INT32_MAX:
            log.skip(self.name, f"{count} elements per statistic (the code sum would leave int32)")
            return call
        centered = relax.op.subtract(relax.op.astype(x, "int32"), relax.const(int(z.reshape(-1)[0]), "int32"))
        s1 = relax.op.sum(centered, axes, keepdims)
        scale = float(s.reshape(-1)[0])
        log.apply(self.name)
        if call.op.name == "relax.mean":
            value = relax.op.multiply(relax.op.astype(s1, "float64"), relax.const(scale / count, "float64"))
            return relax.op.astype(value, "float32")
        square_type = "int32" if count * 255 * 255 <= INT32_MAX else "int64"
        wide = relax.op.astype(centered, square_type)
        s2 = relax.op.astype(relax.op.sum(relax.op.multiply(wide, wide), axes, keepdims), "int64")
        s1 = relax.op.astype(s1, "int64")
        # N * S2 - S1^2: exact in int64 (below 2^62 for any count that passed above), >= 0
        spread = relax.op.subtract(relax.op.multiply(s2, relax.const(count, "int64")), relax.op.multiply(s1, s1))
        value = relax.op.multiply(relax.op.astype(spread, "float64"), relax.const(scale * scale / (count * count), "float64"))
        return relax.op.astype(value, "float32")
