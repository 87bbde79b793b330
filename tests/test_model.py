import pytest
import torch

from qatie.errors import QatieError
from qatie.model import ModelConfig, QATIENet, count_parameters, macs_per_pixel


@pytest.mark.parametrize("size", [(16, 16), (32, 48), (17, 17), (33, 21), (64, 64)])
def test_output_shape_matches_input_for_even_and_odd_sizes(size):
    model = QATIENet(ModelConfig(width=4))
    x = torch.rand(2, 3, *size)
    with torch.no_grad():
        y = model(x)
    assert y.shape == x.shape
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0


def test_paper_width_matches_published_size():
    model = QATIENet(ModelConfig(width=32))
    assert 0.90e6 < count_parameters(model) < 0.93e6
    assert macs_per_pixel(model, 64, 64) == pytest.approx(69.5e3, rel=0.005)


def test_residual_structure_zero_head_returns_input():
    model = QATIENet(ModelConfig(width=4))
    torch.nn.init.zeros_(model.head.weight)
    torch.nn.init.zeros_(model.head.bias)
    x = torch.rand(1, 3, 20, 24)
    assert torch.equal(model(x), x)


def test_rejects_input_below_minimum_size():
    with pytest.raises(QatieError, match=">= 16"):
        QATIENet(ModelConfig(width=4))(torch.rand(1, 3, 15, 32))
