"""``forget``: a session's rows go, bytes never do; a dry run changes nothing; an id the
session has no row for is exit 3."""

from __future__ import annotations

import json

from conftest import blob_path

from .helpers import assert_error, assert_ok, ids_out, manifest_file, write_inputs


def test_forget_removes_the_sessions_rows_and_never_bytes(cli, store, tmp_path):
    paths = write_inputs(tmp_path / "in", {"a.txt": b"alpha", "b.bin": b"beta"})
    a, b = ids_out(cli("put", "-s", "s1", *map(str, paths)))
    assert_ok(cli("put", "-s", "s2", str(paths[0])))
    assert_ok(cli("commit", "-s", "s1", a))
    before = manifest_file(store).read_bytes()

    dry = cli("--json", "forget", "-s", "s1", "--dry-run")
    assert_ok(dry)
    report = json.loads(dry.stdout)
    assert (report["dry_run"], report["rows_forgotten"], report["committed_rows_forgotten"]) == (True, 2, 1)
    assert sorted((i["id"], i["state"]) for i in report["items"]) == sorted([(a, "committed"), (b, "uncommitted")])
    assert manifest_file(store).read_bytes() == before

    done = cli("--json", "forget", "-s", "s1", a)
    assert_ok(done)
    assert json.loads(done.stdout)["items"] == [{"id": a, "session_id": "s1", "state": "committed"}]
    pending = json.loads(cli("--json", "list-uncommitted").stdout)
    assert sorted((row["id"], row["session_id"]) for row in pending) == sorted([(a, "s2"), (b, "s1")])
    assert blob_path(store, a).read_bytes() == b"alpha"


def test_forget_of_an_id_the_session_has_no_row_for_is_exit_3(cli, store, tmp_path):
    (path,) = write_inputs(tmp_path / "in", {"a.txt": b"alpha"})
    (a,) = ids_out(cli("put", "-s", "s1", str(path)))
    result = cli("--json", "forget", "-s", "s2", a)
    assert_error(result, 3, a)
    assert json.loads(result.stdout)["missing"] == [a]
    assert blob_path(store, a).exists()
