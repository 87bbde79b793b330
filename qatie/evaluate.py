"""`qatie eval`: FP32, PTQ int8 and QAT int8 (both simulated) on held-out pairs, in one table.

PSNR and SSIM come from scikit-image's reference implementations, on outputs rounded to 8-bit
image levels like every image a user would look at.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from qatie.atomic import atomic_path
from qatie.checkpoint import build_model
from qatie.data import load_pairs
from qatie.data.batches import sample_patches, to_tensor
from qatie.data.degrade import to_uint8
from qatie.data.pairs import ImagePair
from qatie.model import QATIENet
from qatie.ptq import post_training_quantize
from qatie.quant.fake_quant import set_quant_mode

PANEL_HEIGHT = 192


@dataclass
class Row:
    method: str
    precision: str
    psnr: float
    ssim: float


def _score(images: list[np.ndarray], pairs: list[ImagePair]) -> tuple[float, float]:
    psnrs, ssims = [], []
    for out, pair in zip(images, pairs):
        out8, tgt8 = to_uint8(out), to_uint8(pair.target)
        psnrs.append(peak_signal_noise_ratio(tgt8, out8, data_range=255))
        ssims.append(structural_similarity(tgt8, out8, data_range=255, channel_axis=2))
    return float(np.mean(psnrs)), float(np.mean(ssims))


@torch.no_grad()
def enhance(model: QATIENet, pairs: list[ImagePair]) -> list[np.ndarray]:
    model.eval()
    return [model(to_tensor(p.inp))[0].numpy().transpose(1, 2, 0) for p in pairs]


def evaluation_models(ckpt: dict, calib_pairs: list[ImagePair], ptq_batches: int) -> dict[str, tuple[str, QATIENet]]:
    """The networks to compare: label -> (precision, model), each only when the checkpoint has it."""
    models: dict[str, tuple[str, QATIENet]] = {}
    if ckpt.get("fp32_model") is not None:
        fp32 = build_model(ckpt, "fp32_model")
        set_quant_mode(fp32, "off")
        models["FP32"] = ("fp32", fp32)
        generator = torch.Generator().manual_seed(12345)
        batches = (sample_patches(calib_pairs, 8, min(64, _min_side(calib_pairs)), generator)[0] for _ in range(ptq_batches))
        models["PTQ"] = ("int8 (simulated)", post_training_quantize(build_model(ckpt, "fp32_model"), batches))
    if ckpt["config"]["train"]["qat_steps"] > 0:
        qat = build_model(ckpt)
        set_quant_mode(qat, "frozen")
        models["QAT"] = ("int8 (simulated)", qat)
    return models


def _min_side(pairs: list[ImagePair]) -> int:
    return min(min(p.inp.shape[:2]) for p in pairs)


def evaluate(ckpt: dict, data: str, ptq_batches: int, panel: Path | None) -> tuple[list[Row], dict]:
    """Score every available model on the held-out split; optionally write a comparison PNG."""
    seed = ckpt["config"]["train"]["seed"]
    heldout = load_pairs(data, "heldout", seed)
    models = evaluation_models(ckpt, load_pairs(data, "train", seed), ptq_batches)
    outputs = {label: enhance(model, heldout) for label, (_, model) in models.items()}
    rows = [Row("input (degraded)", "-", *_score([p.inp for p in heldout], heldout))]
    rows += [Row(label, models[label][0], *_score(outputs[label], heldout)) for label in outputs]
    if panel is not None:
        write_panel(heldout, outputs, panel)
    return rows, {"heldout_images": [p.name for p in heldout], "data": data}


def write_panel(pairs: list[ImagePair], outputs: dict[str, list[np.ndarray]], path: Path, count: int = 3) -> None:
    """Side by side per image: input | FP32 | QAT | target (columns the checkpoint has)."""
    step = max(1, len(pairs) // count)
    rows = []
    for i in range(0, len(pairs), step)[:count]:
        cells = [pairs[i].inp] + [outputs[k][i] for k in ("FP32", "QAT") if k in outputs] + [pairs[i].target]
        rows.append(np.concatenate([_fit_height(c) for c in cells], axis=1))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows]
    with atomic_path(path) as tmp:
        Image.fromarray(np.concatenate(rows, axis=0)).save(tmp, format="PNG")


def _fit_height(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    pil = Image.fromarray(to_uint8(img)).resize((round(w * PANEL_HEIGHT / h), PANEL_HEIGHT), Image.BILINEAR)
    return np.asarray(pil)


def format_table(rows: list[Row]) -> str:
    """Markdown table with the PSNR change against FP32 (or the input when there is no FP32)."""
    ref = next((r for r in rows if r.method == "FP32"), rows[0])
    lines = ["| model | precision | PSNR (dB) | SSIM | ΔPSNR vs " + ref.method + " |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.method} | {r.precision} | {r.psnr:.2f} | {r.ssim:.4f} | {r.psnr - ref.psnr:+.2f} |")
    return "\n".join(lines)
