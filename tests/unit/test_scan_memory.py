"""Whole-store streams keep memory flat: the state cache's page cache is
kept small while a stream reads the whole table, and restored after."""

from __future__ import annotations

from pathlib import Path

from lashctl.backends.manifests.jsonl import cache_query, cache_store
from lashctl.backends.manifests.jsonl.cache import ManifestIndex
from lashctl.backends.manifests.jsonl.log import Manifest
from backend_helpers import intent_event


def _manifest(path: Path, ids: int) -> None:
    m = Manifest(path)
    with m.locked():
        m.append([intent_event(f"{n:064x}", "s", 1_000 + n) for n in range(ids)])


def _cache_kib(ix: ManifestIndex) -> int:
    return -ix._sync.conn.execute("PRAGMA cache_size").fetchone()[0]


def test_whole_table_stream_uses_a_small_page_cache(tmp_path: Path) -> None:
    _manifest(tmp_path / "manifest.jsonl", 3000)
    with ManifestIndex(Manifest(tmp_path / "manifest.jsonl")) as ix:
        ix.refresh()
        assert _cache_kib(ix) == cache_store._CACHE_KIB
        stream = ix.rows_by_id()
        first = next(stream)
        assert _cache_kib(ix) == cache_query.SCAN_CACHE_KIB
        assert first[0].attachment_id == f"{0:064x}"
        assert sum(1 for _ in stream) == 2999
        assert _cache_kib(ix) == cache_store._CACHE_KIB
        # A stream left half read gives the page cache back when it is closed.
        stream = ix.rows_by_id()
        next(stream)
        stream.close()
        assert _cache_kib(ix) == cache_store._CACHE_KIB
        # One id's rows (a prefix) are no scan: the cache stays as it is.
        assert [r.attachment_id for g in ix.rows_by_id(f"{5:064x}") for r in g] == [f"{5:064x}"]
        assert _cache_kib(ix) == cache_store._CACHE_KIB
