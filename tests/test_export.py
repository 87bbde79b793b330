from dataclasses import replace

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from qatie.checkpoint import build_model, load_checkpoint
from qatie.onnx_qdq import check_conv_qdq, producers
from qatie.quant.fake_quant import act_quantizers, set_quant_mode
from qatie.references import WITHIN_ONE_STEP_REQUIRED, OrtMode, ort_output
from tests.helpers import assert_one_line_error, run_cli


@pytest.fixture(scope="module")
def qdq_onnx(tiny_onnx):
    return tiny_onnx


def test_every_conv_reads_dequantize_on_input_and_int8_weight(qdq_onnx):
    path, convs, _ = qdq_onnx
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    assert convs == check_conv_qdq(model) == 35
    inits = {i.name: i for i in model.graph.initializer}
    made_by = producers(model)
    for conv in (n for n in model.graph.node if n.op_type == "Conv"):
        weight_dq = made_by[conv.input[1]]
        q = numpy_helper.to_array(inits[weight_dq.input[0]])
        zp = numpy_helper.to_array(inits[weight_dq.input[2]])
        assert q.dtype == np.int8 and np.all(zp == 0)
        assert numpy_helper.to_array(inits[weight_dq.input[1]]).shape == (q.shape[0],)  # per channel
    assert model.opset_import[0].version == 20


def test_exported_activation_qparams_are_the_trained_ones_bit_for_bit(tiny_ckpt, qdq_onnx):
    net = build_model(load_checkpoint(tiny_ckpt))
    set_quant_mode(net, "frozen")
    trained = {(float(q.scale), int(q.zero_point)) for _, q in act_quantizers(net)}
    model = onnx.load(qdq_onnx[0])
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    exported = {
        (float(inits[n.input[1]]), int(inits[n.input[2]]))
        for n in model.graph.node
        if n.op_type == "QuantizeLinear"
    }
    assert exported == trained
    assert all(np.float32(s) == s for s, _ in exported)


def test_ort_matches_pytorch_within_one_step(qdq_onnx):
    _, _, verification = qdq_onnx
    required = verification.required
    assert required.within_one_step >= WITHIN_ONE_STEP_REQUIRED and required.passed
    assert required.elements == verification.as_trained.elements == 3 * 40 * 36
    assert 0.0 <= verification.fused.within_one_step <= 1.0


def test_cli_export_prints_parity_and_fp32_has_no_qdq(tiny_ckpt, tmp_path):
    result = run_cli("export", tiny_ckpt, "--size", "32x32", "-o", tmp_path / "f.onnx", "--fp32")
    assert result.exit_code == 0, result.output
    assert "within 1 output step" in result.output
    ops = {n.op_type for n in onnx.load(tmp_path / "f.onnx").graph.node}
    assert "Conv" in ops and not ops & {"QuantizeLinear", "DequantizeLinear"}


def test_pow2_export_scales_and_bias_make_every_conv_exact(qdq_onnx):
    """Power-of-two scales plus a bias on the s_x * s_w grid: float convs compute exact integers."""
    model = onnx.load(qdq_onnx[0])
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    made_by = producers(model)
    output_dq = made_by[model.graph.output[0].name]
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear" and node is not output_dq:
            scale = inits[node.input[1]].astype(np.float64)
            assert np.all(np.log2(scale) == np.round(np.log2(scale))), node.name
    for conv in (n for n in model.graph.node if n.op_type == "Conv"):
        s_x = inits[made_by[conv.input[0]].input[1]]
        s_w = inits[made_by[conv.input[1]].input[1]]
        levels = inits[conv.input[2]].astype(np.float64) / (s_x.astype(np.float64) * s_w)
        assert np.array_equal(levels, np.round(levels)), conv.name


def test_the_reference_instance_norm_has_exact_statistics():
    """One 512x512 channel of int8 codes through InstanceNormalization: ORT sums it in float32
    and its mean and variance drift from the exact ones; the reference (`OrtMode.SPEC`) rounds
    float64 statistics once and equals the spec's formula computed that way, bit for bit."""
    rng = np.random.default_rng(0)
    codes = rng.integers(-128, 128, (1, 2, 512, 512), dtype=np.int8)
    codes[:, :, :256] //= 8  # unequal halves: a large mean and a variance no float32 order sums exactly
    scale, weight, bias = np.float32(2**-5), np.array([1.5, -0.75], np.float32), np.array([0.25, 0.5], np.float32)
    graph = helper.make_graph(
        [helper.make_node("DequantizeLinear", ["q", "s"], ["x"]),
         helper.make_node("InstanceNormalization", ["x", "w", "b"], ["y"], epsilon=1e-5)],
        "norm", [helper.make_tensor_value_info("q", TensorProto.INT8, codes.shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, codes.shape)],
        [numpy_helper.from_array(np.array(scale), "s"), numpy_helper.from_array(weight, "w"),
         numpy_helper.from_array(bias, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)]).SerializeToString()

    x = codes.astype(np.float32) * scale
    x64 = x.astype(np.float64)
    mean = x64.mean((2, 3), keepdims=True)
    variance = ((x64 - mean) ** 2).mean((2, 3), keepdims=True)
    normalized = (x - mean.astype(np.float32)) / np.sqrt(variance.astype(np.float32) + np.float32(1e-5))
    want = normalized * weight.reshape(-1, 1, 1) + bias.reshape(-1, 1, 1)
    assert np.array_equal(ort_output(model, codes, OrtMode.SPEC), want)
    # the input is one ORT's own float32 norm gets wrong: without the replacement they differ
    assert not np.array_equal(ort_output(model, codes, OrtMode.DEFAULT), want)


def test_a_file_that_fails_verification_is_a_one_line_error_and_not_written(tiny_ckpt, tmp_path, monkeypatch):
    import qatie.export

    verify = qatie.export.verify

    def off_by_one_step(proto, model, x):
        wrong = verify(proto, model, x).required
        return qatie.export.Verification(*[replace(wrong, within_one_step=0.5, max_steps=1.5)] * 3)

    monkeypatch.setattr(qatie.export, "verify", off_by_one_step)
    out = tmp_path / "m.onnx"
    result = run_cli("export", tiny_ckpt, "--size", "32x32", "-o", out)
    assert_one_line_error(result.output, result.exit_code, "--size 32x32", "nothing written", "50.000 %")
    assert not out.exists() and not list(tmp_path.iterdir())
