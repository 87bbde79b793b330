"""Deployment targets, one JSON file each in `targets/` (or a folder the user names).

A target file holds the TVM target (and host) as TVM's own JSON dicts, the cross compiler,
the RPC key devices register under, the thread count the library runs with, and the CPU model
qemu should emulate. Adding a file adds a target: nothing here lists target names.

What a target can do is derived here, once, from those fields — CPU or OpenCL, runs on this
host, tunable, needs the Android NDK — so no other module inspects a target's strings.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field

from compile.records import Record, read_record
from qatie.errors import QatieError

DEFAULT_TARGETS_DIR = Path(__file__).resolve().parents[2] / "targets"
TARGETS_DIR_ENV = "QATIE_TARGETS_DIR"
NATIVE_CPU = "native"
NDK_API_LEVEL_ENV = "TVM_NDK_API_LEVEL"


class CrossCompiler(Record):
    """`system`: this machine's compiler (the library runs here); `gnu`: a cross compiler on the
    PATH (`package` says what to install); `ndk`: the Android NDK's clang++."""

    kind: Literal["system", "gnu", "ndk"]
    cc: str | None = None
    package: str | None = None


class TargetFile(Record):
    """The schema of a target file."""

    description: str
    target: dict
    host: dict | None = None
    cross_compiler: CrossCompiler
    rpc_key: str | None = None
    threads: int = Field(default=0, ge=0, description="threads the library runs with; 0: all cores")
    qemu_cpu: str | None = None
    refuse: str | None = None


def target_kind(target) -> Literal["cpu", "opencl"]:
    """What runs a target's kernels, from a target file's TVM dict or a `tvm.target.Target`:
    the one place that reads TVM's kind string."""
    name = target.get("kind") if isinstance(target, dict) else target.kind.name
    return "opencl" if name == "opencl" else "cpu"


def cpu_has(target, features) -> bool:
    """Whether `target` (a `tvm.target.Target`) is an LLVM target whose CPU has all of
    `features` (LLVM's names): the one check behind every instruction registry (dot products,
    table lookups, high multiplies)."""
    from tvm.target import codegen

    return str(target.kind) == "llvm" and bool(codegen.target_has_features(list(features), target))


@dataclass(frozen=True)
class TargetSpec:
    name: str
    path: Path
    file: TargetFile

    @property
    def description(self) -> str:
        return self.file.description

    @property
    def rpc_key(self) -> str | None:
        return self.file.rpc_key

    @property
    def threads(self) -> int:
        return self.file.threads

    @property
    def qemu_cpu(self) -> str | None:
        return self.file.qemu_cpu

    @property
    def refuse(self) -> str | None:
        return self.file.refuse

    # Capabilities: every decision about what kind of target this is, made here.
    @property
    def kind(self) -> Literal["cpu", "opencl"]:
        return target_kind(self.file.target)

    @property
    def is_gpu(self) -> bool:
        return self.kind == "opencl"

    @property
    def runs_on_host(self) -> bool:
        """The library runs on the machine that builds it (no device, no RPC needed)."""
        return self.file.cross_compiler.kind == "system"

    @property
    def tunable(self) -> bool:
        """MetaSchedule tuning is supported (CPU targets; OpenCL keeps TVM's GPU schedules)."""
        return self.kind == "cpu"

    @property
    def needs_ndk(self) -> bool:
        return self.file.cross_compiler.kind == "ndk"

    def check_buildable(self) -> None:
        """A target file may say why it must not be built (known-wrong code generation)."""
        if self.refuse:
            raise QatieError(f"target {self.name} refuses to build: {self.refuse}")

    def tvm_target(self):
        """The tvm.target.Target; mcpu 'native' resolves to the CPU this process runs on."""
        import tvm
        from tvm.target import codegen

        def resolve(d: dict) -> dict:
            if d.get("mcpu") == NATIVE_CPU:
                return {**d, "mcpu": codegen.llvm_get_system_cpu()}
            return d

        try:
            host = resolve(self.file.host) if self.file.host else None
            return tvm.target.Target(resolve(self.file.target), host=host)
        except Exception as exc:
            raise QatieError(f"{self.path}: TVM rejects the target ({str(exc).splitlines()[0]})") from None

    def compiler(self) -> str:
        """Path of the C++ compiler that links this target's .so; a QatieError says what to install."""
        if self.needs_ndk:
            return _ndk_compiler(self)
        cc = self.file.cross_compiler.cc or ""
        found = shutil.which(cc)
        if not found:
            package = self.file.cross_compiler.package or cc
            raise QatieError(f"target {self.name}: cross compiler '{cc}' not found; install it (apt-get install {package})")
        return found

    def disassembler(self) -> str:
        """The objdump that reads this target's libraries: the NDK's llvm-objdump beside its
        clang++, else the binutils of the compiler's prefix (`aarch64-linux-gnu-g++` ->
        `aarch64-linux-gnu-objdump`, `g++` -> `objdump`)."""
        compiler = Path(self.compiler())
        if self.needs_ndk:
            tool = str(compiler.with_name("llvm-objdump"))
        else:
            prefix, dash, _ = compiler.name.rpartition("-")
            tool = f"{prefix}{dash}objdump"
        found = shutil.which(tool)
        if not found:
            raise QatieError(f"target {self.name}: '{tool}' not found (--emit-source disassembles the kernels with it); "
                             f"install the binutils of {compiler.name}")
        return found


def _ndk_compiler(spec: TargetSpec) -> str:
    """TVM_NDK_CC if set, else the NDK's aarch64 Android clang++ under ANDROID_NDK_HOME."""
    explicit = os.environ.get("TVM_NDK_CC")
    if explicit:
        if not shutil.which(explicit):
            raise QatieError(f"target {spec.name}: TVM_NDK_CC={explicit} is not an executable compiler")
        return shutil.which(explicit)
    ndk = os.environ.get("ANDROID_NDK_HOME")
    if ndk:
        api = os.environ.get(NDK_API_LEVEL_ENV, "28")
        clang = Path(ndk) / "toolchains/llvm/prebuilt/linux-x86_64/bin" / f"aarch64-linux-android{api}-clang++"
        if clang.is_file():
            return str(clang)
        raise QatieError(f"target {spec.name}: {clang} not found; check ANDROID_NDK_HOME and {NDK_API_LEVEL_ENV}")
    raise QatieError(
        f"target {spec.name}: the Android NDK is missing; set TVM_NDK_CC to its "
        f"aarch64-linux-android<API>-clang++ or ANDROID_NDK_HOME to the NDK folder"
    )


def targets_dir() -> Path:
    return Path(os.environ.get(TARGETS_DIR_ENV, DEFAULT_TARGETS_DIR))


def load_target(path: Path) -> TargetSpec:
    file = read_record(path, TargetFile, "a target file", "see targets/x86-host.json for a valid one")
    return TargetSpec(name=path.stem, path=path, file=file)


@dataclass(frozen=True)
class TargetFolder:
    """Every target file of a folder: the valid ones, and why each broken one is not."""

    specs: list[TargetSpec]
    broken: dict[Path, str]


def scan_targets(folder: Path | None = None) -> TargetFolder:
    """One bad file must not take the other targets down with it: it is set aside, named."""
    specs, broken = [], {}
    for path in sorted((folder or targets_dir()).glob("*.json")):
        try:
            specs.append(load_target(path))
        except QatieError as exc:
            broken[path] = str(exc)
    return TargetFolder(specs, broken)


def all_targets(folder: Path | None = None) -> list[TargetSpec]:
    """The valid targets of the folder (`scan_targets` also says which files are broken)."""
    return scan_targets(folder).specs


def get_target(name: str, folder: Path | None = None) -> TargetSpec:
    folder = folder or targets_dir()
    path = folder / f"{name}.json"
    if not path.is_file():
        known = ", ".join(t.name for t in all_targets(folder)) or "none"
        raise QatieError(f"unknown target '{name}' (no {path}); known: {known}")
    return load_target(path)
