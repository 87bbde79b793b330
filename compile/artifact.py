"""An artifact folder as the deploy commands see it: the manifest, checked against the files.

A `.so` whose sha256 differs from its manifest is not what was built (edited, half-copied,
swapped); running it would report numbers for something else, so it is refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from compile.build import KERNELS, LIBRARY, MANIFEST, sha256
from qatie.errors import QatieError

# ELF e_machine values of the architectures our targets produce.
ELF_MACHINES = {3: "x86", 40: "arm", 62: "x86_64", 183: "aarch64"}
# TVM target attributes (resolved from mcpu + mattr) -> the LLVM feature a device must have.
ARM_FEATURE_FLAGS = {"feature.has_dotprod": "+dotprod", "feature.has_matmul_i8": "+i8mm",
                     "feature.has_fp16_simd": "+fullfp16", "feature.has_sve": "+sve"}
TRIPLE_ARCHES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}


@dataclass(frozen=True)
class Artifact:
    folder: Path
    manifest: dict

    @property
    def library(self) -> Path:
        return self.folder / self.manifest["library"]["file"]

    @property
    def kernel_library(self) -> Path:
        return self.folder / self.manifest["kernel_library"]["file"]

    @property
    def target_name(self) -> str:
        return self.manifest["target"]["name"]

    @property
    def on_gpu(self) -> bool:
        return self.manifest["target"]["tvm"].get("kind") == "opencl"

    @property
    def architecture(self) -> str:
        return elf_architecture(self.library)

    @property
    def cpu_features(self) -> set[str]:
        """The ARM extensions the compiler was allowed to use (implied by mcpu too, not only mattr)."""
        tvm_target = self.manifest["target"]["tvm"]
        return {feature for flag, feature in ARM_FEATURE_FLAGS.items() if tvm_target.get(flag)}


def elf_architecture(path: Path) -> str:
    """The CPU architecture an ELF shared library was built for, from its header."""
    header = path.read_bytes()[:20]
    if header[:4] != b"\x7fELF":
        raise QatieError(f"{path}: not an ELF shared library")
    machine = int.from_bytes(header[18:20], "little" if header[5] == 1 else "big")
    return ELF_MACHINES.get(machine, f"ELF machine {machine}")


def triple_architecture(triple: str) -> str:
    arch = triple.split("-", 1)[0]
    return TRIPLE_ARCHES.get(arch, arch)


def load_artifact(folder: Path) -> Artifact:
    """Read `folder/manifest.json` and check every library against its sha256."""
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise QatieError(f"{folder}: no {MANIFEST}; build one with `qatie-compile --target NAME model.onnx -o {folder}`")
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as exc:
        raise QatieError(f"{manifest_path}: not valid JSON ({exc}); rebuild the artifact") from None
    if "kernels" not in manifest or "kernel_library" not in manifest:
        raise QatieError(f"{manifest_path}: built before kernel tables were recorded; rebuild the artifact")
    for entry, default in ((manifest["library"], LIBRARY), (manifest["kernel_library"], KERNELS)):
        path = folder / entry.get("file", default)
        if not path.is_file():
            raise QatieError(f"{path}: missing; the artifact folder is incomplete, rebuild it")
        actual = sha256(path)
        if actual != entry["sha256"]:
            raise QatieError(f"{path}: sha256 {actual[:16]}… does not match the manifest's {entry['sha256'][:16]}…; "
                             f"refusing to run a library that is not the one built — rebuild the artifact")
    return Artifact(folder, manifest)
