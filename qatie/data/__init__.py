"""Datasets: the built-in synthetic pairs or a paired folder in the DPED layout."""

from __future__ import annotations

from pathlib import Path

from qatie.data.paired_folder import paired_folder
from qatie.data.pairs import ImagePair
from qatie.data.synthetic import synthetic_pairs
from qatie.errors import QatieError

SYNTHETIC = "synthetic"


def load_pairs(spec: str, split: str, seed: int = 0) -> list[ImagePair]:
    """`spec` is 'synthetic' or a folder; a folder may hold 'train/' and 'test/' DPED trees.

    A folder without those split subfolders is used whole for both splits.
    """
    if spec == SYNTHETIC:
        return list(synthetic_pairs("train" if split == "train" else "heldout", seed))
    root = Path(spec)
    sub = root / ("train" if split == "train" else "test")
    return paired_folder(sub if sub.is_dir() else root)


def check_patch_fits(pairs: list[ImagePair], patch: int, spec: str) -> None:
    smallest = min(min(p.inp.shape[:2]) for p in pairs)
    if patch > smallest:
        raise QatieError(f"--patch {patch} is larger than the smallest image in {spec} ({smallest} px)")
