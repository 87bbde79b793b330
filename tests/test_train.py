import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from qatie.checkpoint import build_model, load_checkpoint
from qatie.train import TrainConfig, train
from tests.helpers import TINY, assert_one_line_error, run_console


def test_two_step_training_run_writes_checkpoint_with_config(tmp_path):
    out = tmp_path / "run.pt"
    last = train(TrainConfig(**{**TINY, "fp32_steps": 1, "qat_steps": 1}), out)
    ckpt = load_checkpoint(out)
    assert last["step"] == 2 and ckpt["step"] == 2 and ckpt["done"]
    assert ckpt["config"]["model"]["width"] == 4
    assert [h["phase"] for h in ckpt["history"]] == ["fp32", "qat"]
    assert ckpt["fp32_model"] is not None
    build_model(ckpt)  # rebuilds from the stored config alone


KILL_RUN = ["--width", "4", "--patch", "32", "--batch", "2", "--fp32-steps", "50", "--qat-steps", "20",
            "--ckpt-every", "5", "--calib-batches", "2"]
KILL_RUN_STEPS = 70


@pytest.mark.long
def test_killed_training_resumes_and_ends_where_an_uninterrupted_run_ends(tmp_path):
    out = tmp_path / "killed.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "qatie", "train", "-o", str(out), *KILL_RUN],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not out.exists():
            time.sleep(0.05)
        time.sleep(0.5)
        assert proc.poll() is None, "training finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    killed_at = load_checkpoint(out)["step"]  # whole: written to a temp file, then renamed
    assert 5 <= killed_at < KILL_RUN_STEPS and killed_at % 5 == 0

    resumed = subprocess.run([sys.executable, "-m", "qatie", "train", "-o", str(out), "--resume"],
                             capture_output=True, text=True, env=env, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    ckpt = load_checkpoint(out)
    assert ckpt["step"] == KILL_RUN_STEPS and ckpt["done"]
    assert [h["step"] for h in ckpt["history"]] == list(range(1, KILL_RUN_STEPS + 1))

    straight = tmp_path / "straight.pt"  # in this process (one thread, like the runs above)
    train(TrainConfig(**{**TINY, "fp32_steps": 50, "qat_steps": 20, "ckpt_every": 5}), straight)
    reference = load_checkpoint(straight)
    for key, value in reference["model"].items():
        assert torch.allclose(value.float(), ckpt["model"][key].float(), atol=1e-5), key


def test_existing_checkpoint_is_never_overwritten_without_resume(tmp_path, tiny_ckpt):
    before = tiny_ckpt.read_bytes()
    result = run_console("train", "-o", tiny_ckpt, "--width", "4", "--fp32-steps", "1", "--qat-steps", "0")
    assert_one_line_error(result.stderr, result.returncode, str(tiny_ckpt), "--resume")
    assert tiny_ckpt.read_bytes() == before
