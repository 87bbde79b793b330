"""Count conv multiply-accumulates in a Relax module, split by integer and float arithmetic.

The goal for a QATIE model is 100 % integer: a float conv left after folding means a QDQ
pattern the pass did not recognise, and the report names how many.
"""

from __future__ import annotations

from dataclasses import dataclass

import tvm
from tvm import relax

from compile.qdq_fold import INT8_TYPES


@dataclass
class MacCount:
    integer_convs: int = 0
    float_convs: int = 0
    integer_macs: int = 0
    float_macs: int = 0

    @property
    def integer_fraction(self) -> float:
        total = self.integer_macs + self.float_macs
        return self.integer_macs / total if total else 0.0


def _shape(expr: relax.Expr) -> list[int]:
    return [int(d) for d in expr.ty.shape]


def count_conv_macs(mod: tvm.IRModule) -> MacCount:
    """Visit every conv2d call of every Relax function; MACs = outputs x (C_in / groups) x kh x kw."""
    count = MacCount()

    def visit(expr: relax.Expr) -> None:
        if isinstance(expr, relax.Call) and getattr(expr.op, "name", "") == "relax.nn.conv2d":
            out, weight = _shape(expr), _shape(expr.args[1])
            macs = 1
            for dim in out:
                macs *= dim
            macs *= weight[1] * weight[2] * weight[3]
            if str(expr.args[0].ty.dtype) in INT8_TYPES:
                count.integer_convs += 1
                count.integer_macs += macs
            else:
                count.float_convs += 1
                count.float_macs += macs

    for func in mod.functions.values():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    return count
