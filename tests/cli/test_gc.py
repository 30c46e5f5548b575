"""``gc``: its record in every output form."""

from __future__ import annotations

import json
import os

from conftest import blob_path

from .helpers import DAY, OLD_MS, RUN_FIELDS, assert_ok, drawn, intent, now_ms, pin_mtime, tsv, write_manifest


def test_gc_record_whole(cli, store, put_blobs, monkeypatch):
    kept, loose, broken = put_blobs({"k.bin": b"kept", "l.bin": b"loose bytes", "b.bin": b"broken"})
    for attachment_id in (kept, loose, broken):
        pin_mtime(store, attachment_id)
    write_manifest(store, [intent(kept, "A", now_ms() - DAY)])
    litter = store / "tmp" / "put-abandoned.tmp"
    litter.parent.mkdir(parents=True, exist_ok=True)
    litter.write_bytes(b"half")
    os.utime(litter, ns=(OLD_MS * 1_000_000,) * 2)
    from lashctl.backends.blobs.localfs import BlobStore
    from lashctl.errors import StoreIOError

    original = BlobStore.delete

    def flaky_delete(self, attachment_id):
        if attachment_id == broken:
            raise StoreIOError("cannot delete it: Permission denied")
        return original(self, attachment_id)

    monkeypatch.setattr(BlobStore, "delete", flaky_delete)
    dry = cli("gc", "-n", "--json")
    assert_ok(dry)
    document = json.loads(dry.stdout)
    assert list(document) == RUN_FIELDS + [
        "dry_run",
        "cutoff_epoch_ms",
        "cutoff",
        "blobs_scanned",
        "blobs_deleted",
        "litter_deleted",
        "bytes_freed",
        "failures",
        "items",
    ]
    blobs = sorted([(loose, 11), (broken, 6)])
    expected = [
        {
            "path": str(blob_path(store, i)),
            "id": i,
            "kind": "blob",
            "action": "delete",
            "byte_len": n,
            "reason": "unreferenced: no manifest row",
            "error": None,
        }
        for i, n in blobs
    ]
    expected.append(
        {
            "path": str(litter),
            "id": None,
            "kind": "staging",
            "action": "delete",
            "byte_len": 4,
            "reason": document["items"][-1]["reason"],
            "error": None,
        }
    )
    assert document["items"] == expected
    assert (document["blobs_scanned"], document["blobs_deleted"], document["litter_deleted"]) == (3, 2, 1)

    piped = cli("gc", "-n")
    assert tsv(piped) == [[e["path"], e["kind"], e["action"], str(e["byte_len"]), e["reason"]] for e in expected]

    result, tables = drawn(cli, monkeypatch, "gc")
    assert result.exit_code == 5, result.stderr
    ((columns, rows),) = tables
    assert columns == [
        ("path", "path", 0, 20, str(store)),
        ("kind", "fixed", 0, 8, None),
        ("action", "fixed", 0, 8, None),
        ("size", "bytes", 2, 8, None),
        ("reason", "text", 1, 12, None),
    ]
    failed = {str(blob_path(store, broken)): "cannot delete it: Permission denied"}
    assert rows == [
        [
            e["path"],
            e["kind"],
            "failed" if e["path"] in failed else "delete",
            e["byte_len"],
            failed.get(e["path"], e["reason"]),
        ]
        for e in expected
    ]
    assert "lashctl: error: gc finished with 1 failure(s): " + str(blob_path(store, broken)) in result.stderr
