"""lash's SQLite session databases as a manifest backend (``lash-sqlite:DIR``).

lash-sqlite-store keeps one SQLite database per session in a sessions
directory, each with its own ``attachment_manifest`` table: the same seven
columns, primary key (session_id, attachment_id) and owner CHECK as lash's
PostgreSQL table, the fold's state kept directly (``lashctl.backends.manifests.postgres``
explains the statements; they are the same here, in SQLite's dialect).

The directory. A primary database is a ``*.db`` file whose name has no other
``.db`` in it: ``<safe>-<first 16 hex of sha256(session id)>.db``
(``session_db_name``) or a host's own ``<timestamp>.db``. Sidecar databases
(``<primary>.db.effects.db``, ``.processes.db``, ...) carry an interior
``.db.``, and WAL files end in ``-wal``/``-shm``: lash skips both, so does
lashctl. A database lash created but never initialised (user_version 0, no
tables) holds no rows; so does one listed and gone before it was opened
(lash deleted the session).

Reads. ``reading()`` copies the rows of every primary database, one at a
time (``ATTACH`` read-only, ``INSERT … SELECT``, ``DETACH``), into one
temporary database indexed like the PostgreSQL table, and answers every query
from it; with each row the database it came from. Writers and sweeps answer
``rows_for_keys``/``rows_for_id(s)`` from the live databases instead (a
sweep's re-checks before and after a delete must see rows written since).

Writes. lashctl never creates a session database: a session is found by the
name rule, else by a primary database whose ``session_meta`` or rows name it;
a session with none is a usage error. ``writing()`` holds one ``BEGIN
IMMEDIATE`` transaction per session database it touches, from the first read
of a key (as PostgreSQL's ``FOR UPDATE``) to the end of the block, committed
then (rolled back on an exception). ``sweeping()`` writes each batch in one
short transaction per database. Both wait for lash's writers with SQLite's
busy timeout (``--lock-timeout``; exit 75 when it runs out).

Sweeps. One sweep at a time: an exclusive ``flock`` on
``<DIR>/.lashctl-sweep.lock`` (lash ignores the file: it is not a ``.db``).
The sweep first reads every primary database, as lash's GC does: one that
cannot be opened or read, or whose schema version lashctl does not support,
stops it (Corrupt) before anything is changed. Owners as lash decides them: a
turn-owned intent is dead once another turn of its session committed after it
(``runtime_turn_commits``); a process-owned intent is kept unless
``--process-registry PATH`` names lash's SQLite process registry file (opened
read-only) and the process has no row in its ``processes`` table.

Schema version. lash stamps ``PRAGMA user_version`` (12) in each session
database and in its process registry and refuses any other; lashctl refuses
(Corrupt) a version it was not built for (``SUPPORTED_SCHEMA_VERSIONS``).
"""

from __future__ import annotations

import fcntl
import hashlib
import math
import os
import sqlite3
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator
from urllib.parse import quote

from lashctl.backends.base import LASH_SQLITE, ManifestBackend, ManifestWriter, uncommitted_where
from lashctl.errors import (
    Corrupt,
    Denied,
    LashctlError,
    LockTimeout,
    StoreIOError,
    UsageError,
)
from lashctl.fold import Effect, Event, Row, canonical_uri, effect_runs
from lashctl.fsutil import flock_within, open_lock_file
from lashctl.ids import is_valid_id
from lashctl.timefmt import MAX_EPOCH_MS

PREFIX = "lash-sqlite:"
TABLE = "attachment_manifest"
TURN_COMMITS = "runtime_turn_commits"
SESSION_META = "session_meta"
PROCESSES = "processes"
# lash-sqlite-store's versions whose attachment_manifest, runtime_turn_commits
# and processes mean what lashctl implements: 12 bound intents to owners.
SUPPORTED_SCHEMA_VERSIONS = (12,)
SUPPORTED_PROCESS_SCHEMA_VERSIONS = (12,)
SWEEP_LOCK = ".lashctl-sweep.lock"
EXPECTED_COLUMNS = (
    "attachment_id",
    "session_id",
    "canonical_uri",
    "intent_at_ms",
    "committed_at_ms",
    "owner_kind",
    "owner_id",
)
EXPECTED_PRIMARY_KEY = ("session_id", "attachment_id")

_COLS = "session_id, attachment_id, canonical_uri, intent_at_ms, committed_at_ms, owner_kind, owner_id"
_IN_BATCH = 500  # values per IN (...): far below SQLite's bound on variables
_FETCH = 2000  # rows fetched at a time by the streams

_SQL_UPSERT = (
    f"INSERT INTO {TABLE} (session_id, attachment_id, canonical_uri, intent_at_ms, committed_at_ms)"
    " VALUES (?1, ?2, ?3, ?4, ?5)"
    " ON CONFLICT (session_id, attachment_id) DO UPDATE"
    " SET intent_at_ms = max(intent_at_ms, coalesce(?6, intent_at_ms)), committed_at_ms = ?7"
    " WHERE committed_at_ms IS NULL"
)
_SQL_COMMIT = (
    f"UPDATE {TABLE} SET committed_at_ms = ?1 WHERE session_id = ?2 AND attachment_id = ?3 AND committed_at_ms IS NULL"
)
_SQL_DELETE = f"DELETE FROM {TABLE} WHERE session_id = ?1 AND attachment_id = ?2"
# A sweep's guarded forget: only a row still an uncommitted intent from at or before the cutoff.
_SQL_DELETE_AGED = (
    f"DELETE FROM {TABLE} WHERE session_id = ?1 AND attachment_id = ?2"
    " AND committed_at_ms IS NULL AND intent_at_ms <= ?3"
)
_SQL_REPLACE = (
    f"INSERT INTO {TABLE} (session_id, attachment_id, canonical_uri, intent_at_ms, committed_at_ms)"
    " VALUES (?1, ?2, ?3, ?4, ?5)"
    " ON CONFLICT (session_id, attachment_id) DO UPDATE"
    " SET canonical_uri = excluded.canonical_uri, intent_at_ms = excluded.intent_at_ms,"
    " committed_at_ms = excluded.committed_at_ms, owner_kind = NULL, owner_id = NULL"
)


def is_lash_sqlite(text: str) -> bool:
    return text.startswith(PREFIX)


def session_db_name(session_id: str) -> str:
    """The file name lash gives a session's primary database."""
    safe = "".join(c if c.isascii() and (c.isalnum() or c in "-_") else "_" for c in session_id).strip("_")
    digest = hashlib.sha256(session_id.encode("utf-8", "surrogateescape")).hexdigest()
    return f"{(safe or 'session')[:80]}-{digest[:16]}.db"


def is_primary_db_name(name: str) -> bool:
    """A ``*.db`` name with no other ``.db`` in it (sidecars carry an interior ``.db.``)."""
    return len(name) > 3 and name.endswith(".db") and ".db" not in name[:-3]


def _uri(path: str, mode: str) -> str:
    return f"file:{quote(os.path.abspath(path), safe='/')}?mode={mode}"


def _prefix_upper(prefix: str) -> str | None:
    """The least string above every string that starts with ``prefix`` (code point = UTF-8 byte order)."""
    while prefix:
        last = ord(prefix[-1])
        if last < 0x10FFFF:
            return prefix[:-1] + chr(last + 1)
        prefix = prefix[:-1]
    return None


def _row(values: tuple, where: str) -> Row:
    session_id, attachment_id, uri, intent_at, committed_at, owner_kind, owner_id = values
    if not isinstance(attachment_id, str) or not is_valid_id(attachment_id):
        raise Corrupt(
            f"session database {where}: the row ({session_id!r}, {attachment_id!r}) has an "
            "attachment_id that is not a 64-character lowercase hex sha256; fix or delete that row"
        )
    if not isinstance(session_id, str) or not session_id:
        raise Corrupt(
            f"session database {where}: a row of attachment {attachment_id} has session_id "
            f"{session_id!r}, not a non-empty text; fix or delete that row"
        )
    for name, value in (("intent_at_ms", intent_at), ("committed_at_ms", committed_at)):
        if value is None and name == "committed_at_ms":
            continue
        if type(value) is not int or not 0 <= value <= MAX_EPOCH_MS:
            raise Corrupt(
                f"session database {where}: the row ({session_id!r}, {attachment_id}) has {name} "
                f"{value!r}, not a time in the years 1970-9999; fix or delete that row"
            )
    return Row(
        session_id,
        attachment_id,
        uri if isinstance(uri, str) else canonical_uri(attachment_id),
        intent_at,
        committed_at,
        owner_kind,
        owner_id,
    )


def _vanished(path: str) -> bool:
    """Whether a database listed a moment ago is gone: lash deleted its
    session, and its rows with it (not a database that cannot be read)."""
    return not os.path.lexists(path)


def _sorted(rows: Iterable[Row]) -> list[Row]:
    return sorted(rows, key=lambda r: (r.attachment_id, r.session_id))


class LashSqliteManifest(ManifestBackend):
    """``ManifestBackend`` on the ``attachment_manifest`` tables of lash's session databases."""

    # A sweep holds a lock file that lash's writers do not take: it re-checks
    # each candidate before and after deleting it (lashctl.sweep).
    kind = LASH_SQLITE
    blocks_writers = False

    def __init__(
        self,
        location: str,
        lock_timeout: float = 30.0,
        process_registry: str | None = None,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        self.warn = warn
        directory = location[len(PREFIX) :] if is_lash_sqlite(location) else location
        if not directory:
            raise UsageError(f"--manifest {PREFIX} names no directory: give {PREFIX}/path/to/sessions")
        if "\0" in directory:
            raise UsageError(f"--manifest {PREFIX}: the directory name holds a NUL byte")
        if not math.isfinite(lock_timeout) or lock_timeout < 0:
            raise ValueError(f"lock timeout {lock_timeout} is not a finite, non-negative number of seconds")
        self.directory = directory
        self.name = PREFIX + directory
        self.lock_timeout = lock_timeout
        # lash's SQLite process registry file; None: process owners are never
        # proven dead, as in a lash whose host wired no registry.
        self.process_registry = process_registry
        # Databases whose schema was found to be lash's, by (device, inode): a
        # sweep's re-checks open every database again and need not ask again
        # (lash replaces a database of another version, it never alters one).
        self._checked: dict[str, tuple[tuple[int, int], set[str]]] = {}

    def __repr__(self) -> str:
        return f"LashSqliteManifest({self.name!r})"

    # -- files and errors ------------------------------------------------------------
    def _fail(self, exc: sqlite3.Error, path: str) -> LashctlError:
        text = " ".join(str(exc).split()) or type(exc).__name__
        low = text.lower()
        if "locked" in low or "busy" in low:
            return LockTimeout(
                f"session database {path} stayed locked for {self.lock_timeout:g}s "
                "(a lash writer holds it); retry later"
            )
        if "readonly" in low or "read-only" in low:
            return Denied(f"session database {path} cannot be written: {text}")
        return Corrupt(f"session database {path} could not be opened or read: {text}")

    @contextmanager
    def _errors(self, path: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise self._fail(exc, path) from exc

    def _connect(self, path: str, mode: str) -> sqlite3.Connection:
        with self._errors(path):
            return sqlite3.connect(
                _uri(path, mode), uri=True, timeout=self.lock_timeout, isolation_level=None, check_same_thread=False
            )

    def _check_directory(self) -> None:
        try:
            st = os.stat(self.directory)
        except FileNotFoundError:
            raise UsageError(
                f"manifest {self.name}: sessions directory {self.directory} does not exist (check --manifest)"
            ) from None
        except OSError as exc:
            raise StoreIOError.wrap("read", self.directory, exc) from exc
        import stat

        if not stat.S_ISDIR(st.st_mode):
            raise UsageError(
                f"manifest {self.name}: {self.directory} is not a directory (name lash's sessions directory)"
            )

    def primaries(self) -> list[str]:
        """The primary session databases, by name."""
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            self._check_directory()
            raise
        except OSError as exc:
            raise StoreIOError.wrap("list", self.directory, exc) from exc
        out = []
        for name in names:
            try:
                name.encode("utf-8")
            except UnicodeEncodeError:
                continue  # not UTF-8: lash skips it too
            if is_primary_db_name(name):
                out.append(os.path.join(self.directory, name))
        return sorted(out)

    def known_schema(self, conn: sqlite3.Connection, schema: str, path: str) -> set[str] | None:
        """``check_schema``, asked once per database file."""
        try:
            st = os.stat(path)
        except OSError:
            return self.check_schema(conn, schema, path)  # opening it said why, or will
        identity = (st.st_dev, st.st_ino)
        known = self._checked.get(path)
        if known is not None and known[0] == identity:
            return known[1]
        tables = self.check_schema(conn, schema, path)
        if tables is not None:
            self._checked[path] = (identity, tables)
        return tables

    def check_schema(self, conn: sqlite3.Connection, schema: str, path: str) -> set[str] | None:
        """The database's tables once its schema is lash's; None for a database
        lash has not initialised (no rows). Corrupt otherwise."""
        version = conn.execute(f"PRAGMA {schema}.user_version").fetchone()[0]
        tables = {n for (n,) in conn.execute(f"SELECT name FROM {schema}.sqlite_master WHERE type = 'table'")}
        if version == 0 and not tables:
            return None
        if version not in SUPPORTED_SCHEMA_VERSIONS:
            supported = ", ".join(str(v) for v in SUPPORTED_SCHEMA_VERSIONS)
            raise Corrupt(
                f"session database {path}: lash schema version {version} (PRAGMA user_version) is not "
                f"one this lashctl was built for (it supports {supported}), and its rows may mean "
                "something else"
            )
        if TABLE not in tables:
            raise Corrupt(f"session database {path} has no table {TABLE}: it is not a lash session database")
        columns = conn.execute(f"PRAGMA {schema}.table_info({TABLE})").fetchall()
        names = {c[1] for c in columns}
        key = tuple(c[1] for c in sorted((c for c in columns if c[5]), key=lambda c: c[5]))
        problems = [f"no column {c}" for c in EXPECTED_COLUMNS if c not in names]
        if sorted(key) != sorted(EXPECTED_PRIMARY_KEY):
            problems.append(f"primary key is ({', '.join(key)}), expected ({', '.join(EXPECTED_PRIMARY_KEY)})")
        if problems:
            raise Corrupt(
                f"session database {path}: table {TABLE} is not lash's attachment manifest: {'; '.join(problems)}"
            )
        return tables

    @contextmanager
    def reader(self, path: str) -> Iterator[tuple[sqlite3.Connection, set[str]] | None]:
        """A read-only connection to one session database and its tables (None: not initialised)."""
        conn = self._connect(path, "ro")
        try:
            with self._errors(path):
                conn.execute("BEGIN")
                tables = self.known_schema(conn, "main", path)
            yield (conn, tables) if tables is not None else None
        finally:
            conn.close()

    def check_registry(self) -> None:
        """UsageError unless ``--process-registry`` names a file holding lash's
        ``processes`` table; Corrupt for a registry version lashctl does not support."""
        path = self.process_registry
        if path is None:
            return
        if not os.path.isfile(path):
            raise UsageError(f"--process-registry: {path} is not a file (name lash's SQLite process registry)")
        conn = sqlite3.connect(_uri(path, "ro"), uri=True, timeout=self.lock_timeout, isolation_level=None)
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            has = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (PROCESSES,)).fetchone()
        except sqlite3.Error as exc:
            raise UsageError(
                f"--process-registry: {path} cannot be read as lash's SQLite process registry: "
                f"{' '.join(str(exc).split())}"
            ) from exc
        finally:
            conn.close()
        if has is None:
            raise UsageError(
                f"--process-registry: {path} has no table {PROCESSES}: it is not lash's SQLite process registry"
            )
        if version not in SUPPORTED_PROCESS_SCHEMA_VERSIONS:
            raise Corrupt(
                f"--process-registry: {path}: lash process registry schema version {version} is not one "
                f"this lashctl was built for (it supports "
                f"{', '.join(str(v) for v in SUPPORTED_PROCESS_SCHEMA_VERSIONS)})"
            )

    def registered(self, process_ids: list[str]) -> set[str]:
        """Which of these processes have a row in the registry (read now, read-only)."""
        path = self.process_registry
        found: set[str] = set()
        conn = sqlite3.connect(_uri(path, "ro"), uri=True, timeout=self.lock_timeout, isolation_level=None)
        try:
            for start in range(0, len(process_ids), _IN_BATCH):
                chunk = process_ids[start : start + _IN_BATCH]
                marks = ", ".join("?" * len(chunk))
                found.update(
                    p
                    for (p,) in conn.execute(f"SELECT process_id FROM {PROCESSES} WHERE process_id IN ({marks})", chunk)
                )
        except sqlite3.Error as exc:
            raise Corrupt(f"--process-registry: {path} could not be read: {' '.join(str(exc).split())}") from exc
        finally:
            conn.close()
        return found

    def check_databases(self) -> "DatabaseCheck":
        """Read every primary database (``manifest check``): what it holds and
        every problem found, not only the first (a sweep stops at the first)."""
        self._check_directory()
        report = DatabaseCheck(self.directory)
        report.skipped = sum(
            1
            for name in os.listdir(self.directory)
            if name.endswith((".db", ".db-wal", ".db-shm")) and not is_primary_db_name(name)
        )
        for path in self.primaries():
            report.databases += 1
            try:
                with self.reader(path) as opened:
                    if opened is None:
                        report.uninitialised += 1
                        continue
                    with self._errors(path):
                        for values in opened[0].execute(f"SELECT {_COLS} FROM {TABLE}"):
                            try:
                                row = _row(values, path)
                            except Corrupt as exc:
                                report.problems.append(exc.message)
                                continue
                            report.rows += 1
                            report.rows_committed += row.committed
            except (Corrupt, LockTimeout) as exc:
                if _vanished(path):
                    report.databases -= 1  # lash deleted the session meanwhile
                    continue
                report.problems.append(exc.message)
        return report

    # -- the backend ---------------------------------------------------------------
    def exists(self) -> bool:
        return os.path.isdir(self.directory)

    def identity(self) -> str:
        return PREFIX + os.path.realpath(self.directory)

    def check_writable(self) -> None:
        self._check_directory()
        self.check_registry()

    def litter(self) -> list:
        """lashctl leaves nothing behind in a sessions directory but its lock file."""
        return []

    def remove_litter(self, found) -> None:
        raise ValueError("lash's session databases have no litter")

    @contextmanager
    def reading(self, tolerant: bool = False) -> Iterator["LashSqliteView"]:
        self.check_writable()
        view = LashSqliteView(self, "read", tolerant=tolerant)
        try:
            view.snapshot()
            yield view
        finally:
            view.close()

    @contextmanager
    def writing(self) -> Iterator["LashSqliteView"]:
        self.check_writable()
        view = LashSqliteView(self, "write")
        try:
            yield view
        except BaseException:
            view.close(commit=False)
            raise
        view.close(commit=True)

    @contextmanager
    def sweeping(self) -> Iterator["LashSqliteView"]:
        self.check_writable()
        with self._sweep_lock():
            view = LashSqliteView(self, "sweep")
            try:
                view.snapshot()  # every session database read before anything changes (lash's GC aborts too)
                yield view
            finally:
                view.close()

    @contextmanager
    def _sweep_lock(self) -> Iterator[None]:
        path = os.path.join(self.directory, SWEEP_LOCK)
        fd = open_lock_file(path)
        try:
            flock_within(
                fd,
                path,
                self.lock_timeout,
                action=f"take the sweep lock {path}",
                holder="another sweep",
                warn=self.warn,
            )
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


class DatabaseCheck:
    """What ``check_databases`` found in a sessions directory."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.databases = 0  # primary session databases
        self.uninitialised = 0  # of which lash has not created the tables yet
        self.skipped = 0  # sidecar databases and WAL files, which lash skips too
        self.rows = 0
        self.rows_committed = 0
        self.problems: list[str] = []


class Snapshot:
    """Every primary database's rows (and turn commits), copied into one
    temporary database, each row with the index of the database it came from."""

    def __init__(self, backend: LashSqliteManifest) -> None:
        self.paths = backend.primaries()
        self.conn = sqlite3.connect("file:", uri=True, isolation_level=None, check_same_thread=False)
        self.conn.executescript(
            f"CREATE TABLE rows ({_COLS}, db INTEGER);CREATE TABLE turns (session_id, turn_id, committed_at_ms);"
        )
        try:
            for index, path in enumerate(self.paths):
                try:
                    self._load(backend, index, path)
                except Corrupt:
                    if not _vanished(path):
                        raise
        except BaseException:
            self.conn.close()
            raise
        self.conn.executescript(
            "CREATE INDEX rows_by_id ON rows (attachment_id, session_id);"
            "CREATE INDEX rows_uncommitted ON rows (intent_at_ms, attachment_id, session_id)"
            " WHERE committed_at_ms IS NULL;"
            "CREATE INDEX rows_by_session ON rows (session_id);"
            "CREATE INDEX turns_by_session ON turns (session_id, committed_at_ms);"
        )

    def _load(self, backend: LashSqliteManifest, index: int, path: str) -> None:
        conn = self.conn
        with backend._errors(path):
            conn.execute("ATTACH DATABASE ? AS s", (_uri(path, "ro"),))
            try:
                conn.execute("BEGIN")  # one read of the session database: its rows and turns agree
                tables = backend.known_schema(conn, "s", path)
                if tables is not None:
                    conn.execute(f"INSERT INTO rows SELECT {_COLS}, ? FROM s.{TABLE}", (index,))
                    if TURN_COMMITS in tables:
                        conn.execute(
                            f"INSERT INTO turns SELECT session_id, turn_id, committed_at_ms FROM s.{TURN_COMMITS}"
                        )
                conn.execute("COMMIT")
            finally:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                conn.execute("DETACH DATABASE s")

    def close(self) -> None:
        self.conn.close()


class LashSqliteView(ManifestWriter):
    """``ManifestView`` and ``ManifestWriter`` over the session databases.

    ``mode``: "read" (everything from one snapshot), "write" (a writer's
    transactions held per database until the block ends) or "sweep" (each
    append its own short transaction per database)."""

    def __init__(self, backend: LashSqliteManifest, mode: str, tolerant: bool = False) -> None:
        self.backend = backend
        self.mode = mode
        # A tolerant view (a listing) skips rows it cannot trust, keeping why here.
        self.tolerant = tolerant
        self.malformed: list[Corrupt] = []
        self._snapshot: Snapshot | None = None
        self._old: list[Snapshot] = []  # snapshots a stream may still read
        self._held: dict[str, sqlite3.Connection] = {}  # a writer's open transactions, by database
        self._dbs: dict[str, list[str]] = {}
        self._keep_cache: dict[tuple, str | None] = {}
        self._alive: dict[str, bool] = {}

    def close(self, commit: bool = False) -> None:
        try:
            for path in sorted(self._held):
                conn = self._held[path]
                if commit:
                    with self.backend._errors(path):
                        conn.execute("COMMIT")
                elif conn.in_transaction:
                    try:
                        conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass  # closing ends it too
        finally:
            for conn in self._held.values():
                conn.close()
            self._held.clear()
            for snap in [*self._old, *([self._snapshot] if self._snapshot else [])]:
                snap.close()
            self._old, self._snapshot = [], None

    # -- the snapshot ------------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        if self._snapshot is None:
            self._snapshot = Snapshot(self.backend)
        return self._snapshot

    def _stale(self) -> None:
        """After a writer's write: the next snapshot query copies the databases
        again (a stream already open goes on reading the old copy). A sweep
        keeps the snapshot it planned from: its re-checks read the live
        databases, and turn commits it has not seen only keep more rows."""
        if self._snapshot is not None and self.mode == "write":
            self._old.append(self._snapshot)
            self._snapshot = None

    def _trusted(self, values: tuple, where: str) -> Row | None:
        try:
            return _row(values, where)
        except Corrupt as exc:
            if not self.tolerant:
                raise
            self.malformed.append(exc)
            return None

    def _snap_rows(self, sql: str, params: tuple = ()) -> Iterator[Row]:
        """Rows of a query on the snapshot selecting ``_COLS, db``, streamed."""
        snap = self.snapshot()
        cur = snap.conn.execute(sql, params)
        try:
            while chunk := cur.fetchmany(_FETCH):
                for values in chunk:
                    row = self._trusted(values[:7], snap.paths[values[7]])
                    if row is not None:
                        yield row
        finally:
            cur.close()

    @staticmethod
    def _grouped(rows: Iterable[Row]) -> Iterator[list[Row]]:
        group: list[Row] = []
        for row in rows:
            if group and group[0].attachment_id != row.attachment_id:
                yield group
                group = []
            group.append(row)
        if group:
            yield group

    @staticmethod
    def _prefix_where(prefix: str) -> tuple[str, tuple]:
        if not prefix:
            return "", ()
        upper = _prefix_upper(prefix)
        if upper is None:
            return "WHERE attachment_id >= ?", (prefix,)
        return "WHERE attachment_id >= ? AND attachment_id < ?", (prefix, upper)

    # -- the live databases --------------------------------------------------------------
    @contextmanager
    def _live(self, path: str) -> Iterator[sqlite3.Connection | None]:
        """A connection to read one database now: the writer's own where it
        holds one (it sees its own writes), else a read-only one."""
        held = self._held.get(path)
        if held is not None:
            yield held
            return
        with self.backend.reader(path) as opened:
            yield opened[0] if opened is not None else None

    def _live_rows(self, paths: list[str], where: str, values: list, fixed: tuple = ()) -> list[Row]:
        """Rows ``WHERE <where> IN (values...)`` of these databases, read now."""
        out: list[Row] = []
        for path in paths:
            try:
                out += self._live_rows_of(path, where, values, fixed)
            except Corrupt:
                if not _vanished(path):
                    raise
        return out

    def _live_rows_of(self, path: str, where: str, values: list, fixed: tuple) -> list[Row]:
        out: list[Row] = []
        with self._live(path) as conn:
            if conn is None:
                return out
            with self.backend._errors(path):
                for start in range(0, len(values), _IN_BATCH):
                    chunk = values[start : start + _IN_BATCH]
                    marks = ", ".join("?" * len(chunk))
                    for found in conn.execute(
                        f"SELECT {_COLS} FROM {TABLE} WHERE {where} IN ({marks})", (*fixed, *chunk)
                    ):
                        row = self._trusted(found, path)
                        if row is not None:
                            out.append(row)
        return out

    def dbs_of(self, session: str) -> list[str]:
        """The databases holding a session: by lash's name rule, else those
        whose rows or ``session_meta`` name it; [] for none."""
        if session in self._dbs:
            return self._dbs[session]
        named = os.path.join(self.backend.directory, session_db_name(session))
        found = [named] if os.path.isfile(named) else []
        snap = self._snapshot
        if snap is not None:
            found += [
                snap.paths[i]
                for (i,) in snap.conn.execute("SELECT DISTINCT db FROM rows WHERE session_id = ?", (session,))
            ]
        if not found:  # a host's own name: its session_meta says whose it is
            found = [p for p in self.backend.primaries() if self._names_session(p, session)]
        self._dbs[session] = out = sorted(set(found), key=lambda p: (p != named, p))
        return out

    def _names_session(self, path: str, session: str) -> bool:
        with self._live(path) as conn:
            if conn is None:
                return False
            with self.backend._errors(path):
                tables = {n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
                if (
                    SESSION_META in tables
                    and conn.execute(
                        f"SELECT 1 FROM {SESSION_META} WHERE session_id = ? LIMIT 1", (session,)
                    ).fetchone()
                ):
                    return True
                return (
                    conn.execute(f"SELECT 1 FROM {TABLE} WHERE session_id = ? LIMIT 1", (session,)).fetchone()
                    is not None
                )

    def _required_dbs(self, session: str) -> list[str]:
        dbs = self.dbs_of(session)
        if not dbs:
            raise UsageError(
                f"session {session!r} has no session database in {self.backend.directory} (expected "
                f"{session_db_name(session)}); lashctl never creates one: let lash open the "
                "session first"
            )
        return dbs

    def _writer(self, path: str) -> sqlite3.Connection:
        """The writer's transaction on one database (taken on first use, held to the block's end)."""
        conn = self._held.get(path)
        if conn is None:
            conn = self.backend._connect(path, "rw")
            try:
                with self.backend._errors(path):
                    conn.execute("BEGIN IMMEDIATE")
                    tables = self.backend.check_schema(conn, "main", path)
                if tables is None:
                    raise UsageError(f"session database {path} is not initialised yet: let lash open the session first")
            except BaseException:
                conn.close()
                raise
            self._held[path] = conn
        return conn

    # -- ManifestView ----------------------------------------------------------------------
    def rows_for_keys(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], Row]:
        """The rows of these keys. A writer reads them inside its transaction on
        each session's database, held until the block ends: what it decides
        from them stays true (a sweep's forget waits for it)."""
        if not keys:
            return {}
        if self.mode == "read":
            wanted = set(keys)
            ids = sorted({k[1] for k in keys})
            return {r.key: r for rows in self.rows_for_ids(ids).values() for r in rows if r.key in wanted}
        out: dict[tuple[str, str], Row] = {}
        by_session: dict[str, list[str]] = {}
        for session, attachment_id in keys:
            by_session.setdefault(session, []).append(attachment_id)
        for session in sorted(by_session):
            dbs = self._required_dbs(session) if self.mode == "write" else self.dbs_of(session)
            for path in dbs:
                if self.mode == "write":
                    self._writer(path)
                ids = sorted(set(by_session[session]))
                for row in self._live_rows([path], "session_id = ? AND attachment_id", ids, (session,)):
                    out.setdefault(row.key, row)
        return out

    def rows_for_ids(self, attachment_ids: list[str]) -> dict[str, list[Row]]:
        """The rows of many ids: from the snapshot when reading, else from every
        session database now (a sweep's re-checks)."""
        out: dict[str, list[Row]] = {i: [] for i in attachment_ids}
        if not attachment_ids:
            return out
        ids = sorted(set(attachment_ids))
        if self.mode == "read":
            rows: list[Row] = []
            for start in range(0, len(ids), _IN_BATCH):
                chunk = ids[start : start + _IN_BATCH]
                marks = ", ".join("?" * len(chunk))
                rows += self._snap_rows(f"SELECT {_COLS}, db FROM rows WHERE attachment_id IN ({marks})", tuple(chunk))
        else:
            rows = self._live_rows(self.backend.primaries(), "attachment_id", ids)
        for row in _sorted(rows):
            out[row.attachment_id].append(row)
        return out

    def rows_for_id(self, attachment_id: str) -> list[Row]:
        return self.rows_for_ids([attachment_id])[attachment_id]

    def check_ids(self) -> None:
        """Corrupt if any row's id is not a valid one (upper case, padded, ...):
        such a row may name a blob that the id-equal queries cannot see. One
        query of the snapshot, asked by commands that delete named ids."""
        snap = self.snapshot()
        bad = snap.conn.execute(
            f"SELECT {_COLS}, db FROM rows WHERE NOT (typeof(attachment_id) = 'text'"
            " AND length(attachment_id) = 64 AND attachment_id NOT GLOB '*[^0-9a-f]*') LIMIT 1"
        ).fetchone()
        if bad is not None:
            _row(bad[:7], snap.paths[bad[7]])  # raises Corrupt naming the row and its database

    def ids_with_prefix(self, prefix: str) -> list[str]:
        where, params = self._prefix_where(prefix)
        snap = self.snapshot()
        found = [
            r[0]
            for r in snap.conn.execute(
                f"SELECT DISTINCT attachment_id FROM rows {where} ORDER BY attachment_id", params
            )
        ]
        for attachment_id in found:
            if not isinstance(attachment_id, str) or not is_valid_id(attachment_id):
                raise Corrupt(
                    f"manifest {self.backend.name}: attachment_id {attachment_id!r} is not a "
                    "64-character lowercase hex sha256; fix or delete its rows"
                )
        return found

    def uncommitted(self, cutoff_ms: int | None, session: str | None) -> Iterator[Row]:
        """Uncommitted rows with intent at or before the cutoff: oldest first, then by id, then session."""
        where, params = uncommitted_where(cutoff_ms, session, suffix="_ms")
        return self._snap_rows(
            f"SELECT {_COLS}, db FROM rows WHERE {where} ORDER BY intent_at_ms, attachment_id, session_id", params
        )

    def aged(self, cutoff_ms: int) -> Iterator[list[Row]]:
        """For each id with an uncommitted row at or before the cutoff, every row of it, in id order."""
        return self._grouped(
            self._snap_rows(
                f"SELECT {_COLS}, db FROM rows WHERE attachment_id IN (SELECT attachment_id FROM rows"
                " WHERE committed_at_ms IS NULL AND intent_at_ms <= ?) ORDER BY attachment_id, session_id",
                (cutoff_ms,),
            )
        )

    def rows_by_id(self, prefix: str = "") -> Iterator[list[Row]]:
        where, params = self._prefix_where(prefix)
        return self._grouped(
            self._snap_rows(f"SELECT {_COLS}, db FROM rows {where} ORDER BY attachment_id, session_id", params)
        )

    def row_count(self) -> int:
        return self.snapshot().conn.execute("SELECT count(*) FROM rows").fetchone()[0]

    # -- owners ------------------------------------------------------------------------
    def keep_reason(self, row: Row) -> str | None:
        """Why an aged uncommitted row must stay although no session committed it, or None.

        None for a row without an owner. A turn-owned row stays until another
        turn of its session committed after the row's intent; a process-owned
        row stays unless ``--process-registry`` named lash's registry file and
        the process has no row there.
        """
        if row.committed or row.owner_kind is None:
            return None
        key = (row.session_id, row.attachment_id, row.intent_at_epoch_ms, row.owner_kind, row.owner_id)
        if key not in self._keep_cache:
            if len(self._keep_cache) > 100_000:
                self._keep_cache.clear()
            self._keep_cache[key] = self._owner_reason(row)
        return self._keep_cache[key]

    def _owner_reason(self, row: Row) -> str | None:
        if row.owner_kind == "turn":
            dead = (
                self.snapshot()
                .conn.execute(
                    "SELECT 1 FROM turns WHERE session_id = ? AND turn_id <> ? AND committed_at_ms > ? LIMIT 1",
                    (row.session_id, row.owner_id, row.intent_at_epoch_ms),
                )
                .fetchone()
            )
            return (
                None
                if dead
                else (
                    f"owner turn {row.owner_id} not proven dead: no later commit of another "
                    f"turn of session {row.session_id}"
                )
            )
        if row.owner_kind != "process":
            return f"owner {row.owner_kind} {row.owner_id} is of an unknown kind"
        registry = self.backend.process_registry
        if registry is None:
            return (
                f"owned by process {row.owner_id} (lash keeps process-owned intents unless its "
                "process registry is named: --process-registry)"
            )
        if row.owner_id not in self._alive:
            self._alive[row.owner_id] = bool(self.backend.registered([row.owner_id]))
        if self._alive[row.owner_id]:
            return f"owner process {row.owner_id} is still registered in {registry}"
        return None

    # -- ManifestWriter --------------------------------------------------------------------
    def append(self, events: list[Event]) -> None:
        """Apply events, in order: per key the net effect (``fold.Effect``),
        written to its session's database; a writer's inside its held
        transaction, a sweep's in one short transaction per database.

        A guarded forget (a sweep's, with its cutoff) is a conditional
        delete: it ends the key's run of events, and what follows it starts
        a new run on whatever is left.
        """
        if self.mode == "read":
            raise RuntimeError("a reading view of lash's session databases takes no writes")
        if not events:
            return
        try:
            runs = effect_runs(events)
        except ValueError as exc:
            raise Corrupt(str(exc)) from None
        per_db: dict[str, list[tuple[str, tuple]]] = {}
        for session, aid in sorted(runs):
            for effect in runs[(session, aid)]:
                for statement, to_all in self._statements(session, aid, effect):
                    dbs = self.dbs_of(session) if to_all else self._required_dbs(session)[:1]
                    for path in dbs:
                        per_db.setdefault(path, []).append(statement)
        for path in sorted(per_db):  # one order: two lashctl writers never wait on each other in a cycle
            self._write(path, per_db[path])
        self._stale()

    @staticmethod
    def _statements(session: str, aid: str, effect: Effect | int) -> list[tuple[tuple[str, tuple], bool]]:
        """The statements of one effect, each with whether it goes to every
        database of the session (deletes, commits) or only to its own (inserts)."""
        if not isinstance(effect, Effect):
            return [((_SQL_DELETE_AGED, (session, aid, effect)), True)]
        row = effect.from_absent
        if effect.replaces:
            out = [((_SQL_DELETE, (session, aid)), True)]
            if row is not None:
                out.append(
                    (
                        (
                            _SQL_REPLACE,
                            (session, aid, row.canonical_uri, row.intent_at_epoch_ms, row.committed_at_epoch_ms),
                        ),
                        False,
                    )
                )
            return out
        if row is not None:
            return [
                (
                    (
                        _SQL_UPSERT,
                        (
                            session,
                            aid,
                            row.canonical_uri,
                            row.intent_at_epoch_ms,
                            row.committed_at_epoch_ms,
                            effect.refreshed_intent,
                            effect.commit_at,
                        ),
                    ),
                    False,
                )
            ]
        if effect.commit_at is not None:
            return [((_SQL_COMMIT, (effect.commit_at, session, aid)), True)]
        return []

    def _write(self, path: str, statements: list[tuple[str, tuple]]) -> None:
        if self.mode == "write":
            conn = self._writer(path)
            with self.backend._errors(path):
                for sql, params in statements:
                    conn.execute(sql, params)
            return
        conn = self.backend._connect(path, "rw")
        try:
            with self.backend._errors(path):
                conn.execute("BEGIN IMMEDIATE")
                if self.backend.check_schema(conn, "main", path) is None:
                    conn.execute("ROLLBACK")
                    return  # not initialised: it holds no row to forget
                for sql, params in statements:
                    conn.execute(sql, params)
                conn.execute("COMMIT")
        finally:
            conn.close()
