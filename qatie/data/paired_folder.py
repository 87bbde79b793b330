"""Paired folders in the DPED layout: `<root>/<phone>/NAME.jpg` matched with `<root>/canon/NAME.jpg`.

Pairs are matched by file name, never by listing order: a missing or extra file on either side
is an error that names it, because a silently shifted pairing trains the wrong mapping.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from qatie.data.pairs import ImagePair
from qatie.errors import QatieError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"}
DEFAULT_TARGET_DIR = "canon"


def _images(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}


def _load(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError) as exc:
        raise QatieError(f"{path}: not a readable image ({exc}); remove or replace it") from None


def paired_folder(root: Path, target_dir: str = DEFAULT_TARGET_DIR) -> list[ImagePair]:
    """Load every (phone, target) pair under `root`; the phone folder is the other subfolder."""
    if not root.is_dir():
        raise QatieError(f"{root}: dataset folder does not exist")
    target = root / target_dir
    others = [d for d in sorted(root.iterdir()) if d.is_dir() and d.name != target_dir]
    if not target.is_dir() or len(others) != 1:
        raise QatieError(
            f"{root}: expected DPED layout with exactly two subfolders, the phone images and "
            f"'{target_dir}/' (targets); found {[d.name for d in root.iterdir() if d.is_dir()]}"
        )
    phone_files, target_files = _images(others[0]), _images(target)
    if not phone_files and not target_files:
        raise QatieError(f"{root}: no images in {others[0].name}/ or {target_dir}/")
    unpaired = sorted(set(phone_files) ^ set(target_files))
    if unpaired:
        raise QatieError(
            f"{root}: {len(unpaired)} image(s) without a partner of the same name in "
            f"{others[0].name}/ and {target_dir}/, e.g. '{unpaired[0]}'; pairs are matched by file name"
        )
    pairs = []
    for stem in sorted(phone_files):
        inp, tgt = _load(phone_files[stem]), _load(target_files[stem])
        if inp.shape != tgt.shape:
            raise QatieError(
                f"{phone_files[stem]}: size {inp.shape[:2]} differs from its target's {tgt.shape[:2]}"
            )
        pairs.append(ImagePair(stem, inp, tgt))
    return pairs
