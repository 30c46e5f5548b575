"""Compaction, and the state cache it leaves ready: the folded state a
compaction writes is stored as the new file's cache, so the next command
folds nothing again.

``compact_log`` (``manifest compact``) costs one read of the log, one write
of the compacted file and one insert of the state: the log is folded the way
a cache build folds it (``cache_sync.FastFold``), the compacted lines are
formatted straight from the folded rows (``log.encode_compacted``), and the
same rows, sorted, are the new cache.
"""

from __future__ import annotations

import os
import sqlite3
from typing import TYPE_CHECKING

from lashctl.backends.manifests.jsonl import cache_store as store
from lashctl.backends.manifests.jsonl import cachedir
from lashctl.backends.manifests.jsonl.cachedir import index_path
from lashctl.backends.manifests.jsonl.log import ManifestState, Row, encode_compacted, parse_line, parses, strip_bom

if TYPE_CHECKING:  # pragma: no cover
    from lashctl.backends.manifests.jsonl.log import Manifest


def compact(manifest: "Manifest", state: ManifestState) -> int:
    """``manifest.compact(state)`` (under its lock), then the state it wrote
    stored as the new file's cache: the next command folds nothing again."""
    return manifest.compact(state, written=lambda data, lines: store_compacted(manifest, state.rows, data, lines))


def compact_log(manifest: "Manifest") -> tuple[int, int, int]:
    """Under the manifest's lock: fold the log, rewrite it as its state and
    store that state as the new file's cache. Writes byte for byte what
    ``compact(manifest, manifest.read_state())`` writes, with the same
    warnings and errors (a torn final line is dropped, a valid unterminated
    one kept; a malformed line raises Corrupt naming it, file untouched).
    Returns the events read (as ``read_state().lines`` counts them), the
    lines written and the rows.
    """
    with manifest.locked():
        rows, events = fold_log(manifest)
        if rows is None:
            return 0, 0, 0  # no manifest
        data, lines = encode_compacted(rows.values())
        count = len(rows)
        manifest.replace_log(data, lines, written=lambda data, lines: _store(manifest, rows, data, lines))
        return events, lines, count


def fold_log(manifest: "Manifest") -> tuple[dict | None, int]:
    """The log folded as ``read_state`` folds it, in ``fast.fold_into``'s form
    (in ``ManifestState.rows`` order), and the number of events read; None
    when there is no manifest."""
    from lashctl.backends.manifests.jsonl.cache_sync import FastFold, _BadLine
    from lashctl.backends.manifests.jsonl.fast import from_event, fold_into

    fd = manifest.open_for_reading()
    if fd is None:
        return None, 0
    try:
        folded = FastFold(manifest.path)
        try:
            folded.run(fd, os.fstat(fd).st_size)
        except _BadLine as bad:
            raise bad.error from None
    finally:
        os.close(fd)
    # The unterminated final line, as Manifest.iter_events reads it.
    raw, lineno = folded.tail[0], folded.lineno + 1
    events = folded.events
    if raw.strip():
        if not parses(strip_bom(raw) if lineno == 1 else raw):
            manifest.warn(
                f"{manifest.path}:{lineno}: ignoring a torn final line "
                "(an append interrupted by a crash); the next write repairs it"
            )
        else:
            fold_into(folded.rows)([from_event(parse_line(raw, lineno, manifest.path))])
            events += 1
    return folded.rows, events


def store_compacted(manifest: "Manifest", rows: dict[tuple[str, str], Row], data: bytes, lines: int) -> None:
    """After ``manifest.compact`` wrote ``data`` (``lines`` lines) as the
    manifest, under its lock: store ``rows``, its folded state, as the
    manifest's cache (see ``_store``)."""
    _store(
        manifest,
        {
            (row.attachment_id, row.session_id): [
                row.attachment_id,
                row.session_id,
                store.stored_uri(row.attachment_id, row.canonical_uri),
                row.intent_at_epoch_ms,
                row.committed_at_epoch_ms,
            ]
            for row in rows.values()
        },
        data,
        lines,
    )


def _store(manifest: "Manifest", folded: dict, data: bytes, lines: int) -> None:
    """Store ``folded`` (rows in ``fast.fold_into``'s form), the state
    ``data`` holds, as the manifest's cache, validated as a refresh that had
    read the new file would be (its stat, offset, line count, first and last
    lines). Never fails the compaction: a cache that cannot be written is
    rebuilt later.
    """
    path = index_path(manifest.path)
    try:
        st = os.stat(manifest.path)
        if st.st_size != len(data) or not data.endswith(b"\n"):
            return  # not the file just written: let the next refresh fold it
        under_lock = getattr(manifest, "_lock_fd", None) is not None
        conn = store.connect(path, manifest.path, under_lock, lambda _reason: None)
        try:
            _write(conn, st, folded, data, lines)
            cachedir.clear_journal(path)
        finally:
            try:
                conn.close()
            except sqlite3.Error:
                pass
    except (sqlite3.Error, OSError):
        pass  # the next command rebuilds it


def _write(conn: sqlite3.Connection, st: os.stat_result, folded: dict, data: bytes, lines: int) -> None:
    """In one transaction: the rows, the indexes, and a meta describing ``data`` whole."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        meta = store.reset(conn, st)
        store.write_folded(conn, folded)
        for sql in store.INDEXES:
            conn.execute(sql)
        first = bytes(data[: data.index(b"\n") + 1])
        last = bytes(data[data.rindex(b"\n", 0, len(data) - 1) + 1 :]) if lines > 1 else first
        meta.offset, meta.lines = len(data), lines
        meta.first_len, meta.first_sha = len(first), store.sha(first)
        meta.last_len, meta.last_sha = len(last), store.sha(last)
        store.write_meta(conn, meta)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
