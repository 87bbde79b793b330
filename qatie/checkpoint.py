"""Checkpoints that carry their own config, written atomically (temp file, then rename).

A checkpoint holds the network (`model`), the float weights from before QAT (`fp32_model`,
needed for the FP32 and PTQ rows of the evaluation), the optimizer, the step and the RNG state,
so a killed run resumes where its last checkpoint left it.

Checkpoints are untrusted input: a pickle can run any code it carries. They are loaded with
`torch.load(weights_only=True)`, which admits tensors and plain data only; the one other type a
checkpoint of ours holds is torch's `TorchVersion` (a `str`), in checkpoints written before the
version was stored as a plain string, the shipped one among them.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch
from torch.torch_version import TorchVersion

from qatie.atomic import atomic_path
from qatie.errors import QatieError
from qatie.model import ModelConfig, QATIENet

FORMAT = "qatie-checkpoint-1"
SAFE_TYPES = [TorchVersion]


def save_atomic(obj: Any, path: Path) -> None:
    """torch.save through a temp file: a kill mid-write leaves the previous checkpoint intact."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load_checkpoint(path: Path) -> dict:
    """Load and validate a checkpoint; any problem is a one-line QatieError naming the file."""
    if not path.is_file():
        raise QatieError(f"{path}: checkpoint not found")
    try:
        with torch.serialization.safe_globals(SAFE_TYPES):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        named = _named_global(exc)
        if named:  # a class or function to import: code
            raise QatieError(f"{path}: refused: it holds Python objects other than tensors and plain data "
                             f"({named}), which loading would run as code") from None
        raise QatieError(f"{path}: not a readable checkpoint (UnpicklingError); it may be truncated") from None
    except Exception as exc:  # torch raises many types for truncated/corrupt files
        raise QatieError(f"{path}: not a readable checkpoint ({type(exc).__name__}); it may be truncated") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise QatieError(f"{path}: not a QATIE checkpoint (expected format '{FORMAT}')")
    if not isinstance(ckpt.get("config"), dict) or not isinstance(ckpt["config"].get("model"), dict):
        raise QatieError(f"{path}: a QATIE checkpoint without its 'config' (model and training settings); "
                         f"it cannot be rebuilt — retrain or use the checkpoint the run wrote")
    try:
        build_model(ckpt)  # config and weights must agree now, not deep inside a command
    except QatieError as exc:
        raise QatieError(f"{path}: {exc}") from None
    return ckpt


def _named_global(exc: Exception) -> str | None:
    """The first global (class or function) torch's weights-only loader refused to import, as it
    names it ('Unsupported global: ...', 'unsupported GLOBAL ...'), or None: then the bytes are
    no pickle it can read at all (torch says "Weights only load failed" for both)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    found = next((line for line in lines if "Unsupported global" in line or "GLOBAL" in line), None)
    return found and found.split(" was not an allowed global")[0].split("WeightsUnpickler error: ")[-1][:200]


def build_model(ckpt: dict, state_key: str = "model") -> QATIENet:
    """The network described by the checkpoint's config, with the given weights loaded."""
    try:
        model = QATIENet(ModelConfig(**ckpt["config"]["model"]))
    except (TypeError, ValueError) as exc:
        raise QatieError(f"checkpoint config does not describe a QATIE network ({exc})") from None
    state = ckpt.get(state_key)
    if state is None:
        raise QatieError(f"checkpoint has no '{state_key}' weights (was the FP32 phase skipped?)")
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        first = str(exc).strip().splitlines()
        detail = next((line.strip() for line in first[1:] if line.strip()), first[0] if first else "")
        raise QatieError(f"checkpoint '{state_key}' weights do not match its config "
                         f"(width {ckpt['config']['model'].get('width')}): {detail[:200]}") from None
    return model
