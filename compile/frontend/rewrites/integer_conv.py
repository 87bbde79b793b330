"""Fake-quantized float convs become int8 x int8 -> int32 convs.

TVM's ONNX frontend imports a QDQ model as fake quantization: `quantize(conv2d(dequantize(x),
dequantize(W)) + b)`, a float conv. This rewrite matches

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

import functools
import operator

import numpy as np
from tvm import relax
from tvm.relax.dpl import is_const, is_op, wildcard

from compile.frontend.rewrite import INT8_TYPES, FoldLog, Rewrite, constant

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


class IntegerConv(Rewrite):
    """DQ -> conv2d [-> add bias] [-> relu | leakyrelu] -> Q as an int8 x int8 -> int32 conv."""

    name = "integer-conv"
    # Elementwise activations between the conv and its Q: applied to the float requantize value.
    ACTIVATIONS = ("relax.nn.relu", "relax.nn.leakyrelu")

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
        self.activations = [is_op(name)(body) for name in self.ACTIVATIONS]
        self.s_y, self.z_y = is_const(), is_const()
        self.root = is_op("relax.quantize")(functools.reduce(operator.or_, [*self.activations, body]),
                                            self.s_y, self.z_y)

    def rewrite(self, call: relax.Call, match: dict, log: FoldLog) -> relax.Expr:
        conv = match[self.conv]
        attrs = conv.attrs
        x_q = match[self.x_q]
        x_dtype = str(x_q.ty.dtype)
        w_q = constant(match[self.w_q])
        if x_dtype not in INT8_TYPES or str(w_q.dtype) != "int8":
            log.skip(self.name, f"{x_dtype} x {w_q.dtype} operands")
            return call
        if (attrs.data_layout, attrs.kernel_layout, attrs.out_layout) != ("NCHW", "OIHW", "NCHW"):
            log.skip(self.name, f"layout {attrs.data_layout}/{attrs.kernel_layout}")
            return call
        if np.any(constant(match[self.z_w]) != 0):
            log.skip(self.name, "asymmetric weights (nonzero weight zero point)")
            return call
        out_channels = w_q.shape[0]
        s_x = float(constant(match[self.s_x]).reshape(-1)[0])
        z_x = int(constant(match[self.z_x]).reshape(-1)[0])
        s_w = np.broadcast_to(constant(match[self.s_w]).astype(np.float32).reshape(-1), (out_channels,))
        acc_scale = (np.float32(s_x) * s_w).astype(np.float32)
        bias = np.zeros(out_channels)
        if self.bias_dq in match:
            levels = constant(match[self.bias_q]).astype(np.float32) - constant(match[self.bias_z]).astype(np.float32)
            dq = levels * constant(match[self.bias_s])
            bias = dq.astype(np.float32).reshape(-1).astype(np.float64)
        elif self.biased in match:
            bias = constant(match[self.bias]).reshape(-1).astype(np.float64)
        offset = np.round(bias / acc_scale.astype(np.float64)).astype(np.int64)
        offset -= z_x * w_q.astype(np.int64).sum(axis=(1, 2, 3))
        if offset.min() < INT32_MIN or offset.max() > INT32_MAX:
            log.skip(self.name, "bias does not fit the int32 accumulator")
            return call

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
        activation = next((match[a] for a in self.activations if a in match), None)
        if activation is not None:
            value = relax.Call(activation.op, [value], activation.attrs)
        log.apply(self.name)
        return relax.op.quantize(value, match[self.s_y], match[self.z_y], axis=call.attrs.axis,
                                 out_dtype=call.attrs.out_dtype)
