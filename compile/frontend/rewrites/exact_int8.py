"""Ops that are exact on int8 codes: Q(OP(DQ(x))) becomes OP(x).

Max-pool and nearest resize only select values, and DQ is monotone, so OP(x_q) is exactly
Q(OP(DQ(x_q))); likewise a concat of tensors that share their Q/DQ parameters, and a
Q(DQ(x)) pair that re-quantizes with the same parameters is x itself.

Where a concat's input (or a Q(DQ(x)) pair) has another scale, it and the output's both powers
of two (QATIE's are), its re-quantize is integer arithmetic on the codes, equal to the float one
bit for bit (`power_of_two.requantize`). In float the same op is a conversion, a multiply, a
round, a clamp and a conversion back per code: on the Cortex-A76 model a concat of four
32-channel tensors at 50x50 took 2.2 M cycles, the c=32 model's largest kernel besides its convs.
"""

from __future__ import annotations

import functools
import operator

import numpy as np
from tvm import relax
from tvm.relax.dpl import is_const, is_op, is_tuple, wildcard

from compile.frontend.rewrite import FoldLog, Rewrite, constant
from compile.frontend.rewrites.power_of_two import CODE_BITS, centred, exponent, requantize, working_type


def _requantized(dq: relax.Call, q: relax.Call) -> relax.Expr | None:
    """DQ's codes re-quantized to Q's parameters on integer codes (`power_of_two.requantize`),
    where both scales are powers of two and the shift between them fits int32, else None."""
    p_in, p_out = exponent(dq.args[1]), exponent(q.args[1])
    dtype = None if p_in is None or p_out is None else working_type(CODE_BITS, p_in - p_out)
    return None if dtype is None else requantize(centred(dq, dtype), p_in - p_out, q, dtype)


def _same_qparams(dq: relax.Call, q: relax.Call) -> bool:
    """DQ and Q use the same per-tensor scale, zero point and integer type."""
    if str(dq.args[0].ty.dtype) != str(q.attrs.out_dtype):
        return False
    pairs = ((dq.args[1], q.args[1]), (dq.args[2], q.args[2]))
    return all(constant(a).size == 1 and np.array_equal(constant(a).reshape(-1), constant(b).reshape(-1))
               for a, b in pairs)


class ExactInt8(Rewrite):
    """Max-pool, nearest resize, concat (up to MAX_CONCAT inputs) and Q(DQ(x)) on int8 codes."""

    name = "exact-int8"
    MAX_CONCAT = 4
    # Ops that only select input values (so commute with a monotone DQ): op -> (number of
    # non-tensor arguments after the input, when the call is exact).
    SELECTING_OPS = {
        "relax.nn.max_pool2d": (0, lambda attrs: True),
        "relax.image.resize2d": (1, lambda attrs: attrs.method == "nearest_neighbor"),
    }

    def __init__(self) -> None:
        self.dequants = [is_op("relax.dequantize")(wildcard(), is_const(), is_const()) for _ in range(self.MAX_CONCAT)]
        first = self.dequants[0]
        self.selecting = [is_op(name)(first, *(wildcard() for _ in range(extra)))
                          for name, (extra, _) in self.SELECTING_OPS.items()]
        self.concats = [is_op("relax.concat")(is_tuple(self.dequants[:n])) for n in range(2, self.MAX_CONCAT + 1)]
        inner = functools.reduce(operator.or_, [*self.selecting, first, *self.concats])
        self.root = is_op("relax.quantize")(inner, is_const(), is_const())

    def rewrite(self, call: relax.Call, match: dict, log: FoldLog) -> relax.Expr:
        dequants = [match[d] for d in self.dequants if d in match]
        op_call = next((match[op] for op in self.selecting if op in match), None)
        if all(_same_qparams(dq, call) for dq in dequants):
            codes = [dq.args[0] for dq in dequants]
        else:
            codes = [_requantized(dq, call) for dq in dequants]  # a max-pool or resize between them stays float
            if op_call is not None or None in codes:
                log.skip(self.name, "inputs and output have different Q/DQ parameters")
                return call
        concat = next((match[c] for c in self.concats if c in match), None)
        if concat is not None:
            log.apply(self.name)
            return relax.op.concat(codes, axis=int(concat.attrs.axis))
        if op_call is None:
            log.apply(self.name)
            return codes[0]  # Q(DQ(x)): x itself with the same parameters, else its integer re-quantize
        _, exact = self.SELECTING_OPS[op_call.op.name]
        if not exact(op_call.attrs):
            log.skip(self.name, f"{op_call.op.name} with these attributes interpolates (not exact on codes)")
            return call
        log.apply(self.name)
        return relax.Call(op_call.op, [codes[0], *op_call.args[1:]], op_call.attrs)
