"""Int64 elementwise arithmetic computed on int32 wherever every value provably fits in int32.

The TFLite import writes each requantize on int64 (`compile.frontend.tflite.fixed_point`): its
product `x * M` needs up to 62 bits. What follows the product's rounding shift (the rounding
divide, the input rescales of an ADD, the zero point, the clamp) has int32 values, as in the
kernels TFLite runs, but stays int64 on the graph: on NEON an int64 vector holds two lanes (an
int32 one four), on AVX-512 eight (sixteen), and NEON has no int64 compare, min or max.

The pass follows each dataflow block in order with an interval per integer tensor (`Ranges`:
8-bit and 32-bit sources, constants, and interval arithmetic through the elementwise ops); an
int64 op whose operands and result all lie in int32 is computed on int32 and widened back, so
an int32 chain is what consumers see, and the widenings nobody reads are removed. Int32
arithmetic on values that fit is the int64 arithmetic, bit for bit: exact by construction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from compile.frontend.tflite.fixed_point import INT32_MAX, INT32_MIN


@dataclass(frozen=True)
class Interval:
    low: int
    high: int

    def fits_int32(self) -> bool:
        return INT32_MIN <= self.low and self.high <= INT32_MAX


def _corners(op, a: Interval, b: Interval) -> Interval:
    values = [op(x, y) for x in (a.low, a.high) for y in (b.low, b.high)]
    return Interval(min(values), max(values))


def _bitwise_and(a: Interval, b: Interval) -> Interval:
    """Bounds of x & y: in [0, y] for y >= 0 (and x >= 0 likewise); with both possibly negative,
    at least -2^k where both are (every bit from k up set in both), at most the larger."""
    if b.low >= 0:
        return Interval(0, b.high if a.low < 0 else min(a.high, b.high))
    if a.low >= 0:
        return Interval(0, a.high)
    bits = max((-a.low - 1).bit_length(), (-b.low - 1).bit_length())
    return Interval(-(1 << bits), max(a.high, b.high, 0))


def _right_shift(a: Interval, b: Interval) -> Interval | None:
    if b.low < 0 or b.high > 63:
        return None
    return _corners(lambda x, s: x >> s, a, b)


# Relax op -> the interval of its result from its two operands' (None: unknown)
BINARY = {
    "relax.add": lambda a, b: _corners(lambda x, y: x + y, a, b),
    "relax.subtract": lambda a, b: _corners(lambda x, y: x - y, a, b),
    "relax.multiply": lambda a, b: _corners(lambda x, y: x * y, a, b),
    "relax.minimum": lambda a, b: Interval(min(a.low, b.low), min(a.high, b.high)),
    "relax.maximum": lambda a, b: Interval(max(a.low, b.low), max(a.high, b.high)),
    "relax.right_shift": _right_shift,
    "relax.bitwise_and": _bitwise_and,
}
SOURCE_TYPES = ("int8", "uint8", "int16", "uint16", "int32")


def _dtype_interval(dtype: str) -> Interval | None:
    if dtype not in SOURCE_TYPES:
        return None
    info = np.iinfo(dtype)
    return Interval(int(info.min), int(info.max))


def _dtype(expr: relax.Expr) -> str | None:
    ty = getattr(expr, "ty", None)
    return str(ty.dtype) if isinstance(ty, relax.TensorType) else None


class Ranges:
    """The interval of each integer value of a function, as its bindings are visited in order."""

    def __init__(self) -> None:
        self.known: dict[relax.Var, Interval] = {}

    def of(self, expr: relax.Expr) -> Interval | None:
        dtype = _dtype(expr)
        if dtype is not None and not dtype.startswith(("int", "uint")):
            return None
        if isinstance(expr, relax.Var):
            return self.known.get(expr) or _dtype_interval(_dtype(expr))
        if isinstance(expr, tvm.tirx.IntImm):  # a clip's bounds
            return Interval(int(expr), int(expr))
        if isinstance(expr, tvm.ir.expr.Constant):
            values = expr.value.numpy()
            if values.dtype.kind not in "iu" or values.size == 0:
                return None
            return Interval(int(values.min()), int(values.max()))
        if not isinstance(expr, relax.Call) or not isinstance(expr.op, tvm.ir.Op):
            return _dtype_interval(_dtype(expr))
        name = expr.op.name
        if name == "relax.astype":
            source = self.of(expr.args[0])
            target = _dtype_interval(str(expr.attrs.dtype)) if str(expr.attrs.dtype) != "int64" else None
            if source is None or (target is not None and not target.low <= source.low <= source.high <= target.high):
                return target  # a narrowing cast wraps: any value of the type
            return source
        if name == "relax.clip":
            value, low, high = (self.of(a) for a in expr.args)
            if value is None or low is None or high is None:
                return None
            return Interval(min(max(value.low, low.low), high.high), max(min(value.high, high.high), low.low))
        if name in BINARY and len(expr.args) == 2:
            a, b = (self.of(arg) for arg in expr.args)
            return None if a is None or b is None else BINARY[name](a, b)
        return _dtype_interval(_dtype(expr))


NARROWED = (*BINARY, "relax.clip")


def narrowable(func: relax.Function) -> set[relax.Var]:
    """The int64 bindings of `func` that an int32 op computes exactly: an op of `NARROWED` (or a
    widening of an int32-or-narrower value) whose operands and result all lie in int32."""
    ranges, found = Ranges(), set()
    for block in func.body.blocks:
        for binding in block.bindings:
            value, interval = binding.value, ranges.of(binding.value)
            if interval is None:
                continue
            ranges.known[binding.var] = interval
            if (_dtype(value) != "int64" or not interval.fits_int32() or not isinstance(value, relax.Call)
                    or not isinstance(value.op, tvm.ir.Op)):
                continue
            if value.op.name == "relax.astype":
                if _dtype(value.args[0]) in SOURCE_TYPES:
                    found.add(binding.var)
            elif value.op.name in NARROWED and all(
                    isinstance(arg, tvm.tirx.IntImm) or (ranges.of(arg) or Interval(0, 2**63)).fits_int32()
                    for arg in value.args):
                found.add(binding.var)
    return found


@mutator
class _Narrow(PyExprMutator):
    """Each narrowable binding computed on int32 (its operands' int32 forms) and widened back
    for whoever reads it as int64; a cast of it to a narrower type reads the int32 form."""

    def __init__(self, mod: tvm.IRModule, narrow: set[relax.Var]) -> None:
        super().__init__(mod)
        self.narrow = narrow
        self.int32: dict[relax.Var, relax.Var] = {}  # narrowable var -> its int32 form

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        if binding.var not in self.narrow:
            super().visit_var_binding_(binding)
            return
        value = binding.value
        if value.op.name == "relax.astype":
            narrow = relax.op.astype(self.visit_expr(value.args[0]), "int32")
        else:
            args = [self._int32_arg(arg) for arg in value.args]
            if value.op.name == "relax.right_shift" and isinstance(args[1], tvm.ir.expr.Constant):
                # a value that fits int32 shifted by 31 or more is its sign either way (int32 allows < 32)
                args[1] = relax.const(np.minimum(args[1].value.numpy(), 31), "int32")
            narrow = relax.Call(value.op, args, value.attrs, value.ty_args)
        self.int32[binding.var] = self.builder_.emit(narrow)
        self.set_var_remap(binding.var, self.builder_.emit(relax.op.astype(self.int32[binding.var], "int64")))

    def _int32_arg(self, arg: relax.Expr) -> relax.Expr:
        if isinstance(arg, tvm.tirx.IntImm):
            return arg
        if isinstance(arg, tvm.ir.expr.Constant):
            return relax.const(arg.value.numpy().astype(np.int32), "int32")
        if arg in self.int32:
            return self.int32[arg]
        return relax.op.astype(self.visit_expr(arg), "int32")

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        if (isinstance(call.op, tvm.ir.Op) and call.op.name == "relax.astype" and call.args[0] in self.int32
                and str(call.attrs.dtype) in SOURCE_TYPES):
            narrow = self.int32[call.args[0]]
            return narrow if str(call.attrs.dtype) == "int32" else relax.op.astype(narrow, str(call.attrs.dtype))
        return super().visit_call_(call)


def narrow_integers() -> tvm.transform.Pass:
    @tvm.transform.module_pass(opt_level=0, name="QatieNarrowIntegers")
    def _pass(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        for gvar, func in list(mod.functions.items()):
            if isinstance(func, relax.Function):
                mod[gvar] = _Narrow(mod, narrowable(func)).visit_expr(func)
        return relax.transform.DeadCodeElimination()(relax.transform.Normalize()(mod))

    return _pass
