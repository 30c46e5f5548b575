"""Compaction, and the state cache it leaves ready: the folded state a
compaction writes is stored as the new file's cache, so the next command
folds nothing again.
"""

from __future__ import annotations

import os
import sqlite3
from typing import TYPE_CHECKING

from lashctl.backends.manifests.jsonl import cache_store as store
from lashctl.backends.manifests.jsonl import cachedir
from lashctl.backends.manifests.jsonl.cachedir import index_path
from lashctl.backends.manifests.jsonl.log import ManifestState, Row

if TYPE_CHECKING:  # pragma: no cover
    from lashctl.backends.manifests.jsonl.log import Manifest


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
    path = index_path(manifest.path)
    try:
        st = os.stat(manifest.path)
        if st.st_size != len(data) or not data.endswith(b"\n"):
            return  # not the file just written: let the next refresh fold it
        under_lock = getattr(manifest, "_lock_fd", None) is not None
        conn = store.connect(path, manifest.path, under_lock, lambda _reason: None)
        try:
            _write(conn, st, rows, data, lines)
            cachedir.clear_journal(path)
        finally:
            try:
                conn.close()
            except sqlite3.Error:
                pass
    except (sqlite3.Error, OSError):
        pass  # the next command rebuilds it


def _write(conn: sqlite3.Connection, st: os.stat_result, rows: dict[tuple[str, str], Row], data: bytes,
           lines: int) -> None:
    """In one transaction: the rows, the indexes, and a meta describing ``data`` whole."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        meta = store.reset(conn, st)
        folded = {key: [row.attachment_id, row.session_id, row.canonical_uri, row.intent_at_epoch_ms,
                        row.committed_at_epoch_ms] for key, row in rows.items()}
        store.write_rows(conn, folded)
        for sql in store.INDEXES:
            conn.execute(sql)
        first = data[:data.index(b"\n") + 1]
        last = data[data.rindex(b"\n", 0, len(data) - 1) + 1:] if data.count(b"\n") > 1 else first
        meta.offset, meta.lines = len(data), lines
        meta.first_len, meta.first_sha = len(first), store.sha(first)
        meta.last_len, meta.last_sha = len(last), store.sha(last)
        store.write_meta(conn, meta)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
