"""Chains of integer ops that are functions of one 8-bit code per channel become tables.

A TFLite InstanceNorm is SUB(x, mean), MUL(., gamma), MUL(., rsqrt(var)), ADD(., beta),
LEAKY_RELU: five requantizes per element (a 64-bit multiply and five shifts each), where every
operand but x is per channel. So the chain's output at (n, c, h, w) is a function of x's code
there and of c only: evaluated once per channel on all 256 codes (a [1, C, 1, 256] table,
after the statistics are known, at run time), it is a lookup per element. The table is the
chain itself applied to a grid of codes, so it computes the same integers: exact by
construction. Measured on the paper's model at 100x100 (Zen 5, 1 thread): see docs/performance.md.

`tabulate` finds such chains in the imported function (`Chains`): a value is *coded* by an
8-bit activation x when an elementwise op computes it from x's codes (or from values coded by
the same x), per-channel tensors ([1, C, 1, 1] or scalars, however they are computed) and
constants. An 8-bit coded value made by at least `MIN_OPS` ops is replaced by
`take(table, c * 256 + x - min)`, which the backend's blocked layout keeps blocked like any
elementwise op.
"""

from __future__ import annotations

import math

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

ELEMENTWISE = frozenset({"relax.astype", "relax.add", "relax.subtract", "relax.multiply", "relax.right_shift",
                         "relax.bitwise_and", "relax.clip", "relax.minimum", "relax.maximum", "relax.take"})
MIN_OPS = 6  # two lookups in a row (tanh, then a requantize) become one; a lone lookup stays
# a per-channel table evaluates the chain 256 times per channel: worth it where a channel has
# more pixels than that, with a margin for building it (the paper's model at 100x100: its 12x12
# InstanceNorm stays elementwise, its 25x25 and 50x50 ones become tables)
MIN_PIXELS = 512
CODE_TYPES = ("int8", "uint8")
RESULT_TYPES = (*CODE_TYPES, "float32")  # a chain may end dequantized (the model's output)


def _shape(expr: relax.Expr) -> list[int] | None:
    ty = getattr(expr, "ty", None)
    if not isinstance(ty, relax.TensorType) or ty.shape is None:
        return None
    return [int(d) for d in ty.shape]


def _per_channel(shape: list[int] | None) -> bool:
    return shape is not None and (math.prod(shape) == 1 or (len(shape) == 4 and shape[0] == shape[2] == shape[3] == 1))


class Chains:
    """Which bindings of a function are coded, by which source, through how many ops."""

    def __init__(self, func: relax.Function) -> None:
        self.value: dict[relax.Var, relax.Expr] = {}
        self.source: dict[relax.Var, relax.Var] = {}  # coded var -> its 8-bit activation
        self.ops: dict[relax.Var, int] = {}
        for block in func.body.blocks:
            for binding in block.bindings:
                self._classify(binding.var, binding.value)

    def _classify(self, var: relax.Var, value: relax.Expr) -> None:
        self.value[var] = value
        shape = _shape(var)
        if shape is None or len(shape) != 4 or _per_channel(shape):
            return
        sources = self._coded_sources(value, shape)
        if sources is not None and len(sources) == 1:
            (self.source[var],) = sources
            self.ops[var] = 1 + max(self.ops[a] for a in value.args if a in self.source)
        elif str(var.ty.dtype) in CODE_TYPES:
            self.source[var], self.ops[var] = var, 0  # an activation: the source of its own chains

    def _coded_sources(self, value: relax.Expr, shape: list[int]) -> set[relax.Var] | None:
        """The sources of an elementwise op of coded values (same shape), per-channel values and
        constants; None for anything else."""
        if not isinstance(value, relax.Call) or not isinstance(value.op, tvm.ir.Op) or value.op.name not in ELEMENTWISE:
            return None
        sources = set()
        for k, arg in enumerate(value.args):
            if value.op.name == "relax.take" and k == 0:
                if not isinstance(arg, tvm.ir.expr.Constant) or len(_shape(arg)) != 1:
                    return None
                continue
            if arg in self.source and _shape(arg) == shape:
                sources.add(self.source[arg])
            elif not (isinstance(arg, tvm.ir.expr.Constant) or _per_channel(_shape(arg))):
                return None
        return sources

    def tabulated(self) -> list[relax.Var]:
        """The 8-bit (or dequantized) values worth a table."""
        return [v for v, n in self.ops.items() if n >= MIN_OPS and str(v.ty.dtype) in RESULT_TYPES
                and math.prod(_shape(v)[2:]) >= MIN_PIXELS]


@mutator
class _Tabulate(PyExprMutator):
    def __init__(self, mod: tvm.IRModule, chains: Chains) -> None:
        super().__init__(mod)
        self.chains = chains
        self.targets = set(chains.tabulated())

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        if binding.var not in self.targets:
            super().visit_var_binding_(binding)
            return
        source = self.chains.source[binding.var]
        dtype = str(source.ty.dtype)
        low = int(np.iinfo(dtype).min)
        grid = relax.const(np.arange(low, low + 256, dtype=dtype).reshape(1, 1, 1, 256), dtype)
        table = self.builder_.emit(self._rebuild(binding.var, source, grid, {}))
        channels = _shape(table)[1]
        flat = self.builder_.emit(relax.op.reshape(table, (channels * 256,)))
        start = (np.arange(channels, dtype=np.int32) * 256 - low).reshape(1, channels, 1, 1)
        index = relax.op.add(relax.op.astype(self.visit_expr(source), "int32"), relax.const(start, "int32"))
        self.set_var_remap(binding.var, self.builder_.emit(relax.op.take(flat, index, axis=0, mode="clip")))

    def _rebuild(self, expr: relax.Expr, source: relax.Var, grid: relax.Expr, done: dict) -> relax.Expr:
        """The chain that made `expr`, on `grid` in place of `source`."""
        if not isinstance(expr, relax.Var):
            return self.visit_expr(expr)  # a constant
        if expr.same_as(source):
            return grid
        origin = self.chains.source.get(expr)
        if origin is None or not origin.same_as(source):
            return self.visit_expr(expr)  # a per-channel value, as the function now computes it
        if expr not in done:
            value = self.chains.value[expr]
            args = [self._rebuild(a, source, grid, done) for a in value.args]
            done[expr] = self.builder_.emit(relax.Call(value.op, args, value.attrs, value.ty_args))
        return done[expr]


def tabulate(mod: tvm.IRModule) -> tvm.IRModule:
    """Every worthwhile coded chain of `main` as a per-channel table lookup."""
    chains = Chains(mod["main"])
    if not chains.tabulated():
        return mod
    mod["main"] = _Tabulate(mod, chains).visit_expr(mod["main"])
    return relax.transform.DeadCodeElimination()(mod)
