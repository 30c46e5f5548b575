"""The state cache's SQLite file (``<cache dir>/....idx``): its tables, its
``meta`` row, opening it, and writing folded rows in bulk.

What the rows mean and when they may be trusted is ``cache_sync``'s
business; the queries are ``cache_query``'s; ``cache.ManifestIndex`` puts
them together (see its module for the design).
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from operator import itemgetter
from pathlib import Path
from typing import Callable

from lashctl.backends.manifests.jsonl import cachedir
from lashctl.backends.manifests.jsonl.log import VERSION as MANIFEST_VERSION
from lashctl.backends.manifests.jsonl.log import Row
from lashctl.ids import canonical_uri

# Bump when the tables, the fold or the validation change: an index of
# another format is dropped and rebuilt.
FORMAT = f"lashctl-index/3 manifest/{MANIFEST_VERSION}"

# How long to wait for another process's transaction on the cache before
# answering from an in-memory fold instead. Under the manifest lock every other
# writer waits for us, so only a moment; a reader may wait a little longer.
_LOCKED_BUSY_TIMEOUT_S = 0.5
_BUSY_TIMEOUT_S = 5.0
_CACHE_KIB = 64 * 1024  # SQLite page cache, allocated only as used

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta ("
    " k INTEGER PRIMARY KEY CHECK (k = 0), format TEXT NOT NULL,"
    " dev TEXT NOT NULL, ino TEXT NOT NULL,"
    " offset INTEGER NOT NULL, lines INTEGER NOT NULL,"
    " size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, ctime_ns INTEGER NOT NULL,"
    " first_len INTEGER NOT NULL, first_sha BLOB, last_len INTEGER NOT NULL, last_sha BLOB)",
    "CREATE TABLE IF NOT EXISTS rows ("
    " session_id TEXT NOT NULL, attachment_id TEXT NOT NULL,"
    " canonical_uri TEXT,"  # NULL when it is "sha256:" + attachment_id
    " intent_at INTEGER NOT NULL, committed_at INTEGER,"
    # Keyed by id first: lookups by key, by id and by prefix, and every
    # id-ordered stream, read this one b-tree, with no second copy of the rows.
    " PRIMARY KEY (attachment_id, session_id)) WITHOUT ROWID",
)
INDEXES = (
    # list-uncommitted's order, covering: a scan of this index needs no sort
    # and no table lookups. Partial: committed rows (most of them) are not in it.
    "CREATE INDEX IF NOT EXISTS rows_uncommitted ON rows"
    " (intent_at, attachment_id, session_id, canonical_uri, committed_at) WHERE committed_at IS NULL",
)
DROP_INDEXES = ("DROP INDEX IF EXISTS rows_uncommitted",)
_META_COLS = "format, dev, ino, offset, lines, size, mtime_ns, ctime_ns, first_len, first_sha, last_len, last_sha"

SQL_DELETE = "DELETE FROM rows WHERE session_id = ? AND attachment_id = ?"
SQL_REPLACE = "INSERT OR REPLACE INTO rows VALUES (?, ?, ?, ?, ?)"
# A folded row (id, session, uri or NULL, intent, commit), in the table's column order of a build.
_SQL_INSERT_FOLDED = (
    "INSERT INTO rows (attachment_id, session_id, canonical_uri, intent_at, committed_at) VALUES (?, ?, ?, ?, ?)"
)
SQL_MERGE = (
    "INSERT INTO rows VALUES (?, ?, ?, ?, ?) ON CONFLICT (session_id, attachment_id) DO UPDATE"
    " SET intent_at = max(intent_at, coalesce(?, intent_at)), committed_at = ?"
    " WHERE committed_at IS NULL"
)
SQL_COMMIT = "UPDATE rows SET committed_at = ? WHERE session_id = ? AND attachment_id = ? AND committed_at IS NULL"
SELECT_ROW = "SELECT session_id, attachment_id, canonical_uri, intent_at, committed_at FROM rows"


def to_row(session_id: str, attachment_id: str, uri: str | None, intent_at: int, committed_at: int | None) -> Row:
    """A stored row as a ``Row`` (a NULL URI is the canonical one)."""
    return Row(session_id, attachment_id, canonical_uri(attachment_id) if uri is None else uri, intent_at, committed_at)


def stored_uri(attachment_id: str, uri: str) -> str | None:
    return None if uri == canonical_uri(attachment_id) else uri


def is_corruption(exc: sqlite3.DatabaseError) -> bool:
    """SQLITE_CORRUPT or SQLITE_NOTADB (any extended code): the file must go."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:
        return type(exc) is sqlite3.DatabaseError
    return code & 0xFF in (11, 26)


def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


class Meta:
    """The ``meta`` row: the manifest's stat at the last refresh and what was consumed of it."""

    __slots__ = (
        "format",
        "dev",
        "ino",
        "offset",
        "lines",
        "size",
        "mtime_ns",
        "ctime_ns",
        "first_len",
        "first_sha",
        "last_len",
        "last_sha",
    )

    def __init__(self, values: tuple) -> None:
        for name, value in zip(self.__slots__, values):
            setattr(self, name, value)

    def values(self) -> tuple:
        return tuple(getattr(self, name) for name in self.__slots__)

    def stat_key(self) -> cachedir.StatKey:
        """The manifest's stat when this meta was written, as ``cachedir.stat_key`` gives it."""
        return (int(self.dev), int(self.ino), self.size, self.mtime_ns, self.ctime_ns)

    def advance(self, offset: int, lines: int, first_len: int, first_sha: bytes | None, last_line: bytes) -> None:
        """Describe the log consumed up to ``offset`` (``lines`` lines, the last one ``last_line``)."""
        if offset == self.offset:
            return
        self.offset, self.lines = offset, lines
        self.first_len, self.first_sha = first_len, first_sha
        self.last_len, self.last_sha = len(last_line) + 1, sha(last_line + b"\n")


def connect(
    path: Path, manifest_path: Path, under_lock: bool, say_unusable: Callable[[str], None]
) -> sqlite3.Connection:
    """Open the .idx (WAL, autocommit), only in a private directory and never through a link."""
    try:
        # Only in private directories, never through a link (the path is predictable).
        cachedir.private_index_dir(path)
        cachedir.prepare_files(path)
        cachedir.remember_manifest(path, manifest_path)
        cachedir.prune(path)
    except cachedir.Unusable as exc:
        say_unusable(str(exc))
        raise sqlite3.OperationalError(str(exc)) from exc
    timeout = _LOCKED_BUSY_TIMEOUT_S if under_lock else _BUSY_TIMEOUT_S
    conn = sqlite3.connect(path, timeout=timeout, isolation_level=None)
    try:
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(f"PRAGMA cache_size=-{_CACHE_KIB}")
        conn.execute("PRAGMA journal_size_limit=67108864")
        if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise sqlite3.OperationalError(f"cannot use WAL journal ({mode})")
    except BaseException:
        conn.close()
        raise
    return conn


def read_meta(conn: sqlite3.Connection) -> Meta | None:
    """The stored meta, or None when there is none of this ``FORMAT``."""
    try:
        values = conn.execute(f"SELECT {_META_COLS} FROM meta WHERE k = 0").fetchone()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc) or "no such column" in str(exc):
            return None  # empty, or an older format: rebuilt
        raise
    if values is None or values[0] != FORMAT:
        return None
    return Meta(values)


def write_meta(conn: sqlite3.Connection, meta: Meta) -> None:
    conn.execute(f"INSERT OR REPLACE INTO meta (k, {_META_COLS}) VALUES (0, {','.join('?' * 12)})", meta.values())


def reset(conn: sqlite3.Connection, st: os.stat_result) -> Meta:
    """Empty tables, and a meta for a manifest with this stat of which nothing is consumed."""
    conn.execute("DROP TABLE IF EXISTS rows")
    conn.execute("DROP TABLE IF EXISTS meta")
    for sql in SCHEMA:
        conn.execute(sql)
    return Meta(
        (FORMAT, str(st.st_dev), str(st.st_ino), 0, 0, st.st_size, st.st_mtime_ns, st.st_ctime_ns, 0, None, 0, None)
    )


def write_folded(conn: sqlite3.Connection, rows: dict) -> None:
    """Insert rows folded by ``fast.fold_into`` (a canonical URI already
    None) into the empty table, sorted by id: the b-tree is appended to, by
    one prepared statement."""
    # By id alone: the strings are compared in place (a sort of key tuples or of
    # id + session strings costs twice as much), and the few rows of one id
    # in another session order only cost the b-tree a step back within a page.
    conn.executemany(_SQL_INSERT_FOLDED, sorted(rows.values(), key=itemgetter(0)))
    rows.clear()


def discard_file(path: Path) -> None:
    """Delete a .idx (and its journals) so it is rebuilt; quietly."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        try:
            os.unlink(str(path) + suffix)
        except OSError:
            pass
