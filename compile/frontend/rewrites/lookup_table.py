"""Q(f(DQ(x))) for an elementwise f of one int8 tensor: a 256-entry table of output codes.

The table is computed here with numpy's float32 tanh/sigmoid and round-half-to-even, i.e. the
ONNX definition evaluated exactly once per input code, instead of TVM's approximate float tanh
at run time, whose last-bit differences flip rounding bins (this is how TFLite runs int8 tanh
too).
"""

from __future__ import annotations

import functools
import operator

import numpy as np
from tvm import relax
from tvm.relax.dpl import is_const, is_op, wildcard

from compile.frontend.rewrite import INT8_TYPES, FoldLog, Rewrite, constant


class LookupTable(Rewrite):
    """An elementwise function between a per-tensor DQ and Q as `take` from a table of codes."""

    name = "lookup-table"
    # Relax op -> its ONNX definition in numpy float32; adding an entry adds a table rewrite.
    FUNCTIONS = {"relax.tanh": np.tanh, "relax.sigmoid": lambda v: 1.0 / (1.0 + np.exp(-v))}

    def __init__(self) -> None:
        self.x, self.s_x, self.z_x = wildcard(), is_const(), is_const()
        dq = is_op("relax.dequantize")(self.x, self.s_x, self.z_x)
        self.func = functools.reduce(operator.or_, (is_op(name)(dq) for name in self.FUNCTIONS))
        self.s_y, self.z_y = is_const(), is_const()
        self.root = is_op("relax.quantize")(self.func, self.s_y, self.z_y)

    def rewrite(self, call: relax.Call, match: dict, log: FoldLog) -> relax.Expr:
        x = match[self.x]
        in_dtype, out_dtype = str(x.ty.dtype), str(call.attrs.out_dtype)
        scalars = [constant(match[k]) for k in (self.s_x, self.z_x, self.s_y, self.z_y)]
        if in_dtype not in INT8_TYPES or out_dtype not in INT8_TYPES:
            log.skip(self.name, f"{in_dtype} -> {out_dtype} (a table needs 8-bit codes on both sides)")
            return call
        if any(v.size != 1 for v in scalars):
            log.skip(self.name, "per-channel Q/DQ parameters")
            return call
        s_x, z_x, s_y, z_y = (v.reshape(-1)[0] for v in scalars)
        info = np.iinfo(in_dtype)
        codes = np.arange(info.min, info.max + 1)
        real = ((codes.astype(np.float32) - np.float32(z_x)) * np.float32(s_x)).astype(np.float32)
        value = self.FUNCTIONS[match[self.func].op.name](real).astype(np.float32)
        out_info = np.iinfo(out_dtype)
        table = np.clip(np.round(value / np.float32(s_y)) + np.float32(z_y), out_info.min, out_info.max)
        index = relax.op.subtract(relax.op.astype(x, "int32"), relax.const(int(info.min), "int32"))
        log.apply(self.name)
        return relax.op.take(relax.const(table.astype(out_dtype), out_dtype), index, axis=0, mode="clip")
