"""Default CPU schedules for untuned kernels, as dlight rules, plus the CPU Relax pipeline.

TVM 0.27's CPU pipeline legalizes and fuses but schedules nothing: every kernel is a naive
loop nest. These rules give each fused kernel a reasonable schedule without tuning; tuning
records (MetaSchedule) replace them where they exist.

- `DirectConv`: a conv reduction with its elementwise neighbours inlined where TVM allows;
  a tile of W outputs innermost (unrolled for LLVM's vectorizer), output channels and rows in
  parallel; the requantize epilogue as its own parallel, vectorized loop.
- `Elementwise`: any other kernel: producers inlined, the last block's loops fused, split into
  a parallel outer loop and a vectorized inner one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import tvm
from tvm import relax, s_tir, tirx
from tvm.relax.backend.cpu_generic.pipeline import (
    dataflow_lower_passes,
    finalize_passes,
    legalize_passes,
    library_dispatch_passes,
)
from tvm.s_tir import dlight as dl
from tvm.s_tir.dlight.analysis import normalize_prim_func
from tvm.s_tir.dlight.base import try_inline
from tvm.s_tir.dlight.cpu.base import CPUScheduleRule

from compile.backend.targets import target_kind

VECTOR_LANES = (16, 8, 4, 2)
CONV_KINDS = re.compile(r"^S{3,4}R{1,3}$")
PARALLEL_GRAIN = 64


def _divisor(extent: int) -> int:
    return next((lanes for lanes in VECTOR_LANES if extent % lanes == 0), 1)


def _extent(sch: s_tir.Schedule, loop) -> int | None:
    value = sch.get(loop).extent
    return int(value) if isinstance(value, tirx.IntImm) else None


def _normalized(rule: CPUScheduleRule, func, target):
    """(schedule, block infos) for a PrimFunc this rule may schedule, else None."""
    if not isinstance(func, tirx.PrimFunc) or not rule.is_target_available(target):
        return None
    sch = s_tir.Schedule(func)
    infos = normalize_prim_func(sch)
    return None if infos is None else (sch, infos)


class DirectConv(CPUScheduleRule):
    """NCHW conv2d (spatial n, f, y, x; reduction c, ky, kx) with inlined neighbours."""

    def apply(self, func: tirx.PrimFunc, target, _tunable: bool):
        normalized = _normalized(self, func, target)
        if normalized is None:
            return None
        sch, infos = normalized
        reductions = [b for b in infos if not b.is_injective()]
        kinds = reductions[0].dom_kind() if len(reductions) == 1 else ""
        # unit loops are dropped by normalization: batch 1 -> SSS..., a 1x1 kernel -> ...R
        if not CONV_KINDS.match(kinds):
            return None
        conv = reductions[0].block_rv
        remaining = try_inline(sch, [b for b in infos if b.block_rv != conv])
        if len(remaining) > 1:
            return None
        loops = sch.get_loops(conv)
        spatial = kinds.count("S")
        *rows, x = loops[:spatial]
        reduction = loops[spatial:]
        width = _extent(sch, x)
        if width is None:
            return None
        xo, xi = sch.split(x, [None, _divisor(width)])
        sch.reorder(*rows, xo, *reduction, xi)
        outer = sch.fuse(*rows)
        sch.parallel(outer)
        if remaining:
            _parallel_vectorize(sch, remaining[0].block_rv)
        init = sch.decompose_reduction(conv, reduction[0])
        sch.vectorize(sch.get_loops(init)[-1])
        # The update block cannot take `vectorize` once its init is split off (TVM requires a
        # complete or reduction block); unrolled, LLVM's SLP vectorizer packs the lanes.
        sch.unroll(xi)
        return sch


class Elementwise(CPUScheduleRule):
    """Everything else: inline what can be inlined; parallel + vectorize each remaining block."""

    def apply(self, func: tirx.PrimFunc, target, _tunable: bool):
        normalized = _normalized(self, func, target)
        if normalized is None:
            return None
        sch, infos = normalized
        remaining = try_inline(sch, infos[:-1]) + [infos[-1]]
        for info in remaining:
            if info.is_injective():
                _parallel_vectorize(sch, info.block_rv)
                continue
            kinds = info.dom_kind()
            leading = len(kinds) - len(kinds.lstrip("S"))
            if leading:
                loops = sch.get_loops(info.block_rv)[:leading]
                sch.parallel(sch.fuse(*loops) if leading > 1 else loops[0])
        return sch


def _parallel_vectorize(sch: s_tir.Schedule, block) -> None:
    """Fuse a data-parallel block's loops; parallel outer part, vectorized inner part."""
    loops = sch.get_loops(block)
    fused = sch.fuse(*loops) if len(loops) > 1 else loops[0]
    extent = _extent(sch, fused)
    lanes = _divisor(extent) if extent else 1
    if lanes > 1:
        fused, inner = sch.split(fused, [None, lanes])
        sch.vectorize(inner)
    sch.parallel(fused)


def fuse_kernels(target: tvm.target.Target) -> list[tvm.transform.Pass]:
    """Legalize and fuse: the kernels these passes produce are the tuning tasks, so tuning and
    building must both use exactly this list for database lookups to hit."""
    return library_dispatch_passes(target) + legalize_passes(target)


@dataclass
class TunedKernels:
    """How many of the model's kernels took a schedule from the tuning database."""

    applied: int = 0
    total: int = 0
    names: set[str] = field(default_factory=set)
    applying: bool = False  # True while records are applied: an error then is the log's


def _apply_database(database, tuned: TunedKernels) -> tvm.transform.Pass:
    """Replace kernels the database has records for; count them for the manifest."""

    @tvm.transform.module_pass(opt_level=0)
    def _apply(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        if database is not None:
            tuned.applying = True
            with database:
                mod = relax.transform.MetaScheduleApplyDatabase()(mod)
            tuned.applying = False
        kernels = {g.name_hint: f for g, f in mod.functions.items() if isinstance(f, tirx.PrimFunc)}
        tuned.total = len(kernels)
        tuned.names = {name for name, f in kernels.items() if f.attrs and f.attrs.get("tirx.is_scheduled", False)}
        tuned.applied = len(tuned.names)
        return mod

    return _apply


def default_schedule(kernel: tvm.IRModule, target: tvm.target.Target) -> tvm.IRModule:
    """One fused kernel with the schedule an untuned build gives it (`kernel` is left as it is:
    the pass would otherwise mark the caller's module scheduled in place)."""
    with target:
        return _default_rules()(tvm.IRModule({"main": kernel["main"]}))


def _default_rules() -> tvm.transform.Pass:
    return dl.ApplyDefaultSchedule(DirectConv(), dl.cpu.Reduction(), Elementwise())


def cpu_pipeline(target: tvm.target.Target, database=None, tuned: TunedKernels | None = None) -> tvm.transform.Pass:
    """TVM's CPU pipeline: fuse, take tuned schedules from `database` where it has them, give
    every other kernel our default schedule, lower."""

    @tvm.transform.module_pass(opt_level=0)
    def _pipeline(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        with target:
            passes = (
                fuse_kernels(target)
                + [_apply_database(database, tuned or TunedKernels())]
                + [_default_rules()]
                + dataflow_lower_passes(target)
                + finalize_passes(target)
            )
            return tvm.transform.Sequential(passes)(mod)

    return _pipeline


def build_with_default_schedules(mod: tvm.IRModule, target: tvm.target.Target, database=None,
                                 tuned: TunedKernels | None = None):
    """relax.build with our CPU pipeline (tuned records first) for CPU targets, TVM's default elsewhere."""
    if target_kind(target) == "cpu":
        return relax.build(mod, target, relax_pipeline=cpu_pipeline(target, database, tuned))
    return relax.build(mod, target)
