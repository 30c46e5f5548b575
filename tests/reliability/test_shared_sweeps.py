"""Sweeps of a store whose manifest is shared with writers that a sweep does
not stop (lash's PostgreSQL table): each candidate is looked at again just
before its delete, and once after (README, "Beyond one machine")."""

from __future__ import annotations

import io
import os

import pytest

from lashctl import core, sweep
from lashctl.fold import Event


@pytest.fixture
def shared(tmp_path, pg_url):
    store = core.Store(tmp_path / "store", pg_url)
    store.manifest.init()
    return store


def _blob(store, data: bytes, *, age_s: int = 3 * 86400) -> str:
    with store.blobs.opened():
        store.blobs.ensure_writable_layout()
        staged = store.blobs.stage(io.BytesIO(data), "test")
        store.blobs.install(staged)
    old = 1_600_000_000
    os.utime(store.blobs.blob_path(staged.attachment_id), (old, old))
    return staged.attachment_id


def _row(store, attachment_id: str, *, commit: bool) -> None:
    with store.manifest.writing() as writer:
        writer.append([Event.intent(attachment_id, "lash", 1_000)])
        if commit:
            writer.append([Event.commit(attachment_id, "lash", 2_000)])


@pytest.mark.parametrize("command", ["gc", "reclaim"])
def test_a_row_that_appears_during_the_delete_is_reported(shared, command, monkeypatch):
    a = _blob(shared, b"raced bytes")
    if command == "reclaim":
        with shared.manifest.writing() as writer:
            writer.append([Event.intent(a, "old", 500)])
    real_delete = type(shared.blobs).delete

    def racing_delete(blobs, attachment_id):
        freed = real_delete(blobs, attachment_id)
        _row(shared, attachment_id, commit=True)  # lash commits it meanwhile
        return freed

    monkeypatch.setattr(type(shared.blobs), "delete", racing_delete)
    cutoff = 1_600_000_000_000 + 1  # after the blob's mtime and every intent
    if command == "gc":
        report = sweep.gc(shared, cutoff, force=True)
    else:
        report = sweep.reclaim(shared, cutoff)
    assert [(i.attachment_id, i.action) for i in report.items] == [(a, sweep.DELETED_WHILE_REFERENCED)]
    assert report.failures  # exit 5


def test_gc_spares_an_object_written_again_before_its_delete(shared, monkeypatch):
    a = _blob(shared, b"refreshed bytes")
    real_stat = type(shared.blobs).stat
    calls = {"n": 0}

    def refreshed_stat(blobs, attachment_id, sidecar=False):
        st = real_stat(blobs, attachment_id, sidecar)
        calls["n"] += 1
        if calls["n"] > 1 and not sidecar:  # the second look: lash re-PUT it
            os.utime(blobs.blob_path(attachment_id))
            st = real_stat(blobs, attachment_id, sidecar)
        return st

    monkeypatch.setattr(type(shared.blobs), "stat", refreshed_stat)
    report = sweep.gc(shared, 1_600_000_000_000 + 1, force=True)
    assert report.items == []
    assert shared.blobs.stat(a) is not None


def test_an_owner_held_intent_is_kept_not_forgotten(shared):
    """lash's rule: an intent of a turn or process not proven dead stays, rows and bytes."""
    import psycopg

    a = _blob(shared, b"owned bytes")
    b = _blob(shared, b"plain orphan")
    with psycopg.connect(shared.manifest.url, autocommit=True) as conn:
        conn.execute("INSERT INTO lash_attachment_manifest VALUES (%s, 'z', 'u', 1000, NULL, 'turn', 't1')", (a,))
        conn.execute("INSERT INTO lash_attachment_manifest VALUES (%s, 'y', 'u', 1000, NULL, 'turn', 't2')", (b,))
        conn.execute("INSERT INTO lash_attachment_manifest VALUES (%s, 'x', 'u', 1000, NULL, NULL, NULL)", (b,))
    report = sweep.reclaim(shared, 1_600_000_000_000 + 1)
    with shared.manifest.reading() as view:
        assert [r.session_id for r in view.rows_for_id(a)] == ["z"]
        # b: the plain row is forgotten, the owned one stays and keeps the bytes
        assert [r.session_id for r in view.rows_for_id(b)] == ["y"]
    assert shared.blobs.stat(a) is not None and shared.blobs.stat(b) is not None
    assert [(i.attachment_id, i.action, i.sessions) for i in report.items] == [(b, sweep.RELEASE, ["x"])]


def test_a_dry_run_spares_what_the_real_run_spares(shared):
    fresh = _blob(shared, b"written just now", age_s=0)
    os.utime(shared.blobs.blob_path(fresh))  # LastModified: now
    old = _blob(shared, b"written long ago")
    with shared.manifest.writing() as writer:
        writer.append([Event.intent(fresh, "s", 500), Event.intent(old, "s", 500)])
    cutoff = 1_600_000_000_000 + 1  # after the intents and the old blob, before the fresh one
    dry = sweep.reclaim(shared, cutoff, dry_run=True)
    real = sweep.reclaim(shared, cutoff)
    assert sorted((i.attachment_id, i.action, i.byte_len) for i in dry.items) == sorted(
        (i.attachment_id, i.action, i.byte_len) for i in real.items
    )
    assert {i.attachment_id: i.action for i in real.items} == {fresh: sweep.SPARED, old: sweep.RECLAIM}


def test_a_commit_during_a_long_sweep_never_stamps_a_deleted_blobs_row_unreported(shared, monkeypatch):
    """The rows of each batch are forgotten right after its delete: a commit
    that comes later finds no intent (as with a JSON-lines manifest), and one
    that comes in between is reported (deleted_while_referenced)."""
    monkeypatch.setattr(sweep, "SWEEP_BATCH", 1)
    a, b = sorted([_blob(shared, b"first orphan"), _blob(shared, b"second orphan")])
    with shared.manifest.writing() as writer:
        writer.append([Event.intent(a, "s", 500), Event.intent(b, "s", 500)])
    real_delete_many = type(shared.blobs).delete_many

    def committing_delete_many(blobs, ids, known=None):
        if ids == [b]:  # the second batch: lash commits the first one's row meanwhile
            with shared.manifest.writing() as writer:
                writer.append([Event.commit(a, "s", 2_000)])
        return real_delete_many(blobs, ids, known)

    monkeypatch.setattr(type(shared.blobs), "delete_many", committing_delete_many)
    report = sweep.reclaim(shared, 1_600_000_000_000 + 1)
    with shared.manifest.reading() as view:
        rows_a = view.rows_for_id(a)
    actions = {i.attachment_id: i.action for i in report.items}
    assert rows_a == [] or actions[a] == sweep.DELETED_WHILE_REFERENCED, (rows_a, actions)


def test_a_commit_racing_a_sweeps_forget_is_never_reported_committed_for_a_row_that_went(shared, monkeypatch):
    """commit reads its rows, then stamps them. A sweep that forgets the row
    in between (after deleting the bytes) must not leave commit saying
    "committed" for a row that is gone: commit's read locks the rows it will
    stamp, so the sweep waits and then reports the loss, or commit finds no
    intent."""
    import threading

    from lashctl import transfer
    from lashctl.backends.manifests.postgres import PostgresView
    from lashctl.ids import parse_id

    a = _blob(shared, b"committed during the sweep")
    with shared.manifest.writing() as writer:
        writer.append([Event.intent(a, "s", 500)])
    read_done, sweep_done = threading.Event(), threading.Event()
    outcome: dict = {}
    real_rows = PostgresView.rows_for_keys

    def slow_rows(view, keys):
        rows = real_rows(view, keys)
        if keys == [("s", a)]:
            read_done.set()
            sweep_done.wait(3)  # the sweep runs now (or waits for this transaction)
        return rows

    monkeypatch.setattr(PostgresView, "rows_for_keys", slow_rows)

    def committer():
        outcome["commit"] = transfer.commit(shared, "s", [parse_id(a)])

    worker = threading.Thread(target=committer)
    worker.start()
    assert read_done.wait(10)
    sweeper = core.Store(shared.blobs.root, shared.manifest.url)
    outcome["sweep"] = sweep.reclaim(sweeper, 1_600_000_000_000 + 1)
    sweep_done.set()
    worker.join(20)
    (result,) = outcome["commit"]
    actions = {i.attachment_id: i.action for i in outcome["sweep"].items}
    with shared.manifest.reading() as view:
        rows = view.rows_for_id(a)
    if result.status == transfer.COMMITTED:
        assert rows and rows[0].committed
        assert actions.get(a) in (None, sweep.DELETED_WHILE_REFERENCED, sweep.RELEASE), actions
    else:
        assert result.status == transfer.NO_INTENT and rows == []


def test_reclaim_says_how_many_aged_intents_it_kept_for_their_lash_owners(shared, cli, store):
    import json

    import psycopg

    a = _blob(shared, b"only owned rows")
    with psycopg.connect(shared.manifest.url, autocommit=True) as conn:
        for session in ("z1", "z2"):
            conn.execute(
                "INSERT INTO lash_attachment_manifest VALUES (%s, %s, 'u', 1000, NULL, 'turn', 't1')", (a, session)
            )
    report = sweep.reclaim(shared, 1_600_000_000_000 + 1, dry_run=True)
    assert report.items == [] and report.scanned_intents == 2 and report.kept_for_owners == 2
    args = ["--store", str(shared.blobs.root), "--manifest", shared.manifest.url]
    human = cli(*args[2:], "reclaim", "--dry-run", "--before", "2020-09-13T12:26:40Z")
    assert human.exit_code == 0, human.stderr
    assert "2 aged intent(s)" in human.stderr and "lash owner" in human.stderr
    document = json.loads(cli(*args[2:], "--json", "reclaim", "--dry-run", "--before", "2020-09-13T12:26:40Z").stdout)
    assert document["scanned_intents"] == 2 and document["items"] == []


def _old_intent(store, attachment_id: str, session: str) -> None:
    """An intent as a writer whose clock is days behind stamps it."""
    with store.manifest.writing() as writer:
        writer.append([Event.intent(attachment_id, session, 700)])


def test_a_row_from_a_clock_behind_that_appears_after_the_forget_keeps_the_bytes(shared, monkeypatch):
    from lashctl import faults

    a = _blob(shared, b"re-put by a slow clock")
    with shared.manifest.writing() as writer:
        writer.append([Event.intent(a, "old", 500)])
    real_point = faults.point

    def racing(name):
        if name == "reclaim.forgotten":
            _old_intent(shared, a, "late")  # lash puts it again meanwhile
        real_point(name)

    monkeypatch.setattr(faults, "point", racing)
    report = sweep.reclaim(shared, 1_600_000_000_000 + 1)
    assert [(i.attachment_id, i.action) for i in report.items] == [(a, sweep.RELEASE)]
    assert shared.blobs.stat(a) is not None


def test_an_intent_that_appears_during_the_delete_is_forgotten_so_its_commit_fails(shared, monkeypatch):
    a = _blob(shared, b"raced by a slow clock")
    with shared.manifest.writing() as writer:
        writer.append([Event.intent(a, "old", 500)])
    real_delete = type(shared.blobs).delete

    def racing_delete(blobs, attachment_id):
        freed = real_delete(blobs, attachment_id)
        _old_intent(shared, attachment_id, "late")
        return freed

    monkeypatch.setattr(type(shared.blobs), "delete", racing_delete)
    report = sweep.reclaim(shared, 1_600_000_000_000 + 1)
    assert [(i.attachment_id, i.action) for i in report.items] == [(a, sweep.DELETED_WHILE_REFERENCED)]
    with shared.manifest.reading() as view:
        assert view.rows_for_id(a) == []  # the late client's commit finds no intent: it uploads again


def test_a_server_that_fails_mid_delete_leaves_rows_only_where_bytes_are(shared, monkeypatch):
    """An S3 delete that fails after some deletes (a 503): the sweep stops
    (exit 69), the rows of bytes still there come back for the next sweep,
    and no row is left for bytes that are gone."""
    from lashctl.errors import Unavailable

    ids = [_blob(shared, f"orphan {n}".encode()) for n in range(4)]
    with shared.manifest.writing() as writer:
        writer.append([Event.intent(i, "old", 500) for i in ids])
    real_delete = type(shared.blobs).delete
    calls = {"n": 0}

    def failing_delete(blobs, attachment_id):
        calls["n"] += 1
        if calls["n"] > 2:
            raise Unavailable("the server answered HTTP 503")
        return real_delete(blobs, attachment_id)

    monkeypatch.setattr(type(shared.blobs), "delete", failing_delete)
    monkeypatch.setattr(
        type(shared.blobs), "delete_many", lambda blobs, many, known=None: {i: failing_delete(blobs, i) for i in many}
    )
    with pytest.raises(Unavailable):
        sweep.reclaim(shared, 1_600_000_000_000 + 1)
    with shared.manifest.reading() as view:
        for attachment_id in ids:
            present = shared.blobs.stat(attachment_id) is not None
            assert bool(view.rows_for_id(attachment_id)) == present, attachment_id
    assert sum(shared.blobs.stat(i) is not None for i in ids) == 2
