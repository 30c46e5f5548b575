"""What every manifest backend must do (lashctl.backends.base.ManifestBackend).

``lashctl.fold.fold`` is the one definition of a manifest's state: whatever
events are appended, in whatever batches, every query must answer what the
fold of the same events says.
"""

from __future__ import annotations

import itertools
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conformance.conftest import make_manifest
from lashctl.errors import EXIT_LOCKED, LockTimeout
from lashctl.fold import Event, Row, fold

# Ids that share prefixes of 1, 2, 3 and 5 characters, so prefix queries cut
# between neighbours; sessions whose byte order differs from a naive one.
IDS = sorted({"0" * 64, "a" * 64, "ab" * 32, "abc" + "0" * 61, "abcde" + "1" * 59, "abcdf" + "0" * 59, "f" * 64})
SESSIONS = ["S", "s1", "s2", "é", "s1 with space"]
PREFIXES = ["", "0", "a", "ab", "abc", "abcde", "abd", "f", "abcde" + "1" * 59, "9"]
TIMES = st.integers(min_value=0, max_value=12)  # few values: ties in intent time are common

settings.register_profile(
    "conformance",
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def aid(n: int) -> str:
    return f"{n:064x}"


# -- a fresh manifest per hypothesis example -----------------------------------------
@pytest.fixture
def fresh(manifest_kind, request, tmp_path):
    """A callable giving a fresh, empty manifest of the parametrised kind."""
    counter = itertools.count()
    if manifest_kind == "postgres":
        backend = make_manifest("postgres", request, tmp_path)

        def empty():
            import psycopg

            from lashctl.backends.manifests.postgres import TABLE

            with psycopg.connect(backend.url, autocommit=True) as conn:
                conn.execute(f"TRUNCATE {TABLE}")
            return backend

        return empty

    def new_file():
        directory = tmp_path / f"m{next(counter)}"
        directory.mkdir()
        return make_manifest(manifest_kind, request, directory)

    return new_file


def write(manifest, batches: list[list[Event]]) -> None:
    for batch in batches:
        with manifest.writing() as writer:
            writer.append(batch)


def fold_all(batches: list[list[Event]]) -> dict[tuple[str, str], Row]:
    return fold(e for batch in batches for e in batch)


def expected_uncommitted(rows, cutoff, session) -> list[Row]:
    out = [
        r
        for r in rows.values()
        if not r.committed
        and (cutoff is None or r.intent_at_epoch_ms <= cutoff)
        and (session is None or r.session_id == session)
    ]
    return sorted(out, key=lambda r: (r.intent_at_epoch_ms, r.attachment_id, r.session_id))


def by_id(rows) -> dict[str, list[Row]]:
    out: dict[str, list[Row]] = {}
    for row in sorted(rows.values(), key=lambda r: (r.attachment_id, r.session_id)):
        out.setdefault(row.attachment_id, []).append(row)
    return out


def check_agrees(view, rows: dict[tuple[str, str], Row]) -> None:
    """Every query of ``view`` answers what the fold ``rows`` says."""
    keys = [(s, i) for s in SESSIONS for i in IDS]
    assert view.rows_for_keys(keys) == rows
    assert view.rows_for_keys([]) == {}
    groups = by_id(rows)
    for attachment_id in IDS:
        assert view.rows_for_id(attachment_id) == groups.get(attachment_id, [])
    for prefix in PREFIXES:
        assert view.ids_with_prefix(prefix) == [i for i in groups if i.startswith(prefix)], prefix
        assert list(view.rows_by_id(prefix)) == [g for i, g in groups.items() if i.startswith(prefix)], prefix
    assert list(view.rows_by_id()) == list(groups.values())
    for cutoff in (None, -1, 0, 3, 6, 12):
        for session in (None, *SESSIONS):
            assert list(view.uncommitted(cutoff, session)) == expected_uncommitted(rows, cutoff, session), (
                cutoff,
                session,
            )
        if cutoff is not None:
            aged_ids = sorted({r.attachment_id for r in expected_uncommitted(rows, cutoff, None)})
            assert list(view.aged(cutoff)) == [groups[i] for i in aged_ids], cutoff
    assert view.row_count() == len(rows)


def event_strategy(guarded: bool):
    ids, sessions = st.sampled_from(IDS), st.sampled_from(SESSIONS)
    choices = [
        st.builds(Event.intent, ids, sessions, TIMES),
        st.builds(Event.intent, ids, sessions, TIMES),
        st.builds(Event.commit, ids, sessions, TIMES),
        st.builds(Event.forget, ids, sessions),
    ]
    if guarded:
        choices.append(st.builds(Event.forget, ids, sessions, TIMES))
    return st.one_of(choices)


def batches_strategy(guarded: bool):
    return st.lists(st.lists(event_strategy(guarded), min_size=1, max_size=12), min_size=1, max_size=6)


# -- the fold ------------------------------------------------------------------------
@pytest.mark.slow  # hypothesis: 40 random logs per backend
@settings(settings.get_profile("conformance"))
@given(batches=batches_strategy(guarded=False))
def test_queries_agree_with_the_fold(fresh, batches):
    manifest = fresh()
    write(manifest, batches)
    rows = fold_all(batches)
    with manifest.reading() as view:
        check_agrees(view, rows)
    with manifest.writing() as writer:  # a writer's view answers the same
        check_agrees(writer, rows)


@pytest.mark.slow  # hypothesis: 40 random logs per backend
@settings(settings.get_profile("conformance"))
@given(batches=batches_strategy(guarded=True))
def test_guarded_forgets_agree_with_the_fold(fresh, manifest_kind, batches, request):
    manifest = fresh()
    write(manifest, batches)
    with manifest.reading() as view:
        check_agrees(view, fold_all(batches))


def test_several_appends_in_one_block_and_one_batch(manifest):
    a, b = IDS[1], IDS[2]
    events = [
        Event.intent(a, "s1", 5),
        Event.intent(a, "s1", 3),
        Event.commit(a, "s1", 7),
        Event.commit(a, "s1", 9),
        Event.intent(a, "s1", 11),
        Event.intent(b, "s1", 1),
        Event.forget(b, "s1"),
        Event.intent(b, "s1", 2),
        Event.commit(b, "s2", 4),
    ]
    with manifest.writing() as writer:
        writer.append(events[:4])
        writer.append([])
        writer.append(events[4:])
    with manifest.reading() as view:
        check_agrees(view, fold(events))
        assert view.rows_for_id(a) == [Row("s1", a, f"sha256:{a}", 5, 7)]
        assert view.rows_for_id(b) == [Row("s1", b, f"sha256:{b}", 2, None)]


# -- guarded forgets ---------------------------------------------------------------
@pytest.fixture
def guard_case(manifest, manifest_kind, request):
    return manifest


def test_a_guarded_forget_keeps_a_row_that_came_back(guard_case):
    manifest = guard_case
    old, fresh_, committed, gone = IDS[0], IDS[1], IDS[2], IDS[3]
    cutoff = 100
    setup = [
        Event.intent(old, "s1", 50),
        Event.intent(fresh_, "s1", 50),
        Event.intent(fresh_, "s1", 150),  # refreshed after the cutoff
        Event.intent(committed, "s1", 50),
        Event.commit(committed, "s1", 60),
        Event.intent(gone, "s1", 100),
    ]  # exactly at the cutoff: forgotten
    forgets = [Event.forget(i, "s1", until_ms=cutoff) for i in (old, fresh_, committed, gone)]
    write(manifest, [setup])
    with manifest.sweeping() as sweep:
        sweep.append(forgets)
    with manifest.reading() as view:
        assert view.rows_for_keys([("s1", i) for i in IDS]) == fold(setup + forgets)
        assert sorted(r.attachment_id for g in view.rows_by_id() for r in g) == sorted([fresh_, committed])


def test_a_guarded_forget_then_an_intent_in_one_batch(guard_case):
    manifest = guard_case
    a, b = IDS[1], IDS[2]
    setup = [Event.intent(a, "s1", 50), Event.commit(a, "s1", 60), Event.intent(b, "s1", 50)]
    batch = [
        Event.forget(a, "s1", until_ms=100),
        Event.intent(a, "s1", 200),
        Event.forget(b, "s1", until_ms=100),
        Event.intent(b, "s1", 200),
    ]
    write(manifest, [setup, batch])
    with manifest.reading() as view:
        assert view.rows_for_keys([("s1", a), ("s1", b)]) == fold(setup + batch)


def test_an_unguarded_forget_deletes_any_row(manifest):
    a = IDS[1]
    write(manifest, [[Event.intent(a, "s1", 50), Event.commit(a, "s1", 60)], [Event.forget(a, "s1")]])
    with manifest.reading() as view:
        assert view.rows_for_id(a) == []
        assert view.row_count() == 0


# -- transactions and locks --------------------------------------------------------
def test_a_reader_sees_the_rows_after_the_block(manifest):
    a = IDS[1]
    with manifest.writing() as writer:
        writer.append([Event.intent(a, "s1", 5)])
        assert [r.attachment_id for r in writer.rows_for_id(a)] == [a]  # the writer sees its own append
    with manifest.reading() as view:
        assert view.rows_for_id(a) == [Row("s1", a, f"sha256:{a}", 5)]


def test_an_error_in_a_writing_block(manifest, manifest_kind):
    """JSON-lines: each append is durable at once (nothing to roll back).
    PostgreSQL: the block is one transaction, rolled back by an error; lash's
    session databases: one per database touched, all rolled back."""
    a, b = IDS[1], IDS[2]
    write(manifest, [[Event.intent(a, "s1", 1)]])
    with pytest.raises(RuntimeError):
        with manifest.writing() as writer:
            writer.append([Event.intent(b, "s1", 5), Event.commit(a, "s1", 6)])
            raise RuntimeError("boom")
    with manifest.reading() as view:
        rows = view.rows_for_keys([("s1", a), ("s1", b)])
    if manifest_kind == "jsonl":
        assert rows == fold([Event.intent(a, "s1", 1), Event.intent(b, "s1", 5), Event.commit(a, "s1", 6)])
    else:
        assert rows == fold([Event.intent(a, "s1", 1)])


def test_a_second_sweep_times_out(manifest_kind, request, tmp_path):
    first = make_manifest(manifest_kind, request, tmp_path)
    second = make_manifest(manifest_kind, request, tmp_path)  # another handle on the same manifest
    if manifest_kind == "postgres":
        second = type(first)(first.url, lock_timeout=0.3)
    elif manifest_kind == "lash-sqlite":
        second = type(first)(first.name, lock_timeout=0.3)
    else:
        second = type(first)(first.path, lock_timeout=0.3, warn=lambda _m: None)
    with first.sweeping():
        started = time.monotonic()
        with pytest.raises(LockTimeout) as caught:
            with second.sweeping():
                pytest.fail("two sweeps at once")
        assert time.monotonic() - started >= 0.25
    assert caught.value.exit_code == EXIT_LOCKED == 75
    with second.sweeping() as sweep:  # free again once the first is done
        sweep.append([Event.intent(IDS[1], "s1", 1)])


def test_a_second_sweep_waits_for_the_first(manifest_kind, request, tmp_path):
    first = make_manifest(manifest_kind, request, tmp_path)
    if manifest_kind == "postgres":
        second = type(first)(first.url, lock_timeout=10)
    elif manifest_kind == "lash-sqlite":
        second = type(first)(first.name, lock_timeout=10)
    else:
        second = type(first)(first.path, lock_timeout=10, warn=lambda _m: None)
    held, release = threading.Event(), threading.Event()

    def hold():
        with first.sweeping() as sweep:
            sweep.append([Event.intent(IDS[1], "s1", 1)])
            held.set()
            release.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert held.wait(10)
        timer = threading.Timer(0.4, release.set)
        timer.start()
        started = time.monotonic()
        with second.sweeping() as sweep:
            waited = time.monotonic() - started
            assert [r.attachment_id for r in sweep.rows_for_id(IDS[1])] == [IDS[1]]
    finally:
        release.set()
        thread.join(10)
    assert waited >= 0.3


def test_writers_and_readers_outside_a_sweep(manifest_kind, request, tmp_path):
    """A reader never waits for a sweep."""
    first = make_manifest(manifest_kind, request, tmp_path)
    with first.sweeping() as sweep:
        sweep.append([Event.intent(IDS[1], "s1", 1)])
        with first.reading() as view:  # taken while the sweep holds its lock: no wait, the sweep's write seen
            assert view.row_count() == 1
            assert [r.session_id for r in view.rows_for_id(IDS[1])] == ["s1"]


# -- streams -----------------------------------------------------------------------
BIG = 5000  # more than one round trip of any backend's stream


@pytest.fixture
def big_manifest(manifest):
    events = [Event.intent(aid(n), f"s{n % 3}", n) for n in range(BIG)]
    write(manifest, [events])
    return manifest


@pytest.mark.parametrize("way", ["reading", "writing", "sweeping"])
def test_streams_can_be_abandoned_after_the_first_item(big_manifest, way):
    with getattr(big_manifest, way)() as view:
        stream = view.rows_by_id()
        first = next(stream)
        assert [r.attachment_id for r in first] == [aid(0)]
        uncommitted = view.uncommitted(None, None)
        assert next(uncommitted).attachment_id == aid(0)
        aged = view.aged(BIG)
        assert next(aged)[0].attachment_id == aid(0)
        # The view still answers with the streams left open...
        assert view.row_count() == BIG
        assert next(stream)[0].attachment_id == aid(1)
        # ...and after they are closed.
        for s in (stream, uncommitted, aged):
            close = getattr(s, "close", None)
            if close is not None:
                close()
        assert view.row_count() == BIG
        assert len(view.rows_for_keys([("s0", aid(0)), ("s1", aid(1)), ("s0", aid(1))])) == 2


def test_streams_read_to_the_end(big_manifest):
    with big_manifest.reading() as view:
        assert sum(1 for _ in view.rows_by_id()) == BIG
        assert sum(1 for _ in view.uncommitted(None, "s1")) == len(range(1, BIG, 3))
        assert sum(len(g) for g in view.aged(BIG // 2)) == BIG // 2 + 1
        prefix = aid(0x1234)[:62]  # ids 0x1200 to 0x12ff
        assert view.ids_with_prefix(prefix) == [aid(n) for n in range(0x1200, 0x1300)]
        assert [g[0].attachment_id for g in view.rows_by_id(prefix)] == [aid(n) for n in range(0x1200, 0x1300)]


# -- owners ------------------------------------------------------------------------
def test_keep_reason_is_none_for_rows_without_owners(manifest):
    events = [Event.intent(IDS[1], "s1", 1), Event.intent(IDS[2], "s2", 2), Event.commit(IDS[2], "s2", 3)]
    write(manifest, [events])
    with manifest.reading() as view:
        rows = [r for g in view.rows_by_id() for r in g]
        assert len(rows) == 2
        assert all(r.owner_kind is None and r.owner_id is None for r in rows)
        assert [view.keep_reason(r) for r in rows] == [None, None]
    with manifest.sweeping() as sweep:
        assert [sweep.keep_reason(r) for g in sweep.aged(10) for r in g] == [None]


# -- the backend itself ------------------------------------------------------------
def test_exists_and_litter(manifest, manifest_kind):
    manifest.check_writable()
    if manifest_kind == "jsonl":
        assert manifest.exists() is False  # nothing written yet
    write(manifest, [[Event.intent(IDS[1], "s1", 1)]])
    assert manifest.exists() is True
    assert manifest.litter() == []
    assert manifest.name
