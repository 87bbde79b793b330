"""Frontend: a QDQ ONNX file in, a validated Relax module with integer arithmetic out.

`onnx_loader` reads and checks the file and imports it into Relax; `fold` rewrites its QDQ
patterns into integer ops through the registry in `rewrites`; `inspect` counts what became
integer; `io_description` describes the model's boundary for the artifact's manifest.
"""

from __future__ import annotations

from pathlib import Path

from compile.frontend.fold import FoldLog, fold_qdq
from compile.frontend.onnx_loader import LoadedModel, load_onnx, to_relax


def load_and_fold(onnx_path: Path, input_shapes: dict | None = None):
    """(LoadedModel, folded Relax IRModule, FoldLog): validate and import the ONNX file, then
    fold its QDQ ops into integer arithmetic."""
    model = load_onnx(onnx_path, input_shapes)
    mod, log = fold_qdq(to_relax(model))
    return model, mod, log


__all__ = ["FoldLog", "LoadedModel", "fold_qdq", "load_and_fold", "load_onnx", "to_relax"]
