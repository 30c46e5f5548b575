"""Core tests of the operator tooling: ``lashctl.inspect`` (show, ls, stats, verify,
strays, quarantine), ``sweep.gc`` and ``lashctl.backends.manifests.jsonl.log`` (check,
iter_events, compact), on real stores built with ``transfer.put`` and then damaged by hand.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pytest

from conftest import blob_path, png_bytes, sha, sidecar_path
from lashctl.backends.blobs.localfs import read_sidecar_file
from lashctl.backends.manifests.jsonl.log import StateView
from lashctl import core, inspect, sidecar, sweep, transfer
from lashctl.errors import Corrupt, NotFound, Refused
from lashctl.ids import parse_id
from lashctl.backends.manifests.jsonl.log import check as check_manifest
from lashctl.timefmt import now_ms

HOUR = 3_600_000
DAY = 24 * HOUR


# -- helpers -------------------------------------------------------------------------


blob = blob_path


side = sidecar_path


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def put(store: core.Store, data: bytes, session: str, name: str | None = None) -> str:
    """Store one in-memory source (like ``put FILE`` when ``name`` is given)."""
    source = transfer.PutSource(name or "-", lambda: io.BytesIO(data), name)
    [result] = list(transfer.put(store, [source], transfer.PutOptions(session)))
    assert result.attachment_id == sha(data)
    return result.attachment_id


def put_many(store: core.Store, items: list[tuple[bytes, str]], session: str) -> list[str]:
    sources = [transfer.PutSource(n, (lambda d=d: io.BytesIO(d)), n) for d, n in items]
    return [r.attachment_id for r in transfer.put(store, sources, transfer.PutOptions(session))]


def commit(store: core.Store, session: str, *ids: str) -> None:
    results = transfer.commit(store, session, [parse_id(i) for i in ids])
    assert [r.status for r in results] == [transfer.COMMITTED] * len(ids)


def append_events(store: core.Store, *events: dict) -> None:
    """Append hand-written lines to the manifest (as an operator with an editor would)."""
    path = store.manifest.path
    existing = path.read_bytes() if path.exists() else b""
    assert existing == b"" or existing.endswith(b"\n")
    with open(path, "ab") as handle:
        if not existing:
            handle.write(b'{"op":"header","format":"lashctl-manifest","version":1}\n')
        for event in events:
            handle.write(json.dumps(event, separators=(",", ":")).encode() + b"\n")


def intent(attachment_id: str, session: str, at: int) -> dict:
    return {
        "op": "intent",
        "attachment_id": attachment_id,
        "session_id": session,
        "canonical_uri": "sha256:" + attachment_id,
        "intent_at_epoch_ms": at,
    }


def commit_ev(attachment_id: str, session: str, at: int) -> dict:
    return {"op": "commit", "attachment_id": attachment_id, "session_id": session, "committed_at_epoch_ms": at}


def forget_ev(attachment_id: str, session: str) -> dict:
    return {"op": "forget", "attachment_id": attachment_id, "session_id": session}


def plant(
    root: Path,
    data: bytes,
    media_type: str = "application/octet-stream",
    label: str | None = None,
    with_sidecar: bool = True,
) -> str:
    """Write a blob (and a valid sidecar) by hand, with no manifest row."""
    attachment_id = sha(data)
    path = blob(root, attachment_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if with_sidecar:
        side(root, attachment_id).write_bytes(
            sidecar.Metadata(attachment_id, media_type, len(data), None, None, label).encode()
        )
    return attachment_id


def age(path: Path, ms: int) -> None:
    """Set a file's mtime ``ms`` milliseconds into the past (without following symlinks)."""
    t = (now_ms() - ms) / 1000
    os.utime(path, (t, t), follow_symlinks=False)


def read_state(store: core.Store):
    return store.manifest.read_state()


def view_of(store: core.Store) -> StateView:
    """The manifest folded in memory, as the view the inspections take."""
    return StateView(store.manifest.read_state())


def tree(root: Path) -> dict[str, tuple]:
    """Every path under root with its type, size, content hash and mtime."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = os.lstat(p)
            if os.path.islink(p):
                out[str(p)] = ("link", os.readlink(p))
            elif p.is_dir():
                out[str(p)] = ("dir",)
            else:
                out[str(p)] = ("file", st.st_size, sha(p.read_bytes()), st.st_mtime_ns)
    return out


# -- the damaged store ---------------------------------------------------------------
@dataclass
class Damaged:
    root: Path
    store: core.Store
    good: str
    corrupt: str
    corrupt_bytes: bytes
    nosidecar: str
    nosidecar_png: bytes
    undecodable: str
    mismatch: str
    lost_committed: str
    lost_uncommitted: str
    unmanaged: str
    orphan_sidecar: str
    tmp_litter: Path
    lash_tmp: Path
    bad_name: Path
    wrong_prefix: Path
    symlink: Path


def build_damaged(root: Path) -> Damaged:
    """A store with one of every problem verify reports (manifest itself valid)."""
    store = core.Store(root)
    good_png = png_bytes(5, 3)
    nosidecar_png = png_bytes(7, 11)
    corrupt_data = b"this blob will have a byte flipped"
    items = [
        (good_png, "good.png"),
        (corrupt_data, "corrupt.bin"),
        (nosidecar_png, "pixel.png"),
        (b"this sidecar will not decode", "undecodable.txt"),
        (b"this sidecar will lie about byte_len", "mismatch.txt"),
        (b"committed, then lost by hand", "lost.txt"),
    ]
    good, corrupt, nosidecar, undecodable, mismatch, lost_committed = put_many(store, items, "alpha")
    commit(store, "alpha", good, corrupt, nosidecar, undecodable, mismatch, lost_committed)
    lost_uncommitted = put(store, b"an interrupted put", "beta", "interrupted.txt")

    # hash mismatch: flip one byte of the blob
    damaged = bytearray(corrupt_data)
    damaged[3] ^= 0x01
    blob(root, corrupt).write_bytes(bytes(damaged))
    # missing sidecar
    side(root, nosidecar).unlink()
    # undecodable sidecar
    side(root, undecodable).write_bytes(b"{ this is not json")
    # sidecar whose byte_len disagrees
    meta = json.loads(side(root, mismatch).read_text())
    meta["byte_len"] += 1
    side(root, mismatch).write_text(json.dumps(meta, indent=2))
    # committed row, bytes deleted by hand (the sidecar stays: an orphan sidecar with rows)
    blob(root, lost_committed).unlink()
    # uncommitted row, bytes and sidecar deleted by hand
    blob(root, lost_uncommitted).unlink()
    side(root, lost_uncommitted).unlink()
    # unmanaged: bytes (and a valid sidecar) written by hand, no row
    unmanaged = plant(root, b"written by hand, no intent", "text/plain", "hand.txt")
    # a sidecar with no blob and no row
    orphan_sidecar = sha(b"only the sidecar of this remains")
    side(root, orphan_sidecar).parent.mkdir(parents=True, exist_ok=True)
    side(root, orphan_sidecar).write_bytes(
        sidecar.Metadata(orphan_sidecar, "text/plain", 32, None, None, "gone.txt").encode()
    )
    # staging litter: lashctl's tmp/ and lash-core's sibling <id>.tmp
    tmp_litter = root / "tmp" / "put-0123456789abcdef.part"
    tmp_litter.write_bytes(b"partial")
    lash_tmp = blob(root, good).with_name(good + ".tmp")
    lash_tmp.write_bytes(b"lash")
    # a stray file with a bad name in a shard
    bad_name = blob(root, good).parent / "notes.txt"
    bad_name.write_bytes(b"not a blob")
    # a blob in the wrong prefix directory
    wrong_data = b"a blob in the wrong shard"
    wrong_id = sha(wrong_data)
    wrong_shard = "00" if wrong_id[:2] != "00" else "01"
    wrong_prefix = root / "sha256" / wrong_shard / wrong_id
    wrong_prefix.parent.mkdir(parents=True, exist_ok=True)
    wrong_prefix.write_bytes(wrong_data)
    # a symlink under sha256/, named like a blob, pointing at a real blob
    link_id = sha(b"a symlink named like a blob")
    symlink = blob(root, link_id)
    symlink.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(blob(root, good), symlink)
    return Damaged(
        root,
        store,
        good,
        corrupt,
        bytes(damaged),
        nosidecar,
        nosidecar_png,
        undecodable,
        mismatch,
        lost_committed,
        lost_uncommitted,
        unmanaged,
        orphan_sidecar,
        tmp_litter,
        lash_tmp,
        bad_name,
        wrong_prefix,
        symlink,
    )


def expected_findings(d: Damaged) -> list[tuple[str, str, str]]:
    r = d.root
    return sorted(
        [
            ("hash-mismatch", "error", str(blob(r, d.corrupt))),
            ("sidecar-missing", "error", str(side(r, d.nosidecar))),
            ("sidecar-undecodable", "error", str(side(r, d.undecodable))),
            ("sidecar-mismatch", "error", str(side(r, d.mismatch))),
            ("staging-litter", "warning", str(d.tmp_litter)),
            ("staging-litter", "warning", str(d.lash_tmp)),
            ("stray-file", "error", str(d.bad_name)),
            ("stray-file", "error", str(d.wrong_prefix)),
            ("stray-file", "error", str(d.symlink)),
            ("committed-bytes-missing", "error", str(blob(r, d.lost_committed))),
            ("uncommitted-bytes-missing", "warning", str(blob(r, d.lost_uncommitted))),
            ("unmanaged", "warning", str(blob(r, d.unmanaged))),
            ("orphan-sidecar-file", "warning", str(side(r, d.lost_committed))),
            ("orphan-sidecar-file", "warning", str(side(r, d.orphan_sidecar))),
        ]
    )


def triples(report: inspect.VerifyReport) -> list[tuple[str, str, str]]:
    return sorted((f.kind, f.severity, f.path) for f in report.findings)


@pytest.fixture
def damaged(store: Path) -> Damaged:
    return build_damaged(store)


# -- verify ----------------------------------------------------------------------------
def test_verify_reports_every_kind_of_damage_with_its_severity_and_path(damaged):
    d = damaged
    report = inspect.verify(d.store, now_ms())
    assert triples(report) == expected_findings(d)
    by_kind = {f.kind: f for f in report.findings}
    assert by_kind["hash-mismatch"].attachment_id == d.corrupt
    assert sha(d.corrupt_bytes) in by_kind["hash-mismatch"].message
    assert by_kind["committed-bytes-missing"].attachment_id == d.lost_committed
    assert "alpha" in by_kind["committed-bytes-missing"].message
    assert by_kind["uncommitted-bytes-missing"].attachment_id == d.lost_uncommitted
    assert by_kind["unmanaged"].attachment_id == d.unmanaged
    assert all(f.repair is None for f in report.findings)
    # errors are what fails verify (exit 65): 8 of them here
    assert len(report.errors) == 8
    # blobs checked: every regular file with a valid name in its right shard
    present = [d.good, d.corrupt, d.nosidecar, d.undecodable, d.mismatch, d.unmanaged]
    assert report.blobs_checked == len(present)
    assert report.bytes_checked == sum(blob(d.root, i).stat().st_size for i in present)


def test_verify_without_fix_changes_nothing(damaged):
    before = tree(damaged.root)
    inspect.verify(damaged.store, now_ms())
    assert tree(damaged.root) == before


def test_verify_fix_makes_only_safe_repairs_and_never_deletes_bytes(damaged):
    d = damaged
    r = d.root
    blobs_before = {
        p: p.read_bytes()
        for p in (r / "sha256").rglob("*")
        if p.is_file() and not p.is_symlink() and not p.name.endswith((".json", ".tmp"))
    }
    with d.store.manifest.locked():
        report = inspect.verify(d.store, now_ms(), fix=True, grace_ms=0)
    repaired = {(f.kind, f.path) for f in report.repairs}
    assert repaired == {
        ("staging-litter", str(d.tmp_litter)),
        ("staging-litter", str(d.lash_tmp)),
        ("sidecar-missing", str(side(r, d.nosidecar))),
        ("hash-mismatch", str(blob(r, d.corrupt))),
    }
    # staging litter is gone
    assert not d.tmp_litter.exists()
    assert not d.lash_tmp.exists()
    # the missing sidecar is rebuilt from the content
    rebuilt = read_sidecar_file(side(r, d.nosidecar))
    assert rebuilt is not None
    assert (rebuilt.attachment_id, rebuilt.media_type, rebuilt.byte_len, rebuilt.width, rebuilt.height) == (
        d.nosidecar,
        "image/png",
        len(d.nosidecar_png),
        7,
        11,
    )
    assert json.loads(side(r, d.nosidecar).read_text())["media_type"] == {"kind": "image", "type": "png"}
    # the corrupt blob and its sidecar went to quarantine, bytes intact
    assert not os.path.lexists(blob(r, d.corrupt))
    assert not os.path.lexists(side(r, d.corrupt))
    quarantined = sorted((r / "quarantine").iterdir())
    names = [p.name for p in quarantined]
    assert len(quarantined) == 2, names
    qblob = next(p for p in quarantined if not p.name.endswith(".json"))
    assert qblob.name.startswith(d.corrupt + ".")
    assert qblob.read_bytes() == d.corrupt_bytes
    qside = Path(str(qblob) + ".json")
    assert qside.exists()
    assert json.loads(qside.read_text())["id"] == d.corrupt
    # nothing else was deleted: every other blob, stray file and sidecar is still there
    for path, data in blobs_before.items():
        if path != blob(r, d.corrupt):
            assert path.read_bytes() == data
    for path in (
        d.bad_name,
        d.wrong_prefix,
        side(r, d.undecodable),
        side(r, d.mismatch),
        side(r, d.lost_committed),
        side(r, d.orphan_sidecar),
    ):
        assert path.exists(), path
    assert os.path.islink(d.symlink)
    # what --fix cannot repair is still an error
    assert sorted(f.kind for f in report.errors) == sorted(
        [
            "sidecar-undecodable",
            "sidecar-mismatch",
            "stray-file",
            "stray-file",
            "stray-file",
            "committed-bytes-missing",
            "committed-bytes-missing",
        ]
    )  # the corrupt committed blob, now in quarantine: the state after the repair


def test_verify_fix_with_default_grace_keeps_fresh_litter(damaged):
    d = damaged
    with d.store.manifest.locked():
        report = inspect.verify(d.store, now_ms(), fix=True)
    assert d.tmp_litter.exists() and d.lash_tmp.exists()
    assert {f.kind for f in report.repairs} == {"sidecar-missing", "hash-mismatch"}
    # old litter does go with the default grace
    age(d.tmp_litter, 2 * DAY)
    with d.store.manifest.locked():
        report = inspect.verify(d.store, now_ms(), fix=True)
    assert not d.tmp_litter.exists()
    assert d.lash_tmp.exists()
    assert [(f.kind, f.path) for f in report.repairs] == [("staging-litter", str(d.tmp_litter))]


def test_verify_on_a_clean_store_finds_nothing(store):
    s = core.Store(store)
    a = put(s, png_bytes(2, 2), "s", "a.png")
    commit(s, "s", a)
    put(s, b"uncommitted but fine", "s", "b.txt")
    report = inspect.verify(s, now_ms())
    assert report.findings == []
    assert report.errors == []
    assert report.blobs_checked == 2


def test_verify_with_only_warnings_has_no_errors(store):
    s = core.Store(store)
    put(s, b"fine", "s", "fine.txt")
    gone = put(s, b"interrupted", "s", "gone.txt")
    blob(store, gone).unlink()
    side(store, gone).unlink()
    plant(store, b"nobody wrote an intent")
    (store / "tmp" / "put-aaaa.part").write_bytes(b"xx")
    report = inspect.verify(s, now_ms())
    assert sorted(f.kind for f in report.findings) == ["staging-litter", "uncommitted-bytes-missing", "unmanaged"]
    assert all(f.severity == inspect.WARNING for f in report.findings)
    assert report.errors == []


def test_verify_with_a_corrupt_manifest_still_checks_blobs(damaged):
    d = damaged
    path = d.store.manifest.path
    lines = path.read_bytes().splitlines(keepends=True)
    lines.insert(2, b"{ not an event\n")
    path.write_bytes(b"".join(lines))
    with pytest.raises(Corrupt) as err:
        read_state(d.store)
    assert ":3:" in err.value.message
    report = inspect.verify(d.store, now_ms())
    kinds = [f.kind for f in report.findings]
    manifest_findings = [f for f in report.findings if f.kind == "manifest-corrupt"]
    assert len(manifest_findings) == 1
    assert manifest_findings[0].severity == "error"
    assert manifest_findings[0].path == str(path)
    assert ":3:" in manifest_findings[0].message
    # the blob and file checks still ran; the row checks (which need the state) did not
    for kind in (
        "hash-mismatch",
        "sidecar-missing",
        "sidecar-undecodable",
        "sidecar-mismatch",
        "staging-litter",
        "stray-file",
        "orphan-sidecar-file",
    ):
        assert kind in kinds, kind
    for kind in ("committed-bytes-missing", "uncommitted-bytes-missing", "unmanaged"):
        assert kind not in kinds, kind


def test_verify_reports_a_torn_tail_as_a_warning(store):
    s = core.Store(store)
    put(s, b"x", "s", "x.txt")
    with open(s.manifest.path, "ab") as handle:
        handle.write(b'{"op":"intent","attachm')
    assert s.manifest.read_state().torn_tail
    report = inspect.verify(s, now_ms())
    assert [(f.kind, f.severity) for f in report.findings] == [("manifest-torn-tail", "warning")]


def test_verify_reports_a_sidecar_whose_id_disagrees_as_sidecar_mismatch(store):
    """README: sidecar-mismatch is 'one whose id/byte_len disagrees with the blob'."""
    s = core.Store(store)
    a = put(s, b"first blob", "s", "a.txt")
    b = put(s, b"second blob", "s", "b.txt")
    side(store, a).write_bytes(side(store, b).read_bytes())  # a valid sidecar, for the other blob
    report = inspect.verify(s, now_ms())
    assert [(f.kind, f.path) for f in report.findings] == [("sidecar-mismatch", str(side(store, a)))]


def test_rebuild_sidecar_for_a_non_image_is_octet_stream(store):
    s = core.Store(store)
    a = put(s, b"plain bytes", "s", "plain.txt")
    side(store, a).unlink()
    meta = inspect.rebuild_sidecar(s, a, len(b"plain bytes"))
    assert (meta.media_type, meta.byte_len, meta.width, meta.height) == ("application/octet-stream", 11, None, None)
    assert read_sidecar_file(side(store, a)) == meta


def test_quarantine_moves_blob_and_sidecar_and_keeps_bytes(store):
    s = core.Store(store)
    a = put(s, b"move me", "s", "m.txt")
    sidecar_bytes = side(store, a).read_bytes()
    target = Path(inspect.quarantine(s, a, s.blobs.hash(a)[1]))
    assert target.parent == store / "quarantine"
    assert target.read_bytes() == b"move me"
    assert Path(str(target) + ".json").read_bytes() == sidecar_bytes
    assert not blob(store, a).exists() and not side(store, a).exists()
    second = put(s, b"move me", "s", "m.txt")
    assert Path(inspect.quarantine(s, second, s.blobs.hash(second)[1])) != target  # names never collide
    assert target.read_bytes() == b"move me"


# -- scan_strays -----------------------------------------------------------------------
def test_scan_strays_classifies_litter(damaged):
    d = damaged
    found = {(str(x.path), x.kind, x.reason) for x in inspect.scan_strays(d.store)}
    assert found == {
        (str(d.tmp_litter), "staging", "staging litter in tmp/"),
        (str(d.lash_tmp), "staging", "lash-core staging litter"),
        (str(d.bad_name), "stray", "name is not a blob id"),
        (str(d.wrong_prefix), "stray", "in the wrong prefix directory"),
        (str(d.symlink), "stray", "a symlink, not a file"),
        (str(side(d.root, d.lost_committed)), "orphan-sidecar", "a sidecar with no blob"),
        (str(side(d.root, d.orphan_sidecar)), "orphan-sidecar", "a sidecar with no blob"),
    }


def test_scan_strays_finds_directories_and_files_outside_shards(store):
    s = core.Store(store)
    a = put(s, b"a real blob", "s", "a.txt")
    shard = blob(store, a).parent
    id_dir = sha(b"a directory named like a blob")
    (store / "sha256" / id_dir[:2] / id_dir).mkdir(parents=True)
    (shard / "subdir").mkdir()
    (store / "sha256" / "loose-file").write_bytes(b"x")
    (store / "sha256" / "zz").mkdir()
    (store / "sha256" / "zz" / a).write_bytes(b"a real blob")
    found = {(str(x.path), x.kind) for x in inspect.scan_strays(s)}
    assert found == {
        (str(store / "sha256" / id_dir[:2] / id_dir), "stray"),
        (str(shard / "subdir"), "stray"),
        (str(store / "sha256" / "loose-file"), "stray"),
        (str(store / "sha256" / "zz" / a), "stray"),
    }
    report = inspect.verify(s, now_ms())
    assert sorted(f.kind for f in report.findings) == ["stray-file"] * 4
    assert report.blobs_checked == 1


def test_gc_never_deletes_through_a_symlinked_shard_directory(store, tmp_path):
    """A symlink under sha256/ is a stray file (README, verify), not a way into another directory:
    gc must not delete a file outside the store because a shard directory links to it."""
    s = core.Store(store)
    put(s, b"keep the store non-empty", "s", "k.txt")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    data = b"a precious file outside the store"
    victim = outside / sha(data)
    victim.write_bytes(data)
    age(victim, 3 * DAY)
    shard = store / "sha256" / sha(data)[:2]
    assert not shard.exists()
    os.symlink(outside, shard)
    report = inspect.verify(s, now_ms())
    assert ("stray-file", str(shard)) in [(f.kind, f.path) for f in report.findings]
    sweep.gc(s, now_ms() - DAY)
    assert victim.read_bytes() == data


# -- show ----------------------------------------------------------------------------
@pytest.fixture
def verdict_store(store: Path):
    """Blobs in each of the states show explains."""
    s = core.Store(store)
    now = now_ms()
    ids = {}
    ids["committed"] = put(s, png_bytes(4, 6), "alpha", "four.png")
    commit(s, "alpha", ids["committed"])
    ids["fresh"] = put(s, b"fresh upload", "fresh", "fresh.txt")
    ids["orphan"] = plant(store, b"an old orphan", "text/plain", "old.txt")
    age(blob_path(store, ids["orphan"]), 2 * DAY)  # its bytes landed with its intent
    append_events(s, intent(ids["orphan"], "ghost", now - 2 * DAY))
    ids["shared"] = put(s, b"shared content", "beta", "shared.txt")
    commit(s, "beta", ids["shared"])
    append_events(s, intent(ids["shared"], "crashed", now - 3 * DAY))
    ids["shared_fresh"] = plant(store, b"aged and fresh", "text/plain", "af.txt")
    append_events(
        s, intent(ids["shared_fresh"], "old-a", now - 2 * DAY), intent(ids["shared_fresh"], "new-b", now - HOUR)
    )
    ids["unmanaged"] = plant(store, b"nobody's", "text/plain", "n.txt")
    ids["lost"] = put(s, b"committed and lost", "gamma", "lost.txt")
    commit(s, "gamma", ids["lost"])
    blob(store, ids["lost"]).unlink()
    ids["lost_uncommitted"] = put(s, b"uncommitted and lost", "delta", "lu.txt")
    blob(store, ids["lost_uncommitted"]).unlink()
    return s, ids


def test_show_verdicts(verdict_store):
    s, ids = verdict_store
    state = view_of(s)
    now = now_ms()

    def verdict(key):
        return inspect.show(s, ids[key], state, now).verdict

    committed_row = state.state.rows[("alpha", ids["committed"])]
    v = verdict("committed")
    assert (v.state, v.reason) == (
        "kept",
        f"kept because session alpha committed it at {iso(committed_row.committed_at_epoch_ms)}",
    )
    v = verdict("fresh")
    assert v.state == "kept"
    assert v.reason.startswith("kept for now: session fresh's intent is within the 24h grace period")
    v = verdict("orphan")
    assert (v.state, v.reason) == ("orphan", "orphan: would be reclaimed by a sweep with the default grace (24h)")
    shared_row = state.state.rows[("beta", ids["shared"])]
    v = verdict("shared")
    assert (v.state, v.reason) == (
        "kept",
        f"kept because session beta committed it at {iso(shared_row.committed_at_epoch_ms)}",
    )
    v = verdict("shared_fresh")
    assert v.state == "kept"
    assert v.reason.startswith("kept for now: session new-b's intent is within the 24h grace period")
    v = verdict("unmanaged")
    assert v.state == "unmanaged"
    assert v.reason.startswith("unmanaged: no manifest row")
    v = verdict("lost")
    assert (v.state, v.reason) == (
        "missing",
        "missing bytes: session gamma committed it, but the blob is gone (data loss)",
    )
    v = verdict("lost_uncommitted")
    assert v.state == "missing"
    assert v.reason.startswith("missing bytes")
    assert "data loss" not in v.reason


def test_show_report_fields(verdict_store, store):
    s, ids = verdict_store
    state = view_of(s)
    report = inspect.show(s, ids["committed"], state, now_ms())
    st = os.stat(blob(store, ids["committed"]))
    assert report.blob_path == str(blob(store, ids["committed"]))
    assert report.sidecar_path == str(side(store, ids["committed"]))
    assert report.bytes_present is True
    assert report.byte_len == len(png_bytes(4, 6))
    assert report.size_on_disk == st.st_blocks * 512
    assert report.mtime_ms == st.st_mtime_ns // 1_000_000
    assert report.metadata.media_type == "image/png"
    assert (report.metadata.width, report.metadata.height, report.metadata.label) == (4, 6, "four.png")
    assert report.sidecar_problem is None
    assert [(r.session_id, r.committed) for r in report.rows] == [("alpha", True)]

    shared = inspect.show(s, ids["shared"], state, now_ms())
    assert [(r.session_id, r.committed) for r in shared.rows] == [("crashed", False), ("beta", True)]

    lost = inspect.show(s, ids["lost"], state, now_ms())
    assert (lost.bytes_present, lost.byte_len, lost.size_on_disk, lost.mtime_ms) == (False, None, None, None)
    assert lost.metadata is not None and lost.metadata.label == "lost.txt"


def test_show_reports_sidecar_problems(store):
    s = core.Store(store)
    a = put(s, b"abc", "s", "abc.txt")
    side(store, a).unlink()
    assert inspect.show(s, a, view_of(s), now_ms()).sidecar_problem == "missing"
    side(store, a).write_bytes(b"[]")
    report = inspect.show(s, a, view_of(s), now_ms())
    assert report.metadata is None
    assert "undecodable" in report.sidecar_problem


def test_show_unknown_id_is_not_found_and_prefix_resolves(verdict_store):
    s, ids = verdict_store
    state = view_of(s)
    with pytest.raises(NotFound):
        inspect.show(s, sha(b"never stored"), state, now_ms())
    assert core.resolve_id(s, parse_id(ids["orphan"][:8]), state) == ids["orphan"]
    # a prefix of an id known only from a row (bytes gone) resolves too
    assert core.resolve_id(s, parse_id(ids["lost"][:8].upper()), state) == ids["lost"]


# -- ls ------------------------------------------------------------------------------
def test_list_blobs_gives_every_blob_with_its_state(verdict_store, store):
    s, ids = verdict_store
    entries = {e.attachment_id: e for e in inspect.list_blobs(s, view_of(s))}
    assert set(entries) == {ids[k] for k in ("committed", "fresh", "orphan", "shared", "shared_fresh", "unmanaged")}
    assert {
        k: entries[ids[k]].state for k in ("committed", "fresh", "orphan", "shared", "shared_fresh", "unmanaged")
    } == {
        "committed": "committed",
        "fresh": "uncommitted",
        "orphan": "uncommitted",
        "shared": "committed",
        "shared_fresh": "uncommitted",
        "unmanaged": "unmanaged",
    }
    e = entries[ids["committed"]]
    assert (e.byte_len, e.media_type, e.label, e.sessions) == (len(png_bytes(4, 6)), "image/png", "four.png", ["alpha"])
    assert entries[ids["shared"]].sessions == ["beta", "crashed"]
    assert entries[ids["unmanaged"]].sessions == []
    assert e.mtime_ms == os.stat(blob(store, ids["committed"])).st_mtime_ns // 1_000_000


def test_list_blobs_warns_about_a_bad_sidecar_and_still_lists(store):
    s = core.Store(store)
    a = put(s, b"abc", "s", "abc.txt")
    side(store, a).write_bytes(b"nope")
    warnings = []
    [entry] = inspect.list_blobs(s, view_of(s), warn=warnings.append)
    assert entry.attachment_id == a and entry.media_type is None
    assert len(warnings) == 1 and str(side(store, a)) in warnings[0]


# -- stats ---------------------------------------------------------------------------
@dataclass
class Known:
    store: core.Store
    ids: dict
    sizes: dict


def build_known(root: Path) -> Known:
    """A store with exactly known numbers for stats."""
    s = core.Store(root)
    now = now_ms()
    data = {
        "committed": b"committed by alpha",  # 18
        "uncommitted": png_bytes(2, 2),
        "orphan": b"an aged orphan",  # 14
        "shared": b"aged intent plus commit",  # 23
        "unmanaged": b"nobody",  # 6
        "lost_committed": b"lost after commit",
        "lost_uncommitted": b"never landed",
    }
    ids = {k: sha(v) for k, v in data.items()}
    put(s, data["committed"], "alpha", "c.txt")  # line 2
    commit(s, "alpha", ids["committed"])  # line 3
    put(s, data["uncommitted"], "beta", "u.png")  # line 4
    plant(root, data["orphan"], "text/plain", "o.txt")
    age(blob_path(root, ids["orphan"]), 2 * DAY)  # its bytes landed with its intent
    append_events(s, intent(ids["orphan"], "ghost", now - 2 * DAY))  # line 5
    put(s, data["shared"], "gamma", "s.txt")  # line 6
    commit(s, "gamma", ids["shared"])  # line 7
    append_events(s, intent(ids["shared"], "ghost2", now - 3 * DAY))  # line 8
    plant(root, data["unmanaged"], "text/plain", "n.txt")
    put(s, data["lost_committed"], "delta", "lc.txt")  # line 9
    commit(s, "delta", ids["lost_committed"])  # line 10
    blob(root, ids["lost_committed"]).unlink()
    side(root, ids["lost_committed"]).unlink()
    put(s, data["lost_uncommitted"], "epsilon", "lu.txt")  # line 11
    blob(root, ids["lost_uncommitted"]).unlink()
    side(root, ids["lost_uncommitted"]).unlink()
    # a refreshed intent and a forgotten row: lines that compaction drops
    extra = sha(b"forgotten")
    append_events(
        s, intent(ids["uncommitted"], "beta", now), intent(extra, "zeta", now), forget_ev(extra, "zeta")
    )  # 12-14
    (root / "tmp" / "put-feedface.part").write_bytes(b"12345")
    blob(root, ids["committed"]).with_name(ids["committed"] + ".tmp").write_bytes(b"abc")
    return Known(s, ids, {k: len(v) for k, v in data.items()})


def test_stats_exact_counts(store):
    k = build_known(store)
    assert len(k.store.manifest.path.read_bytes().splitlines()) == 14
    s = inspect.stats(k.store, view_of(k.store), now_ms())
    z = k.sizes
    assert s.blobs == 5
    assert s.blob_bytes == z["committed"] + z["uncommitted"] + z["orphan"] + z["shared"] + z["unmanaged"]
    assert s.blobs_by_state == {"committed": 2, "uncommitted": 2, "unmanaged": 1}
    assert s.bytes_by_state == {
        "committed": z["committed"] + z["shared"],
        "uncommitted": z["uncommitted"] + z["orphan"],
        "unmanaged": z["unmanaged"],
    }
    assert s.rows_committed == 3
    assert s.rows_uncommitted == 4
    assert s.committed_rows_missing_bytes == 1
    assert s.uncommitted_rows_missing_bytes == 1
    assert (s.orphans_reclaimable, s.orphan_bytes_reclaimable) == (1, z["orphan"])
    assert (s.staging_files, s.staging_bytes) == (2, 8)
    assert s.stray_files == 0
    assert s.manifest_lines == 14
    assert s.compacted_lines == 1 + 7 + 3
    assert s.torn_tail is False


def test_stats_compacted_lines_match_a_real_compaction(store):
    k = build_known(store)
    expected = inspect.stats(k.store, view_of(k.store), now_ms()).compacted_lines
    with k.store.manifest.locked():
        written = k.store.manifest.compact(read_state(k.store))
    assert written == expected == len(k.store.manifest.path.read_bytes().splitlines())


def test_stats_on_the_damaged_store(damaged):
    d = damaged
    s = inspect.stats(d.store, view_of(d.store), now_ms())
    assert s.blobs == 6
    assert s.blobs_by_state == {"committed": 5, "uncommitted": 0, "unmanaged": 1}
    assert (s.rows_committed, s.rows_uncommitted) == (6, 1)
    assert (s.committed_rows_missing_bytes, s.uncommitted_rows_missing_bytes) == (1, 1)
    assert (s.orphans_reclaimable, s.orphan_bytes_reclaimable) == (0, 0)
    assert (s.staging_files, s.staging_bytes) == (2, len(b"partial") + len(b"lash"))
    # stray files as verify defines them: bad name, wrong prefix, symlink. A sidecar
    # without its blob is a sidecar (verify: orphan-sidecar-file), not a stray file.
    verify_strays = [f for f in inspect.verify(d.store, now_ms()).findings if f.kind == "stray-file"]
    assert len(verify_strays) == 3
    assert s.stray_files == 3


def test_stats_on_an_empty_store(store):
    s = inspect.stats(core.Store(store), view_of(core.Store(store)), now_ms())
    assert (
        s.blobs,
        s.blob_bytes,
        s.rows_committed,
        s.rows_uncommitted,
        s.orphans_reclaimable,
        s.staging_files,
        s.manifest_lines,
    ) == (0, 0, 0, 0, 0, 0, 0)
    assert not store.exists()  # reading never creates the store


# -- gc ------------------------------------------------------------------------------
@dataclass
class GcStore:
    store: core.Store
    old_unreferenced: str
    fresh_unreferenced: str
    old_referenced: str
    old_orphan_row: str
    kept_sidecar: Path
    dropped_sidecar: Path
    old_litter: Path
    old_lash_tmp: Path
    fresh_litter: Path
    stray: Path


def build_gc(root: Path) -> GcStore:
    s = core.Store(root)
    now = now_ms()
    old_unreferenced = plant(root, b"old and unreferenced", "text/plain", "old.txt")
    fresh_unreferenced = plant(root, b"fresh and unreferenced")
    old_referenced = put(s, b"old but an uncommitted row names it", "s", "ref.txt")
    old_orphan_row = plant(root, b"old with an aged row")
    append_events(s, intent(old_orphan_row, "ghost", now - 5 * DAY))
    lost = put(s, b"committed, bytes lost", "s", "lost.txt")
    commit(s, "s", lost)
    blob(root, lost).unlink()
    kept_sidecar = side(root, lost)
    nobody = sha(b"nothing but a sidecar")
    dropped_sidecar = side(root, nobody)
    dropped_sidecar.parent.mkdir(parents=True, exist_ok=True)
    dropped_sidecar.write_bytes(sidecar.Metadata(nobody, "text/plain", 21).encode())
    old_litter = root / "tmp" / "put-0000.part"
    old_litter.write_bytes(b"old litter")
    old_lash_tmp = blob(root, old_referenced).with_name(old_referenced + ".tmp")
    old_lash_tmp.write_bytes(b"lash")
    fresh_litter = root / "tmp" / "put-1111.part"
    fresh_litter.write_bytes(b"in flight")
    stray = blob(root, old_referenced).parent / "README"
    stray.write_bytes(b"stray")
    for path in (
        blob(root, old_unreferenced),
        side(root, old_unreferenced),
        blob(root, old_referenced),
        blob(root, old_orphan_row),
        kept_sidecar,
        dropped_sidecar,
        old_litter,
        old_lash_tmp,
        stray,
    ):
        age(path, 2 * DAY)
    return GcStore(
        s,
        old_unreferenced,
        fresh_unreferenced,
        old_referenced,
        old_orphan_row,
        kept_sidecar,
        dropped_sidecar,
        old_litter,
        old_lash_tmp,
        fresh_litter,
        stray,
    )


def test_gc_deletes_only_old_unreferenced_blobs_and_old_litter(store):
    g = build_gc(store)
    sidecar_size = g.dropped_sidecar.stat().st_size
    report = sweep.gc(g.store, now_ms() - DAY)
    assert sorted((i.kind, i.path, i.action) for i in report.items) == sorted(
        [
            ("blob", str(blob(store, g.old_unreferenced)), "delete"),
            ("staging", str(g.old_litter), "delete"),
            ("staging", str(g.old_lash_tmp), "delete"),
            ("orphan-sidecar", str(g.dropped_sidecar), "delete"),
        ]
    )
    assert report.failures == []
    assert report.blobs_scanned == 4
    # freed: the blob's bytes (not its sidecar's) plus each litter file
    assert report.bytes_freed == len(b"old and unreferenced") + len(b"old litter") + len(b"lash") + sidecar_size
    for gone in (
        blob(store, g.old_unreferenced),
        side(store, g.old_unreferenced),
        g.old_litter,
        g.old_lash_tmp,
        g.dropped_sidecar,
    ):
        assert not os.path.lexists(gone), gone
    for kept in (
        blob(store, g.fresh_unreferenced),
        blob(store, g.old_referenced),
        side(store, g.old_referenced),
        blob(store, g.old_orphan_row),
        g.kept_sidecar,
        g.fresh_litter,
        g.stray,
    ):
        assert kept.exists(), kept


def test_gc_dry_run_changes_nothing_and_lists_what_a_real_run_deletes(store):
    g = build_gc(store)
    before = tree(store)
    cutoff = now_ms() - DAY
    dry = sweep.gc(g.store, cutoff, dry_run=True)
    assert tree(store) == before
    assert dry.dry_run is True
    real = sweep.gc(g.store, cutoff)
    assert [(i.kind, i.path, i.byte_len) for i in dry.items] == [(i.kind, i.path, i.byte_len) for i in real.items]
    assert len(real.items) == 4
    assert (
        dry.bytes_freed
        == real.bytes_freed
        == (len(b"old and unreferenced") + len(b"old litter") + len(b"lash") + before[str(g.dropped_sidecar)][1])
    )


def test_gc_refuses_on_a_corrupt_manifest(store):
    g = build_gc(store)
    with open(g.store.manifest.path, "ab") as handle:
        handle.write(b"garbage\n")
    before = tree(store)
    with pytest.raises(Corrupt):
        sweep.gc(g.store, now_ms() - DAY)
    assert tree(store) == before


def test_gc_grace_guard_is_enforced_by_check_grace():
    now = now_ms()
    with pytest.raises(Refused) as err:
        core.check_grace(now - 30_000, now, force=False)
    assert err.value.exit_code == 4
    core.check_grace(now - 30_000, now, force=True)
    core.check_grace(now - 60_000, now, force=False)


# -- manifest: check, iter_events, compact ---------------------------------------------
def test_manifest_check_counts_ops_and_rows(store):
    k = build_known(store)
    report = check_manifest(k.store.manifest)
    assert report.exists and report.has_header
    assert report.problems == []
    assert report.events_by_op == {"header": 1, "intent": 9, "commit": 3, "forget": 1}
    assert report.lines == 14
    assert report.rows == 7
    assert report.rows_committed == 3
    assert report.compacted_lines == 11
    assert report.torn_tail is False


def test_manifest_check_lists_every_malformed_line(store):
    s = core.Store(store)
    a = put(s, b"a", "s", "a.txt")
    with open(s.manifest.path, "ab") as handle:
        handle.write(b"{not json\n")  # line 3
        handle.write(json.dumps(intent(a, "t", 5)).encode() + b"\n")  # line 4
        handle.write(b'{"op":"bogus","attachment_id":"' + a.encode() + b'"}\n')  # line 5
        handle.write(json.dumps(commit_ev(a, "t", 6)).encode() + b"\n")  # line 6
    report = check_manifest(s.manifest)
    assert len(report.problems) == 2
    assert f"{s.manifest.path}:3:" in report.problems[0]
    assert f"{s.manifest.path}:5:" in report.problems[1]
    assert "bogus" in report.problems[1]
    assert report.events_by_op == {"header": 1, "intent": 2, "commit": 1, "forget": 0}
    assert report.lines == 6
    assert (report.rows, report.rows_committed) == (2, 1)


def test_manifest_check_flags_a_torn_tail(store):
    warnings = []
    s = core.Store(store, warn=warnings.append)
    put(s, b"a", "s", "a.txt")
    with open(s.manifest.path, "ab") as handle:
        handle.write(b'{"op":"commit","attachment_id":"ab')
    report = check_manifest(s.manifest)
    assert report.torn_tail is True
    assert report.problems == []
    assert report.lines == 2
    assert any("torn" in w for w in warnings)


def test_manifest_check_of_a_missing_manifest(store):
    report = check_manifest(core.Store(store).manifest)
    assert (report.exists, report.lines, report.rows, report.problems) == (False, 0, 0, [])


def test_iter_events_gives_line_numbers_and_skips_blank_lines(store):
    s = core.Store(store)
    a = put(s, b"a", "s", "a.txt")
    with open(s.manifest.path, "ab") as handle:
        handle.write(b"\n")
        handle.write(json.dumps(commit_ev(a, "s", 7)).encode() + b"\n")
    got = [(n, e["op"]) for n, e in s.manifest.iter_events()]
    assert got == [(1, "header"), (2, "intent"), (4, "commit")]


def test_compact_keeps_the_fold_and_starts_with_the_header(store):
    k = build_known(store)
    before_state = read_state(k.store)
    rows_before = {
        key: (r.canonical_uri, r.intent_at_epoch_ms, r.committed_at_epoch_ms) for key, r in before_state.rows.items()
    }
    with k.store.manifest.locked():
        written = k.store.manifest.compact(before_state)
    lines = k.store.manifest.path.read_bytes().splitlines()
    assert written == len(lines) == 11
    assert json.loads(lines[0]) == {"op": "header", "format": "lashctl-manifest", "version": 1}
    after = read_state(k.store)
    assert {
        key: (r.canonical_uri, r.intent_at_epoch_ms, r.committed_at_epoch_ms) for key, r in after.rows.items()
    } == rows_before
    assert after.lines == 11
    # compacting again is a fixed point
    with k.store.manifest.locked():
        k.store.manifest.compact(after)
    assert k.store.manifest.path.read_bytes().splitlines() == lines
    # nothing left in the store root from the atomic rewrite
    leftovers = sorted(p.name for p in store.iterdir() if p.is_file() and ".idx" not in p.name)  # the index is a cache
    assert leftovers == ["manifest.jsonl", "manifest.jsonl.lock"]
