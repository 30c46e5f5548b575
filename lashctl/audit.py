"""The audit log: one JSON line per item a destructive command deletes,
forgets or quarantines (docs/audit.md).

Loaded only by the commands that change the store (``reclaim``, ``gc``,
``delete``, ``forget``, ``verify --fix``) and by those that read the log
(``audit``, ``show`` of an id that is gone). A run opens the log when it
first has something to write, with ``O_APPEND``, and writes each batch of
lines with one ``write``, then ``fsync``: the lines about an item that is
about to go (``deleting``, ``forgetting``, ``quarantining``) are durable
before it goes, and its outcome (``deleted``, ``forgotten``,
``quarantined``, ``kept`` or ``failed``) is written once it is done. A log
therefore never claims a deletion that did not happen: a ``deleting`` line
with no outcome after it (a crash, a kill) means "look at the store".

Where it goes: ``--audit-log PATH`` or ``LASHCTL_AUDIT_LOG``; ``-`` is
standard error (standard output is the command's report); otherwise
``audit.jsonl`` in a local store's root, opened through the root's
descriptor without following a symlink. An ``s3://`` store has no local
root: without a named log its runs are not audited, and a note on stderr
says so.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Iterator

from lashctl.errors import StoreIOError, UsageError

AUDIT_NAME = "audit.jsonl"  # in a local store's root, beside manifest.jsonl
ENV_AUDIT_LOG = "LASHCTL_AUDIT_LOG"
STDERR = "-"

# Before an item goes (durable before the change) ...
DELETING, FORGETTING, QUARANTINING = "deleting", "forgetting", "quarantining"
# ... and what became of it.
DELETED, FORGOTTEN, QUARANTINED, KEPT, FAILED = "deleted", "forgotten", "quarantined", "kept", "failed"
BEFORE = (DELETING, FORGETTING, QUARANTINING)
OUTCOMES = (DELETED, FORGOTTEN, QUARANTINED, KEPT, FAILED)


def strip_args(args: Iterable[str]) -> list[str]:
    """The command line as it may be kept: any password in a URL removed."""
    from lashctl.backends import strip_password

    return [strip_password(a) if "://" in a else a for a in args]


def _user() -> str:
    try:
        import pwd

        return pwd.getpwuid(os.geteuid()).pw_name
    except (ImportError, KeyError, AttributeError):
        return str(os.getuid()) if hasattr(os, "getuid") else os.environ.get("USERNAME", "?")


def default_location(store_root) -> Path | None:
    """``<root>/audit.jsonl`` for a local store; None for an object store."""
    from lashctl.backends import is_url

    return None if is_url(str(store_root)) else Path(store_root) / AUDIT_NAME


def check_given(given: str | None, option: str = "--audit-log") -> str | None:
    """A named log, checked before the command does anything: its directory
    must exist (a typo must not leave a sweep unaudited)."""
    if given is None or given == STDERR:
        return given
    if not given.strip():
        raise UsageError(f"{option} is empty: name a file, or - for standard error")
    path = Path(given)
    if path.is_dir():
        raise UsageError(f"{option} {given} is a directory: name a file")
    if not path.parent.is_dir():
        raise UsageError(f"{option} {given}: directory {path.parent} does not exist")
    return given


class AuditLog:
    """The audit log of one run: its common fields, and the file it appends to."""

    def __init__(self, given: str | None, store_root, manifest, command: str, args: list[str]) -> None:
        from lashctl import __version__
        from lashctl.backends import strip_password
        from lashctl.fsutil import unique_suffix

        self.given = given
        self.store_root = store_root
        self.fd: int | None = None
        self.where = (STDERR if given == STDERR else given) or str(default_location(store_root))
        manifest_shown = _absolute(strip_password(str(manifest)) if manifest is not None
                                   else strip_password(f"{store_root}/manifest.jsonl"))
        self.common = {
            "command": command,
            "args": strip_args(args),
            "run": unique_suffix(),
            "pid": os.getpid(),
            "user": _user(),
            "host": _host(),
            "store": _absolute(strip_password(str(store_root))),
            "manifest": manifest_shown,
            "lashctl_version": __version__,
        }

    # -- lines --------------------------------------------------------------------
    @staticmethod
    def item(action: str, attachment_id: str | None, *, path: str | None = None, byte_len: int | None = None,
             sessions: Iterable[str] = (), reason: str | None = None, error: str | None = None,
             moved_to: str | None = None) -> dict:
        """One line's own fields (``write`` adds the time and the run's)."""
        return {"action": action, "id": attachment_id, "path": _absolute(path), "bytes": byte_len,
                "sessions": list(sessions), "reason": reason, "error": error, "moved_to": _absolute(moved_to)}

    def write(self, items: list[dict]) -> None:
        """Append the lines with one write, then fsync; nothing for no items.
        A failure to write stops the command (before its change, for the
        lines written ahead of one)."""
        if not items:
            return
        from lashctl.timefmt import iso_ms, now_ms

        now = now_ms()
        stamp = {"time": iso_ms(now), "time_epoch_ms": now}
        data = "".join(json.dumps({**stamp, **i, **self.common}, ensure_ascii=False, separators=(",", ":")) + "\n"
                       for i in items).encode("utf-8", "surrogateescape")
        if self.given == STDERR:
            import sys

            sys.stderr.flush()
            _write_all(2, data)
            return
        fd = self._open()
        try:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX)  # one run's batch stays whole beside another's
        except (ImportError, OSError):
            pass
        try:
            _write_all(fd, data)
            os.fsync(fd)
        except OSError as exc:
            raise StoreIOError.wrap("write the audit log", self.where, exc) from exc
        finally:
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            except (NameError, OSError):
                pass

    def _open(self) -> int:
        if self.fd is not None:
            return self.fd
        from lashctl.fsutil import describe_mode, fit_in, open_dir

        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NONBLOCK
        try:
            if self.given is not None:
                fd = os.open(self.given, flags, 0o644)
                parent: int | str = str(Path(self.given).parent)
                root = None
            else:
                root = open_dir(self.store_root, self.store_root)  # refuses a symlinked root
                if root is None:
                    raise StoreIOError(f"cannot write the audit log {self.where}: the store root is gone")
                fd = os.open(AUDIT_NAME, flags | os.O_NOFOLLOW, 0o644, dir_fd=root)
                parent = root
            try:
                import stat

                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    raise StoreIOError(f"cannot write the audit log {self.where}: it is "
                                       f"{describe_mode(st.st_mode)}, not a regular file")
                if st.st_size == 0:
                    fit_in(fd, parent)
                os.set_blocking(fd, True)
            except BaseException:
                os.close(fd)
                raise
            finally:
                if root is not None:
                    os.close(root)
        except OSError as exc:
            import errno

            if exc.errno == errno.ELOOP:
                raise StoreIOError(f"cannot write the audit log {self.where}: it is a symlink "
                                   "(the default audit log is never followed through one)") from exc
            raise StoreIOError.wrap("open the audit log", self.where, exc) from exc
        self.fd = fd
        return fd

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _absolute(location: str | None) -> str | None:
    """A local path made absolute (a log read months later, from anywhere); a URL as it is."""
    from lashctl.backends import is_lash_sqlite, is_url

    if location is None or is_url(location) or is_lash_sqlite(location):
        return location
    return os.path.abspath(location)


def _host() -> str:
    import socket

    try:
        return socket.gethostname()
    except OSError:
        return "?"


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def start(state, store, command: str, given: str | None) -> AuditLog | None:
    """The audit log a destructive run writes to, set on ``store.audit``;
    None (and a note on stderr) for an object store with no log named."""
    from lashctl import commands

    if given is None and default_location(state.store_root) is None:
        state.ui.info(f"lashctl: note: {command} on {_shown(state.store_root)} is not audited: an s3:// store "
                      f"has no local root to keep audit.jsonl in (name a file with --audit-log or {ENV_AUDIT_LOG})")
        return None
    log = AuditLog(given, state.store_root, state.manifest_path, command, commands.ARGV or [])
    store.audit = log
    return log


def _shown(location) -> str:
    from lashctl.backends import strip_password

    return strip_password(str(location))


# -- reading -------------------------------------------------------------------
def read_location(given: str | None, store_root) -> Path | None:
    """The log a reader reads: the named one, else the local store's; None
    where there is none to read (an object store, or ``-``)."""
    if given == STDERR:
        return None
    if given is not None:
        return Path(given)
    return default_location(store_root)


def read(path: Path, warn=None, wanted: str | None = None) -> Iterator[dict]:
    """Every line of the log at ``path`` (none if it does not exist), in
    order. A line that is not a JSON object (a torn final line from a
    crash, a hand edit) is skipped with a warning naming it. ``wanted``: a
    substring a line must hold to be parsed at all (an id: fast on a long log)."""
    from lashctl.fsutil import open_regular

    try:
        fd = open_regular(path) if path.name == AUDIT_NAME else os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StoreIOError.wrap("read the audit log", path, exc) from exc
    with open(fd, "rb") as handle:
        for number, raw in enumerate(handle, 1):
            if wanted is not None and wanted.encode() not in raw:
                continue
            try:
                line = json.loads(raw)
            except ValueError:
                line = None
            if not isinstance(line, dict):
                if raw.strip() and warn is not None:
                    what = "a torn final line (a crash while writing it)" if not raw.endswith(b"\n") else "not JSON"
                    warn(f"{path}:{number}: {what}: skipped")
                continue
            yield line


def history(lines: Iterable[dict], attachment_id: str) -> list[dict]:
    """The lines about one id, in order."""
    return [line for line in lines if line.get("id") == attachment_id]


def describe(line: dict) -> str:
    """One line for a person: when, what, by which command, why."""
    action = line.get("action")
    what = f"{line.get('time')} {action}"
    size = line.get("bytes")
    if size is not None and action in (DELETING, DELETED, QUARANTINING, QUARANTINED):
        what += f" ({size} B)"
    command = " ".join(["lashctl", *(line.get("args") or [line.get("command") or "?"])])
    what += f" by `{command}` (user {line.get('user')} on {line.get('host')}, pid {line.get('pid')})"
    if line.get("sessions"):
        what += f"; rows of session(s) {', '.join(line['sessions'])}"
    if line.get("reason"):
        what += f"; why: {line['reason']}"
    if line.get("moved_to"):
        what += f"; moved to {line['moved_to']}"
    if line.get("error"):
        what += f"; error: {line['error']}"
    return what


def unfinished(lines: list[dict]) -> set[int]:
    """Indexes of the lines written before a change (``deleting``...) that no
    outcome line of the same run follows: the change may or may not have
    happened (look at the store)."""
    open_: dict[tuple, int] = {}
    for n, line in enumerate(lines):
        key = (line.get("run"), line.get("id"), line.get("path"))
        if line.get("action") in BEFORE:
            open_[key] = n
        elif line.get("action") in OUTCOMES:
            open_.pop(key, None)
    return set(open_.values())


class running:
    """``with audit.running(state, store, "reclaim", given, dry_run):`` the
    run's audit log on ``store.audit`` (none for a dry run), closed after."""

    def __init__(self, state, store, command: str, given: str | None, dry_run: bool = False) -> None:
        self.log = None if dry_run else start(state, store, command, given)

    def __enter__(self) -> AuditLog | None:
        return self.log

    def __exit__(self, *exc: object) -> None:
        if self.log is not None:
            self.log.close()
