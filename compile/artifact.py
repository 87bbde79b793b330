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

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from qatie.errors import QatieError, validation_summary

LIBRARY, KERNELS, MANIFEST = "model.so", "kernels.so", "manifest.json"
# Generated kernel sources written by `--emit-source`, per TVM module kind: (inspect format, file).
SOURCE_FILES = {"llvm": ("asm", "kernels.s"), "opencl": ("cl", "kernels.cl")}
# ELF e_machine values of the architectures our targets produce.
ELF_MACHINES = {3: "x86", 40: "arm", 62: "x86_64", 183: "aarch64"}
# TVM target attributes (resolved from mcpu + mattr) -> the LLVM feature a device must have.
ARM_FEATURE_FLAGS = {"feature.has_dotprod": "+dotprod", "feature.has_matmul_i8": "+i8mm",
                     "feature.has_fp16_simd": "+fullfp16", "feature.has_sve": "+sve"}
TRIPLE_ARCHES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class QuantParams(_Record):
    """The Q/DQ node on a graph input or output."""

    op: str
    scale: float | list[float]
    zero_point: int | list[int] | None
    dtype: str | None


class TensorInfo(_Record):
    name: str
    shape: list[int]
    dtype: str
    quant: QuantParams | None

    @property
    def step(self) -> float:
        """One quantization step of this tensor (its Q/DQ scale); 1/255 for a float image."""
        if self.quant is None:
            return 1 / 255
        scale = self.quant.scale
        return float(max(scale)) if isinstance(scale, list) else float(scale)


class ModelInfo(_Record):
    """The ONNX file the artifact was built from, and its boundary."""

    path: str
    sha256: str
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]

    @property
    def output_step(self) -> float:
        return self.outputs[0].step


class TargetInfo(_Record):
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


class LibraryFile(_Record):
    file: str
    sha256: str


class IntegerInfo(_Record):
    """What the QDQ folding made integer (`compile.frontend.inspect.IntegerOps`, `FoldLog`)."""

    integer_convs: int
    float_convs: int
    integer_macs: int
    float_macs: int
    integer_mac_fraction: float
    integer_ops: dict[str, int]
    rewrites: dict[str, int]
    not_rewritten_because: dict[str, dict[str, int]]


class TuningInfo(_Record):
    kernels_tuned: int
    kernels: int
    database: str | None
    repaired: list[str]


class KernelArg(_Record):
    shape: list[int]
    dtype: str


class KernelInfo(_Record):
    name: str
    calls: int
    args: list[KernelArg]
    macs: int
    bytes: int
    tuned: bool


class KernelTable(_Record):
    call_order: list[str]
    kernels: list[KernelInfo]


class Manifest(_Record):
    model: ModelInfo
    target: TargetInfo
    library: LibraryFile
    kernel_library: LibraryFile
    integer: IntegerInfo
    tuning: TuningInfo
    kernels: KernelTable
    sources: list[str]
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


def read_manifest(path: Path) -> Manifest:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise QatieError(f"{path}: not valid JSON ({exc}); rebuild the artifact") from None
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        raise QatieError(f"{path}: not a manifest this version writes ({validation_summary(exc)}); "
                         f"rebuild the artifact") from None


def load_artifact(folder: Path) -> Artifact:
    """Read `folder/manifest.json` and check every library against its sha256."""
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise QatieError(f"{folder}: no {MANIFEST}; build one with `qatie-compile --target NAME model.onnx -o {folder}`")
    manifest = read_manifest(manifest_path)
    for entry in (manifest.library, manifest.kernel_library):
        path = folder / entry.file
        if not path.is_file():
            raise QatieError(f"{path}: missing; the artifact folder is incomplete, rebuild it")
        actual = sha256(path)
        if actual != entry.sha256:
            raise QatieError(f"{path}: sha256 {actual[:16]}… does not match the manifest's {entry.sha256[:16]}…; "
                             f"refusing to run a library that is not the one built — rebuild the artifact")
    return Artifact(folder, manifest)


def publish(staging: Path, out: Path, manifest: Manifest) -> None:
    """Move a complete build from `staging` into `out`, the manifest last: it vouches for the rest."""
    (staging / MANIFEST).write_text(manifest.to_json())
    out.mkdir(parents=True, exist_ok=True)
    for name in [manifest.library.file, manifest.kernel_library.file, *manifest.sources, MANIFEST]:
        (staging / name).replace(out / name)
