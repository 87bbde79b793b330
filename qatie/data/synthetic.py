"""The built-in offline pair set: scikit-image's bundled photos, degraded phone-style.

The clean photos ship inside the scikit-image wheel (no download at run time). Two photos are
held out for evaluation and never seen in training.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from skimage import data as skdata
from skimage.transform import resize

from qatie.data.degrade import degrade
from qatie.data.pairs import ImagePair

TRAIN_IMAGES = ("astronaut", "coffee", "hubble_deep_field", "retina", "immunohistochemistry", "colorwheel")
HELDOUT_IMAGES = ("chelsea", "rocket")
VARIANTS_PER_IMAGE = 3
MAX_SIDE = 512


def _clean(name: str) -> np.ndarray:
    img = np.asarray(getattr(skdata, name)(), dtype=np.float32)[..., :3] / 255.0
    scale = MAX_SIDE / max(img.shape[:2])
    if scale < 1:
        shape = (round(img.shape[0] * scale), round(img.shape[1] * scale), 3)
        img = resize(img, shape, anti_aliasing=True).astype(np.float32)
    return img


@lru_cache(maxsize=4)
def synthetic_pairs(split: str, seed: int = 0) -> tuple[ImagePair, ...]:
    """Degraded/clean pairs of the 'train' or 'heldout' photos; deterministic for a seed."""
    names = {"train": TRAIN_IMAGES, "heldout": HELDOUT_IMAGES}[split]
    pairs = []
    for index, name in enumerate(names):
        clean = _clean(name)
        for variant in range(VARIANTS_PER_IMAGE):
            rng = np.random.default_rng([seed, index, variant, split == "heldout"])
            pairs.append(ImagePair(f"{name}-{variant}", degrade(clean, rng), clean))
    return tuple(pairs)
