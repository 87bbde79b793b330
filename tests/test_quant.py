import torch

from qatie.model import ModelConfig, QATIENet
from qatie.ptq import calibrate
from qatie.quant.fake_quant import (
    ActQuant,
    QConv2d,
    act_quantizers,
    set_quant_mode,
    weight_scale,
)
from qatie.quant.layout import ACTIVATION_ROLES, IMAGE_SCALE
from qatie.references import agreement


def test_frozen_activation_quant_round_trips_grid_values_exactly():
    q = ActQuant("ema")
    q.mode = "observe"
    q(torch.linspace(-0.7, 1.9, 100))
    q.freeze()
    scale, zp = float(q.scale), int(q.zero_point)
    grid = (torch.arange(-128, 128, dtype=torch.float32) - zp) * scale
    assert torch.equal(q(grid), grid)
    # out-of-range values saturate at the ends of the int8 grid
    assert float(q(torch.tensor([100.0]))) == grid[-1]
    assert float(q(torch.tensor([-100.0]))) == grid[0]
    # in range, the error is at most half a step
    x = torch.rand(1000) * 2.6 - 0.7
    assert float((q(x) - x).abs().max()) <= scale / 2 + 1e-7


def test_range_includes_zero_and_zero_is_exact():
    q = ActQuant("ema")
    q.mode = "observe"
    q(torch.tensor([0.5, 2.0]))  # all-positive range is widened to include 0
    q.freeze()
    assert float(q(torch.zeros(3)).abs().max()) == 0.0


def test_weight_quant_is_symmetric_per_output_channel():
    conv = QConv2d(3, 5, 3, pow2=False)
    with torch.no_grad():
        conv.weight.mul_(torch.arange(1, 6).view(5, 1, 1, 1).float())
    conv.quantize_weight = True
    wq = conv.quantized_weight().detach()
    scale = weight_scale(conv.weight, pow2=False)
    q = wq / scale.view(5, 1, 1, 1)
    assert torch.allclose(q, q.round(), atol=1e-4)
    assert int(q.round().abs().max()) == 127
    assert int(conv.w_zero_point.abs().max()) == 0
    assert float((wq - conv.weight.detach()).abs().amax(dim=(1, 2, 3)).sub(scale / 2).max()) <= 1e-7


def test_lsq_ranges_receive_gradients_in_qat():
    q = ActQuant("lsq")
    q.mode = "observe"
    q(torch.linspace(-1, 1, 50))
    q.mode = "qat"
    (q(torch.linspace(-2, 2, 50)) ** 2).sum().backward()
    assert q.lo.grad is not None and q.hi.grad is not None
    assert float(q.hi.grad.abs()) > 0


def test_model_quantizers_are_exactly_the_layout_table_roles():
    model = QATIENet(ModelConfig(width=4))
    roles = {name.rsplit(".", 1)[-1].removeprefix("q_") for name, _ in act_quantizers(model)}
    assert roles == set(ACTIVATION_ROLES)


def test_calibration_then_frozen_matches_qat_forward():
    torch.manual_seed(0)
    model = QATIENet(ModelConfig(width=4, range_method="lsq")).eval()
    x = torch.rand(2, 3, 32, 32)
    calibrate(model, [x])
    set_quant_mode(model, "qat")
    with torch.no_grad():
        qat_out = model(x)
    set_quant_mode(model, "frozen")
    with torch.no_grad():
        frozen_out = model(x)
    assert agreement(qat_out.numpy(), frozen_out.numpy(), IMAGE_SCALE).passed
