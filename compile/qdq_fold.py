"""Integer QDQ folding: fake-quantized float convs become int8 x int8 -> int32 convs.

TVM's ONNX frontend imports a QDQ model as fake quantization: `quantize(conv2d(dequantize(x),
dequantize(W)) + b)`, a float conv. This pass (built on `tvm.relax.dpl` pattern rewriting)
matches

    DQ(x_q) . conv2d . DQ(W_q) [+ bias] [-> relu | leaky-relu] -> Q

and rewrites it to

    pad(x_q, value = z_x) -> conv2d(int8|uint8, int8, out int32)
      -> + (round(b / (s_x s_w[c])) - z_x * sum(W_q[c]))        (int32, per channel)
      -> float(acc) * (s_x s_w[c]) -> activation -> Q(s_y, z_y)

Padding with the input's zero point keeps every window "full", so the zero-point correction
is one constant per output channel. The requantize epilogue is elementwise and fuses into the
conv kernel. With power-of-two scales (QATIE's default) every step is exact, so the result
equals the QDQ graph's float semantics bit for bit; with arbitrary scales it differs only by
the bias rounding onto the accumulator grid, as every int8 runtime does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm import relax
from tvm.relax.dpl import is_const, is_op, is_tuple, rewrite_call, wildcard

INT8_TYPES = ("int8", "uint8")
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


@dataclass
class FoldLog:
    """What the pass did: how many convs became integer, and why the others did not."""

    folded: int = 0
    exact_int8_ops: int = 0
    skipped: list[str] = field(default_factory=list)


def _const(expr: relax.Expr) -> np.ndarray:
    return expr.value.numpy()


class _ConvPattern:
    """The DQ -> conv2d [-> add bias] [-> relu | leakyrelu] -> Q pattern, with named parts."""

    def __init__(self) -> None:
        self.x_q, self.s_x, self.z_x = wildcard(), is_const(), is_const()
        self.w_q, self.s_w, self.z_w = is_const(), is_const(), is_const()
        self.conv = is_op("relax.nn.conv2d")(
            is_op("relax.dequantize")(self.x_q, self.s_x, self.z_x),
            is_op("relax.dequantize")(self.w_q, self.s_w, self.z_w),
        )
        # bias: a float constant (QATIE, PyTorch) or int32 behind a DequantizeLinear (ORT's quantizer)
        self.bias = is_const()
        self.bias_q, self.bias_s, self.bias_z = is_const(), is_const(), is_const()
        self.bias_dq = is_op("relax.dequantize")(self.bias_q, self.bias_s, self.bias_z)
        bias = self.bias | self.bias_dq
        self.biased = is_op("relax.add")(self.conv, bias | is_op("relax.reshape")(bias, wildcard()))
        body = self.biased | self.conv
        self.relu = is_op("relax.nn.relu")(body)
        self.leaky = is_op("relax.nn.leakyrelu")(body)
        self.s_y, self.z_y = is_const(), is_const()
        self.root = is_op("relax.quantize")(self.relu | self.leaky | body, self.s_y, self.z_y)


def _rewrite_conv(p: _ConvPattern, orig: relax.Call, m: dict, log: FoldLog) -> relax.Expr:
    conv = m[p.conv]
    attrs = conv.attrs
    x_q = m[p.x_q]
    x_dtype = str(x_q.ty.dtype)
    w_q = _const(m[p.w_q])
    if x_dtype not in INT8_TYPES or str(w_q.dtype) != "int8":
        log.skipped.append(f"{x_dtype} x {w_q.dtype} operands")
        return orig
    if (attrs.data_layout, attrs.kernel_layout, attrs.out_layout) != ("NCHW", "OIHW", "NCHW"):
        log.skipped.append(f"layout {attrs.data_layout}/{attrs.kernel_layout}")
        return orig
    if np.any(_const(m[p.z_w]) != 0):
        log.skipped.append("asymmetric weights (nonzero weight zero point)")
        return orig
    out_channels = w_q.shape[0]
    s_x = float(_const(m[p.s_x]).reshape(-1)[0])
    z_x = int(_const(m[p.z_x]).reshape(-1)[0])
    s_w = np.broadcast_to(_const(m[p.s_w]).astype(np.float32).reshape(-1), (out_channels,))
    acc_scale = (np.float32(s_x) * s_w).astype(np.float32)
    bias = np.zeros(out_channels)
    if p.bias_dq in m:
        dq = (_const(m[p.bias_q]).astype(np.float32) - _const(m[p.bias_z]).astype(np.float32)) * _const(m[p.bias_s])
        bias = dq.astype(np.float32).reshape(-1).astype(np.float64)
    elif p.biased in m:
        bias = _const(m[p.bias]).reshape(-1).astype(np.float64)
    offset = np.round(bias / acc_scale.astype(np.float64)).astype(np.int64)
    offset -= z_x * w_q.astype(np.int64).sum(axis=(1, 2, 3))
    if offset.min() < INT32_MIN or offset.max() > INT32_MAX:
        log.skipped.append("bias does not fit the int32 accumulator")
        return orig

    data = x_q
    top, left, bottom, right = (int(v) for v in attrs.padding)
    if top or left or bottom or right:
        data = relax.op.nn.pad(data, [0, 0, 0, 0, top, bottom, left, right], pad_value=float(z_x))
    acc = relax.op.nn.conv2d(
        data, relax.const(w_q, "int8"), strides=attrs.strides, padding=[0, 0, 0, 0],
        dilation=attrs.dilation, groups=attrs.groups, out_dtype="int32",
    )
    channel = (1, out_channels, 1, 1)
    acc = relax.op.add(acc, relax.const(offset.astype(np.int32).reshape(channel), "int32"))
    value = relax.op.multiply(relax.op.astype(acc, "float32"), relax.const(acc_scale.reshape(channel), "float32"))
    if p.relu in m:
        value = relax.op.nn.relu(value)
    elif p.leaky in m:
        value = relax.op.nn.leakyrelu(value, float(m[p.leaky].attrs.alpha))
    log.folded += 1
    return relax.op.quantize(value, m[p.s_y], m[p.z_y], axis=orig.attrs.axis, out_dtype=orig.attrs.out_dtype)


class _ExactOpPattern:
    """Q(OP(DQ(x))) with one set of Q/DQ parameters, for ops that are exact on int8 values.

    Max-pool and nearest resize only select values, and DQ is monotone, so OP(x_q) is exactly
    Q(OP(DQ(x_q))); likewise a concat of tensors that share their Q/DQ parameters, and a
    Q(DQ(x)) pair that re-quantizes with the same parameters is x itself.
    """

    MAX_CONCAT = 4

    def __init__(self) -> None:
        self.dequants = [is_op("relax.dequantize")(wildcard(), is_const(), is_const()) for _ in range(self.MAX_CONCAT)]
        first = self.dequants[0]
        self.pool = is_op("relax.nn.max_pool2d")(first)
        self.resize = is_op("relax.image.resize2d")(first, wildcard())
        self.concats = [is_op("relax.concat")(is_tuple(self.dequants[:n])) for n in range(2, self.MAX_CONCAT + 1)]
        inner = self.pool | self.resize | first
        for concat in self.concats:
            inner = inner | concat
        self.root = is_op("relax.quantize")(inner, is_const(), is_const())


class _LookupPattern:
    """Q(f(DQ(x))) for an elementwise f of one int8 tensor: a 256-entry table of output codes.

    The table is computed here with numpy's float32 tanh/sigmoid and round-half-to-even, i.e.
    the ONNX definition evaluated exactly once per input code, instead of TVM's approximate
    float tanh at run time, whose last-bit differences flip rounding bins (this is how TFLite
    runs int8 tanh too).
    """

    FUNCTIONS = {"relax.tanh": np.tanh, "relax.sigmoid": lambda v: 1.0 / (1.0 + np.exp(-v))}

    def __init__(self) -> None:
        self.x, self.s_x, self.z_x = wildcard(), is_const(), is_const()
        dq = is_op("relax.dequantize")(self.x, self.s_x, self.z_x)
        self.func = is_op("relax.tanh")(dq) | is_op("relax.sigmoid")(dq)
        self.s_y, self.z_y = is_const(), is_const()
        self.root = is_op("relax.quantize")(self.func, self.s_y, self.z_y)


def _rewrite_lookup(p: _LookupPattern, orig: relax.Call, m: dict, log: FoldLog) -> relax.Expr:
    x = m[p.x]
    in_dtype, out_dtype = str(x.ty.dtype), str(orig.attrs.out_dtype)
    scalars = [_const(m[k]) for k in (p.s_x, p.z_x, p.s_y, p.z_y)]
    if in_dtype not in INT8_TYPES or out_dtype not in INT8_TYPES or any(v.size != 1 for v in scalars):
        return orig
    s_x, z_x, s_y, z_y = (v.reshape(-1)[0] for v in scalars)
    info = np.iinfo(in_dtype)
    codes = np.arange(info.min, info.max + 1)
    real = ((codes.astype(np.float32) - np.float32(z_x)) * np.float32(s_x)).astype(np.float32)
    value = p.FUNCTIONS[m[p.func].op.name](real).astype(np.float32)
    out_info = np.iinfo(out_dtype)
    table = np.clip(np.round(value / np.float32(s_y)) + np.float32(z_y), out_info.min, out_info.max).astype(out_dtype)
    index = relax.op.subtract(relax.op.astype(x, "int32"), relax.const(int(info.min), "int32"))
    log.exact_int8_ops += 1
    return relax.op.take(relax.const(table, out_dtype), index, axis=0, mode="clip")


def _same_qparams(dq: relax.Call, q: relax.Call) -> bool:
    """DQ and Q use the same per-tensor scale, zero point and integer type."""
    if str(dq.args[0].ty.dtype) != str(q.attrs.out_dtype):
        return False
    pairs = ((dq.args[1], q.args[1]), (dq.args[2], q.args[2]))
    return all(_const(a).size == 1 and np.array_equal(_const(a).reshape(-1), _const(b).reshape(-1)) for a, b in pairs)


def _rewrite_exact(p: _ExactOpPattern, orig: relax.Call, m: dict, log: FoldLog) -> relax.Expr:
    dequants = [m[d] for d in p.dequants if d in m]
    if not all(_same_qparams(dq, orig) for dq in dequants):
        return orig
    rewritten = _exact_int8_op(p, m, [dq.args[0] for dq in dequants])
    if rewritten is None:
        return orig
    log.exact_int8_ops += 1
    return rewritten


def _exact_int8_op(p: _ExactOpPattern, m: dict, codes: list[relax.Expr]) -> relax.Expr | None:
    """The matched op applied to the int8 inputs directly (None where it would not be exact)."""
    concat = next((m[c] for c in p.concats if c in m), None)
    if concat is not None:
        return relax.op.concat(codes, axis=int(concat.attrs.axis))
    op_call = next((m[op] for op in (p.pool, p.resize) if op in m), None)
    if op_call is None:
        return codes[0]  # Q(DQ(x)) with the same parameters
    if p.resize in m and op_call.attrs.method != "nearest_neighbor":
        return None
    return relax.Call(op_call.op, [codes[0], *op_call.args[1:]], op_call.attrs)


def _rewrite_functions(mod: tvm.IRModule, pattern, rewriter) -> tvm.IRModule:
    updated = {
        gvar: rewrite_call(pattern.root, lambda orig, m: rewriter(pattern, orig, m), func)
        for gvar, func in mod.functions.items()
        if isinstance(func, relax.Function)
    }
    for gvar, func in updated.items():
        mod[gvar] = func
    return mod


def fold_qdq_convs(mod: tvm.IRModule) -> tuple[tvm.IRModule, FoldLog]:
    """Integer convs; int8 max-pool / nearest resize / concat / Q-DQ cancellation where exact;
    tanh and sigmoid between a DQ and a Q as int8 lookup tables."""
    log = FoldLog()
    mod = _rewrite_functions(mod, _ExactOpPattern(), lambda p, orig, m: _rewrite_exact(p, orig, m, log))
    mod = _rewrite_functions(mod, _LookupPattern(), lambda p, orig, m: _rewrite_lookup(p, orig, m, log))
    mod = _rewrite_functions(mod, _ConvPattern(), lambda p, orig, m: _rewrite_conv(p, orig, m, log))
    return relax.transform.DeadCodeElimination()(mod), log
