"""`qatie-compile --target NAME model.onnx -o OUT`: one artifact folder per build.

OUT receives `model.so` (linked by the target's compiler), `manifest.json` and, on request, the
generated kernel sources. Everything is produced in a staging folder beside OUT and moved in
only when the whole build succeeded, so a failed build leaves OUT as it was.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import onnx
import tvm
from onnx import numpy_helper

from compile.cpu_schedule import TunedKernels, build_with_default_schedules
from compile.importer import LoadedModel, load_onnx, to_relax
from compile.inspect_macs import count_conv_macs
from compile.kernel_table import CaptureKernels
from compile.pass_config import pass_config
from compile.qdq_fold import FoldLog, fold_qdq_convs
from compile.targets import TargetSpec

LIBRARY, KERNELS, MANIFEST = "model.so", "kernels.so", "manifest.json"
SOURCE_FORMATS = {"llvm": ("asm", "kernels.s"), "opencl": ("cl", "kernels.cl")}


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def io_description(model: LoadedModel) -> dict:
    """Names, shapes, dtypes of inputs/outputs, and the Q/DQ parameters at the graph boundary."""
    inits = {i.name: numpy_helper.to_array(i) for i in model.proto.graph.initializer}
    graph = model.proto.graph
    made_by = {o: n for n in graph.node for o in n.output}
    read_by = {}
    for node in graph.node:
        for name in node.input:
            read_by.setdefault(name, node)

    def qparams(node: onnx.NodeProto | None) -> dict | None:
        if node is None or node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            return None
        zp = inits.get(node.input[2]) if len(node.input) > 2 else None
        return {
            "op": node.op_type,
            "scale": np.asarray(inits[node.input[1]]).tolist(),
            "zero_point": None if zp is None else np.asarray(zp).tolist(),
            "dtype": None if zp is None else str(zp.dtype),
        }

    def describe(value: onnx.ValueInfoProto, node: onnx.NodeProto | None) -> dict:
        tensor = value.type.tensor_type
        shape = model.input_shapes.get(value.name) or [d.dim_value for d in tensor.shape.dim]
        return {"name": value.name, "shape": list(shape),
                "dtype": onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name, "quant": qparams(node)}

    inputs = [describe(v, read_by.get(v.name)) for v in graph.input if v.name not in inits]
    outputs = [describe(v, made_by.get(v.name)) for v in graph.output]
    return {"inputs": inputs, "outputs": outputs}


def _emit_sources(executable, folder: Path) -> list[str]:
    """Write the generated kernels (LLVM assembly, OpenCL C) of every imported module."""
    written = []
    pending = list(executable.mod.imports)
    while pending:
        module = pending.pop()
        pending.extend(module.imports)
        fmt = SOURCE_FORMATS.get(module.kind)
        if fmt is None:
            continue
        source = module.inspect_source(fmt[0])
        if source:
            (folder / fmt[1]).write_text(source)
            written.append(fmt[1])
    return written


def load_and_fold(onnx_path: Path, input_shapes: dict | None = None) -> tuple[LoadedModel, tvm.IRModule, FoldLog]:
    """Validate and import the ONNX file, then fold its QDQ ops into integer arithmetic."""
    model = load_onnx(onnx_path, input_shapes)
    mod, log = fold_qdq_convs(to_relax(model))
    return model, mod, log


def _tuning_database(spec: TargetSpec, tuning_log: Path | None, use_tuning: bool):
    """The target's tuning database: `tuning_log` if given (must exist), else the default folder
    if it holds a log, else none (every kernel keeps its default schedule); plus what the log
    check repaired (an interrupted append cut off), which the user must hear about."""
    from compile.cpu_intrinsics import register_cpu_intrinsics
    from compile.tune import default_log_dir
    from compile.tuning_log import WORKLOADS, open_database

    if not use_tuning or spec.target.get("kind") != "llvm":
        return None, None, []
    folder = tuning_log or default_log_dir(spec)
    if tuning_log is None and not (folder / WORKLOADS).is_file():
        return None, None, []
    register_cpu_intrinsics()  # tuned traces may tensorize with the CPU intrinsics
    database, check = open_database(folder, create=False)
    return database, folder, check.repaired


def build(onnx_path: Path, spec: TargetSpec, out: Path, input_shapes: dict | None = None,
          emit_source: bool = False, tuning_log: Path | None = None, use_tuning: bool = True) -> dict:
    """Compile `onnx_path` for `spec` into `out`; returns the manifest.

    Kernels take their schedules from the target's tuning log where it has a record for them
    (`tuning_logs/<target>/`, or `tuning_log`), and our default schedules otherwise.
    """
    from tvm.support import cc

    started = time.time()
    spec.check_buildable()
    model, mod, fold_log = load_and_fold(onnx_path, input_shapes)
    target = spec.tvm_target()
    compiler = spec.compiler()  # fail on a missing cross compiler before the long build
    database, database_dir, repaired = _tuning_database(spec, tuning_log, use_tuning)
    macs = count_conv_macs(mod)
    tuned = TunedKernels()
    capture = CaptureKernels()
    with tvm.transform.PassContext(instruments=[capture], config=pass_config(target)):
        executable = build_with_default_schedules(mod, target, database, tuned)

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        library = staging / LIBRARY
        executable.export_library(str(library), fcompile=cc.cross_compiler(compiler))
        # The same compiled kernels as top-level functions: the profiler times each one on the
        # device (TVM's RPC time evaluator does not look into the VM executable's imports).
        kernels = staging / KERNELS
        executable.mod.imports[0].export_library(str(kernels), fcompile=cc.cross_compiler(compiler))
        sources = _emit_sources(executable, staging) if emit_source else []
        manifest = {
            "model": {"path": str(onnx_path), "sha256": sha256(onnx_path), **io_description(model)},
            "target": {"name": spec.name, "tvm": json.loads(str(target)),
                       "rpc_key": spec.rpc_key, "threads": spec.threads, "compiler": compiler},
            "library": {"file": LIBRARY, "sha256": sha256(library)},
            "kernel_library": {"file": KERNELS, "sha256": sha256(kernels)},
            "integer": {"convs_folded": fold_log.folded, "convs_left_float": macs.float_convs,
                        "not_folded_because": fold_log.skipped, **asdict(macs),
                        "integer_mac_fraction": macs.integer_fraction},
            "tuning": {"kernels_tuned": tuned.applied, "kernels": tuned.total,
                       "database": None if database_dir is None else str(database_dir), "repaired": repaired},
            "kernels": capture.table(tuned.names),
            "sources": sources,
            "tvm_version": tvm.__version__,
            "build_seconds": round(time.time() - started, 1),
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2))
        out.mkdir(parents=True, exist_ok=True)
        for name in [LIBRARY, KERNELS, *sources, MANIFEST]:  # the manifest last: it vouches for the rest
            (staging / name).replace(out / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest
