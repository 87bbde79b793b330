"""Every reader of untrusted files on random and truncated input: the ONNX loader, the checkpoint
loader, the manifest, the tuning-log checker and the target files. Each case must end in a
QatieError (a one-line message at the command line, exit code 2) or in success; never another
exception, and never a change to the file read. A few cases also go through the real commands.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

from compile.artifact import MANIFEST, read_manifest
from compile.backend.targets import get_target, load_target
from compile.backend.tuning_db import RECORDS, WORKLOADS, check_log_dir
from compile.frontend.onnx_loader import load_onnx
from qatie.checkpoint import load_checkpoint
from qatie.errors import QatieError
from tests.helpers import assert_one_line_error, run_compile, run_console

CASES = 1000  # per JSON reader; the ONNX and checkpoint readers get BINARY_CASES (each costs more)
BINARY_CASES = 250
SHIPPED_LOG = Path(__file__).resolve().parents[1] / "tuning_logs" / "x86-host"


def _mutations(data: bytes, rng: random.Random, count: int):
    """Truncations, random bytes, flipped bytes, and (for JSON) structurally edited values."""
    for i in range(count):
        kind = i % 3
        if kind == 0:
            yield data[: rng.randrange(len(data))]
        elif kind == 1:
            yield bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))
        else:
            mutated = bytearray(data)
            for _ in range(rng.randrange(1, 8)):
                mutated[rng.randrange(len(mutated))] = rng.randrange(256)
            yield bytes(mutated)


def _json_edits(value, rng: random.Random, count: int):
    """The same JSON with one field removed, retyped or nulled, somewhere in the tree."""
    replacements = [None, "x", -1, 1e300, [], {}, True, "../../etc/passwd"]
    for _ in range(count):
        copy = json.loads(json.dumps(value))
        node = copy
        for _ in range(rng.randrange(1, 4)):
            keys = list(node) if isinstance(node, dict) else list(range(len(node))) if isinstance(node, list) else []
            if not keys:
                break
            key = rng.choice(keys)
            if rng.random() < 0.5 or not isinstance(node[key], (dict, list)):
                if isinstance(node, dict) and rng.random() < 0.3:
                    del node[key]
                else:
                    node[key] = rng.choice(replacements)
                break
            node = node[key]
        yield json.dumps(copy).encode()


def _check_reader(read, path: Path, inputs, allowed=(QatieError,)) -> int:
    """Feed each input through `read(path)`; returns how many were refused."""
    refused = 0
    for data in inputs:
        path.write_bytes(data)
        try:
            read(path)
        except allowed:
            refused += 1
        assert path.read_bytes() == data, f"{path.name} was changed by its reader"
    return refused


def test_onnx_loader_fuzz(tiny_onnx, tmp_path):
    data = tiny_onnx[0].read_bytes()
    refused = _check_reader(load_onnx, tmp_path / "m.onnx", _mutations(data, random.Random(1), BINARY_CASES))
    assert refused > BINARY_CASES // 2


def test_tflite_import_fuzz(tmp_path):
    """A damaged int8 TFLite file is refused in one line, at reading or at importing an operator."""
    from compile.frontend.tflite import import_tflite
    from tests.tflite_models import mobile_block

    refused = _check_reader(lambda path: import_tflite(path, {}), tmp_path / "m.tflite",
                            _mutations(mobile_block(), random.Random(2), BINARY_CASES))
    assert refused > BINARY_CASES // 2


def test_checkpoint_loader_fuzz(tiny_ckpt, tmp_path):
    data = tiny_ckpt.read_bytes()
    refused = _check_reader(load_checkpoint, tmp_path / "c.pt", _mutations(data, random.Random(2), BINARY_CASES))
    assert refused > BINARY_CASES // 2


def test_manifest_reader_fuzz(tiny_x86, tmp_path):
    data = (tiny_x86[0] / MANIFEST).read_bytes()
    rng = random.Random(3)
    inputs = [*_mutations(data, rng, CASES // 2), *_json_edits(json.loads(data), rng, CASES // 2)]
    assert _check_reader(read_manifest, tmp_path / MANIFEST, inputs) > CASES // 2


def test_target_file_fuzz(tmp_path):
    data = get_target("arm64-linux").path.read_bytes()
    rng = random.Random(4)
    inputs = [*_mutations(data, rng, CASES // 2), *_json_edits(json.loads(data), rng, CASES // 2)]
    assert _check_reader(load_target, tmp_path / "t.json", inputs) > CASES // 4


def test_tuning_log_checker_fuzz(tmp_path):
    """Mutated record lines (the workload file, one valid workload, stays); a damaged last line
    without a newline is an interrupted append and is cut by design, so every case ends in one."""
    # the smallest workload (each case checks the file again: a Winograd kernel's is ~0.3 MB)
    workloads = min((SHIPPED_LOG / WORKLOADS).read_text().splitlines(), key=len).encode() + b"\n"
    record = (SHIPPED_LOG / RECORDS).read_text().splitlines()[0]
    rng = random.Random(5)
    inputs = [*_mutations(record.encode(), rng, CASES // 2), *_json_edits(json.loads(record), rng, CASES // 2)]
    (tmp_path / WORKLOADS).write_bytes(workloads)
    refused = 0
    for data in inputs:
        data = data.replace(b"\n", b" ") + b"\n"
        (tmp_path / RECORDS).write_bytes(data)
        try:
            check_log_dir(tmp_path)
        except QatieError:
            refused += 1
        assert (tmp_path / RECORDS).read_bytes() == data and (tmp_path / WORKLOADS).read_bytes() == workloads
    assert refused > CASES // 2


def test_damaged_files_at_the_command_line_are_one_line_exit_2(tiny_onnx, tiny_ckpt, tiny_x86, tmp_path):
    onnx_file, ckpt = tmp_path / "m.onnx", tmp_path / "c.pt"
    onnx_file.write_bytes(tiny_onnx[0].read_bytes()[:2000])
    ckpt.write_bytes(tiny_ckpt.read_bytes()[:3000])
    artifact = tmp_path / "art"
    shutil.copytree(tiny_x86[0], artifact)
    (artifact / MANIFEST).write_bytes((tiny_x86[0] / MANIFEST).read_bytes()[:500])
    for result, name in ((run_compile("--target", "x86-host", onnx_file, "-o", tmp_path / "o"), "m.onnx"),
                         (run_console("export", ckpt, "--size", "32x32", "-o", tmp_path / "e.onnx"), "c.pt"),
                         (run_compile("bench", artifact, "--local"), MANIFEST)):
        assert_one_line_error(result.stderr, result.returncode, name)
