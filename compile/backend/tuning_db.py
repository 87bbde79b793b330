"""`tuning_logs/<target>/`: one MetaSchedule JSON database per target, where it lives, how it is
checked, and how a build or a tuning run opens it.

The files are TVM's own (`database_workload.json`, `database_tuning_record.json`, one JSON value
per line), so TVM tools read them as they are. TVM appends a line per committed record; it
never rewrites the files, so a killed run loses at most the line being written.

TVM's loader is not forgiving: a damaged line aborts it with a parse error that names neither
file nor line. So every line is checked here first. A broken *last* line with no newline is
the trace of an interrupted append (Ctrl-C, kill -9): it is reported and cut off, keeping all
complete records. Anything else broken is an error naming the file and line, and nothing is
changed.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from qatie.errors import QatieError

WORKLOADS, RECORDS = "database_workload.json", "database_tuning_record.json"
DEFAULT_LOG_ROOT = Path(__file__).resolve().parents[2] / "tuning_logs"
LOG_ROOT_ENV = "QATIE_TUNING_LOGS"


def default_log_dir(target_name: str) -> Path:
    """`tuning_logs/<target>/` (the root can be moved with QATIE_TUNING_LOGS)."""
    return Path(os.environ.get(LOG_ROOT_ENV, DEFAULT_LOG_ROOT)) / target_name


def is_shipped_log(folder: Path) -> bool:
    """A folder under the repository's tuning_logs/, whose records builds pick up by default."""
    return folder.resolve().is_relative_to(DEFAULT_LOG_ROOT)


@dataclass
class LogCheck:
    """What checking a log folder found: line counts and the interrupted lines cut off."""

    workloads: int = 0
    records: int = 0
    repaired: list[str] = field(default_factory=list)


def _check_line(path: Path, number: int, text: str, workloads: int | None) -> None:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise QatieError(
            f"{path}:{number}: corrupt tuning log line ({exc.msg}); fix or delete that line, "
            f"or move the file away to start this target's log afresh"
        ) from None
    if workloads is None:
        ok = isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value)
        expected = "[structural hash, module]"
    else:
        ok = (isinstance(value, list) and len(value) == 2 and isinstance(value[0], int)
              and 0 <= value[0] < workloads and isinstance(value[1], list))
        expected = f"[workload index < {workloads}, record]"
    if not ok:
        raise QatieError(f"{path}:{number}: not a MetaSchedule database line (expected {expected})")


def _check_file(path: Path, workloads: int | None, check: LogCheck) -> int:
    """Check every line; cut off an interrupted final append. Returns the number of lines."""
    if not path.exists():
        return 0
    data = path.read_bytes()
    lines = data.split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline
    count = 0
    for number, raw in enumerate(lines, start=1):
        if raw.strip():
            _check_line(path, number, raw.decode("utf-8", "replace"), workloads)
            count += 1
    if tail.strip():
        try:
            _check_line(path, len(lines) + 1, tail.decode("utf-8", "replace"), workloads)
        except QatieError:
            with open(path, "r+b") as f:  # drop only the unfinished line
                f.truncate(len(data) - len(tail))
                os.fsync(f.fileno())
            check.repaired.append(f"{path}:{len(lines) + 1}: dropped an unfinished line (interrupted write)")
            return count
        with open(path, "ab") as f:  # complete but unterminated: terminate it before TVM appends
            f.write(b"\n")
        count += 1
    return count


def check_log_dir(folder: Path) -> LogCheck:
    """Validate (and repair interrupted appends in) a tuning log folder before TVM opens it."""
    check = LogCheck()
    check.workloads = _check_file(folder / WORKLOADS, None, check)
    check.records = _check_file(folder / RECORDS, check.workloads, check)
    return check


def open_database(folder: Path, create: bool):
    """TVM's JSONDatabase on `folder` after checking it; `create` makes the folder for tuning."""
    from tvm.s_tir import meta_schedule as ms

    if create:
        folder.mkdir(parents=True, exist_ok=True)
    elif not (folder / WORKLOADS).is_file():
        raise QatieError(f"{folder}: no tuning log here (no {WORKLOADS}); run `qatie-compile tune` first")
    check = check_log_dir(folder)
    database = ms.database.JSONDatabase(
        path_workload=str(folder / WORKLOADS), path_tuning_record=str(folder / RECORDS), allow_missing=create,
    )
    return database, check
