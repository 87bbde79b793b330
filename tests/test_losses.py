import numpy as np
import torch
from skimage.metrics import structural_similarity

from qatie.losses import psnr, ssim


def test_training_ssim_agrees_with_scikit_image_reference():
    rng = np.random.default_rng(0)
    a = rng.random((48, 48, 3)).astype(np.float32)
    b = np.clip(a + rng.normal(scale=0.1, size=a.shape), 0, 1).astype(np.float32)
    ref = structural_similarity(a, b, data_range=1.0, channel_axis=2, gaussian_weights=True,
                                sigma=1.5, use_sample_covariance=False)
    ours = float(ssim(torch.from_numpy(a.transpose(2, 0, 1))[None], torch.from_numpy(b.transpose(2, 0, 1))[None]))
    assert abs(ours - ref) < 2e-3


def test_psnr_of_known_mse():
    x = torch.zeros(1, 3, 8, 8)
    assert abs(float(psnr(x + 0.1, x)) - 20.0) < 1e-4
