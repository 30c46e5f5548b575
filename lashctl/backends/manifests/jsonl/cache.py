"""A persistent, derived, rebuildable cache of the manifest's folded state.

The manifest (README, "The manifest") stays the only source of truth. ``ManifestIndex``
keeps its fold in SQLite in the user's cache directory (``index_path``; never
inside the store, so reading commands leave the store untouched), and on each
``refresh()`` reads only the bytes appended since the last one: a command on a
manifest of a million rows then costs a stat, two short reads and a few index
lookups instead of a fold of the whole log.

Validation. A ``meta`` row records the manifest's stat at the last refresh
(``st_dev``, ``st_ino``, size, ``st_mtime_ns``, ``st_ctime_ns``), the byte
offset consumed (complete ``\\n``-terminated lines only), the number of lines
consumed (for line numbers in errors), and the length and sha256 of the first
and of the last consumed line. The index is extended from the offset only when
the manifest's stat is the recorded one, or when lashctl's own journalled
appends lead from it to the current stat (``lashctl.backends.manifests.jsonl.cachedir``); any change
lashctl did not make itself (an edit in place, a ``touch``, another writer's
append, a compaction) makes it fold the manifest again from byte 0. The inode,
the size and the first and last consumed lines are still checked as a second
guard.

Lines are parsed with ``lashctl.backends.manifests.jsonl.log.parse_line`` (the same BOM, CRLF,
blank-line handling and validation as ``Manifest.iter_events``); a bad line
raises ``Corrupt`` naming ``<path>:<line>``. A final line without ``\\n`` is never
consumed: if it does not parse it is a torn tail (warned about, ignored); if it
is a valid event, it is applied to this process's view only (as
``read_state()`` does), on top of the stored state.

Storage. WAL journal with ``synchronous=NORMAL``: readers (``list-uncommitted``)
never block a refreshing writer or the other way round, and a power loss can
at worst lose the last refreshes, never leave a half-applied one (the meta row
is in the same transaction as the rows it describes). ``BEGIN IMMEDIATE``
serialises two processes refreshing at once; meta is re-read inside the
transaction. The cache must never fail a command, nor hold one up: if the
``.idx`` cannot be used (a directory others can write, a symlink, a read-only
directory, another process's transaction: waited on for at most 0.5 s under
the manifest lock, a few seconds otherwise), the index answers from an
in-memory fold (``Manifest.read_state()``) behind the same API; a file SQLite
reports as corrupt is deleted and rebuilt.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from typing import TYPE_CHECKING, Callable, Iterator

from lashctl.backends.manifests.jsonl import cachedir
from lashctl.backends.base import rendered_uncommitted, uncommitted_where
from lashctl.backends.manifests.jsonl.cachedir import ENV_CACHE_DIR, index_path  # noqa: F401  (part of this module's API)
from lashctl.errors import Corrupt, StoreIOError
from lashctl.fold import Effect, Event
from lashctl.ids import URI_SCHEME, canonical_uri
from lashctl.backends.manifests.jsonl.log import ManifestState, Row, _parses, _strip_bom, parse_line
from lashctl.backends.manifests.jsonl.log import VERSION as MANIFEST_VERSION
from lashctl.backends.blobs.localfs import NotARegularFile, open_regular

if TYPE_CHECKING:  # pragma: no cover
    from lashctl.backends.manifests.jsonl.log import Manifest

# Bump when the tables, the fold or the validation change: an index of
# another format is dropped and rebuilt.
FORMAT = f"lashctl-index/3 manifest/{MANIFEST_VERSION}"

_CHUNK = 8 * 1024 * 1024  # bytes read at a time
_BATCH_LINES = 10_000  # lines folded in Python before they are written (bounds memory)
# How long to wait for another process's transaction on the cache before
# answering from an in-memory fold instead. Under the manifest lock every other
# writer waits for us, so only a moment; a reader may wait a little longer.
_LOCKED_BUSY_TIMEOUT_S = 0.5
_BUSY_TIMEOUT_S = 5.0
_CACHE_KIB = 64 * 1024  # SQLite page cache, allocated only as used

_SCHEMA = (
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
_INDEXES = (
    # list-uncommitted's order, covering: a scan of this index needs no sort
    # and no table lookups. Partial: committed rows (most of them) are not in it.
    "CREATE INDEX IF NOT EXISTS rows_uncommitted ON rows"
    " (intent_at, attachment_id, session_id, canonical_uri, committed_at) WHERE committed_at IS NULL",
)
_DROP_INDEXES = ("DROP INDEX IF EXISTS rows_uncommitted",)
_META_COLS = ("format, dev, ino, offset, lines, size, mtime_ns, ctime_ns,"
              " first_len, first_sha, last_len, last_sha")

_SQL_DELETE = "DELETE FROM rows WHERE session_id = ? AND attachment_id = ?"
_SQL_REPLACE = "INSERT OR REPLACE INTO rows VALUES (?, ?, ?, ?, ?)"
# A folded row (id, session, uri, intent, commit); the URI is stored NULL when it is the canonical one.
_SQL_INSERT_FOLDED = ("INSERT OR REPLACE INTO rows (attachment_id, session_id, canonical_uri, intent_at, committed_at)"
                      f" VALUES (?1, ?2, nullif(?3, '{URI_SCHEME}' || ?1), ?4, ?5)")
_SQL_MERGE = (
    "INSERT INTO rows VALUES (?, ?, ?, ?, ?) ON CONFLICT (session_id, attachment_id) DO UPDATE"
    " SET intent_at = max(intent_at, coalesce(?, intent_at)), committed_at = ?"
    " WHERE committed_at IS NULL"
)
_SQL_COMMIT = (
    "UPDATE rows SET committed_at = ? WHERE session_id = ? AND attachment_id = ?"
    " AND committed_at IS NULL"
)
_SELECT_ROW = "SELECT session_id, attachment_id, canonical_uri, intent_at, committed_at FROM rows"

def _uncommitted_sql(columns: str, cutoff_ms: int | None, session: str | None) -> tuple[str, tuple]:
    """The query of uncommitted rows at or before a cutoff, of a session, in
    list-uncommitted's order: a scan of the covering partial index, in order
    (one session's rows filtered from it)."""
    where, params = uncommitted_where(cutoff_ms, session)
    return (f"SELECT {columns} FROM rows INDEXED BY rows_uncommitted WHERE {where}"
            " ORDER BY intent_at, attachment_id, session_id", params)


def _row(session_id: str, attachment_id: str, uri: str | None, intent_at: int, committed_at: int | None) -> Row:
    return Row(session_id, attachment_id, canonical_uri(attachment_id) if uri is None else uri, intent_at, committed_at)


def _stored_uri(attachment_id: str, uri: str) -> str | None:
    return None if uri == canonical_uri(attachment_id) else uri


def _is_corruption(exc: sqlite3.DatabaseError) -> bool:
    """SQLITE_CORRUPT or SQLITE_NOTADB (any extended code): the file must go."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:
        return type(exc) is sqlite3.DatabaseError
    return code & 0xFF in (11, 26)


def _sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _pread_exact(fd: int, length: int, offset: int) -> bytes:
    parts = []
    while length > 0:
        block = os.pread(fd, length, offset)
        if not block:
            break
        parts.append(block)
        length -= len(block)
        offset += len(block)
    return b"".join(parts)


class _Meta:
    __slots__ = ("format", "dev", "ino", "offset", "lines", "size", "mtime_ns", "ctime_ns",
                 "first_len", "first_sha", "last_len", "last_sha")

    def __init__(self, values: tuple) -> None:
        for name, value in zip(self.__slots__, values):
            setattr(self, name, value)

    def values(self) -> tuple:
        return tuple(getattr(self, name) for name in self.__slots__)

    def stat_key(self) -> cachedir.StatKey:
        """The manifest's stat when this meta was written, as ``cachedir.stat_key`` gives it."""
        return (int(self.dev), int(self.ino), self.size, self.mtime_ns, self.ctime_ns)


class _Batch:
    """The net effect of a run of events on the stored rows (``fold.Effect``
    per key), written with one statement per key."""

    __slots__ = ("pending",)

    def __init__(self) -> None:
        self.pending: dict[tuple[str, str], Effect] = {}

    def __len__(self) -> int:
        return len(self.pending)

    def add(self, event: dict) -> None:
        if event["op"] == "header":
            return
        change = Event.from_json(event)
        key = change.key
        effect = self.pending.get(key)
        if effect is None:
            effect = self.pending[key] = Effect(*key)
        effect.add(change)

    def write(self, conn: sqlite3.Connection) -> None:
        deletes, replaces, merges, commits = [], [], [], []
        for (session, aid), effect in self.pending.items():
            row = effect.from_absent
            if effect.replaces:
                if row is None:
                    deletes.append((session, aid))
                else:
                    replaces.append((session, aid, _stored_uri(aid, row.canonical_uri),
                                     row.intent_at_epoch_ms, row.committed_at_epoch_ms))
            elif row is not None:
                merges.append((session, aid, _stored_uri(aid, row.canonical_uri), row.intent_at_epoch_ms,
                               row.committed_at_epoch_ms, effect.refreshed_intent, effect.commit_at))
            elif effect.commit_at is not None:
                commits.append((effect.commit_at, session, aid))
        if deletes:
            conn.executemany(_SQL_DELETE, deletes)
        if replaces:
            conn.executemany(_SQL_REPLACE, replaces)
        if merges:
            conn.executemany(_SQL_MERGE, merges)
        if commits:
            conn.executemany(_SQL_COMMIT, commits)
        self.pending.clear()


def compact(manifest: "Manifest", state: ManifestState) -> int:
    """``manifest.compact(state)`` (under its lock), then the state it wrote
    stored as the new file's cache: the next command folds nothing again."""
    return manifest.compact(state, written=lambda data, lines: store_compacted(manifest, state.rows, data, lines))


def store_compacted(manifest: "Manifest", rows: dict[tuple[str, str], Row], data: bytes, lines: int) -> None:
    """After ``manifest.compact`` wrote ``data`` (``lines`` lines) as the
    manifest, under its lock: store ``rows``, its folded state, as the
    manifest's cache, validated as a refresh that had read the new file
    would be (its stat, offset, line count, first and last lines). Never
    fails the compaction: a cache that cannot be written is rebuilt later.
    """
    index = ManifestIndex(manifest)
    try:
        st = os.stat(manifest.path)
        if st.st_size != len(data) or not data.endswith(b"\n"):
            return  # not the file just written: let the next refresh fold it
        conn = index._connect()
        conn.execute("BEGIN IMMEDIATE")
        try:
            meta = index._reset(conn, st)
            folded = {key: [row.attachment_id, row.session_id, row.canonical_uri, row.intent_at_epoch_ms,
                            row.committed_at_epoch_ms] for key, row in rows.items()}
            index._write_rows(conn, folded)
            for sql in _INDEXES:
                conn.execute(sql)
            first = data[:data.index(b"\n") + 1]
            last = data[data.rindex(b"\n", 0, len(data) - 1) + 1:] if data.count(b"\n") > 1 else first
            meta.offset, meta.lines = len(data), lines
            meta.first_len, meta.first_sha = len(first), _sha(first)
            meta.last_len, meta.last_sha = len(last), _sha(last)
            conn.execute(f"INSERT OR REPLACE INTO meta (k, {_META_COLS}) VALUES (0, {','.join('?' * 12)})",
                         meta.values())
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        cachedir.clear_journal(index.path)
    except (sqlite3.Error, OSError):
        pass  # the next command rebuilds it
    finally:
        index.close()


class _BadLine(Exception):
    """A malformed line met by ``_build``: where it is, and the Corrupt to raise."""

    def __init__(self, error: Corrupt, lines: list[bytes], index_in_block: int, lineno: int,
                 data_offset: int) -> None:
        super().__init__(error.message)
        self.error, self.lines, self.index_in_block = error, lines, index_in_block
        self.lineno, self.data_offset = lineno, data_offset


class ManifestIndex:
    """The folded state of a manifest, cached in ``<manifest>.idx``.

    Call ``refresh()`` before reading (under the manifest lock when the answer
    must match the file exactly). ``rows_for_id`` returns rows ordered by
    session id; ``uncommitted`` streams, oldest intent first.
    """

    def __init__(self, manifest: "Manifest", note: Callable[[str], None] | None = None) -> None:
        self.manifest = manifest
        self.path = index_path(manifest.path)
        # Says why the cache is not used (a verbose-only message in the CLI).
        self._note = note
        # Under the manifest lock no other lashctl writes: wait on the cache only a moment.
        self._under_lock = getattr(manifest, "_lock_fd", None) is not None
        self._seen: cachedir.StatKey | None = None  # the manifest stat the stored meta describes
        self._conn: sqlite3.Connection | None = None
        self._memory: ManifestState | None = None  # fallback: the in-memory fold
        self._fallback = False
        self._empty = True  # the manifest does not exist (or refresh not run yet)
        # A valid event on a final line without "\n": applied to this view only.
        self._overlay: dict[tuple[str, str], Row | None] = {}
        self._refreshed = False  # a query before any refresh() refreshes first
        self.torn_tail = False  # a torn final line was seen by the last refresh
        self._lines = 0  # complete lines consumed by the last refresh

    # -- lifecycle ---------------------------------------------------------------
    def close(self) -> None:
        self._close_connection()
        self._memory = None

    def _close_connection(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except sqlite3.Error:
                pass
            self._conn = None

    def __enter__(self) -> "ManifestIndex":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def using_fallback(self) -> bool:
        """True when answers come from an in-memory fold, not the .idx."""
        return self._fallback

    def refresh(self) -> None:
        """Bring the index up to date with the manifest file; O(new bytes)."""
        self._refreshed = True
        self._overlay = {}
        self.torn_tail = False
        if self._fallback:
            self._refresh_memory()
            return
        try:
            fd = open_regular(self.manifest.path)  # a FIFO here must not hang the command
        except FileNotFoundError:
            self._empty = True
            return
        except NotARegularFile as exc:
            raise Corrupt(f"manifest {self.manifest.path} is {exc.strerror}, not a regular file") from exc
        except OSError:
            self._fall_back()
            return
        self._empty = False
        self._seen = None
        try:
            for attempt in range(2):
                try:
                    self._refresh_sqlite(fd)
                    self._trim_journal()
                    return
                except OSError as exc:  # reading the manifest (the .idx is SQLite's business)
                    raise StoreIOError.wrap("read", self.manifest.path, exc) from exc
                except sqlite3.DatabaseError as exc:
                    if attempt or not _is_corruption(exc):
                        break  # read-only, disk full, locked too long: not the file's fault
                    # "file is not a database", "database disk image is malformed"
                    self._discard_file()
            self._fall_back()
        finally:
            os.close(fd)

    def apply_appended(self, events: list[dict], new_size_hint: int | None = None) -> None:
        """After this process appended ``events``: catch up (reads only the new bytes)."""
        self.refresh()

    # -- queries -----------------------------------------------------------------
    def rows_for_keys(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], Row]:
        """The rows for these (session_id, attachment_id) keys; absent keys are left out."""
        if not self._refreshed:
            self.refresh()
        if self._memory is not None:
            rows = self._memory.rows
            return {k: rows[k] for k in keys if k in rows}
        if self._empty or not keys:
            return {}
        out: dict[tuple[str, str], Row] = {}
        try:
            conn = self._conn
            assert conn is not None
            sql = _SELECT_ROW + " WHERE session_id = ? AND attachment_id = ?"
            for key in keys:  # a primary-key lookup each (a few microseconds)
                found = conn.execute(sql, key).fetchone()
                if found is not None:
                    out[key] = _row(*found)
        except sqlite3.DatabaseError as exc:
            self._query_failed(exc)
            return self.rows_for_keys(keys)
        for key, row in self._overlay.items():
            if key in keys:
                if row is None:
                    out.pop(key, None)
                else:
                    out[key] = row
        return out

    def rows_for_id(self, attachment_id: str) -> list[Row]:
        """Every row of this attachment id (one per session), ordered by session id."""
        if not self._refreshed:
            self.refresh()
        if self._memory is not None:
            return sorted(self._memory.rows_for(attachment_id), key=lambda r: r.session_id)
        if self._empty:
            return []
        try:
            conn = self._conn
            assert conn is not None
            rows = [_row(*r) for r in conn.execute(
                _SELECT_ROW + " WHERE attachment_id = ? ORDER BY session_id", (attachment_id,))]
        except sqlite3.DatabaseError as exc:
            self._query_failed(exc)
            return self.rows_for_id(attachment_id)
        for (session, aid), row in self._overlay.items():
            if aid == attachment_id:
                rows = [r for r in rows if r.session_id != session]
                if row is not None:
                    rows.append(row)
                    rows.sort(key=lambda r: r.session_id)
        return rows

    def ids_with_prefix(self, prefix: str) -> list[str]:
        """Distinct attachment ids with a row, starting with ``prefix``, sorted."""
        if not self._refreshed:
            self.refresh()
        if self._memory is not None:
            return sorted(i for i in self._memory.attachment_ids() if i.startswith(prefix))
        if self._empty:
            return []
        try:
            conn = self._conn
            assert conn is not None
            if prefix:
                upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
                cursor = conn.execute(
                    "SELECT DISTINCT attachment_id FROM rows WHERE attachment_id >= ? AND attachment_id < ?"
                    " ORDER BY attachment_id", (prefix, upper))
            else:
                cursor = conn.execute("SELECT DISTINCT attachment_id FROM rows ORDER BY attachment_id")
            ids = [r[0] for r in cursor if r[0].startswith(prefix)]
        except sqlite3.DatabaseError as exc:
            self._query_failed(exc)
            return self.ids_with_prefix(prefix)
        for (_session, aid), row in self._overlay.items():
            if aid.startswith(prefix):
                present = bool(self.rows_for_id(aid))  # rows_for_id applies the overlay
                if present and aid not in ids:
                    ids.append(aid)
                    ids.sort()
                elif not present and aid in ids:
                    ids.remove(aid)
        return ids

    def uncommitted(self, cutoff_ms: int | None, session: str | None) -> Iterator[Row]:
        """Uncommitted rows with intent at or before ``cutoff_ms`` (all if None),
        of ``session`` (all if None), oldest first: by intent time, id, session.

        Streams from a cursor; keep the index open until the iterator is done.
        """
        if not self._refreshed:
            self.refresh()
        if self._memory is not None:
            rows = [
                r for r in self._memory.rows.values()
                if r.committed_at_epoch_ms is None
                and (cutoff_ms is None or r.intent_at_epoch_ms <= cutoff_ms)
                and (session is None or r.session_id == session)
            ]
            rows.sort(key=lambda r: (r.intent_at_epoch_ms, r.attachment_id, r.session_id))
            return iter(rows)
        if self._empty:
            return iter(())
        try:
            cursor = self._uncommitted_cursor(cutoff_ms, session)
        except sqlite3.DatabaseError as exc:
            self._query_failed(exc)
            return self.uncommitted(cutoff_ms, session)
        return self._stream_uncommitted(cursor, cutoff_ms, session)

    def uncommitted_rendered(self, cutoff_ms: int | None, session: str | None, now: int, form: str,
                             absent: Callable[[set[str]], set[str]] | None) -> Iterator[list] | None:
        """``uncommitted`` for listings on a pipe, in chunks of 2,000 rows,
        each row either written exactly as ``list-uncommitted`` prints it or
        left as ``(id, session, uri, intent_at)``: see
        ``backends.base.rendered_uncommitted``.
        Returns None when the answer does not come from the .idx alone (the
        in-memory fallback, a valid unterminated final line): use ``uncommitted``.
        """
        if not self._refreshed:
            self.refresh()
        if self._memory is not None or self._overlay or self._empty:
            return None if (self._memory is not None or self._overlay) else iter(())
        sql, params = _uncommitted_sql(
            f"attachment_id, session_id, coalesce(canonical_uri, '{URI_SCHEME}' || attachment_id), intent_at",
            cutoff_ms, session)
        try:
            cursor = self._conn.execute(sql, params)
        except sqlite3.DatabaseError as exc:
            self._query_failed(exc)
            return None
        return self._stream_rendered(cursor, form, now, absent)

    @staticmethod
    def _stream_rendered(cursor: sqlite3.Cursor, form: str, now: int,
                         absent: Callable[[set[str]], set[str]] | None) -> Iterator[list]:
        try:
            # One template (and its clock) over the whole listing, fetched 2,000 rows at a time.
            yield from rendered_uncommitted(iter(lambda: cursor.fetchmany(2000), []), form, now, absent)
        finally:
            try:
                cursor.close()
            except sqlite3.ProgrammingError:
                pass  # the view closed the database first (its command is failing): nothing to close

    def aged(self, cutoff_ms: int) -> Iterator[list[Row]]:
        """For each id with an uncommitted row at or before ``cutoff_ms``, every
        row of that id (by session), in id order; streamed."""
        return self._grouped(
            _SELECT_ROW + " WHERE attachment_id IN (SELECT attachment_id FROM rows INDEXED BY rows_uncommitted"
            " WHERE committed_at IS NULL AND intent_at <= ?) ORDER BY attachment_id, session_id", (cutoff_ms,),
            lambda memory: memory.aged(cutoff_ms))

    def rows_by_id(self, prefix: str = "") -> Iterator[list[Row]]:
        """Every row grouped by id (each group by session), in id order; streamed."""
        if prefix:
            upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
            sql, params = _SELECT_ROW + " WHERE attachment_id >= ? AND attachment_id < ? ORDER BY attachment_id, session_id", \
                (prefix, upper)
        else:
            sql, params = _SELECT_ROW + " ORDER BY attachment_id, session_id", ()
        return self._grouped(sql, params, lambda memory: memory.rows_by_id(prefix))

    def row_count(self) -> int:
        if not self._refreshed:
            self.refresh()
        if self._memory is not None or self._overlay:
            return self._memory_view().row_count()
        if self._empty:
            return 0
        try:
            return self._conn.execute("SELECT count(*) FROM rows").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            self._query_failed(exc)
            return self.row_count()

    def log_lines(self) -> int:
        """Complete lines of the log (header and blank lines included)."""
        return self._lines

    def _memory_view(self):
        from lashctl.backends.manifests.jsonl.log import StateView

        if self._memory is None:  # a valid unterminated final line: rare, answered in memory
            self._memory = self.manifest.read_state()
        return StateView(self._memory)

    def _grouped(self, sql: str, params: tuple, from_memory) -> Iterator[list[Row]]:
        if not self._refreshed:
            self.refresh()
        if self._memory is not None or self._overlay:
            yield from from_memory(self._memory_view())
            return
        if self._empty:
            return
        try:
            cursor = self._conn.execute(sql, params)
        except sqlite3.DatabaseError as exc:
            self._query_failed(exc)
            yield from from_memory(self._memory_view())
            return
        group: list[Row] = []
        try:
            while part := cursor.fetchmany(1000):
                for found in part:
                    row = _row(*found)
                    if group and group[0].attachment_id != row.attachment_id:
                        yield group
                        group = []
                    group.append(row)
        finally:
            cursor.close()
        if group:
            yield group

    # -- SQLite ------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            try:
                # Only in private directories, never through a link (the path is predictable).
                cachedir.private_index_dir(self.path)
                cachedir.prepare_files(self.path)
                cachedir.remember_manifest(self.path, self.manifest.path)
                cachedir.prune(self.path)
            except cachedir.Unusable as exc:
                self._say_unusable(str(exc))
                raise sqlite3.OperationalError(str(exc)) from exc
            timeout = _LOCKED_BUSY_TIMEOUT_S if self._under_lock else _BUSY_TIMEOUT_S
            conn = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
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
            self._conn = conn
        return self._conn

    def _read_meta(self, conn: sqlite3.Connection) -> _Meta | None:
        try:
            values = conn.execute(f"SELECT {_META_COLS} FROM meta WHERE k = 0").fetchone()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc) or "no such column" in str(exc):
                return None  # empty, or an older format: rebuilt
            raise
        if values is None or values[0] != FORMAT:
            return None
        return _Meta(values)

    def _reusable(self, meta: _Meta | None, fd: int, st: os.stat_result) -> bool:
        """May the stored state be extended, or must it be rebuilt from byte 0?

        Only when the manifest is as the stored meta saw it, or lashctl's own
        journalled appends took it from there to here (lashctl.backends.manifests.jsonl.cachedir): any
        other change, however it looks, is folded again from byte 0.
        """
        if meta is None or meta.dev != str(st.st_dev) or meta.ino != str(st.st_ino):
            return False
        if not cachedir.own_writes_lead(self.path, meta.stat_key(), cachedir.stat_key(st)):
            return False
        # Kept as a second guard: cheap, and they catch an edit within the same clock tick.
        if st.st_size < meta.offset:
            return False  # truncated below what was consumed
        if st.st_size == meta.size and st.st_mtime_ns != meta.mtime_ns:
            return False  # rewritten in place
        if meta.offset == 0:
            return True
        if meta.first_sha != _sha(_pread_exact(fd, meta.first_len, 0)):
            return False
        start = meta.offset - meta.last_len
        if start > 0:
            block = _pread_exact(fd, meta.last_len + 1, start - 1)
            return block[:1] == b"\n" and _sha(block[1:]) == meta.last_sha
        return _sha(_pread_exact(fd, meta.last_len, 0)) == meta.last_sha

    def _refresh_sqlite(self, fd: int) -> None:
        conn = self._connect()
        st = os.fstat(fd)
        meta = self._read_meta(conn)
        if self._reusable(meta, fd, st):
            assert meta is not None
            # Steady state: nothing to write unless a complete line follows the offset.
            self._lines = meta.lines
            tail = self._read_tail_if_no_newline(fd, meta.offset, st.st_size)
            if tail is not None:
                self._tail(conn, tail, meta.lines + 1)
                self._seen = meta.stat_key()
                return
        conn.execute("BEGIN IMMEDIATE")
        try:
            self._refresh_locked(conn)
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _read_tail_if_no_newline(self, fd: int, offset: int, size: int) -> bytes | None:
        """The bytes after ``offset`` if they hold no newline (no complete line to consume)."""
        if size <= offset:
            return b""
        data = _pread_exact(fd, size - offset, offset) if size - offset <= _CHUNK else None
        if data is None or b"\n" in data:
            return None
        return data

    def _refresh_locked(self, conn: sqlite3.Connection) -> None:
        """Inside BEGIN IMMEDIATE: catch up (or rebuild), commit, apply the tail."""
        # Reopen: another process may have indexed a newer inode (after a compaction)
        # than the descriptor this refresh started with.
        try:
            fd = open_regular(self.manifest.path)
        except FileNotFoundError:
            conn.execute("ROLLBACK")
            self._empty = True
            return
        except NotARegularFile as exc:
            conn.execute("ROLLBACK")
            raise Corrupt(f"manifest {self.manifest.path} is {exc.strerror}, not a regular file") from exc
        try:
            st = os.fstat(fd)
            meta = self._read_meta(conn)
            if not self._reusable(meta, fd, st):
                meta = self._reset(conn, st)
            assert meta is not None
            bulk = st.st_size - meta.offset > max(meta.offset, 16 * 1024 * 1024)
            if bulk:  # index once at the end: much faster than keeping indexes during a big load
                for sql in _DROP_INDEXES:
                    conn.execute(sql)
            error: Corrupt | None = None
            tail = b""
            consume = self._build if meta.offset == 0 else self._consume
            try:
                tail = consume(conn, fd, meta, st.st_size)
            except Corrupt as exc:
                error = exc  # keep what precedes the bad line; the next refresh stops there again
            for sql in _INDEXES:
                conn.execute(sql)
            meta.size, meta.mtime_ns, meta.ctime_ns = st.st_size, st.st_mtime_ns, st.st_ctime_ns
            conn.execute(f"INSERT OR REPLACE INTO meta (k, {_META_COLS}) VALUES (0, {','.join('?' * 12)})",
                         meta.values())
            conn.execute("COMMIT")
            self._seen = meta.stat_key()
            if error is not None:
                raise error
            self._tail(conn, tail, meta.lines + 1)
        finally:
            os.close(fd)

    def _reset(self, conn: sqlite3.Connection, st: os.stat_result) -> _Meta:
        conn.execute("DROP TABLE IF EXISTS rows")
        conn.execute("DROP TABLE IF EXISTS meta")
        for sql in _SCHEMA:
            conn.execute(sql)
        return _Meta((FORMAT, str(st.st_dev), str(st.st_ino), 0, 0, st.st_size, st.st_mtime_ns,
                      st.st_ctime_ns, 0, None, 0, None))

    def _consume(self, conn: sqlite3.Connection, fd: int, meta: _Meta, size: int) -> bytes:
        """Fold complete lines from ``meta.offset`` to ``size``; return the unterminated tail.

        Advances ``meta`` past each batch written, so on Corrupt it describes
        exactly the lines before the bad one.
        """
        path = self.manifest.path
        batch = _Batch()
        add, parse, limit = batch.add, parse_line, _BATCH_LINES
        lineno = meta.lines
        done_offset = meta.offset
        first_len, first_sha = meta.first_len, meta.first_sha
        last_line = b""
        tail: list[bytes] = []
        for data_offset, block in self._blocks(fd, meta.offset, size, tail):
            lines = block.split(b"\n")
            end = data_offset + len(block) + 1
            del block
            if lineno == 0:
                first_len, first_sha = len(lines[0]) + 1, _sha(lines[0] + b"\n")
            base = lineno
            for raw in lines:
                lineno += 1
                if (raw and raw[0] == 123) or raw.strip():  # 123: "{", the usual first byte
                    try:
                        add(parse(raw, lineno, path))
                    except Corrupt:
                        batch.write(conn)
                        good = lines[:lineno - base - 1]
                        if good:
                            done_offset = data_offset + sum(map(len, good)) + len(good)
                            last_line = good[-1]
                        self._advance(meta, done_offset, lineno - 1, first_len, first_sha, last_line)
                        raise
                if lineno % limit == 0:
                    batch.write(conn)
            done_offset = end
            last_line = lines[-1]
            del lines
        batch.write(conn)
        self._advance(meta, done_offset, lineno, first_len, first_sha, last_line)
        return tail[0]

    def _build(self, conn: sqlite3.Connection, fd: int, meta: _Meta, size: int) -> bytes:
        """``_consume`` from byte 0 into the empty table: the whole log folded in
        memory (``fold_rows``), then written once, in primary-key order.

        Blocks of lines in the form every writer of this format uses are
        decoded and validated in C (``_fast_events``); any other block is
        parsed line by line by ``parse_line``, which names a bad line exactly.
        """
        import gc

        from lashctl.fold import fold_rows

        path = self.manifest.path
        rows: dict = {}
        from lashctl.backends.manifests.jsonl.fast import KINDS, decode_block

        fold = fold_rows(rows, KINDS)
        lineno, done_offset = 0, 0
        first_len, first_sha = meta.first_len, meta.first_sha
        last_line = b""
        tail: list[bytes] = []
        gc_was_enabled = gc.isenabled()
        gc.disable()  # a million small containers, none of them cyclic: no collections while they grow
        try:
            for data_offset, block in self._blocks(fd, 0, size, tail):
                if lineno == 0:
                    first = block[:block.find(b"\n")] if b"\n" in block else block
                    first_len, first_sha = len(first) + 1, _sha(first + b"\n")
                count = block.count(b"\n") + 1
                # (a byte-order mark before line 1 is parse_line's business)
                bom = lineno == 0 and block.startswith(b"\xef\xbb\xbf")
                events = None if bom else decode_block(block, count)
                if events is not None:
                    fold(events)
                    lineno += count
                else:
                    lines = block.split(b"\n")
                    slow = []
                    for i, raw in enumerate(lines):
                        lineno += 1
                        if (raw and raw[0] == 123) or raw.strip():
                            try:
                                event = parse_line(raw, lineno, path)
                            except Corrupt as exc:
                                fold(slow)
                                raise _BadLine(exc, lines, i, lineno, data_offset) from None
                            if event["op"] != "header":
                                slow.append(Event.from_json(event))
                    fold(slow)
                    del lines
                done_offset = data_offset + len(block) + 1
                last_line = block[block.rfind(b"\n") + 1:]
                del block
        except _BadLine as bad:
            # Keep what precedes the bad line, as _consume does.
            good = bad.lines[:bad.index_in_block]
            if good:
                done_offset = bad.data_offset + sum(map(len, good)) + len(good)
                last_line = good[-1]
            self._write_rows(conn, rows)
            self._advance(meta, done_offset, bad.lineno - 1, first_len, first_sha, last_line)
            raise bad.error
        finally:
            if gc_was_enabled:
                gc.enable()
        self._write_rows(conn, rows)
        self._advance(meta, done_offset, lineno, first_len, first_sha, last_line)
        return tail[0]

    def _blocks(self, fd: int, pos: int, size: int, tail: list[bytes]) -> Iterator[tuple[int, bytes]]:
        """The log from ``pos`` to ``size`` as blocks of complete lines: per
        chunk read, ``(file offset, the lines without their last newline)``.
        The unterminated rest is left in ``tail``."""
        carry = b""  # an incomplete line carried into the next chunk
        while pos < size:
            try:
                chunk = os.pread(fd, min(_CHUNK, size - pos), pos)
            except OSError as exc:
                raise StoreIOError.wrap("read", self.manifest.path, exc) from exc
            if not chunk:
                break
            pos += len(chunk)
            data = carry + chunk if carry else chunk
            cut = data.rfind(b"\n")
            if cut < 0:
                carry = data
                continue
            carry = data[cut + 1:]
            block = data[:cut]
            del data
            yield pos - len(carry) - cut - 1, block
        tail.append(carry)

    @staticmethod
    def _write_rows(conn: sqlite3.Connection, rows: dict) -> None:
        """Insert rows folded by ``fold_rows`` into the empty table, in
        primary-key order (appends to the b-tree); SQLite drops a canonical URI."""
        # Keyed by one string, id (64 characters) then session: list.sort
        # compares strings in C, many times faster than lists element by element.
        conn.executemany(_SQL_INSERT_FOLDED, sorted(rows.values(), key=lambda row: row[0] + row[1]))
        rows.clear()

    @staticmethod
    def _advance(meta: _Meta, offset: int, lines: int, first_len: int, first_sha: bytes | None,
                 last_line: bytes) -> None:
        if offset == meta.offset:
            return
        meta.offset, meta.lines = offset, lines
        meta.first_len, meta.first_sha = first_len, first_sha
        meta.last_len, meta.last_sha = len(last_line) + 1, _sha(last_line + b"\n")

    def _tail(self, conn: sqlite3.Connection, raw: bytes, lineno: int) -> None:
        """A final line without "\\n", as ``iter_events`` treats it; never consumed."""
        self._overlay = {}
        self._lines = lineno - 1
        if not raw.strip():
            return
        if not _parses(_strip_bom(raw) if lineno == 1 else raw):
            self.torn_tail = True
            self.manifest.warn(
                f"{self.manifest.path}:{lineno}: ignoring a torn final line "
                "(an append interrupted by a crash); the next write repairs it"
            )
            return
        event = parse_line(raw, lineno, self.manifest.path)  # a valid event, or Corrupt
        if event["op"] == "header":
            return
        key = (event["session_id"], event["attachment_id"])
        found = conn.execute(_SELECT_ROW + " WHERE session_id = ? AND attachment_id = ?", key).fetchone()
        state = ManifestState()
        if found is not None:
            state.rows[key] = _row(*found)
        state.apply(event)
        self._overlay[key] = state.rows.get(key)

    def _uncommitted_cursor(self, cutoff_ms: int | None, session: str | None) -> sqlite3.Cursor:
        assert self._conn is not None
        return self._conn.execute(*_uncommitted_sql("session_id, attachment_id, canonical_uri, intent_at",
                                                    cutoff_ms, session))

    def _stream_uncommitted(self, cursor: sqlite3.Cursor, cutoff_ms: int | None,
                            session: str | None) -> Iterator[Row]:
        extra: Row | None = None
        skip: tuple[str, str] | None = None
        for key, row in self._overlay.items():  # at most one entry
            skip = key
            if (row is not None and row.committed_at_epoch_ms is None
                    and (cutoff_ms is None or row.intent_at_epoch_ms <= cutoff_ms)
                    and (session is None or row.session_id == session)):
                extra = row
        order = (extra.intent_at_epoch_ms, extra.attachment_id, extra.session_id) if extra else None
        last: tuple[int, str, str] | None = None  # sort key of the last row yielded
        prefix = URI_SCHEME  # inlined: this loop runs once per listed row
        try:
            while True:
                try:
                    part = cursor.fetchmany(1000)
                except sqlite3.DatabaseError as exc:
                    failure = exc
                    break
                if not part:
                    failure = None
                    break
                for s, aid, uri, at in part:
                    if skip is not None:
                        if (s, aid) == skip:
                            continue
                        if order is not None and (at, aid, s) > order:
                            yield extra  # type: ignore[misc]
                            order = None
                    yield Row(s, aid, prefix + aid if uri is None else uri, at, None)
                last = (at, aid, s)
        finally:
            try:
                cursor.close()
            except sqlite3.Error:
                pass
        if failure is None:
            if order is not None:
                yield extra  # type: ignore[misc]
            return
        # The .idx failed mid-stream: go on from the in-memory fold, after the last row given.
        self._query_failed(failure)
        for row in self.uncommitted(cutoff_ms, session):
            if last is None or (row.intent_at_epoch_ms, row.attachment_id, row.session_id) > last:
                yield row

    # -- the append journal --------------------------------------------------------
    def _trim_journal(self) -> None:
        """Empty the append journal once the stored meta describes the manifest as it is.

        Only under the manifest lock: no lashctl append can be journalled between
        the check and the truncation, so no entry a later refresh needs is lost.
        """
        if not self._under_lock or self._seen is None:
            return
        current = cachedir.stat_or_none(self.manifest.path)
        if current is not None and cachedir.stat_key(current) == self._seen:
            cachedir.clear_journal(self.path)

    # -- fallback ----------------------------------------------------------------
    def _say_unusable(self, reason: str) -> None:
        if self._note is not None:
            self._note(f"not using the state cache: {reason}; folding the manifest in memory")

    def discard(self) -> None:
        """Throw the cache away (it disagreed with the log): rebuilt on next use."""
        self._discard_file()
        self._fall_back()

    def _discard_file(self) -> None:
        """Delete a .idx SQLite calls corrupt (and its journals) so it is rebuilt."""
        self._close_connection()
        for suffix in ("", "-wal", "-shm", "-journal"):
            try:
                os.unlink(str(self.path) + suffix)
            except FileNotFoundError:
                pass
            except OSError:
                pass

    def _fall_back(self) -> None:
        self._close_connection()
        self._fallback = True
        self._refresh_memory()

    def _refresh_memory(self) -> None:
        self._overlay = {}
        self._memory = None
        self._memory = self.manifest.read_state()

    def _query_failed(self, exc: sqlite3.DatabaseError) -> None:
        """A query found the .idx unreadable: answer from memory from now on.

        A file SQLite calls corrupt is deleted, so the next command rebuilds it.
        """
        if _is_corruption(exc):
            self._discard_file()
        self._fall_back()
