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

Rooms. This module is the facade the rest of lashctl uses (``ManifestIndex``:
the .idx when it can, the in-memory fold when it cannot); ``cache_sync``
reads the log into the .idx and validates it, ``cache_query`` holds the
queries, ``cache_store`` the tables and the connection, ``compact`` the
compaction that leaves a ready cache.
"""

from __future__ import annotations

import os
import sqlite3
from typing import TYPE_CHECKING, Callable, Iterator

from lashctl.backends.blobs.localfs import NotARegularFile, open_regular
from lashctl.backends.manifests.jsonl import cache_query as query
from lashctl.backends.manifests.jsonl.cache_store import FORMAT, discard_file, is_corruption  # noqa: F401  (FORMAT: part of this module's API)
from lashctl.backends.manifests.jsonl.cache_sync import LogSync
from lashctl.backends.manifests.jsonl.cachedir import ENV_CACHE_DIR, index_path  # noqa: F401  (part of this module's API)
from lashctl.backends.manifests.jsonl.compact import compact, store_compacted  # noqa: F401  (part of this module's API)
from lashctl.backends.manifests.jsonl.log import ManifestState, Row
from lashctl.errors import Corrupt, StoreIOError

if TYPE_CHECKING:  # pragma: no cover
    from lashctl.backends.manifests.jsonl.log import Manifest


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
        under_lock = getattr(manifest, "_lock_fd", None) is not None
        self._sync = LogSync(manifest, self.path, under_lock, self._say_unusable)
        self._memory: ManifestState | None = None  # fallback: the in-memory fold
        self._fallback = False
        self._empty = True  # the manifest does not exist (or refresh not run yet)
        self._refreshed = False  # a query before any refresh() refreshes first

    # -- lifecycle ---------------------------------------------------------------
    def close(self) -> None:
        self._sync.close()
        self._memory = None

    def __enter__(self) -> "ManifestIndex":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def using_fallback(self) -> bool:
        """True when answers come from an in-memory fold, not the .idx."""
        return self._fallback

    @property
    def torn_tail(self) -> bool:
        """A torn final line was seen by the last refresh."""
        return self._sync.torn_tail

    def log_lines(self) -> int:
        """Complete lines of the log (header and blank lines included)."""
        return self._sync.lines

    def refresh(self) -> None:
        """Bring the index up to date with the manifest file; O(new bytes)."""
        self._refreshed = True
        self._sync.forget_tail()
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
        try:
            self._refresh_sqlite(fd)
        finally:
            os.close(fd)

    def _refresh_sqlite(self, fd: int) -> None:
        """``LogSync.refresh``, once more after deleting a corrupt .idx; else the in-memory fold."""
        for attempt in range(2):
            try:
                if not self._sync.refresh(fd):
                    self._empty = True  # removed meanwhile
                self._sync.trim_journal()
                return
            except OSError as exc:  # reading the manifest (the .idx is SQLite's business)
                raise StoreIOError.wrap("read", self.manifest.path, exc) from exc
            except sqlite3.DatabaseError as exc:
                if attempt or not is_corruption(exc):
                    break  # read-only, disk full, locked too long: not the file's fault
                # "file is not a database", "database disk image is malformed"
                self._discard_file()
        self._fall_back()

    # -- queries -----------------------------------------------------------------
    def _answer(
        self,
        from_idx: Callable[[sqlite3.Connection], object],
        from_memory: Callable[[ManifestState], object],
        empty: object,
    ):
        """From the .idx, or the in-memory fold when there is one or the .idx fails."""
        if not self._refreshed:
            self.refresh()
        if self._memory is not None:
            return from_memory(self._memory)
        if self._empty:
            return empty
        try:
            return from_idx(self._sync.conn)
        except sqlite3.DatabaseError as exc:
            self._query_failed(exc)
            return from_memory(self._memory)

    def rows_for_keys(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], Row]:
        """The rows for these (session_id, attachment_id) keys; absent keys are left out."""
        return self._answer(
            lambda conn: query.rows_for_keys(conn, keys, self._sync.overlay) if keys else {},
            lambda memory: {k: memory.rows[k] for k in keys if k in memory.rows},
            {},
        )

    def rows_for_id(self, attachment_id: str) -> list[Row]:
        """Every row of this attachment id (one per session), ordered by session id."""
        return self._answer(
            lambda conn: query.rows_for_id(conn, attachment_id, self._sync.overlay),
            lambda memory: sorted(memory.rows_for(attachment_id), key=lambda r: r.session_id),
            [],
        )

    def ids_with_prefix(self, prefix: str) -> list[str]:
        """Distinct attachment ids with a row, starting with ``prefix``, sorted."""
        return self._answer(
            lambda conn: query.ids_with_prefix(conn, prefix, self._sync.overlay),
            lambda memory: sorted(i for i in memory.attachment_ids() if i.startswith(prefix)),
            [],
        )

    def uncommitted(self, cutoff_ms: int | None, session: str | None) -> Iterator[Row]:
        """Uncommitted rows with intent at or before ``cutoff_ms`` (all if None),
        of ``session`` (all if None), oldest first: by intent time, id, session.

        Streams from a cursor; keep the index open until the iterator is done.
        """

        def resume(failure: sqlite3.DatabaseError) -> Iterator[Row]:
            # The .idx failed mid-stream: the rest comes from the in-memory fold.
            self._query_failed(failure)
            return self.uncommitted(cutoff_ms, session)

        return self._answer(
            lambda conn: query.stream_uncommitted(
                query.uncommitted_cursor(conn, cutoff_ms, session), self._sync.overlay, cutoff_ms, session, resume
            ),
            lambda memory: _uncommitted_in_memory(memory, cutoff_ms, session),
            iter(()),
        )

    def uncommitted_chunks(self, cutoff_ms: int | None, session: str | None) -> Iterator[list[tuple]] | None:
        """``uncommitted`` as raw rows ``(id, session, uri, intent_at)``, in
        chunks of 2,000 rows (a listing on a pipe renders them with
        ``lashctl.listing.rendered_uncommitted``).
        Returns None when the answer does not come from the .idx alone (the
        in-memory fallback, a valid unterminated final line): use ``uncommitted``.
        """
        if not self._refreshed:
            self.refresh()
        if self._memory is not None or self._sync.overlay or self._empty:
            return None if (self._memory is not None or self._sync.overlay) else iter(())
        try:
            cursor = query.rendered_cursor(self._sync.conn, cutoff_ms, session)
        except sqlite3.DatabaseError as exc:
            self._query_failed(exc)
            return None
        return query.stream_chunks(cursor)

    def aged(self, cutoff_ms: int) -> Iterator[list[Row]]:
        """For each id with an uncommitted row at or before ``cutoff_ms``, every
        row of that id (by session), in id order; streamed."""
        return self._grouped(*query.aged_sql(cutoff_ms), lambda memory: memory.aged(cutoff_ms))

    def rows_by_id(self, prefix: str = "") -> Iterator[list[Row]]:
        """Every row grouped by id (each group by session), in id order; streamed."""
        return self._grouped(*query.rows_by_id_sql(prefix), lambda memory: memory.rows_by_id(prefix), scan=not prefix)

    def row_count(self) -> int:
        if not self._refreshed:
            self.refresh()
        if self._memory is not None or self._sync.overlay:
            return self._memory_view().row_count()
        if self._empty:
            return 0
        try:
            return query.row_count(self._sync.conn)
        except sqlite3.DatabaseError as exc:
            self._query_failed(exc)
            return self.row_count()

    def _grouped(self, sql: str, params: tuple, from_memory, scan: bool = False) -> Iterator[list[Row]]:
        if not self._refreshed:
            self.refresh()
        if self._memory is not None or self._sync.overlay:
            yield from from_memory(self._memory_view())
            return
        if self._empty:
            return
        try:
            cursor = self._sync.conn.execute(sql, params)
        except sqlite3.DatabaseError as exc:
            self._query_failed(exc)
            yield from from_memory(self._memory_view())
            return
        yield from query.grouped(cursor, scan)

    def _memory_view(self):
        from lashctl.backends.manifests.jsonl.log import StateView

        if self._memory is None:  # a valid unterminated final line: rare, answered in memory
            self._memory = self.manifest.read_state()
        return StateView(self._memory)

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
        self._sync.close()
        discard_file(self.path)

    def _fall_back(self) -> None:
        self._sync.close()
        self._fallback = True
        self._refresh_memory()

    def _refresh_memory(self) -> None:
        self._sync.overlay = {}
        self._memory = None
        self._memory = self.manifest.read_state()

    def _query_failed(self, exc: sqlite3.DatabaseError) -> None:
        """A query found the .idx unreadable: answer from memory from now on.

        A file SQLite calls corrupt is deleted, so the next command rebuilds it.
        """
        if is_corruption(exc):
            self._discard_file()
        self._fall_back()


def _uncommitted_in_memory(memory: ManifestState, cutoff_ms: int | None, session: str | None) -> Iterator[Row]:
    rows = [
        r
        for r in memory.rows.values()
        if r.committed_at_epoch_ms is None
        and (cutoff_ms is None or r.intent_at_epoch_ms <= cutoff_ms)
        and (session is None or r.session_id == session)
    ]
    rows.sort(key=lambda r: (r.intent_at_epoch_ms, r.attachment_id, r.session_id))
    return iter(rows)
