"""What a folded Relax module computes in integer arithmetic: every op on integer tensors, and
the conv multiply-accumulates split into integer and float.

The goal for a QATIE model is 100 % integer convs: a float conv left after folding means a QDQ
pattern no rewrite recognised, and the fold log names why. Everything else a model does between
a `dequantize` and a `quantize` stays float by design (InstanceNorm, the gate multiply, ...);
those boundaries are counted too, so a report shows how many float islands remain.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import tvm
from tvm import relax

from compile.frontend.rewrite import INT8_TYPES

INTEGER_TYPES = (*INT8_TYPES, "int32", "int64")  # int64: TFLite's requantize multiplies
BOUNDARY_OPS = ("relax.quantize", "relax.dequantize")


@dataclass
class IntegerOps:
    """Counts over every Relax function of a module."""

    integer_convs: int = 0
    float_convs: int = 0
    integer_macs: int = 0
    float_macs: int = 0
    ops: Counter = field(default_factory=Counter)  # op name -> calls whose tensors are all integer
    boundaries: Counter = field(default_factory=Counter)  # quantize / dequantize calls

    @property
    def integer_fraction(self) -> float:
        total = self.integer_macs + self.float_macs
        return self.integer_macs / total if total else 0.0


def _dtype(expr: relax.Expr) -> str | None:
    ty = getattr(expr, "ty", None)
    return str(ty.dtype) if isinstance(ty, relax.TensorType) else None


def _conv_macs(call: relax.Call) -> int:
    """outputs x (C_in / groups) x kh x kw."""
    out = [int(d) for d in call.ty.shape]
    weight = [int(d) for d in call.args[1].ty.shape]
    return math.prod(out) * weight[1] * weight[2] * weight[3]


def integer_ops(mod: tvm.IRModule) -> IntegerOps:
    """Visit every call of every Relax function."""
    count = IntegerOps()

    def visit(expr: relax.Expr) -> None:
        if not isinstance(expr, relax.Call) or not isinstance(expr.op, tvm.ir.Op):
            return
        name = expr.op.name
        if name in BOUNDARY_OPS:
            count.boundaries[name] += 1
            return
        tensors = [_dtype(expr)] + [_dtype(a) for a in expr.args]
        tensors += [_dtype(f) for a in expr.args if isinstance(a, relax.Tuple) for f in a.fields]
        tensors = [t for t in tensors if t is not None]
        integer = bool(tensors) and all(t in INTEGER_TYPES for t in tensors)
        if integer:
            count.ops[name] += 1
        if name == "relax.nn.conv2d":
            if _dtype(expr.args[0]) in INT8_TYPES:
                count.integer_convs += 1
                count.integer_macs += _conv_macs(expr)
            else:
                count.float_convs += 1
                count.float_macs += _conv_macs(expr)

    for func in mod.functions.values():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    return count
