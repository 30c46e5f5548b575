"""fsutil.Pump and the big-file paths built on it: a thread reads and writes
while the caller hashes; the caller sees exactly the bytes written, errors
reach the caller, and an abandoned pump never blocks the caller."""

from __future__ import annotations

import errno
import hashlib
import io
import os
import threading
import time
from pathlib import Path

import pytest

import lashctl.backends.blobs.localfs as store_mod
from lashctl import fsutil
from lashctl.backends.blobs.localfs import BlobStore
from lashctl.errors import StoreIOError
from lashctl.fsutil import Pump

CHUNK = 64 * 1024


def _pump_through(source: io.BufferedIOBase, fd: int, **kwargs) -> bytes:
    """What the caller sees of ``source`` pumped into ``fd``."""
    buffer = bytearray(CHUNK)
    n = source.readinto(buffer)
    pump = Pump(source.readinto, fd, CHUNK, n, buffer, **kwargs)
    seen = bytearray()
    try:
        for chunk in pump:
            seen += chunk
        pump.finish()
    except BaseException:
        pump.abandon(wait=True)
        raise
    return bytes(seen)


class ShortReads(io.RawIOBase):
    """Reads of at most ``step`` bytes, as from a pipe."""

    def __init__(self, data: bytes, step: int) -> None:
        self._data, self._at, self._step = data, 0, step

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = min(len(buffer), self._step, len(self._data) - self._at)
        buffer[:n] = self._data[self._at : self._at + n]
        self._at += n
        return n


@pytest.mark.parametrize("read_ahead", [True, False], ids=["thread reads", "caller reads"])
def test_the_caller_sees_exactly_the_bytes_written_in_order(tmp_path: Path, read_ahead: bool) -> None:
    data = os.urandom(10 * CHUNK + 123)
    out = tmp_path / "out"
    fd = os.open(out, os.O_WRONLY | os.O_CREAT)
    try:
        seen = _pump_through(ShortReads(data, CHUNK - 1000), fd, read_ahead=read_ahead)
    finally:
        os.close(fd)
    assert seen == data
    assert out.read_bytes() == data


def test_writeback_is_started_over_what_was_written(tmp_path: Path, monkeypatch) -> None:
    started: list[tuple[int, int]] = []
    monkeypatch.setattr(fsutil, "start_writeback", lambda fd, offset, length: started.append((offset, length)))
    monkeypatch.setattr(Pump, "WRITEBACK_STEP", 3 * CHUNK)
    data = os.urandom(10 * CHUNK)
    fd = os.open(tmp_path / "out", os.O_WRONLY | os.O_CREAT)
    try:
        assert _pump_through(io.BytesIO(data), fd, writeback=True) == data
    finally:
        os.close(fd)
    assert started == [(0, 3 * CHUNK), (3 * CHUNK, 3 * CHUNK), (6 * CHUNK, 3 * CHUNK)]


def test_start_writeback_is_harmless_on_a_file_and_on_a_pipe(tmp_path: Path) -> None:
    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT)
    r, w = os.pipe()
    try:
        os.write(fd, b"x" * 10000)
        fsutil.start_writeback(fd, 0, 10000)
        fsutil.start_writeback(w, 0, 10)  # ESPIPE, ignored: the fsync reports what matters
    finally:
        for d in (fd, r, w):
            os.close(d)


@pytest.mark.parametrize("read_ahead", [True, False], ids=["thread reads", "caller reads"])
def test_a_write_error_reaches_the_caller_as_the_error_it_asked_for(tmp_path: Path, read_ahead: bool) -> None:
    fd = os.open(tmp_path / "ro", os.O_RDONLY | os.O_CREAT)  # writes fail with EBADF
    try:
        with pytest.raises(StoreIOError, match="cannot write") as info:
            _pump_through(
                io.BytesIO(os.urandom(5 * CHUNK)),
                fd,
                read_ahead=read_ahead,
                write_error=lambda exc: StoreIOError.wrap("write", "the file", exc),
            )
        assert isinstance(info.value.__cause__, OSError) and info.value.__cause__.errno == errno.EBADF
    finally:
        os.close(fd)


def test_a_read_error_reaches_the_caller(tmp_path: Path) -> None:
    class Failing(io.RawIOBase):
        calls = 0

        def readinto(self, buffer) -> int:
            self.calls += 1
            if self.calls > 3:
                raise OSError(errno.EIO, "Input/output error")
            buffer[:10] = b"0123456789"
            return 10

    fd = os.open(tmp_path / "out", os.O_WRONLY | os.O_CREAT)
    try:
        with pytest.raises(OSError, match="Input/output error"):
            _pump_through(Failing(), fd)
    finally:
        os.close(fd)


def test_an_abandoned_pump_on_a_stalled_pipe_returns_at_once_and_writes_no_more(tmp_path: Path) -> None:
    r, w = os.pipe()
    out = tmp_path / "out"
    fd = os.open(out, os.O_WRONLY | os.O_CREAT)
    source = os.fdopen(r, "rb", buffering=0)
    os.write(w, b"a" * 100)
    buffer = bytearray(CHUNK)
    n = source.readinto(buffer)
    pump = Pump(source.readinto, fd, CHUNK, n, buffer)
    chunks = iter(pump)
    assert bytes(next(chunks)) == b"a" * 100
    started = time.monotonic()
    pump.abandon(wait=False)  # the thread waits for the pipe, which stays silent
    assert time.monotonic() - started < 5
    os.close(fd)  # the caller's descriptor goes: the thread writes to its own duplicate
    os.write(w, b"b" * 100)  # wakes the thread: it stops without writing what it read
    os.close(w)
    pump._thread.join(10)
    assert not pump._thread.is_alive()
    source.close()
    assert out.read_bytes() == b"a" * 100


def test_memory_stays_within_the_ring_of_buffers(tmp_path: Path, monkeypatch) -> None:
    made: list[int] = []
    real = bytearray

    class Counting(real):
        def __init__(self, *args) -> None:
            super().__init__(*args)
            made.append(len(self))

    monkeypatch.setattr(fsutil, "bytearray", Counting, raising=False)
    fd = os.open(tmp_path / "out", os.O_WRONLY | os.O_CREAT)
    try:
        data = os.urandom(40 * CHUNK)
        assert _pump_through(io.BytesIO(data), fd) == data
    finally:
        os.close(fd)
    assert sum(made) <= Pump.DEPTH * CHUNK


# -- the paths built on it -------------------------------------------------------------------
@pytest.fixture
def blobs(tmp_path: Path) -> BlobStore:
    store = BlobStore(tmp_path / "root")
    store.ensure_writable_layout()
    return store


def test_stage_from_a_pipe_in_many_chunks(blobs: BlobStore) -> None:
    data = os.urandom(5 * store_mod.CHUNK + 7)
    r, w = os.pipe()
    feeder = threading.Thread(target=lambda: (fsutil.write_all(w, data), os.close(w)))
    feeder.start()
    with os.fdopen(r, "rb") as source:
        staged = blobs.stage(source, "-")
    feeder.join()
    assert staged.attachment_id == hashlib.sha256(data).hexdigest()
    assert staged.byte_len == len(data)
    assert staged.path.read_bytes() == data
    assert staged.head == data[: store_mod.HEAD_BYTES]


def test_a_write_error_mid_stage_leaves_no_staging_file(blobs: BlobStore, monkeypatch) -> None:
    real_write = os.write
    written = {"n": 0}

    def full_disk(fd, data):
        if written["n"] >= 2 * store_mod.CHUNK:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written["n"] += len(data)
        return real_write(fd, data)

    monkeypatch.setattr(fsutil.os, "write", full_disk)
    with pytest.raises(StoreIOError, match="No space left"):
        blobs.stage(io.BytesIO(os.urandom(6 * store_mod.CHUNK)), "<big>")
    monkeypatch.undo()
    assert list(blobs.tmp.iterdir()) == []


def _store_with(tmp_path: Path, data: bytes):
    from lashctl import core

    store = core.Store(tmp_path / "root", lock_timeout=2.0, warn=lambda message: None)
    store.blobs.ensure_writable_layout()
    with store.blobs.opened():
        staged = store.blobs.stage(io.BytesIO(data), "<test>")
        store.blobs.install(staged)
    return store, staged.attachment_id


def test_get_of_a_big_blob_to_a_file_and_to_a_pipe(tmp_path: Path) -> None:
    from lashctl import transfer

    data = os.urandom(5 * store_mod.CHUNK + 3)
    store, aid = _store_with(tmp_path, data)
    dest = tmp_path / "out.bin"
    assert transfer.get_to_file(store, aid, dest) == (len(data), None)
    assert dest.read_bytes() == data

    r, w = os.pipe()
    got = bytearray()

    def drain() -> None:
        while block := os.read(r, 1 << 16):
            got.extend(block)

    reader = threading.Thread(target=drain)
    reader.start()
    with os.fdopen(w, "wb") as out:
        out.write(b"before:")  # what the handle holds goes out first
        assert transfer.copy_verified(store, aid, out) == len(data)
    reader.join()
    os.close(r)
    assert bytes(got) == b"before:" + data


def test_get_of_a_rotten_big_blob_leaves_the_file_as_it_was(tmp_path: Path) -> None:
    from lashctl import transfer
    from lashctl.errors import Corrupt

    data = os.urandom(5 * store_mod.CHUNK + 3)
    store, aid = _store_with(tmp_path, data)
    blob = store.blobs.blob_path(aid)
    os.chmod(blob, 0o644)
    blob.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # the last byte differs
    dest = tmp_path / "out.bin"
    dest.write_bytes(b"what was there")
    with pytest.raises(Corrupt, match="hash mismatch"):
        transfer.get_to_file(store, aid, dest)
    assert dest.read_bytes() == b"what was there"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin", "root"]


# -- a batch lands after one flush of everything it staged ------------------------------------
def test_a_batch_fsyncs_every_staged_file_before_any_rename_and_the_shards_after(tmp_path: Path, monkeypatch) -> None:
    from lashctl import sidecar

    blobs = BlobStore(tmp_path / "root")
    blobs.ensure_writable_layout()
    old = blobs.stage(io.BytesIO(b"already there"), "<old>")
    with blobs.opened():
        blobs.install(old)
    items = []
    with blobs.opened():
        for n in range(40):
            staged = blobs.stage(io.BytesIO(b"blob %d" % n), "<new>")
            items.append(
                (staged, sidecar.Metadata(staged.attachment_id, "text/plain", staged.byte_len, None, None, f"f{n}"))
            )
        again = blobs.stage(io.BytesIO(b"already there"), "<old>")
        items.append((again, None))
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(src, dst, **kwargs):
        events.append(("rename", str(dst)))
        return real_replace(src, dst, **kwargs)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    landed = blobs.land(items)
    monkeypatch.undo()

    assert landed == [False] * 40 + [True]
    first_rename = next(i for i, (kind, _) in enumerate(events) if kind == "rename")
    staged_syncs = [i for i, (kind, path) in enumerate(events) if kind == "fsync" and path.startswith(f"{blobs.tmp}/")]
    assert len(staged_syncs) == 80  # 40 blobs and 40 sidecars; the duplicate pays none
    assert max(staged_syncs) < first_rename
    renames = [path for kind, path in events if kind == "rename"]
    for staged, meta in items[:40]:
        assert renames.index(staged.attachment_id + ".json") < renames.index(staged.attachment_id)
    last_rename = max(i for i, (kind, _) in enumerate(events) if kind == "rename")
    shard_syncs = {path for kind, path in events[last_rename:] if kind == "fsync"}
    assert shard_syncs == {str(blobs.shard_dir(s.attachment_id)) for s, _ in items[:40]}
    for staged, meta in items[:40]:
        assert blobs.blob_path(staged.attachment_id).read_bytes() == b"blob %d" % items.index((staged, meta))
        assert blobs.read_sidecar(staged.attachment_id) == meta
    assert list(blobs.tmp.iterdir()) == []


def test_a_failed_fsync_renames_nothing_and_leaves_no_sidecar_staging(tmp_path: Path, monkeypatch) -> None:
    from lashctl import sidecar

    blobs = BlobStore(tmp_path / "root")
    blobs.ensure_writable_layout()
    with blobs.opened():
        items = []
        for n in range(5):
            staged = blobs.stage(io.BytesIO(b"blob %d" % n), "<new>")
            items.append(
                (staged, sidecar.Metadata(staged.attachment_id, "text/plain", staged.byte_len, None, None, None))
            )
    real_fsync = os.fsync

    def failing(fd):
        if os.readlink(f"/proc/self/fd/{fd}").endswith(items[3][0].name):
            raise OSError(errno.EIO, "Input/output error")
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", failing)
    with pytest.raises(StoreIOError, match="Input/output error"):
        blobs.land(items)
    monkeypatch.undo()
    assert not any(
        blobs.blob_path(s.attachment_id).exists() or blobs.sidecar_path(s.attachment_id).exists() for s, _ in items
    )
    assert sorted(p.name for p in blobs.tmp.iterdir()) == sorted(s.name for s, _ in items)  # put discards these
