"""Tuning: records written in TVM's JSON format, used by the next build, over a real RPC tracker
with two servers, surviving kill -9, and refusing damaged logs and unreachable devices clearly.

Tuning a whole model costs minutes even when tiny, so these runs tune the first conv kernel
only (`--only`), a handful of trials each.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from compile.backend.packed_conv import CONV_BLOCK
from compile.backend.tuning_db import RECORDS, WORKLOADS, check_log_dir
from tests.helpers import (
    FIRST_CONV,
    assert_one_line_error,
    compile_here,
    run_console_script,
    run_library,
)
from tests.qdq_models import float_conv_net, ort_quantized
from tests.rpc_cluster import KEY, free_port, start_cluster

pytestmark = [pytest.mark.tune, pytest.mark.xdist_group("tune")]


def _tune(onnx: Path, log_dir: Path, trials: int, *extra: str) -> subprocess.CompletedProcess:
    return run_console_script("qatie-compile", "tune", "--target", "x86-host", onnx, "--trials", trials,
                              "--only", FIRST_CONV, "--log-dir", log_dir, *extra)


def _records(log_dir: Path) -> list[str]:
    path = log_dir / RECORDS
    return path.read_text().splitlines() if path.exists() else []


@pytest.fixture(scope="module")
def tuned_log(tiny_onnx, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    log_dir = tmp_path_factory.mktemp("logs") / "x86-host"
    curve = log_dir.parent / "curve.json"
    return log_dir, _tune(tiny_onnx[0], log_dir, 16, "--curve", curve)


@pytest.mark.long
def test_local_tuning_writes_tvm_records_that_the_next_build_uses(tiny_onnx, tiny_x86, tuned_log, tmp_path, monkeypatch):
    log_dir, result = tuned_log
    assert result.returncode == 0, result.stderr
    records = _records(log_dir)
    # the stem conv is packed: its space is one tensorized schedule per register tile, fewer
    # than 16, and the search stops when it has measured them all
    assert 2 <= len(records) <= 16
    # TVM's own JSON database: TVM reads it back and finds measured records.
    from tvm.s_tir import meta_schedule as ms

    database = ms.database.JSONDatabase(path_workload=str(log_dir / WORKLOADS), path_tuning_record=str(log_dir / RECORDS))
    assert len(database.get_all_tuning_records()) == len(records)
    assert "best us" in result.stdout and FIRST_CONV in result.stdout
    curve = json.loads((log_dir.parent / "curve.json").read_text())["curve"]
    assert curve[0]["trials"] == 0 and curve[-1]["trials"] == len(records)
    assert curve[-1]["estimated_ms"] <= curve[0]["estimated_ms"]

    # The default log folder is found by target name; use_tuning=False ignores it (`tiny_x86`
    # was built so beside the shipped default log).
    monkeypatch.setenv("QATIE_TUNING_LOGS", str(log_dir.parent))
    from compile.artifact import TuningInfo
    from compile.backend.build import build
    from compile.backend.targets import get_target

    tuned = build(tiny_onnx[0], get_target("x86-host"), tmp_path / "tuned")
    untuned_folder, untuned = tiny_x86
    # the stem conv's record also fits any kernel of the same shapes (the per-layer constants are
    # arguments of the packed conv kernel, so several convs share one workload)
    tuned_names = [k.name for k in tuned.kernels.kernels if k.tuned]
    assert tuned.tuning.kernels_tuned == len(tuned_names) >= 1 and tuned.tuning.database == str(log_dir)
    assert any(name.startswith(FIRST_CONV) for name in tuned_names), tuned_names
    assert untuned.tuning == TuningInfo(kernels_tuned=0, kernels=tuned.tuning.kernels, database=None, repaired=[])
    # Integer kernels: another schedule must not change a single output value.
    x = np.random.default_rng(5).random((1, 3, 40, 36), dtype=np.float32)
    assert np.array_equal(run_library(tmp_path / "tuned" / "model.so", x), run_library(untuned_folder / "model.so", x))


@pytest.mark.long
def test_a_build_at_another_size_says_its_kernels_have_records_for_other_shapes_only(tiny_ckpt, tuned_log, tmp_path):
    from qatie.checkpoint import load_checkpoint
    from qatie.export import export

    log_dir, _ = tuned_log
    other = tmp_path / "tiny-32.onnx"
    export(load_checkpoint(tiny_ckpt), 32, 32, other, fp32=False)
    result = run_console_script("qatie-compile", "--target", "x86-host", other, "-o", tmp_path / "build",
                                "--tuning-log", log_dir)
    assert result.returncode == 0, result.stderr
    assert "0 of " in result.stdout and "kernels tuned" in result.stdout
    # the tuned stem conv exists at 32x32 too, as another workload: said, with what to do
    assert "records there only for kernels like them at other shapes" in result.stderr
    assert "tune this model at this size" in result.stderr
    notes = json.loads((tmp_path / "build" / "manifest.json").read_text())["tuning"]["notes"]
    assert any("at other shapes" in note for note in notes)
    # a model none of whose kernels the log knows, at any size: said too (a log tuned before a
    # compiler change that altered every conv kernel applied to 0 kernels without a word)
    unrelated = ort_quantized(float_conv_net(tmp_path / "f.onnx"), tmp_path / "unrelated.onnx")
    built = compile_here("--target", "x86-host", unrelated, "-o", tmp_path / "unrelated", "--tuning-log", log_dir)
    assert built.returncode == 0, built.stderr
    assert "0 of " in built.stdout and "is for a kernel of this model, at any size" in built.stderr


@pytest.mark.long
def test_rerun_with_budget_already_spent_tunes_nothing_and_keeps_the_log(tiny_onnx, tuned_log):
    log_dir, _ = tuned_log
    before = (log_dir / RECORDS).read_bytes()
    again = _tune(tiny_onnx[0], log_dir, 16)
    assert again.returncode == 0, again.stderr
    assert "0 trials this run" in again.stdout
    assert (log_dir / RECORDS).read_bytes() == before


@pytest.mark.long
@pytest.mark.xdist_group("killed")  # no shared fixture: free to run beside the "tune" group
def test_killed_tuning_keeps_committed_records_and_the_rerun_finishes_the_budget(tiny_onnx, tmp_path):
    log_dir, budget = tmp_path / "x86-host", 32
    exe = Path(sys.executable).parent / "qatie-compile"
    # the InstanceNorm statistics kernels (integer sums of squares, `fused_cast_multiply_sum`):
    # MetaSchedule's open-ended default space (a packed conv's few register tiles would be
    # measured out before there were 16 records to kill it after)
    args = [str(exe), "tune", "--target", "x86-host", str(tiny_onnx[0]), "--trials", str(budget),
            "--only", "_sum", "--log-dir", str(log_dir)]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while len(_records(log_dir)) < 16 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    assert process.poll() is None, "tuning finished before it could be killed; raise the budget"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    committed = (log_dir / RECORDS).read_bytes()
    committed = committed[: committed.rfind(b"\n") + 1]  # a line cut by the kill is not committed
    assert committed.count(b"\n") >= 16

    rerun = subprocess.run(args, capture_output=True, text=True, timeout=600, check=False)
    assert rerun.returncode == 0, rerun.stderr
    assert (log_dir / RECORDS).read_bytes().startswith(committed)
    assert len(_records(log_dir)) >= budget


def test_corrupt_log_line_is_named_with_file_and_line_and_nothing_changes(tiny_onnx, tuned_log, tmp_path):
    log_dir, _ = tuned_log
    damaged = tmp_path / "x86-host"
    damaged.mkdir()
    (damaged / WORKLOADS).write_bytes((log_dir / WORKLOADS).read_bytes())
    lines = (log_dir / RECORDS).read_text().splitlines()
    lines[2] = lines[2][: len(lines[2]) // 2]
    (damaged / RECORDS).write_text("\n".join(lines) + "\n")
    before = (damaged / RECORDS).read_bytes()
    for command in (["--target", "x86-host", tiny_onnx[0], "-o", tmp_path / "art", "--tuning-log", damaged],
                    ["tune", "--target", "x86-host", tiny_onnx[0], "--trials", "4", "--log-dir", damaged]):
        result = run_console_script("qatie-compile", *command)
        assert_one_line_error(result.stderr, result.returncode, f"{damaged / RECORDS}:3", "corrupt tuning log line")
        assert (damaged / RECORDS).read_bytes() == before
    assert not (tmp_path / "art").exists()


def test_unfinished_last_line_from_an_interrupted_write_is_reported_and_cut(tmp_path):
    shipped = Path(__file__).resolve().parents[1] / "tuning_logs" / "x86-host"
    workloads = (shipped / WORKLOADS).read_text().splitlines()[:2]
    record = json.loads((shipped / RECORDS).read_text().splitlines()[0])
    (tmp_path / WORKLOADS).write_text("\n".join(workloads) + "\n")
    complete = json.dumps(record) + "\n" + json.dumps([1, record[1]]) + "\n"
    (tmp_path / RECORDS).write_text(complete + '[1, [["tra')
    check = check_log_dir(tmp_path)
    assert (check.workloads, check.records) == (2, 2)
    assert check.repaired == [f"{tmp_path / RECORDS}:3: dropped an unfinished line (interrupted write)"]
    assert (tmp_path / RECORDS).read_text() == complete


def test_a_record_that_names_a_missing_block_is_one_line(tiny_onnx, tuned_log, tmp_path):
    log_dir, _ = tuned_log
    damaged = tmp_path / "x86-host"
    shutil.copytree(log_dir, damaged)
    records = (damaged / RECORDS).read_text()
    assert f'"{CONV_BLOCK}"' in records  # the tuned stem conv's trace looks its block up by name
    records = records.replace(f'"{CONV_BLOCK}"', '"no_such_block"')
    (damaged / RECORDS).write_text(records)
    result = run_console_script("qatie-compile", "--target", "x86-host", tiny_onnx[0], "-o", tmp_path / "art",
                                "--tuning-log", damaged)
    assert_one_line_error(result.stderr, result.returncode, str(damaged), "could not be applied", "--no-tuning")
    assert not (tmp_path / "art").exists()


@pytest.mark.long
def test_build_reports_an_interrupted_append_it_cut(tiny_onnx, tuned_log, tmp_path):
    log_dir, _ = tuned_log
    damaged = tmp_path / "x86-host"
    shutil.copytree(log_dir, damaged)
    complete = (damaged / RECORDS).read_text()
    (damaged / RECORDS).write_text(complete + '[0, [["tra')
    result = run_console_script("qatie-compile", "--target", "x86-host", tiny_onnx[0], "-o", tmp_path / "art",
                                "--tuning-log", damaged)
    assert result.returncode == 0, result.stderr
    assert "tuning log repaired" in result.stderr and "dropped an unfinished line" in result.stderr
    manifest = json.loads((tmp_path / "art" / "manifest.json").read_text())
    assert len(manifest["tuning"]["repaired"]) == 1 and manifest["tuning"]["kernels_tuned"] >= 1
    assert (damaged / RECORDS).read_text() == complete


@pytest.fixture(scope="module")
def rpc_cluster(tmp_path_factory):
    """A real TVM tracker and two RPC servers under one key, all on 127.0.0.1."""
    cluster = start_cluster(tmp_path_factory.mktemp("rpc"))
    yield cluster.port, cluster.server_logs
    cluster.stop()


@pytest.mark.long
@pytest.mark.rpc
@pytest.mark.xdist_group("rpc")  # with the other user of the module's cluster, beside the "tune" group
def test_tuning_through_a_tracker_measures_on_both_servers(tiny_onnx, rpc_cluster, tmp_path):
    port, server_logs = rpc_cluster
    listed = run_console_script("qatie-compile", "devices", "--tracker", f"127.0.0.1:{port}")
    assert listed.returncode == 0, listed.stderr
    assert f"{KEY}" in listed.stdout and "2 registered, 2 free" in listed.stdout
    log_dir = tmp_path / "x86-host"
    result = _tune(tiny_onnx[0], log_dir, 16, "--tracker", f"127.0.0.1:{port}", "--key", KEY)
    assert result.returncode == 0, result.stderr
    assert len(_records(log_dir)) >= 2  # every register tile of the packed stem conv
    for log in server_logs:
        assert "load_module" in log.read_text(), f"{log.name} measured nothing"


@pytest.mark.rpc
def test_unreachable_tracker_is_one_line_and_touches_no_log(tiny_onnx, tuned_log):
    log_dir, _ = tuned_log
    before = (log_dir / RECORDS).read_bytes()
    started = time.monotonic()
    result = _tune(tiny_onnx[0], log_dir, 64, "--tracker", f"127.0.0.1:{free_port()}")
    assert_one_line_error(result.stderr, result.returncode, "RPC tracker 127.0.0.1:", "unreachable")
    assert time.monotonic() - started < 120
    assert (log_dir / RECORDS).read_bytes() == before


@pytest.mark.rpc
@pytest.mark.xdist_group("rpc")
def test_unknown_key_and_busy_devices_are_one_line_errors(tiny_onnx, rpc_cluster, tmp_path):
    from tvm import rpc

    port, _ = rpc_cluster
    unknown = _tune(tiny_onnx[0], tmp_path / "a", 8, "--tracker", f"127.0.0.1:{port}", "--key", "no-such-phone")
    assert_one_line_error(unknown.stderr, unknown.returncode, "no device under key 'no-such-phone'", KEY)

    tracker = rpc.connect_tracker("127.0.0.1", port)
    sessions = [tracker.request(KEY, session_timeout=120) for _ in range(2)]  # hold both devices
    busy = _tune(tiny_onnx[0], tmp_path / "b", 8, "--tracker", f"127.0.0.1:{port}", "--key", KEY,
                 "--device-timeout", "2")
    del sessions
    assert_one_line_error(busy.stderr, busy.returncode, f"under key '{KEY}' stayed busy")
