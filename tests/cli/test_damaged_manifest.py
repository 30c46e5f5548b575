"""A damaged manifest, for every command: malformed lines, headers, torn tails."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import sha

from .helpers import (
    DAY,
    HEADER,
    assert_error,
    assert_ok,
    event_line,
    intent,
    manifest_file,
    now_ms,
    snapshot,
    write_manifest,
)


def _corrupt_store(store: Path, put_blobs, bad_line: str) -> tuple[str, str]:
    x, y = put_blobs({"x": b"x bytes", "y": b"y bytes"})
    now = now_ms()
    store.mkdir(parents=True, exist_ok=True)
    (store / "manifest.jsonl.lock").touch()
    manifest_file(store).write_text(
        event_line(HEADER)
        + "\n"
        + event_line(intent(x, "A", now - 3 * DAY))
        + "\n"
        + bad_line
        + "\n"
        + event_line(intent(y, "A", now - 3 * DAY))
        + "\n",
        "utf-8",
    )
    return x, y


CORRUPT_LINES = {
    "malformed-json": '{"op":"intent","attachment_id":',
    "unknown-op": json.dumps({"op": "frobnicate", "attachment_id": "a" * 64, "session_id": "A"}),
}


@pytest.mark.parametrize("bad", sorted(CORRUPT_LINES))
@pytest.mark.parametrize(
    "command",
    [
        ["list-uncommitted"],
        ["reclaim", "--force", "--older-than", "0s"],
        ["reclaim", "--older-than", "1h", "--dry-run"],
        ["commit", "-s", "A", "X"],
        ["delete", "X"],
        ["delete", "--force", "X"],
    ],
)
def test_a_corrupt_line_stops_every_command_that_needs_state(cli, store, put_blobs, bad, command):
    x, _y = _corrupt_store(store, put_blobs, CORRUPT_LINES[bad])
    command = [x if arg == "X" else arg for arg in command]
    before = snapshot(store)
    result = cli(*command)
    assert_error(result, 65, "manifest.jsonl:3")
    if command != ["list-uncommitted"]:  # read-only inspection lists what it could read
        assert result.stdout == ""
    assert snapshot(store) == before


def test_unknown_header_version_is_corruption(cli, store, put_blobs):
    (x,) = put_blobs({"x": b"x"})
    manifest_file(store).write_text(
        json.dumps({"op": "header", "format": "lashctl-manifest", "version": 2})
        + "\n"
        + event_line(intent(x, "A", now_ms() - 3 * DAY))
        + "\n",
        "utf-8",
    )
    (store / "manifest.jsonl.lock").touch()
    before = snapshot(store)
    result = cli("list-uncommitted")
    assert_error(result, 65, "manifest.jsonl:1")
    result = cli("reclaim", "--older-than", "1h")
    assert_error(result, 65, "manifest.jsonl:1")
    assert snapshot(store) == before


def test_a_manifest_without_header_is_read_as_version_1(cli, store, put_blobs):
    (x,) = put_blobs({"x": b"hand made"})
    at = now_ms() - DAY
    write_manifest(store, [intent(x, "hand", at)], header=False)
    result = cli("list-uncommitted", "--json")
    assert_ok(result)
    assert [(r["id"], r["session_id"], r["intent_at_epoch_ms"]) for r in json.loads(result.stdout)] == [(x, "hand", at)]


@pytest.mark.parametrize("writer", ["put", "commit"])
def test_a_torn_final_line_is_ignored_with_a_warning_and_truncated_by_the_next_writer(cli, store, put_blobs, writer):
    (x,) = put_blobs({"x": b"x"})
    at = now_ms() - DAY
    good = event_line(HEADER) + "\n" + event_line(intent(x, "A", at)) + "\n"
    # A long event cut short by a crash: longer than what the next writer appends.
    torn = event_line(intent(sha(b"torn"), "S" * 900, at))[:700]
    store.mkdir(parents=True, exist_ok=True)
    manifest_file(store).write_text(good + torn, "utf-8")

    result = cli("list-uncommitted", "--json")
    assert_ok(result)
    assert "warning" in result.stderr
    assert "manifest.jsonl:3" in result.stderr
    assert [r["id"] for r in json.loads(result.stdout)] == [x]

    if writer == "put":
        result = cli("put", "-s", "B", "-", input=b"after the crash")
    else:
        result = cli("commit", "-s", "A", x)
    assert_ok(result)
    text = manifest_file(store).read_text("utf-8")
    assert text.startswith(good)
    assert text.endswith("\n")
    lines = text.splitlines()
    assert len(lines) == 3
    added = json.loads(lines[2])
    if writer == "put":
        assert added["op"] == "intent"
        assert added["attachment_id"] == sha(b"after the crash")
    else:
        assert {k: v for k, v in added.items() if k != "committed_at_epoch_ms"} == {
            "op": "commit",
            "attachment_id": x,
            "session_id": "A",
        }
    assert "SSSS" not in text

    result = cli("list-uncommitted")
    assert_ok(result)
    assert "warning" not in result.stderr


def test_a_complete_final_event_without_newline_is_read_and_kept(cli, store, put_blobs):
    (x,) = put_blobs({"x": b"x"})
    at = now_ms() - DAY
    text = event_line(HEADER) + "\n" + event_line(intent(x, "hand-edit", at))  # no final newline
    store.mkdir(parents=True, exist_ok=True)
    manifest_file(store).write_text(text, "utf-8")
    result = cli("list-uncommitted", "--json")
    assert_ok(result)
    assert [(r["id"], r["session_id"]) for r in json.loads(result.stdout)] == [(x, "hand-edit")]

    assert_ok(cli("put", "-s", "B", "-", input=b"appended"))
    lines = manifest_file(store).read_text("utf-8").splitlines()
    assert lines[:2] == text.split("\n")
    assert len(lines) == 3
    assert json.loads(lines[2])["attachment_id"] == sha(b"appended")
    assert manifest_file(store).read_text("utf-8").endswith("\n")


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_or_infinity_in_a_manifest_line_is_corruption(cli, store, put_blobs, constant):
    (x,) = put_blobs({"x": b"x bytes"})
    bad = event_line(intent(x, "A", now_ms()))[:-1] + f',"extra":{constant}}}'
    _corrupt_store(store, put_blobs, bad)
    for command in (["manifest", "log"], ["list-uncommitted"], ["show", x]):
        result = cli(*command)
        assert_error(result, 65, "manifest.jsonl:3", constant)
        assert "extra" not in result.stdout  # manifest log stops at the line, like any malformed one


@pytest.mark.parametrize(
    "bad, where",
    [
        ('{"op":"forget","session_id":"A","attachment_id":"' + "a" * 64 + '"} trailing', "Extra data at column 117"),
        ('{"op": "intent", "session_id": "A",, }', "Expecting property name enclosed in double quotes at column 36"),
        ('{"op":"forget","session_id":"\xe9', "invalid UTF-8 at byte 30"),
        ('{"op":"forget","session_id":"a\x01b"}', "Invalid control character at column 31"),
    ],
)
def test_a_malformed_line_names_its_column(cli, store, put_blobs, bad, where):
    """A hand fix needs the place on the line, not only the line."""
    raw = bad.encode("latin-1") if "\xe9" in bad else bad.encode()
    _corrupt_store(store, put_blobs, "")
    path = manifest_file(store)
    lines = path.read_bytes().split(b"\n")
    lines[2] = raw
    path.write_bytes(b"\n".join(lines))
    for command in (["ls"], ["manifest", "check"], ["reclaim", "-n"]):
        result = cli(*command)
        assert result.exit_code == 65, (command, result.stderr)
        assert f"manifest.jsonl:3: malformed manifest line: {where}" in result.stderr, (command, result.stderr)
