"""Fake quantizers that simulate int8 during training and export as QuantizeLinear/DequantizeLinear.

Scales are powers of two by default (`pow2=True`). Then every dequantized value is an integer
times 2^e, so a float conv over them (PyTorch, ONNX Runtime, TVM, with or without FMA) computes
the exact integer accumulator, and the bias, fake-quantized onto the accumulator grid
(s_x * s_w[c]), adds exactly too: the float graph training sees and the int8 kernels on the
phone produce the same integers. With arbitrary float scales, summation order alone flips
rounding bins in a few of every 10^5 values, and a deep net spreads each flip; we measured 7 %
of outputs off by up to 4 steps at 256x256 between PyTorch and ONNX Runtime. The cost is up to
one bit of range per tensor, which QAT learns around.

Frozen quantizers call `torch.fake_quantize_per_{tensor,channel}_affine`: those are the ops that
`torch.onnx.export(dynamo=True)` turns into standard Q/DQ nodes, so the exported scales and zero
points are the trained buffers bit for bit. While ranges are still being learned, activations use
an LSQ-style straight-through formula instead, because torch's fake-quant op gives no gradient to
its scale.
"""

from __future__ import annotations

from typing import Iterator, Literal

import torch
from torch import nn

from qatie.quant.layout import IMAGE_ZERO_POINT, INT8_MAX, INT8_MIN

QuantMode = Literal["off", "observe", "qat", "frozen"]
RangeMethod = Literal["lsq", "ema"]

_LEVELS = INT8_MAX - INT8_MIN
_EMA_MOMENTUM = 0.9


def _round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round to nearest with a straight-through gradient (identity)."""
    return x + (torch.round(x) - x).detach()


def _pow2_ceil_ste(scale: torch.Tensor) -> torch.Tensor:
    """Smallest power of two >= scale; the gradient passes through log2 as if unrounded."""
    exponent = torch.log2(scale)
    return torch.exp2(exponent + (torch.ceil(exponent) - exponent).detach())


def range_to_qparams(lo: torch.Tensor, hi: torch.Tensor, pow2: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Affine int8 scale and (float, straight-through rounded) zero point for a range [lo, hi].

    The range is widened to include 0 so that zero is exactly representable (padding, ReLU).
    """
    lo = torch.clamp(lo, max=0.0)
    hi = torch.clamp(hi, min=0.0)
    scale = torch.clamp((hi - lo) / _LEVELS, min=2.0**-24)
    if pow2:
        scale = _pow2_ceil_ste(scale)
    zero_point = torch.clamp(_round_ste(INT8_MIN - lo / scale), INT8_MIN, INT8_MAX)
    return scale, zero_point


class ActQuant(nn.Module):
    """Per-tensor affine int8 activation quantizer with a learned (LSQ-style) or EMA-observed range.

    Modes: ``off`` (float), ``observe`` (record the range only: PTQ calibration and QAT warm-up),
    ``qat`` (simulate int8; learn or EMA-track the range), ``frozen`` (simulate int8 with the
    fixed scale/zero point that export writes). A `fixed_scale` pins an image grid (zero point
    -128) that is never learned.
    """

    def __init__(self, method: RangeMethod = "lsq", pow2: bool = True, fixed_scale: float | None = None) -> None:
        super().__init__()
        self.method = method
        self.pow2 = pow2
        self.fixed = fixed_scale is not None
        self.mode: QuantMode = "off"
        self.lo = nn.Parameter(torch.tensor(-1.0), requires_grad=method == "lsq" and not self.fixed)
        self.hi = nn.Parameter(torch.tensor(1.0), requires_grad=method == "lsq" and not self.fixed)
        self.register_buffer("observed", torch.tensor(False))
        self.register_buffer("scale", torch.tensor(fixed_scale or 1.0, dtype=torch.float32))
        self.register_buffer("zero_point", torch.tensor(IMAGE_ZERO_POINT, dtype=torch.int32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "off":
            return x
        if self.mode == "frozen" or self.fixed:
            return torch.fake_quantize_per_tensor_affine(
                x, self.scale, self.zero_point, INT8_MIN, INT8_MAX
            )
        if self.mode == "observe" or (self.mode == "qat" and self.method == "ema" and self.training):
            self._observe(x)
        if self.mode == "observe":
            return x
        scale, zero_point = range_to_qparams(self.lo, self.hi, self.pow2)
        if self.method == "ema":
            scale, zero_point = scale.detach(), zero_point.detach()
        q = torch.clamp(_round_ste(x / scale) + zero_point, INT8_MIN, INT8_MAX)
        return (q - zero_point) * scale

    @torch.no_grad()
    def _observe(self, x: torch.Tensor) -> None:
        lo, hi = x.detach().min(), x.detach().max()
        if not bool(self.observed):
            self.lo.copy_(lo)
            self.hi.copy_(hi)
            self.observed.fill_(True)
        else:
            self.lo.mul_(_EMA_MOMENTUM).add_(lo, alpha=1 - _EMA_MOMENTUM)
            self.hi.mul_(_EMA_MOMENTUM).add_(hi, alpha=1 - _EMA_MOMENTUM)

    @torch.no_grad()
    def freeze(self) -> None:
        """Fix scale and zero point from the current range; from now on they are export's."""
        if not self.fixed:
            scale, zero_point = range_to_qparams(self.lo, self.hi, self.pow2)
            self.scale.copy_(scale.to(torch.float32))
            self.zero_point.copy_(zero_point.to(torch.int32))
        self.mode = "frozen"

    def current_scale(self) -> torch.Tensor | None:
        """The scale this quantizer applies now (None while it passes floats through)."""
        if self.mode == "frozen" or (self.fixed and self.mode != "off"):
            return self.scale
        if self.mode == "qat":
            return range_to_qparams(self.lo, self.hi, self.pow2)[0].detach()
        return None

    def extra_repr(self) -> str:
        return f"method={self.method}, pow2={self.pow2}, fixed={self.fixed}, mode={self.mode}"


def weight_scale(weight: torch.Tensor, pow2: bool) -> torch.Tensor:
    """Symmetric per-output-channel int8 scale: max|w| / 127 (rounded up to 2^k with `pow2`)."""
    amax = weight.detach().abs().flatten(1).amax(dim=1)
    scale = torch.clamp(amax / INT8_MAX, min=2.0**-24)
    if pow2:
        scale = torch.exp2(torch.ceil(torch.log2(scale)))
    return scale.to(torch.float32)


def quantize_bias(bias: torch.Tensor, acc_scale: torch.Tensor) -> torch.Tensor:
    """Bias on the int32 accumulator grid (scale s_x * s_w[c]), straight-through rounded.

    This is exactly what the compiler folds into the integer accumulator, so training sees it.
    """
    return _round_ste(bias / acc_scale) * acc_scale


class QConv2d(nn.Conv2d):
    """Conv2d whose weight is fake-quantized int8 symmetric per output channel when enabled.

    The bias stays a float tensor (docs/design.md, "The quantization scheme") but its values are put on the accumulator grid
    s_x * s_w[c], where s_x is the scale of the quantizer feeding this conv (`forward`'s
    `in_quant`). The weight scale is recomputed while training and stored at freeze.
    """

    def __init__(self, *args, pow2: bool = True, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.pow2 = pow2
        self.quantize_weight = False
        self.frozen = False
        self.register_buffer("w_scale", torch.ones(self.out_channels, dtype=torch.float32))
        self.register_buffer("w_zero_point", torch.zeros(self.out_channels, dtype=torch.int32))

    def quantized_weight(self) -> torch.Tensor:
        if not self.quantize_weight:
            return self.weight
        return torch.fake_quantize_per_channel_affine(
            self.weight, self._weight_scale(), self.w_zero_point, 0, INT8_MIN, INT8_MAX
        )

    def _weight_scale(self) -> torch.Tensor:
        return self.w_scale if self.frozen else weight_scale(self.weight, self.pow2)

    def forward(self, x: torch.Tensor, in_quant: ActQuant) -> torch.Tensor:
        bias = self.bias
        in_scale = in_quant.current_scale()
        if self.quantize_weight and bias is not None and in_scale is not None:
            bias = quantize_bias(bias, in_scale * self._weight_scale())
        return self._conv_forward(x, self.quantized_weight(), bias)

    @torch.no_grad()
    def freeze(self) -> None:
        self.w_scale.copy_(weight_scale(self.weight, self.pow2))
        self.frozen = True


def act_quantizers(model: nn.Module) -> Iterator[tuple[str, ActQuant]]:
    """Each distinct activation quantizer once (shared ones appear under their first name)."""
    seen: set[int] = set()
    for name, module in model.named_modules():
        if isinstance(module, ActQuant) and id(module) not in seen:
            seen.add(id(module))
            yield name, module


def set_quant_mode(model: nn.Module, mode: QuantMode) -> None:
    """Switch the whole network between float, calibration, QAT and frozen int8 simulation.

    Weights are quantized in ``qat`` and ``frozen``; in ``observe`` (PTQ calibration) the weights
    stay float so the recorded ranges are those of the float network.
    """
    for _, quant in act_quantizers(model):
        if mode == "frozen":
            quant.freeze()
        else:
            quant.mode = mode
    for module in model.modules():
        if isinstance(module, QConv2d):
            module.quantize_weight = mode in ("qat", "frozen")
            if mode == "frozen":
                module.freeze()
            else:
                module.frozen = False
