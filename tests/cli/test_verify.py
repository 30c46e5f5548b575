"""``verify``: findings, rechecks, files removed during the scan."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import blob_path, sha, sidecar_path

from .helpers import RUN_FIELDS, commit_ev, drawn, intent, now_ms, tsv, write_manifest


@pytest.mark.parametrize("command", ["verify", "stats", "gc"])
def test_a_file_a_writer_removes_during_the_scan_is_not_an_error(cli, store, put_blobs, monkeypatch, command):
    """verify and stats take no lock: a put's staging file or a sweep's
    sidecar that vanishes between the directory listing and its stat is
    simply gone, not an I/O error."""
    from lashctl.backends.blobs.localfs import BlobStore

    (orphan,) = put_blobs({"o.bin": b"orphan sidecar"})
    blob_path(store, orphan).unlink()  # its sidecar is left: an orphan the scan stats
    (store / "tmp").mkdir(exist_ok=True)
    (store / "tmp" / "put-1.part").write_bytes(b"staging")
    doomed = [store / "tmp" / "put-1.part", sidecar_path(store, orphan)]
    real = BlobStore._scan

    def scan_then_lose(fd, where):
        entries = real(fd, where)
        for path in doomed:
            if path.parent == Path(where) and path.exists():
                path.unlink()  # a writer beside the scan
        return entries

    monkeypatch.setattr(BlobStore, "_scan", staticmethod(scan_then_lose))
    result = cli(command, *(["--dry-run"] if command == "gc" else []))
    assert result.exit_code in (0, 4), result.stderr  # gc may refuse an empty manifest; never exit 1
    assert "No such file" not in result.stderr and "Traceback" not in result.stderr


def test_verify_names_an_orphan_sidecars_id(cli, store, put_blobs):
    (orphan,) = put_blobs({"o.bin": b"orphan sidecar"})
    blob_path(store, orphan).unlink()
    document = json.loads(cli("verify", "--json").stdout)
    assert [(f["kind"], f["id"]) for f in document["findings"]] == [("orphan-sidecar-file", orphan)]


def test_verify_record_whole(cli, store, put_blobs, monkeypatch):
    good, bare = put_blobs({"g.bin": b"good", "b.bin": b"bare"})
    sidecar_path(store, bare).unlink()
    stray = store / "sha256" / "zz"
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_bytes(b"stray")
    write_manifest(store, [intent(good, "s", now_ms()), commit_ev(good, "s", now_ms()), intent(bare, "s", now_ms())])
    result = cli("verify", "--json")
    assert result.exit_code in (0, 65)
    document = json.loads(result.stdout)
    assert list(document) == RUN_FIELDS + [
        "fix",
        "clean",
        "blobs_checked",
        "bytes_checked",
        "errors",
        "warnings",
        "repairs",
        "findings",
    ]
    findings = document["findings"]
    assert findings and all(
        sorted(f) == ["id", "kind", "message", "path", "repair", "severity", "status"] for f in findings
    )
    assert {f["status"] for f in findings} == {"open"}  # no --fix: nothing repaired
    assert {(f["path"], f["id"]) for f in findings} >= {(str(sidecar_path(store, bare)), bare)}
    piped = cli("verify")
    assert tsv(piped) == [
        [f["severity"], f["kind"], f["path"] or "-", f["message"], f["repair"] or "-"] for f in findings
    ]
    result, tables = drawn(cli, monkeypatch, "verify", "--fix")
    assert tables and tables[0][0] == [
        ("severity", "fixed", 0, 8, None),
        ("kind", "fixed", 0, 8, None),
        ("path", "path", 0, 20, str(store)),
        ("problem", "text", 1, 16, None),
        ("repair", "text", 2, 8, None),
    ]
    repaired = [row for row in tables[0][1] if row[4] is not None]
    assert repaired and all(f"repaired {row[2]}: {row[4]}" in result.stderr for row in repaired)
    # A repaired finding's row says so where an open one gives its severity.
    assert [row[:4] for row in tables[0][1]] == [
        ["repaired" if row[4] else f["severity"], f["kind"], f["path"], f["message"]]
        for row, f in zip(tables[0][1], findings)
    ]


@pytest.mark.parametrize("limit, stats", [(3, 6), (2, 0)])  # under the bound: a look before and after the rows
def test_verify_rechecks_a_bounded_number_of_passing_findings(cli, store, monkeypatch, limit, stats):
    """Rows whose bytes are missing are checked once more (a sweep beside
    verify) only up to a bound: a store of a million such rows is not a
    race, and is reported as seen without a million more requests."""
    from lashctl import inspect
    from lashctl.backends.blobs.localfs import BlobStore

    now = now_ms()
    lost = [sha(b"lost %d" % n) for n in range(3)]
    write_manifest(store, [e for i in lost for e in (intent(i, "s", now - 5), commit_ev(i, "s", now - 4))])
    calls = []
    real = BlobStore.stat

    def counted(self, attachment_id, sidecar=False):
        calls.append(attachment_id)
        return real(self, attachment_id, sidecar)

    monkeypatch.setattr(BlobStore, "stat", counted)
    monkeypatch.setattr(inspect, "_SETTLE_LIMIT", limit)
    document = json.loads(cli("--json", "verify").stdout)
    assert sorted((f["kind"], f["id"]) for f in document["findings"]) == sorted(
        ("committed-bytes-missing", i) for i in lost
    )
    assert len([c for c in calls if c in lost]) == stats


def test_verify_keeps_its_report_when_a_shard_it_rechecks_is_unsafe(cli, store, put_blobs, tmp_path):
    """A committed blob whose shard directory became a symlink: the report
    names the stray shard and the missing bytes; the final re-check, which
    may not look through the link, keeps what it cannot check."""
    (kept,) = put_blobs({"k.bin": b"kept and committed"})
    now = now_ms()
    write_manifest(store, [intent(kept, "s", now - 5), commit_ev(kept, "s", now - 4)])
    shard = store / "sha256" / kept[:2]
    outside = tmp_path / "outside"
    shard.rename(outside)
    shard.symlink_to(outside)
    result = cli("--json", "verify")
    assert result.exit_code == 65, result.stderr
    kinds = {(f["kind"], f["id"]) for f in json.loads(result.stdout)["findings"]}
    assert ("committed-bytes-missing", kept) in kinds and ("stray-file", None) in kinds


@pytest.mark.parametrize("new_shard", [False, True], ids=["shard there", "new shard"])
def test_verify_recheck_sees_bytes_a_put_lands_while_it_reads_the_manifest(
    cli, store, put_blobs, monkeypatch, new_shard
):
    """A put writes its intent, then its bytes; a commit follows. When they
    land while verify's re-check reads the manifest, the store is looked at
    once more after that read: no committed-bytes-missing for bytes that are
    there, even in a shard directory that did not exist before."""
    import shutil

    from lashctl.backends.manifests.jsonl.manifest import JsonlManifest

    (late,) = put_blobs({"late.bin": b"landing late"})
    blob = blob_path(store, late)
    held = blob.read_bytes()
    held_sidecar = sidecar_path(store, late).read_bytes()
    blob.unlink()  # a put in flight: its sidecar is there, its bytes not yet
    if new_shard:
        shutil.rmtree(blob.parent)  # nothing of it yet: its shard is new
    now = now_ms()
    write_manifest(store, [intent(late, "s", now - 5)])
    real = JsonlManifest.reading
    calls = []

    def reading(self, *a, **k):
        calls.append(1)
        if len(calls) == 2:  # the re-check's fresh read: the put lands, and is committed
            blob.parent.mkdir(exist_ok=True)
            sidecar_path(store, late).write_bytes(held_sidecar)
            blob.write_bytes(held)
            with open(store / "manifest.jsonl", "a") as log:
                log.write(json.dumps(commit_ev(late, "s", now - 1)) + "\n")
        return real(self, *a, **k)

    monkeypatch.setattr(JsonlManifest, "reading", reading)
    result = cli("--json", "verify")
    assert len(calls) == 2
    assert result.exit_code == 0, result.stdout
    assert json.loads(result.stdout)["errors"] == 0


def test_a_repaired_finding_says_so_in_its_row(cli, store, put_blobs, monkeypatch):
    """After --fix, the quarantined hash mismatch is no longer shown as an
    open error: its row says repaired (table, TSV) and its JSON status too."""
    import os

    (bad,) = put_blobs({"b.bin": b"original bytes"})
    path = blob_path(store, bad)
    os.chmod(path, 0o644)
    path.write_bytes(b"damaged bytes!")
    before = json.loads(cli("verify", "--json").stdout)["findings"]
    assert [(f["kind"], f["severity"], f["status"]) for f in before if f["id"] == bad] == [
        ("hash-mismatch", "error", "open")
    ]
    result, tables = drawn(cli, monkeypatch, "verify", "--fix")
    assert result.exit_code == 0, result.stderr
    (row,) = [r for r in tables[0][1] if r[1] == "hash-mismatch"]
    assert row[0] == "repaired" and row[4].startswith("moved to ")
    path.write_bytes(b"damaged again!")
    piped = cli("verify", "--fix")
    assert [line[0] for line in tsv(piped) if line[1] == "hash-mismatch"] == ["repaired"]
    path.write_bytes(b"damaged twice!")
    document = json.loads(cli("verify", "--fix", "--json").stdout)
    (finding,) = [f for f in document["findings"] if f["kind"] == "hash-mismatch"]
    assert (finding["severity"], finding["status"], document["errors"], document["repairs"]) == (
        "error",
        "repaired",
        0,
        1,
    )
