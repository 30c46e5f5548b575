"""``verify`` writes its findings from a spool as found, counted: the same
bytes as the report gathered whole, whatever the findings and however many."""

from __future__ import annotations

import json
import os
import re

import pytest
from conftest import blob_path, sha, sidecar_path

from .helpers import commit_ev, intent, now_ms, write_manifest

DAY_MS = 86_400_000


def _store_with_findings_of_every_kind(store, put_blobs) -> str:
    good, bare, mismatch, undecodable, corrupt, unmanaged, orphan, linked = put_blobs(
        {f"{n}.bin": b"blob %d" % n for n in range(8)}
    )
    now = now_ms()
    sidecar_path(store, bare).unlink()  # sidecar-missing
    side = sidecar_path(store, mismatch)
    meta = json.loads(side.read_text())
    meta["byte_len"] += 1
    side.write_text(json.dumps(meta))  # sidecar-mismatch
    sidecar_path(store, undecodable).write_text("{not json")  # sidecar-undecodable
    blob_path(store, corrupt).chmod(0o644)
    blob_path(store, corrupt).write_bytes(b"not what it hashes to")  # hash-mismatch
    blob_path(store, orphan).unlink()  # orphan-sidecar-file
    os.link(blob_path(store, linked), store / "outside-link")  # hard-linked
    (store / "sha256" / "zz").write_bytes(b"stray")  # stray-file
    (store / "tmp").mkdir(exist_ok=True)
    (store / "tmp" / "put-1.part").write_bytes(b"staging")  # staging-litter
    lost = [sha(b"lost %d" % n) for n in range(6)]
    events = [intent(i, "s", now - 5) for i in (good, bare, mismatch, undecodable, corrupt, linked)]
    events += [commit_ev(good, "s", now - 4), commit_ev(corrupt, "s", now - 4)]
    events += [intent(i, "a", now - 5) for i in lost]  # uncommitted-bytes-missing
    events += [commit_ev(i, "a", now - 4) for i in lost[:3]]  # committed-bytes-missing
    events += [intent(lost[4], "b", now - 3), intent(good, "future", now + 2 * DAY_MS)]  # intent-in-future
    write_manifest(store, events)
    return linked


def _masked(text: str) -> str:
    """Without the run's times and the names --fix gives what it quarantines."""
    text = re.sub(r'"(started_at|finished_at)":"[^"]*"', "", text)
    return re.sub(r"\d{8}T\d{6}Z\.[0-9a-z_]+", "STAMP", text)


def _gathered(monkeypatch):
    """verify as it was: every finding in one list, rendered whole."""
    from lashctl import inspect

    real = inspect.verify
    monkeypatch.setattr(inspect, "verify", lambda *a, spool=False, **k: real(*a, **k))


@pytest.mark.parametrize("batch", [2, 4096], ids=["spilled", "in memory"])
@pytest.mark.parametrize("limit", [0, 10_000], ids=["unsettled", "settled"])
@pytest.mark.parametrize(
    "args", [["verify"], ["--json", "verify"], ["verify", "--fix"], ["--json", "verify", "--fix", "--grace", "1m"]]
)
def test_streamed_findings_are_the_gathered_bytes(cli, store, put_blobs, monkeypatch, tmp_path, batch, limit, args):
    from lashctl import inspect

    linked = _store_with_findings_of_every_kind(store, put_blobs)
    os.utime(store / "tmp" / "put-1.part", (0, 0))
    copy = tmp_path / "copy"
    import shutil

    shutil.copytree(store, copy, symlinks=True)
    monkeypatch.setattr(inspect._Spool, "BATCH", batch)
    monkeypatch.setattr(inspect, "_SETTLE_LIMIT", limit)
    streamed = cli(*args)
    shutil.rmtree(store)
    shutil.copytree(copy, store, symlinks=True)
    (store / "outside-link").unlink()  # a copy keeps no hard link: make it again
    os.link(blob_path(store, linked), store / "outside-link")
    _gathered(monkeypatch)
    gathered = cli(*args)
    assert streamed.exit_code == gathered.exit_code == 65, streamed.stderr
    assert _masked(streamed.stdout) == _masked(gathered.stdout)
    assert _masked(streamed.stderr) == _masked(gathered.stderr)
    kinds = (
        {line.split("\t")[1] for line in streamed.stdout.splitlines()}
        if args[0] == "verify"
        else {f["kind"] for f in json.loads(streamed.stdout)["findings"]}
    )
    assert kinds >= {
        "sidecar-missing",
        "sidecar-mismatch",
        "sidecar-undecodable",
        "hash-mismatch",
        "unmanaged",
        "orphan-sidecar-file",
        "hard-linked",
        "stray-file",
        "committed-bytes-missing",
        "uncommitted-bytes-missing",
        "intent-in-future",
    }


def test_a_file_name_that_is_not_utf8_makes_the_streamed_document_ascii(cli, store, put_blobs, monkeypatch):
    """A gathered document with text UTF-8 cannot encode is written in ASCII
    escapes, whole: the streamed one too, though its header came first."""
    _store_with_findings_of_every_kind(store, put_blobs)
    os.close(os.open(os.fsencode(store / "sha256") + b"/caf\xe9", os.O_CREAT | os.O_WRONLY, 0o644))
    streamed = cli("--json", "verify")
    _gathered(monkeypatch)
    gathered = cli("--json", "verify")
    assert _masked(streamed.stdout) == _masked(gathered.stdout)
    assert streamed.stdout.isascii() and "caf\\udce9" in streamed.stdout
    json.loads(streamed.stdout)


def test_a_spool_that_cannot_be_written_keeps_the_findings_in_memory(monkeypatch):
    import tempfile

    from lashctl import inspect

    def refuse(*_a, **_k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(inspect._Spool, "BATCH", 3)
    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    spool = inspect._Spool()
    findings = [inspect.Finding("unmanaged", "warning", f"p{n}", None, f"m{n}") for n in range(10)]
    for f in findings:
        spool.append((f.kind, f.severity, f.path, f.attachment_id, f.message, f.repair))
    assert [inspect.Finding(*t) for t in spool] == findings
    assert [inspect.Finding(*t) for t in spool] == findings  # read again
