"""Deploy and profile over a real TVM RPC tracker and servers on 127.0.0.1: one result row per
device, outputs equal to ONNX Runtime, kernel times that add up, and the faults a device farm
produces (dead tracker, server killed mid-bench, wrong architecture, tampered library)."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from qatie.references import WITHIN_ONE_STEP_REQUIRED
from tests.helpers import assert_one_line_error, console_script, run_compile, run_console
from tests.rpc_cluster import KEY, free_port, start_cluster

# The kernel sum and the end-to-end time differ by the VM's own work, by cache effects and, on a
# shared host, by load: the kernels are timed in ~5 ms windows over seconds, the model in a few
# windows between them, and another test worker on the same cores stretches whichever it lands
# on (CI, 3 workers on 2 cores: the kernel sum 1.50x the end-to-end time once, -16 % on another
# host). A timing bound would be a speed goal, which belongs in bench/. The accounting itself (a
# call count, a kernel missing, the multiplication) is checked exactly below; this ratio only
# catches a wrong unit or scale (1000x), with room for a host that is briefly twice as loaded.
PROFILE_SCALE_BOUND = 2.0
# With `pytest -n`, these share a worker: the cluster and builds below are made once.
pytestmark = pytest.mark.xdist_group("deploy")


@pytest.fixture(scope="module")
def artifact(tiny_x86) -> Path:
    return tiny_x86[0]


@pytest.fixture(scope="module")
def artifact_256(tiny_ckpt, tmp_path_factory) -> Path:
    """The tiny net at 256x256: at 40x36 the VM's own work between its ~85 kernel calls is
    a third of the end-to-end time (measured: kernels 0.05 ms, end-to-end 0.08 ms), so the sum is
    checked where the kernels' work dominates, as in real use."""
    folder = tmp_path_factory.mktemp("artifact256")
    exported = run_console("export", tiny_ckpt, "--size", "256x256", "-o", folder / "tiny256.onnx")
    assert exported.returncode == 0, exported.stderr
    result = run_compile("--target", "x86-host", folder / "tiny256.onnx", "-o", folder / "x86-host", "--no-tuning")
    assert result.returncode == 0, result.stderr
    return folder / "x86-host"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    cluster = start_cluster(tmp_path_factory.mktemp("rpc"))
    yield cluster
    cluster.stop()


@pytest.mark.rpc
def test_bench_gives_one_matching_row_per_device(artifact, cluster, tiny_ckpt, tmp_path):
    listed = run_compile("devices", "--tracker", cluster.address)
    assert "2 registered, 2 free" in listed.stdout, listed.stdout
    result = run_compile("bench", artifact, "--tracker", cluster.address, "--key", KEY, "--repeats", 5,
                      "--ckpt", tiny_ckpt, "-o", tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "bench.json").read_text())
    devices = {row["device"] for row in report["devices"]}
    assert len(devices) == 2, devices  # each server measured, not one twice
    for row in report["devices"]:
        assert row["latency"]["repeats"] == 5 and 0 < row["latency"]["min_ms"] <= row["latency"]["median_ms"]
        assert row["agreement"]["onnxruntime"]["within_one_step"] >= WITHIN_ONE_STEP_REQUIRED, row
        assert row["agreement"]["pytorch"]["within_one_step"] >= WITHIN_ONE_STEP_REQUIRED, row
    assert result.stdout.startswith("`qatie-compile bench "), result.stdout  # the command comes with the numbers
    for log in cluster.server_logs:
        assert "load_module" in log.read_text()


@pytest.mark.long
@pytest.mark.rpc
def test_profile_over_rpc_adds_up_to_end_to_end(artifact_256, cluster, tmp_path):
    artifact = artifact_256
    # one thread: a parallel kernel waits for its slowest thread, so with the other test worker
    # on the second core two threads would time that worker, not the kernels
    result = run_compile("profile", artifact, "--tracker", cluster.address, "--key", KEY, "--repeats", 5,
                         "--min-ms", 5, "--threads", 1, "-o", tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "profile.json").read_text())
    manifest = json.loads((artifact / "manifest.json").read_text())
    names = {k["name"] for k in manifest["kernels"]["kernels"]}
    for device in report["devices"]:
        assert {k["name"] for k in device["kernels"]} == names
        end_to_end = device["end_to_end"]["median_ms"]
        assert device["difference"] == pytest.approx((end_to_end - device["kernel_sum_ms"]) / end_to_end)
        assert 1 / PROFILE_SCALE_BOUND < device["kernel_sum_ms"] / end_to_end < PROFILE_SCALE_BOUND, device
        calls = {k["name"]: k["calls"] for k in manifest["kernels"]["kernels"]}
        for row in device["kernels"]:
            assert row["calls"] == calls[row["name"]] and row["total_ms"] == pytest.approx(row["mean_ms"] * row["calls"])
        assert device["kernel_sum_ms"] == pytest.approx(sum(k["total_ms"] for k in device["kernels"]))
        assert abs(sum(k["share"] for k in device["kernels"]) - 1) < 1e-6
        assert any(k["macs"] > 0 for k in device["kernels"])
    rows = list(csv.DictReader((tmp_path / "profile.csv").open()))
    assert len(rows) == len(names) * len(report["devices"])
    trace = json.loads((tmp_path / "profile.trace.json").read_text())
    assert sum(e["ph"] == "X" for e in trace["traceEvents"]) == len(manifest["kernels"]["call_order"]) * len(report["devices"])
    assert (tmp_path / "profile.png").read_bytes()[:4] == b"\x89PNG"


def test_local_profile_and_bench(artifact, tmp_path):
    result = run_compile("bench", artifact, "--local", "--repeats", 3, "-o", tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "bench.json").read_text())["devices"][0]["device"] == "local"


def _read_syscalls() -> int:
    """Read syscalls this thread has made (Linux's per-thread I/O accounting)."""
    return int(next(line for line in Path("/proc/thread-self/io").read_text().splitlines()
                    if line.startswith("syscr:")).split()[1])


def test_kernels_on_the_threads_set_do_not_ask_the_os_for_the_cpu_count(artifact):
    """TVM's runtime reads /sys/devices/system/cpu/online at every parallel loop unless its
    maximum concurrency is set (~6 us each: a fifth of the paper's 100x100 model's time on one
    core); after `set_threads` the model's runs read nothing (a stray read of the process aside)."""
    import numpy as np
    import tvm
    from tvm import relax

    from compile.artifact import load_artifact
    from compile.deploy.device import device_of, load_on_device, set_threads
    from compile.deploy.rpc import local_device

    loaded = load_artifact(artifact)
    device = local_device()
    dev = device_of(device, loaded)
    vm = relax.VirtualMachine(load_on_device(device, loaded, loaded.library), dev)
    given = loaded.manifest.model.inputs[0]
    x = tvm.runtime.tensor(np.zeros(given.shape, given.dtype), dev)
    for threads, runs in ((0, 20), (1, 20)):
        assert set_threads(device, threads) >= 1
        vm["main"](x)
        before = _read_syscalls()
        for _ in range(runs):
            vm["main"](x)
        assert _read_syscalls() - before < runs, f"{threads} thread(s)"


@pytest.mark.rpc
def test_dead_tracker_is_a_quick_one_line_error(artifact):
    started = time.monotonic()
    result = run_compile("bench", artifact, "--tracker", f"127.0.0.1:{free_port()}", "--key", KEY)
    assert_one_line_error(result.stderr, result.returncode, "unreachable")
    assert time.monotonic() - started < 60


def _kill_first_server_mid_bench(cluster, artifact: Path, out: Path, *extra: str) -> tuple[int, str]:
    """Start a bench through `cluster`, kill the server that loads the library first while it
    is timing, and return the bench's exit code and stderr."""
    process = subprocess.Popen(
        [console_script("qatie-compile"), "bench", str(artifact), "--tracker", cluster.address, "--key", KEY,
         "--repeats", "30", "--min-ms", "200", "-o", str(out), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    victim = None
    while victim is None and time.monotonic() < deadline:
        victim = next((i for i, log in enumerate(cluster.server_logs) if "load_module" in log.read_text()), None)
        time.sleep(0.2)
    assert victim is not None, "no server loaded the library"
    time.sleep(1.0)  # well inside its 30 x 200 ms of timing
    cluster.kill_server(victim)
    _, stderr = process.communicate(timeout=300)
    return process.returncode, stderr


@pytest.mark.long
@pytest.mark.rpc
def test_server_killed_mid_bench_is_retried_on_another_device(artifact, tmp_path):
    cluster = start_cluster(tmp_path / "rpc")
    try:
        returncode, stderr = _kill_first_server_mid_bench(cluster, artifact, tmp_path)
    finally:
        cluster.stop()
    assert returncode == 0, stderr
    assert "retrying once on another device" in stderr
    report = json.loads((tmp_path / "bench.json").read_text())
    assert any("retry of" in row["device"] for row in report["devices"]), report["devices"]
    assert all(row["agreement"]["onnxruntime"]["within_one_step"] >= WITHIN_ONE_STEP_REQUIRED
               for row in report["devices"])


@pytest.mark.long
@pytest.mark.rpc
def test_last_server_killed_mid_bench_is_a_clear_error(artifact, tmp_path):
    cluster = start_cluster(tmp_path / "rpc", servers=1)
    try:
        returncode, stderr = _kill_first_server_mid_bench(cluster, artifact, tmp_path, "--device-timeout", "5")
    finally:
        cluster.stop()
    assert_one_line_error(stderr.split("retrying once on another device")[-1], returncode,
                          "failed during the job", "no other device could take the retry")
    assert not (tmp_path / "bench.json").exists()


@pytest.mark.rpc
@pytest.mark.cross
@pytest.mark.xdist_group("arm")
def test_library_for_another_architecture_names_both(tiny_arm, cluster):
    result = run_compile("bench", tiny_arm["arm64-linux"], "--tracker", cluster.address, "--key", KEY)
    assert_one_line_error(result.stderr, result.returncode, "built for aarch64", "x86_64")


def test_library_not_matching_its_manifest_is_refused(artifact, tmp_path):
    tampered = tmp_path / "tampered"
    shutil.copytree(artifact, tampered)
    with open(tampered / "model.so", "ab") as f:
        f.write(b"\0")
    result = run_compile("bench", tampered, "--local")
    assert_one_line_error(result.stderr, result.returncode, "model.so", "does not match the manifest")
