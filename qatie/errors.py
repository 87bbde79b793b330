"""The one exception type for mistakes a user can make (bad file, bad option, bad data).

The CLI turns it into a one-line message and exit code 2; everything else is a bug and keeps
its traceback.
"""


class QatieError(Exception):
    """A user-caused error whose message already says what is wrong and how to fix it."""


def last_line(exc: BaseException) -> str:
    """The last non-empty line of an exception's message: TVM puts the cause there, after its
    C++ and Python frames."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__

