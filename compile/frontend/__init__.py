"""Frontend: a quantized model file in, a validated Relax module with integer arithmetic out.

Two formats, one registry by file suffix (`FRONTENDS`):
- QDQ ONNX: `onnx_loader` reads and checks the file and imports it with TVM's ONNX frontend;
  `fold` rewrites its QDQ patterns into integer ops through the registry in `rewrites`;
  `io_description` describes its boundary.
- int8 TFLite: `tflite` reads the flatbuffer and converts each operator to the integer
  arithmetic of LiteRT's reference kernels (there is nothing to fold).
`inspect` counts what became integer, for either.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import tvm

from compile.artifact import TensorInfo
from compile.frontend.fold import FoldLog, fold_qdq
from compile.frontend.onnx_loader import LoadedModel, load_onnx, to_relax
from qatie.errors import QatieError


@dataclass(frozen=True)
class Imported:
    """A model file as the backend takes it: the integer Relax module, what the import did
    (per rewrite or converted operator), and the boundary the manifest records."""

    path: Path
    mod: tvm.IRModule
    log: FoldLog
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]


def _onnx(path: Path, input_shapes: dict) -> Imported:
    from compile.frontend.io_description import io_description

    model = load_onnx(path, input_shapes)
    mod, log = fold_qdq(to_relax(model))
    return Imported(path, mod, log, *io_description(model))


def _tflite(path: Path, input_shapes: dict) -> Imported:
    from compile.frontend.tflite import import_tflite

    return import_tflite(path, input_shapes)


FRONTENDS: dict[str, Callable[[Path, dict], Imported]] = {".onnx": _onnx, ".tflite": _tflite}
# formats whose integer kernels the OpenCL (dlight GPU) schedules do not take yet: TVM's GPU
# rules assert on the TFLite import's int64 requantize and per-channel table kernels
CPU_ONLY = {".tflite": "TFLite imports"}


def check_gpu_import(path: Path, target_name: str) -> None:
    """A one-line refusal of a model format an OpenCL build cannot take yet."""
    what = CPU_ONLY.get(path.suffix.lower())
    if what is not None:
        raise QatieError(f"{path}: {what} do not build for OpenCL targets ({target_name}) yet; build for a CPU target "
                         f"(`qatie-compile targets` lists them)")


def load_and_fold(path: Path, input_shapes: dict | None = None) -> Imported:
    """Validate and import a model file by its suffix, into integer arithmetic."""
    frontend = FRONTENDS.get(path.suffix.lower())
    if frontend is None:
        raise QatieError(f"{path}: unknown model format '{path.suffix}'; qatie-compile takes "
                         f"{' or '.join(sorted(FRONTENDS))} files")
    return frontend(path, input_shapes or {})


__all__ = ["CPU_ONLY", "FRONTENDS", "FoldLog", "Imported", "LoadedModel", "check_gpu_import", "fold_qdq",
           "load_and_fold", "load_onnx", "to_relax"]
