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
it is, but for the packed convs' epilogue on x86 (`EvenOddHighMultiply`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import tvm
from tvm import relax, te, tirx
from tvm.relax.dpl import is_const, is_op, wildcard
from tvm.s_tir import TensorIntrin
from tvm.script.ir_builder import IRBuilder
from tvm.script.ir_builder import tirx as T

from compile.backend.call_te import Emitted, call_te, rewrite_module
from compile.backend.targets import cpu_has
from compile.frontend.rewrite import constant
from compile.frontend.tflite.fixed_point import INT32_MAX

HIGH_BLOCK = "high_mul"  # the block of each (the schedules find it by name)
EVEN_ODD_BLOCK = "conv_high"  # a packed conv's bias add and high multiply, tensorized (`EvenOddHighMultiply`)


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


def _lanewise(x: te.Tensor, per_lane: te.Tensor, compute, name: str) -> te.Tensor:
    """`compute(x, value)` of each element of `x` and its value of `per_lane` (broadcast like `x`)."""
    return te.compute(x.shape, lambda *i: compute(x[i], _broadcast(per_lane, i)), name=name)


def divide_te(x: te.Tensor, negated: te.Tensor, high: HighMultiply) -> te.Tensor:
    """RoundingDivideByPOT of int32 `x` by the exponents whose negations are `negated` (broadcast
    like `x`), with the target's instructions."""
    return _lanewise(x, negated, high.divide, "rounding_shift")


def high_te(x: te.Tensor, multiplier: te.Tensor, high: HighMultiply) -> te.Tensor:
    """The high half of int32 `x` times the int32 `multiplier` (broadcast like `x`: one per
    channel block lane), as int32."""
    return _lanewise(x, multiplier, high.compute, HIGH_BLOCK)


@dataclass(frozen=True)
class EvenOddHighMultiply:
    """A packed conv's bias add and `(x * M + 2^30) >> 31` on `lanes` int32 lanes with x86's
    `vpmuldq`, which multiplies the even int32 lanes of two vectors into 64-bit lanes: once for
    the even lanes, once for the odd ones shifted down, each product rounded and shifted so that
    its 32 result bits sit in its own lane, then one masked move (a blend on AVX2). LLVM makes
    the int64 form (`exact_high`) two sign extensions, two 64-bit multiplies and two truncations
    with lane shuffles (vpmovsxdq, vpmullq, vpmovqd, vinserti64x4, vextracti64x4) per 16
    outputs; this is 8 instructions. A tensor intrinsic (`intrin`): x86 has no such LLVM
    intrinsic to call lane by lane, but LLVM selects `vpmuldq` for a 64-bit multiply of
    sign-extended 32-bit halves. The int64 form is its description, the same arithmetic bit for
    bit; where a schedule does not tensorize the block, it is that expression."""

    name: str
    features: tuple[str, ...]
    lanes: int

    @property
    def intrin(self) -> str:
        return f"qatie_even_odd_high_{self.name}"

    def register(self) -> None:
        TensorIntrin.register(self.intrin, self._function(_exact_high_body(self.lanes)),
                              self._function(self._even_odd_body), override=True)

    def _function(self, body) -> tirx.PrimFunc:
        """`H[lanes] = body(A: accumulators, B: bias, M: multipliers)`, all int32, as a PrimFunc
        (TVMScript's builder, as `dot_products._intrinsic`)."""
        with IRBuilder() as builder, T.prim_func(s_tir=True):
            T.func_name(self.intrin)
            a, b, m, h = (T.arg(n, T.buffer((self.lanes,), "int32", offset_factor=1)) for n in "ABMH")
            with T.sblock("root"):
                T.reads(a[0:self.lanes], b[0:self.lanes], m[0:self.lanes])
                T.writes(h[0:self.lanes])
                body(a, b, m, h)
        return builder.get()

    def _even_odd_body(self, a, b, m, h) -> None:
        wide = self.lanes // 2

        def q(value: int):
            return T.broadcast(T.int64(value), wide)

        x = T.reinterpret(a.vload([0], f"int32x{self.lanes}") + b.vload([0], f"int32x{self.lanes}"), dtype=f"int64x{wide}")
        y = T.reinterpret(m.vload([0], f"int32x{self.lanes}"), dtype=f"int64x{wide}")
        even = ((x << q(32)) >> q(32)) * ((y << q(32)) >> q(32))  # the low halves, sign-extended
        odd = (x >> q(32)) * (y >> q(32))
        low = (even + q(1 << 30)) >> q(31)  # the result in the low 32 bits
        high = (odd + q(1 << 30)) << q(1)  # in the high 32 bits
        both = T.bitwise_or(T.bitwise_and(high, q(-(1 << 32))), T.bitwise_and(low, q(0xFFFFFFFF)))
        T.buffer_store(h, T.reinterpret(both, dtype=f"int32x{self.lanes}"), [T.ramp(T.int32(0), 1, self.lanes)])


def exact_high(x: tirx.PrimExpr, multiplier: tirx.PrimExpr) -> tirx.PrimExpr:
    """`(x * M + 2^30) >> 31` of int32 `x` and `multiplier` on int64, as int32."""
    product = tirx.Cast("int64", x) * tirx.Cast("int64", multiplier) + tirx.const(1 << 30, "int64")
    return tirx.Cast("int32", product >> tirx.const(31, "int64"))


def _exact_high_body(lanes: int):
    def body(a, b, m, h) -> None:
        with T.serial(0, lanes) as i, T.sblock(EVEN_ODD_BLOCK):
            vi = T.axis.remap("S", [i])
            T.buffer_store(h, exact_high(a[vi] + b[vi], m[vi]), [vi])

    return body


# 16 lanes for the 16-lane dot products (vnni, avx512bw-*), 8 for the 8-lane ones (vnni-ymm, avx2-*)
EVEN_ODD_HIGH_MULTIPLIES = (EvenOddHighMultiply("avx512", ("avx512f",), 16), EvenOddHighMultiply("avx2", ("avx2",), 8))
for _even_odd in EVEN_ODD_HIGH_MULTIPLIES:
    _even_odd.register()  # on import: schedules and tuned traces name it, in every process


def even_odd_for(target: tvm.target.Target, lanes: int) -> EvenOddHighMultiply | None:
    """The target's even/odd high multiply for a packed conv of `lanes` channel lanes, or None."""
    return next((e for e in EVEN_ODD_HIGH_MULTIPLIES if e.lanes == lanes and cpu_has(target, e.features)), None)


def even_odd_of_lanes(lanes: int) -> EvenOddHighMultiply:
    """The even/odd high multiply of a packed conv's `lanes` (a schedule finds its block)."""
    return next(e for e in EVEN_ODD_HIGH_MULTIPLIES if e.lanes == lanes)


def even_odd_te(biased: te.Tensor, multiplier: te.Tensor) -> te.Tensor:
    """The high multiply of a packed conv's biased int32 accumulators (`multiplier` per channel
    block lane, broadcast like them): with the bias add inlined into it (`schedules`), the block
    that `EvenOddHighMultiply.intrin` tensorizes."""
    return _lanewise(biased, multiplier, exact_high, EVEN_ODD_BLOCK)


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
