"""The write-ahead manifest: fold rules, format, torn tails, locking, compaction (the README's manifest rules)."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lashctl.backends.manifests.jsonl import log as manifest_mod
from lashctl.errors import Corrupt, LockTimeout, StoreIOError
from lashctl.backends.manifests.jsonl.log import (
    Manifest,
    Row,
)
from backend_helpers import commit_event, forget_event, intent_event

A = "a" * 64
B = "b" * 64
HEADER_LINE = b'{"op":"header","format":"lashctl-manifest","version":1}'
T0 = 1_764_150_000_000


def line(event) -> bytes:
    obj = event if isinstance(event, dict) else event.to_json()
    return json.dumps(obj, separators=(",", ":")).encode("utf-8")


def write_lines(path: Path, *lines: bytes, end: bytes = b"\n") -> None:
    path.write_bytes(b"".join(raw + end for raw in lines))


class Recorder:
    def __init__(self) -> None:
        self.messages: list[str] = []

    def __call__(self, message: str) -> None:
        self.messages.append(message)


@pytest.fixture
def mpath(tmp_path: Path) -> Path:
    return tmp_path / "manifest.jsonl"


@pytest.fixture
def warn() -> Recorder:
    return Recorder()


def fold(path: Path, warn: Recorder | None = None):
    m = Manifest(path, warn=warn if warn is not None else Recorder())
    return m.read_state()


# -- fold rules ------------------------------------------------------------------
def test_intent_creates_uncommitted_row(mpath):
    write_lines(mpath, HEADER_LINE, line(intent_event(A, "s-1", T0)))
    state = fold(mpath)
    assert state.has_header
    assert state.rows == {("s-1", A): Row("s-1", A, "sha256:" + A, T0, None)}
    assert not state.rows[("s-1", A)].committed


def test_later_intent_refreshes_uncommitted_row(mpath):
    write_lines(
        mpath,
        line(intent_event(A, "s-1", T0)),
        line(intent_event(A, "s-1", T0 + 5000)),
    )
    assert fold(mpath).rows[("s-1", A)].intent_at_epoch_ms == T0 + 5000


def test_earlier_intent_does_not_lower_intent_time(mpath):
    write_lines(
        mpath,
        line(intent_event(A, "s-1", T0 + 5000)),
        line(intent_event(A, "s-1", T0)),
    )
    assert fold(mpath).rows[("s-1", A)].intent_at_epoch_ms == T0 + 5000


def test_intent_on_committed_row_changes_nothing(mpath):
    write_lines(
        mpath,
        line(intent_event(A, "s-1", T0)),
        line(commit_event(A, "s-1", T0 + 1000)),
        line(intent_event(A, "s-1", T0 + 9000)),
    )
    row = fold(mpath).rows[("s-1", A)]
    assert row.intent_at_epoch_ms == T0
    assert row.committed_at_epoch_ms == T0 + 1000


def test_commit_stamps_and_first_commit_wins(mpath):
    write_lines(
        mpath,
        line(intent_event(A, "s-1", T0)),
        line(commit_event(A, "s-1", T0 + 1000)),
        line(commit_event(A, "s-1", T0 + 2000)),
    )
    assert fold(mpath).rows[("s-1", A)].committed_at_epoch_ms == T0 + 1000


def test_commit_without_row_is_noop(mpath):
    write_lines(
        mpath,
        line(commit_event(A, "s-1", T0)),
        line(intent_event(A, "s-1", T0 + 10)),
    )
    state = fold(mpath)
    # The commit came before any intent: it stamped nothing, so the row is uncommitted.
    assert state.rows == {("s-1", A): Row("s-1", A, "sha256:" + A, T0 + 10, None)}


def test_commit_for_other_session_is_noop(mpath):
    write_lines(
        mpath,
        line(intent_event(A, "s-1", T0)),
        line(commit_event(A, "s-2", T0 + 1)),
    )
    state = fold(mpath)
    assert list(state.rows) == [("s-1", A)]
    assert state.rows[("s-1", A)].committed_at_epoch_ms is None


def test_forget_removes_row(mpath):
    write_lines(
        mpath,
        line(intent_event(A, "s-1", T0)),
        line(intent_event(B, "s-1", T0)),
        line(commit_event(A, "s-1", T0 + 1)),
        line(forget_event(A, "s-1")),
    )
    state = fold(mpath)
    assert list(state.rows) == [("s-1", B)]
    assert state.rows_for(A) == []


def test_forget_then_intent_creates_fresh_row(mpath):
    write_lines(
        mpath,
        line(intent_event(A, "s-1", T0)),
        line(commit_event(A, "s-1", T0 + 1)),
        line(forget_event(A, "s-1")),
        line(intent_event(A, "s-1", T0 + 50)),
    )
    assert fold(mpath).rows[("s-1", A)] == Row("s-1", A, "sha256:" + A, T0 + 50, None)


def test_rows_are_per_session(mpath):
    write_lines(
        mpath,
        line(intent_event(A, "s-1", T0)),
        line(intent_event(A, "s-2", T0 + 7)),
        line(commit_event(A, "s-2", T0 + 8)),
    )
    state = fold(mpath)
    assert set(state.rows) == {("s-1", A), ("s-2", A)}
    assert state.rows[("s-1", A)].committed_at_epoch_ms is None
    assert state.rows[("s-2", A)].committed_at_epoch_ms == T0 + 8
    assert sorted(r.session_id for r in state.rows_for(A)) == ["s-1", "s-2"]


def test_missing_manifest_is_empty_state(mpath):
    state = fold(mpath)
    assert state.rows == {}
    assert not mpath.exists()


# -- format ------------------------------------------------------------------------
def test_header_written_on_creation(mpath):
    m = Manifest(mpath, warn=Recorder())
    with m.locked():
        m.append([intent_event(A, "s-1", T0)])
    data = mpath.read_bytes()
    assert data.split(b"\n")[0] == HEADER_LINE
    assert data == HEADER_LINE + b"\n" + line(intent_event(A, "s-1", T0)) + b"\n"


def test_header_not_repeated_on_second_append(mpath):
    m = Manifest(mpath, warn=Recorder())
    with m.locked():
        m.append([intent_event(A, "s-1", T0)])
    with m.locked():
        m.append([commit_event(A, "s-1", T0 + 1), intent_event(B, "s-1", T0 + 2)])
    lines = mpath.read_bytes().split(b"\n")
    assert lines == [
        HEADER_LINE,
        line(intent_event(A, "s-1", T0)),
        line(commit_event(A, "s-1", T0 + 1)),
        line(intent_event(B, "s-1", T0 + 2)),
        b"",
    ]


def test_append_empty_list_creates_nothing(mpath):
    m = Manifest(mpath, warn=Recorder())
    with m.locked():
        m.append([])
    assert not mpath.exists()


def test_manifest_without_header_reads_as_v1(mpath):
    write_lines(mpath, line(intent_event(A, "s-1", T0)))
    state = fold(mpath)
    assert not state.has_header
    assert list(state.rows) == [("s-1", A)]


def _intent(**overrides) -> bytes:
    event = intent_event(A, "s-1", T0).to_json()
    event.update(overrides)
    return line(event)


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(line({"op": "bogus", "attachment_id": A, "session_id": "s"}), id="unknown-op"),
        pytest.param(line({"attachment_id": A, "session_id": "s"}), id="no-op"),
        pytest.param(_intent(intent_at_epoch_ms=str(T0)), id="string-time"),
        pytest.param(_intent(intent_at_epoch_ms=-1), id="negative-time"),
        pytest.param(_intent(intent_at_epoch_ms=True), id="bool-time"),
        pytest.param(_intent(intent_at_epoch_ms=1.5), id="float-time"),
        pytest.param(_intent(intent_at_epoch_ms=253_402_300_800_000), id="past-year-9999"),
        pytest.param(_intent(intent_at_epoch_ms=None), id="null-time"),
        pytest.param(_intent(attachment_id=A.upper()), id="upper-id"),
        pytest.param(_intent(attachment_id=A[:63]), id="short-id"),
        pytest.param(_intent(attachment_id="../" + A[:61]), id="path-id"),
        pytest.param(_intent(session_id=""), id="empty-session"),
        pytest.param(_intent(session_id=7), id="int-session"),
        pytest.param(
            line({**commit_event(A, "s", T0).to_json(), "committed_at_epoch_ms": "x"}), id="commit-string-time"
        ),
        pytest.param(line({"op": "commit", "attachment_id": A, "session_id": "s"}), id="commit-no-time"),
        pytest.param(b"[1,2,3]", id="array"),
        pytest.param(b"not json at all", id="not-json"),
        pytest.param(b'{"op":"forget","attachment_id":"' + A.encode() + b'","session_id":"\xff"}', id="invalid-utf8"),
    ],
)
def test_malformed_line_is_corrupt_with_location(mpath, bad):
    write_lines(mpath, HEADER_LINE, bad, line(intent_event(B, "s-1", T0)))
    with pytest.raises(Corrupt) as info:
        fold(mpath)
    assert f"{mpath}:2" in info.value.message
    assert info.value.exit_code == 65


def test_unknown_version_is_corrupt(mpath):
    write_lines(
        mpath,
        b'{"op":"header","format":"lashctl-manifest","version":2}',
        line(intent_event(A, "s-1", T0)),
    )
    with pytest.raises(Corrupt) as info:
        fold(mpath)
    assert f"{mpath}:1" in info.value.message
    assert "version" in info.value.message


def test_unknown_format_is_corrupt(mpath):
    write_lines(mpath, b'{"op":"header","format":"other","version":1}')
    with pytest.raises(Corrupt, match=f"{mpath}:1"):
        fold(mpath)


def test_malformed_final_line_with_newline_is_corrupt_not_torn(mpath, warn):
    write_lines(mpath, HEADER_LINE, line(intent_event(A, "s-1", T0)), b'{"op":"intent","attach')
    with pytest.raises(Corrupt, match=f"{mpath}:3"):
        fold(mpath, warn)


def test_malformed_line_before_torn_tail_is_still_corrupt(mpath, warn):
    mpath.write_bytes(HEADER_LINE + b"\n" + b"garbage\n" + b'{"op":"int')
    with pytest.raises(Corrupt, match=f"{mpath}:2"):
        fold(mpath, warn)


def test_line_numbers_count_blank_lines(mpath):
    mpath.write_bytes(HEADER_LINE + b"\n\n\n" + b"garbage\n")
    with pytest.raises(Corrupt, match=f"{mpath}:4"):
        fold(mpath)


def test_bom_and_crlf_tolerated(mpath):
    mpath.write_bytes(
        b"\xef\xbb\xbf"
        + HEADER_LINE
        + b"\r\n"
        + line(intent_event(A, "s-1", T0))
        + b"\r\n"
        + line(commit_event(A, "s-1", T0 + 3))
        + b"\r\n"
    )
    state = fold(mpath)
    assert state.has_header
    assert state.rows == {("s-1", A): Row("s-1", A, "sha256:" + A, T0, T0 + 3)}


def test_bom_on_headerless_first_line_tolerated(mpath):
    mpath.write_bytes(b"\xef\xbb\xbf" + line(intent_event(A, "s-1", T0)) + b"\n")
    assert list(fold(mpath).rows) == [("s-1", A)]


def test_blank_lines_skipped(mpath):
    mpath.write_bytes(b"\n" + HEADER_LINE + b"\n\n   \n\r\n" + line(intent_event(A, "s-1", T0)) + b"\n\n")
    state = fold(mpath)
    assert list(state.rows) == [("s-1", A)]
    assert state.lines == 2


NON_JSON_CONSTANTS = ["NaN", "Infinity", "-Infinity"]


def _with_extra(event: dict, raw_value: str) -> bytes:
    """An event line with an unknown extra key holding ``raw_value`` verbatim."""
    return line(event)[:-1] + b',"extra":' + raw_value.encode() + b"}"


@pytest.mark.parametrize("constant", NON_JSON_CONSTANTS)
def test_nan_or_infinity_in_an_extra_key_is_corrupt(mpath, constant):
    # Python's json accepts these; JSON has no such values, and manifest log
    # would re-emit them to readers that refuse them.
    for value in (constant, f'[1,{{"deep":{constant}}}]'):
        write_lines(mpath, HEADER_LINE, _with_extra(intent_event(A, "s-1", T0), value))
        with pytest.raises(Corrupt) as info:
            fold(mpath)
        assert f"{mpath}:2" in info.value.message
        assert constant in info.value.message


@pytest.mark.parametrize("constant", NON_JSON_CONSTANTS)
def test_an_unterminated_final_line_with_nan_or_infinity_is_a_torn_tail(mpath, warn, constant):
    assert not manifest_mod.parses(_with_extra(commit_event(A, "s-1", T0), constant))
    good = HEADER_LINE + b"\n" + line(intent_event(A, "s-1", T0)) + b"\n"
    mpath.write_bytes(good + _with_extra(commit_event(A, "s-1", T0 + 1), constant))
    m = Manifest(mpath, warn=warn)
    state = m.read_state()
    assert state.torn_tail and not state.rows[("s-1", A)].committed
    with m.locked():
        m.append([commit_event(A, "s-1", T0 + 2)])
    assert mpath.read_bytes() == good + line(commit_event(A, "s-1", T0 + 2)) + b"\n"


@pytest.mark.parametrize("timeout", [float("nan"), float("inf"), float("-inf"), -1.0])
def test_a_non_finite_or_negative_lock_timeout_is_refused(mpath, timeout):
    # NaN would make the deadline unreachable: a wait for ever, not a timeout.
    with pytest.raises(ValueError):
        Manifest(mpath, lock_timeout=timeout)


# -- torn tails ----------------------------------------------------------------------
TORN = b'{"op":"intent","attachment_id":"' + A[:20].encode()


def test_torn_tail_ignored_with_warning(mpath, warn):
    mpath.write_bytes(HEADER_LINE + b"\n" + line(intent_event(B, "s-1", T0)) + b"\n" + TORN)
    state = Manifest(mpath, warn=warn).read_state()
    assert state.torn_tail is True
    assert list(state.rows) == [("s-1", B)]
    assert len(warn.messages) == 1
    assert f"{mpath}:3" in warn.messages[0]


def test_append_truncates_torn_tail(mpath, warn):
    good = HEADER_LINE + b"\n" + line(intent_event(B, "s-1", T0)) + b"\n"
    mpath.write_bytes(good + TORN)
    m = Manifest(mpath, warn=warn)
    new = [intent_event(A, "s-2", T0 + 1), commit_event(A, "s-2", T0 + 2)]
    with m.locked():
        m.append(new)
    assert mpath.read_bytes() == good + line(new[0]) + b"\n" + line(new[1]) + b"\n"
    assert warn.messages  # the repair is reported
    warn.messages.clear()
    state = m.read_state()
    assert not state.torn_tail
    assert warn.messages == []
    assert set(state.rows) == {("s-1", B), ("s-2", A)}


def test_the_bytes_a_repair_cuts_are_saved_beside_the_manifest_and_named(mpath, warn):
    good = HEADER_LINE + b"\n" + line(intent_event(B, "s-1", T0)) + b"\n"
    mpath.write_bytes(good + TORN)
    m = Manifest(mpath, warn=warn)
    with m.locked():
        m.append([forget_event(B, "s-1")])
    saved = sorted(mpath.parent.glob(mpath.name + ".torn-*"))
    assert len(saved) == 1 and saved[0].read_bytes() == TORN
    assert any(str(saved[0]) in message for message in warn.messages)
    assert m.read_state().rows == {}


@pytest.mark.parametrize("torn_len", [1000, 200_000])  # shorter and longer than the tail probe
def test_append_truncates_long_torn_tail(mpath, warn, torn_len):
    good = HEADER_LINE + b"\n" + line(intent_event(B, "s-1", T0)) + b"\n"
    torn = b'{"op":"intent","session_id":"' + b"x" * torn_len
    mpath.write_bytes(good + torn)
    m = Manifest(mpath, warn=warn)
    with m.locked():
        m.append([forget_event(B, "s-1")])
    assert mpath.read_bytes() == good + line(forget_event(B, "s-1")) + b"\n"
    assert m.read_state().rows == {}


def test_append_truncates_torn_only_line(mpath, warn):
    mpath.write_bytes(TORN)
    m = Manifest(mpath, warn=warn)
    with m.locked():
        m.append([intent_event(A, "s-1", T0)])
    # Truncated to nothing, the file is new again: it gets its header.
    assert mpath.read_bytes() == HEADER_LINE + b"\n" + line(intent_event(A, "s-1", T0)) + b"\n"
    assert list(m.read_state().rows) == [("s-1", A)]


def test_complete_final_line_without_newline_is_kept(mpath, warn):
    body = HEADER_LINE + b"\n" + line(intent_event(B, "s-1", T0))
    mpath.write_bytes(body)
    m = Manifest(mpath, warn=warn)
    state = m.read_state()
    assert not state.torn_tail
    assert list(state.rows) == [("s-1", B)]
    assert warn.messages == []
    with m.locked():
        m.append([intent_event(A, "s-1", T0 + 1)])
    assert mpath.read_bytes() == body + b"\n" + line(intent_event(A, "s-1", T0 + 1)) + b"\n"


def test_complete_final_line_with_crlf_without_newline_is_kept(mpath, warn):
    body = HEADER_LINE + b"\r\n" + line(intent_event(B, "s-1", T0)) + b"\r"
    mpath.write_bytes(body)
    m = Manifest(mpath, warn=warn)
    assert list(m.read_state().rows) == [("s-1", B)]
    with m.locked():
        m.append([intent_event(A, "s-1", T0 + 1)])
    assert set(m.read_state().rows) == {("s-1", B), ("s-1", A)}


def test_bom_single_complete_line_without_newline_is_kept_by_append(mpath, warn):
    """A hand-saved file: BOM, one complete event, no final newline.

    Readers tolerate the BOM and read the event; the next writer must keep it too
    (it is not a torn append).
    """
    body = b"\xef\xbb\xbf" + line(intent_event(B, "s-1", T0))
    mpath.write_bytes(body)
    m = Manifest(mpath, warn=warn)
    assert list(m.read_state().rows) == [("s-1", B)]
    with m.locked():
        m.append([intent_event(A, "s-1", T0 + 1)])
    assert set(m.read_state().rows) == {("s-1", B), ("s-1", A)}


def test_append_without_lock_raises(mpath):
    m = Manifest(mpath, warn=Recorder())
    with pytest.raises(RuntimeError):
        m.append([intent_event(A, "s-1", T0)])
    assert not mpath.exists()


def test_compact_without_lock_raises(mpath):
    write_lines(mpath, HEADER_LINE)
    m = Manifest(mpath, warn=Recorder())
    with pytest.raises(RuntimeError):
        m.compact(m.read_state())


# -- locking -----------------------------------------------------------------------
def test_lock_timeout_when_another_fd_holds_lock(mpath):
    lock_path = Path(str(mpath) + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        m = Manifest(mpath, lock_timeout=0.1, warn=Recorder())
        start = time.monotonic()
        with pytest.raises(LockTimeout) as info:
            with m.locked():
                pytest.fail("took a lock another holder has")
        elapsed = time.monotonic() - start
        assert 0.09 <= elapsed < 2.0
        assert info.value.exit_code == 75
        assert str(lock_path) in info.value.message
    finally:
        os.close(fd)


def test_lock_timeout_when_another_process_holds_lock(mpath):
    lock_path = Path(str(mpath) + ".lock")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys\n"
            f"fd = os.open({str(lock_path)!r}, os.O_RDWR | os.O_CREAT, 0o644)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\n"
            "print('locked', flush=True)\n"
            "sys.stdin.read()\n",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout.readline() == b"locked\n"
        m = Manifest(mpath, lock_timeout=0.1, warn=Recorder())
        start = time.monotonic()
        with pytest.raises(LockTimeout) as info:
            with m.locked():
                m.append([intent_event(A, "s-1", T0)])
        assert 0.09 <= time.monotonic() - start < 2.0
        assert info.value.exit_code == 75
        assert not mpath.exists()
    finally:
        holder.stdin.close()
        holder.wait(timeout=10)
        holder.stdout.close()
    # The holder is gone: the kernel dropped its lock, so it can be taken now.
    with Manifest(mpath, lock_timeout=0.1, warn=Recorder()).locked():
        pass


def test_lock_released_after_block(mpath):
    m = Manifest(mpath, lock_timeout=0.1, warn=Recorder())
    with m.locked():
        assert Path(str(mpath) + ".lock").exists()
        fd = os.open(str(mpath) + ".lock", os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
    fd = os.open(str(mpath) + ".lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free again
    finally:
        os.close(fd)


def test_lock_waits_for_holder_within_timeout(mpath):
    lock_path = Path(str(mpath) + ".lock")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, time\n"
            f"fd = os.open({str(lock_path)!r}, os.O_RDWR | os.O_CREAT, 0o644)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\n"
            "print('locked', flush=True)\n"
            "time.sleep(0.3)\n",
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout.readline() == b"locked\n"
        m = Manifest(mpath, lock_timeout=10, warn=Recorder())
        with m.locked():
            m.append([intent_event(A, "s-1", T0)])
    finally:
        holder.wait(timeout=10)
        holder.stdout.close()
    assert list(m.read_state().rows) == [("s-1", A)]


# -- compaction --------------------------------------------------------------------
def _busy_manifest(path: Path) -> None:
    write_lines(
        path,
        HEADER_LINE,
        line(intent_event(A, "s-1", T0)),
        line(intent_event(A, "s-1", T0 + 10)),
        line(intent_event(A, "s-2", T0 + 1)),
        line(commit_event(A, "s-2", T0 + 2)),
        line(commit_event(A, "s-2", T0 + 3)),
        line(intent_event(B, "s-1", T0 + 4)),
        line(forget_event(B, "s-1")),
        line(intent_event(B, "s-3", T0 + 5)),
        line(commit_event(B, "s-9", T0 + 6)),
        line(intent_event("c" * 64, "s-1", T0 + 7)),
        line(commit_event("c" * 64, "s-1", T0 + 8)),
        line(intent_event("c" * 64, "s-1", T0 + 99)),
    )


def test_compact_preserves_fold_and_shape(mpath):
    _busy_manifest(mpath)
    m = Manifest(mpath, warn=Recorder())
    before = m.read_state()
    with m.locked():
        written = m.compact(before)
    after = m.read_state()
    assert after.rows == before.rows
    assert after.has_header
    lines = mpath.read_bytes().split(b"\n")
    assert lines[-1] == b""  # newline-terminated
    lines = lines[:-1]
    assert lines[0] == HEADER_LINE
    committed = sum(1 for r in before.rows.values() if r.committed)
    assert len(lines) == 1 + len(before.rows) + committed == written
    events = [json.loads(raw) for raw in lines[1:]]
    assert sorted(e["op"] for e in events) == sorted(["intent"] * len(before.rows) + ["commit"] * committed)
    # Each commit line follows its row's intent line.
    for i, event in enumerate(events):
        if event["op"] == "commit":
            prev = events[i - 1]
            assert prev["op"] == "intent"
            assert (prev["session_id"], prev["attachment_id"]) == (
                event["session_id"],
                event["attachment_id"],
            )


def test_compact_replaces_file_atomically(mpath):
    _busy_manifest(mpath)
    m = Manifest(mpath, warn=Recorder())
    inode_before = os.stat(mpath).st_ino
    with m.locked():
        m.compact(m.read_state())
    assert os.stat(mpath).st_ino != inode_before  # a new file renamed over the old
    assert sorted(p.name for p in mpath.parent.iterdir()) == [
        "manifest.jsonl",
        "manifest.jsonl.lock",
    ]


def test_compact_failure_leaves_original_untouched(mpath, monkeypatch):
    _busy_manifest(mpath)
    original = mpath.read_bytes()
    m = Manifest(mpath, warn=Recorder())
    state = m.read_state()

    def broken_replace(*args, **kwargs):
        raise OSError(28, "No space left on device")

    import lashctl.fsutil

    monkeypatch.setattr(lashctl.fsutil.os, "replace", broken_replace)
    with m.locked():
        with pytest.raises(StoreIOError):
            m.compact(state)
    monkeypatch.undo()
    assert mpath.read_bytes() == original
    assert sorted(p.name for p in mpath.parent.iterdir()) == [
        "manifest.jsonl",
        "manifest.jsonl.lock",
    ]


def test_compact_keeps_canonical_uri(mpath):
    odd = intent_event(A, "s-1", T0).to_json()
    odd["canonical_uri"] = "sha256:" + A + "?legacy"
    write_lines(mpath, HEADER_LINE, line(odd))
    m = Manifest(mpath, warn=Recorder())
    with m.locked():
        m.compact(m.read_state())
    assert m.read_state().rows[("s-1", A)].canonical_uri == "sha256:" + A + "?legacy"


def test_max_epoch_is_year_9999():
    # 9999-12-31T23:59:59.999Z
    assert manifest_mod.MAX_EPOCH_MS == 253_402_300_799_999
