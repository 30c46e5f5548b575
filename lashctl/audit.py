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
root: without a named log its runs are not audited, and a warning on
stderr (which ``-q`` does not hide) says so. A run checks the log before
it changes anything: a real run opens it for append up front, a dry run
checks that it could (a named log only); a log that is not a regular file,
or cannot be appended to, stops it.

Lines are UTF-8 JSON whatever the paths hold: a byte of a file name that
is not UTF-8 is written as the escape ``\\udcXX`` (Python's surrogateescape,
read back exactly), and characters a terminal obeys as ``\\uXXXX``.
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


def check_appendable(given: str | None) -> None:
    """A dry run's check of a named log: a regular file this user can open
    for append, or a file it could create (nothing is created)."""
    if given is None or given == STDERR:
        return
    try:
        fd = _open_named(given, create=False)
    except FileNotFoundError:
        parent = str(Path(given).parent)
        if os.access(parent, os.W_OK | os.X_OK):
            try:
                if not os.statvfs(parent).f_flag & os.ST_RDONLY:
                    return
            except OSError:
                return
        raise UsageError(
            f"audit log {given} cannot be created: directory {parent} is not writable "
            f"(name a file this user can append to with --audit-log or {ENV_AUDIT_LOG})"
        ) from None
    os.close(fd)


def _open_named(given: str, create: bool) -> int:
    """A named log opened for append (its final symlink followed: the user
    named it). Not a regular file, or not writable: a usage error (exit 2),
    before the run changes anything."""
    import stat

    try:
        st = os.stat(given)
    except FileNotFoundError:
        if not create:
            raise
        st = None
    except OSError:
        st = None  # the open below says why
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise UsageError(_not_regular(given, st.st_mode))
    flags = os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC | os.O_NONBLOCK | (os.O_CREAT if create else 0)
    try:
        fd = os.open(given, flags, 0o644)
    except FileNotFoundError:
        if not create:
            raise
        raise UsageError(f"audit log {given}: directory {Path(given).parent} does not exist") from None
    except OSError as exc:
        raise UsageError(
            f"audit log {given} cannot be appended to: {exc.strerror or exc} "
            f"(name a file this user can append to with --audit-log or {ENV_AUDIT_LOG})"
        ) from exc
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise UsageError(_not_regular(given, mode))
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _not_regular(where, mode: int) -> str:
    from lashctl.fsutil import describe_mode

    return f"audit log {where} is {describe_mode(mode)}, not a regular file"


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
        manifest_shown = _absolute(
            strip_password(str(manifest)) if manifest is not None else strip_password(f"{store_root}/manifest.jsonl")
        )
        self.common = {
            "command": command,
            "args": strip_args(args),
            "run": unique_suffix(),
            "pid": os.getpid(),
            "user": _user(),
            "host": _host(),
            "store": store_field(store_root),
            "manifest": manifest_shown,
            "lashctl_version": __version__,
        }

    # -- lines --------------------------------------------------------------------
    @staticmethod
    def item(
        action: str,
        attachment_id: str | None,
        *,
        path: str | None = None,
        byte_len: int | None = None,
        sessions: Iterable[str] = (),
        reason: str | None = None,
        error: str | None = None,
        moved_to: str | None = None,
    ) -> dict:
        """One line's own fields (``write`` adds the time and the run's)."""
        return {
            "action": action,
            "id": attachment_id,
            "path": _absolute(path),
            "bytes": byte_len,
            "sessions": list(sessions),
            "reason": reason,
            "error": error,
            "moved_to": _absolute(moved_to),
        }

    def write(self, items: list[dict]) -> None:
        """Append the lines with one write, then fsync; nothing for no items.
        A failure to write stops the command (before its change, for the
        lines written ahead of one)."""
        if not items:
            return
        from lashctl.timefmt import iso_ms, now_ms

        now = now_ms()
        stamp = {"time": iso_ms(now), "time_epoch_ms": now}
        data = "".join(encode_line({**stamp, **i, **self.common}) + "\n" for i in items).encode("utf-8")
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
        import stat

        from lashctl.fsutil import describe_mode, fit_in, open_dir

        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NONBLOCK
        try:
            if self.given is not None:
                fd = _open_named(self.given, create=True)
                parent: int | str = str(Path(self.given).parent)
                root = None
            else:
                root = open_dir(self.store_root, self.store_root)  # refuses a symlinked root
                if root is None:
                    raise StoreIOError(f"cannot write the audit log {self.where}: the store root is gone")
                try:
                    there = os.stat(AUDIT_NAME, dir_fd=root, follow_symlinks=False).st_mode
                except FileNotFoundError:
                    there = stat.S_IFREG
                except BaseException:
                    os.close(root)
                    raise
                if not stat.S_ISREG(there) and not stat.S_ISLNK(there):  # (a FIFO: the open would fail ENXIO)
                    os.close(root)
                    raise StoreIOError(
                        f"cannot write the audit log {self.where}: it is {describe_mode(there)}, not a regular file"
                    )
                try:
                    fd = os.open(AUDIT_NAME, flags | os.O_NOFOLLOW, 0o644, dir_fd=root)
                except BaseException:
                    os.close(root)
                    raise
                parent = root
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    raise StoreIOError(
                        f"cannot write the audit log {self.where}: it is "
                        f"{describe_mode(st.st_mode)}, not a regular file"
                    )
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
                raise StoreIOError(
                    f"cannot write the audit log {self.where}: it is a symlink "
                    "(the default audit log is never followed through one)"
                ) from exc
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
        view = view[os.write(fd, view) :]


_SURROGATE = None


def encode_line(line: dict) -> str:
    """One line's JSON, valid UTF-8 whatever its paths hold: a lone surrogate
    (a byte of a name that is not UTF-8) as the escape ``\\udcXX``, which
    reads back exactly; characters a terminal obeys as ``\\uXXXX``."""
    from lashctl.render import inert_json

    text = json.dumps(line, ensure_ascii=False, separators=(",", ":"))
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            global _SURROGATE
            if _SURROGATE is None:
                import re

                _SURROGATE = re.compile("[\ud800-\udfff]")
            # A lone surrogate can only stand inside a JSON string: its escape keeps the string exact.
            text = _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
        text = inert_json(text)
    return text


def start(state, store, command: str, given: str | None) -> AuditLog | None:
    """The audit log a destructive run writes to, set on ``store.audit``; a
    named one is checked now, before anything changes; None (and a warning)
    for an object store with no log named."""
    import lashctl

    if given is None and default_location(state.store_root) is None:
        # A warning (-q hides it, as every warning: a quiet sweep's stderr
        # stays empty unless something failed; docs/audit.md says so).
        state.ui.warn(
            f"{command} on {_shown(state.store_root)} is not audited: an s3:// store has no local root "
            f"to keep audit.jsonl in (name a file with --audit-log or {ENV_AUDIT_LOG})"
        )
        return None
    log = AuditLog(given, state.store_root, state.manifest_path, command, lashctl.ARGV or [])
    # A named log must take lines before anything changes (checked, not
    # created: a run that changes nothing leaves no file behind); the store's
    # own is opened at its first line.
    check_appendable(given)
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


MAX_LINE = 1 << 20  # bytes: a longer line is no line lashctl wrote; skipped, never held whole

# Every key of a line (docs/audit.md), in the order --json shows them, and
# the types a reader relies on (None: the key may be null).
KEYS = (
    "time",
    "time_epoch_ms",
    "action",
    "id",
    "path",
    "bytes",
    "sessions",
    "reason",
    "error",
    "moved_to",
    "command",
    "args",
    "run",
    "pid",
    "user",
    "host",
    "store",
    "manifest",
    "lashctl_version",
)
_TYPES: dict[str, tuple] = {
    "time": (str,),
    "time_epoch_ms": (int,),
    "action": (str,),
    "id": (str, None),
    "path": (str, None),
    "bytes": (int, None),
    "sessions": (list,),
    "reason": (str, None),
    "error": (str, None),
    "moved_to": (str, None),
    "command": (str, None),
    "args": (list, None),
    "run": (str, None),
    "pid": (int, None),
    "user": (str, None),
    "host": (str, None),
    "store": (str,),
    "manifest": (str, None),
    "lashctl_version": (str, None),
}
_NAMES = {str: "a string", int: "an integer", list: "a list", None: "null"}


def problem(line: object) -> str | None:
    """Why a parsed line is not an audit line (a hand edit, another
    program's JSON), or None."""
    if not isinstance(line, dict):
        return "not a JSON object"
    for key, types in _TYPES.items():
        if key not in line:
            return f"no {key!r}"
        value = line[key]
        if value is None and None in types:
            continue
        if isinstance(value, bool) or not any(t is not None and isinstance(value, t) for t in types):
            return f"{key!r} is not " + " or ".join(_NAMES[t] for t in types)
        if isinstance(value, list) and not all(isinstance(v, str) for v in value):
            return f"{key!r} is not a list of strings"
    return None


def store_field(store_root) -> str:
    """A store as a line's ``store`` records it (absolute, any password removed)."""
    from lashctl.backends import strip_password

    return _absolute(strip_password(str(store_root))) or ""


def same_store(store_root):
    """A test of a line's ``store``: this store, by the form the writer
    records, or (a local path) by its real path, another spelling of it."""
    from lashctl.backends import is_url

    mine = store_field(store_root)
    if is_url(mine):
        return lambda recorded: recorded == mine
    real = os.path.realpath(mine)
    seen: dict[str, bool] = {mine: True}

    def test(recorded: str) -> bool:
        found = seen.get(recorded)
        if found is None:
            found = seen[recorded] = not is_url(recorded) and os.path.realpath(recorded) == real
        return found

    return test


def open_for_reading(path: Path, named: bool) -> int | None:
    """The log at ``path`` open for reading; None if there is none. A named
    log's final symlink is followed (the user named it), the store's own
    never; neither may be anything but a regular file (a FIFO would hang,
    a device never end): a named one is a usage error (exit 2), the store's
    an I/O error (exit 1)."""
    import stat

    from lashctl.fsutil import NotARegularFile, open_regular

    try:
        if not named:
            return open_regular(path)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except NotARegularFile as exc:
        raise StoreIOError(f"cannot read the audit log {path}: it is {exc.strerror}, not a regular file") from exc
    except OSError as exc:
        import errno

        if exc.errno == errno.ELOOP and not named:
            raise StoreIOError(
                f"cannot read the audit log {path}: it is a symlink "
                "(the store's audit log is never followed through one)"
            ) from exc
        raise StoreIOError.wrap("read the audit log", path, exc) from exc
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise UsageError(_not_regular(path, mode))
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read(path: Path, warn=None, wanted: str | None = None, *, named: bool = True, store=None) -> Iterator[dict]:
    """Every line of the log at ``path`` (none if it does not exist), in
    order. A line that is not an audit line (a torn final line from a crash,
    a hand edit, a JSON object without the keys every line has, a line over
    ``MAX_LINE`` bytes, which is not read whole) is skipped with a warning
    naming it. ``wanted``: a substring a line must hold to be parsed at all
    (an id: fast on a long log). ``store``: only the lines of this store
    (a shared log); None, every store's. ``named``: the path was named (see
    ``open_for_reading``)."""
    fd = open_for_reading(path, named)
    if fd is None:
        return
    mine = same_store(store) if store is not None else None
    needle = wanted.encode() if wanted is not None else None
    with open(fd, "rb") as handle:
        number = 0
        while True:
            raw = handle.readline(MAX_LINE + 1)
            if not raw:
                break
            number += 1
            if len(raw) > MAX_LINE:  # the rest of that line, read and dropped a bounded piece at a time
                while raw and not raw.endswith(b"\n"):
                    raw = handle.readline(MAX_LINE + 1)
                if warn is not None:
                    warn(f"{path}:{number}: a line longer than {MAX_LINE >> 20} MiB: skipped")
                continue
            if needle is not None and needle not in raw:
                continue
            try:
                line = json.loads(raw)
            except ValueError:
                line = None
            why = problem(line) if line is not None else None
            if line is None or why is not None:
                if raw.strip() and warn is not None:
                    if line is None:
                        why = "a torn final line (a crash while writing it)" if not raw.endswith(b"\n") else "not JSON"
                    else:
                        why = f"not an audit line ({why})"
                    warn(f"{path}:{number}: {why}: skipped")
                continue
            if mine is not None and not mine(line["store"]):
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
        if dry_run and command != "verify":  # (verify without --fix is no dry run of a change)
            check_appendable(given)
        self.log = None if dry_run else start(state, store, command, given)

    def __enter__(self) -> AuditLog | None:
        return self.log

    def __exit__(self, *exc: object) -> None:
        if self.log is not None:
            self.log.close()
