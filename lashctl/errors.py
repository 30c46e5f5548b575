"""The one exception hierarchy. Each class carries its documented exit code.

The CLI funnel (``lashctl.cli``) turns these into a one-line message on stderr
and the exit code; the core raises them with messages that name the file,
line, id or option at fault.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_REFUSED = 4
EXIT_PARTIAL = 5
EXIT_CORRUPT = 65
EXIT_UNAVAILABLE = 69
EXIT_LOCKED = 75
EXIT_DENIED = 77


class LashctlError(Exception):
    """An expected failure: reported as one line, exits with ``exit_code``."""

    exit_code = EXIT_FAILURE

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UsageError(LashctlError):
    """Bad option value, malformed or ambiguous id."""

    exit_code = EXIT_USAGE


class NotFound(LashctlError):
    """Unknown id, or ``commit`` of an id with no intent."""

    exit_code = EXIT_NOT_FOUND


class Refused(LashctlError):
    """Refused for safety: deleting live content, a grace period too short."""

    exit_code = EXIT_REFUSED


class Partial(LashctlError):
    """The work finished but some items failed."""

    exit_code = EXIT_PARTIAL


class Corrupt(LashctlError):
    """Malformed manifest line, unknown op or version, bad sidecar, hash mismatch."""

    exit_code = EXIT_CORRUPT


class UnsafePath(Corrupt):
    """A symlink, a non-directory or a foreign owner where the store expects its own directory or file.

    Nothing is opened, written or removed through it; the command stops.
    """


class LockTimeout(LashctlError):
    """The manifest lock could not be taken in time."""

    exit_code = EXIT_LOCKED


class StoreIOError(LashctlError):
    """An operating-system failure on a named path (exit 1)."""

    exit_code = EXIT_FAILURE

    @classmethod
    def wrap(cls, action: str, path: object, exc: OSError) -> "StoreIOError":
        reason = exc.strerror or str(exc)
        return cls(f"cannot {action} {path}: {reason}")


class Unavailable(LashctlError):
    """A server (object store, database) could not be reached or failed mid-way."""

    exit_code = EXIT_UNAVAILABLE


class Denied(LashctlError):
    """A server refused the credentials or the access."""

    exit_code = EXIT_DENIED


# -- malformed lines and rows ---------------------------------------------------
_SHOWN_RAW = 200  # bytes of a malformed line quoted in its message


def describe_malformed(exc: Corrupt) -> str:
    """``<path>:<line>: <problem>: <the raw line>`` for a person (escaped when shown)."""
    raw = getattr(exc, "raw", b"")
    if not raw:  # a row of a database, not a line: the message names it
        return exc.message
    shown = raw[:_SHOWN_RAW].decode("utf-8", "replace") + ("..." if len(raw) > _SHOWN_RAW else "")
    return f"{exc.message}: {shown}"


def malformed_error(malformed: list[Corrupt], where: str, unit: str = "line") -> Corrupt:
    """The exit-65 error a tolerant reader raises once it has shown everything
    (``unit``: what the manifest is made of, "line" or a database's "row")."""
    first, more = malformed[0], len(malformed) - 1
    also = f" (and {more} more malformed {unit}(s))" if more else ""
    return Corrupt(
        f"{first.message}{also}; the other {unit}s were read: destructive commands refuse "
        f"manifest {where} until it is repaired"
    )
