"""The SQLite cache of the manifest's fold (lashctl.backends.manifests.jsonl.cache): it must always answer
exactly what ``Manifest.read_state()`` answers, whatever happened to the file."""

from __future__ import annotations

import bisect
import hashlib
import json
import os
import random
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lashctl.backends.manifests.jsonl import cache as index_mod
from lashctl.backends.manifests.jsonl import cache_store, cache_sync
from lashctl.errors import Corrupt
from lashctl.backends.manifests.jsonl.cache import ManifestIndex, index_path
from lashctl.backends.manifests.jsonl.log import Manifest, Row
from backend_helpers import commit_event, forget_event, intent_event

HEADER = b'{"op":"header","format":"lashctl-manifest","version":1}'
T0 = 1_764_150_000_000
ROWS = 20_000


class Recorder:
    def __init__(self) -> None:
        self.messages: list[str] = []

    def __call__(self, message: str) -> None:
        self.messages.append(message)


def enc(event) -> bytes:
    obj = event if isinstance(event, dict) else event.to_json()
    return json.dumps(obj, separators=(",", ":")).encode("utf-8")


def aid(n: int) -> str:
    return f"{n:064x}"


def add_bytes(path: Path, data: bytes) -> None:
    with open(path, "ab") as handle:
        handle.write(data)


def append(m, events: list[dict]) -> None:
    """Append to a log (``Manifest``) or to a manifest backend's log."""
    log = getattr(m, "log", m)
    with log.locked():
        log.append(events)


def sort_key(row: Row) -> tuple:
    return (row.intent_at_epoch_ms, row.attachment_id, row.session_id)


def expected_uncommitted(state, cutoff: int | None, session: str | None) -> list[Row]:
    rows = [
        r
        for r in state.rows.values()
        if r.committed_at_epoch_ms is None
        and (cutoff is None or r.intent_at_epoch_ms <= cutoff)
        and (session is None or r.session_id == session)
    ]
    return sorted(rows, key=sort_key)


def assert_same(ix: ManifestIndex, m: Manifest, keys_seen=None, sample: int | None = None) -> None:
    """Every view of the index equals the fold of the file."""
    state = Manifest(m.path, warn=Recorder()).read_state()
    keys = set(state.rows) | set(keys_seen or ())
    assert ix.rows_for_keys(sorted(keys)) == state.rows
    ids = sorted(state.attachment_ids())
    assert ix.ids_with_prefix("") == ids
    check_ids = sorted({k[1] for k in keys})
    if sample is not None and len(check_ids) > sample:
        check_ids = random.Random(1).sample(check_ids, sample)
    for attachment_id in check_ids:
        want = sorted(state.rows_for(attachment_id), key=lambda r: r.session_id)
        assert ix.rows_for_id(attachment_id) == want
        prefix = attachment_id[:3]
        lo = bisect.bisect_left(ids, prefix)
        hi = bisect.bisect_left(ids, prefix[:-1] + chr(ord(prefix[-1]) + 1))
        assert ix.ids_with_prefix(prefix) == ids[lo:hi]
    assert list(ix.uncommitted(None, None)) == expected_uncommitted(state, None, None)
    times = sorted(r.intent_at_epoch_ms for r in state.rows.values())
    sessions = sorted({k[0] for k in keys})
    for cutoff in [times[len(times) // 2], times[0] - 1] if times else [T0]:
        assert list(ix.uncommitted(cutoff, None)) == expected_uncommitted(state, cutoff, None)
        for session in sessions[:3]:
            assert list(ix.uncommitted(cutoff, session)) == expected_uncommitted(state, cutoff, session)
    for session in sessions[:3] + ["no-such-session"]:
        assert list(ix.uncommitted(None, session)) == expected_uncommitted(state, None, session)


def meta(mpath: Path) -> dict:
    conn = sqlite3.connect(index_path(mpath))
    try:
        conn.row_factory = sqlite3.Row
        return dict(conn.execute("SELECT * FROM meta").fetchone())
    finally:
        conn.close()


def generate(path: Path, rows: int, seed: int = 7, sessions: int = 50) -> list[tuple[str, str]]:
    """A manifest of ``rows`` intents (85% committed, 3% forgotten, some refreshed,
    some ids shared by two sessions); returns every key used."""
    rng = random.Random(seed)
    out = [HEADER]
    later: list[bytes] = []
    keys = []
    for i in range(rows):
        session = f"s-{rng.randrange(sessions):04d}"
        attachment = aid(rng.getrandbits(256)) if rng.random() > 0.03 or not keys else keys[-1][1]
        if (session, attachment) in keys[-1:]:
            attachment = aid(rng.getrandbits(256))
        keys.append((session, attachment))
        at = T0 + i * 1000
        out.append(enc(intent_event(attachment, session, at)))
        fate = rng.random()
        if fate < 0.85:
            later.append(enc(commit_event(attachment, session, at + 500)))
        elif fate < 0.88:
            later.append(enc(forget_event(attachment, session)))
        elif fate < 0.90:
            later.append(enc(intent_event(attachment, session, at + 700)))
        if len(later) > 20 or i == rows - 1:
            rng.shuffle(later)
            out.extend(later)
            later.clear()
    path.write_bytes(b"\n".join(out) + b"\n")
    return keys


@pytest.fixture
def mpath(tmp_path: Path) -> Path:
    return tmp_path / "manifest.jsonl"


@pytest.fixture
def warn() -> Recorder:
    return Recorder()


@pytest.fixture
def big(tmp_path_factory) -> tuple[Path, list]:
    """A 20k-row manifest, generated once; tests copy it."""
    path = tmp_path_factory.mktemp("big") / "manifest.jsonl"
    keys = generate(path, ROWS)
    return path, keys


def copy_big(big, mpath: Path) -> list:
    mpath.write_bytes(big[0].read_bytes())
    return big[1]


# -- building and catching up -----------------------------------------------------
def test_initial_build_matches_fold(big, mpath: Path, warn: Recorder) -> None:
    keys = copy_big(big, mpath)
    m = Manifest(mpath, warn=warn)
    with ManifestIndex(m) as ix:
        ix.refresh()
        assert not ix.using_fallback
        assert_same(ix, m, keys, sample=300)
    info = meta(mpath)
    assert info["offset"] == mpath.stat().st_size
    assert info["lines"] == mpath.read_bytes().count(b"\n")
    assert not warn.messages


def test_incremental_appends(big, mpath: Path) -> None:
    keys = copy_big(big, mpath)
    m = Manifest(mpath, warn=Recorder())
    ix = ManifestIndex(m)
    ix.refresh()
    uncommitted = [r for r in ix.uncommitted(None, None)]
    s0, a0 = uncommitted[0].session_id, uncommitted[0].attachment_id
    s1, a1 = uncommitted[1].session_id, uncommitted[1].attachment_id
    committed = next(k for k in keys if (r := ix.rows_for_keys([k]).get(k)) and r.committed)
    append(m, [commit_event(a0, s0, T0 + 10**9)])
    ix.refresh()
    assert ix.rows_for_keys([(s0, a0)])[(s0, a0)].committed_at_epoch_ms == T0 + 10**9
    append(
        m,
        [
            intent_event(a1, s1, T0 + 10**10),
            commit_event(a0, s0, 5),  # later intent; 2nd commit loses
            intent_event(committed[1], committed[0], T0 + 10**10),  # no effect on a committed row
            forget_event(*reversed(keys[5])),
            intent_event(aid(1), "new", T0),
            commit_event(aid(2), "nobody", T0),
        ],
    )  # commit without intent: no-op
    ix.refresh()
    assert_same(ix, m, keys + [("new", aid(1)), ("nobody", aid(2))], sample=200)
    # a second, independent index (another process) sees the same
    with ManifestIndex(m) as other:
        other.refresh()
        assert_same(other, m, keys, sample=50)
    ix.close()


def test_steady_refresh_reads_no_lines_and_takes_no_write_lock(big, mpath: Path) -> None:
    copy_big(big, mpath)
    m = Manifest(mpath, warn=Recorder())
    ix = ManifestIndex(m)
    ix.refresh()
    blocker = sqlite3.connect(index_path(mpath), isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another process is writing the index
    try:
        start = time.perf_counter()
        for _ in range(100):
            ix.refresh()
        per_refresh = (time.perf_counter() - start) / 100
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    print(f"\nsteady-state refresh ({ROWS} rows): {per_refresh * 1e3:.3f} ms")
    assert per_refresh < 0.05  # well under 5 ms in practice; generous for slow CI
    ix.close()


def test_bom_crlf_blank_lines(mpath: Path) -> None:
    mpath.write_bytes(
        b"\xef\xbb\xbf"
        + HEADER
        + b"\r\n\n   \n"
        + enc(intent_event(aid(1), "s", T0))
        + b"\r\n"
        + b"\t\r\n"
        + enc(intent_event(aid(2), "s", T0))
        + b"\n"
        + enc(commit_event(aid(1), "s", T0 + 1))
        + b"\r\n"
    )
    m = Manifest(mpath, warn=Recorder())
    with ManifestIndex(m) as ix:
        ix.refresh()
        assert_same(ix, m)
        add_bytes(mpath, b"\n\n" + enc({"op": "bogus"}) + b"\n")
        with pytest.raises(Corrupt, match=r"manifest\.jsonl:10: unknown op"):
            ix.refresh()


def test_missing_manifest_is_empty_and_creates_nothing(mpath: Path) -> None:
    m = Manifest(mpath, warn=Recorder())
    with ManifestIndex(m) as ix:
        ix.refresh()
        assert ix.rows_for_keys([("s", aid(1))]) == {}
        assert ix.rows_for_id(aid(1)) == []
        assert ix.ids_with_prefix("") == []
        assert list(ix.uncommitted(None, None)) == []
    assert list(mpath.parent.iterdir()) == []


def test_header_only_and_empty_file(mpath: Path) -> None:
    m = Manifest(mpath, warn=Recorder())
    mpath.write_bytes(b"")
    with ManifestIndex(m) as ix:
        ix.refresh()
        assert ix.ids_with_prefix("") == []
        mpath.write_bytes(HEADER + b"\n")
        ix.refresh()
        assert ix.ids_with_prefix("") == []
        append(m, [intent_event(aid(3), "s", T0)])
        ix.refresh()
        assert_same(ix, m)


# -- tails -------------------------------------------------------------------------
def test_torn_tail_not_consumed_then_repaired(big, mpath: Path, warn: Recorder) -> None:
    keys = copy_big(big, mpath)
    m = Manifest(mpath, warn=warn)
    ix = ManifestIndex(m)
    ix.refresh()
    size = mpath.stat().st_size
    add_bytes(mpath, enc(intent_event(aid(9), "torn", T0))[:40])
    ix.refresh()
    assert meta(mpath)["offset"] == size
    assert len(warn.messages) == 1 and "torn final line" in warn.messages[0]
    assert warn.messages[0].startswith(f"{mpath}:{meta(mpath)['lines'] + 1}:")
    assert_same(ix, m, keys, sample=50)
    ix.refresh()  # warned again, like every read of the file
    assert len(warn.messages) == 2
    append(m, [intent_event(aid(9), "fixed", T0)])  # the writer truncates the torn line
    ix.refresh()
    assert ix.rows_for_keys([("fixed", aid(9)), ("torn", aid(9))]).keys() == {("fixed", aid(9))}
    assert meta(mpath)["offset"] == mpath.stat().st_size
    assert_same(ix, m, keys, sample=50)
    ix.close()


def test_complete_final_line_without_newline_is_seen_but_not_consumed(mpath: Path, warn: Recorder) -> None:
    mpath.write_bytes(
        HEADER + b"\n" + enc(intent_event(aid(1), "s", T0)) + b"\n" + enc(intent_event(aid(2), "s", T0 + 5)) + b"\n"
    )
    m = Manifest(mpath, warn=warn)
    ix = ManifestIndex(m)
    ix.refresh()
    consumed = mpath.stat().st_size
    for tail, check in [
        (enc(commit_event(aid(1), "s", T0 + 9)), lambda r: r[("s", aid(1))].committed_at_epoch_ms == T0 + 9),
        (enc(forget_event(aid(2), "s")), lambda r: ("s", aid(2)) not in r),
        (enc(intent_event(aid(0), "s", T0 - 1)), lambda r: ("s", aid(0)) in r),  # sorts first
        (enc(intent_event(aid(3), "t", T0 + 99)), lambda r: ("t", aid(3)) in r),  # sorts last
        (enc(intent_event(aid(1), "s", T0 + 3)), lambda r: r[("s", aid(1))].intent_at_epoch_ms == T0 + 3),
        (HEADER, lambda r: len(r) == 2),
        (b"   ", lambda r: len(r) == 2),
    ]:
        with open(mpath, "r+b") as handle:
            handle.truncate(consumed)
            handle.seek(consumed)
            handle.write(tail)
        ix.refresh()
        keys = [("s", aid(i)) for i in range(4)] + [("t", aid(3))]
        assert check(ix.rows_for_keys(keys))
        assert_same(ix, m, keys)
        assert meta(mpath)["offset"] == consumed
    assert not warn.messages
    # a final line that is JSON but not a valid event is corruption, as for read_state
    with open(mpath, "r+b") as handle:
        handle.truncate(consumed)
        handle.seek(consumed)
        handle.write(b'{"op":"intent"}')
    with pytest.raises(Corrupt, match=r":4: \"attachment_id\""):
        ix.refresh()
    # the writer completes the line by adding its newline: now it is consumed
    with open(mpath, "r+b") as handle:
        handle.truncate(consumed)
    add_bytes(mpath, enc(commit_event(aid(1), "s", T0 + 9)))
    ix.refresh()
    append(m, [intent_event(aid(5), "s", T0)])
    ix.refresh()
    assert meta(mpath)["offset"] == mpath.stat().st_size
    assert_same(ix, m, [("s", aid(i)) for i in range(6)])
    ix.close()


def test_manifest_of_one_unterminated_line(mpath: Path, warn: Recorder) -> None:
    mpath.write_bytes(b"\xef\xbb\xbf" + enc(intent_event(aid(1), "s", T0)))
    m = Manifest(mpath, warn=warn)
    with ManifestIndex(m) as ix:
        ix.refresh()
        assert_same(ix, m, [("s", aid(1))])
        mpath.write_bytes(b'\xef\xbb\xbf{"op":')
        ix.refresh()
        assert ix.ids_with_prefix("") == []
        assert warn.messages[-1].startswith(f"{mpath}:1: ignoring a torn final line")


# -- the file changed under the index -------------------------------------------------
def test_compaction_rebuilds(big, mpath: Path) -> None:
    keys = copy_big(big, mpath)
    m = Manifest(mpath, warn=Recorder())
    ix = ManifestIndex(m)
    ix.refresh()
    old_ino = meta(mpath)["ino"]
    with m.locked():
        state = m.read_state()
        m.compact(state)
    append(m, [intent_event(aid(77), "after", T0)])
    ix.refresh()
    info = meta(mpath)
    assert info["ino"] == str(mpath.stat().st_ino) != old_ino
    assert info["offset"] == mpath.stat().st_size
    assert_same(ix, m, keys + [("after", aid(77))], sample=100)
    ix.close()


def test_compaction_leaves_a_ready_cache(big, mpath: Path, monkeypatch) -> None:
    """compact stores the state it wrote as the new file's cache: the next
    refresh reads nothing, and appends after it are read from there on."""
    keys = copy_big(big, mpath)
    m = Manifest(mpath, warn=Recorder())
    with m.locked():
        index_mod.compact(m, m.read_state())
    info = meta(mpath)
    assert info["ino"] == str(mpath.stat().st_ino)
    assert info["offset"] == mpath.stat().st_size
    lines = mpath.read_bytes().count(b"\n")
    assert info["lines"] == lines

    def no_fold(*_args, **_kwargs):
        raise AssertionError("the cache was folded again")

    monkeypatch.setattr(cache_sync.LogSync, "_build", no_fold)
    with ManifestIndex(m) as ix:
        ix.refresh()
        assert_same(ix, m, keys, sample=100)
        assert ix.log_lines() == lines
    append(m, [intent_event(aid(78), "after", T0)])
    with ManifestIndex(m) as ix:
        ix.refresh()
        assert_same(ix, m, keys + [("after", aid(78))], sample=100)


def test_in_place_rewrite_same_size_rebuilds(mpath: Path) -> None:
    events = [intent_event(aid(i), "s", T0 + i) for i in range(50)]
    mpath.write_bytes(HEADER + b"\n" + b"".join(enc(e) + b"\n" for e in events))
    m = Manifest(mpath, warn=Recorder())
    ix = ManifestIndex(m)
    ix.refresh()
    before = mpath.stat()
    # an editor turns line 20's intent into another id, same length
    data = mpath.read_bytes()
    old, new = enc(events[18]), enc(intent_event(aid(999), "s", T0 + 18))
    assert len(old) == len(new)
    mpath.write_bytes(data.replace(old, new))
    os.utime(mpath, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))
    assert mpath.stat().st_size == before.st_size and mpath.stat().st_ino == before.st_ino
    ix.refresh()
    assert ix.rows_for_id(aid(18)) == []
    assert_same(ix, m, [("s", aid(i)) for i in range(50)] + [("s", aid(999))])
    ix.close()


def test_in_place_rewrite_of_last_line_with_old_mtime_rebuilds(mpath: Path) -> None:
    events = [intent_event(aid(i), "s", T0 + i) for i in range(10)]
    mpath.write_bytes(HEADER + b"\n" + b"".join(enc(e) + b"\n" for e in events))
    m = Manifest(mpath, warn=Recorder())
    ix = ManifestIndex(m)
    ix.refresh()
    data = mpath.read_bytes().replace(enc(events[-1]), enc(intent_event(aid(0xABC), "s", T0 + 9)))
    mpath.write_bytes(data + enc(commit_event(aid(0xABC), "s", T0 + 10)) + b"\n")  # and grew
    ix.refresh()  # detected by the last line's hash
    assert ix.rows_for_id(aid(9)) == []
    assert_same(ix, m, [("s", aid(i)) for i in range(10)] + [("s", aid(0xABC))])
    ix.close()


def test_in_place_rewrite_of_first_line_with_old_mtime_rebuilds(mpath: Path) -> None:
    events = [intent_event(aid(i), "s", T0 + i) for i in range(10)]  # no header: line 1 is an event
    mpath.write_bytes(b"".join(enc(e) + b"\n" for e in events))
    m = Manifest(mpath, warn=Recorder())
    ix = ManifestIndex(m)
    ix.refresh()
    before = mpath.stat()
    with open(mpath, "r+b") as handle:  # same size, same last line, mtime put back
        handle.write(enc(intent_event(aid(0xF), "s", T0)))
    os.utime(mpath, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert mpath.stat().st_mtime_ns == before.st_mtime_ns
    ix.refresh()  # detected by the first line's hash
    assert_same(ix, m, [("s", aid(i)) for i in range(16)])
    ix.close()


def test_truncation_below_offset_rebuilds(big, mpath: Path) -> None:
    keys = copy_big(big, mpath)
    m = Manifest(mpath, warn=Recorder())
    ix = ManifestIndex(m)
    ix.refresh()
    data = mpath.read_bytes()
    cut = data.index(b"\n", len(data) // 2) + 1
    with open(mpath, "r+b") as handle:
        handle.truncate(cut)
    ix.refresh()
    assert meta(mpath)["offset"] == cut
    assert_same(ix, m, keys, sample=100)
    # truncated, then regrown past the old offset with different lines
    with open(mpath, "r+b") as handle:
        handle.truncate(data.rindex(b"\n", 0, cut - 300) + 1)
    add_bytes(mpath, b"".join(enc(intent_event(aid(i), "regrown", T0)) + b"\n" for i in range(10)))
    ix.refresh()
    assert_same(ix, m, keys + [("regrown", aid(i)) for i in range(10)], sample=100)
    ix.close()


def test_corrupt_line_names_its_number_every_time(big, mpath: Path) -> None:
    copy_big(big, mpath)
    m = Manifest(mpath, warn=Recorder())
    ix = ManifestIndex(m)
    ix.refresh()
    lines = mpath.read_bytes().count(b"\n")
    append(m, [intent_event(aid(1), "ok", T0)])
    add_bytes(mpath, b"{not json\n" + enc(intent_event(aid(2), "after", T0)) + b"\n")
    for _ in range(2):
        with pytest.raises(Corrupt, match=rf"{mpath.name}:{lines + 2}: malformed manifest line"):
            ix.refresh()
    with pytest.raises(Corrupt, match=rf":{lines + 2}:"):
        Manifest(mpath).read_state()
    # the lines before the bad one were kept: the next refresh starts at it
    info = meta(mpath)
    assert info["lines"] == lines + 1
    assert info["offset"] == mpath.read_bytes().index(b"{not json")
    with ManifestIndex(m) as fresh:  # another process, same answer
        with pytest.raises(Corrupt, match=rf":{lines + 2}:"):
            fresh.refresh()
    mpath.unlink()
    index_path(mpath).unlink()
    mpath.write_bytes(
        HEADER
        + b"\n"
        + b"\n".join(enc(intent_event(aid(i), "s", T0)) for i in range(5))
        + b'\n{"op":"intent","attachment_id":"xyz"}\n'
    )
    with ManifestIndex(m) as first_build:
        with pytest.raises(Corrupt, match=r":7: \"attachment_id\" is not"):
            first_build.refresh()
        with pytest.raises(Corrupt, match=r":7:"):
            first_build.refresh()
    ix.close()


# -- the cache itself is broken or unavailable ----------------------------------------
def test_garbage_idx_is_rebuilt(big, mpath: Path) -> None:
    keys = copy_big(big, mpath)
    m = Manifest(mpath, warn=Recorder())
    idx = index_path(mpath)
    idx.parent.mkdir(parents=True, exist_ok=True)
    idx.write_bytes(os.urandom(8192))
    with ManifestIndex(m) as ix:
        ix.refresh()
        assert not ix.using_fallback
        assert_same(ix, m, keys, sample=50)
    assert meta(mpath)["offset"] == mpath.stat().st_size


def test_damaged_idx_pages_fall_back_then_rebuild(big, mpath: Path) -> None:
    keys = copy_big(big, mpath)
    m = Manifest(mpath, warn=Recorder())
    with ManifestIndex(m) as ix:
        ix.refresh()
    idx = index_path(mpath)
    data = bytearray(idx.read_bytes())
    page, rng = 4096, random.Random(5)
    for start in range(2 * page, len(data) - page, 3 * page):  # keep page 1 (header, schema)
        data[start : start + page] = rng.randbytes(page)
    idx.write_bytes(bytes(data))
    with ManifestIndex(m) as ix:
        ix.refresh()  # reads only the meta row: does not notice
        assert_same(ix, m, keys, sample=50)  # a query that hits a bad page answers from memory
        assert ix.using_fallback
    assert not idx.exists()  # deleted: the next command rebuilds it
    with ManifestIndex(m) as ix:
        ix.refresh()
        assert not ix.using_fallback
        assert_same(ix, m, keys, sample=20)


def test_idx_path_unusable_falls_back(mpath: Path, warn: Recorder) -> None:
    mpath.write_bytes(HEADER + b"\n" + enc(intent_event(aid(1), "s", T0)) + b"\n" + b'{"op":"int')
    index_path(mpath).mkdir(parents=True)  # cannot be opened as a database
    m = Manifest(mpath, warn=warn)
    with ManifestIndex(m) as ix:
        ix.refresh()
        assert ix.using_fallback
        assert_same(ix, m, [("s", aid(1))])
        assert len(warn.messages) == 1  # the torn tail, warned once, by the fallback read
        add_bytes(mpath, b"\n")
        with pytest.raises(Corrupt, match=":3:"):
            ix.refresh()


def test_query_failure_mid_stream_continues_from_memory(big, mpath: Path) -> None:
    copy_big(big, mpath)
    m = Manifest(mpath, warn=Recorder())
    ix = ManifestIndex(m)
    ix.refresh()
    expected = expected_uncommitted(m.read_state(), None, None)
    stream = ix.uncommitted(None, None)
    head = [next(stream) for _ in range(1500)]
    ix._sync.conn.close()  # the open cursor fails on its next fetch
    rest = list(stream)
    assert head + rest == expected
    assert ix.using_fallback
    assert ix.rows_for_keys([(expected[0].session_id, expected[0].attachment_id)])
    ix.close()
    assert index_path(mpath).exists()  # not corruption: the file is kept


def test_read_only_falls_back(big, mpath: Path, monkeypatch) -> None:
    keys = copy_big(big, mpath)
    m = Manifest(mpath, warn=Recorder())

    def refuse(*args, **kwargs):
        raise sqlite3.OperationalError("unable to open database file")

    monkeypatch.setattr(sqlite3, "connect", refuse)
    with ManifestIndex(m) as ix:
        ix.refresh()
        assert ix.using_fallback
        assert_same(ix, m, keys, sample=50)
        append(m, [intent_event(aid(5), "late", T0)])
        ix.refresh()
        assert ix.rows_for_keys([("late", aid(5))])
    # lashctl creates the (empty) file itself before SQLite opens it; nothing was written to it
    assert not index_path(mpath).exists() or index_path(mpath).stat().st_size == 0


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_directory_falls_back(mpath: Path) -> None:
    mpath.write_bytes(HEADER + b"\n" + enc(intent_event(aid(1), "s", T0)) + b"\n")
    os.chmod(mpath.parent, 0o555)
    try:
        with ManifestIndex(Manifest(mpath, warn=Recorder())) as ix:
            ix.refresh()
            assert ix.using_fallback
            assert ix.rows_for_id(aid(1))
    finally:
        os.chmod(mpath.parent, 0o755)


def test_locked_index_falls_back(mpath: Path, monkeypatch) -> None:
    mpath.write_bytes(HEADER + b"\n" + enc(intent_event(aid(1), "s", T0)) + b"\n")
    m = Manifest(mpath, warn=Recorder())
    with ManifestIndex(m) as ix:
        ix.refresh()
    append(m, [intent_event(aid(2), "s", T0)])
    blocker = sqlite3.connect(index_path(mpath), isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    monkeypatch.setattr(cache_store, "_BUSY_TIMEOUT_S", 0.05)
    try:
        with ManifestIndex(m) as ix:
            ix.refresh()
            assert ix.using_fallback
            assert_same(ix, m)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()


# -- concurrency -------------------------------------------------------------------------
_WORKER = """
import sys
from pathlib import Path
from lashctl.backends.manifests.jsonl.log import Manifest
from lashctl.backends.manifests.jsonl.cache import ManifestIndex
m = Manifest(Path(sys.argv[1]), warn=lambda s: None)
ix = ManifestIndex(m)
ix.refresh()
assert not ix.using_fallback
print(len(ix.ids_with_prefix("")), sum(1 for _ in ix.uncommitted(None, None)))
"""


def test_two_processes_building_at_once(big, mpath: Path) -> None:
    copy_big(big, mpath)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    procs = [
        subprocess.Popen([sys.executable, "-c", _WORKER, str(mpath)], stdout=subprocess.PIPE, text=True, env=env)
        for _ in range(3)
    ]
    outs = [p.communicate(timeout=60)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    state = Manifest(mpath).read_state()
    want = f"{len(list(state.attachment_ids()))} {len(expected_uncommitted(state, None, None))}\n"
    assert outs == [want] * 3


# -- fold rules, exhaustively --------------------------------------------------------------
@pytest.mark.slow  # exhaustive: every short sequence, refreshed at every split
@pytest.mark.parametrize("batch", [1, 3, 1_000_000])
def test_every_short_event_sequence_at_every_split(tmp_path: Path, monkeypatch, batch: int) -> None:
    """Every sequence of up to 4 events on one key (each on its own key), split
    in two refreshes at every point, with batches of 1, 3 and all lines."""
    import itertools

    monkeypatch.setattr(cache_sync, "_BATCH_LINES", batch)
    ops = [
        lambda a, s: intent_event(a, s, T0 + 1),
        lambda a, s: intent_event(a, s, T0 + 3),
        lambda a, s: commit_event(a, s, T0 + 10),
        lambda a, s: commit_event(a, s, T0 + 20),
        lambda a, s: forget_event(a, s),
    ]
    sequences = [seq for n in range(1, 5) for seq in itertools.product(range(len(ops)), repeat=n)]
    keys = [(f"s{n % 7}", aid(n + 1)) for n in range(len(sequences))]
    for split in range(5):
        mpath = tmp_path / f"split{split}" / "manifest.jsonl"
        m = Manifest(mpath, warn=Recorder())
        first, second = [], []
        for round_ in range(4):  # interleave the keys' events
            for seq, (session, attachment) in zip(sequences, keys):
                if round_ < len(seq):
                    (first if round_ < split else second).append(ops[seq[round_]](attachment, session))
        with ManifestIndex(m) as ix:
            append(m, first or [HEADER_EVENT])
            ix.refresh()
            assert_same(ix, m, keys)
            append(m, second or [HEADER_EVENT])
            ix.refresh()
            assert_same(ix, m, keys)


HEADER_EVENT = {"op": "header", "format": "lashctl-manifest", "version": 1}


# -- model ---------------------------------------------------------------------------------
SESSIONS = ["s1", "s2"]
IDS = [aid(i) for i in (0xA1, 0xA2, 0xB1)]

event_st = st.one_of(
    st.builds(intent_event, st.sampled_from(IDS), st.sampled_from(SESSIONS), st.integers(T0, T0 + 5)),
    st.builds(commit_event, st.sampled_from(IDS), st.sampled_from(SESSIONS), st.integers(T0, T0 + 5)),
    st.builds(forget_event, st.sampled_from(IDS), st.sampled_from(SESSIONS)),
)
step_st = st.tuples(
    st.lists(event_st, max_size=6),
    st.sampled_from(["append", "raw", "raw-crlf", "raw-unterminated", "torn"]),
    st.booleans(),  # refresh after this step
)


@pytest.mark.slow  # a model: 150 random runs against the reference fold
@settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    steps=st.lists(step_st, min_size=1, max_size=8),
    batch=st.integers(1, 4),
    chunk=st.integers(1, 64),
    compact_at=st.integers(-1, 8),
)
def test_model_random_events_and_refresh_points(tmp_path_factory, monkeypatch, steps, batch, chunk, compact_at) -> None:
    monkeypatch.setattr(cache_sync, "_BATCH_LINES", batch)  # batches and chunks cut anywhere
    monkeypatch.setattr(cache_sync, "_CHUNK", chunk)
    mpath = tmp_path_factory.mktemp("model") / "manifest.jsonl"
    m = Manifest(mpath, warn=Recorder())
    keys = [(s, i) for s in SESSIONS for i in IDS]
    ix = ManifestIndex(m)
    try:
        for n, (events, how, refresh) in enumerate(steps):
            if how == "append" or not mpath.exists():
                append(m, events or [intent_event(IDS[0], "s1", T0)])
            else:
                with open(mpath, "r+b") as handle:  # finish an unterminated line first
                    data = handle.read()
                    if data and not data.endswith(b"\n"):
                        if data[data.rfind(b"\n") + 1 :].startswith(b'{"op'):
                            cut = data.rfind(b"\n") + 1
                            handle.truncate(cut)  # drop it (torn or not)
                end = b"\r\n" if how == "raw-crlf" else b"\n"
                payload = b"".join(enc(e) + end for e in events)
                if how == "raw-unterminated" and payload:
                    payload = payload[:-1]
                elif how == "torn":
                    payload += b'{"op":"inte'
                add_bytes(mpath, payload)
            if n == compact_at:
                with m.locked():
                    m.compact(m.read_state())
            if refresh:
                ix.refresh()
                assert_same(ix, m, keys)
        ix.refresh()
        assert_same(ix, m, keys)
    finally:
        ix.close()


# -- the cache never decides what a write writes ------------------------------------------
def _store_with(tmp_path: Path, lines: list[bytes]):
    from lashctl.core import Store

    root = tmp_path / "store"
    root.mkdir()
    (root / "manifest.jsonl").write_bytes(b"".join(line + b"\n" for line in lines))
    return Store(root, warn=Recorder())


def _commit(store, session: str, attachment_id: str) -> str:
    from lashctl import transfer
    from lashctl.ids import parse_id

    [result] = transfer.commit(store, session, [parse_id(attachment_id)])
    return result.status


def _commit_lines(store, session: str, attachment_id: str) -> int:
    return sum(
        1
        for line in store.manifest.path.read_bytes().splitlines()
        if json.loads(line).get("op") == "commit"
        and json.loads(line)["session_id"] == session
        and json.loads(line)["attachment_id"] == attachment_id
    )


@pytest.mark.parametrize("edit", ["uncommit", "unforget"])
def test_same_length_edit_before_the_end_then_an_append_is_seen(tmp_path: Path, edit: str) -> None:
    """An in-place edit of the same length before the last line (first and last
    lines unchanged), then an append that changes the size: the cache must not
    be extended as if only the append had happened."""
    x, y = aid(0xA), aid(0xB)
    hidden = commit_event(x, "s1", T0 + 1) if edit == "uncommit" else forget_event(x, "s1")
    store = _store_with(
        tmp_path, [HEADER, enc(intent_event(x, "s1", T0)), enc(hidden), enc(intent_event(y, "s1", T0 + 2))]
    )
    with store.index() as ix:
        assert bool(ix.rows_for_keys([("s1", x)])) == (edit == "uncommit")
    path = store.manifest.path
    other = dict(hidden.to_json(), session_id="s9")  # same length: the event now names another session
    data = path.read_bytes().replace(enc(hidden), enc(other))
    with open(path, "r+b") as handle:  # in place, as `cp edited manifest.jsonl` writes it
        handle.write(data)
    append(store.manifest, [intent_event(aid(0xC), "s2", T0 + 3)])
    with store.index() as ix:
        assert_same(ix, store.manifest, [("s1", x), ("s9", x)])
    assert _commit(store, "s1", x) == "committed"
    assert store.manifest.read_state().rows[("s1", x)].committed
    assert _commit_lines(store, "s1", x) == 1


@pytest.mark.parametrize("lie", ["committed", "absent"])
def test_commit_writes_through_a_cache_whose_rows_were_edited(tmp_path: Path, lie: str) -> None:
    """Someone edits the cache's rows (sqlite3 CLI): commit must still record the
    commit the log needs, and must not answer "no intent" for a row the log has."""
    x = aid(0xA)
    store = _store_with(tmp_path, [HEADER, enc(intent_event(x, "s1", T0))])
    with store.index() as ix:
        assert not ix.using_fallback
    conn = sqlite3.connect(index_path(store.manifest.path))
    with conn:
        if lie == "committed":
            conn.execute("UPDATE rows SET committed_at = ? WHERE session_id = 's1'", (T0 + 1,))
        else:
            conn.execute("DELETE FROM rows WHERE session_id = 's1'")
    conn.close()
    assert _commit(store, "s1", x) != "no_intent"
    assert store.manifest.read_state().rows[("s1", x)].committed
    assert _commit_lines(store, "s1", x) == 1


def test_commit_does_not_wait_on_a_locked_cache(tmp_path: Path) -> None:
    """Another process holds a write transaction on the cache: commit (under the
    manifest lock) falls back to the log instead of waiting for it."""
    import threading

    x = aid(0xA)
    store = _store_with(tmp_path, [HEADER, enc(intent_event(x, "s1", T0))])
    with store.index():
        pass
    append(store.manifest, [intent_event(aid(0xB), "s1", T0 + 1)])  # the cache must catch up
    blocker = sqlite3.connect(index_path(store.manifest.path), isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    outcome: list = []
    worker = threading.Thread(target=lambda: outcome.append(_commit(store, "s1", x)), daemon=True)
    try:
        worker.start()
        worker.join(timeout=30)
        finished = not worker.is_alive()
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
        worker.join()
    assert finished, "commit waited on the cache while holding the manifest lock"
    assert outcome == ["committed"]
    assert store.manifest.read_state().rows[("s1", x)].committed


@pytest.mark.slow  # waits out the cache's busy timeout (5 s) before it falls back
def test_a_reader_does_not_wait_long_on_a_locked_cache(mpath: Path) -> None:
    mpath.write_bytes(HEADER + b"\n" + enc(intent_event(aid(1), "s", T0)) + b"\n")
    m = Manifest(mpath, warn=Recorder())
    with ManifestIndex(m) as ix:
        ix.refresh()
    append(m, [intent_event(aid(2), "s", T0)])
    blocker = sqlite3.connect(index_path(mpath), isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        start = time.monotonic()
        with ManifestIndex(m) as ix:
            ix.refresh()
            assert ix.using_fallback
            assert_same(ix, m)
        assert time.monotonic() - start < 30
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()


# -- where the cache lives: never through a symlink, never in a directory others can write --
def _cache_root() -> Path:
    return Path(os.environ["LASHCTL_CACHE_DIR"])


def _plant_database(path: Path) -> bytes:
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("CREATE TABLE rows (precious TEXT)")
        conn.execute("INSERT INTO rows VALUES ('keep me')")
    conn.close()
    return path.read_bytes()


@pytest.mark.parametrize("target", ["absent", "database"])
def test_cache_file_symlink_is_never_followed(tmp_path: Path, mpath: Path, target: str) -> None:
    mpath.write_bytes(HEADER + b"\n" + enc(intent_event(aid(1), "s", T0)) + b"\n")
    idx = index_path(mpath)
    idx.parent.mkdir(parents=True, mode=0o700)
    elsewhere = tmp_path / "elsewhere" / "victim.db"
    elsewhere.parent.mkdir()
    before = _plant_database(elsewhere) if target == "database" else None
    idx.symlink_to(elsewhere)
    m = Manifest(mpath, warn=Recorder())
    with ManifestIndex(m) as ix:
        ix.refresh()
        assert ix.using_fallback
        assert_same(ix, m)
    append(m, [intent_event(aid(2), "s", T0)])
    with ManifestIndex(m) as ix:
        ix.refresh()
        assert_same(ix, m)
    if before is None:
        assert sorted(os.listdir(elsewhere.parent)) == []
    else:
        assert elsewhere.read_bytes() == before
        assert sorted(os.listdir(elsewhere.parent)) == ["victim.db"]
    assert idx.is_symlink()


@pytest.mark.parametrize("where", ["index", "root"])
def test_cache_directory_symlink_is_never_followed(tmp_path: Path, mpath: Path, where: str) -> None:
    mpath.write_bytes(HEADER + b"\n" + enc(intent_event(aid(1), "s", T0)) + b"\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    root = _cache_root()
    if where == "index":
        (root / "index").symlink_to(elsewhere)
    else:
        os.rmdir(root)
        root.symlink_to(elsewhere)
    m = Manifest(mpath, warn=Recorder())
    with ManifestIndex(m) as ix:
        ix.refresh()
        assert ix.using_fallback
        assert_same(ix, m)
    append(m, [intent_event(aid(2), "s", T0)])  # the append journal is not written there either
    assert sorted(os.listdir(elsewhere)) == []


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o707, 0o1777])
@pytest.mark.parametrize("level", ["root", "index"])
def test_cache_directory_writable_by_others_is_not_used(mpath: Path, mode: int, level: str) -> None:
    mpath.write_bytes(HEADER + b"\n" + enc(intent_event(aid(1), "s", T0)) + b"\n")
    directory = _cache_root() if level == "root" else _cache_root() / "index"
    directory.mkdir(exist_ok=True)
    os.chmod(directory, mode)
    m = Manifest(mpath, warn=Recorder())
    with ManifestIndex(m) as ix:
        ix.refresh()
        assert ix.using_fallback
        assert_same(ix, m)
    assert not index_path(mpath).exists() and not index_path(mpath).is_symlink()


def test_cache_directory_of_another_user_is_not_used(mpath: Path, monkeypatch) -> None:
    mpath.write_bytes(HEADER + b"\n" + enc(intent_event(aid(1), "s", T0)) + b"\n")
    m = Manifest(mpath, warn=Recorder())
    monkeypatch.setattr(os, "geteuid", lambda: os.stat(_cache_root()).st_uid + 1)
    with ManifestIndex(m) as ix:
        ix.refresh()
        assert ix.using_fallback
        assert_same(ix, m)
    assert not index_path(mpath).exists()


@pytest.mark.parametrize("kind", ["fifo", "directory", "foreign"])
def test_cache_file_that_is_not_a_regular_file_of_ours_is_not_used(mpath: Path, kind: str) -> None:
    mpath.write_bytes(HEADER + b"\n" + enc(intent_event(aid(1), "s", T0)) + b"\n")
    idx = index_path(mpath)
    idx.parent.mkdir(parents=True, mode=0o700)
    if kind == "fifo":
        os.mkfifo(idx)
    elif kind == "directory":
        idx.mkdir()
    else:  # someone else's database, planted while the directory was not private
        if os.geteuid() != 0:
            pytest.skip("needs root to give a file away")
        before = _plant_database(idx)
        os.chown(idx, 65534, 65534)
    m = Manifest(mpath, warn=Recorder())
    with ManifestIndex(m) as ix:
        ix.refresh()
        assert ix.using_fallback
        assert_same(ix, m)
    if kind == "foreign":
        assert idx.read_bytes() == before


def test_private_cache_directory_is_used(tmp_path: Path) -> None:
    """The permission rule must not make every command fold in memory."""
    os.rmdir(_cache_root())
    x = aid(0xA)
    store = _store_with(tmp_path, [HEADER, enc(intent_event(x, "s1", T0))])
    assert _commit(store, "s1", x) == "committed"
    idx = index_path(store.manifest.path)
    assert idx.is_file()
    for directory in (_cache_root(), idx.parent):  # created private
        assert os.stat(directory).st_mode & 0o777 == 0o700
    with store.index() as ix:
        assert not ix.using_fallback


def test_own_appends_are_read_incrementally_and_foreign_ones_rebuild(mpath: Path, monkeypatch) -> None:
    mpath.write_bytes(HEADER + b"\n" + enc(intent_event(aid(1), "s", T0)) + b"\n")
    m = Manifest(mpath, warn=Recorder())
    resets = []
    real_reset = cache_store.reset
    monkeypatch.setattr(cache_store, "reset", lambda *a: resets.append(1) or real_reset(*a))
    with ManifestIndex(m) as ix:
        ix.refresh()
        assert len(resets) == 1
        for n in range(3):  # lashctl's own appends, with and without refreshes between
            append(m, [intent_event(aid(10 + n), "s", T0)])
        append(m, [commit_event(aid(1), "s", T0 + 1)])
        ix.refresh()
        assert len(resets) == 1
        assert_same(ix, m)
        add_bytes(mpath, enc(intent_event(aid(99), "foreign", T0)) + b"\n")  # not lashctl's
        ix.refresh()
        assert len(resets) == 2
        assert_same(ix, m, [("foreign", aid(99))])


def test_fifo_at_the_manifest_path_is_an_error_not_a_hang(mpath: Path) -> None:
    os.mkfifo(mpath)
    m = Manifest(mpath, warn=Recorder())
    with ManifestIndex(m) as ix:
        with pytest.raises(Corrupt, match="not a regular file"):
            ix.refresh()


@pytest.mark.parametrize("extra", [0, "x", None, 10**20])
@pytest.mark.parametrize("padding", [0, 60_000])  # the forget in the first batch, or in a later one
def test_a_forget_line_with_other_keys_forgets_in_the_cache_and_the_log(tmp_path: Path, extra, padding) -> None:
    """Keys a line's op does not define are ignored: a forget holding a
    committed_at_epoch_ms is a plain forget, never a guarded one."""
    x = aid(0xC)
    forget = dict(forget_event(x, "s1").to_json(), committed_at_epoch_ms=extra)
    lines = [HEADER, enc(intent_event(x, "s1", T0)), enc(commit_event(x, "s1", T0 + 1))]
    lines += [b""] * padding + [enc(forget)]
    store = _store_with(tmp_path, lines)
    assert ("s1", x) not in store.manifest.read_state().rows
    with store.index() as ix:
        assert ix.rows_for_id(x) == []
        assert ix.row_count() == 0


# -- the C decoder of a cache build agrees with parse_line ------------------------------
FAST_CASES = [
    b'{"op":"header","format":"lashctl-manifest","version":1}',
    b'{"op":"header","format":"lashctl-manifest","version":1.0}',
    b'{"op":"header","format":"lashctl-manifest","version":true}',
    b'{"op":"header","format":"other","version":1}',
    b'{"op":"intent","attachment_id":"%s","session_id":"s","canonical_uri":"sha256:%s","intent_at_epoch_ms":5}',
    b'{"op":"intent","attachment_id":"%s","session_id":"s","canonical_uri":"x","intent_at_epoch_ms":5,"extra":{"a":1}}',
    b'{"op":"intent","attachment_id":"%s","session_id":"s","canonical_uri":"x","intent_at_epoch_ms":5,"extra":[1]}',
    b'{"op":"intent","attachment_id":"%s","session_id":"s","canonical_uri":"x","intent_at_epoch_ms":true}',
    b'{"op":"intent","attachment_id":"%s","session_id":"s","canonical_uri":"x","intent_at_epoch_ms":5.0}',
    b'{"op":"intent","attachment_id":"%s","session_id":"s","canonical_uri":"x","intent_at_epoch_ms":-0}',
    b'{"op":"intent","attachment_id":"%s","session_id":"s","canonical_uri":"x","intent_at_epoch_ms":-1}',
    b'{"op":"intent","attachment_id":"%s","session_id":"s","canonical_uri":"x","intent_at_epoch_ms":253402300800000}',
    b'{"op":"intent","attachment_id":"%s","session_id":"s","canonical_uri":"x","intent_at_epoch_ms":NaN}',
    b'{"op":"intent","attachment_id":"%s","session_id":"","canonical_uri":"x","intent_at_epoch_ms":5}',
    b'{"op":"intent","attachment_id":"%s","session_id":"\\ud800","canonical_uri":"x","intent_at_epoch_ms":5}',
    b'{"op":"intent","attachment_id":"%s","session_id":"a\\u00e9","canonical_uri":"x","intent_at_epoch_ms":5}',
    b'{"op":"intent","attachment_id":"%s","session_id":"caf\xc3\xa9 \\"q\\" \\\\ \\n","canonical_uri":"x","intent_at_epoch_ms":5}',
    b'{"op":"intent","attachment_id":"%s","session_id":"bad \xff utf8","canonical_uri":"x","intent_at_epoch_ms":5}',
    b'{"op":"intent","attachment_id":"%s","session_id":"raw \x01 control","canonical_uri":"x","intent_at_epoch_ms":5}',
    b'{"op":"intent","attachment_id":"%s","session_id":"s","session_id":"t","canonical_uri":"x","intent_at_epoch_ms":5}',
    b'{"op":"intent","op":"commit","attachment_id":"%s","session_id":"s","committed_at_epoch_ms":5}',
    b'{"attachment_id":"%s","session_id":"s","op":"commit","committed_at_epoch_ms":7}',
    b'{"op":"intent","attachment_id":"%s","session_id":"s","intent_at_epoch_ms":5}',
    b'{"op":"intent","attachment_id":"%s","session_id":"s","canonical_uri":null,"intent_at_epoch_ms":5}',
    b'{"op":"commit","attachment_id":"%s","session_id":"s","committed_at_epoch_ms":9,"intent_at_epoch_ms":"x"}',
    b'{"op":"forget","attachment_id":"%s","session_id":"s"}',
    b'{"op":"forget","attachment_id":"%s","session_id":"s","committed_at_epoch_ms":12}',
    b'{"op":"forget","attachment_id":"%s","session_id":"s","committed_at_epoch_ms":null}',
    b'{"op":"forget","attachment_id":"%s","session_id":"s","committed_at_epoch_ms":"soon"}',
    b'{"op":"forget","attachment_id":"%s","session_id":"s","committed_at_epoch_ms":1.5}',
    b'{"op":"forget","attachment_id":"ABC","session_id":"s"}',
    b'{"op":"forget","attachment_id":"%s0","session_id":"s"}',
    b'{"op":"purge","attachment_id":"%s","session_id":"s"}',
    b' {"op":"forget" , "attachment_id" : "%s","session_id":"s"}\r',
    b'[{"op":"forget","attachment_id":"%s","session_id":"s"}]',
    b'"just a string"',
    b"",
]


@pytest.mark.parametrize("template", FAST_CASES)
def test_the_c_decoder_of_a_build_agrees_with_parse_line(tmp_path, template):
    """A line the C decoder takes is one parse_line accepts, read the same way;
    anything else it leaves to parse_line (None)."""
    from lashctl.backends.manifests.jsonl.fast import KINDS, decode_block
    from lashctl.backends.manifests.jsonl.log import parse_line
    from lashctl.errors import Corrupt
    from lashctl.fold import Event

    aid = hashlib.sha256(template).hexdigest()
    line = template.replace(b"%s", aid.encode()) if b"%s" in template else template
    try:
        expected = parse_line(line, 2, tmp_path / "m.jsonl")
    except Corrupt:
        expected = None
    got = decode_block(line, 1)
    if got is None:
        return  # parse_line decides
    assert expected is not None, line
    (event,) = got
    assert KINDS[type(event)] == expected["op"]
    if expected["op"] == "header":
        return
    want = Event.from_json(expected)
    assert (event.attachment_id, event.session_id, event.at_ms, event.canonical_uri) == (
        want.attachment_id,
        want.session_id,
        want.at_ms,
        want.canonical_uri if want.op == "intent" else None,
    )


def test_the_c_decoder_takes_the_lines_writers_write():
    from lashctl.backends.manifests.jsonl.fast import decode_block
    from lashctl.backends.manifests.jsonl.log import HEADER, encode_events
    from lashctl.fold import Event

    aid = "ab" * 32
    events = [HEADER, Event.intent(aid, "s-1", 5), Event.commit(aid, "s-1", 6), Event.forget(aid, "s-1")]
    block = encode_events(events).rstrip(b"\n")
    assert decode_block(block, 4) is not None
    assert decode_block(block + b"\n", 5) is None  # a blank line: parse_line's business


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["intent", "commit", "forget", "guarded"]),
            st.integers(0, 2),
            st.sampled_from(["s1", "s2"]),
            st.integers(0, 20),
        ),
        max_size=40,
    )
)
@settings(max_examples=300, deadline=None)
def test_fold_rows_is_step(script):
    """fold.fold_rows, the fast fold of a cache build, is fold.fold (fold.step) written out."""
    from lashctl.fold import Event, fold, fold_rows

    ids = [hashlib.sha256(b"%d" % i).hexdigest() for i in range(3)]
    events = []
    for op, i, session, at in script:
        if op == "intent":
            events.append(Event.intent(ids[i], session, at))
        elif op == "commit":
            events.append(Event.commit(ids[i], session, at))
        else:
            events.append(Event.forget(ids[i], session, at if op == "guarded" else None))
    rows: dict = {}
    fold_rows(rows)(events)
    expected = fold(events)
    assert {k: tuple(v) for k, v in rows.items()} == {
        k: (r.attachment_id, r.session_id, r.canonical_uri, r.intent_at_epoch_ms, r.committed_at_epoch_ms)
        for k, r in expected.items()
    }


def test_the_cache_keeps_its_rows_in_id_order_without_a_second_copy(big, mpath: Path) -> None:
    """The rows table itself is keyed by (attachment id, session id): lookups
    by key, by id and by prefix, and every id-ordered stream, are served by it
    without a sort. The one secondary index is list-uncommitted's partial one,
    so a cache build writes each row once (plus its uncommitted entry)."""
    copy_big(big, mpath)
    listings = []
    with ManifestIndex(Manifest(mpath)) as ix:
        ix.refresh()
        path = ix.path
        ix._sync.conn.set_trace_callback(listings.append)
        for session in (None, "s-1"):
            list(ix.uncommitted(T0, session))
            list(ix.uncommitted_chunks(T0, session))
    assert len(listings) == 4
    conn = sqlite3.connect(path)
    try:
        indexes = sorted(
            name
            for (name,) in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'rows' AND sql IS NOT NULL"
            )
        )
        assert indexes == ["rows_uncommitted"]
        select = cache_store.SELECT_ROW
        queries = {
            "key": (select + " WHERE session_id = ? AND attachment_id = ?", ("s", aid(1))),
            "id": (select + " WHERE attachment_id = ? ORDER BY session_id", (aid(1),)),
            "prefix": (
                "SELECT DISTINCT attachment_id FROM rows WHERE attachment_id >= ? AND attachment_id < ?"
                " ORDER BY attachment_id",
                ("0a", "0b"),
            ),
            "all ids": ("SELECT DISTINCT attachment_id FROM rows ORDER BY attachment_id", ()),
            "by id": (select + " ORDER BY attachment_id, session_id", ()),
        }
        for i, sql in enumerate(listings):  # list-uncommitted, of every session or one: the partial index
            plan = " | ".join(r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + sql))
            assert "TEMP B-TREE" not in plan and "rows_uncommitted" in plan, (i, plan)
        for what, (sql, params) in queries.items():
            plan = " | ".join(r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + sql, params))
            assert "TEMP B-TREE" not in plan, (what, plan)
            if params:
                assert "USING PRIMARY KEY" in plan, (what, plan)
    finally:
        conn.close()
