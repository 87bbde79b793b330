"""The input a model is run on by bench, profile and check-opencl: the user's .npy, or a real
degraded photo at the model's size (noise saturates every quantizer and says little)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from compile.artifact import TensorInfo
from qatie.errors import QatieError
from qatie.references import reference_input


def model_input(spec: TensorInfo, npy: Path | None) -> np.ndarray:
    """The given .npy (checked against `spec`), else the held-out reference photo at its size."""
    if npy is not None:
        try:
            x = np.load(npy)
        except (OSError, ValueError) as exc:
            raise QatieError(f"--input {npy}: not a readable .npy file ({exc})") from None
        if list(x.shape) != spec.shape:
            raise QatieError(f"--input {npy}: shape {list(x.shape)}, the model takes {spec.shape}")
        return x.astype(spec.dtype)
    x = reference_input(*spec.image_size)  # NCHW
    return spec.from_real(np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if spec.layout == "NHWC" else x)
