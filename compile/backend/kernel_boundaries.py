"""Int8 codes between kernels: what a fused kernel reads from the one before it.

TVM's FuseOps fuses an elementwise op into its consumer only when it has one consumer, and
never fuses across an op whose TIR it cannot prove injective. After QDQ folding that left two
kinds of wide tensors between the kernels of the QATIE net (c=32, 256x256, znver3):

- a `dequantize` with two consumers (a gate's tanh output feeds the gate multiply and a skip
  concat) ran as a kernel of its own and wrote float32 (4x the bytes of its int8 input), which
  both consumers then read; the same for the int32 codes minus zero point that InstanceNorm's
  two integer sums read;
- a table lookup (`take` from the 256-entry table `LookupTable` folds tanh into, or from a
  per-channel table a TFLite import computes at run time) is a gather, which TVM's pattern
  analysis calls opaque: its int32 index was computed by a kernel of its own and written out,
  and its output dequantized by another.

Two passes, run before legalization (`compile.backend.schedules.fuse_kernels`), remove both:
`per_consumer` gives each consumer of such a cheap elementwise op its own copy, so each fuses
into its consumer and only the int8 codes are read; `injective_tables` writes a lookup from a
1-D table as a kernel marked injective (it is: output element i depends only on index
element i), so its index computation and its consumers fuse with it.
"""

from __future__ import annotations

import tvm
from tvm import relax, tirx
from tvm.relax.dpl import is_op, wildcard
from tvm.relax.expr_functor import PyExprMutator, mutator

from compile.backend import table_lookup
from compile.backend.call_te import Emitted, call_te, rewrite_module

INJECTIVE = 2  # TVM's OpPatternKind::kInjective, the "op_pattern" FuseOps reads
# OpPatternKind::kCommReduce: FuseOps fuses elementwise and injective producers into such a
# kernel, and only elementwise consumers after it (a copy labelled so ends a kernel before a resize)
COMM_REDUCE = 3
# Relax ops computed once per consumer: a dequantize, a widening cast, arithmetic with a
# constant (the zero-point shift of codes before InstanceNorm's integer sums)
DUPLICATED_OPS = ("relax.dequantize",)
WITH_CONSTANT_OPS = ("relax.add", "relax.subtract", "relax.multiply")


def _bits(tensor: relax.Expr) -> int:
    return tvm.DataType(str(tensor.ty.dtype)).bits


def _duplicated(value: relax.Expr) -> bool:
    """Whether a binding's value is cheap enough to compute once per consumer."""
    if not isinstance(value, relax.Call) or not isinstance(value.op, tvm.ir.Op):
        return False
    if value.op.name in WITH_CONSTANT_OPS:
        return sum(not isinstance(arg, tvm.ir.expr.Constant) for arg in value.args) == 1
    if value.op.name == "relax.astype":
        # a widening cast, copied, lets each consumer read the narrow input; a narrowing one
        # (an integer re-quantize's final int32 -> int8) would make its producer write the wide one
        return _bits(value) >= _bits(value.args[0])
    return value.op.name in DUPLICATED_OPS


@mutator
class _PerConsumer(PyExprMutator):
    """Within each dataflow block: a duplicable binding with more than one use is dropped, and
    every use emits its own copy right before the binding that uses it."""

    def __init__(self, mod: tvm.IRModule) -> None:
        super().__init__(mod)
        self.shared: dict[relax.Var, relax.Call] = {}
        self.copied = False

    def visit_dataflow_block_(self, block: relax.DataflowBlock) -> relax.DataflowBlock:
        users = relax.analysis.udchain(block)
        self.shared = {b.var: b.value for b in block.bindings
                       if isinstance(b.var, relax.DataflowVar) and len(users.get(b.var, [])) > 1
                       and _duplicated(b.value)}
        self.copied |= bool(self.shared)
        return super().visit_dataflow_block_(block)

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        if binding.var not in self.shared:
            super().visit_var_binding_(binding)

    def visit_dataflow_var_(self, var: relax.DataflowVar) -> relax.Expr:
        value = self.shared.get(var)
        if value is None:
            return super().visit_dataflow_var_(var)
        args = [self.visit_expr(arg) for arg in value.args]
        return self.builder_.emit(relax.Call(value.op, args, value.attrs, value.ty_args))


def per_consumer() -> tvm.transform.Pass:
    @tvm.transform.module_pass(opt_level=0, name="QatiePerConsumer")
    def _pass(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        for gvar, func in list(mod.functions.items()):
            if isinstance(func, relax.Function):
                # to a fixed point: copying a subtract gives its cast input one use per copy
                while True:
                    mutator_ = _PerConsumer(mod)
                    func = mutator_.visit_expr(func)
                    if not mutator_.copied:
                        break
                mod[gvar] = func
        return mod

    return _pass


LOOKUP_BLOCK = "lookup"  # the name of a lookup's block (schedules find lookups by it)


def _lookup(table: tvm.te.Tensor, index: tvm.te.Tensor) -> tvm.te.Tensor:
    """`take(table, index, mode="clip")` for a 1-D table, elementwise in `index`."""
    last = int(table.shape[0]) - 1
    return tvm.te.compute(index.shape, lambda *i: table[tirx.max(tirx.min(index(*i), last), 0)], name=LOOKUP_BLOCK)


def injective_tables(target: tvm.target.Target) -> tvm.transform.Pass:
    """The pass; a 256-entry table of bytes is looked up with the target's vector permutes
    where it has them (`compile.backend.table_lookup`), other tables by `_lookup`."""
    index, table = wildcard(), wildcard()
    pattern = is_op("relax.take")(table, index)
    vector_lookups = table_lookup.for_target(target)

    def lookup(values: tvm.te.Tensor, at: tvm.te.Tensor) -> tvm.te.Tensor:
        found = table_lookup.fitting(vector_lookups, values, at)
        return _lookup(values, at) if found is None else table_lookup.vector_lookup_te(values, at, found)

    def rewrite(builder: relax.BlockBuilder, call: relax.Call, match: dict) -> relax.Expr:
        lut, idx = match[table], match[index]
        if (not isinstance(lut.ty, relax.TensorType) or len(lut.ty.shape) != 1 or int(call.attrs.axis or 0) != 0
                or call.attrs.mode != "clip"):
            return call
        values = Emitted(lut, [int(lut.ty.shape[0])], str(lut.ty.dtype))
        if not isinstance(lut, tvm.ir.expr.Constant):
            # a table computed at run time ends its own kernel (a reduction to FuseOps): fused into
            # the injective lookup, it would be computed again for every element looked up
            values = call_te(builder, "table", lambda t: tvm.te.compute(t.shape, lambda i: t[i], name="table"),
                             [values], op_pattern=COMM_REDUCE)
        inputs = [values, Emitted(idx, [int(d) for d in idx.ty.shape], str(idx.ty.dtype))]
        return call_te(builder, "lookup", lookup, inputs, op_pattern=INJECTIVE).expr

    @tvm.transform.module_pass(opt_level=0, name="QatieInjectiveTables")
    def _pass(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        return rewrite_module(mod, pattern, rewrite)

    return _pass
