"""The stage layout of `compile/` holds: imports only point down the layers, and the artifact
contract imports no compiler (deploying must not need TVM's compiler stack)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "compile"
# A module may import stages of a lower layer only (and its own stage).
LAYERS = {"__init__": 0, "records": 0, "artifact": 1, "tvm_private": 1, "frontend": 2, "deploy": 2, "backend": 3,
          "tuning": 4, "offline": 4, "cli": 5}


def _stage(path: Path) -> str:
    return path.relative_to(ROOT).with_suffix("").parts[0]


def test_stages_import_only_lower_layers():
    wrong = []
    for path in ROOT.rglob("*.py"):
        stage = _stage(path)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("compile."):
                target = node.module.split(".")[1]
                if target != stage and LAYERS[target] >= LAYERS[stage]:
                    wrong.append(f"{path.relative_to(ROOT.parent)} imports {node.module}")
    assert not wrong, wrong


def test_loading_an_artifact_imports_no_compiler():
    code = "import sys, compile.artifact; print(sorted(m for m in ('tvm', 'onnx', 'torch') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", result.stdout
