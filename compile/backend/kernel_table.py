"""What each fused kernel of a build is: its arguments, how often the model calls it, its MACs
and bytes, and whether its schedule came from tuning.

The profiler needs this on a remote device where only the `.so` exists: the table is taken from
the module just before `CallTIRRewrite` (kernels scheduled, calls still `R.call_tir` in order)
and written into the manifest.
"""

from __future__ import annotations

import math

import tvm
from tvm import relax, s_tir, tirx
from tvm.s_tir.meta_schedule.arg_info import ArgInfo

from compile.artifact import KernelArg, KernelInfo, KernelTable
from compile.backend import kernel_names
from compile.backend.dot_products import ANNOTATION, DIRECT_MACS


@tvm.instrument.pass_instrument
class CaptureKernels:
    """Counts MACs right after fusion and naming (`kernel_names.short_kernel_names`: kernels
    fused, not yet scheduled: GPU schedules split reductions across threads, and dlight rewrites
    the functions in place, so counting must happen now) and keeps the module entering
    `CallTIRRewrite` (scheduled; calls still `R.call_tir`, in order). Both passes run in our CPU
    and GPU pipelines."""

    def __init__(self) -> None:
        self.macs: dict[str, int] | None = None
        self.dot_products: dict[str, str] = {}
        self.scheduled: tvm.IRModule | None = None

    def run_after_pass(self, mod: tvm.IRModule, info: tvm.transform.PassInfo) -> None:
        if info.name == kernel_names.PASS_NAME and self.macs is None:
            kernels = {gvar.name_hint: func for gvar, func in mod.functions.items() if isinstance(func, tirx.PrimFunc)}
            self.macs = {name: _macs(func) for name, func in kernels.items()}
            for name, func in kernels.items():
                found = [b.annotations[ANNOTATION] for b in _blocks(func.body) if ANNOTATION in b.annotations]
                if found:
                    self.dot_products[name] = str(found[0])

    def run_before_pass(self, mod: tvm.IRModule, info: tvm.transform.PassInfo) -> None:
        if info.name == "CallTIRRewrite" and self.scheduled is None:
            self.scheduled = mod

    def table(self, tuned_names: set[str]) -> KernelTable:
        if self.macs is None or self.scheduled is None:
            raise RuntimeError(f"the build pipeline ran no {kernel_names.PASS_NAME}/CallTIRRewrite; cannot describe its kernels")
        return kernel_table(self.scheduled, self.macs, tuned_names, self.dot_products)


def _blocks(stmt) -> list:
    """Every SBlock under `stmt` (TVM 0.27 has no Python TIR visitor; kernels are small trees)."""
    if isinstance(stmt, s_tir.SBlockRealize):
        return _blocks(stmt.block)
    found = [stmt] if isinstance(stmt, s_tir.SBlock) else []
    children = list(getattr(stmt, "seq", []))
    for attr in ("body", "then_case", "else_case"):
        child = getattr(stmt, attr, None)
        if child is not None:
            children.append(child)
    for child in children:
        found.extend(_blocks(child))
    return found


def shape_free_key(func: tirx.PrimFunc) -> tuple:
    """A kernel's identity without its shapes: its blocks (names and annotations but a size's
    MAC count, in order) and its arguments' ranks and types. Two kernels with one key are the
    same computation at other sizes, e.g. one model exported at two input sizes."""
    blocks = tuple((b.name_hint, tuple(sorted((str(k), str(v)) for k, v in b.annotations.items() if k != DIRECT_MACS)))
                   for b in _blocks(func.body))
    args = tuple((len(a.shape), str(a.dtype)) for a in ArgInfo.from_prim_func(func))
    return blocks, args


def _uncast(expr):
    while isinstance(expr, tirx.Cast):
        expr = expr.value
    return expr


def _accumulates_a_product(block) -> bool:
    """`acc = acc + a * b` (casts allowed): a conv or matmul update, not a pool whose window
    index happens to multiply (a max-pool's `x[y * stride + ky]`)."""
    store = block.body
    if not isinstance(store, tirx.BufferStore):
        return False
    value = _uncast(store.value)
    return isinstance(value, tirx.Add) and any(isinstance(_uncast(side), tirx.Mul) for side in (value.a, value.b))


def _macs(func: tirx.PrimFunc) -> int:
    """Multiply-accumulates: instances of reduction blocks whose update adds a product (a
    Winograd GEMM block: the direct conv's MACs, which it names)."""
    total = 0
    for block in _blocks(func.body):
        if DIRECT_MACS in block.annotations:
            total += int(block.annotations[DIRECT_MACS])
        elif any(v.iter_type == tirx.IterVar.CommReduce for v in block.iter_vars) and _accumulates_a_product(block):
            total += math.prod(int(v.dom.extent) for v in block.iter_vars)
    return total


def _tensor(info) -> KernelArg:
    return KernelArg(shape=[int(d) for d in info.shape], dtype=str(info.dtype))


def _calls(mod: tvm.IRModule) -> list[tuple[str, list[KernelArg]]]:
    """(kernel name, argument tensors: inputs then outputs) for each `R.call_tir` of main, in order."""
    calls: list[tuple[str, list[KernelArg]]] = []

    def visit(expr: relax.Expr) -> None:
        if isinstance(expr, relax.Call) and getattr(expr.op, "name", "") == "relax.call_tir":
            outputs = expr.ty_args[0]
            outputs = list(outputs.fields) if hasattr(outputs, "fields") else [outputs]
            args = [_tensor(arg.ty) for arg in expr.args[1].fields] + [_tensor(out) for out in outputs]
            calls.append((expr.args[0].name_hint, args))

    relax.analysis.post_order_visit(mod["main"], visit)
    return calls


def kernel_table(scheduled: tvm.IRModule, macs: dict[str, int], tuned_names: set[str],
                 dot_products: dict[str, str]) -> KernelTable:
    """The kernels in name order, and the order main calls them in."""
    calls = _calls(scheduled)
    order = [name for name, _ in calls]
    signatures = dict(calls)
    kernels = []
    for gvar, func in sorted(scheduled.functions.items(), key=lambda item: item[0].name_hint):
        name = gvar.name_hint
        if not isinstance(func, tirx.PrimFunc) or name not in signatures:
            continue
        args = signatures[name]
        kernels.append(KernelInfo(
            name=name, calls=order.count(name), args=args, macs=macs.get(name, 0),
            bytes=sum(math.prod(a.shape) * tvm.DataType(a.dtype).bits // 8 for a in args),
            tuned=name in tuned_names, dot_product=dot_products.get(name),
        ))
    return KernelTable(call_order=order, kernels=kernels)
