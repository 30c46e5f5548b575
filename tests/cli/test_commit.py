"""``commit``: statuses, ids from stdin, the session it needs."""

from __future__ import annotations

import json

from conftest import blob_path, sha

from .helpers import assert_error, assert_ok, drawn, ids_out, manifest_file, read_events, tsv, write_inputs


def test_commit_reports_each_status_and_exit_3_for_no_intent(cli, store, tmp_path):
    sources = write_inputs(tmp_path / "in", {"a": b"aaa", "b": b"bbb", "c": b"ccc", "d": b"ddd"})
    a, b, c, d = ids_out(cli("put", "-s", "s1", *map(str, sources)))

    result = cli("commit", "-s", "s1", "--json", a)
    assert_ok(result)
    assert json.loads(result.stdout) == [{"id": a, "session_id": "s1", "status": "committed"}]

    result = cli("commit", "-s", "s1", a, b)
    assert_ok(result)
    assert result.stdout == f"{a}\ts1\talready_committed\n{b}\ts1\tcommitted\n"

    unknown = sha(b"no such upload")
    result = cli("--json", "commit", "-s", "s1", c, unknown)
    assert_error(result, 3, unknown)
    assert json.loads(result.stdout) == [
        {"id": c, "session_id": "s1", "status": "committed"},
        {"id": unknown, "session_id": "s1", "status": "no_intent"},
    ]
    # c was committed despite the exit 3.
    result = cli("commit", "-s", "s1", "--json", c)
    assert_ok(result)
    assert json.loads(result.stdout)[0]["status"] == "already_committed"

    # The row belongs to s1: s2 has no intent for it, and nothing is written.
    lines = manifest_file(store).read_bytes()
    result = cli("commit", "-s", "s2", a)
    assert_error(result, 3)
    assert result.stdout == f"{a}\ts2\tno_intent\n"
    assert manifest_file(store).read_bytes() == lines

    # From stdin, with the session from the environment.
    result = cli("commit", "-", input=f"{d}\n", env={"LASHCTL_SESSION": "s1"})
    assert_ok(result)
    assert result.stdout == f"{d}\ts1\tcommitted\n"

    # "already committed" still writes its commit event (a no-op in the fold): the
    # state cache is never trusted to skip one. "no intent" writes nothing.
    commits = [e for e in read_events(store) if e["op"] == "commit"]
    assert [(e["attachment_id"], e["session_id"]) for e in commits] == [
        (a, "s1"),
        (a, "s1"),
        (b, "s1"),
        (c, "s1"),
        (c, "s1"),
        (d, "s1"),
    ]
    listed = cli("list-uncommitted", "--json")
    assert_ok(listed)
    assert json.loads(listed.stdout) == []


def test_commit_reads_several_ids_from_stdin(cli, store, tmp_path):
    sources = write_inputs(tmp_path / "in", {"a": b"one", "b": b"two"})
    a, b = ids_out(cli("put", "-s", "S", *map(str, sources)))
    result = cli("commit", "-s", "S", "-", input=f"{a}\n{b}\n")
    assert_ok(result)
    assert result.stdout == f"{a}\tS\tcommitted\n{b}\tS\tcommitted\n"


def test_commit_requires_a_session(cli, store):
    result = cli("commit", sha(b"x"))
    assert_error(result, 2, "session")


def test_an_intent_for_a_committed_row_changes_nothing(cli, store, tmp_path):
    (source,) = write_inputs(tmp_path / "in", {"a": b"kept"})
    (a,) = ids_out(cli("put", "-s", "s", str(source)))
    assert_ok(cli("commit", "-s", "s", a))
    assert_ok(cli("put", "-s", "s", str(source)))  # a second intent for the committed row
    listed = cli("list-uncommitted", "--json")
    assert_ok(listed)
    assert json.loads(listed.stdout) == []
    result = cli("reclaim", "--force", "--older-than", "0s", "--json")
    assert_ok(result)
    assert json.loads(result.stdout)["items"] == []
    assert blob_path(store, a).exists()


def test_commit_record_whole(cli, store, tmp_path, monkeypatch):
    a, b = ids_out(cli("put", "-s", "s1", "-", input=b"aaa")) + ids_out(cli("put", "-s", "s1", "-", input=b"bbb"))
    nobody = sha(b"nobody")
    assert_ok(cli("commit", "-s", "s1", b))
    result = cli("commit", "-s", "s1", "--json", a, b, nobody)
    assert result.exit_code == 3
    assert json.loads(result.stdout) == [
        {"id": a, "session_id": "s1", "status": "committed"},
        {"id": b, "session_id": "s1", "status": "already_committed"},
        {"id": nobody, "session_id": "s1", "status": "no_intent"},
    ]
    piped = cli("commit", "-s", "s1", a, b)
    assert_ok(piped)
    assert tsv(piped) == [[a, "s1", "already_committed"], [b, "s1", "already_committed"]]
    assert piped.stderr == "committed 0 row(s) for session s1\n"
    result, tables = drawn(cli, monkeypatch, "commit", "-s", "s1", nobody)
    assert result.exit_code == 3
    assert tables == [
        (
            [("id", "id", 0, 8, None), ("session", "text", 0, 8, None), ("status", "fixed", 0, 8, None)],
            [[nobody, "s1", "no_intent"]],
        )
    ]
