"""Hostile and careless input: no code execution, no hangs, no lost artifacts, one-line errors.

Each numbered case of the hostile-input issue is a test here (the tuning-record case that needs
a tuned log is in test_tune.py); the fuzz test at the end runs every reader on thousands of
random and truncated inputs.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import onnx
import pytest
import torch
from onnx import TensorProto, helper

from compile.artifact import MANIFEST, load_artifact
from qatie.checkpoint import load_checkpoint
from qatie.errors import QatieError
from tests.helpers import assert_one_line_error, compile_here, console_script, qatie_here, run_compile
from tests.qdq_models import float_conv_net, ort_quantized
from tests.rpc_cluster import KEY, free_port, start_cluster

SHIPPED_CHECKPOINT = Path(__file__).resolve().parents[1] / "checkpoints" / "qatie-c16.pt"
SHIPPED_LOG = Path(__file__).resolve().parents[1] / "tuning_logs" / "x86-host"


class _RunsCode:
    """Unpickling this runs a shell command: the classic malicious checkpoint."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# 1. A checkpoint runs no code it carries; the shipped one keeps loading.
def test_checkpoint_with_code_is_refused_and_the_code_never_runs(tiny_ckpt, tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({**torch.load(tiny_ckpt, weights_only=True), "payload": _RunsCode(marker)}, evil)
    for args in (["export", evil, "--size", "32x32", "-o", tmp_path / "m.onnx"], ["eval", evil]):
        result = qatie_here(*args)
        assert_one_line_error(result.stderr, result.returncode, str(evil), "refused", "posix.system")
    assert not marker.exists() and not (tmp_path / "m.onnx").exists()
    assert load_checkpoint(SHIPPED_CHECKPOINT)["config"]["model"]["width"] == 16


# 2. A manifest points only at plain files inside its artifact, and is validated whole.
def _tampered(artifact: Path, folder: Path, edit) -> Path:
    copy = folder / "art"
    shutil.copytree(artifact, copy)
    manifest = json.loads((copy / MANIFEST).read_text())
    (copy / MANIFEST).write_text(json.dumps(edit(manifest)))
    return copy


def test_manifest_cannot_point_outside_its_artifact_and_is_validated(tiny_x86, tmp_path):
    artifact = tiny_x86[0]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(artifact / "model.so", elsewhere / "model.so")

    def outside(m):
        m["library"]["file"] = "../../elsewhere/model.so"
        return m

    copy = _tampered(artifact, tmp_path / "a", outside)
    result = run_compile("bench", copy, "--local")
    assert_one_line_error(result.stderr, result.returncode, "library.file", "not a plain file name")
    cases = {"missing library": lambda m: {k: v for k, v in m.items() if k != "library"},
             "null sha256": lambda m: {**m, "library": {**m["library"], "sha256": None}},
             "null manifest": lambda m: None}
    for name, edit in cases.items():
        with pytest.raises(QatieError, match="not a manifest this version writes"):
            load_artifact(_tampered(artifact, tmp_path / name.replace(" ", "-"), edit))
    linked = tmp_path / "linked"
    shutil.copytree(artifact, linked)
    (linked / "model.so").unlink()
    (linked / "model.so").symlink_to(elsewhere / "model.so")
    with pytest.raises(QatieError, match="symbolic link"):
        load_artifact(linked)


# 3. Servers listen on loopback unless told otherwise, and say so when told.
def test_servers_bind_loopback_by_default_and_warn_otherwise():
    from compile.cli import main
    from compile.deploy.servers import public_warning

    for group, command in (("rpc", "tracker"), ("rpc", "server"), ("emulate", "arm64")):
        host = next(p for p in main.commands[group].commands[command].params if p.name == "host")
        assert host.default == "127.0.0.1"
    assert public_warning("127.0.0.1") is None and "anyone who reaches this port" in public_warning("0.0.0.0")


# 4. Every network wait is bounded and names what did not answer.
@pytest.fixture
def silent_tracker():
    """A TCP listener that accepts connections and never says a word."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    accepted, stop = [], threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    listener.close()


@pytest.mark.long
@pytest.mark.rpc
def test_a_tracker_that_never_answers_is_a_quick_one_line_error(tiny_x86, silent_tracker):
    for args in (["devices", "--tracker", silent_tracker],
                 ["bench", tiny_x86[0], "--tracker", silent_tracker, "--key", KEY]):
        started = time.monotonic()
        result = run_compile(*args)
        assert_one_line_error(result.stderr, result.returncode, silent_tracker, "handshake")
        assert time.monotonic() - started < 60


@pytest.mark.long
@pytest.mark.rpc
def test_a_stopped_device_is_given_up_after_the_session_timeout(tiny_x86, tmp_path):
    cluster = start_cluster(tmp_path / "rpc", servers=1)
    try:
        os.killpg(cluster.servers[0].pid, signal.SIGSTOP)
        started = time.monotonic()
        result = run_compile("bench", tiny_x86[0], "--tracker", cluster.address, "--key", KEY,
                             "--device-timeout", 5, "--session-timeout", 5, "-o", tmp_path / "out")
        elapsed = time.monotonic() - started
        os.killpg(cluster.servers[0].pid, signal.SIGCONT)
    finally:
        cluster.stop()
    assert_one_line_error(result.stderr.split("retrying once on another device")[-1], result.returncode,
                          "did not answer within 5 s")
    assert elapsed < 90 and not (tmp_path / "out").exists()


@pytest.mark.long
# 5. An artifact is replaced whole and atomically; stale staging folders go.
def test_a_rebuild_replaces_the_artifact_whole_and_a_killed_build_loses_nothing(tiny_onnx, tiny_x86, tmp_path):
    out = tmp_path / "x86-host"
    shutil.copytree(tiny_x86[0], out)  # built with --emit-source: kernels.s is there
    before = (out / MANIFEST).read_bytes()
    build = [console_script("qatie-compile"), "--target", "x86-host", str(tiny_onnx[0]), "-o", str(out), "--no-tuning"]
    process = subprocess.Popen(build, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".x86-host.staging-*")) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)  # inside the export (LLVM code generation: seconds)
    process.kill()
    process.wait()
    assert (out / MANIFEST).read_bytes() == before and load_artifact(out)  # the previous artifact, intact
    assert list(tmp_path.glob(".x86-host.staging-*")), "the killed build left its staging folder"

    # any model replaces the artifact whole: a 3-conv one builds in about a second
    small = ort_quantized(float_conv_net(tmp_path / "f.onnx"), tmp_path / "small.onnx")
    rebuilt = run_compile("--target", "x86-host", small, "-o", out, "--no-tuning")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert sorted(p.name for p in out.iterdir()) == ["kernels.so", "manifest.json", "model.so"]  # no stale kernels.s
    assert load_artifact(out).manifest.sources == []
    assert not list(tmp_path.glob(".x86-host.*")), "staging folders left behind"

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    refused = run_compile("--target", "x86-host", tiny_onnx[0], "-o", tmp_path / "mine")
    assert_one_line_error(refused.stderr, refused.returncode, "not an artifact")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


# 6, 7. Input shapes: empty, impossible for the model, too large to index.
def test_impossible_and_huge_input_shapes_are_one_line_errors(tiny_onnx, tmp_path):
    resizable = ort_quantized(float_conv_net(tmp_path / "f.onnx"), tmp_path / "q.onnx")
    cases = [(tiny_onnx[0], "input:1x3x0x0", ["empty dimension"]),
             (tiny_onnx[0], "input:1x3x1x1", ["cannot import the model at input shape", "1x3x1x1"]),
             (resizable, "x:1x3x100000x100000", ["int32 indexing", "2,147,483,647"])]
    for model, shape, needles in cases:
        result = compile_here("--target", "x86-host", model, "-o", tmp_path / "out", "--input-shape", shape)
        assert_one_line_error(result.stderr, result.returncode, *needles)
        assert not (tmp_path / "out").exists()


# 8. A bad target file is named; the other targets keep working.
def test_a_bad_target_file_is_named_and_the_others_keep_working(tmp_path):
    from compile.backend.targets import get_target

    folder = tmp_path / "targets"
    folder.mkdir()
    shutil.copy(get_target("x86-host").path, folder / "good.json")
    good = json.loads((folder / "good.json").read_text())
    (folder / "null.json").write_text("null")
    (folder / "threads.json").write_text(json.dumps({**good, "threads": "many"}))
    (folder / "compiler.json").write_text(json.dumps({**good, "cross_compiler": "g++"}))
    env = {**os.environ, "QATIE_TARGETS_DIR": str(folder)}
    listed = subprocess.run([console_script("qatie-compile"), "targets"], capture_output=True, text=True, env=env)
    assert listed.returncode == 0, listed.stderr
    assert "good" in listed.stdout and "null" not in listed.stdout
    for name, needle in (("null", "valid dictionary"), ("threads", "threads"), ("compiler", "cross_compiler")):
        assert any(f"{name}.json" in line and needle in line for line in listed.stderr.splitlines()), listed.stderr
    refused = subprocess.run([console_script("qatie-compile"), "--target", "threads", "x.onnx", "-o", str(tmp_path / "o")],
                             capture_output=True, text=True, env=env)
    assert_one_line_error(refused.stderr, refused.returncode, "threads.json", "threads")
    unknown = subprocess.run([console_script("qatie-compile"), "--target", "nope", "x.onnx", "-o", str(tmp_path / "o")],
                             capture_output=True, text=True, env=env)
    assert_one_line_error(unknown.stderr, unknown.returncode, "unknown target 'nope'", "known: good")


# 9. A checkpoint whose config does not match its weights, or that has none.
def test_checkpoint_config_mismatch_is_one_line(tiny_ckpt, tmp_path):
    data = torch.load(tiny_ckpt, weights_only=True)
    wider = {**data, "config": {**data["config"], "model": {**data["config"]["model"], "width": 32}}}
    torch.save(wider, tmp_path / "wider.pt")
    torch.save({k: v for k, v in data.items() if k != "config"}, tmp_path / "noconfig.pt")
    for name, needles in (("wider.pt", ["do not match its config", "width 32"]), ("noconfig.pt", ["'config'"])):
        result = qatie_here("export", tmp_path / name, "--size", "32x32", "-o", tmp_path / "m.onnx")
        assert_one_line_error(result.stderr, result.returncode, name, *needles)
    assert not (tmp_path / "m.onnx").exists()


# 10. An unwritable output is an error before the work, not after it.
def test_unwritable_outputs_fail_before_the_work(tiny_ckpt, tiny_onnx, tiny_x86, tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    commands = [
        (qatie_here, ["export", tiny_ckpt, "--size", "32x32", "-o", a_file / "m.onnx"]),
        (qatie_here, ["export", tiny_ckpt, "--size", "32x32", "-o", "/proc/qatie-test/m.onnx"]),
        (qatie_here, ["train", "-o", a_file / "c.pt", "--width", "4"]),
        (compile_here, ["--target", "x86-host", tiny_onnx[0], "-o", a_file / "out"]),
        (compile_here, ["--target", "x86-host", tiny_onnx[0], "-o", "/proc/qatie-test/out"]),
        (compile_here, ["tune", "--target", "x86-host", tiny_onnx[0], "--trials", 1, "--log-dir", a_file / "logs"]),
        (compile_here, ["bench", tiny_x86[0], "--local", "-o", a_file / "reports"]),
    ]
    for run, args in commands:
        started = time.monotonic()
        result = run(*args)
        assert_one_line_error(result.stderr, result.returncode, "choose another")
        assert time.monotonic() - started < 30, args  # refused before compiling, exporting or training


# 11. Tuning-log lines that are JSON but not records; records of another architecture.
def test_invalid_tuning_records_and_foreign_targets_are_refused(tiny_onnx, tmp_path):
    from compile.backend.tuning_db import RECORDS, WORKLOADS, check_log_dir

    workload, record = (SHIPPED_LOG / WORKLOADS).read_text().splitlines()[0], json.loads(
        (SHIPPED_LOG / RECORDS).read_text().splitlines()[0])
    broken = {"field count": [0, record[1][:3]], "run seconds": [0, [record[1][0], "fast", *record[1][2:]]],
              "target": [0, [*record[1][:2], "llvm", record[1][3]]]}
    for name, line in broken.items():
        folder = tmp_path / name.replace(" ", "-")
        folder.mkdir()
        (folder / WORKLOADS).write_text(workload + "\n")
        (folder / RECORDS).write_text(json.dumps(line) + "\n")
        with pytest.raises(QatieError, match=f"{RECORDS}:1: not a MetaSchedule database line"):
            check_log_dir(folder)
    bad_module = tmp_path / "module"
    bad_module.mkdir()
    (bad_module / WORKLOADS).write_text(json.dumps(["123", "not base64!"]) + "\n")
    with pytest.raises(QatieError, match="not base64"):
        check_log_dir(bad_module)

    foreign = tmp_path / "aarch64"
    foreign.mkdir()
    shutil.copy(SHIPPED_LOG / WORKLOADS, foreign / WORKLOADS)
    lines = [json.loads(line) for line in (SHIPPED_LOG / RECORDS).read_text().splitlines()]
    for line in lines:
        line[1][2] = {**line[1][2], "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a53"}
    (foreign / RECORDS).write_text("".join(json.dumps(line) + "\n" for line in lines))
    result = compile_here("--target", "x86-host", tiny_onnx[0], "-o", tmp_path / "out", "--tuning-log", foreign)
    assert_one_line_error(result.stderr, result.returncode, "tuned for llvm aarch64 cortex-a53", "--no-tuning")
    layered = compile_here("--target", "x86-host", tiny_onnx[0], "-o", tmp_path / "out", "--tuning-log", bad_module)
    assert_one_line_error(layered.stderr, layered.returncode, f"{WORKLOADS}:1", "not base64")


# 12. The tracker's port: taken, or not a port.
def test_tracker_port_in_use_or_invalid_is_one_line():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = run_compile("rpc", "tracker", "--port", port)
        assert_one_line_error(result.stderr, result.returncode, f"127.0.0.1:{port}", "in use")
    invalid = run_compile("rpc", "tracker", "--port", 70000)
    assert_one_line_error(invalid.stderr, invalid.returncode, "--port")


# 13, 14. Two inputs are refused at build time; a float model says loudly that it is float.
def test_two_input_and_float_models(tmp_path):
    two = helper.make_model(helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["y"])], "two",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 3, 8, 8]) for n in ("a", "b")],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])]),
        opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(two, tmp_path / "two.onnx")
    result = compile_here("--target", "x86-host", tmp_path / "two.onnx", "-o", tmp_path / "two")
    assert_one_line_error(result.stderr, result.returncode, "2 inputs (a, b)", "single-input")
    assert not (tmp_path / "two").exists()

    model = float_conv_net(tmp_path / "float.onnx")
    built = compile_here("--target", "x86-host", model, "-o", tmp_path / "float", "--no-tuning")
    assert built.returncode == 0, built.stderr
    assert "WARNING: nothing was quantized: 0 of 3 convs" in built.stderr and "--require-int8" in built.stderr
    strict = compile_here("--target", "x86-host", model, "-o", tmp_path / "strict", "--require-int8")
    assert_one_line_error(strict.stderr, strict.returncode, "--require-int8", "none of its 3 convs")
    assert not (tmp_path / "strict").exists()


# 15. A tracker killed with SIGKILL takes its port with it.
@pytest.mark.rpc
def test_sigkill_of_the_tracker_frees_its_port():
    port = free_port()
    tracker = subprocess.Popen([console_script("qatie-compile"), "rpc", "tracker", "--port", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.2)
    tracker.kill()
    tracker.wait()
    time.sleep(0.5)
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0, "something still listens on the tracker's port"
