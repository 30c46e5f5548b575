"""``manifest compact`` in one read, one write and one insert: the log folded
the way a cache build folds it (``fast.fold_into``), the compacted lines
formatted straight from the rows (``log.encode_compacted``). It must write
byte for byte what ``Manifest.compact(read_state())`` wrote, with the same
counts, warnings and errors, and leave a cache that answers as the log does."""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lashctl.backends.manifests.jsonl import compact as compact_mod
from lashctl.backends.manifests.jsonl.cache import ManifestIndex
from lashctl.backends.manifests.jsonl.fast import Commit, Forget, Intent, fold_into
from lashctl.backends.manifests.jsonl.log import HEADER, Manifest, encode_compacted, encode_events
from lashctl.errors import Corrupt
from lashctl.fold import INTENT, Event, fold

HEADER_LINE = json.dumps(HEADER, separators=(",", ":")).encode()
IDS = [hashlib.sha256(b"%d" % i).hexdigest() for i in range(6)]
# Strings json.dumps escapes (quote, backslash, controls), non-ASCII, a character it does not escape (DEL).
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12)


def old_compacted(rows) -> bytes:
    """What ``Manifest.compact`` wrote before it formatted lines itself: its events, ``encode_events``."""
    events: list = [HEADER]
    for row in rows:
        events.append(Event(INTENT, row.attachment_id, row.session_id, row.intent_at_epoch_ms, row.canonical_uri))
        if row.committed_at_epoch_ms is not None:
            events.append(Event.commit(row.attachment_id, row.session_id, row.committed_at_epoch_ms))
    return encode_events(events)


@given(
    st.lists(
        st.tuples(
            st.sampled_from(IDS),
            TEXT,
            st.one_of(st.none(), TEXT),
            st.integers(0, 2**45),
            st.one_of(st.none(), st.integers(0, 2**45)),
        ),
        max_size=30,
    )
)
@settings(max_examples=300, deadline=None)
def test_encode_compacted_is_encode_events(rows):
    from lashctl.fold import Row

    as_rows = [Row(s, a, u if u is not None else "sha256:" + a, i, c) for a, s, u, i, c in rows]
    data, lines = encode_compacted(rows)
    assert bytes(data) == old_compacted(as_rows)
    assert lines == data.count(b"\n")


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["intent", "commit", "forget"]),
            st.integers(0, 2),
            st.sampled_from(["s1", "s2"]),
            st.integers(0, 20),
            st.booleans(),
        ),
        max_size=40,
    )
)
@settings(max_examples=300, deadline=None)
def test_fold_into_is_step(script):
    """fast.fold_into, the fold of a build and of a compaction, is fold.fold
    (fold.step) written out, in the same insertion order."""
    structs, events = [], []
    for op, i, session, at, canonical in script:
        aid = IDS[i]
        if op == "intent":
            uri = "sha256:" + aid if canonical else f"s3://b/{at}"
            structs.append(Intent(attachment_id=aid, session_id=session, canonical_uri=uri, at_ms=at))
            events.append(Event(INTENT, aid, session, at, uri))
        elif op == "commit":
            structs.append(Commit(attachment_id=aid, session_id=session, at_ms=at))
            events.append(Event.commit(aid, session, at))
        else:
            structs.append(Forget(attachment_id=aid, session_id=session))
            events.append(Event.forget(aid, session))
    rows: dict = {}
    fold_into(rows)(structs)
    expected = fold(events)
    assert [tuple(v) for v in rows.values()] == [
        (
            r.attachment_id,
            r.session_id,
            None if r.canonical_uri == "sha256:" + r.attachment_id else r.canonical_uri,
            r.intent_at_epoch_ms,
            r.committed_at_epoch_ms,
        )
        for r in expected.values()
    ]
    assert list(rows) == [(k[1], k[0]) for k in expected]


def line(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def random_log(rng: random.Random, n: int, odd: bool) -> bytes:
    """A log of ``n`` events on a few keys; with ``odd``, hand-edit forms too
    (blank lines, CRLF, escapes, spaces, unknown keys, odd strings)."""
    sessions = ["s-1", "s-2", 's"q', "s\\b", "é-ü", "s\x7f"] if odd else ["s-1", "s-2", "s-3"]
    out = [HEADER_LINE]
    for _ in range(n):
        aid, session, at = rng.choice(IDS[:4]), rng.choice(sessions), rng.randrange(0, 10**6)
        op = rng.choice(["intent", "intent", "commit", "commit", "forget"])
        obj = {"op": op, "attachment_id": aid, "session_id": session}
        if op == "intent":
            obj["canonical_uri"] = "sha256:" + aid if rng.random() < 0.8 else f's3://b/{at}/ü"x'
            obj["intent_at_epoch_ms"] = at
        elif op == "commit":
            obj["committed_at_epoch_ms"] = at
        raw = line(obj)
        if odd:
            roll = rng.random()
            if roll < 0.05:
                raw = json.dumps(obj, ensure_ascii=True).encode()  # \\u escapes, spaces
            elif roll < 0.08:
                raw += b"\r"
            elif roll < 0.1:
                out.append(b"   ")
            elif roll < 0.12:
                obj["extra"] = {"nested": [1, 2]}
                raw = line(obj)
        out.append(raw)
    return b"\n".join(out) + b"\n"


def both_ways(tmp_path: Path, data: bytes, name: str = "case"):
    """Compact ``data`` with ``compact_log`` and the old way; return (new, old)
    outcomes: (result or the Corrupt message, file bytes, warnings)."""
    results = []
    for way in ("new", "old"):
        where = tmp_path / f"{name}-{way}"
        where.mkdir()
        path = where / "manifest.jsonl"
        path.write_bytes(data)
        warnings: list[str] = []
        m = Manifest(path, warn=warnings.append)
        try:
            if way == "new":
                got = compact_mod.compact_log(m)
            else:
                with m.locked():
                    state = m.read_state()
                    after = compact_mod.compact(m, state)
                got = (state.lines, after, len(state.rows))
        except Corrupt as exc:
            got = exc.message.replace(f"{name}-{way}", "X")
        results.append((got, path.read_bytes(), [w.replace(f"{name}-{way}", "X") for w in warnings], m))
    return results


@pytest.mark.parametrize("odd", [False, True])
@pytest.mark.parametrize("seed", range(8))
def test_compact_log_writes_what_compact_wrote(tmp_path: Path, seed: int, odd: bool) -> None:
    rng = random.Random(seed)
    data = random_log(rng, rng.randrange(0, 400), odd)
    (new, new_bytes, new_warn, m), (old, old_bytes, old_warn, _) = both_ways(tmp_path, data)
    assert new == old
    assert new_bytes == old_bytes
    assert new_warn == old_warn
    # The cache it left answers as the log does, without folding it again.
    state = m.read_state()
    with ManifestIndex(m) as index:
        index.refresh()
        got = {
            k: r for i in {r.attachment_id for r in state.rows.values()} for r in index.rows_for_id(i) for k in [r.key]
        }
        assert got == state.rows
        assert index.row_count() == len(state.rows)


def test_compact_log_of_big_blocks(tmp_path: Path, monkeypatch) -> None:
    """Many blocks (a small read size): the C decoder's path and the line by line one, mixed."""
    from lashctl.backends.manifests.jsonl import cache_sync

    monkeypatch.setattr(cache_sync, "_CHUNK", 4096)
    rng = random.Random(7)
    data = random_log(rng, 3000, False) + random_log(rng, 500, True).split(b"\n", 1)[1]
    (new, new_bytes, new_warn, _), (old, old_bytes, old_warn, _) = both_ways(tmp_path, data)
    assert (new, new_bytes, new_warn) == (old, old_bytes, old_warn)


TAILS = [
    b"",
    b'{"op":"forget","attachment_id":"%s","session_id":"s-1"}' % IDS[0].encode(),  # valid, no newline
    b'{"op":"intent","attachment_id":"%s","session_id":"s-9","canonical_uri":"x","intent_at_epoch_ms":3}'
    % IDS[5].encode(),
    b'{"op":"commit","attachment_id":"' + IDS[1].encode()[:20],  # torn
    b"   ",
    b'{"op":"purge","attachment_id":"%s","session_id":"s-1"}' % IDS[0].encode(),  # parses, not an event
]


@pytest.mark.parametrize("tail", TAILS)
def test_compact_log_reads_the_final_line_as_read_state(tmp_path: Path, tail: bytes) -> None:
    data = random_log(random.Random(3), 50, False) + tail
    (new, new_bytes, new_warn, _), (old, old_bytes, old_warn, _) = both_ways(tmp_path, data)
    assert (new, new_bytes, new_warn) == (old, old_bytes, old_warn)


BAD = [
    b'{"op":"intent","attachment_id":"%s","session_id":"s","canonical_uri":"x","intent_at_epoch_ms":-1}',
    b'{"op":"commit","attachment_id":"ABC","session_id":"s","committed_at_epoch_ms":1}',
    b'{"op":"intent",',
    b'{"op":"forget","attachment_id":"%s","session_id":"\xff"}',
    b"[1]",
    b'\xef\xbb\xbf{"op":"header","format":"lashctl-manifest","version":1}',  # a BOM on a later line
]


@pytest.mark.parametrize("bad", BAD)
@pytest.mark.parametrize("where", [1, 2, 40])
def test_compact_log_stops_at_a_bad_line_as_read_state(tmp_path: Path, bad: bytes, where: int) -> None:
    lines = random_log(random.Random(5), 60, False).split(b"\n")
    lines.insert(where, bad.replace(b"%s", IDS[0].encode()))
    data = b"\n".join(lines)
    (new, new_bytes, _, _), (old, old_bytes, _, _) = both_ways(tmp_path, data)
    assert isinstance(new, str) and new == old
    assert new_bytes == old_bytes == data  # untouched


@pytest.mark.parametrize("start", [b"\xef\xbb\xbf", b"\n\n", b""])
def test_compact_log_of_hand_edited_starts(tmp_path: Path, start: bytes) -> None:
    data = start + random_log(random.Random(9), 30, True).replace(b"\n", b"\r\n", 3)
    (new, new_bytes, new_warn, _), (old, old_bytes, old_warn, _) = both_ways(tmp_path, data)
    assert (new, new_bytes, new_warn) == (old, old_bytes, old_warn)


def test_compact_log_of_no_manifest(tmp_path: Path) -> None:
    m = Manifest(tmp_path / "manifest.jsonl")
    assert compact_mod.compact_log(m) == (0, 0, 0)
    assert not m.path.exists()
    shutil.rmtree(tmp_path, ignore_errors=True)
