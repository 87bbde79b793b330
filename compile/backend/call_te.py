"""Relax pattern rewrites whose replacements call kernels of their own, written in TE.

The backend's Relax rewrites (`packed_conv`, `kernel_boundaries`) replace matched calls with
such kernels: `rewrite_module` runs one over a module with a BlockBuilder that collects the
new PrimFuncs, and `call_te` emits one. Expressions made inside a pattern rewrite have no struct
info yet, which `BlockBuilder.call_te` needs, so each input travels with its shape and dtype.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import tvm
from tvm import relax, te
from tvm.relax.dpl import rewrite_call


@dataclass(frozen=True)
class Emitted:
    """A Relax expression and its tensor type."""

    expr: relax.Expr
    shape: list[int]
    dtype: str


def call_te(builder: relax.BlockBuilder, name: str, compute, inputs: list[Emitted], **attrs) -> Emitted:
    """`call_tir` of the PrimFunc that the TE function `compute` builds over `inputs`, with
    `attrs` on the PrimFunc."""
    placeholders = [te.placeholder(i.shape, i.dtype, f"arg{k}") for k, i in enumerate(inputs)]
    out = compute(*placeholders)
    func = te.create_prim_func([*placeholders, out], index_dtype_override="int64")  # Relax shapes are int64
    for key, value in attrs.items():
        func = func.with_attr(key, value)
    gvar = builder.add_func(func.without_attr("global_symbol"), name)
    shape = [int(d) for d in out.shape]
    return Emitted(relax.call_tir(gvar, [i.expr for i in inputs], relax.TensorType(shape, str(out.dtype))),
                   shape, str(out.dtype))


def rewrite_module(mod: tvm.IRModule, pattern, rewrite) -> tvm.IRModule:
    """`rewrite(builder, call, match)` applied to every match of `pattern` in every Relax
    function of `mod`; `builder` collects the PrimFuncs the replacements call."""
    builder = relax.BlockBuilder(mod)
    rewritten = {gvar: rewrite_call(pattern, functools.partial(rewrite, builder), func)
                 for gvar, func in mod.functions.items() if isinstance(func, relax.Function)}
    mod = builder.finalize()
    for gvar, func in rewritten.items():
        mod[gvar] = func
    return relax.transform.Normalize()(mod)
