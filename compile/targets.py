"""Deployment targets, one JSON file each in `targets/` (or a folder the user names).

A target file holds the TVM target (and host) as TVM's own JSON dicts, the cross compiler,
the RPC key devices register under, the default thread count, and the CPU model qemu should
emulate. Adding a file adds a target: nothing here lists target names.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from qatie.errors import QatieError

DEFAULT_TARGETS_DIR = Path(__file__).resolve().parents[1] / "targets"
TARGETS_DIR_ENV = "QATIE_TARGETS_DIR"
NATIVE_CPU = "native"
NDK_API_LEVEL_ENV = "TVM_NDK_API_LEVEL"
_REQUIRED = ("description", "target", "cross_compiler")


@dataclass(frozen=True)
class TargetSpec:
    name: str
    path: Path
    description: str
    target: dict
    host: dict | None
    cross_compiler: dict
    rpc_key: str | None
    threads: int
    qemu_cpu: str | None
    refuse: str | None = None

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
            return tvm.target.Target(resolve(self.target), host=resolve(self.host) if self.host else None)
        except Exception as exc:
            raise QatieError(f"{self.path}: TVM rejects the target ({str(exc).splitlines()[0]})") from None

    def compiler(self) -> str:
        """Path of the C++ compiler that links this target's .so; a QatieError says what to install."""
        kind = self.cross_compiler.get("kind")
        if kind == "ndk":
            return _ndk_compiler(self)
        cc = self.cross_compiler.get("cc", "")
        found = shutil.which(cc)
        if not found:
            package = self.cross_compiler.get("package", cc)
            raise QatieError(f"target {self.name}: cross compiler '{cc}' not found; install it (apt-get install {package})")
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
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise QatieError(f"{path}: not a readable target file ({exc})") from None
    missing = [key for key in _REQUIRED if key not in data]
    if missing:
        raise QatieError(f"{path}: missing {', '.join(missing)}")
    return TargetSpec(
        name=path.stem, path=path, description=data["description"], target=data["target"],
        host=data.get("host"), cross_compiler=data["cross_compiler"], rpc_key=data.get("rpc_key"),
        threads=int(data.get("threads", 0)), qemu_cpu=data.get("qemu_cpu"), refuse=data.get("refuse"),
    )


def all_targets(folder: Path | None = None) -> list[TargetSpec]:
    return [load_target(p) for p in sorted((folder or targets_dir()).glob("*.json"))]


def get_target(name: str, folder: Path | None = None) -> TargetSpec:
    folder = folder or targets_dir()
    path = folder / f"{name}.json"
    if not path.is_file():
        known = ", ".join(t.name for t in all_targets(folder)) or "none"
        raise QatieError(f"unknown target '{name}' (no {path}); known: {known}")
    return load_target(path)
