import socket
import subprocess
import sys

import pytest

from qatie.checkpoint import load_checkpoint


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.long
def test_same_command_trains_data_parallel_with_two_processes(tmp_path):
    out = tmp_path / "ddp.pt"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--master-addr", "127.0.0.1", "--master-port", str(_free_port()),
           "-m", "qatie", "train", "-o", str(out), "--width", "4", "--patch", "32", "--batch", "2",
           "--fp32-steps", "2", "--qat-steps", "2", "--calib-batches", "1"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("step 4 (qat)") == 1  # only rank 0 reports and writes
    ckpt = load_checkpoint(out)
    assert ckpt["step"] == 4 and ckpt["done"]
