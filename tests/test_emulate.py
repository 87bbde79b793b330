"""The shipped aarch64 library run on an emulated ARM device over RPC (qemu-aarch64 with the
phone's CPU model, TVM's aarch64 runtime), checked against ONNX Runtime on the host; each
target's dot product (sdot, smull + sadalp) exact on its emulated core and in every conv kernel
of its build; CPU features the emulated CPU lacks are refused before they can crash it, and a crash that happens
anyway is reported with its cause."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import tvm
from tvm import te
from tvm.support import cc

from compile.artifact import load_artifact
from compile.backend import table_lookup
from compile.backend.dot_products import by_name, candidates, pixel_candidates
from compile.backend.high_multiply import HIGH_BLOCK, divide_te, for_target, high_te
from compile.backend.targets import get_target
from compile.backend.tuning_db import RECORDS
from compile.deploy.inputs import model_input
from compile.deploy.rpc import parse_tracker, request_device
from compile.frontend.tflite.fixed_point import (
    INT32_MAX,
    INT32_MIN,
    rounding_divide_by_pot,
    rounding_doubling_high_mul,
)
from qatie.references import WITHIN_ONE_STEP_REQUIRED, LiteRtKernels, litert_output
from tests.conv_cases import INSTRUCTIONS, conv_case, conv_kernels, tile_kernels
from tests.helpers import FIRST_CONV, PAPER_MODEL, assert_one_line_error, run_compile
from tests.lookup_cases import lookup_case
from tests.qdq_models import float_conv_net, ort_quantized
from tests.rpc_cluster import free_port, start_cluster
from tests.tflite_models import mobile_block

A53_KEY, A76_KEY = "a53-emu", "a76-emu"
# mca: bench and profile over an emulated device add the estimated ARM cycles (gcc, llvm)
pytestmark = [pytest.mark.qemu, pytest.mark.rpc, pytest.mark.cross, pytest.mark.mca, pytest.mark.xdist_group("arm")]


@pytest.fixture(scope="module")
def emulated(tmp_path_factory):
    """A tracker with two emulated devices: Cortex-A53 (ARMv8.0) and Cortex-A76 (ARMv8.2, dotprod)."""
    cluster = start_cluster(tmp_path_factory.mktemp("emu"), servers=0,
                            emulated={A53_KEY: "arm64-linux", A76_KEY: "arm64-linux-dotprod"})
    yield cluster
    cluster.stop()


def _bench(artifact: Path, cluster, key: str, out: Path):
    return run_compile("bench", artifact, "--tracker", cluster.address, "--key", key, "--repeats", 2, "--warmup", 1,
                    "-o", out)


@pytest.mark.parametrize(("target", "key"), [("arm64-linux", A53_KEY), ("arm64-linux-dotprod", A76_KEY)])
def test_emulated_arm_device_matches_onnxruntime(tiny_arm, emulated, target, key, tmp_path):
    result = _bench(tiny_arm[target], emulated, key, tmp_path)
    assert result.returncode == 0, result.stderr
    (row,) = json.loads((tmp_path / "bench.json").read_text())["devices"]
    assert row["arch"] == "aarch64" and row["emulated"].startswith("qemu-aarch64 -cpu cortex-a"), row
    assert row["agreement"]["onnxruntime"]["within_one_step"] >= WITHIN_ONE_STEP_REQUIRED, row
    # Emulator time is labelled as such wherever a latency is printed; the estimate comes beside it.
    assert "(emulated)" in result.stdout and "not device latencies" in result.stdout
    assert "(emulated)" in (tmp_path / "bench.md").read_text()
    estimates = json.loads((tmp_path / "bench.json").read_text())["estimates"]
    assert [e["core"] for e in estimates] == (["cortex-a53"] if target == "arm64-linux" else []) + ["cortex-a55", "cortex-a76"]
    assert all(e["cycles"] > 0 and e["label"].startswith("estimated (llvm-mca") for e in estimates)
    assert all(e["peers"][0]["cycles"] > 0 for e in estimates)  # the runtime a user would otherwise ship
    assert "estimated (llvm-mca" in (tmp_path / "bench.md").read_text()


def test_profile_on_an_emulated_device_adds_estimated_cycles(tiny_arm, emulated, tmp_path):
    """Emulator wall time says nothing of a phone: profile adds each core's estimate (the
    instructions qemu ran, costed by llvm-mca), kernel by kernel, labelled as estimates, and
    ONNX Runtime's aarch64 runtime on the same ONNX file estimated the same way."""
    artifact = tiny_arm["arm64-linux-dotprod"]
    result = run_compile("profile", artifact, "--tracker", emulated.address, "--key", A76_KEY, "--repeats", 2,
                         "--warmup", 1, "-o", tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "profile.json").read_text())
    names = {k["name"] for k in json.loads((artifact / "manifest.json").read_text())["kernels"]["kernels"]}
    assert [e["core"] for e in report["estimates"]] == ["cortex-a55", "cortex-a76"]
    for estimate in report["estimates"]:
        assert {k["name"] for k in estimate["kernels"]} == names
        assert all(k["cycles"] > 0 for k in estimate["kernels"])
        assert estimate["peers"][0]["speedup"] > 0  # ONNX Runtime's aarch64 estimate, the same run
    assert "estimated (llvm-mca" in result.stdout and "not device latencies" in result.stdout
    assert "ONNX Runtime" in result.stdout
    assert "Mcycles" in (tmp_path / "profile.md").read_text()


def test_ort_quantized_net_on_emulated_fma_cpu_matches_onnxruntime(emulated, tmp_path):
    """Float scales from ONNX Runtime's quantizer on a CPU with fused multiply-add: the float
    fake-quant path flips quantization bins here; the integer kernels must not."""
    model = ort_quantized(float_conv_net(tmp_path / "float.onnx", size=32), tmp_path / "qdq.onnx", size=32)
    built = run_compile("--target", "arm64-linux-dotprod", model, "-o", tmp_path / "arm")
    assert built.returncode == 0, built.stderr
    x = np.random.default_rng(3).random((1, 3, 32, 32), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    result = run_compile("bench", tmp_path / "arm", "--tracker", emulated.address, "--key", A76_KEY, "--repeats", 1,
                      "--input", tmp_path / "x.npy", "-o", tmp_path)
    assert result.returncode == 0, result.stderr
    agreement = json.loads((tmp_path / "bench.json").read_text())["devices"][0]["agreement"]["onnxruntime"]
    assert agreement["within_one_step"] >= WITHIN_ONE_STEP_REQUIRED, agreement


@pytest.mark.long
@pytest.mark.parametrize(("target", "key"), [("arm64-linux", A53_KEY), ("arm64-linux-dotprod", A76_KEY)])
def test_the_papers_tflite_model_on_emulated_arm_equals_litert_reference_kernels(emulated, target, key, tmp_path):
    """The paper's published int8 TFLite model, imported and built for the phone targets, run on
    the emulated cores: its output equals LiteRT's reference kernels on the host, bit for bit,
    every conv kernel on the target's dot product. Beside each core's estimate: LiteRT's own
    aarch64 runtime (XNNPACK) on the same file, which computes what the host's XNNPACK does."""
    built = run_compile("--target", target, PAPER_MODEL, "-o", tmp_path / "arm", "--emit-source", "--no-tuning")
    assert built.returncode == 0, built.stderr
    dot = "neon-smull" if target == "arm64-linux" else "sdot"
    pixels = f"{dot}-pixels"  # the last conv's (3 outputs: `PIXEL_DOT_PRODUCTS`)
    convs = conv_kernels(tmp_path / "arm")
    assert len(convs) >= 35 and all(chosen in (dot, pixels) and INSTRUCTIONS[chosen] in found
                                    for chosen, found in convs.values())
    assert [chosen for chosen, _ in convs.values()].count(pixels) == 1
    result = _bench(tmp_path / "arm", emulated, key, tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "bench.json").read_text())
    agreement = report["devices"][0]["agreement"]["litert-reference"]
    assert agreement["max_steps"] == 0, agreement
    artifact = load_artifact(tmp_path / "arm")
    output = artifact.manifest.model.outputs[0]
    x = model_input(artifact.manifest.model.inputs[0], None)
    xnnpack = output.agreement(litert_output(PAPER_MODEL, x, LiteRtKernels.XNNPACK), litert_output(PAPER_MODEL, x)).as_dict()
    for estimate in report["estimates"]:
        (litert,) = estimate["peers"]
        assert litert["runtime"].startswith("LiteRT ") and "XNNPACK" in litert["runtime"], litert
        assert litert["as_core"] == estimate["core"] and litert["cycles"] > 0 and litert["instructions"] > 0
        assert litert["reference"] == "litert-reference" and litert["agreement"] == pytest.approx(xnnpack), litert


@pytest.mark.parametrize(("target", "key"), [("arm64-linux", A53_KEY), ("arm64-linux-dotprod", A76_KEY)])
def test_depthwise_fully_connected_and_pooling_on_emulated_arm_equal_litert_reference_kernels(emulated, target, key,
                                                                                              tmp_path):
    """The TFLite operators the paper's model does not use (`tests/tflite_models.mobile_block`),
    built for the phone targets (their requantizes on sqrdmulh) and run on the emulated cores:
    bit for bit LiteRT's reference kernels."""
    model = tmp_path / "block.tflite"
    model.write_bytes(mobile_block(1))
    built = run_compile("--target", target, model, "-o", tmp_path / "arm", "--no-tuning")
    assert built.returncode == 0, built.stderr
    result = _bench(tmp_path / "arm", emulated, key, tmp_path)
    assert result.returncode == 0, result.stderr
    agreement = json.loads((tmp_path / "bench.json").read_text())["devices"][0]["agreement"]["litert-reference"]
    assert agreement["max_steps"] == 0, agreement


def _on_emulated_core(mod: tvm.IRModule, target: str, emulated, key: str, tmp_path: Path):
    """`mod` built for `target`, cross-compiled and loaded on the emulated core `key`: (its
    runtime module, the remote device)."""
    spec = get_target(target)
    library = tmp_path / "kernels.so"
    tvm.compile(mod, target=spec.tvm_target()).export_library(str(library), fcompile=cc.cross_compiler(spec.compiler()))
    device = request_device(parse_tracker(emulated.address), key, 60).connect(120)
    device.session.upload(str(library))
    return device.session.load_module(library.name), device.session.cpu()


@pytest.mark.parametrize(("target", "key", "dot"), [("arm64-linux", A53_KEY, "neon-smull"),
                                                   ("arm64-linux", A53_KEY, "neon-smull-pixels"),
                                                   ("arm64-linux-dotprod", A76_KEY, "sdot"),
                                                   ("arm64-linux-dotprod", A76_KEY, "sdot-pixels")])
def test_arm_dot_product_computes_the_conv_exactly_on_the_emulated_core(emulated, target, key, dot, tmp_path):
    """The target's own dot product (and its pixels-in-lanes one), at every register tile, run on
    the emulated core (the instruction executed by qemu's model of that CPU), against numpy: exact."""
    spec = get_target(target)
    chosen = by_name(dot)
    assert chosen in (candidates(spec.tvm_target())[0], *pixel_candidates(spec.tvm_target()))
    case = conv_case(chosen, stride=1, seed=5)
    tiles = tile_kernels(case)
    kernels, remote = _on_emulated_core(tiles, target, emulated, key, tmp_path)
    for tile in tiles.functions:
        out = tvm.runtime.empty(case.out_shape, "int32", device=remote)
        kernels[tile.name_hint](tvm.runtime.tensor(case.data, device=remote),
                                tvm.runtime.tensor(case.weight, device=remote), out)
        assert np.array_equal(case.unpacked(out.numpy()), case.expected), tile.name_hint


@pytest.mark.parametrize(("target", "key"), [("arm64-linux", A53_KEY), ("arm64-linux-dotprod", A76_KEY)])
def test_the_high_multiply_instruction_equals_tflites_on_the_emulated_core(emulated, target, key, tmp_path):
    """NEON's sqrdmulh as the requantize's high multiply (`compile.backend.high_multiply`), run
    on the emulated core at the vector width the schedules give it, against TFLite's
    SaturatingRoundingDoublingHighMul in Python integers: the int32 extremes, ties, random values,
    every kind of multiplier QuantizeMultiplier makes ([2^30, 2^31))."""
    spec = get_target(target)
    high = for_target(spec.tvm_target())
    assert high is not None and high.name == "sqrdmulh"
    rng = np.random.default_rng(3)
    x = np.concatenate([[INT32_MIN, INT32_MAX, 0, 1, -1, 2**30, -(2**30)], rng.integers(INT32_MIN, INT32_MAX, 4089,
                                                                                           endpoint=True)])
    m = np.concatenate([[2**30, INT32_MAX, 2**30 + 1], rng.integers(2**30, INT32_MAX, 4093, endpoint=True)])
    x_t, m_t = te.placeholder((x.size,), "int32", "x"), te.placeholder((m.size,), "int32", "m")
    sch = tvm.s_tir.Schedule(te.create_prim_func([x_t, m_t, high_te(x_t, m_t, high)]))
    (loop,) = sch.get_loops(sch.get_sblock(HIGH_BLOCK))
    sch.vectorize(sch.split(loop, [None, high.lanes])[1])
    kernels, remote = _on_emulated_core(sch.mod, target, emulated, key, tmp_path)
    kernel = kernels["main"]
    out = tvm.runtime.empty((x.size,), "int32", device=remote)
    kernel(tvm.runtime.tensor(x.astype(np.int32), device=remote), tvm.runtime.tensor(m.astype(np.int32), device=remote),
           out)
    assert out.numpy().tolist() == [rounding_doubling_high_mul(int(a), int(b)) for a, b in zip(x, m)]


@pytest.mark.parametrize(("target", "key"), [("arm64-linux", A53_KEY), ("arm64-linux-dotprod", A76_KEY)])
def test_the_rounding_shift_instructions_equal_tflites_on_the_emulated_core(emulated, target, key, tmp_path):
    """NEON's RoundingDivideByPOT (`high_multiply.divide_te`: sqadd of the sign fixup, srshl) at
    the high multiply's vector width on the emulated core, against TFLite's in Python integers:
    every exponent 0..31, the int32 extremes, ties (odd multiples of half), random values."""
    high = for_target(get_target(target).tvm_target())
    rng = np.random.default_rng(4)
    exponents = np.arange(32)
    ties = [((2 * k + 1) << e) >> 1 for e in range(1, 31) for k in (0, 1, 5)]
    values = np.concatenate([[INT32_MIN, INT32_MAX, INT32_MIN + 1, 0, 1, -1], ties, [-t for t in ties],
                             rng.integers(INT32_MIN, INT32_MAX, 1500, endpoint=True)])
    x = np.repeat(values, exponents.size).astype(np.int32)
    negated = -np.tile(exponents, values.size).astype(np.int32)
    x_t, e_t = te.placeholder((x.size,), "int32", "x"), te.placeholder((x.size,), "int32", "e")
    sch = tvm.s_tir.Schedule(te.create_prim_func([x_t, e_t, divide_te(x_t, e_t, high)]))
    (loop,) = sch.get_loops(sch.get_sblock("rounding_shift"))
    sch.vectorize(sch.split(loop, [None, high.lanes])[1])
    kernels, remote = _on_emulated_core(sch.mod, target, emulated, key, tmp_path)
    out = tvm.runtime.empty((x.size,), "int32", device=remote)
    kernels["main"](tvm.runtime.tensor(x, device=remote), tvm.runtime.tensor(negated, device=remote), out)
    assert out.numpy().tolist() == [rounding_divide_by_pot(int(a), int(-b)) for a, b in zip(x, negated)]


@pytest.mark.parametrize(("target", "key"), [("arm64-linux", A53_KEY), ("arm64-linux-dotprod", A76_KEY)])
def test_the_tbl_table_lookup_equals_the_gather_on_the_emulated_core(emulated, target, key, tmp_path):
    """NEON's tbl/tbx over a 256-entry table in 16 registers (`compile.backend.table_lookup`),
    vectorized as the schedules do, run on the emulated core: every code and clipped indices,
    against numpy's take."""
    (lookup,) = table_lookup.for_target(get_target(target).tvm_target())
    assert lookup.name == "tbl"
    case = lookup_case(lookup)
    kernels, remote = _on_emulated_core(case.kernel, target, emulated, key, tmp_path)
    out = tvm.runtime.empty(case.index.shape, "int8", device=remote)
    kernels["main"](tvm.runtime.tensor(case.table, device=remote), tvm.runtime.tensor(case.index, device=remote), out)
    assert np.array_equal(out.numpy(), case.expected)


@pytest.mark.parametrize(("target", "dot"), [("arm64-linux", "neon-smull"), ("arm64-linux-dotprod", "sdot")])
def test_every_conv_kernel_of_an_arm_build_uses_its_dot_product(tiny_arm, target, dot):
    """Each conv kernel on the target's dot product, or its pixels-in-lanes one (a conv with 3
    outputs or fewer), with the instruction in its code."""
    convs = conv_kernels(tiny_arm[target])
    wrong = {conv: (chosen, found) for conv, (chosen, found) in convs.items()
             if chosen not in (dot, f"{dot}-pixels") or INSTRUCTIONS[chosen] not in found}
    assert not wrong, wrong


def test_dotprod_library_on_a53_is_refused_naming_the_feature(tiny_arm, emulated, tmp_path):
    result = _bench(tiny_arm["arm64-linux-dotprod"], emulated, A53_KEY, tmp_path)
    assert_one_line_error(result.stderr, result.returncode, "+dotprod", "SIGILL", "arm64-linux-dotprod")
    assert not (tmp_path / "bench.json").exists()


def test_a_crash_on_the_emulated_cpu_is_logged_with_its_cause(tiny_arm, emulated):
    """Bypassing the feature check (a plain TVM client), the A53 really dies on sdot; the device
    log says SIGILL and why, and the device registers again for the next session."""
    import tvm
    from tvm import relax, rpc

    folder = tiny_arm["arm64-linux-dotprod"]
    shape = json.loads((folder / "manifest.json").read_text())["model"]["inputs"][0]["shape"]
    session = rpc.connect_tracker("127.0.0.1", emulated.port).request(A53_KEY, session_timeout=120)
    with pytest.raises(tvm.error.InternalError, match="kShutdown"):  # the server process died
        session.upload(str(folder / "model.so"))
        dev = session.cpu(0)
        vm = relax.VirtualMachine(session.load_module("model.so"), dev)
        vm["main"](tvm.runtime.tensor(np.zeros(shape, "float32"), dev))
    log = next(log for log in emulated.server_logs if log.name == f"{A53_KEY}.log")
    deadline = time.monotonic() + 30
    while "SIGILL" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "SIGILL (illegal instruction)" in log.read_text() and "cortex-a53 lacks" in log.read_text()
    while emulated.free(A53_KEY) < 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert emulated.free(A53_KEY) == 1


@pytest.mark.long
@pytest.mark.tune
def test_tuning_over_an_emulated_device_is_plumbing_only(tiny_onnx, emulated, tmp_path):
    """Records are written where asked and every timing is labelled emulated; the shipped
    tuning_logs/ folder (the default) is refused before any work."""
    common = ["tune", "--target", "arm64-linux", tiny_onnx[0], "--trials", 2, "--only", FIRST_CONV,
              "--tracker", emulated.address, "--key", A53_KEY]
    refused = run_compile(*common)
    assert_one_line_error(refused.stderr, refused.returncode, "emulated", "tuning_logs")
    result = run_compile(*common, "--log-dir", tmp_path / "logs", "--curve", tmp_path / "curve.json")
    assert result.returncode == 0, result.stderr
    assert "measured under an emulator (qemu-aarch64 -cpu cortex-a53)" in result.stdout
    assert len((tmp_path / "logs" / RECORDS).read_text().splitlines()) >= 2
    assert json.loads((tmp_path / "curve.json").read_text())["emulated"] == "qemu-aarch64 -cpu cortex-a53"


def test_emulator_start_errors_are_one_line(emulated):
    dead = run_compile("emulate", "arm64", "--tracker", f"127.0.0.1:{free_port()}")
    assert_one_line_error(dead.stderr, dead.returncode, "unreachable")
    taken = run_compile("emulate", "arm64", "--tracker", emulated.address, "--port", emulated.port)
    assert_one_line_error(taken.stderr, taken.returncode, f"cannot listen on 127.0.0.1:{emulated.port}", "--port 0")
