"""The ops between packed convs, in the convs' channel-blocked layout.

The packing pass (`compile.backend.packed_conv`) leaves each conv as `pack(x)` -> conv ->
`unpack(codes)`: the conv reads and writes the blocked layout [N, C/L, H, W, L] (L channels of a
pixel contiguous), and everything around it sees NCHW. Between two convs of the QATIE net sit
gates (table lookups, multiplies), InstanceNorms (integer sums, a float affine), channel concats,
nearest resizes, a max-pool and pads; in NCHW, the kernel that packs a conv's input gathers L
channel planes per vector, and every unpack scatters them back (the c=32 model at 256x256,
znver3, before this pass: 10.8 of 82 ms in such kernels).

This pass moves each `unpack` down the graph through every op that means the same on blocked
tensors, so it meets the next conv's `pack`, which then only widens or shifts the codes it reads
(`pack_input` of a blocked value):

- elementwise ops (casts, arithmetic, quantize / dequantize with one scale, activations, a
  lookup's index): the same op on the blocked operands; a per-channel constant ([C, 1, 1] or
  [1, C, 1, 1]) is blocked the same way, scalars broadcast as they are;
- InstanceNorm's sums over H and W: the same sum, [N, C/L, 1, 1, L] per-channel results, which
  the affine then broadcasts like any per-channel operand;
- a channel concat of blocked tensors (C a multiple of L each): a concat of blocks;
- a pad of H and W, a resize (`NCHW{L}c`), a max-pool (`NCHW{L}c`): TOPI computes them on
  blocked layouts natively.

Anything else (and a value that leaves the dataflow block) reads NCHW again: the unpack is
emitted right before its first such use. Only tensors whose channel count is a multiple of L
travel blocked (a conv with 3 outputs is unpacked at once), so blocks never hold padded channels.
The rules are a registry from op name to rewrite, like the ONNX frontend's converter map.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax, te
from tvm.relax.expr_functor import PyExprMutator, mutator

from compile.backend.call_te import Emitted, call_te
from compile.backend.kernel_boundaries import COMM_REDUCE, INJECTIVE
from compile.backend.packed_conv import (
    PACK_SHIFT,
    UNPACK,
    blocked_channels,
    pack_input,
    read_output,
    unpack,
)
from compile.frontend.rewrite import constant


@dataclass(frozen=True)
class Blocked:
    """A tensor held in the blocked layout: `expr` is [N, C/lanes, H, W, lanes] (H = W = 1 for
    per-channel statistics); `nchw` is how to compute it in NCHW again, if not by unpacking."""

    expr: relax.Expr
    channels: int
    lanes: int
    nchw: relax.Expr | None = None


def _shape(expr: relax.Expr) -> list[int]:
    return [int(d) for d in expr.ty.shape]


def blocked_codes(y: te.Tensor, size=None) -> te.Tensor:
    """A conv's output codes as [N, C/L, H, W, L], from the Winograd conv's row and column pairs
    too (the same memory), cropped to `size`, the conv's output size, from its whole tiles (a
    direct conv's too: `packed_conv.tiled_width`): a copy that fuses into whatever reads it.
    Marked injective, it also ends the conv's kernel at its int8 codes: FuseOps fuses
    elementwise ops after a conv into the conv's kernel, which then wrote what they make (a
    dequantize's float32, a table index's int32) for the next kernel."""
    n, blocks, lanes = int(y.shape[0]), int(y.shape[1]), int(y.shape[-1])
    size = size or [int(d) for d in y.shape[2:4]]
    return te.compute((n, blocks, *size, lanes), functools.partial(read_output, y), name="blocked")


def _layout_change(mod: tvm.IRModule, value: relax.Expr) -> str | None:
    """`PACK_SHIFT` for a conv's input packing, `UNPACK` for a conv's output unpacking (the
    attributes their PrimFuncs carry), else None."""
    if not isinstance(value, relax.Call) or value.op != tvm.ir.Op.get("relax.call_tir"):
        return None
    attrs = mod[value.args[0]].attrs or {}
    return next((key for key in (PACK_SHIFT, UNPACK) if key in attrs), None)


@mutator
class _Sink(PyExprMutator):
    """One pass over a function's bindings in order: rewrites a binding in the blocked layout
    when a rule accepts it, else emits it as it was, unpacking the blocked values it reads."""

    def __init__(self, mod: tvm.IRModule) -> None:
        super().__init__(mod)
        self.mod = mod
        self.blocked: dict[relax.Var, Blocked] = {}
        self.unpacked: dict[relax.Var, relax.Var] = {}
        self.constants: dict[relax.Var, np.ndarray] = {}

    # -- what a binding's arguments are ------------------------------------------------------

    def block_of(self, arg: relax.Expr) -> Blocked | None:
        return self.blocked.get(arg) if isinstance(arg, relax.Var) else None

    def constant_of(self, arg: relax.Expr) -> np.ndarray | None:
        if isinstance(arg, tvm.ir.expr.Constant):
            return constant(arg)
        return self.constants.get(arg) if isinstance(arg, relax.Var) else None

    def operand(self, arg: relax.Expr, like: Blocked) -> relax.Expr | None:
        """`arg` as an operand of an elementwise op on tensors blocked like `like`: a blocked
        value, a scalar, or a per-channel constant blocked the same way; None if it is none."""
        found = self.block_of(arg)
        if found is not None:
            return found.expr if (found.channels, found.lanes) == (like.channels, like.lanes) else None
        shape = _shape(arg)
        if math.prod(shape) == 1:
            return self.visit_expr(arg)
        value = self.constant_of(arg)
        if value is not None and len(shape) in (3, 4) and shape[-3] == math.prod(shape) == like.channels:
            return relax.const(blocked_channels(value.reshape(-1), like.channels, like.lanes, 0), str(value.dtype))
        return None

    # -- emitting ------------------------------------------------------------------------------

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        value = binding.value
        if isinstance(value, relax.Call) and value.op == tvm.ir.Op.get("relax.reshape"):
            data = self.constant_of(value.args[0])
            if data is not None:  # a per-channel constant reshaped to broadcast: kept to block it
                self.constants[binding.var] = data.reshape(_shape(binding.var))
        change = _layout_change(self.mod, value)
        found = None
        if not isinstance(binding.var, relax.DataflowVar):
            pass  # leaves the block: computed as it was
        elif change == PACK_SHIFT:
            if self._pack(binding, value, int(self.mod[value.args[0]].attrs[PACK_SHIFT])):
                return
        elif change == UNPACK:
            found = self._unpack(binding, value)
        elif isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op) and value.op.name in RULES:
            found = RULES[value.op.name](self, value)
        if found is None:
            super().visit_var_binding_(binding)
        else:
            self.blocked[binding.var] = found

    def visit_dataflow_var_(self, var: relax.DataflowVar) -> relax.Expr:
        found = self.blocked.get(var)
        if found is None:
            return super().visit_dataflow_var_(var)
        if var not in self.unpacked:  # an NCHW use: unpacked once, before its first use
            nchw = found.nchw if found.nchw is not None else call_te(
                self.builder_, "unpack", functools.partial(unpack, channels=found.channels),
                [Emitted(found.expr, _shape(found.expr), str(found.expr.ty.dtype))]).expr
            self.unpacked[var] = self.builder_.emit(nchw)
        return self.unpacked[var]

    def emit_blocked(self, expr: relax.Expr, like: Blocked, channels: int | None = None) -> Blocked:
        return Blocked(self.builder_.emit(expr), channels or like.channels, like.lanes)

    def _unpack(self, binding: relax.VarBinding, call: relax.Call) -> Blocked | None:
        """A conv's output: its codes are the blocked value (the unpack is kept, to be emitted
        only if something reads NCHW)."""
        codes = call.args[1].fields[0]
        shape, channels = _shape(codes), _shape(binding.var)[1]
        if channels % shape[-1]:
            return None
        codes = self.visit_expr(codes)
        blocked = call_te(self.builder_, "blocked", functools.partial(blocked_codes, size=_shape(binding.var)[2:]),
                          [Emitted(codes, shape, str(codes.ty.dtype))], op_pattern=INJECTIVE)
        return Blocked(self.builder_.emit(blocked.expr), channels, shape[-1],
                       relax.call_tir(call.args[0], [codes], call.ty))

    def _pack(self, binding: relax.VarBinding, call: relax.Call, shift: int) -> bool:
        """A conv's input packing of a blocked value whose lanes are the conv's channel group,
        emitted in place of the binding; False for any other (it stays, after an unpack)."""
        found = self.block_of(call.args[1].fields[0])
        if found is None or _shape(call)[-1] != found.lanes:
            return False
        packed = call_te(self.builder_, "pack_blocked", functools.partial(
            pack_input, group=found.lanes, dtype=str(call.ty.dtype), shift=shift, size=_shape(call)[2:4]),
            [Emitted(found.expr, _shape(found.expr), str(found.expr.ty.dtype))])
        self.set_var_remap(binding.var, self.builder_.emit(packed.expr))
        return True


# -- the rules: op name -> rewrite of a call whose tensor inputs are blocked ----------------------

Rule = Callable[[_Sink, relax.Call], Blocked | None]


def _elementwise(sink: _Sink, call: relax.Call, operands: slice = slice(None)) -> Blocked | None:
    """The op on blocked operands (see `_Sink.operand`), if every tensor argument among
    `operands` is one and at least one is blocked; other arguments (a lookup's table, a clip's
    bounds) and the attributes unchanged."""
    like = next((sink.block_of(a) for a in call.args[operands] if sink.block_of(a) is not None), None)
    if like is None or len(_shape(call)) != 4 or _shape(call)[1] != like.channels:
        return None
    positions = range(len(call.args))[operands]
    args = []
    for k, arg in enumerate(call.args):
        operand = (sink.operand(arg, like) if k in positions and isinstance(arg.ty, relax.TensorType)
                   else sink.visit_expr(arg))
        if operand is None:
            return None
        args.append(operand)
    return sink.emit_blocked(relax.Call(call.op, args, call.attrs, call.ty_args), like)


def _quantize(sink: _Sink, call: relax.Call) -> Blocked | None:
    """quantize / dequantize with one scale and zero point (per-channel ones name an axis)."""
    if any(math.prod(_shape(a)) != 1 for a in call.args[1:]):
        return None
    return _elementwise(sink, call)


def _take(sink: _Sink, call: relax.Call) -> Blocked | None:
    """A table lookup (elementwise in its index: the table is a constant), or rows or columns
    of a blocked tensor picked by constant indices (a nearest resize, as the TFLite importer
    writes it: the same take on the same axis of the blocks)."""
    axis = int(call.attrs.axis or 0)
    found = sink.block_of(call.args[0])
    indices = sink.constant_of(call.args[1])
    if found is not None and axis in (2, 3) and indices is not None and indices.ndim == 1:
        data = _read_once(sink, found.expr, call)
        return sink.emit_blocked(call_te(sink.builder_, "pick", functools.partial(_pick, axis=axis), [
            Emitted(data, _shape(data), str(data.ty.dtype)), Emitted(relax.const(indices, str(indices.dtype)),
                                                                      [indices.size], str(indices.dtype))],
            op_pattern=INJECTIVE).expr, found)
    if len(_shape(call.args[0])) != 1 or axis != 0:
        return None
    return _elementwise(sink, call, slice(1, 2))


def _sum(sink: _Sink, call: relax.Call) -> Blocked | None:
    """A sum over H and W (InstanceNorm's statistics), keeping dims: per-channel blocks."""
    found = sink.block_of(call.args[0])
    axes = sorted(int(a) for a in call.attrs.axis or [])
    if found is None or axes != [2, 3] or not call.attrs.keepdims:
        return None
    return sink.emit_blocked(relax.op.sum(found.expr, axis=[2, 3], keepdims=True), found)


def _concat(sink: _Sink, call: relax.Call) -> Blocked | None:
    """A channel concat of blocked tensors: a concat of their blocks."""
    if not isinstance(call.args[0], relax.Tuple) or int(call.attrs.axis) != 1:
        return None
    parts = [sink.block_of(a) for a in call.args[0].fields]
    if None in parts or len({p.lanes for p in parts}) != 1:
        return None
    return sink.emit_blocked(relax.op.concat([p.expr for p in parts], axis=1), parts[0],
                             sum(p.channels for p in parts))


def _pad(sink: _Sink, call: relax.Call) -> Blocked | None:
    """A constant pad of H and W."""
    found = sink.block_of(call.args[0])
    width = [int(w) for w in call.attrs.pad_width]
    if found is None or any(width[:4]) or call.attrs.pad_mode != "constant":
        return None
    return sink.emit_blocked(relax.op.nn.pad(found.expr, [*width, 0, 0], pad_value=float(call.attrs.pad_value)), found)


def _pick(data: te.Tensor, indices: te.Tensor, axis: int) -> te.Tensor:
    """Rows (axis 2) or columns (3) of `data` at `indices`: injective, unlike TOPI's gather,
    so what reads it fuses with it."""
    shape = [*data.shape[:axis], indices.shape[0], *data.shape[axis + 1:]]
    return te.compute(shape, lambda *i: data[(*i[:axis], indices[i[axis]], *i[axis + 1:])], name="pick")


def _read_once(sink: _Sink, data: relax.Expr, call: relax.Call) -> relax.Expr:
    """The input of an upsampling `call`, copied when it upsamples: a kernel that upsamples
    reads each input element several times, and FuseOps would fuse what computes its input (a
    residual add and its requantize) into it, repeating that work per output pixel. The copy
    is labelled a reduction for FuseOps (`COMM_REDUCE`), so that work fuses into it, at the
    input's size, and the upsample starts a kernel of its own: the c=32 model's three upsamples
    with their adds 2.02 -> 0.72 ms in six kernels instead of three (256x256, znver3)."""
    if math.prod(_shape(call)) <= math.prod(_shape(data)):
        return data
    return sink.builder_.emit(call_te(sink.builder_, "resize_input", blocked_codes, [
        Emitted(data, _shape(data), str(data.ty.dtype))], op_pattern=COMM_REDUCE).expr)


def _resize2d(sink: _Sink, call: relax.Call) -> Blocked | None:
    """A resize, of a copy of its input when it upsamples (`_read_once`)."""
    found, attrs = sink.block_of(call.args[0]), call.attrs
    if found is None or attrs.layout != "NCHW":
        return None
    return sink.emit_blocked(relax.op.image.resize2d(
        _read_once(sink, found.expr, call), call.args[1], roi=[float(r) for r in attrs.roi], layout=f"NCHW{found.lanes}c",
        method=attrs.method, coordinate_transformation_mode=attrs.coordinate_transformation_mode,
        rounding_method=attrs.rounding_method, cubic_alpha=float(attrs.cubic_alpha),
        cubic_exclude=int(attrs.cubic_exclude), extrapolation_value=float(attrs.extrapolation_value),
        out_dtype=attrs.out_dtype), found)


def _max_pool2d(sink: _Sink, call: relax.Call) -> Blocked | None:
    found, attrs = sink.block_of(call.args[0]), call.attrs
    if found is None or attrs.layout != "NCHW" or attrs.out_layout != "NCHW":
        return None
    layout = f"NCHW{found.lanes}c"
    return sink.emit_blocked(relax.op.nn.max_pool2d(
        found.expr, [int(p) for p in attrs.pool_size], [int(s) for s in attrs.strides],
        [int(p) for p in attrs.padding], [int(d) for d in attrs.dilation], bool(attrs.ceil_mode),
        bool(attrs.count_include_pad), layout=layout, out_layout=layout), found)


ELEMENTWISE_OPS = ("relax.astype", "relax.add", "relax.subtract", "relax.multiply", "relax.divide",
                   "relax.sqrt", "relax.rsqrt", "relax.nn.relu", "relax.nn.leakyrelu", "relax.clip",
                   "relax.maximum", "relax.minimum", "relax.left_shift", "relax.right_shift",
                   "relax.bitwise_and")
RULES: dict[str, Rule] = {
    **dict.fromkeys(ELEMENTWISE_OPS, _elementwise),
    "relax.quantize": _quantize,
    "relax.dequantize": _quantize,
    "relax.take": _take,
    "relax.sum": _sum,
    "relax.concat": _concat,
    "relax.nn.pad": _pad,
    "relax.image.resize2d": _resize2d,
    "relax.nn.max_pool2d": _max_pool2d,
}


def blocked_layout() -> tvm.transform.Pass:
    """The module pass (a no-op where nothing was packed)."""

    @tvm.transform.module_pass(opt_level=0, name="QatieBlockedLayout")
    def _pass(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        rewritten = {}
        for gvar, func in mod.functions.items():
            if isinstance(func, relax.Function):
                sink = _Sink(mod)
                rewritten[gvar] = sink.visit_expr(func)
                mod = sink.builder_.get()
        for gvar, func in rewritten.items():
            mod[gvar] = func
        return relax.transform.DeadCodeElimination()(relax.transform.Normalize()(mod))

    return _pass
