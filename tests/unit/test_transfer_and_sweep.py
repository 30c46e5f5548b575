"""``transfer`` (put, get, commit, list-uncommitted), ``sweep`` (delete, reclaim) and ``core``'s
id resolution, over a file store and a JSON-lines manifest (the manifest rules of docs/store-format.md)."""

from __future__ import annotations

import fcntl
import io
import itertools
import json
import os
import struct
import zlib
from pathlib import Path

import pytest

from lashctl.backends.blobs.localfs import read_sidecar_file
from lashctl.backends.manifests.jsonl.log import StateView
from lashctl import core, sweep, transfer
from lashctl.errors import Corrupt, NotFound, Refused, StoreIOError, UsageError
from lashctl.ids import parse_id
from lashctl.backends.manifests.jsonl.log import Manifest
from backend_helpers import commit_event, has_blob, intent_event
from lashctl.sidecar import Metadata
from lashctl.backends.blobs.localfs import BlobStore
from lashctl.timefmt import now_ms
from conftest import land_at_intents, sha

DAY = 86_400_000
HEADER_LINE = b'{"op":"header","format":"lashctl-manifest","version":1}'


class Recorder:
    def __init__(self) -> None:
        self.messages: list[str] = []

    def __call__(self, message: str) -> None:
        self.messages.append(message)


@pytest.fixture
def store(tmp_path: Path) -> core.Store:
    return core.Store(tmp_path / "root", lock_timeout=2.0, warn=Recorder())


def png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def source(name: str, data: bytes, label: str | None = None) -> transfer.PutSource:
    return transfer.PutSource(name=name, opener=lambda: io.BytesIO(data), label=label)


def manifest_events(store: core.Store) -> list[dict]:
    return [json.loads(raw) for raw in store.manifest.path.read_bytes().splitlines() if raw.strip()]


def add_blob(store: core.Store, data: bytes, label: str | None = None) -> str:
    """Bytes and sidecar in the store, no manifest events."""
    store.blobs.ensure_writable_layout()
    staged = store.blobs.stage(io.BytesIO(data), "<test>")
    store.blobs.install(staged)
    meta = Metadata(staged.attachment_id, "application/octet-stream", len(data), label=label)
    store.blobs.write_sidecar(meta)
    return staged.attachment_id


def record(store: core.Store, *events: dict) -> None:
    with store.manifest.locked():
        store.manifest.log.append(list(events))
    land_at_intents(store.root, events)


def tree(root: Path) -> dict[str, object]:
    """Every path under root with its bytes (or link target): a snapshot to compare."""
    out: dict[str, object] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            out[rel] = ("link", os.readlink(path))
        elif path.is_file():
            out[rel] = path.read_bytes()
        else:
            out[rel] = "dir"
    return out


def staging_litter(store: core.Store) -> list[str]:
    if not store.blobs.tmp.exists():
        return []
    return sorted(p.name for p in store.blobs.tmp.iterdir())


# -- put ---------------------------------------------------------------------------
def test_put_stores_blob_sidecar_and_intent(store):
    data = png(7, 11)
    before = now_ms()
    [result] = list(transfer.put(store, [source("pixel.png", data, label="pixel")], transfer.PutOptions(session="s-1")))
    after = now_ms()
    aid = sha(data)
    assert result == transfer.PutResult(aid, "pixel.png", len(data), "image/png", "pixel", 7, 11, False)
    assert store.blobs.blob_path(aid).read_bytes() == data
    assert (
        store.blobs.sidecar_path(aid).read_bytes()
        == (
            "{\n"
            f'  "id": "{aid}",\n'
            '  "media_type": {\n'
            '    "kind": "image",\n'
            '    "type": "png"\n'
            "  },\n"
            f'  "byte_len": {len(data)},\n'
            '  "width": 7,\n'
            '  "height": 11,\n'
            '  "label": "pixel"\n'
            "}"
        ).encode()
    )
    lines = store.manifest.path.read_bytes().split(b"\n")
    assert lines[0] == HEADER_LINE
    assert lines[-1] == b""
    [event] = [json.loads(raw) for raw in lines[1:-1]]
    assert event["op"] == "intent"
    assert event["attachment_id"] == aid
    assert event["session_id"] == "s-1"
    assert event["canonical_uri"] == "sha256:" + aid
    assert before <= event["intent_at_epoch_ms"] <= after
    assert staging_litter(store) == []


def test_put_batch_one_intent_per_input_same_time(store):
    inputs = [source(f"f{i}.bin", f"content {i}".encode()) for i in range(3)]
    inputs.append(source("again.bin", b"content 0"))  # the same bytes again
    results = list(transfer.put(store, inputs, transfer.PutOptions(session="batch")))
    ids = [sha(f"content {i}".encode()) for i in range(3)] + [sha(b"content 0")]
    assert [r.attachment_id for r in results] == ids
    assert [r.path for r in results] == ["f0.bin", "f1.bin", "f2.bin", "again.bin"]
    assert [r.deduplicated for r in results] == [False, False, False, True]
    events = manifest_events(store)
    assert events[0]["op"] == "header"
    intents = events[1:]
    assert [e["op"] for e in intents] == ["intent"] * 4
    assert [e["attachment_id"] for e in intents] == ids
    assert {e["session_id"] for e in intents} == {"batch"}
    assert len({e["intent_at_epoch_ms"] for e in intents}) == 1
    for i in range(3):
        assert store.blobs.blob_path(ids[i]).read_bytes() == f"content {i}".encode()
        assert store.blobs.sidecar_path(ids[i]).exists()
    assert staging_litter(store) == []


def test_put_dedup_across_invocations(store):
    first = list(transfer.put(store, [source("a.txt", b"same bytes")], transfer.PutOptions(session="s-1")))
    blob = store.blobs.blob_path(sha(b"same bytes"))
    os.utime(blob, (1_000_000, 1_000_000))
    second = list(transfer.put(store, [source("b.txt", b"same bytes")], transfer.PutOptions(session="s-2")))
    assert [r.deduplicated for r in first + second] == [False, True]
    assert os.stat(blob).st_mtime > 1_000_000 + 10  # refreshed for the grace period
    state = store.manifest.read_state()
    assert set(state.rows) == {("s-1", sha(b"same bytes")), ("s-2", sha(b"same bytes"))}
    assert staging_litter(store) == []


def test_put_from_path_label_and_guessed_type(store, tmp_path):
    path = tmp_path / "report.pdf"
    path.write_bytes(b"%PDF-1.7 not really")
    src = transfer.PutSource.from_path(str(path), stdin=lambda: pytest.fail("stdin read"))
    [result] = list(transfer.put(store, [src], transfer.PutOptions(session="s-1")))
    aid = sha(b"%PDF-1.7 not really")
    assert (result.media_type, result.label, result.width, result.height) == (
        "application/pdf",
        "report.pdf",
        None,
        None,
    )
    assert json.loads(store.blobs.sidecar_path(aid).read_bytes()) == {
        "id": aid,
        "media_type": "application/pdf",
        "byte_len": len(b"%PDF-1.7 not really"),
        "label": "report.pdf",
    }


def test_put_from_stdin_no_label_octet_stream(store):
    stdin = io.BytesIO(b"\x00\x01 piped")
    src = transfer.PutSource.from_path("-", stdin=lambda: stdin)
    [result] = list(transfer.put(store, [src], transfer.PutOptions(session="s-1")))
    assert result.label is None
    assert result.media_type == "application/octet-stream"
    assert json.loads(store.blobs.sidecar_path(result.attachment_id).read_bytes()) == {
        "id": result.attachment_id,
        "media_type": "application/octet-stream",
        "byte_len": 8,
    }


def test_put_explicit_options_win(store):
    opts = transfer.PutOptions(session="s-1", media_type=" IMAGE/JPG ", label="given", width=3, height=4)
    [result] = list(transfer.put(store, [source("x.png", png(7, 11), label="x.png")], opts))
    assert (result.media_type, result.label, result.width, result.height) == ("image/jpeg", "given", 3, 4)
    meta = read_sidecar_file(store.blobs.sidecar_path(result.attachment_id))
    assert meta == Metadata(result.attachment_id, "image/jpeg", len(png(7, 11)), 3, 4, "given")


@pytest.mark.parametrize("session", ["", "   ", "bad\nsession", "x" * 1025])
def test_put_rejects_bad_session_before_writing(store, session):
    with pytest.raises(UsageError):
        list(transfer.put(store, [source("a", b"a")], transfer.PutOptions(session=session)))
    assert not store.manifest.path.exists()
    assert list(store.blobs.iter_ids()) == []


def test_put_rejects_media_type_with_parameters(store):
    with pytest.raises(UsageError):
        list(
            transfer.put(
                store, [source("a", b"a")], transfer.PutOptions(session="s", media_type="text/plain; charset=utf-8")
            )
        )
    assert not store.manifest.path.exists()


def test_put_manifest_failure_lands_no_blob(store, monkeypatch):
    def failing_append(self, events):
        raise StoreIOError(f"cannot append to {self.path}: No space left on device")

    monkeypatch.setattr(Manifest, "append", failing_append)
    data = [b"first", b"second"]
    with pytest.raises(StoreIOError):
        list(transfer.put(store, [source("a", data[0]), source("b", data[1])], transfer.PutOptions(session="s-1")))
    for d in data:
        assert not store.blobs.blob_path(sha(d)).exists()
        assert not store.blobs.sidecar_path(sha(d)).exists()
    assert list(store.blobs.iter_ids()) == []
    assert staging_litter(store) == []


def test_put_intent_is_durable_before_blob_lands(store, monkeypatch):
    seen: list[bool] = []
    real_append = Manifest.append

    def checking_append(self, events):
        seen.extend(store.blobs.blob_path(e.attachment_id).exists() for e in events)
        real_append(self, events)

    monkeypatch.setattr(Manifest, "append", checking_append)
    list(transfer.put(store, [source("a", b"one"), source("b", b"two")], transfer.PutOptions(session="s-1")))
    assert seen == [False, False]
    assert has_blob(store.blobs, sha(b"one")) and has_blob(store.blobs, sha(b"two"))


def test_put_source_read_error_leaves_nothing(store):
    def broken_open():
        raise OSError(13, "Permission denied")

    srcs = [source("ok", b"fine"), transfer.PutSource(name="locked.bin", opener=broken_open, label=None)]
    with pytest.raises(StoreIOError, match="locked.bin"):
        list(transfer.put(store, srcs, transfer.PutOptions(session="s-1")))
    assert not store.manifest.path.exists()
    assert list(store.blobs.iter_ids()) == []
    assert staging_litter(store) == []


# -- resolve_id --------------------------------------------------------------------
def _two_with_common_prefix() -> tuple[bytes, bytes]:
    seen: dict[str, bytes] = {}
    for n in itertools.count():
        data = f"collide-{n}".encode()
        prefix = sha(data)[:4]
        if prefix in seen:
            return seen[prefix], data
        seen[prefix] = data
    raise AssertionError("unreachable")


def test_resolve_unique_prefix(store):
    aid = add_blob(store, b"resolve me")
    assert core.resolve_id(store, parse_id(aid[:6])) == aid
    assert core.resolve_id(store, parse_id(aid[:4].upper())) == aid
    assert core.resolve_id(store, parse_id("sha256:" + aid[:8])) == aid


def test_resolve_prefix_from_manifest_rows(store):
    ghost = "abcd" + "0" * 60  # a row whose bytes are gone
    record(store, intent_event(ghost, "s-1", 1000))
    state = StateView(store.manifest.read_state())
    assert core.resolve_id(store, parse_id("abcd0"), state) == ghost
    with pytest.raises(NotFound):
        core.resolve_id(store, parse_id("abcd0"))  # blobs only


def test_resolve_ambiguous_prefix(store):
    one, two = _two_with_common_prefix()
    a, b = add_blob(store, one), add_blob(store, two)
    with pytest.raises(UsageError) as info:
        core.resolve_id(store, parse_id(a[:4]))
    assert info.value.exit_code == 2
    assert a in info.value.message and b in info.value.message
    # a longer prefix disambiguates
    longer = next(n for n in range(5, 65) if a[:n] != b[:n])
    assert core.resolve_id(store, parse_id(a[:longer])) == a


def test_resolve_ambiguous_between_blob_and_row(store):
    aid = add_blob(store, b"a blob")
    other = aid[:4] + ("0" * 60 if aid[4:] != "0" * 60 else "1" * 60)
    record(store, intent_event(other, "s-1", 1000))
    with pytest.raises(UsageError):
        core.resolve_id(store, parse_id(aid[:4]), StateView(store.manifest.read_state()))


def test_resolve_no_match(store):
    aid = add_blob(store, b"something")
    missing = "0000" if not aid.startswith("0000") else "ffff"
    with pytest.raises(NotFound) as info:
        core.resolve_id(store, parse_id(missing), StateView(store.manifest.read_state()))
    assert info.value.exit_code == 3


def test_resolve_full_id_is_itself(store):
    full = "e" * 64
    assert core.resolve_id(store, parse_id(full)) == full


# -- commit --------------------------------------------------------------------------
def test_commit_statuses(store):
    [a] = list(transfer.put(store, [source("a", b"commit me")], transfer.PutOptions(session="s-1")))
    aid = a.attachment_id
    results = transfer.commit(store, "s-1", [parse_id(aid)])
    assert [(r.attachment_id, r.session_id, r.status) for r in results] == [(aid, "s-1", "committed")]
    results = transfer.commit(store, "s-1", [parse_id(aid[:6]), parse_id("sha256:" + aid)])
    assert [r.status for r in results] == ["already_committed", "already_committed"]
    results = transfer.commit(store, "s-2", [parse_id(aid)])
    assert [r.status for r in results] == ["no_intent"]
    unknown = "0" * 64 if not aid.startswith("0") else "f" * 64
    results = transfer.commit(store, "s-1", [parse_id(unknown), parse_id(unknown[:5])])
    assert [(r.attachment_id, r.status) for r in results] == [(unknown, "no_intent"), (unknown[:5], "no_intent")]
    state = store.manifest.read_state()
    assert state.rows[("s-1", aid)].committed
    assert ("s-2", aid) not in state.rows
    commits = [e for e in manifest_events(store) if e["op"] == "commit"]
    # The first call and the second (one id, named twice) each wrote one; the
    # cache never decides that a commit need not be written. "no intent" writes none.
    assert len(commits) == 2


def test_commit_same_id_twice_in_one_call(store):
    [a] = list(transfer.put(store, [source("a", b"twice")], transfer.PutOptions(session="s-1")))
    results = transfer.commit(store, "s-1", [parse_id(a.attachment_id), parse_id(a.attachment_id)])
    assert [r.status for r in results] == ["committed", "already_committed"]
    assert len([e for e in manifest_events(store) if e["op"] == "commit"]) == 1


def test_commit_requires_session(store):
    with pytest.raises(UsageError):
        transfer.commit(store, "", [parse_id("a" * 64)])


# -- delete --------------------------------------------------------------------------
def test_delete_refuses_referenced_content(store):
    data = b"shared by two sessions"
    aid = add_blob(store, data)
    record(
        store, intent_event(aid, "sess-A", 1000), intent_event(aid, "sess-B", 2000), commit_event(aid, "sess-B", 3000)
    )
    before = tree(store.root)
    with pytest.raises(Refused) as info:
        sweep.delete(store, [parse_id(aid)])
    assert info.value.exit_code == 4
    assert "sess-A" in info.value.message and "sess-B" in info.value.message
    assert aid in info.value.message
    assert tree(store.root) == before


def test_delete_refusal_is_all_or_nothing(store):
    free = add_blob(store, b"unreferenced")
    held = add_blob(store, b"referenced")
    record(store, intent_event(held, "s-1", 1000))
    with pytest.raises(Refused, match="s-1"):
        sweep.delete(store, [parse_id(free), parse_id(held)])
    assert has_blob(store.blobs, free) and has_blob(store.blobs, held)


def test_delete_force(store):
    aid = add_blob(store, b"forced")
    record(store, intent_event(aid, "s-1", 1000))
    [result] = sweep.delete(store, [parse_id(aid[:6])], force=True)
    assert (result.attachment_id, result.existed, result.byte_len, result.sessions, result.dry_run) == (
        aid,
        True,
        6,
        ["s-1"],
        False,
    )
    assert not store.blobs.blob_path(aid).exists()
    assert not store.blobs.sidecar_path(aid).exists()


def test_delete_dry_run_deletes_nothing(store):
    aid = add_blob(store, b"dry")
    record(store, intent_event(aid, "s-1", 1000))
    before = tree(store.root)
    [result] = sweep.delete(store, [parse_id(aid)], force=True, dry_run=True)
    assert (result.existed, result.byte_len, result.dry_run) == (True, 3, True)
    assert tree(store.root) == before


def test_delete_unreferenced_and_absent(store):
    aid = add_blob(store, b"plain")
    absent = "0" * 64 if not aid.startswith("0") else "f" * 64
    results = sweep.delete(store, [parse_id(aid), parse_id(absent)])
    assert [(r.attachment_id, r.existed, r.byte_len) for r in results] == [(aid, True, 5), (absent, False, 0)]
    assert list(store.blobs.iter_ids()) == []


def test_delete_unknown_prefix_not_found(store):
    add_blob(store, b"x")
    prefix = "0000" if not sha(b"x").startswith("0000") else "ffff"
    with pytest.raises(NotFound):
        sweep.delete(store, [parse_id(prefix)])


# -- list-uncommitted ----------------------------------------------------------------
def test_list_uncommitted_cutoff_order_and_session(store):
    a, b, c = (add_blob(store, d, label=d.decode()) for d in (b"aa", b"bb", b"cc"))
    record(
        store,
        intent_event(a, "s-1", 3000),
        intent_event(b, "s-2", 1000),
        intent_event(c, "s-1", 2000),
        commit_event(c, "s-1", 2500),
        intent_event(c, "s-2", 5000),
    )
    rows = transfer.list_uncommitted(store)
    assert [(r.row.attachment_id, r.row.session_id) for r in rows] == [(b, "s-2"), (a, "s-1"), (c, "s-2")]
    rows = transfer.list_uncommitted(store, cutoff=3000)
    assert [r.row.attachment_id for r in rows] == [b, a]  # at the cutoff counts
    assert [(r.bytes_present, r.byte_len, r.label) for r in rows] == [(True, 2, "bb"), (True, 2, "aa")]
    rows = transfer.list_uncommitted(store, session="s-1")
    assert [r.row.attachment_id for r in rows] == [a]


# -- reclaim -------------------------------------------------------------------------
@pytest.fixture
def sweep_store(store):
    """Three blobs with aged rows from s-old, one per reclaim rule, and a cutoff."""
    now = now_ms()
    old, cutoff = now - 2 * DAY, now - DAY
    orphan = add_blob(store, b"orphan bytes")
    committed_elsewhere = add_blob(store, b"committed by another session")
    recent_elsewhere = add_blob(store, b"recent intent elsewhere")
    untouched = add_blob(store, b"fresh")
    record(
        store,
        intent_event(orphan, "s-old", old),
        intent_event(committed_elsewhere, "s-old", old + 1),
        intent_event(committed_elsewhere, "s-keep", old + 2),
        commit_event(committed_elsewhere, "s-keep", old + 3),
        intent_event(recent_elsewhere, "s-old", old + 4),
        intent_event(recent_elsewhere, "s-new", now),
        intent_event(untouched, "s-new", now),
    )
    store.ids = {  # type: ignore[attr-defined]
        "orphan": orphan,
        "committed": committed_elsewhere,
        "recent": recent_elsewhere,
        "untouched": untouched,
    }
    store.cutoff = cutoff  # type: ignore[attr-defined]
    return store


def _items(report):
    return [(i.attachment_id, i.action, i.sessions, i.byte_len, i.bytes_present) for i in report.items]


def test_reclaim_rules(sweep_store):
    store, ids = sweep_store, sweep_store.ids
    report = sweep.reclaim(store, store.cutoff)
    assert not report.dry_run
    assert report.cutoff_epoch_ms == store.cutoff
    assert _items(report) == [
        (ids["orphan"], "reclaim", ["s-old"], len(b"orphan bytes"), True),
        (ids["committed"], "release", ["s-old"], len(b"committed by another session"), True),
        (ids["recent"], "release", ["s-old"], len(b"recent intent elsewhere"), True),
    ]
    assert report.scanned_intents == 3  # uncommitted rows at or before the cutoff, as the summary says
    assert report.blobs_reclaimed == 1
    assert report.bytes_freed == len(b"orphan bytes")
    assert report.rows_released == 2
    assert report.failures == []
    # The orphan's bytes and sidecar are gone; the others are kept.
    assert not store.blobs.blob_path(ids["orphan"]).exists()
    assert not store.blobs.sidecar_path(ids["orphan"]).exists()
    for key in ("committed", "recent", "untouched"):
        assert has_blob(store.blobs, ids[key])
        assert store.blobs.sidecar_path(ids[key]).exists()
    # Only the aged rows are forgotten.
    state = store.manifest.read_state()
    assert set(state.rows) == {
        ("s-keep", ids["committed"]),
        ("s-new", ids["recent"]),
        ("s-new", ids["untouched"]),
    }
    assert state.rows[("s-keep", ids["committed"])].committed


def test_reclaim_again_is_noop(sweep_store):
    store = sweep_store
    sweep.reclaim(store, store.cutoff)
    before = tree(store.root)
    report = sweep.reclaim(store, store.cutoff)
    assert report.items == []
    assert tree(store.root) == before


def test_reclaim_dry_run_matches_real_run_and_changes_nothing(sweep_store):
    store = sweep_store
    before = tree(store.root)
    dry = sweep.reclaim(store, store.cutoff, dry_run=True)
    assert dry.dry_run
    assert tree(store.root) == before
    real = sweep.reclaim(store, store.cutoff)
    assert _items(dry) == _items(real)
    assert [i.reason for i in dry.items] == [i.reason for i in real.items]
    assert (dry.scanned_intents, dry.blobs_reclaimed, dry.bytes_freed, dry.rows_released) == (
        real.scanned_intents,
        real.blobs_reclaimed,
        real.bytes_freed,
        real.rows_released,
    )


def test_reclaim_dry_run_takes_no_lock(sweep_store):
    store = sweep_store
    fd = os.open(store.manifest.log.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        store.manifest.log.lock_timeout = 0.05
        report = sweep.reclaim(store, store.cutoff, dry_run=True)
        assert report.blobs_reclaimed == 1
    finally:
        os.close(fd)


def test_reclaim_missing_bytes_still_forgets_rows(store):
    ghost = "ab" * 32
    now = now_ms()
    record(store, intent_event(ghost, "s-1", now - 2 * DAY))
    report = sweep.reclaim(store, now - DAY)
    assert _items(report) == [(ghost, "reclaim", ["s-1"], 0, False)]
    assert store.manifest.read_state().rows == {}


def test_reclaim_failed_delete_keeps_rows_and_goes_on(sweep_store, monkeypatch):
    store, ids = sweep_store, sweep_store.ids
    second = add_blob(store, b"second orphan")
    record(store, intent_event(second, "s-old", now_ms() - 2 * DAY + 10))
    real_delete = BlobStore.delete

    def flaky_delete(self, attachment_id):
        if attachment_id == ids["orphan"]:
            raise StoreIOError(f"cannot delete {self.blob_path(attachment_id)}: Permission denied")
        return real_delete(self, attachment_id)

    monkeypatch.setattr(BlobStore, "delete", flaky_delete)
    report = sweep.reclaim(store, store.cutoff)
    by_id = {i.attachment_id: i for i in report.items}
    failed = by_id[ids["orphan"]]
    assert failed.action == "failed"
    assert failed.byte_len == len(b"orphan bytes")  # its true size; nothing was freed
    assert "Permission denied" in failed.error
    assert report.failures == [failed]
    assert by_id[second].action == "reclaim"
    assert report.blobs_reclaimed == 1
    assert report.bytes_freed == len(b"second orphan")
    assert not has_blob(store.blobs, second)
    assert has_blob(store.blobs, ids["orphan"])
    state = store.manifest.read_state()
    assert ("s-old", ids["orphan"]) in state.rows  # kept for the next sweep
    assert ("s-old", second) not in state.rows
    assert ("s-old", ids["committed"]) not in state.rows
    # The next sweep, with the fault gone, reclaims it.
    monkeypatch.undo()
    report = sweep.reclaim(store, store.cutoff)
    assert _items(report) == [(ids["orphan"], "reclaim", ["s-old"], len(b"orphan bytes"), True)]


def test_reclaim_refuses_corrupt_manifest(sweep_store):
    store = sweep_store
    with store.manifest.path.open("ab") as handle:
        handle.write(b'{"op":"mystery"}\n')
    before = tree(store.root)
    with pytest.raises(Corrupt):
        sweep.reclaim(store, store.cutoff)
    with pytest.raises(Corrupt):
        sweep.reclaim(store, store.cutoff, dry_run=True)
    assert tree(store.root) == before


def test_plan_reclaim_cutoff_inclusive(store):
    a = "a" * 64
    record(store, intent_event(a, "s-1", 5000))
    state = StateView(store.manifest.read_state())
    assert sweep.plan_reclaim(state, 4999) == (0, [])
    scanned, plan = sweep.plan_reclaim(state, 5000)
    assert scanned == 1
    assert [(i, [r.session_id for r in rows], live) for i, rows, live in plan] == [(a, ["s-1"], None)]


def test_plan_reclaim_every_aged_row_of_an_orphan(store):
    a = "a" * 64
    record(store, intent_event(a, "s-2", 1000), intent_event(a, "s-1", 2000))
    scanned, plan = sweep.plan_reclaim(StateView(store.manifest.read_state()), 3000)
    assert scanned == 2
    [(aid, rows, live)] = plan
    assert (aid, [r.session_id for r in rows], live) == (a, ["s-1", "s-2"], None)


def test_check_grace():
    now = 1_764_150_000_000
    for cutoff in (now - 59_999, now, now + DAY):
        with pytest.raises(Refused) as info:
            core.check_grace(cutoff, now, force=False)
        assert info.value.exit_code == 4
        core.check_grace(cutoff, now, force=True)  # forced: allowed
    core.check_grace(now - 60_000, now, force=False)
    core.check_grace(now - DAY, now, force=False)


# -- get -----------------------------------------------------------------------------
def test_get_to_file_verifies_hash(store, tmp_path):
    aid = add_blob(store, b"original")
    dest = tmp_path / "out.bin"
    assert transfer.get_to_file(store, aid, dest) == (8, None)
    assert dest.read_bytes() == b"original"
    # Same size, different bytes: a mismatch is corruption, and no output is left.
    blob = store.blobs.blob_path(aid)
    os.chmod(blob, 0o644)
    blob.write_bytes(b"ORIGINAL")
    dest2 = tmp_path / "out2.bin"
    with pytest.raises(Corrupt, match="hash mismatch"):
        transfer.get_to_file(store, aid, dest2)
    assert not dest2.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".out2")) == []
