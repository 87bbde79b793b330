"""The QATIE network: gated encoder blocks and multi-scale refinement (docs/design.md, "The network").

Every block carries its own quantizers, named after the roles in `qatie.quant.layout`, so the
same module is the float network, the QAT network and the exported int8 network; only
`set_quant_mode` changes between them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from qatie.errors import QatieError
from qatie.quant.fake_quant import ActQuant, QConv2d, RangeMethod
from qatie.quant.layout import IMAGE_SCALE, POW2_INPUT_SCALE

LRELU_SLOPE = 0.2
MIN_SIZE = 16


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild the network from a checkpoint."""

    width: int = 32
    range_method: RangeMethod = "lsq"
    pow2_scales: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class QuantSpec:
    """How a block builds its quantizers (from ModelConfig)."""

    method: RangeMethod
    pow2: bool

    def act(self) -> ActQuant:
        return ActQuant(self.method, pow2=self.pow2)

    def conv3x3(self, cin: int, cout: int, stride: int = 1) -> QConv2d:
        return QConv2d(cin, cout, 3, stride=stride, padding=1, pow2=self.pow2)

    def conv1x1(self, cin: int, cout: int) -> QConv2d:
        return QConv2d(cin, cout, 1, pow2=self.pow2)


class GatedEncoder(nn.Module):
    """G(in, out): two parallel 3x3 stride-2 convs with tanh; returns (ta, ta * tb, tb)."""

    def __init__(self, cin: int, cout: int, spec: QuantSpec) -> None:
        super().__init__()
        self.conv_a = spec.conv3x3(cin, cout, stride=2)
        self.conv_b = spec.conv3x3(cin, cout, stride=2)
        self.q_conv_a = spec.act()
        self.q_conv_b = spec.act()
        self.q_tanh = spec.act()
        self.q_gate = spec.act()

    def forward(self, x: torch.Tensor, q_x: ActQuant) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        ta = self.q_tanh(torch.tanh(self.q_conv_a(self.conv_a(x, q_x))))
        tb = self.q_tanh(torch.tanh(self.q_conv_b(self.conv_b(x, q_x))))
        return ta, self.q_gate(ta * tb), tb


class RefineBlock(nn.Module):
    """R(in, out): instance-normed 3x3 and 1x1 branches, concatenated, two 3x3s plus a 1x1 shortcut."""

    def __init__(self, cin: int, cout: int, spec: QuantSpec) -> None:
        super().__init__()
        self.conv_u = spec.conv3x3(cin, cin)
        self.norm = nn.InstanceNorm2d(cin, affine=True)
        self.conv_v = spec.conv1x1(cin, cin)
        self.conv_z1 = spec.conv3x3(2 * cin, cout)
        self.conv_z2 = spec.conv3x3(cout, cout)
        self.conv_side = spec.conv1x1(2 * cin, cout)
        self.q_conv_u = spec.act()
        self.q_k = spec.act()
        self.q_z1 = spec.act()
        self.q_z2 = spec.act()
        self.q_side = spec.act()
        self.q_out = spec.act()

    def forward(self, x: torch.Tensor, q_x: ActQuant) -> torch.Tensor:
        u = self.q_k(F.leaky_relu(self.norm(self.q_conv_u(self.conv_u(x, q_x))), LRELU_SLOPE))
        v = self.q_k(self.conv_v(x, q_x))
        k = self.q_k(torch.cat([u, v], dim=1))
        z1 = self.q_z1(F.leaky_relu(self.conv_z1(k, self.q_k), LRELU_SLOPE))
        z2 = self.q_z2(F.leaky_relu(self.conv_z2(z1, self.q_z1), LRELU_SLOPE))
        return self.q_out(z2 + self.q_side(self.conv_side(k, self.q_k)))


class UpBlock(nn.Module):
    """U(in, out): nearest resize to the skip's size (odd sizes included), then a 3x3 conv.

    The resize is exact on int8, so its output is re-quantized with its input's quantizer
    (`q_in`), which keeps a DequantizeLinear in front of the conv without changing any value.
    """

    def __init__(self, cin: int, cout: int, spec: QuantSpec) -> None:
        super().__init__()
        self.conv = spec.conv3x3(cin, cout)
        self.q_up = spec.act()

    def forward(self, x: torch.Tensor, size: tuple[int, int], q_in: ActQuant) -> torch.Tensor:
        return self.q_up(self.conv(q_in(F.interpolate(x, size=size, mode="nearest")), q_in))


class DecoderStage(nn.Module):
    """Up-sample the coarser features, concat with the skips, fuse with 1x1, refine."""

    def __init__(self, cin: int, cout: int, spec: QuantSpec) -> None:
        super().__init__()
        self.up = UpBlock(cin, cout, spec)
        self.q_cat = spec.act()
        self.fuse = spec.conv1x1(4 * cout, cout)
        self.q_fuse = spec.act()
        self.refine = RefineBlock(cout, cout, spec)

    def forward(
        self, coarse: torch.Tensor, q_coarse: ActQuant, skips: list[torch.Tensor]
    ) -> torch.Tensor:
        up = self.up(coarse, tuple(skips[0].shape[-2:]), q_coarse)
        cat = self.q_cat(torch.cat([up, *skips], dim=1))
        return self.refine(self.q_fuse(self.fuse(cat, self.q_cat)), self.q_fuse)


class QATIENet(nn.Module):
    """y = clamp(x + head(...), 0, 1) over a 3-level gated encoder / refinement decoder."""

    def __init__(self, config: ModelConfig = ModelConfig()) -> None:
        super().__init__()
        c, spec = config.width, QuantSpec(config.range_method, config.pow2_scales)
        self.config = config
        self.q_input = ActQuant(fixed_scale=POW2_INPUT_SCALE if config.pow2_scales else IMAGE_SCALE)
        self.enc1 = GatedEncoder(3, c, spec)
        self.ref1 = RefineBlock(c, c, spec)
        self.enc2 = GatedEncoder(c, 2 * c, spec)
        self.ref2 = RefineBlock(2 * c, 2 * c, spec)
        self.bottleneck = RefineBlock(2 * c, 4 * c, spec)
        self.dec4 = DecoderStage(4 * c, 2 * c, spec)
        self.dec2 = DecoderStage(2 * c, c, spec)
        self.head_up = UpBlock(c, c, spec)
        self.head = spec.conv3x3(c, 3)
        self.q_head = spec.act()
        self.q_output = ActQuant(fixed_scale=IMAGE_SCALE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3 or min(x.shape[-2:]) < MIN_SIZE:
            raise QatieError(
                f"input must be N x 3 x H x W with H, W >= {MIN_SIZE}; got {tuple(x.shape)}"
            )
        x = self.q_input(x)
        ta1, g1, tb1 = self.enc1(x, self.q_input)
        s2 = self.ref1(g1, self.enc1.q_gate)
        ta2, g2, tb2 = self.enc2(s2, self.ref1.q_out)
        s4 = self.ref2(g2, self.enc2.q_gate)
        b = self.bottleneck(self.ref2.q_out(F.max_pool2d(s4, 2)), self.ref2.q_out)
        f4 = self.dec4(b, self.bottleneck.q_out, [s4, ta2, tb2])
        f2 = self.dec2(f4, self.dec4.refine.q_out, [s2, ta1, tb1])
        up = self.head_up(f2, tuple(x.shape[-2:]), self.dec2.refine.q_out)
        residual = self.q_head(self.head(up, self.head_up.q_up))
        return self.q_output(torch.clamp(x + residual, 0.0, 1.0))


def count_parameters(model: nn.Module) -> int:
    """Weights and biases of the network proper (quantizer ranges are not network parameters)."""
    return sum(
        p.numel()
        for name, p in model.named_parameters()
        if not name.endswith((".lo", ".hi"))
    )


def macs_per_pixel(model: QATIENet, height: int = 256, width: int = 256) -> float:
    """Multiply-accumulates of all convs for one H x W image, divided by H * W."""
    total = 0

    def count(module: nn.Conv2d, _inputs, output: torch.Tensor) -> None:
        nonlocal total
        kh, kw = module.kernel_size
        total += output.numel() * (module.in_channels // module.groups) * kh * kw

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, height, width))
    finally:
        for hook in hooks:
            hook.remove()
    return total / (height * width)
