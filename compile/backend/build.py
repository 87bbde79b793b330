"""`qatie-compile --target NAME model.onnx -o OUT`: one artifact folder per build.

OUT receives `model.so` (linked by the target's compiler), `kernels.so`, `manifest.json` and, on
request, the generated kernel sources (the folder contract is `compile.artifact`). Everything
is produced in a staging folder beside OUT and moved in only when the whole build succeeded,
so a failed build leaves OUT as it was.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import tvm

from compile.artifact import (
    ASSEMBLY,
    KERNELS,
    LIBRARY,
    OPENCL_SOURCE,
    IntegerInfo,
    LibraryFile,
    Manifest,
    ModelInfo,
    TargetInfo,
    TuningInfo,
    check_output,
    publish,
    sha256,
    staging_folder,
)
from compile.backend.kernel_table import CaptureKernels
from compile.backend.pass_config import pass_config
from compile.backend.schedules import TunedKernels, build_with_default_schedules
from compile.backend.targets import TargetSpec
from compile.backend.tuning_db import (
    WORKLOADS,
    LogCheck,
    check_existing_log,
    check_targets,
    default_log_dir,
    foreign_dot_products,
    open_database,
)
from compile.frontend import check_gpu_import, load_and_fold
from compile.frontend.inspect import integer_ops
from qatie.errors import QatieError, last_line

PACKED_IMPORTS = "devc"  # the object TVM's export writes the packed imports (the VM executable) into


@dataclass(frozen=True)
class BuildOptions:
    input_shapes: dict[str, list[int]] = field(default_factory=dict)
    emit_source: bool = False  # also write the kernels' assembly (and OpenCL C)
    tuning_log: Path | None = None  # a tuning log folder to apply (must exist)
    use_tuning: bool = True  # False: every kernel gets the default schedule
    require_int8: bool = False  # a model with no integer conv is an error, not a warning


def imported_modules(module) -> list:
    """Every module imported by a runtime module, transitively (an executable's `.mod`)."""
    found, pending = [], list(module.imports)
    while pending:
        module = pending.pop()
        pending.extend(module.imports)
        found.append(module)
    return found


def _emit_sources(executable, folder: Path, disassembler: str) -> list[str]:
    """Write the kernels as compiled: `kernels.so` disassembled with the target's objdump (the
    machine code that ships; LLVM's own assembly output would generate every kernel's code a
    second time, 7.3 of the tiny test model's 24 s build), and the OpenCL C of OpenCL modules."""
    disassembly = subprocess.run([disassembler, "-d", "--no-show-raw-insn", KERNELS], cwd=folder,
                                 capture_output=True, text=True, check=True).stdout
    (folder / ASSEMBLY).write_text(disassembly)
    written = [ASSEMBLY]
    for module in imported_modules(executable.mod):
        if module.kind == "opencl":
            (folder / OPENCL_SOURCE).write_text(module.inspect_source("cl"))
            written.append(OPENCL_SOURCE)
    return written


def _link_with_kernels(compiler: str, kernels: Path):
    """TVM's export hook, linking two libraries from one export: `model.so` from every object
    (the kernels and the packed VM executable) and `kernels.so` from the kernels' own objects.

    `kernels.so` holds the same compiled kernels as top-level functions: the profiler times each
    one on the device (TVM's RPC time evaluator does not look into the VM executable's imports).
    Linking it from the objects `model.so` is linked from makes it the very same machine code,
    and saves a second LLVM code generation of every kernel (about 5 s for the tiny test model).
    """
    from tvm.support import cc

    link = cc.cross_compiler(compiler)

    def fcompile(output: str, objects: list[str], options=None, **kwargs) -> None:
        link(output, objects, options, **kwargs)
        link(str(kernels), [o for o in objects if not Path(o).name.startswith(PACKED_IMPORTS)], options, **kwargs)

    fcompile.output_format = link.output_format
    return fcompile


@dataclass
class _TuningLog:
    """The target's tuning log as checked before the import (`folder` None: no log applies)
    and what the check found: lines it repaired (an interrupted append cut off) and notes, both
    for the user."""

    folder: Path | None = None
    check: LogCheck | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def repaired(self) -> list[str]:
        return self.check.repaired if self.check else []

    def open(self):
        """TVM's database (None without a log): opened after the import, which a bad model should
        not wait for (loading the shipped log takes seconds)."""
        return None if self.folder is None else open_database(self.folder, create=False, check=self.check)[0]


def _tuning_log(spec: TargetSpec, target, options: BuildOptions) -> _TuningLog:
    """`options.tuning_log` if given (must exist), else the target's default folder if it holds a
    log, else none (every kernel keeps its default schedule); checked line by line and against
    the target (cheap), before the model is imported."""
    if not options.use_tuning or not spec.tunable:
        return _TuningLog()
    folder = options.tuning_log or default_log_dir(spec.name)
    if options.tuning_log is None and not (folder / WORKLOADS).is_file():
        return _TuningLog()
    check = check_existing_log(folder)
    return _TuningLog(folder, check, check_targets(folder, check, target))


def build(model_path: Path, spec: TargetSpec, out: Path, options: BuildOptions = BuildOptions()) -> Manifest:
    """Compile `model_path` (QDQ ONNX or int8 TFLite) for `spec` into `out`; returns the manifest.

    Kernels take their schedules from the target's tuning log where it has a record for them
    (`tuning_logs/<target>/`, or `options.tuning_log`), and our default schedules otherwise.
    """
    started = time.time()
    check_output(out)
    spec.check_buildable()
    if spec.is_gpu:
        check_gpu_import(model_path, spec.name)
    target = spec.tvm_target()
    target_json = json.loads(str(target))  # recorded in the manifest; tuning records are checked against it
    compiler = spec.compiler()  # a missing cross compiler: an error before the import
    disassembler = spec.disassembler() if options.emit_source else None  # likewise a missing objdump
    log = _tuning_log(spec, target, options)
    imported = load_and_fold(model_path, options.input_shapes)
    mod, fold_log, inputs, outputs = imported.mod, imported.log, imported.inputs, imported.outputs
    if len(inputs) != 1:
        raise QatieError(f"{model_path}: {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); qatie-compile "
                         f"builds single-input models (bench and profile feed one input)")
    ops = integer_ops(mod)
    if options.require_int8 and ops.float_convs and not ops.integer_convs:
        raise QatieError(f"{model_path}: --require-int8: none of its {ops.float_convs} convs is quantized (no "
                         f"QuantizeLinear/DequantizeLinear around them); export it with Q/DQ nodes")
    database, database_dir, notes = log.open(), log.folder, log.notes
    tuned = TunedKernels()
    capture = CaptureKernels()
    try:
        with tvm.transform.PassContext(instruments=[capture], config=pass_config(target)):
            executable = build_with_default_schedules(mod, target, database, tuned)
    except Exception as exc:
        if database is None or not tuned.applying:
            raise
        raise QatieError(f"{database_dir}: a tuning record could not be applied ({last_line(exc)}); "
                         f"remove its lines from the log or build with --no-tuning") from None

    if tuned.other_shapes:
        notes.append(f"{database_dir}: {tuned.other_shapes} of the {tuned.total - tuned.applied} untuned kernels have "
                     f"records there only for kernels like them at other shapes or with other constants (tuned at "
                     f"another input size, for another model, or by an earlier version of qatie-compile); "
                     f"tune this model at this size to give them records")
    elif tuned.records and not tuned.applied and not foreign_dot_products(log.check, target):
        notes.append(f"{database_dir}: none of its {tuned.records} records is for a kernel of this model, at any size "
                     f"(they are another model's, or for kernels an earlier version of qatie-compile generated); "
                     f"tune this model to give it records")
    staging = staging_folder(out)
    try:
        library, kernels = staging / LIBRARY, staging / KERNELS
        executable.export_library(str(library), fcompile=_link_with_kernels(compiler, kernels))
        sources = _emit_sources(executable, staging, disassembler) if options.emit_source else []
        manifest = Manifest(
            model=ModelInfo(path=str(model_path), sha256=sha256(model_path), inputs=inputs, outputs=outputs),
            target=TargetInfo(name=spec.name, kind=spec.kind, tvm=target_json, rpc_key=spec.rpc_key,
                              threads=spec.threads, compiler=compiler),
            library=LibraryFile(file=LIBRARY, sha256=sha256(library)),
            kernel_library=LibraryFile(file=KERNELS, sha256=sha256(kernels)),
            integer=IntegerInfo(
                integer_convs=ops.integer_convs, float_convs=ops.float_convs, integer_macs=ops.integer_macs,
                float_macs=ops.float_macs, integer_mac_fraction=ops.integer_fraction,
                integer_ops=dict(sorted(ops.ops.items())), rewrites=dict(sorted(fold_log.applied.items())),
                not_rewritten_because=fold_log.reasons()),
            tuning=TuningInfo(kernels_tuned=tuned.applied, kernels=tuned.total,
                              database=None if database_dir is None else str(database_dir), repaired=log.repaired,
                              notes=notes),
            kernels=capture.table(tuned.names),
            sources=sources,
            tvm_version=tvm.__version__,
            build_seconds=round(time.time() - started, 1),
            built_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        )
        publish(staging, out, manifest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest
