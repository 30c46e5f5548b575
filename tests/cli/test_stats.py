"""``stats``: its record in every output form."""

from __future__ import annotations

import json

from conftest import sha

from .helpers import DAY, assert_ok, commit_ev, drawn, intent, now_ms, tsv, write_manifest


def test_stats_record_whole(cli, store, put_blobs, monkeypatch):
    kept, orphan, loose = put_blobs({"k.bin": b"kept", "o.bin": b"orphan", "l.bin": b"loose!!"})
    now = now_ms()
    write_manifest(
        store,
        [
            intent(kept, "s", now - 2 * DAY),
            commit_ev(kept, "s", now - DAY),
            intent(orphan, "s", now - 2 * DAY),
            intent(sha(b"gone"), "s", now - 2 * DAY),
        ],
    )
    result = cli("stats", "--json")
    assert_ok(result)
    document = json.loads(result.stdout)
    assert document == {
        "blobs": 3,
        "blob_bytes": 17,
        "blobs_by_state": {"committed": 1, "uncommitted": 1, "unmanaged": 1},
        "bytes_by_state": {"committed": 4, "uncommitted": 6, "unmanaged": 7},
        "rows_committed": 1,
        "rows_uncommitted": 2,
        "committed_rows_missing_bytes": 0,
        "uncommitted_rows_missing_bytes": 1,
        "orphans_reclaimable": 1,
        "orphan_bytes_reclaimable": 6,
        "unmanaged_blobs": 1,
        "unmanaged_bytes": 7,
        "staging_files": 0,
        "staging_bytes": 0,
        "stray_files": 0,
        "orphan_sidecars": 0,
        "manifest_lines": document["manifest_lines"],
        "manifest_lines_after_compaction": document["manifest_lines_after_compaction"],
        "manifest_torn_tail": False,
        "series": document["series"],
    }
    day, session = document["series"]
    assert (day["by"], session["by"]) == ("day", "session")
    assert {k: sum(b[k] for b in day["buckets"]) for k in day["buckets"][0] if k != "key"} == {
        "blobs": 3,
        "bytes": 17,
        "committed_bytes": 4,
        "uncommitted_bytes": 6,
        "unmanaged_bytes": 7,
        "reclaimable_bytes": 6,
    }
    assert session["buckets"] == [
        {
            "key": "s",
            "blobs": 2,
            "bytes": 10,
            "committed_bytes": 4,
            "uncommitted_bytes": 6,
            "unmanaged_bytes": 0,
            "reclaimable_bytes": 6,
        }
    ]
    assert list(document) == [
        "blobs",
        "blob_bytes",
        "blobs_by_state",
        "bytes_by_state",
        "rows_committed",
        "rows_uncommitted",
        "committed_rows_missing_bytes",
        "uncommitted_rows_missing_bytes",
        "orphans_reclaimable",
        "orphan_bytes_reclaimable",
        "unmanaged_blobs",
        "unmanaged_bytes",
        "staging_files",
        "staging_bytes",
        "stray_files",
        "orphan_sidecars",
        "manifest_lines",
        "manifest_lines_after_compaction",
        "manifest_torn_tail",
        "series",
    ]
    lines, compacted = str(document["manifest_lines"]), str(document["manifest_lines_after_compaction"])
    rows = [
        ["blobs", "3", "17"],
        ["  committed", "1", "4"],
        ["  uncommitted", "1", "6"],
        ["  unmanaged", "1", "7"],
        ["rows committed", "1", "-"],
        ["rows uncommitted", "2", "-"],
        ["committed rows missing bytes", "0", "-"],
        ["uncommitted rows missing bytes", "1", "-"],
        ["orphans reclaimable now (24h grace)", "1", "6"],
        ["staging litter", "0", "0"],
        ["stray files", "0", "-"],
        ["sidecars without a blob", "0", "-"],
        ["manifest lines", lines, "-"],
        ["  after compaction", compacted, "-"],
    ]
    piped = cli("stats")
    assert tsv(piped) == rows
    result, tables = drawn(cli, monkeypatch, "stats")
    assert_ok(result)
    assert tables == [
        (
            [("what", "text", 0, 8, None), ("count", "count", 0, 8, None), ("bytes", "bytes", 0, 8, None)],
            [[w, int(c), None if b == "-" else int(b)] for w, c, b in rows],
        )
    ]
