import pytest

from tests.helpers import assert_one_line_error, qatie_here, run_console


@pytest.mark.parametrize(
    "args, needles",
    [
        (["eval", "/nonexistent/ckpt.pt"], ["/nonexistent/ckpt.pt", "not found"]),
        (["export", "/nonexistent/ckpt.pt", "--size", "32x32", "-o", "x.onnx"], ["not found"]),
        (["info", "--size", "8x8"], [">= 16"]),
        (["info", "--size", "big"], ["HxW"]),
        (["train", "-o", "x.pt", "--bogus"], ["--bogus"]),
        (["train", "-o", "x.pt", "--patch", "8"], ["--patch 8"]),
    ],
)
def test_user_errors_are_one_line_exit_2(args, needles, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run_console(*args)
    assert_one_line_error(result.stderr, result.returncode, *needles)
    assert not list(tmp_path.iterdir())


def test_truncated_checkpoint_is_refused(tiny_ckpt, tmp_path):
    broken = tmp_path / "broken.pt"
    broken.write_bytes(tiny_ckpt.read_bytes()[:5000])
    result = run_console("export", broken, "--size", "32x32", "-o", tmp_path / "m.onnx")
    assert_one_line_error(result.stderr, result.returncode, str(broken), "truncated")
    assert not (tmp_path / "m.onnx").exists()
    # bytes that are no pickle at all are unreadable, not "code" (torch's weights-only loader
    # reports both as "Weights only load failed")
    (tmp_path / "noise.pt").write_bytes(b"garbage")
    noise = qatie_here("export", tmp_path / "noise.pt", "--size", "32x32", "-o", tmp_path / "m.onnx")
    assert_one_line_error(noise.stderr, noise.returncode, "noise.pt", "not a readable checkpoint")
    assert "refused" not in noise.stderr


def test_export_size_below_minimum_writes_nothing(tiny_ckpt, tmp_path):
    result = run_console("export", tiny_ckpt, "--size", "12x40", "-o", tmp_path / "m.onnx")
    assert_one_line_error(result.stderr, result.returncode, "12x40", ">= 16")
    assert not list(tmp_path.iterdir())
