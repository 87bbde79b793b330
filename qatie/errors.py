"""The one exception type for mistakes a user can make (bad file, bad option, bad data).

The CLI turns it into a one-line message and exit code 2; everything else is a bug and keeps
its traceback.
"""


class QatieError(Exception):
    """A user-caused error whose message already says what is wrong and how to fix it."""


def validation_summary(exc) -> str:
    """A pydantic ValidationError as one line: where in the file, what is wrong."""
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"]) or "top level"
    more = f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
    return f"{where}: {error['msg']}{more}"
