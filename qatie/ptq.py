"""Post-training quantization: the QAT quantizer layout, ranges observed on float activations.

This is the baseline QAT must beat, and also how QAT starts: a calibrated range is a better
starting point for learned ranges than an arbitrary one.
"""

from __future__ import annotations

from typing import Iterable

import torch

from qatie.model import QATIENet
from qatie.quant.fake_quant import act_quantizers, set_quant_mode


@torch.no_grad()
def calibrate(model: QATIENet, batches: Iterable[torch.Tensor]) -> int:
    """Record activation ranges (EMA of per-batch min/max) over float inputs; returns batch count."""
    for _, quant in act_quantizers(model):
        quant.observed.fill_(False)
    set_quant_mode(model, "observe")
    was_training = model.training
    model.eval()
    count = 0
    for batch in batches:
        model(batch)
        count += 1
    model.train(was_training)
    return count


def post_training_quantize(model: QATIENet, batches: Iterable[torch.Tensor]) -> QATIENet:
    """Calibrate the float `model` in place and freeze it to simulated int8."""
    calibrate(model, batches)
    set_quant_mode(model, "frozen")
    return model.eval()
