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

import base64
import binascii
import json
import os
import platform
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from compile.artifact import triple_architecture
from qatie.errors import QatieError, last_line

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
    targets: Counter = field(default_factory=Counter)  # TunedFor -> records tuned for it
    intrinsics: set[str] = field(default_factory=set)  # the tensor intrinsics the traces tensorize with


def _workload_problem(value) -> str | None:
    """Why a workload line is not [structural hash, base64 of (8-byte length + module JSON)]."""
    if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value)):
        return "expected [structural hash, module]"
    if not value[0].isdigit():
        return "the structural hash is not a number"
    try:
        blob = base64.b64decode(value[1], validate=True)
    except (binascii.Error, ValueError):
        return "the module is not base64"
    if len(blob) < 8 or int.from_bytes(blob[:8], "little") != len(blob) - 8:
        return "the module's length header does not match its size"
    try:
        module = json.loads(blob[8:])
    except (UnicodeDecodeError, json.JSONDecodeError):
        return "the module is not TVM's JSON"
    return None if isinstance(module, dict) and "root_index" in module and "nodes" in module else \
        "the module is not TVM's JSON"


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _record_problem(value, workloads: int) -> str | None:
    """Why a record line is not [workload index, [trace, run seconds, target, argument info]]."""
    if not (isinstance(value, list) and len(value) == 2 and isinstance(value[0], int)
            and 0 <= value[0] < workloads and isinstance(value[1], list)):
        return f"expected [workload index < {workloads}, record]"
    record = value[1]
    if len(record) != 4:
        return f"a record has 4 fields (trace, run seconds, target, arguments), this one {len(record)}"
    trace, run_secs, target, args = record
    if not (isinstance(trace, list) and len(trace) == 2 and all(isinstance(t, list) for t in trace)):
        return "the trace is not [instructions, decisions]"
    if not (run_secs is None or (isinstance(run_secs, list) and all(_is_number(t) for t in run_secs))):
        return "run seconds are not a list of numbers"
    if not (isinstance(target, dict) and isinstance(target.get("kind"), str)):
        return "the target is not a TVM target dict"
    if not (isinstance(args, list) and all(
            isinstance(a, list) and len(a) == 3 and a[0] == "TENSOR" and isinstance(a[1], str)
            and isinstance(a[2], list) and all(isinstance(d, int) for d in a[2]) for a in args)):
        return "the argument info is not a list of [\"TENSOR\", dtype, shape]"
    return None


def _check_line(path: Path, number: int, text: str, workloads: int | None, check: LogCheck) -> None:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise QatieError(
            f"{path}:{number}: corrupt tuning log line ({exc.msg}); fix or delete that line, "
            f"or move the file away to start this target's log afresh"
        ) from None
    problem = _workload_problem(value) if workloads is None else _record_problem(value, workloads)
    if problem:
        raise QatieError(f"{path}:{number}: not a MetaSchedule database line ({problem}); fix or delete that "
                         f"line, or move the file away to start this target's log afresh")
    if workloads is not None:
        check.targets[TunedFor.of(value[1][2])] += 1
        check.intrinsics.update(_tensorized_with(value[1][0][0]))


def _tensorized_with(instructions: list) -> set[str]:
    """The intrinsic names of a trace's Tensorize instructions ([kind, inputs, [name, ...], ...];
    anything else malformed is left to TVM's loader, whose error the build reports)."""
    return {inst[2][0] for inst in instructions
            if isinstance(inst, list) and len(inst) >= 3 and inst[0] == "Tensorize"
            and isinstance(inst[2], list) and inst[2] and isinstance(inst[2][0], str)}


class TunedFor(NamedTuple):
    """What a record was tuned for: kind, architecture and CPU."""

    kind: str
    arch: str
    mcpu: str

    @classmethod
    def of(cls, target: dict) -> TunedFor:
        """From a TVM target dict; a target that names no triple is this host's architecture."""
        arch = triple_architecture(str(target.get("mtriple") or platform.machine()))
        return cls(str(target.get("kind")), arch, str(target.get("mcpu", "generic")))

    def __str__(self) -> str:
        return " ".join(self)


def foreign_dot_products(check: LogCheck, target) -> list[str]:
    """The dot products (ours) the log's records tensorize with that no conv built for `target`
    (a tvm.target.Target) gets: records of those kernels can never apply to its builds."""
    from compile.backend.dot_products import DOT_PRODUCTS, PIXEL_DOT_PRODUCTS, reachable

    usable = {dot.intrin for dot in reachable(target)}
    return sorted(dot.name for dot in (*DOT_PRODUCTS, *PIXEL_DOT_PRODUCTS)
                  if dot.intrin in check.intrinsics and dot.intrin not in usable)


def check_targets(folder: Path, check: LogCheck, target) -> list[str]:
    """Records tuned for another architecture are an error (their schedules were measured on
    another machine kind); for another CPU of the same architecture, a note for the user, which
    says when their kernels are another CPU kind's dot products (`foreign_dot_products`)."""
    from compile.backend.dot_products import reachable

    want = TunedFor.of(target.export())
    others = {tuned: n for tuned, n in check.targets.items() if tuned != want}
    if check.targets and all(tuned.arch != want.arch for tuned in check.targets):
        tuned_for = ", ".join(sorted(map(str, check.targets)))
        raise QatieError(f"{folder}: the records were tuned for {tuned_for}, this build is for {want}; pass the "
                         f"log of this target with --tuning-log, or --no-tuning")
    foreign = foreign_dot_products(check, target)
    if foreign:
        usable = ", ".join(dot.name for dot in reachable(target)) or "none"
        applies = (f"those of kernels with the {' or '.join(foreign)} dot product cannot apply (this CPU's convs "
                   f"use {usable}): tune on this CPU to give them records")
    else:
        applies = "their schedules apply, their timings are another CPU's"
    return [f"{folder}: {n} record(s) were tuned for {tuned}, this build is for {want}: {applies}"
            for tuned, n in sorted(others.items())]


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
            _check_line(path, number, raw.decode("utf-8", "replace"), workloads, check)
            count += 1
    if tail.strip():
        try:
            _check_line(path, len(lines) + 1, tail.decode("utf-8", "replace"), workloads, check)
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


def _register_intrinsics(names: set[str]) -> None:
    """TVM replays each record's trace while loading, so every intrinsic a trace tensorizes with
    must be registered: ours are on import; TVM's CPU ones (4.4 s of TVMScript parsing on the
    znver3 host) only when the log names one that is not registered yet."""
    from tvm.s_tir import TensorIntrin

    import compile.backend.dot_products  # noqa: F401  (registers our intrinsics)
    from compile.backend.intrinsics import register_cpu_intrinsics

    if any(TensorIntrin.get(name, allow_missing=True) is None for name in names):
        register_cpu_intrinsics()


def check_existing_log(folder: Path) -> LogCheck:
    """`check_log_dir` of a folder that must hold a log (one given to a build or opened to apply)."""
    if not (folder / WORKLOADS).is_file():
        raise QatieError(f"{folder}: no tuning log here (no {WORKLOADS}); run `qatie-compile tune` first")
    return check_log_dir(folder)


def open_database(folder: Path, create: bool, check: LogCheck | None = None):
    """TVM's JSONDatabase on `folder` after checking it (unless `check` says it was); `create`
    makes the folder for tuning."""
    from tvm.s_tir import meta_schedule as ms

    if create:
        folder.mkdir(parents=True, exist_ok=True)
    check = check or (check_log_dir(folder) if create else check_existing_log(folder))
    _register_intrinsics(check.intrinsics)
    try:  # TVM replays every record's trace on its workload while loading
        database = ms.database.JSONDatabase(
            path_workload=str(folder / WORKLOADS), path_tuning_record=str(folder / RECORDS), allow_missing=create,
        )
    except Exception as exc:  # TVM raises RuntimeError and its own error types alike
        raise QatieError(f"{folder}: a tuning record could not be applied to its workload (TVM: "
                         f"{last_line(exc)}); remove its line from {RECORDS}, "
                         f"or build with --no-tuning") from None
    return database, check
