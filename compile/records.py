"""Typed records read from JSON files a user hands us: artifact manifests and target files.

Each file is parsed into a frozen pydantic model that forbids unknown fields, so a command
never meets a missing or mistyped field halfway through its work; anything wrong is one line
naming the file, the field and the fix.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from qatie.errors import QatieError

R = TypeVar("R", bound=BaseModel)


class Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def validation_summary(exc: ValidationError) -> str:
    """A pydantic ValidationError as one line: where in the file, what is wrong."""
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"]) or "top level"
    more = f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
    return f"{where}: {error['msg']}{more}"


def read_record(path: Path, model: type[R], what: str, fix: str) -> R:
    """`path` parsed as JSON and validated as `model` (`what` names it in errors, `fix` says what
    to do about one)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise QatieError(f"{path}: not readable JSON ({exc}); {fix}") from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise QatieError(f"{path}: not {what} ({validation_summary(exc)}); {fix}") from None
