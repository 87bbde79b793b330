"""Checkpoints that carry their own config, written atomically (temp file, then rename).

A checkpoint holds the network (`model`), the float weights from before QAT (`fp32_model`,
needed for the FP32 and PTQ rows of the evaluation), the optimizer, the step and the RNG state,
so a killed run resumes where its last checkpoint left it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from qatie.atomic import atomic_path
from qatie.errors import QatieError
from qatie.model import ModelConfig, QATIENet

FORMAT = "qatie-checkpoint-1"


def save_atomic(obj: Any, path: Path) -> None:
    """torch.save through a temp file: a kill mid-write leaves the previous checkpoint intact."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load_checkpoint(path: Path) -> dict:
    """Load and validate a checkpoint; any problem is a one-line QatieError naming the file."""
    if not path.is_file():
        raise QatieError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many types for truncated/corrupt files
        raise QatieError(f"{path}: not a readable checkpoint ({type(exc).__name__}); it may be truncated") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise QatieError(f"{path}: not a QATIE checkpoint (expected format '{FORMAT}')")
    return ckpt


def build_model(ckpt: dict, state_key: str = "model") -> QATIENet:
    """The network described by the checkpoint's config, with the given weights loaded."""
    model = QATIENet(ModelConfig(**ckpt["config"]["model"]))
    state = ckpt.get(state_key)
    if state is None:
        raise QatieError(f"checkpoint has no '{state_key}' weights (was the FP32 phase skipped?)")
    model.load_state_dict(state)
    return model
