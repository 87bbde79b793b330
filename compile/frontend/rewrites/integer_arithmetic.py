"""Sums and products of int8 tensors on integer codes: Q(DQ(a) + DQ(b)), Q(DQ(a) * DQ(b)).

With every scale a power of two (QATIE's), DQ(a) + DQ(b) is (a - z_a) * 2^p_a + (b - z_b) *
2^p_b: an integer V = ((a - z_a) << (p_a - m)) + ((b - z_b) << (p_b - m)) times 2^m, m the
smaller exponent, and float32 adds exactly while |V| < 2^24 (exponents at most
`MAX_ADD_APART` apart). A product is V = (a - z_a)(b - z_b) times 2^(p_a + p_b), at most 2^16.
Either way Q's result is V re-quantized by a power of two (`power_of_two.requantize`), bit for
bit the float definition. QATIE's residual adds and gate products were computed in float:
conversions, multiplies, a round and a clamp per code; on the Cortex-A76 model the c=32
model's five such adds and two products took 2.4 M cycles.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable
from dataclasses import dataclass

from tvm import relax
from tvm.relax.dpl import is_const, is_op, wildcard

from compile.frontend.rewrite import FoldLog, Rewrite
from compile.frontend.rewrites.power_of_two import (
    CODE_BITS,
    FLOAT32_EXACT_BITS,
    centred,
    const,
    exponent,
    requantize,
    working_type,
)

MAX_ADD_APART = FLOAT32_EXACT_BITS - CODE_BITS - 1  # 15: |V| < 2^(9 + apart) <= 2^24


def _sum(p_a: int, p_b: int) -> tuple[int, int] | str:
    """(magnitude bits, exponent) of V for DQ(a) + DQ(b), or why float would not be exact."""
    if abs(p_a - p_b) > MAX_ADD_APART:
        return f"scales 2^{p_a} and 2^{p_b} too far apart for float32 to add exactly"
    return CODE_BITS + 1 + abs(p_a - p_b), min(p_a, p_b)


def _sum_value(a: relax.Call, b: relax.Call, p_a: int, p_b: int, dtype: str) -> relax.Expr:
    low = min(p_a, p_b)
    terms = [centred(x, dtype) if p == low else relax.op.left_shift(centred(x, dtype), const(p - low, dtype))
             for x, p in ((a, p_a), (b, p_b))]
    return relax.op.add(*terms)


def _product(p_a: int, p_b: int) -> tuple[int, int]:
    """(magnitude bits, exponent) of V for DQ(a) * DQ(b)."""
    return 2 * CODE_BITS, p_a + p_b


def _product_value(a: relax.Call, b: relax.Call, p_a: int, p_b: int, dtype: str) -> relax.Expr:
    return relax.op.multiply(centred(a, dtype), centred(b, dtype))


@dataclass(frozen=True)
class Arithmetic:
    """One op: V's size and exponent from the input exponents (or why it stays float), and V."""

    bounds: Callable[[int, int], tuple[int, int] | str]
    value: Callable[[relax.Call, relax.Call, int, int, str], relax.Expr]


OPS = {"relax.add": Arithmetic(_sum, _sum_value), "relax.multiply": Arithmetic(_product, _product_value)}


class IntegerArithmetic(Rewrite):
    """Q(DQ(a) + DQ(b)) and Q(DQ(a) * DQ(b)) with power-of-two scales, on integer codes."""

    name = "integer-arithmetic"

    def __init__(self) -> None:
        self.a, self.b = (is_op("relax.dequantize")(wildcard(), is_const(), is_const()) for _ in range(2))
        self.ops = {name: is_op(name)(self.a, self.b) for name in OPS}
        self.root = is_op("relax.quantize")(functools.reduce(operator.or_, self.ops.values()), is_const(), is_const())

    def rewrite(self, call: relax.Call, match: dict, log: FoldLog) -> relax.Expr:
        a, b = match[self.a], match[self.b]
        op = next(name for name, pattern in self.ops.items() if pattern in match)
        p_a, p_b, p_out = (exponent(x.args[1]) for x in (a, b, call))
        if None in (p_a, p_b, p_out):
            log.skip(self.name, "a scale is no power of two (or not per tensor)")
            return call
        bounds = OPS[op].bounds(p_a, p_b)
        if isinstance(bounds, str):
            log.skip(self.name, bounds)
            return call
        bits, p_value = bounds
        dtype = working_type(bits, p_value - p_out)
        if dtype is None:
            log.skip(self.name, f"re-quantizing by 2^{p_value - p_out} would overflow int32")
            return call
        log.apply(self.name)
        return requantize(OPS[op].value(a, b, p_a, p_b, dtype), p_value - p_out, call, dtype)
