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


def run_cli(*args: str) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def run_console(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """The installed `qatie` entry point as a user runs it (real process, real exit code)."""
    return subprocess.run(
        [sys.executable, "-m", "qatie", *map(str, args)],
        capture_output=True, text=True, timeout=timeout,
    )


def assert_one_line_error(stderr: str, returncode: int, *needles: str) -> None:
    lines = [l for l in stderr.strip().splitlines() if l.strip()]
    assert returncode == 2, stderr
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1 or lines[-1].startswith("Error:"), stderr
    for needle in needles:
        assert needle in stderr, (needle, stderr)
