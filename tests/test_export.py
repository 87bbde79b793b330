import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from qatie.checkpoint import build_model, load_checkpoint
from qatie.onnx_qdq import check_conv_qdq, producers
from qatie.quant.fake_quant import act_quantizers, set_quant_mode
from qatie.references import WITHIN_ONE_STEP_REQUIRED
from tests.helpers import run_cli


@pytest.fixture(scope="module")
def qdq_onnx(tiny_onnx):
    return tiny_onnx


def test_every_conv_reads_dequantize_on_input_and_int8_weight(qdq_onnx):
    path, convs, _, _ = qdq_onnx
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
    _, _, spec, fused = qdq_onnx
    assert spec.within_one_step >= WITHIN_ONE_STEP_REQUIRED and spec.passed
    assert spec.elements == 3 * 40 * 36
    assert 0.0 <= fused.within_one_step <= 1.0


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
