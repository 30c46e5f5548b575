"""The state cache's queries: rows by key, by id and by prefix, the
uncommitted rows in list-uncommitted's order (as rows, or rendered in
chunks for a pipe), and id-grouped streams.

Each takes the open .idx and the ``overlay`` of ``LogSync`` (the effect of
a valid unterminated final line, applied on top of the stored rows) and
lets ``sqlite3.DatabaseError`` through: ``cache.ManifestIndex`` answers from
its in-memory fold then.
"""

from __future__ import annotations

import sqlite3
from typing import Callable, Iterable, Iterator

from lashctl.backends.base import uncommitted_where
from lashctl.backends.manifests.jsonl.cache_store import _CACHE_KIB, SELECT_ROW, to_row
from lashctl.backends.manifests.jsonl.log import Row
from lashctl.ids import URI_SCHEME

Overlay = dict[tuple[str, str], "Row | None"]


def uncommitted_sql(columns: str, cutoff_ms: int | None, session: str | None) -> tuple[str, tuple]:
    """The query of uncommitted rows at or before a cutoff, of a session, in
    list-uncommitted's order: a scan of the covering partial index, in order
    (one session's rows filtered from it)."""
    where, params = uncommitted_where(cutoff_ms, session)
    return (
        f"SELECT {columns} FROM rows INDEXED BY rows_uncommitted WHERE {where}"
        " ORDER BY intent_at, attachment_id, session_id",
        params,
    )


def _prefix_bounds(prefix: str) -> tuple[str, str]:
    return prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1)


def rows_for_keys(conn: sqlite3.Connection, keys: list[tuple[str, str]], overlay: Overlay) -> dict:
    out: dict[tuple[str, str], Row] = {}
    sql = SELECT_ROW + " WHERE session_id = ? AND attachment_id = ?"
    for key in keys:  # a primary-key lookup each (a few microseconds)
        found = conn.execute(sql, key).fetchone()
        if found is not None:
            out[key] = to_row(*found)
    for key, row in overlay.items():
        if key in keys:
            if row is None:
                out.pop(key, None)
            else:
                out[key] = row
    return out


def rows_for_id(conn: sqlite3.Connection, attachment_id: str, overlay: Overlay) -> list[Row]:
    rows = [
        to_row(*r) for r in conn.execute(SELECT_ROW + " WHERE attachment_id = ? ORDER BY session_id", (attachment_id,))
    ]
    for (session, aid), row in overlay.items():
        if aid == attachment_id:
            rows = [r for r in rows if r.session_id != session]
            if row is not None:
                rows.append(row)
                rows.sort(key=lambda r: r.session_id)
    return rows


def ids_with_prefix(conn: sqlite3.Connection, prefix: str, overlay: Overlay) -> list[str]:
    if prefix:
        cursor = conn.execute(
            "SELECT DISTINCT attachment_id FROM rows WHERE attachment_id >= ? AND attachment_id < ?"
            " ORDER BY attachment_id",
            _prefix_bounds(prefix),
        )
    else:
        cursor = conn.execute("SELECT DISTINCT attachment_id FROM rows ORDER BY attachment_id")
    ids = [r[0] for r in cursor if r[0].startswith(prefix)]
    for (_session, aid), row in overlay.items():
        if aid.startswith(prefix):
            present = bool(rows_for_id(conn, aid, overlay))  # rows_for_id applies the overlay
            if present and aid not in ids:
                ids.append(aid)
                ids.sort()
            elif not present and aid in ids:
                ids.remove(aid)
    return ids


def row_count(conn: sqlite3.Connection) -> int:
    return conn.execute("SELECT count(*) FROM rows").fetchone()[0]


# -- uncommitted rows ----------------------------------------------------------------
def uncommitted_cursor(conn: sqlite3.Connection, cutoff_ms: int | None, session: str | None) -> sqlite3.Cursor:
    return conn.execute(*uncommitted_sql("session_id, attachment_id, canonical_uri, intent_at", cutoff_ms, session))


def stream_uncommitted(
    cursor: sqlite3.Cursor,
    overlay: Overlay,
    cutoff_ms: int | None,
    session: str | None,
    resume: Callable[[sqlite3.DatabaseError], Iterable[Row]],
) -> Iterator[Row]:
    """The rows of ``uncommitted_cursor`` with the overlay merged in, in order.

    Should the .idx fail mid-stream, the rest comes from ``resume(error)``
    (every uncommitted row, in the same order), after the last row given.
    """
    extra: Row | None = None
    skip: tuple[str, str] | None = None
    for key, row in overlay.items():  # at most one entry
        skip = key
        if (
            row is not None
            and row.committed_at_epoch_ms is None
            and (cutoff_ms is None or row.intent_at_epoch_ms <= cutoff_ms)
            and (session is None or row.session_id == session)
        ):
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
    # The .idx failed mid-stream: go on after the last row given.
    for row in resume(failure):
        if last is None or (row.intent_at_epoch_ms, row.attachment_id, row.session_id) > last:
            yield row


def rendered_cursor(conn: sqlite3.Connection, cutoff_ms: int | None, session: str | None) -> sqlite3.Cursor:
    return conn.execute(
        *uncommitted_sql(
            f"attachment_id, session_id, coalesce(canonical_uri, '{URI_SCHEME}' || attachment_id), intent_at",
            cutoff_ms,
            session,
        )
    )


def stream_chunks(cursor: sqlite3.Cursor) -> Iterator[list[tuple]]:
    try:
        yield from iter(lambda: cursor.fetchmany(2000), [])
    finally:
        try:
            cursor.close()
        except sqlite3.ProgrammingError:
            pass  # the view closed the database first (its command is failing): nothing to close


# -- id-grouped streams ----------------------------------------------------------------
def aged_sql(cutoff_ms: int) -> tuple[str, tuple]:
    return (
        SELECT_ROW + " WHERE attachment_id IN (SELECT attachment_id FROM rows INDEXED BY rows_uncommitted"
        " WHERE committed_at IS NULL AND intent_at <= ?) ORDER BY attachment_id, session_id",
        (cutoff_ms,),
    )


def rows_by_id_sql(prefix: str) -> tuple[str, tuple]:
    if prefix:
        return (
            SELECT_ROW + " WHERE attachment_id >= ? AND attachment_id < ? ORDER BY attachment_id, session_id",
            _prefix_bounds(prefix),
        )
    return SELECT_ROW + " ORDER BY attachment_id, session_id", ()


# A stream of the whole table reads each page once: the page cache sized for
# a build would only fill (64 MiB at a million rows) with pages not read again.
SCAN_CACHE_KIB = 2 * 1024


def grouped(cursor: sqlite3.Cursor, scan: bool = False) -> Iterator[list[Row]]:
    """The cursor's rows (in id order) as one list per id; ``scan`` (a
    stream of the whole table) runs with a small page cache."""
    group: list[Row] = []
    conn = cursor.connection
    try:
        if scan:
            conn.execute(f"PRAGMA cache_size=-{SCAN_CACHE_KIB}")
        while part := cursor.fetchmany(1000):
            for found in part:
                row = to_row(*found)
                if group and group[0].attachment_id != row.attachment_id:
                    yield group
                    group = []
                group.append(row)
    finally:
        cursor.close()
        if scan:
            try:
                conn.execute(f"PRAGMA cache_size=-{_CACHE_KIB}")
            except sqlite3.Error:
                pass  # the view closed the database first: nothing to restore
    if group:
        yield group
