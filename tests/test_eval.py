import json

from PIL import Image

from tests.helpers import run_cli


def test_eval_reports_fp32_ptq_qat_with_json_and_panel(tiny_ckpt, tmp_path):
    result = run_cli("eval", tiny_ckpt, "--ptq-batches", "2", "--json", tmp_path / "e.json", "--png", tmp_path / "p.png")
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "e.json").read_text())["rows"]
    assert [r["method"] for r in rows] == ["input (degraded)", "FP32", "PTQ", "QAT"]
    for r in rows:
        assert 5 < r["psnr"] < 60 and 0 < r["ssim"] <= 1
        assert f"{r['psnr']:.2f}" in result.output
    with Image.open(tmp_path / "p.png") as panel:
        assert panel.height == 3 * 192 and panel.width > 4 * 192
