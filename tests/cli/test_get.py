"""``get``: bytes out, verified, to stdout or a file."""

from __future__ import annotations

import json
import os

from conftest import blob_path, sha, sidecar_path

from .helpers import assert_error, assert_ok, ids_out, write_inputs


def test_get_round_trips_bytes(cli, store, tmp_path):
    data = bytes(range(256)) * 50
    (source,) = write_inputs(tmp_path / "in", {"blob.bin": data})
    attachment_id = ids_out(cli("put", "-s", "s", str(source)))[0]
    result = cli("get", attachment_id)
    assert_ok(result)
    assert result.stdout_bytes == data
    result = cli("get", "-o", "-", attachment_id)
    assert_ok(result)
    assert result.stdout_bytes == data


def test_get_unknown_full_id_exits_3(cli, store, tmp_path):
    assert_ok(cli("put", "-s", "s", "-", input=b"something"))
    unknown = sha(b"never stored")
    result = cli("get", unknown)
    assert_error(result, 3, unknown)
    assert result.stdout == ""


def test_get_to_a_path_writes_the_file_atomically(cli, store, tmp_path):
    data = os.urandom(3 * 1024 * 1024 + 7)  # more than one read chunk
    attachment_id = ids_out(cli("put", "-s", "s", "-", input=data))[0]
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    target = out_dir / "copy.bin"
    target.write_bytes(b"old content")
    result = cli("get", attachment_id, "-o", str(target))
    assert_ok(result)
    assert result.stdout == ""
    assert target.read_bytes() == data
    assert [p.name for p in out_dir.iterdir()] == ["copy.bin"]

    result = cli("get", "--json", attachment_id, "-o", str(out_dir / "j.bin"))
    assert_ok(result)
    assert json.loads(result.stdout) == {"id": attachment_id, "path": str(out_dir / "j.bin"), "byte_len": len(data)}


def test_get_of_a_corrupted_blob_exits_65_and_leaves_no_output(cli, store, tmp_path):
    data = b"precious bytes that will rot"
    attachment_id = ids_out(cli("put", "-s", "s", "-", input=data))[0]
    path = blob_path(store, attachment_id)
    rotten = bytearray(path.read_bytes())
    rotten[5] ^= 0x01
    path.write_bytes(bytes(rotten))

    out_dir = tmp_path / "out"
    out_dir.mkdir()
    result = cli("get", attachment_id, "-o", str(out_dir / "copy.bin"))
    assert_error(result, 65, attachment_id)
    assert list(out_dir.iterdir()) == []

    result = cli("get", attachment_id, "-o", "-")
    assert_error(result, 65)


def test_get_with_a_missing_sidecar_warns_and_still_outputs_the_bytes(cli, store):
    data = b"bytes without metadata"
    attachment_id = ids_out(cli("put", "-s", "s", "-", input=data))[0]
    sidecar = sidecar_path(store, attachment_id)
    sidecar.unlink()
    result = cli("get", attachment_id)
    assert_ok(result)
    assert result.stdout_bytes == data
    assert str(sidecar) in result.stderr
    assert "warning" in result.stderr


def test_get_with_an_undecodable_sidecar_is_corruption(cli, store):
    attachment_id = ids_out(cli("put", "-s", "s", "-", input=b"meta rot"))[0]
    sidecar_path(store, attachment_id).write_text("{not json", "utf-8")
    result = cli("get", attachment_id)
    assert_error(result, 65, str(sidecar_path(store, attachment_id)))
    assert result.stdout == ""
