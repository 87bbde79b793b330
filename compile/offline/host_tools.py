"""The host programs the offline stand-ins run, and the cache folder they build into once.

The emulated device's session program, ONNX Runtime's aarch64 program, our qemu plugin: each is
built (downloaded, unpacked, compiled) into a folder of `cache_dir()` keyed by what it is made
from, the first time it is needed. A tool that fails stops with a one-line error that names it
and ends with the last line it printed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from qatie.errors import QatieError

CACHE_ENV = "QATIE_CACHE"
LLVM_VERSIONS = ("", "-19", "-18", "-17", "-16", "-15", "-14")  # `llvm-mca`, or a versioned Debian name


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "qatie"))


def build_once(folder: Path, marker: str, make: Callable[[Path], None]) -> None:
    """Make `folder` unless it holds `marker`: `make(staging)` fills a fresh folder beside it,
    which is then renamed into place, so an interrupted build never leaves half of one behind.
    Another process building the same folder meanwhile makes the same files: the first rename
    wins and the other build is dropped."""
    if (folder / marker).is_file():
        return
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=f".{folder.name}-") as staging:
        built = Path(staging) / folder.name
        built.mkdir()
        make(built)
        try:
            built.rename(folder)
        except OSError:
            if not (folder / marker).is_file():
                raise


def run_tool(command: list[str], failure: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    """`command` run to its end with its output captured; when it fails, `tool_error`."""
    result = subprocess.run(command, input=stdin, check=False, capture_output=True, text=True)
    if result.returncode != 0:
        raise tool_error(result, failure)
    return result


def tool_error(result: subprocess.CompletedProcess, failure: str) -> QatieError:
    """"`failure`: <the last line the tool printed on stderr, or its exit code>"."""
    return QatieError(f"{failure}: {(result.stderr.strip().splitlines() or [f'exit code {result.returncode}'])[-1]}")


def llvm_tool(name: str) -> str:
    """The path of an LLVM tool (`llvm-mca`, `llvm-mc`, `llvm-nm`), or a one-line error."""
    for suffix in LLVM_VERSIONS:
        path = shutil.which(name + suffix)
        if path:
            return path
    raise QatieError(f"estimating cycles needs {name} (LLVM); install it with `apt-get install llvm`")
