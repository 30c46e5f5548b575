"""A local store deletes a sweep's batch with several unlinks in flight:
every blob and sidecar goes, each size is told, an error stays the item's
own, and an interrupt stops the rest only once every unlink started is done."""

from __future__ import annotations

import io
import threading
import time

import pytest

from lashctl.backends.blobs import localfs
from lashctl.backends.blobs.localfs import BlobStore


def _put(blobs: BlobStore, data: bytes) -> str:
    with blobs.opened():
        blobs.ensure_writable_layout()
        staged = blobs.stage(io.BytesIO(data), "test")
        blobs.install(staged)
    return staged.attachment_id


def test_delete_many_of_a_big_batch_deletes_every_blob_and_tells_each_size(tmp_path):
    blobs = BlobStore(tmp_path / "store")
    ids = [_put(blobs, b"x" * n) for n in range(1, 3 * localfs.DELETERS + 2)]
    for i in ids[:5]:
        blobs.sidecar_path(i).write_text("{}")
    absent = "0" * 64
    result = blobs.delete_many(ids + [absent])
    assert result == {**{i: n for n, i in enumerate(ids, 1)}, absent: 0}
    assert not [p for p in (tmp_path / "store" / "sha256").rglob("*") if p.is_file()]


def test_a_blob_that_cannot_be_deleted_fails_alone(tmp_path):
    blobs = BlobStore(tmp_path / "store")
    ids = [_put(blobs, str(n).encode()) for n in range(3 * localfs.DELETERS)]
    ids.sort()
    blocked = ids[7]
    blobs.blob_path(blocked).unlink()
    blobs.blob_path(blocked).mkdir()
    result = blobs.delete_many(ids)
    assert "it is a directory" in result[blocked]
    assert all(result[i] > 0 for i in ids if i != blocked)


def test_together_waits_for_the_work_started_before_raising_an_interrupt():
    started, done = [], []
    lock = threading.Lock()

    def work(item: str) -> None:
        with lock:
            started.append(item)
        if item == "3":
            raise KeyboardInterrupt  # raised on a worker: stops the rest, raised here
        time.sleep(0.01)
        with lock:
            done.append(item)

    with pytest.raises(KeyboardInterrupt):
        localfs._together(work, [str(n) for n in range(400)], 4)
    assert len(started) < 400  # the rest was not started
    assert set(started) - set(done) == {"3"}  # every other one started has finished


def test_an_interrupt_while_the_threads_start_waits_for_those_started(monkeypatch):
    """A signal can land while the workers are being started: the ones
    already running finish their item before the interrupt is raised, so the
    caller (which then looks at what is still there) never races an unlink."""
    lock = threading.Lock()
    started, done = [], []
    real_start = threading.Thread.start
    calls = []

    def start(self):
        real_start(self)
        calls.append(self)
        if len(calls) == 2:
            raise KeyboardInterrupt  # as a SIGTERM handler would, in the caller's thread

    def work(item: str) -> None:
        with lock:
            started.append(item)
        time.sleep(0.05)
        with lock:
            done.append(item)

    monkeypatch.setattr(threading.Thread, "start", start)
    with pytest.raises(KeyboardInterrupt):
        localfs._together(work, [str(n) for n in range(40)], 4)
    with lock:
        assert started and set(started) == set(done), (started, done)
