"""Write files so that a kill at any moment leaves either the old file or the new one, never half.

Everything the toolchain writes (checkpoints, ONNX files, reports) goes through `atomic_path`.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

from qatie.errors import QatieError


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temp path beside `path`; on success fsync it and rename it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_name, 0o666 & ~umask)  # mkstemp's 0600 would make shipped files unreadable to others
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(text: str, path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def check_writable_folder(folder: Path, option: str = "-o") -> None:
    """A one-line error now, before any work, if files cannot be created in `folder` (which
    need not exist yet): its nearest existing ancestor must be a folder we can write in.

    Probed by creating and removing a file: permission bits say nothing for root, and nothing
    about read-only file systems."""
    existing = folder
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise QatieError(f"{option} {folder}: {existing} is a file, not a folder; choose another {option}")
    try:
        fd, probe = tempfile.mkstemp(prefix=".qatie-write-probe-", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise QatieError(f"{option} {folder}: cannot write in {existing} ({exc.strerror}); "
                         f"choose another {option}") from None


def check_writable_file(path: Path, option: str = "-o") -> None:
    """Like `check_writable_folder` for a file to be written at `path`."""
    if path.is_dir():
        raise QatieError(f"{option} {path}: is a folder; give a file name")
    check_writable_folder(path.parent, option)
