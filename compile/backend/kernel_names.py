"""Fused kernel names short enough to be file names.

TVM's FuseOps names a fused kernel after every op in it (`fused_cast5_subtract5_multiply7_...`):
the paper's TFLite model has kernels named with over 1,200 characters, our ONNX models over 300
once a concat re-quantizes its inputs. Names become file names downstream: PoCL caches each
OpenCL kernel in a folder named after it and cannot write one longer than the file system's 255
bytes ("writing parallel.bc failed", then "Final linking of kernel ... failed"), and phones'
OpenCL drivers cache compiled kernels the same way. A name longer than `MAX_NAME` keeps its
beginning (its first ops, what a reader recognises in a profile) and ends in a hash of the whole
name, so distinct kernels keep distinct names and one kernel has one name in every build.

The renaming runs right after FuseTIR in every pipeline (`after_fusion`), before kernels are
scheduled, tuned, counted for the kernel table or compiled: each of those sees only the short
names. A kernel's tuning workload is its function alone, so the names change no tuning record.
"""

from __future__ import annotations

import hashlib

import tvm
from tvm import relax, tirx

MAX_NAME = 120  # characters; far below 255 with TVM's `_kernel` and PoCL's own additions
HASH_CHARS = 10  # hex digits of the whole name's SHA-256 ending a shortened name
FUSED = "FuseTIR"  # the pass that names fused kernels
PASS_NAME = "ShortKernelNames"


def short_name(name: str) -> str:
    """`name` if at most `MAX_NAME` characters, else its beginning, `_` and a hash of all of it."""
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:HASH_CHARS]
    return f"{name[:MAX_NAME - HASH_CHARS - 1]}_{digest}"


@relax.expr_functor.mutator
class _CallRenamer(relax.PyExprMutator):
    """Points every reference to a renamed kernel at its new GlobalVar."""

    def __init__(self, mod: tvm.IRModule, renamed: dict[tvm.ir.GlobalVar, tvm.ir.GlobalVar]) -> None:
        super().__init__(mod)
        self.renamed = renamed

    def visit_global_var_(self, op: tvm.ir.GlobalVar) -> relax.Expr:
        return self.renamed.get(op, op)


def short_kernel_names() -> tvm.transform.Pass:
    """Rename every kernel (PrimFunc) whose name is longer than `MAX_NAME` to `short_name` of it."""

    @tvm.transform.module_pass(opt_level=0, name=PASS_NAME)
    def _rename(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        long = [gvar for gvar, func in mod.functions.items()
                if isinstance(func, tirx.PrimFunc) and short_name(gvar.name_hint) != gvar.name_hint]
        if not long:
            return mod
        # a GlobalVar a Relax call refers to needs the type of its function: a block builder
        # gives it one (each its own: one builder would hand back an equal function's old name)
        renamed = {gvar: relax.BlockBuilder().add_func(mod[gvar], short_name(gvar.name_hint)) for gvar in long}
        names = [g.name_hint for g in mod.functions if g not in renamed] + [g.name_hint for g in renamed.values()]
        if len(set(names)) != len(names):
            raise RuntimeError(f"shortened kernel names collide: {sorted(names)}")
        mutator = _CallRenamer(mod, renamed)
        functions = {}
        for gvar, func in mod.functions.items():
            if isinstance(func, relax.Function):
                func = mutator.visit_expr(func)
            elif gvar in renamed and func.attrs and "global_symbol" in func.attrs:
                func = func.with_attr("global_symbol", renamed[gvar].name_hint)
            functions[renamed.get(gvar, gvar)] = func
        return tvm.IRModule(functions, attrs=mod.attrs, global_infos=mod.global_infos)

    return _rename


def after_fusion(passes: list[tvm.transform.Pass]) -> list[tvm.transform.Pass]:
    """`passes` with `short_kernel_names` right after their FuseTIR."""
    at = next(i for i, p in enumerate(passes) if p.info.name == FUSED) + 1
    return passes[:at] + [short_kernel_names()] + passes[at:]


def gpu_pipeline(target: tvm.target.Target) -> tvm.transform.Pass:
    """TVM's default Relax pipeline for an OpenCL target (Adreno's where the target says so, as
    `relax.get_default_pipeline` chooses), with kernel names shortened after fusion."""
    backend = relax.backend.adreno if "adreno" in target.keys else relax.backend.gpu_generic

    @tvm.transform.module_pass(opt_level=0)
    def _pipeline(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        with target:
            passes = (backend.library_dispatch_passes(target) + after_fusion(backend.legalize_passes(target))
                      + backend.dataflow_lower_passes(target) + backend.finalize_passes(target))
            return tvm.transform.Sequential(passes)(mod)

    return _pipeline
