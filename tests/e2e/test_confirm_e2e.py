"""End to end: a sweep confirms its candidates from the log itself. When the
state cache disagrees with the log for a candidate (rows edited inside the
cache file), the sweep says so, decides from the log, and the cache is
rebuilt by the next command."""

from __future__ import annotations

import pytest

from test_cache_e2e import _age, _lie, lashctl, put
from test_e2e import assert_ok, blob_path

pytestmark = pytest.mark.e2e

DISAGREED = b"disagreed with the log"


def test_delete_warns_when_the_cache_hides_a_candidates_rows_and_the_log_refuses(tmp_path):
    store = tmp_path / "store"
    x = put(store, tmp_path, "x.txt", b"committed bytes")
    assert_ok(lashctl(store, "commit", "-s", "s1", x))
    _lie(store, "DELETE FROM rows WHERE attachment_id = ?", x)
    for args in (["delete", "--dry-run", x], ["delete", x]):
        refused = lashctl(store, *args)
        assert refused.returncode == 4, refused.stderr
        assert b"s1" in refused.stderr
        assert blob_path(store, x).is_file()
    # The first of them warned and dropped the cache; the rebuilt one agrees.
    _lie(store, "DELETE FROM rows WHERE attachment_id = ?", x)
    first = lashctl(store, "delete", "--dry-run", x)
    assert DISAGREED in first.stderr
    again = lashctl(store, "delete", "--dry-run", x)
    assert again.returncode == 4
    assert DISAGREED not in again.stderr


def test_reclaim_warns_when_the_cache_uncommits_a_candidate_and_the_log_keeps_it(tmp_path):
    store = tmp_path / "store"
    x = put(store, tmp_path, "x.txt", b"committed bytes")
    y = put(store, tmp_path, "y.txt", b"never committed")
    assert_ok(lashctl(store, "commit", "-s", "s1", x))
    _age(store)
    _lie(store, "UPDATE rows SET committed_at = NULL, intent_at = 1 WHERE attachment_id = ?", x)
    _lie(store, "UPDATE rows SET intent_at = 1 WHERE attachment_id = ?", y)
    swept = lashctl(store, "reclaim", "--force", "--older-than", "1m")
    assert_ok(swept)
    assert DISAGREED in swept.stderr
    assert blob_path(store, x).is_file()
    # y's aged row is in the cache only: the log's intent is recent, so y stays too.
    assert blob_path(store, y).is_file()
    shown = lashctl(store, "show", x)
    assert b"committed" in shown.stdout
