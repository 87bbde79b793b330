import numpy as np
import pytest
import torch
from PIL import Image

from qatie.data import load_pairs
from qatie.data.batches import sample_patches
from qatie.data.degrade import degrade
from qatie.data.paired_folder import paired_folder
from qatie.data.synthetic import HELDOUT_IMAGES, TRAIN_IMAGES, synthetic_pairs
from qatie.errors import QatieError
from tests.helpers import assert_one_line_error, run_console


def _write(path, value, size=(24, 20)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*size, 3), value, np.uint8)).save(path)


def test_dped_pairs_are_matched_by_name_not_listing_order(tmp_path):
    # phone names sort differently from their targets' creation order; values tie each pair
    for name, value in [("b", 10), ("a", 200), ("c", 90)]:
        _write(tmp_path / "iphone" / f"{name}.jpg", value)
    for name, value in [("c", 91), ("a", 201), ("b", 11)]:
        _write(tmp_path / "canon" / f"{name}.png", value)
    pairs = paired_folder(tmp_path)
    assert [p.name for p in pairs] == ["a", "b", "c"]
    for p in pairs:
        assert abs(float(p.inp.mean()) - float(p.target.mean())) < 3 / 255


def test_unpaired_and_empty_folders_are_errors(tmp_path):
    (tmp_path / "iphone").mkdir()
    (tmp_path / "canon").mkdir()
    with pytest.raises(QatieError, match="no images"):
        paired_folder(tmp_path)
    _write(tmp_path / "iphone" / "x.jpg", 1)
    with pytest.raises(QatieError, match="'x'"):
        paired_folder(tmp_path)


def test_bad_dataset_reaches_the_user_as_one_line(tmp_path):
    (tmp_path / "iphone").mkdir()
    (tmp_path / "canon").mkdir()
    result = run_console("train", "-o", tmp_path / "out.pt", "--data", tmp_path, "--width", "4")
    assert_one_line_error(result.stderr, result.returncode, str(tmp_path), "no images")
    assert not (tmp_path / "out.pt").exists()


def test_synthetic_set_is_offline_deterministic_and_split():
    assert not set(TRAIN_IMAGES) & set(HELDOUT_IMAGES)
    a, b = synthetic_pairs("heldout", 0), synthetic_pairs("heldout", 0)
    assert a is b or all(np.array_equal(x.inp, y.inp) for x, y in zip(a, b))
    for pair in a:
        assert pair.inp.shape == pair.target.shape and pair.inp.dtype == np.float32
        assert 0.0 <= pair.inp.min() and pair.inp.max() <= 1.0
        assert not np.array_equal(pair.inp, pair.target)


def test_degradation_depends_only_on_its_seed():
    clean = np.random.default_rng(1).random((40, 48, 3)).astype(np.float32)
    one = degrade(clean, np.random.default_rng(7))
    two = degrade(clean, np.random.default_rng(7))
    assert np.array_equal(one, two) and one.shape == clean.shape
    assert not np.array_equal(one, degrade(clean, np.random.default_rng(8)))


def test_patches_are_aligned_crops(tmp_path):
    for name in "ab":
        _write(tmp_path / "phone" / f"{name}.png", 50)
        _write(tmp_path / "canon" / f"{name}.png", 50)
    pairs = load_pairs(str(tmp_path), "train")
    inp, tgt = sample_patches(pairs, 3, 16, torch.Generator().manual_seed(0))
    assert inp.shape == tgt.shape == (3, 3, 16, 16)
