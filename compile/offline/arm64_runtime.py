"""The aarch64 side of an emulated ARM device: TVM's aarch64 runtime and our RPC session program.

The registry carries aarch64 wheels of the exact TVM and tvm-ffi versions installed here; their
`libtvm_runtime.so` / `libtvm_ffi.so` are the runtime a board would run. We unpack only those
libraries and the headers, and cross-compile `native/rpc_session.cc` against them with Debian's
aarch64 g++. The result lives in a cache folder keyed by the versions and the source hash, built
in a temporary folder and renamed into place so an interrupted download never leaves half a
runtime behind.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from compile.offline.host_tools import build_once, cache_dir, run_tool
from qatie.errors import QatieError

SESSION_SOURCE = Path(__file__).resolve().parent / "native" / "rpc_session.cc"
SESSION_PROGRAM = "qatie_rpc_session"
CROSS_CXX = "aarch64-linux-gnu-g++"
SYSROOT = Path("/usr/aarch64-linux-gnu")
QEMU = "qemu-aarch64"
# The sysroot's glibc is Debian 12's, 2.36: it runs wheels built for that or any older glibc.
# pip takes an explicit --platform literally (no older tags implied), so each is listed.
SYSROOT_GLIBC_MINOR = 36
WHEEL_PLATFORMS = tuple(f"manylinux_2_{minor}_aarch64" for minor in range(SYSROOT_GLIBC_MINOR, 16, -1))
# (distribution, files to keep from its wheel)
WHEEL_PARTS = (
    ("apache-tvm", ("tvm/lib/libtvm_runtime.so",)),
    ("apache-tvm-ffi", ("tvm_ffi/lib/libtvm_ffi.so", "tvm_ffi/include/", "tvm_ffi/3rdparty/dlpack/include/")),
)


@dataclass(frozen=True)
class Arm64Runtime:
    """A folder with the aarch64 TVM runtime libraries and the session program next to them."""

    folder: Path

    @property
    def session_program(self) -> Path:
        return self.folder / SESSION_PROGRAM


def require_tools() -> tuple[str, str]:
    """(qemu-aarch64, aarch64 g++) paths, or a one-line error naming the Debian packages."""
    qemu, cxx = shutil.which(QEMU), shutil.which(CROSS_CXX)
    missing = [pkg for tool, pkg in ((qemu, "qemu-user"), (cxx, "g++-aarch64-linux-gnu")) if not tool]
    if missing or not SYSROOT.is_dir():
        raise QatieError(f"emulating an arm64 device needs {QEMU}, {CROSS_CXX} and the sysroot {SYSROOT}; "
                         f"install them with `apt-get install {' '.join(missing) or 'g++-aarch64-linux-gnu'}`")
    return qemu, cxx


def _versions() -> dict[str, str]:
    return {dist: metadata.version(dist) for dist, _ in WHEEL_PARTS}


def _fingerprint(versions: dict[str, str]) -> str:
    text = repr(sorted(versions.items())) + SESSION_SOURCE.read_text()
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def ensure_runtime(log=print) -> Arm64Runtime:
    """The cached aarch64 runtime for the installed TVM, downloading and building it the first time."""
    _, cxx = require_tools()
    versions = _versions()
    folder = cache_dir() / f"arm64-runtime-{_fingerprint(versions)}"

    def make(runtime: Path) -> None:
        log(f"preparing the aarch64 TVM runtime in {folder} (once): "
            f"{', '.join(f'{d}=={v}' for d, v in versions.items())}")
        with tempfile.TemporaryDirectory() as wheels:
            download_wheels(versions, Path(wheels))
            _unpack(Path(wheels), runtime)
        run_tool([cxx, "-std=c++17", "-O2", "-o", str(runtime / SESSION_PROGRAM), str(SESSION_SOURCE),
                  f"-I{runtime / 'include'}", f"-L{runtime}", "-ltvm_runtime", "-ltvm_ffi", "-Wl,-rpath,$ORIGIN"],
                 f"{SESSION_SOURCE}: {CROSS_CXX} failed")
        shutil.rmtree(runtime / "include")

    build_once(folder, SESSION_PROGRAM, make)
    return Arm64Runtime(folder)


def download_wheels(versions: dict[str, str], into: Path) -> None:
    """The aarch64 wheels of these exact versions (distribution -> version), for Python 3.11."""
    command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
               *(arg for tag in WHEEL_PLATFORMS for arg in ("--platform", tag)), "--python-version", "3.11", "-d", str(into),
               *(f"{dist}=={version}" for dist, version in versions.items())]
    result = subprocess.run(command, check=False, capture_output=True, text=True)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise QatieError(f"could not download the aarch64 wheels of {', '.join(versions)} ({last}); emulating "
                         f"them needs package-registry access once, then runs from {cache_dir()}")


def _unpack(wheels: Path, runtime: Path) -> None:
    """Keep the runtime libraries (flat, next to the program: it finds them via $ORIGIN) and headers."""
    (runtime / "include").mkdir(parents=True)
    for dist, parts in WHEEL_PARTS:
        (wheel,) = wheels.glob(dist.replace("-", "_") + "-*.whl")
        with zipfile.ZipFile(wheel) as archive:
            for name in archive.namelist():
                for part in parts:
                    if part.endswith("/"):  # a header folder
                        if not name.startswith(part) or name.endswith("/"):
                            continue
                        target = runtime / "include" / name[len(part):]
                    elif name == part:
                        target = runtime / Path(name).name
                    else:
                        continue
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(archive.read(name))
