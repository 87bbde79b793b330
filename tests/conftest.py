"""Shared fixtures: one tiny trained checkpoint per session, and a CLI runner."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner, Result

from qatie.cli import main
from qatie.model import ModelConfig
from qatie.train import TrainConfig, train

torch.set_num_threads(1)

TINY = dict(model=ModelConfig(width=4), patch=32, batch=2, fp32_steps=3, qat_steps=3, calib_batches=2, ckpt_every=2)


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A width-4 net after 3 float steps and 3 QAT steps on the synthetic set."""
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    train(TrainConfig(**TINY), path)
    return path


@pytest.fixture(scope="session")
def tiny_onnx(tiny_ckpt: Path, tmp_path_factory: pytest.TempPathFactory):
    """The tiny checkpoint exported as QDQ ONNX at 40x36: (path, conv count, parity reports)."""
    from qatie.checkpoint import load_checkpoint
    from qatie.export import export

    out = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    convs, spec, fused = export(load_checkpoint(tiny_ckpt), 40, 36, out, fp32=False)
    return out, convs, spec, fused


def run_cli(*args: str) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def run_console(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """The installed `qatie` entry point as a user runs it (real process, real exit code)."""
    return subprocess.run(
        [sys.executable, "-m", "qatie", *map(str, args)],
        capture_output=True, text=True, timeout=timeout,
    )


def console_script(script: str) -> str:
    """Path of an installed console script (`qatie-compile`, ...) in this interpreter's environment."""
    return str(Path(sys.executable).parent / script)


def run_console_script(script: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run an installed console script as a user does (real process, real exit code)."""
    return subprocess.run([console_script(script), *map(str, args)], capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(stderr: str, returncode: int, *needles: str) -> None:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert returncode == 2, stderr
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1 or lines[-1].startswith("Error:"), stderr
    for needle in needles:
        assert needle in stderr, (needle, stderr)
