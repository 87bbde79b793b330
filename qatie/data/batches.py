"""Training batches from image pairs, as torch tensors (kept apart from `pairs`, so reading
images and the reference photo does not import torch: 2.6 s of every `qatie-compile bench`)."""

from __future__ import annotations

import numpy as np
import torch

from qatie.data.pairs import ImagePair


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """H x W x 3 float in [0, 1] -> 1 x 3 x H x W."""
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).unsqueeze(0)


def sample_patches(
    pairs: list[ImagePair], batch: int, patch: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of aligned random crops (with random flips) drawn with `generator`.

    Drawing from an explicit generator seeded per step makes a resumed run see exactly the
    batches the killed run would have seen.
    """
    inputs, targets = [], []
    for _ in range(batch):
        pair = pairs[int(torch.randint(len(pairs), (1,), generator=generator))]
        h, w = pair.inp.shape[:2]
        top = int(torch.randint(h - patch + 1, (1,), generator=generator))
        left = int(torch.randint(w - patch + 1, (1,), generator=generator))
        crop_in = pair.inp[top : top + patch, left : left + patch]
        crop_t = pair.target[top : top + patch, left : left + patch]
        if bool(torch.randint(2, (1,), generator=generator)):
            crop_in, crop_t = crop_in[:, ::-1], crop_t[:, ::-1]
        inputs.append(to_tensor(crop_in))
        targets.append(to_tensor(crop_t))
    return torch.cat(inputs), torch.cat(targets)
