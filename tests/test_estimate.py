"""The ARM cycle estimate of an aarch64 build: the model run once and twice under qemu with our
block-profile plugin, the difference (one inference) cut into basic blocks and costed with
llvm-mca's model of each core. Kernel instruction counts are exact and repeatable; the estimate
is labelled as one; ONNX Runtime's aarch64 runtime is estimated the same way beside it; cores
the build cannot run on, and builds for other architectures, are refused with one line."""

from __future__ import annotations

import json

import pytest

from compile.offline.block_profile import Block, one_run
from qatie.references import WITHIN_ONE_STEP_REQUIRED
from tests.helpers import assert_one_line_error, compile_here, qatie_here, run_compile

# The most multiply-adds one instruction of each build does: sdot (4 lanes x 4) and smlal (8 lanes).
MACS_PER_INSTRUCTION = {"arm64-linux-dotprod": 16, "arm64-linux": 8}
ADD, B_NE = (0x8B010000).to_bytes(4, "little"), (0x54FFFFA1).to_bytes(4, "little")  # add x0, x0, x1; b.ne


def test_one_inference_is_cut_into_basic_blocks_however_qemu_cut_it():
    """qemu cut the loop at 4..12 in one piece in one run and in two in the other (it
    retranslates a block after a write to its page): the difference is per instruction, and the
    blocks come from the code, so the result does not depend on qemu's cuts."""
    once = [Block("lib", 0, 1, (ADD,)), Block("lib", 4, 10, (ADD, ADD, B_NE))]
    twice = [Block("lib", 0, 2, (ADD,)), Block("lib", 4, 20, (ADD,)), Block("lib", 8, 20, (ADD, B_NE)),
             Block("other", 4, 3, (ADD,))]
    assert one_run(once, twice) == [Block("lib", 0, 1, (ADD,)), Block("lib", 4, 10, (ADD, ADD, B_NE)),
                                    Block("other", 4, 3, (ADD,))]
    # a branch ends a block even where the next instruction ran as often
    assert one_run([], [Block("lib", 0, 1, (ADD, B_NE, ADD))]) == [Block("lib", 0, 1, (ADD, B_NE)),
                                                                   Block("lib", 8, 1, (ADD,))]


def _kernel_rows(estimate: dict) -> list[tuple]:
    return [(k["name"], k["instructions"], k["cycles"]) for k in estimate["kernels"]]


@pytest.mark.long
@pytest.mark.parametrize("target", ["arm64-linux-dotprod", "arm64-linux"])
@pytest.mark.qemu
@pytest.mark.cross
@pytest.mark.mca
def test_estimate_costs_every_kernel_of_one_inference(tiny_arm, target, tmp_path):
    artifact = tiny_arm[target]
    manifest = json.loads((artifact / "manifest.json").read_text())
    kernels = {k["name"]: k for k in manifest["kernels"]["kernels"]}
    reports = []
    # repeatability is checked on one build (each estimate is four qemu sessions)
    for run in ("first", "second") if target.endswith("dotprod") else ("first",):
        result = run_compile("estimate", artifact, "-o", tmp_path / run)
        assert result.returncode == 0, result.stderr
        reports.append(json.loads((tmp_path / run / "estimate.json").read_text()))
    expected_cores = ["cortex-a55", "cortex-a76"] if target.endswith("dotprod") else ["cortex-a53", "cortex-a55", "cortex-a76"]
    assert [e["core"] for e in reports[0]["estimates"]] == expected_cores
    for first, second in zip(reports[0]["estimates"], reports[-1]["estimates"], strict=True):
        # the kernels run the same instructions every time: their counts and estimates repeat
        # exactly; the code around them does not quite (the RPC server reads the socket in as many
        # pieces as the data arrives in): seen 1 % of this tiny model's outside-kernel instructions
        assert _kernel_rows(first) == _kernel_rows(second)
        assert first["cycles"] == pytest.approx(second["cycles"], rel=0.02)
        assert first["label"].startswith("estimated (llvm-mca") and "qemu block counts" in first["label"]
        kernel_cycles = sum(k["cycles"] for k in first["kernels"])
        assert first["cycles"] == pytest.approx(kernel_cycles + first["outside_kernels"]["cycles"])
        assert 0 < first["outside_kernels"]["cycles"] < kernel_cycles  # the VM's own work: the lesser part
        assert first["ms"] == pytest.approx(first["cycles"] / (first["clock_ghz"] * 1e6))
        assert {k["name"] for k in first["kernels"]} == set(kernels)
        for row in first["kernels"]:
            assert row["instructions"] > 0 and row["cycles"] > 0, row  # every kernel ran, in its own code
            kernel = kernels[row["name"]]
            # a conv's multiply-adds need at least this many instructions: blocks attributed to
            # the wrong kernel, or counted per translation instead of per execution, break this
            assert row["instructions"] >= kernel["macs"] * kernel["calls"] / MACS_PER_INSTRUCTION[target], row
    a55, a76 = (next(e for e in reports[0]["estimates"] if e["core"] == core) for core in ("cortex-a55", "cortex-a76"))
    assert a76["cycles"] < a55["cycles"]  # the out-of-order big core issues more per cycle
    assert "Mcycles" in result.stdout and "estimated (llvm-mca" in result.stdout


@pytest.mark.long
@pytest.mark.qemu
@pytest.mark.cross
@pytest.mark.mca
def test_onnxruntime_aarch64_is_estimated_beside_ours(tiny_arm, tiny_ckpt, tmp_path):
    artifact = tiny_arm["arm64-linux-dotprod"]
    fp32 = tmp_path / "fp32.onnx"  # the float export: what a user might ship with ONNX Runtime instead
    exported = qatie_here("export", tiny_ckpt, "--size", "40x36", "--fp32", "-o", fp32)
    assert exported.returncode == 0, exported.stderr
    result = run_compile("estimate", artifact, "--onnxruntime-model", fp32, "-o", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    for estimate in json.loads((tmp_path / "out" / "estimate.json").read_text())["estimates"]:
        qdq, float_model = estimate["peers"]  # the artifact's own QDQ file first
        assert (qdq["model"], float_model["model"]) == ("tiny.onnx", "fp32.onnx")
        for ort in (qdq, float_model):
            assert ort["runtime"].startswith("ONNX Runtime ") and "aarch64" in ort["runtime"]
            assert ort["qemu_cpu"] == "cortex-a76"  # ONNX Runtime takes its sdot path on the A55 and A76
            assert ort["as_core"] == estimate["core"] and ort["reference"] == "onnxruntime"
            assert ort["instructions"] > 0 and ort["label"].startswith("estimated (llvm-mca")
            assert ort["speedup"] == pytest.approx(ort["cycles"] / estimate["cycles"])
        fastest = min((qdq, float_model), key=lambda ort: ort["cycles"])
        assert estimate["fastest_peer"] == {"model": fastest["model"], "runtime": fastest["runtime"],
                                            "speedup": fastest["speedup"]}
        # each ran its model: the float one as ONNX Runtime's float spec does; the QDQ one within a
        # few steps of its spec (its ARM integer kernels round differently, see docs/offline-checks.md)
        assert float_model["agreement"]["within_one_step"] >= WITHIN_ONE_STEP_REQUIRED
        assert qdq["agreement"]["max_steps"] <= 16 and qdq["agreement"]["psnr_db"] > 30
    assert "fastest: ONNX Runtime " in result.stdout


def test_estimate_refuses_what_it_cannot_estimate(tiny_arm, tiny_x86, tiny_ckpt, tmp_path):
    other_size = tmp_path / "other.onnx"
    assert qatie_here("export", tiny_ckpt, "--size", "32x32", "-o", other_size).returncode == 0
    cases = [
        ((tiny_arm["arm64-linux-dotprod"], "--core", "cortex-a53"), "cortex-a53 lacks"),
        ((tiny_arm["arm64-linux"], "--core", "cortex-x9"), "no such core"),
        ((tiny_x86[0],), "x86_64"),
        ((tmp_path / "nothing",), "manifest"),
        ((tiny_arm["arm64-linux"], "--onnx", tmp_path / "model.onnx"), "add --peer"),
        ((tiny_arm["arm64-linux"], "--onnxruntime", "--onnx", tiny_x86[0] / "manifest.json"), "sha256 differs"),
        ((tiny_arm["arm64-linux"], "--onnxruntime-model", tiny_x86[0] / "manifest.json"), "not a readable ONNX"),
        ((tiny_arm["arm64-linux"], "--onnxruntime-model", other_size), "the same network at the same size"),
    ]
    for args, needle in cases:
        result = compile_here("estimate", *args)
        assert_one_line_error(result.stderr, result.returncode, needle)
