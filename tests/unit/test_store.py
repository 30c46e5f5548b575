"""BlobStore: staging, installs, iteration, deletes, symlink refusal (the README's store format)."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest

import lashctl.backends.blobs.localfs as store_mod
from lashctl.errors import Corrupt, NotFound, StoreIOError
from lashctl.fsutil import write_file_atomic
from lashctl.backends.blobs.localfs import BlobStore
from backend_helpers import has_blob

DATA = b"hello, attachment store\n"
DATA_ID = hashlib.sha256(DATA).hexdigest()


@pytest.fixture
def blobs(tmp_path: Path) -> BlobStore:
    store = BlobStore(tmp_path / "root")
    store.ensure_writable_layout()
    return store


def put_blob(blobs: BlobStore, data: bytes) -> str:
    staged = blobs.stage(io.BytesIO(data), "<test>")
    blobs.install(staged)
    return staged.attachment_id


def test_layout_created(blobs):
    assert (blobs.root / "sha256").is_dir()
    assert (blobs.root / "tmp").is_dir()


def test_stage_streams_and_hashes_and_install_fsyncs_before_the_rename(blobs, monkeypatch):
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real_fsync(fd)

    monkeypatch.setattr(store_mod.os, "fsync", recording_fsync)
    data = os.urandom(3 * store_mod.CHUNK + 17)  # several chunks
    staged = blobs.stage(io.BytesIO(data), "<test>")

    assert staged.attachment_id == hashlib.sha256(data).hexdigest()
    assert staged.byte_len == len(data)
    assert staged.path.parent == blobs.tmp
    assert staged.path.read_bytes() == data
    assert staged.head == data[: store_mod.HEAD_BYTES]
    # Not installed yet: nothing under sha256/, and no fsync paid yet.
    assert not blobs.blob_path(staged.attachment_id).exists()
    assert str(staged.path) not in synced

    # Installing fsyncs the bytes while they are still at the staging path.
    assert blobs.install(staged) is False
    monkeypatch.undo()
    assert str(staged.path) in synced
    assert blobs.blob_path(staged.attachment_id).read_bytes() == data

    # A duplicate is dropped without any fsync of its staged copy.
    synced.clear()
    monkeypatch.setattr(store_mod.os, "fsync", recording_fsync)
    again = blobs.stage(io.BytesIO(data), "<test>")
    assert blobs.install(again) is True
    monkeypatch.undo()
    assert str(again.path) not in synced
    assert not again.path.exists()


def test_stage_from_reader_without_readinto(blobs):
    class ReadOnly:
        def __init__(self, data: bytes) -> None:
            self._inner = io.BytesIO(data)

        def read(self, n: int = -1) -> bytes:
            return self._inner.read(min(n, 5))  # short reads

    staged = blobs.stage(ReadOnly(DATA), "<test>")
    assert staged.attachment_id == DATA_ID
    assert staged.byte_len == len(DATA)
    assert staged.path.read_bytes() == DATA


def test_stage_empty_input(blobs):
    staged = blobs.stage(io.BytesIO(b""), "<empty>")
    assert staged.attachment_id == hashlib.sha256(b"").hexdigest()
    assert staged.byte_len == 0
    assert staged.path.read_bytes() == b""


def test_stage_read_error_leaves_no_staging_file(blobs):
    class Broken(io.RawIOBase):
        def readinto(self, buffer):
            raise OSError(5, "Input/output error")

    with pytest.raises(StoreIOError, match="broken-input"):
        blobs.stage(Broken(), "broken-input")
    assert list(blobs.tmp.iterdir()) == []


def test_install_renames_into_shard(blobs):
    staged = blobs.stage(io.BytesIO(DATA), "<test>")
    assert blobs.install(staged) is False
    final = blobs.root / "sha256" / DATA_ID[:2] / DATA_ID
    assert blobs.blob_path(DATA_ID) == final
    assert final.read_bytes() == DATA
    assert not staged.path.exists()
    assert list(blobs.tmp.iterdir()) == []


def test_install_existing_right_size_keeps_blob_and_refreshes_mtime(blobs):
    put_blob(blobs, DATA)
    final = blobs.blob_path(DATA_ID)
    os.utime(final, (1_000_000, 1_000_000))
    inode = os.stat(final).st_ino
    staged = blobs.stage(io.BytesIO(DATA), "<again>")
    assert blobs.install(staged) is True
    st = os.stat(final)
    assert st.st_ino == inode  # kept, not rewritten
    assert st.st_mtime > 1_000_000 + 10
    assert not staged.path.exists()
    assert list(blobs.tmp.iterdir()) == []


def test_install_replaces_wrong_size_blob(blobs):
    final = blobs.blob_path(DATA_ID)
    final.parent.mkdir(parents=True)
    final.write_bytes(b"truncated")
    staged = blobs.stage(io.BytesIO(DATA), "<test>")
    assert blobs.install(staged) is False
    assert final.read_bytes() == DATA
    assert list(blobs.tmp.iterdir()) == []


def test_install_replaces_symlink_at_blob_path(blobs, tmp_path):
    target = tmp_path / "outside"
    target.write_bytes(b"x" * len(DATA))  # same size: must still not be trusted
    final = blobs.blob_path(DATA_ID)
    final.parent.mkdir(parents=True)
    final.symlink_to(target)
    staged = blobs.stage(io.BytesIO(DATA), "<test>")
    assert blobs.install(staged) is False
    assert not final.is_symlink()
    assert final.read_bytes() == DATA
    assert target.read_bytes() == b"x" * len(DATA)


def test_iter_ids_ignores_litter(blobs, tmp_path):
    good = put_blob(blobs, DATA)
    other = put_blob(blobs, b"other bytes")
    shard = blobs.blob_path(good).parent
    (shard / (good + ".json")).write_text("{}")
    (shard / (good + ".tmp")).write_bytes(DATA)  # lash-core staging litter
    (shard / ".x.part").write_bytes(b"")
    (shard / "not-an-id").write_bytes(b"")
    (shard / good.upper()).write_bytes(b"")  # not lowercase
    (shard / (good[:63])).write_bytes(b"")  # too short
    # A valid id, but in the wrong shard directory.
    wrong = "ff" + good[2:] if not good.startswith("ff") else "00" + good[2:]
    (shard / wrong).write_bytes(b"")
    # A symlink with a valid id name in its right shard.
    sym_id = hashlib.sha256(b"symlinked").hexdigest()
    (blobs.objects / sym_id[:2]).mkdir(exist_ok=True)
    outside = tmp_path / "target"
    outside.write_bytes(b"symlinked")
    (blobs.objects / sym_id[:2] / sym_id).symlink_to(outside)
    # A directory named like an id.
    dir_id = hashlib.sha256(b"a directory").hexdigest()
    (blobs.objects / dir_id[:2] / dir_id).mkdir(parents=True)
    # Shard-like dirs that are not shards.
    (blobs.objects / "zzz").mkdir()
    (blobs.objects / "README").write_text("hi")

    assert sorted(blobs.iter_ids()) == sorted([good, other])
    assert list(blobs.iter_ids(good[:4])) == [good]
    assert list(blobs.iter_ids(good)) == [good]


def test_iter_ids_on_empty_or_missing_store(tmp_path):
    assert list(BlobStore(tmp_path / "nothing").iter_ids()) == []
    assert list(BlobStore(tmp_path / "nothing").iter_ids("abcd")) == []


def test_delete_removes_blob_and_sidecar(blobs):
    put_blob(blobs, DATA)
    blobs.sidecar_path(DATA_ID).write_text("{}")
    assert blobs.delete(DATA_ID) == len(DATA)
    assert not blobs.blob_path(DATA_ID).exists()
    assert not blobs.sidecar_path(DATA_ID).exists()
    assert list(blobs.iter_ids()) == []


def test_delete_sidecar_only(blobs):
    blobs.sidecar_path(DATA_ID).parent.mkdir(parents=True)
    blobs.sidecar_path(DATA_ID).write_text("{}")
    assert blobs.delete(DATA_ID) == 0
    assert not blobs.sidecar_path(DATA_ID).exists()


def test_delete_absent_is_success(blobs):
    assert blobs.delete(DATA_ID) == 0
    assert blobs.delete("0" * 64) == 0


def test_delete_symlink_leaves_target(blobs, tmp_path):
    target = tmp_path / "precious.txt"
    target.write_bytes(b"do not touch")
    side_target = tmp_path / "precious.json"
    side_target.write_bytes(b'{"keep": true}')
    final = blobs.blob_path(DATA_ID)
    final.parent.mkdir(parents=True)
    final.symlink_to(target)
    blobs.sidecar_path(DATA_ID).symlink_to(side_target)
    assert blobs.delete(DATA_ID) == 0
    assert not os.path.lexists(final)
    assert not os.path.lexists(blobs.sidecar_path(DATA_ID))
    assert target.read_bytes() == b"do not touch"
    assert side_target.read_bytes() == b'{"keep": true}'


def test_delete_refuses_directory(blobs):
    blobs.blob_path(DATA_ID).mkdir(parents=True)
    with pytest.raises(StoreIOError, match=DATA_ID):
        blobs.delete(DATA_ID)
    assert blobs.blob_path(DATA_ID).is_dir()


def test_open_blob_reads_bytes(blobs):
    put_blob(blobs, DATA)
    with blobs.open_blob(DATA_ID) as handle:
        assert handle.read() == DATA


def test_open_blob_missing_is_not_found(blobs):
    with pytest.raises(NotFound):
        blobs.open_blob(DATA_ID)


def test_open_blob_refuses_symlink(blobs, tmp_path):
    target = tmp_path / "secret"
    target.write_bytes(DATA)
    final = blobs.blob_path(DATA_ID)
    final.parent.mkdir(parents=True)
    final.symlink_to(target)
    with pytest.raises(Corrupt) as info:
        blobs.open_blob(DATA_ID)
    assert str(final) in info.value.message
    assert info.value.exit_code == 65
    assert not has_blob(blobs, DATA_ID)
    assert blobs.blob_stat(DATA_ID) is None


@pytest.mark.parametrize(
    "bad",
    ["", "abcd", DATA_ID.upper(), DATA_ID[:63], DATA_ID + "0", "../" + DATA_ID[3:], "g" * 64, None],
)
def test_paths_refuse_invalid_ids(blobs, bad):
    with pytest.raises(ValueError):
        blobs.blob_path(bad)
    with pytest.raises(ValueError):
        blobs.sidecar_path(bad)
    with pytest.raises(ValueError):
        blobs.delete(bad)


def test_sidecar_path_beside_blob(blobs):
    assert blobs.sidecar_path(DATA_ID) == blobs.root / "sha256" / DATA_ID[:2] / (DATA_ID + ".json")


def test_write_file_atomic(tmp_path):
    target = tmp_path / "out.json"
    target.write_bytes(b"old")
    inode = os.stat(target).st_ino
    write_file_atomic(target, b"new contents")
    assert target.read_bytes() == b"new contents"
    assert os.stat(target).st_ino != inode
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_absent_shards_are_the_names_missing_from_one_listing_of_the_objects_directory(blobs, tmp_path):
    """list-uncommitted writes a row from its template only where neither the
    bytes nor the sidecar can exist: the shard's name is not in the objects
    directory. Anything there under that name (a symlink, a file) does not
    count as absent, and the answer is asked anew each time."""
    root = tmp_path / "root"
    with blobs.opened():
        assert blobs.absent_shards({"ab", "cd"}) == {"ab", "cd"}  # no sha256/ yet
    aid = put_blob(blobs, b"here")
    (root / "sha256" / "cd").symlink_to(tmp_path)
    (root / "sha256" / "ef").write_bytes(b"")
    with blobs.opened():
        assert blobs.absent_shards({aid[:2], "cd", "ef", "01"}) == {"01"} - {aid[:2]}
        (root / "sha256" / "01").mkdir()
        assert blobs.absent_shards({"01", "02"}) == {"02"}


def test_absent_shards_stops_at_an_objects_directory_it_may_not_use(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (root / "sha256").symlink_to(tmp_path / "elsewhere")
    blobs = BlobStore(root)
    with blobs.opened(), pytest.raises(store_mod.UnsafePath):
        blobs.absent_shards({"ab"})
