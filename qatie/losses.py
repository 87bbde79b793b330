"""Training loss: L1 plus (1 - SSIM), the paper's fidelity + structure objective."""

from __future__ import annotations

import torch
import torch.nn.functional as F

_C1, _C2 = 0.01**2, 0.03**2


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float32) - size // 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(3, 1, size, size).contiguous()


_WINDOW = _gaussian_window()


def ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean SSIM (Gaussian 11x11, sigma 1.5, data range 1) over valid windows, differentiable."""
    w = _WINDOW.to(x.dtype)
    mu_x, mu_y = F.conv2d(x, w, groups=3), F.conv2d(y, w, groups=3)
    var_x = F.conv2d(x * x, w, groups=3) - mu_x**2
    var_y = F.conv2d(y * y, w, groups=3) - mu_y**2
    cov = F.conv2d(x * y, w, groups=3) - mu_x * mu_y
    num = (2 * mu_x * mu_y + _C1) * (2 * cov + _C2)
    den = (mu_x**2 + mu_y**2 + _C1) * (var_x + var_y + _C2)
    return (num / den).mean()


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return -10.0 * torch.log10(F.mse_loss(x, y).clamp(min=1e-10))


def enhancement_loss(output: torch.Tensor, target: torch.Tensor, ssim_weight: float) -> torch.Tensor:
    return F.l1_loss(output, target) + ssim_weight * (1.0 - ssim(output, target))
