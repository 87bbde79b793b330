"""The artifact folder contract: what `build` writes and the deploy commands read.

An artifact is a folder holding `model.so` (the model, for the Relax VM), `kernels.so` (the same
kernels as top-level functions, for the profiler), optionally the generated kernel sources, and
`manifest.json`, which vouches for the rest: each library's sha256, the model's inputs and
outputs with their Q/DQ parameters, the target, what became integer, what was tuned, and the
kernel table. The manifest is typed (pydantic models) and validated when read, so a deploy
command never meets a missing field halfway through a device session.

A `.so` whose sha256 differs from its manifest is not what was built (edited, half-copied,
swapped); running it would report numbers for something else, so it is refused.

This module imports no compiler: deploying an artifact must not need TVM's compiler stack.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import AfterValidator, Field

from compile.records import Record, read_record
from qatie.atomic import check_writable_folder
from qatie.errors import QatieError
from qatie.references import Agreement, agreement

LIBRARY, KERNELS, MANIFEST = "model.so", "kernels.so", "manifest.json"
# Kernel sources written by `--emit-source`: the disassembled CPU kernels, the OpenCL C.
ASSEMBLY, OPENCL_SOURCE = "kernels.s", "kernels.cl"
# ELF e_machine values of the architectures our targets produce.
ELF_MACHINES = {3: "x86", 40: "arm", 62: "x86_64", 183: "aarch64"}
# TVM target attributes (resolved from mcpu + mattr) -> the LLVM feature a device must have.
ARM_FEATURE_FLAGS = {"feature.has_dotprod": "+dotprod", "feature.has_matmul_i8": "+i8mm",
                     "feature.has_fp16_simd": "+fullfp16", "feature.has_sve": "+sve"}
TRIPLE_ARCHES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}
AT_FDCWD, RENAME_EXCHANGE = -100, 2  # <fcntl.h>, <linux/fs.h>


def _plain_file_name(name: str) -> str:
    """A file directly inside the artifact folder: a manifest must not point anywhere else."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise ValueError(f"'{name}' is not a plain file name inside the artifact folder")
    return name


FileName = Annotated[str, AfterValidator(_plain_file_name)]
Sha256 = Annotated[str, Field(pattern="^[0-9a-f]{64}$")]


class QuantParams(Record):
    """The Q/DQ node on a graph input or output."""

    op: str
    scale: float | list[float]
    zero_point: int | list[int] | None
    dtype: str | None


class TensorInfo(Record):
    name: str
    shape: list[int]
    dtype: str
    quant: QuantParams | None
    layout: Literal["NCHW", "NHWC"] = "NCHW"  # of an image input: ONNX models take NCHW, TFLite NHWC

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) of an image input."""
        return (self.shape[1], self.shape[2]) if self.layout == "NHWC" else (self.shape[-2], self.shape[-1])

    @property
    def step(self) -> float:
        """One quantization step of this tensor (its Q/DQ scale); 1/255 for a float image."""
        if self.quant is None:
            return 1 / 255
        scale = self.quant.scale
        return float(max(scale)) if isinstance(scale, list) else float(scale)

    @property
    def codes(self) -> bool:
        """Whether the model takes or gives 8-bit codes here (a TFLite model with no QUANTIZE
        or DEQUANTIZE at its boundary), which `to_real` and `from_real` convert."""
        return self.dtype in ("int8", "uint8") and self.quant is not None and not isinstance(self.quant.scale, list)

    def to_real(self, value: np.ndarray) -> np.ndarray:
        """Real values of this tensor: codes dequantized, anything else as it is."""
        if not self.codes:
            return value
        return ((value.astype(np.float64) - self.quant.zero_point) * self.quant.scale).astype(np.float32)

    def from_real(self, value: np.ndarray) -> np.ndarray:
        """A real-valued tensor as this tensor takes it: codes quantized (round half away from
        zero, as TFLite's QUANTIZE), anything else cast."""
        if not self.codes:
            return value.astype(self.dtype)
        info = np.iinfo(self.dtype)
        scaled = value.astype(np.float32) / np.float32(self.quant.scale)  # the kernel's float32 division
        rounded = np.sign(scaled) * np.floor(np.abs(scaled).astype(np.float64) + 0.5)  # + 0.5 exact in float64
        return np.clip(rounded + self.quant.zero_point, info.min, info.max).astype(self.dtype)

    def agreement(self, got: np.ndarray, want: np.ndarray) -> Agreement:
        """Two values of this tensor compared in its steps, codes as the real values they stand for."""
        return agreement(self.to_real(got), self.to_real(want), self.step)


class ModelInfo(Record):
    """The model file (QDQ ONNX or int8 TFLite) the artifact was built from, and its boundary."""

    path: str
    sha256: str
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]

    @property
    def output_step(self) -> float:
        return self.outputs[0].step


class TargetInfo(Record):
    name: str
    kind: Literal["cpu", "opencl"]
    tvm: dict
    rpc_key: str | None
    threads: int
    compiler: str

    @property
    def cpu_features(self) -> set[str]:
        """The ARM extensions the compiler was allowed to use (implied by mcpu too, not only mattr)."""
        return {feature for flag, feature in ARM_FEATURE_FLAGS.items() if self.tvm.get(flag)}


class LibraryFile(Record):
    file: FileName
    sha256: Sha256


class IntegerInfo(Record):
    """What the QDQ folding made integer (`compile.frontend.inspect.IntegerOps`, `FoldLog`)."""

    integer_convs: int
    float_convs: int
    integer_macs: int
    float_macs: int
    integer_mac_fraction: float
    integer_ops: dict[str, int]
    rewrites: dict[str, int]
    not_rewritten_because: dict[str, dict[str, int]]


class TuningInfo(Record):
    kernels_tuned: int
    kernels: int
    database: str | None
    repaired: list[str]
    notes: list[str] = []  # records tuned for another CPU, and the like


class KernelArg(Record):
    shape: list[int]
    dtype: str


class KernelInfo(Record):
    name: str
    calls: int
    args: list[KernelArg]
    macs: int
    bytes: int
    tuned: bool
    dot_product: str | None = None  # the int8 dot-product instruction its conv is tensorized with


class KernelTable(Record):
    call_order: list[str]
    kernels: list[KernelInfo]


class Manifest(Record):
    model: ModelInfo
    target: TargetInfo
    library: LibraryFile
    kernel_library: LibraryFile
    integer: IntegerInfo
    tuning: TuningInfo
    kernels: KernelTable
    sources: list[FileName]
    tvm_version: str
    build_seconds: float
    built_at: str

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def elf_architecture(path: Path) -> str:
    """The CPU architecture an ELF shared library was built for, from its header."""
    with open(path, "rb") as f:
        header = f.read(20)
    if header[:4] != b"\x7fELF" or len(header) < 20:
        raise QatieError(f"{path}: not an ELF shared library")
    machine = int.from_bytes(header[18:20], "little" if header[5] == 1 else "big")
    return ELF_MACHINES.get(machine, f"ELF machine {machine}")


def triple_architecture(triple: str) -> str:
    arch = triple.split("-", 1)[0]
    return TRIPLE_ARCHES.get(arch, arch)


@dataclass(frozen=True)
class Artifact:
    """An artifact folder whose libraries were checked against its manifest."""

    folder: Path
    manifest: Manifest

    @property
    def library(self) -> Path:
        return self.folder / self.manifest.library.file

    @property
    def kernel_library(self) -> Path:
        return self.folder / self.manifest.kernel_library.file

    @property
    def target_name(self) -> str:
        return self.manifest.target.name

    @property
    def on_gpu(self) -> bool:
        return self.manifest.target.kind == "opencl"

    @property
    def architecture(self) -> str:
        return elf_architecture(self.library)

    def source_model(self, path: Path | None) -> Path:
        """The model file the artifact was built from: `path` (a user's copy) or the one the
        manifest names, checked by its sha256."""
        path = path or Path(self.manifest.model.path)
        if not path.is_file():
            raise QatieError(f"{path}: the artifact's model file is not there; pass it with --model")
        if sha256(path) != self.manifest.model.sha256:
            raise QatieError(f"{path}: not the model file this artifact was built from (sha256 differs); pass it with --model")
        return path


def read_manifest(path: Path) -> Manifest:
    return read_record(path, Manifest, "a manifest this version writes", "rebuild the artifact")


def load_artifact(folder: Path) -> Artifact:
    """Read `folder/manifest.json` and check every library against its sha256."""
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise QatieError(f"{folder}: no {MANIFEST}; build one with `qatie-compile --target NAME model.onnx -o {folder}`")
    manifest = read_manifest(manifest_path)
    for entry in (manifest.library, manifest.kernel_library):
        path = folder / entry.file
        if path.is_symlink():
            raise QatieError(f"{path}: a symbolic link; an artifact's libraries must be files inside {folder}")
        if not path.is_file():
            raise QatieError(f"{path}: missing; the artifact folder is incomplete, rebuild it")
        actual = sha256(path)
        if actual != entry.sha256:
            raise QatieError(f"{path}: sha256 {actual[:16]}… does not match the manifest's {entry.sha256[:16]}…; "
                             f"refusing to run a library that is not the one built — rebuild the artifact")
    return Artifact(folder, manifest)


def _exchange(a: Path, b: Path) -> None:
    """Swap two paths in one atomic step (Linux renameat2 with RENAME_EXCHANGE)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(b))


def staging_folder(out: Path) -> Path:
    """A fresh folder beside `out` to build into; staging folders that builds killed before they
    finished (their process is gone) are removed first."""
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in out.parent.glob(f".{out.name}.staging-*"):
        pid = stale.name.rsplit("-", 2)[-2]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-{os.getpid()}-", dir=out.parent))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, and another user's
        pass
    return True


def check_replaceable(out: Path) -> None:
    """`out` may become an artifact: absent, empty, or an artifact (it is then replaced whole)."""
    if out.exists() and not out.is_dir():
        raise QatieError(f"-o {out}: exists and is not a folder; choose another -o")
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise QatieError(f"-o {out}: a folder that is not an artifact (no {MANIFEST}); a build replaces its "
                         f"-o folder whole, so choose an empty or new folder")


def check_output(out: Path) -> None:
    """Before any work: `out` can become an artifact, and files can be created beside it."""
    check_replaceable(out)
    check_writable_folder(out.parent)


def publish(staging: Path, out: Path, manifest: Manifest) -> None:
    """Make the complete build in `staging` the artifact at `out`, in one atomic step.

    The folder at `out` is swapped with `staging` (or `staging` renamed when there is none): at
    every moment `out` is the previous artifact or the new one, whole, never a mix; files of the
    previous build that this one does not write (sources, reports) go with it. The caller removes
    `staging`, which then holds the previous artifact."""
    (staging / MANIFEST).write_text(manifest.to_json())
    check_replaceable(out)
    if out.exists():
        _exchange(staging, out)
    else:
        staging.rename(out)
