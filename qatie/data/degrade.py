"""A phone-like degradation pipeline: what a small sensor and its ISP do to a clean photo.

Order follows the capture path: optics blur, sensor noise (signal-dependent shot noise plus read
noise), a flat tone curve and a colour cast from the ISP, then JPEG. Parameters are drawn from a
seeded generator so every pair can be rebuilt exactly.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter


def degrade(clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Degrade an H x W x 3 float image in [0, 1]; returns the same shape and range."""
    sigma = rng.uniform(0.4, 1.1)
    img = gaussian_filter(clean, sigma=(sigma, sigma, 0))
    shot, read = rng.uniform(0.0005, 0.003), rng.uniform(0.0001, 0.0004)
    img = img + rng.normal(size=img.shape) * np.sqrt(shot * np.clip(img, 0, 1) + read)
    gamma, contrast = rng.uniform(1.15, 1.6), rng.uniform(0.75, 0.92)
    img = np.clip(img, 0, 1) ** gamma
    img = 0.5 + contrast * (img - 0.5)
    img = img * rng.uniform(0.85, 1.1, size=3)
    return jpeg(np.clip(img, 0, 1), quality=int(rng.integers(35, 75)))


def jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    """Round-trip through Pillow's JPEG encoder at the given quality."""
    buf = io.BytesIO()
    Image.fromarray(to_uint8(img)).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())), dtype=np.float32) / 255.0


def to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)
