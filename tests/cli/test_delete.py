"""``delete``: refusal of live content, ``--force``, dry run, unsafe shards."""

from __future__ import annotations

import json

from conftest import blob_path, sha, sidecar_path

from .helpers import (
    RUN_FIELDS,
    assert_error,
    assert_ok,
    blob_files,
    drawn,
    ids_out,
    intent,
    now_ms,
    snapshot,
    tsv,
    write_manifest,
)


def test_delete_removes_bytes_and_sidecar_and_repeats_with_exit_0(cli, store, put_blobs):
    (attachment_id,) = put_blobs({"doomed.txt": b"delete me"})
    assert blob_path(store, attachment_id).exists()
    assert sidecar_path(store, attachment_id).exists()

    result = cli("delete", attachment_id)
    assert_ok(result)
    assert not blob_path(store, attachment_id).exists()
    assert not sidecar_path(store, attachment_id).exists()
    assert blob_files(store) == []

    again = cli("delete", attachment_id)
    assert_ok(again)
    again_json = cli("delete", "--json", attachment_id)
    assert_ok(again_json)
    assert json.loads(again_json.stdout)["items"][0]["existed"] is False


def test_delete_force_twice_when_rows_reference_it(cli, store, tmp_path):
    attachment_id = ids_out(cli("put", "-s", "s", "-", input=b"forced"))[0]
    assert_ok(cli("delete", "--force", attachment_id))
    assert not blob_path(store, attachment_id).exists()
    assert not sidecar_path(store, attachment_id).exists()
    assert_ok(cli("delete", "--force", attachment_id))


def test_delete_refuses_live_content_naming_the_sessions(cli, store, tmp_path):
    data = b"referenced"
    attachment_id = ids_out(cli("put", "-s", "alice", "-", input=data))[0]
    assert_ok(cli("put", "-s", "bob", "-", input=data))
    assert_ok(cli("commit", "-s", "bob", attachment_id))
    before = snapshot(store)

    result = cli("delete", attachment_id)
    assert_error(result, 4, "alice", "bob", attachment_id)
    assert result.stdout == ""
    assert snapshot(store) == before

    result = cli("delete", "--dry-run", "--force", "--json", attachment_id)
    assert_ok(result)
    document = json.loads(result.stdout)
    assert document["dry_run"] is True and document["blobs_deleted"] == 1
    assert document["items"] == [
        {"id": attachment_id, "existed": True, "byte_len": len(data), "sessions": ["alice", "bob"]}
    ]
    assert snapshot(store) == before

    result = cli("delete", "--force", attachment_id)
    assert_ok(result)
    assert not blob_path(store, attachment_id).exists()
    assert not sidecar_path(store, attachment_id).exists()


def test_delete_dry_run_deletes_nothing(cli, store, put_blobs):
    (attachment_id,) = put_blobs({"x": b"unreferenced"})
    before = snapshot(store)
    result = cli("delete", "--dry-run", attachment_id)
    assert_ok(result)
    assert snapshot(store) == before
    assert blob_path(store, attachment_id).exists()
    assert attachment_id in result.stdout


def test_delete_record_whole(cli, store, put_blobs, monkeypatch):
    (present,) = put_blobs({"p.bin": b"present"})
    absent = sha(b"absent")
    write_manifest(store, [intent(present, "s2", now_ms()), intent(present, "s1", now_ms())])
    dry = cli("delete", "-n", "--force", "--json", present, absent)
    assert_ok(dry)
    document = json.loads(dry.stdout)
    assert list(document) == RUN_FIELDS + ["dry_run", "blobs_deleted", "bytes_freed", "items"]
    assert (document["dry_run"], document["blobs_deleted"], document["bytes_freed"]) == (True, 1, 7)
    assert document["items"] == [
        {"id": present, "existed": True, "byte_len": 7, "sessions": ["s1", "s2"]},
        {"id": absent, "existed": False, "byte_len": 0, "sessions": []},
    ]
    piped = cli("delete", "-n", "--force", present, absent)
    assert tsv(piped) == [[present, "would delete", "7", "s1, s2"], [absent, "absent", "-", "-"]]
    assert piped.stderr == "dry run: would delete 1 blob(s), 7 B\n"
    result, tables = drawn(cli, monkeypatch, "delete", "--force", present, absent)
    assert_ok(result)
    assert tables == [
        (
            [
                ("id", "id", 0, 8, None),
                ("action", "fixed", 0, 8, None),
                ("size", "bytes", 2, 8, None),
                ("referenced by", "text", 1, 8, None),
            ],
            [[present, "deleted", 7, "s1, s2"], [absent, "absent", None, None]],
        )
    ]
    assert result.stderr == "deleted 1 blob(s), 7 B\n"


def test_delete_of_several_ids_deletes_nothing_when_one_shard_is_unsafe(cli, store, tmp_path):
    ids = []
    for n in range(40):  # ids in at least two shards
        (tmp_path / f"f{n}").write_bytes(f"unreferenced {n}".encode())
        ids.append(sha(f"unreferenced {n}".encode()))
        if len({i[:2] for i in ids}) >= 2:
            break
    first, last = sorted(ids)[0], sorted(ids)[-1]
    for n in range(len(ids)):
        assert cli("put", "-s", "s", str(tmp_path / f"f{n}")).exit_code == 0
    (store / "manifest.jsonl").write_text('{"op":"header","format":"lashctl-manifest","version":1}\n')
    shard = store / "sha256" / last[:2]
    outside = tmp_path / "outside"
    shard.rename(outside)
    shard.symlink_to(outside)
    result = cli("delete", first, last)
    assert result.exit_code == 65
    assert blob_path(store, first).is_file()  # nothing was deleted
    assert (outside / last).is_file()
