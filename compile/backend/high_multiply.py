"""The high half of TFLite's fixed-point multiply as one instruction where the CPU has one.

Every TFLite integer op ends in `MultiplyByQuantizedMultiplier`, whose first rounding is
gemmlowp's SaturatingRoundingDoublingHighMul of two int32 values, x and a multiplier M in
[2^30, 2^31): `(x * M + 2^30) >> 31`. The frontend (`compile.frontend.tflite.fixed_point`)
writes it on int64, exact everywhere. NEON has no 64-bit lane multiply, so LLVM makes each lane of
that product a scalar multiply with moves to and from general registers (65 `mul`s per
packed-conv tile of 64 outputs, measured in the `arm64-linux-dotprod` build of the paper's model);
NEON's `sqrdmulh` is the same function on four int32 lanes (it saturates only for x = M = -2^31,
and M > 0). It is what TFLite's own NEON kernels use.

Two places get it: the packed convs' epilogue (`compile.backend.packed_conv`, per-channel
multipliers) through `high_te`, and every other requantize with one multiplier through the
`high_multiplies` pass. The packed convs also take the second rounding (RoundingDivideByPOT) as
the instructions TFLite's NEON kernels use (`divide_te`: a saturating add of the sign fixup,
then `srshl`, 4 instructions where the shifts and adds took 5). On a target without such an
instruction (x86, where LLVM keeps the int64 product vector code) both leave the int64 form as
it is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import tvm
from tvm import relax, te, tirx
from tvm.relax.dpl import is_const, is_op, wildcard

from compile.backend.call_te import Emitted, call_te, rewrite_module
from compile.backend.targets import cpu_has
from compile.frontend.rewrite import constant
from compile.frontend.tflite.fixed_point import INT32_MAX

HIGH_BLOCK = "high_mul"  # the block of each (the schedules find it by name)


@dataclass(frozen=True)
class HighMultiply:
    """One instruction for `(x * M + 2^30) >> 31` on int32 lanes."""

    name: str
    features: tuple[str, ...]  # LLVM CPU features the target must have
    lanes: int  # int32 lanes per instruction: the widest vector a schedule may give it (LLVM
    # cannot split a target intrinsic)
    compute: Callable[[tirx.PrimExpr, tirx.PrimExpr], tirx.PrimExpr]  # (int32 x, int32 M) -> int32
    # (int32 x, int32 -exponent) -> RoundingDivideByPOT(x, exponent), or None: the shifts in plain ops
    divide: Callable[[tirx.PrimExpr, tirx.PrimExpr], tirx.PrimExpr] | None = None


def _sqrdmulh(x: tirx.PrimExpr, multiplier: tirx.PrimExpr) -> tirx.PrimExpr:
    # scalar here; the loop vectorizer widens it to llvm.aarch64.neon.sqrdmulh.v4i32
    return tirx.call_llvm_pure_intrin("int32", "llvm.aarch64.neon.sqrdmulh", x, multiplier)


def _srshl(x: tirx.PrimExpr, negated: tirx.PrimExpr) -> tirx.PrimExpr:
    """gemmlowp's NEON RoundingDivideByPOT: a negative x less one (x & -e has the sign bit of x
    for e > 0), then `srshl` by -e, which rounds half up: half away from zero overall."""
    fixup = tirx.bitwise_and(x, negated) >> 31
    fixed = tirx.call_llvm_pure_intrin("int32", "llvm.aarch64.neon.sqadd", x, fixup)
    return tirx.call_llvm_pure_intrin("int32", "llvm.aarch64.neon.srshl", fixed, negated)


HIGH_MULTIPLIES = (HighMultiply("sqrdmulh", ("neon",), 4, _sqrdmulh, _srshl),)


def for_target(target: tvm.target.Target) -> HighMultiply | None:
    """The target's high multiply instruction, or None (the int64 form stays)."""
    return next((h for h in HIGH_MULTIPLIES if cpu_has(target, h.features)), None)


def _broadcast(values: te.Tensor, index) -> tirx.PrimExpr:
    """`values` (one per channel block lane, unit axes elsewhere) at the element `index`."""
    return values[tuple(i if int(d) > 1 else 0 for i, d in zip(index, values.shape))]


def divide_te(x: te.Tensor, negated: te.Tensor, high: HighMultiply) -> te.Tensor:
    """RoundingDivideByPOT of int32 `x` by the exponents whose negations are `negated` (broadcast
    like `x`), with the target's instructions."""
    return te.compute(x.shape, lambda *i: high.divide(x[i], _broadcast(negated, i)), name="rounding_shift")


def high_te(x: te.Tensor, multiplier: te.Tensor, high: HighMultiply) -> te.Tensor:
    """The high half of int32 `x` times the int32 `multiplier` (broadcast like `x`: one per
    channel block lane), as int32."""
    return te.compute(x.shape, lambda *i: high.compute(x[i], _broadcast(multiplier, i)), name=HIGH_BLOCK)


def _split_left_shift(multiplier: int) -> tuple[int, int] | None:
    """(Q31 multiplier, left shift) of a constant the import wrote as q * 2^left (`Multiplier`
    folds a multiplier > 1's left shift into q), q < 2^31; None if it is not one."""
    left = max(multiplier.bit_length() - 31, 0)
    q = multiplier >> left
    return (q, left) if 0 < q <= INT32_MAX and q << left == multiplier else None


class _SingleMultiplier:
    """`(x * M + 2^30) >> 31` on int64 with one constant M (`Multiplier.emit`'s first rounding)
    -> the instruction on `x` as int32 (x is an int32 in the kernels), widened back. M = q * 2^left
    with q < 2^31 (a real multiplier > 1, e.g. a gate MUL's): the instruction on `x << left` in
    int32, which is how TFLite computes it (`x * (1 << left_shift)`, wrapping where the int64 form
    would not; a valid model does not overflow there)."""

    def __init__(self) -> None:
        self.x, self.multiplier, self.half, self.bits = wildcard(), is_const(), is_const(), is_const()
        self.root = is_op("relax.right_shift")(is_op("relax.add")(is_op("relax.multiply")(self.x, self.multiplier),
                                                                  self.half), self.bits)

    def rewrite(self, high: HighMultiply, builder: relax.BlockBuilder, call: relax.Call, match: dict) -> relax.Expr:
        values = [constant(match[p]) for p in (self.multiplier, self.half, self.bits)]
        if any(v.size != 1 or v.dtype != "int64" for v in values):
            return call
        multiplier, half, bits = (int(v.reshape(-1)[0]) for v in values)
        split = _split_left_shift(multiplier)
        if (half, bits) != (1 << 30, 31) or split is None:
            return call
        q, left = split
        x = match[self.x]
        shape = [int(d) for d in x.ty.shape]
        m = tirx.const(q, "int32")

        def compute(t: te.Tensor) -> te.Tensor:
            return te.compute(t.shape, lambda *i: high.compute(t[i] << left if left else t[i], m), name=HIGH_BLOCK)

        product = call_te(builder, "high_mul", compute, [Emitted(relax.op.astype(x, "int32"), shape, "int32")])
        return relax.op.astype(product.expr, "int64")


def high_multiplies(target: tvm.target.Target) -> tvm.transform.Pass:
    """The module pass for the requantizes outside the packed convs (a no-op where the target
    has no high multiply instruction)."""
    high = for_target(target)
    single = _SingleMultiplier()

    @tvm.transform.module_pass(opt_level=0, name="QatieHighMultiplies")
    def _pass(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        if high is None:
            return mod
        return rewrite_module(mod, single.root, lambda builder, call, match: single.rewrite(high, builder, call, match))

    return _pass
