"""Helpers the test modules share: running the installed commands as a user does, and the
one-line error check."""

from __future__ import annotations

import subprocess
import sys
import traceback
from pathlib import Path

from click.testing import CliRunner, Result

from qatie.model import ModelConfig

# The paper's own published int8 TFLite model (GenAI4E/QATIE, MIT), shipped for the benchmarks
PAPER_MODEL = Path(__file__).resolve().parents[1] / "bench" / "anchors" / "qatie_c32_int8_100x100.tflite"
FIRST_CONV = "fused_conv2d_add"  # the stem conv's fused kernel in every QATIE model
# The tiny training run behind the session's checkpoint fixture (and the resume tests).
TINY = dict(model=ModelConfig(width=4), patch=32, batch=2, fp32_steps=3, qat_steps=3, calib_batches=2, ckpt_every=2)


def run_cli(*args: str) -> Result:
    """`qatie` in this process (click's runner)."""
    from qatie.cli import main

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


def run_compile(*args, timeout: float = 600) -> subprocess.CompletedProcess:
    """`qatie-compile ARGS` as a user runs it."""
    return run_console_script("qatie-compile", *args, timeout=timeout)


def run_here(main, *args) -> subprocess.CompletedProcess:
    """A command run in this process by click's runner, as a `CompletedProcess`: exit code,
    stdout, stderr, and an uncaught exception's traceback in stderr, as a real process prints it.
    For the lists of bad inputs: a real process per case cost 2-4 s of interpreter start and
    imports; `test_cli_errors` and `test_fuzz` keep real processes for the entry points."""
    result = CliRunner().invoke(main, [str(a) for a in args])
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        stderr += "".join(traceback.format_exception(result.exception))
    return subprocess.CompletedProcess(list(args), result.exit_code, result.stdout, stderr)


def compile_here(*args) -> subprocess.CompletedProcess:
    """`qatie-compile ARGS` in this process (`run_here`)."""
    from compile.cli import main

    return run_here(main, *args)


def qatie_here(*args) -> subprocess.CompletedProcess:
    """`qatie ARGS` in this process (`run_here`)."""
    from qatie.cli import main

    return run_here(main, *args)


def run_library(library: Path, x):
    """A built `model.so` run once on this host, in this process (TVM's VM)."""
    import tvm
    from tvm import relax

    vm = relax.VirtualMachine(tvm.runtime.load_module(str(library)), tvm.cpu())
    return vm["main"](tvm.runtime.tensor(x)).numpy()


def assert_one_line_error(stderr: str, returncode: int, *needles: str) -> None:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert returncode == 2, stderr
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1 or lines[-1].startswith("Error:"), stderr
    for needle in needles:
        assert needle in stderr, (needle, stderr)
