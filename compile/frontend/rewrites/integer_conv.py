"""Fake-quantized float convs (and Gemm / MatMul, as 1x1 convs) become int8 x int8 -> int32 convs.

TVM's ONNX frontend imports a QDQ model as fake quantization: `quantize(conv2d(dequantize(x),
dequantize(W)) + b)`, a float conv. This rewrite matches

    DQ(x_q) . conv2d . DQ(W_q) [+ bias] [-> relu | leaky-relu] -> Q

and rewrites it to

    pad(x_q, value = z_x) -> conv2d(int8|uint8, int8, out int32)
      -> + (round(b / (s_x s_w[c])) - z_x * sum(W_q[c]))        (int32, per channel)
      -> float(acc) * ((s_x s_w[c]) / s_y) -> activation -> Q(1, z_y)

Padding with the input's zero point keeps every window "full", so the zero-point correction
is one constant per output channel. The requantize epilogue is elementwise and fuses into the
conv kernel: one float multiply per output, with the scale ONNX Runtime's integer runtime uses
(QLinearConv's (x_scale * w_scale) / y_scale in float32), where the QDQ graph's float
semantics multiply by s_x s_w and divide by s_y. The division (vdivps) was the costliest
instruction of the epilogue, which dominates convs with few MACs per output (depthwise, small
1x1). With power-of-two scales (QATIE's default) every step is exact either way, so the
result equals the QDQ graph's float semantics bit for bit; with arbitrary scales it equals
ORT's exact integer kernels and differs from the float semantics only where rounding the
product differently moves a value across a rounding boundary (and by the bias rounding onto
the accumulator grid, as every int8 runtime does).

`IntegerGemm` matches the same chain around a 2-D `matmul` with constant weights (ONNX Gemm
and MatMul) and builds the same integer conv on [N, K, 1, 1].
"""

from __future__ import annotations

import functools
import operator
from dataclasses import dataclass

import numpy as np
from tvm import relax
from tvm.relax.dpl import is_const, is_op, wildcard

from compile.frontend.rewrite import INT8_TYPES, FoldLog, Rewrite, constant

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


@dataclass(frozen=True)
class _Operands:
    """What the integer conv is built from: int8 codes (NCHW), int8 weights (OIHW), geometry."""

    data: relax.Expr
    weight: np.ndarray
    strides: tuple = (1, 1)
    padding: tuple = (0, 0, 0, 0)  # top, left, bottom, right
    dilation: tuple = (1, 1)
    groups: int = 1


class IntegerConv(Rewrite):
    """DQ -> conv2d [-> add bias] [-> relu | leakyrelu] -> Q as an int8 x int8 -> int32 conv."""

    name = "integer-conv"
    # Elementwise activations between the conv and its Q: applied to the float requantize value.
    ACTIVATIONS = ("relax.nn.relu", "relax.nn.leakyrelu")

    def __init__(self) -> None:
        self.x_q, self.s_x, self.z_x = wildcard(), is_const(), is_const()
        self.w_q, self.s_w, self.z_w = is_const(), is_const(), is_const()
        self.dq_w = is_op("relax.dequantize")(self.w_q, self.s_w, self.z_w)
        self.op = self._operation(is_op("relax.dequantize")(self.x_q, self.s_x, self.z_x), self.dq_w)
        # bias: a float constant (QATIE, PyTorch) or int32 behind a DequantizeLinear (ORT's quantizer)
        self.bias = is_const()
        self.bias_q, self.bias_s, self.bias_z = is_const(), is_const(), is_const()
        self.bias_dq = is_op("relax.dequantize")(self.bias_q, self.bias_s, self.bias_z)
        bias = self.bias | self.bias_dq
        self.biased = is_op("relax.add")(self.op, bias | is_op("relax.reshape")(bias, wildcard()))
        body = self.biased | self.op
        self.activations = [is_op(name)(body) for name in self.ACTIVATIONS]
        self.s_y, self.z_y = is_const(), is_const()
        self.root = is_op("relax.quantize")(functools.reduce(operator.or_, [*self.activations, body]),
                                            self.s_y, self.z_y)

    def _operation(self, dq_x, dq_w):
        """The float op between the dequantized operands, as a pattern."""
        return is_op("relax.nn.conv2d")(dq_x, dq_w)

    def _operands(self, match: dict, log: FoldLog) -> _Operands | None:
        """The matched op as an integer conv's operands, or None after `log.skip`."""
        attrs = match[self.op].attrs
        if (attrs.data_layout, attrs.kernel_layout, attrs.out_layout) != ("NCHW", "OIHW", "NCHW"):
            log.skip(self.name, f"layout {attrs.data_layout}/{attrs.kernel_layout}")
            return None
        return _Operands(match[self.x_q], constant(match[self.w_q]), tuple(attrs.strides), tuple(attrs.padding),
                         tuple(attrs.dilation), int(attrs.groups))

    def _result(self, codes: relax.Expr, call: relax.Call) -> relax.Expr:
        """The integer conv's quantized NCHW output as the matched Q's value."""
        return codes

    def rewrite(self, call: relax.Call, match: dict, log: FoldLog) -> relax.Expr:
        x_dtype = str(match[self.x_q].ty.dtype)
        w_dtype = str(constant(match[self.w_q]).dtype)
        if x_dtype not in INT8_TYPES or w_dtype != "int8":
            log.skip(self.name, f"{x_dtype} x {w_dtype} operands")
            return call
        if np.any(constant(match[self.z_w]) != 0):
            log.skip(self.name, "asymmetric weights (nonzero weight zero point)")
            return call
        operands = self._operands(match, log)
        if operands is None:
            return call
        w_q = operands.weight
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

        data = operands.data
        top, left, bottom, right = (int(v) for v in operands.padding)
        if top or left or bottom or right:
            data = relax.op.nn.pad(data, [0, 0, 0, 0, top, bottom, left, right], pad_value=float(z_x))
        acc = relax.op.nn.conv2d(
            data, relax.const(w_q, "int8"), strides=operands.strides, padding=[0, 0, 0, 0],
            dilation=operands.dilation, groups=operands.groups, out_dtype="int32",
        )
        s_y = constant(match[self.s_y]).astype(np.float32).reshape(-1)
        if s_y.size not in (1, out_channels):
            log.skip(self.name, f"{s_y.size} output scales for {out_channels} channels")
            return call
        # one float32 multiply per output, (s_x * s_w[c]) / s_y computed as ONNX Runtime's
        # QLinearConv computes it (ComputeOutputScale), instead of a multiply and a division
        requant = (acc_scale / np.broadcast_to(s_y, (out_channels,))).astype(np.float32)

        channel = (1, out_channels, 1, 1)
        acc = relax.op.add(acc, relax.const(offset.astype(np.int32).reshape(channel), "int32"))
        value = relax.op.multiply(relax.op.astype(acc, "float32"), relax.const(requant.reshape(channel), "float32"))
        activation = next((match[a] for a in self.activations if a in match), None)
        if activation is not None:
            value = relax.Call(activation.op, [value], activation.attrs)
        log.apply(self.name)
        axis = int(call.attrs.axis) % len(call.ty.shape)  # a Gemm's output channels: axis 1, as a conv's
        codes = relax.op.quantize(value, relax.const(1.0, "float32"), match[self.z_y], axis=axis,
                                  out_dtype=call.attrs.out_dtype)
        return self._result(codes, call)


class IntegerGemm(IntegerConv):
    """DQ -> Gemm / MatMul (2-D, constant weights) [-> add bias] [-> activation] -> Q as the
    same integer conv, 1x1 on a 1x1 image: [N, K] codes -> [N, K, 1, 1], weights [M, K, 1, 1].
    So a classifier head runs on the target's int8 dot product like every other conv (the
    backend packs it) instead of in float between its DQ and Q."""

    name = "integer-gemm"

    def _operation(self, dq_x, dq_w):
        # ONNX Gemm with transB=1 imports as matmul(x, permute_dims(W)); MatMul as matmul(x, W)
        self.transposed = is_op("relax.permute_dims")(dq_w)
        return is_op("relax.matmul")(dq_x, self.transposed | dq_w)

    def _operands(self, match: dict, log: FoldLog) -> _Operands | None:
        x, w = match[self.x_q], constant(match[self.w_q])
        if len(x.ty.shape) != 2 or w.ndim != 2:
            log.skip(self.name, f"{len(x.ty.shape)}-D x {w.ndim}-D matmul (only 2-D)")
            return None
        transposed = self.transposed in match
        weight = w if transposed else w.T  # [M, K]
        scales = constant(match[self.s_w]).size
        output_axis = 0 if transposed else 1  # the weights' axis that indexes output channels
        if scales > 1 and int(match[self.dq_w].attrs.axis) % 2 != output_axis:
            log.skip(self.name, "per-channel weight scales along the reduction axis")
            return None
        n, k = (int(d) for d in x.ty.shape)
        return _Operands(relax.op.reshape(x, (n, k, 1, 1)), np.ascontiguousarray(weight).reshape(*weight.shape, 1, 1))

    def _result(self, codes: relax.Expr, call: relax.Call) -> relax.Expr:
        n, m = (int(d) for d in call.ty.shape)
        return relax.op.reshape(codes, (n, m))
