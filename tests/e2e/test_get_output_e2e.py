"""Where ``get -o`` writes: a regular file is replaced whole (staged beside it,
renamed into place, keeping its mode); anything else (a FIFO, a device, a
symlink to a stream) is written into as ``cat > PATH`` would."""

from __future__ import annotations

import os
import stat
import subprocess
import threading
from pathlib import Path

import pytest

from reliability_helpers import base_env, blob_path, find_lashctl, one_line_error, run

pytestmark = pytest.mark.e2e

DATA = os.urandom(3 * 1024 * 1024 + 11)  # more than one read chunk


def _put(store: Path, data: bytes = DATA) -> str:
    result = run(["--store", store, "put", "-s", "s", "-"], input=data)
    assert result.returncode == 0, result.stderr
    return result.stdout.decode().strip()


def _read_fifo(path: Path) -> tuple[threading.Thread, list[bytes]]:
    """A reader of the FIFO at ``path`` on a thread: what it read lands in the list."""
    got: list[bytes] = []

    def read() -> None:
        with open(path, "rb") as handle:
            got.append(handle.read())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    return reader, got


def _rot(store: Path, attachment_id: str) -> None:
    path = blob_path(store, attachment_id)
    os.chmod(path, 0o644)
    rotten = bytearray(path.read_bytes())
    rotten[5] ^= 0x01
    path.write_bytes(bytes(rotten))


def test_get_into_a_fifo_feeds_its_reader_and_leaves_the_fifo(tmp_path):
    store = tmp_path / "store"
    attachment_id = _put(store)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    reader, got = _read_fifo(fifo)
    result = run(["--store", store, "get", attachment_id, "-o", fifo])
    reader.join(timeout=30)
    assert result.returncode == 0, result.stderr
    assert got == [DATA]
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo", "store"]


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod of a character device needs root")
def test_get_into_a_character_device_writes_into_it_and_keeps_the_device(tmp_path):
    store = tmp_path / "store"
    attachment_id = _put(store)
    null = tmp_path / "null"
    os.mknod(null, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # a private copy of /dev/null
    result = run(["--store", store, "get", attachment_id, "-o", null])
    assert result.returncode == 0, result.stderr
    st = os.lstat(null)
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["null", "store"]


def test_get_through_a_symlink_to_standard_output_writes_there_and_keeps_the_link(tmp_path):
    store = tmp_path / "store"
    attachment_id = _put(store)
    link = tmp_path / "out"
    os.symlink("/proc/self/fd/1", link)
    result = run(["--store", store, "get", attachment_id, "-o", link])
    assert result.returncode == 0, result.stderr
    assert result.stdout == DATA
    assert os.readlink(link) == "/proc/self/fd/1"


def test_get_through_a_symlink_to_a_file_replaces_the_file_and_keeps_the_link(tmp_path):
    store = tmp_path / "store"
    attachment_id = _put(store)
    real = tmp_path / "real"
    real.mkdir()
    (real / "target").write_bytes(b"old")
    os.chmod(real / "target", 0o600)
    link = tmp_path / "link"
    os.symlink(real / "target", link)
    result = run(["--store", store, "get", attachment_id, "-o", link])
    assert result.returncode == 0, result.stderr
    assert os.readlink(link) == str(real / "target")
    assert (real / "target").read_bytes() == DATA
    assert stat.S_IMODE(os.stat(real / "target").st_mode) == 0o600
    assert sorted(p.name for p in real.iterdir()) == ["target"]


def test_get_into_a_directory_is_a_usage_error(tmp_path):
    store = tmp_path / "store"
    attachment_id = _put(store)
    out = tmp_path / "out"
    out.mkdir()
    for dest in (out, tmp_path / "dirlink"):
        if dest != out:
            os.symlink(out, dest)
        result = run(["--store", store, "get", attachment_id, "-o", dest])
        assert result.returncode == 2, result.stderr
        assert "is a directory" in one_line_error(result.stderr)
    assert list(out.iterdir()) == []


def test_a_hash_mismatch_into_a_fifo_says_the_bytes_already_went(tmp_path):
    store = tmp_path / "store"
    attachment_id = _put(store, b"precious bytes that will rot")
    _rot(store, attachment_id)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    reader, got = _read_fifo(fifo)
    result = run(["--store", store, "get", attachment_id, "-o", fifo])
    reader.join(timeout=30)
    assert result.returncode == 65
    line = one_line_error(result.stderr)
    assert "hash mismatch" in line
    assert line.endswith(f"; the bytes already written to {fifo} (a FIFO) cannot be taken back")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_a_hash_mismatch_leaves_an_existing_file_as_it_was(tmp_path):
    store = tmp_path / "store"
    attachment_id = _put(store, b"precious bytes that will rot")
    _rot(store, attachment_id)
    out = tmp_path / "out"
    out.mkdir()
    (out / "copy").write_bytes(b"what was there")
    result = run(["--store", store, "get", attachment_id, "-o", out / "copy"])
    assert result.returncode == 65
    assert "hash mismatch" in one_line_error(result.stderr)
    assert (out / "copy").read_bytes() == b"what was there"
    assert sorted(p.name for p in out.iterdir()) == ["copy"]


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o604])
def test_get_onto_an_existing_file_keeps_its_mode(tmp_path, mode):
    store = tmp_path / "store"
    attachment_id = _put(store)
    dest = tmp_path / "copy"
    dest.write_bytes(b"old")
    os.chmod(dest, mode)
    result = run(["--store", store, "get", attachment_id, "-o", dest])
    assert result.returncode == 0, result.stderr
    assert dest.read_bytes() == DATA
    assert stat.S_IMODE(os.stat(dest).st_mode) == mode


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
def test_get_as_root_onto_another_users_file_keeps_its_owner_and_group(tmp_path):
    store = tmp_path / "store"
    attachment_id = _put(store)
    dest = tmp_path / "copy"
    dest.write_bytes(b"old")
    os.chown(dest, 65534, 65534)
    os.chmod(dest, 0o640)
    result = run(["--store", store, "get", attachment_id, "-o", dest])
    assert result.returncode == 0, result.stderr
    st = os.stat(dest)
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (65534, 65534, 0o640)


def test_get_to_dev_stdout_appends_to_the_file_standard_output_already_writes(tmp_path):
    """``-o /dev/stdout >> log``: the log is written into where the shell
    left it, never replaced by a file holding the blob alone."""
    store = tmp_path / "store"
    attachment_id = _put(store)
    log = tmp_path / "log"
    log.write_bytes(b"before\n")
    with open(log, "ab") as out:
        result = subprocess.run(
            [find_lashctl(), "--store", str(store), "get", attachment_id, "-o", "/dev/stdout"],
            stdout=out,
            stderr=subprocess.PIPE,
            env=base_env(),
        )
    assert result.returncode == 0, result.stderr
    assert log.read_bytes() == b"before\n" + DATA
