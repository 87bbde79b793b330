"""Paired image sets (degraded input, clean target) held in memory as float32 H x W x 3 arrays."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class ImagePair:
    name: str
    inp: np.ndarray
    target: np.ndarray
