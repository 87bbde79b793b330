"""The QDQ folding pass: every registered rewrite over every Relax function, in order."""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.dpl import rewrite_call

from compile.frontend.rewrite import FoldLog, Rewrite
from compile.frontend.rewrites import REWRITES


def _apply(mod: tvm.IRModule, rewrite: Rewrite, log: FoldLog) -> tvm.IRModule:
    updated = {
        gvar: rewrite_call(rewrite.root, lambda call, match: rewrite.rewrite(call, match, log), func)
        for gvar, func in mod.functions.items()
        if isinstance(func, relax.Function)
    }
    for gvar, func in updated.items():
        mod[gvar] = func
    return mod


def fold_qdq(mod: tvm.IRModule, rewrites: tuple[Rewrite, ...] = REWRITES) -> tuple[tvm.IRModule, FoldLog]:
    """Apply `rewrites` (default: the registry) in order; returns the module and what each did."""
    log = FoldLog()
    for rewrite in rewrites:
        mod = _apply(mod, rewrite, log)
    return relax.transform.DeadCodeElimination()(mod), log


__all__ = ["FoldLog", "fold_qdq"]
