"""Shared fixtures (one tiny trained checkpoint, its ONNX export and its builds, made once per
test run and shared by the xdist workers), the markers' tool checks, and `--fail-on-skip` for CI.

Markers (pyproject.toml): `rpc` (a real tracker and servers on 127.0.0.1), `qemu` (an emulated
aarch64 device), `mca` (the ARM cycle estimate's tools), `pocl` (OpenCL kernels on PoCL), `tune`
(MetaSchedule tuning), `cross` (an aarch64 cross compiler); `long` (15 s or more) only orders the run: longest first. A test whose tool is missing is skipped with the command that installs
it; `.ci/run` passes `--fail-on-skip`, so CI fails instead of silently testing less.
"""

from __future__ import annotations

import glob
import importlib.util
import json
import shutil
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from filelock import FileLock

from compile.artifact import Manifest, read_manifest
from compile.offline.host_tools import LLVM_VERSIONS
from qatie.references import Agreement
from qatie.train import TrainConfig, train
from tests.helpers import TINY

torch.set_num_threads(1)

ARM_TARGETS = ("arm64-linux", "arm64-linux-dotprod")
APT = "apt-get install"
SHARED = {"tiny_ckpt", "tiny_onnx", "tiny_x86", "tiny_arm"}  # made once per run (`made_once`)
# marker -> (is the tool there?, how to install it)
TOOLS = {
    "cross": (lambda: shutil.which("aarch64-linux-gnu-g++"), f"{APT} g++-aarch64-linux-gnu"),
    "qemu": (lambda: shutil.which("qemu-aarch64") and shutil.which("aarch64-linux-gnu-g++"),
             f"{APT} qemu-user g++-aarch64-linux-gnu"),
    # the ARM estimate: a host C compiler for the qemu plugin, LLVM's llvm-mc/llvm-mca/llvm-nm
    "mca": (lambda: shutil.which("cc") and all(any(shutil.which(tool + suffix) for suffix in LLVM_VERSIONS)
                                               for tool in ("llvm-mc", "llvm-mca", "llvm-nm")),
            f"{APT} gcc llvm"),
    "pocl": (lambda: glob.glob("/etc/OpenCL/vendors/*.icd") and importlib.util.find_spec("pyopencl"),
             f"{APT} pocl-opencl-icd ocl-icd-opencl-dev && pip install pyopencl"),
}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--fail-on-skip", action="store_true",
                     help="Fail the run if any test was skipped (CI: a missing tool is a failure, not less testing).")


@pytest.hookimpl(trylast=True)  # after -m and -k have deselected
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Longest first (list scheduling: a 30 s test taken last left one worker idle for 30 s),
    # those that need no shared fixture before those that do, so that while one worker makes
    # the tiny model the other has work. (xdist's loadgroup hands out groups first, largest
    # first; the first group, "deploy", makes the model.)
    items.sort(key=lambda item: (item.get_closest_marker("long") is None, bool(SHARED & set(item.fixturenames))))
    missing = {marker: install for marker, (present, install) in TOOLS.items() if not present()}
    for item in items:
        for marker, install in missing.items():
            if marker in item.keywords:
                item.add_marker(pytest.mark.skip(reason=f"needs the '{marker}' tools: {install}"))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if session.config.getoption("--fail-on-skip") and skipped and exitstatus == 0:
        reporter.write_line(f"--fail-on-skip: {len(skipped)} test(s) skipped; install what they name", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def made_once(tmp_path_factory: pytest.TempPathFactory, worker_id: str, name: str,
              make: Callable[[Path], None]) -> Path:
    """`make(folder)` once per test run, its folder shared by every xdist worker (pytest-xdist's
    recipe: a file lock in the run's temporary root). Each worker building the tiny model
    itself cost the parallel run a second training and build (about 45 s of a worker's time)."""
    root = tmp_path_factory.getbasetemp()
    if worker_id != "master":  # under xdist each worker's basetemp lies in the run's own folder
        root = root.parent
    folder, done = root / name, root / f"{name}.done"
    with FileLock(f"{folder}.lock"):
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            make(folder)
            done.touch()
    return folder


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """A width-4 net after 3 float steps and 3 QAT steps on the synthetic set."""
    return made_once(tmp_path_factory, worker_id, "ckpt", lambda folder: train(TrainConfig(**TINY), folder / "tiny.pt")) / "tiny.pt"


@pytest.fixture(scope="session")
def tiny_onnx(tiny_ckpt: Path, tmp_path_factory: pytest.TempPathFactory, worker_id: str):
    """The tiny checkpoint exported as QDQ ONNX at 40x36: (path, conv count, its verification)."""
    from qatie.checkpoint import load_checkpoint
    from qatie.export import Verification, export

    def make(folder: Path) -> None:
        convs, verification = export(load_checkpoint(tiny_ckpt), 40, 36, folder / "tiny.onnx", fp32=False)
        (folder / "export.json").write_text(json.dumps({"convs": convs, "verification": asdict(verification)}))

    folder = made_once(tmp_path_factory, worker_id, "onnx", make)
    report = json.loads((folder / "export.json").read_text())
    verification = Verification(**{k: Agreement(**v) for k, v in report["verification"].items()})
    return folder / "tiny.onnx", report["convs"], verification


@pytest.fixture(scope="session")
def tiny_x86(tiny_onnx, tmp_path_factory, worker_id: str) -> tuple[Path, Manifest]:
    """The tiny model built for x86-host, untuned, with its kernel sources: (folder, manifest)."""
    from compile.backend.build import BuildOptions, build
    from compile.backend.targets import get_target

    def make(folder: Path) -> None:
        build(tiny_onnx[0], get_target("x86-host"), folder / "x86-host", BuildOptions(emit_source=True, use_tuning=False))

    out = made_once(tmp_path_factory, worker_id, "x86", make) / "x86-host"
    return out, read_manifest(out / "manifest.json")


@pytest.fixture(scope="session")
def tiny_arm(tiny_onnx, tmp_path_factory, worker_id: str) -> dict[str, Path]:
    """The tiny model built for both ARM Linux targets, as `qatie-compile --emit-source` builds
    it (in this process: two interpreter starts cost the fixture ~8 s)."""
    from compile.backend.build import BuildOptions, build
    from compile.backend.targets import get_target

    if not TOOLS["cross"][0]():
        pytest.skip(f"needs the 'cross' tools: {TOOLS['cross'][1]}")

    def make(folder: Path) -> None:
        for target in ARM_TARGETS:
            build(tiny_onnx[0], get_target(target), folder / target, BuildOptions(emit_source=True))

    folder = made_once(tmp_path_factory, worker_id, "arm", make)
    return {target: folder / target for target in ARM_TARGETS}
