"""End to end: text another writer chose reaches a terminal escaped, never obeyed.

Labels and session ids are data from other writers. The installed
``lashctl`` runs with stdout on a pseudo-terminal (so the Rich table path
runs, as for an operator) and on a pipe (TSV, as for a script): escape
sequences, bidi overrides and newlines in them must come out as visible
escapes, and a newline must never start a line that looks like lashctl's own.
"""

from __future__ import annotations

import json
import os
import pty
import subprocess
import threading
import time
from pathlib import Path

import pytest
from conftest import land_at_intents

from test_e2e import LASHCTL, assert_error, assert_ok, base_env, blob_path, id_lines, run, sha

pytestmark = pytest.mark.e2e

DAY = 86_400_000
HOSTILE_LABEL = "red\x1b[31m\u202eevil\nforged"
ESCAPED_LABEL = b"red\\x1b[31m\\u202eevil\\nforged"
FORGED_SESSION = "evil\nverdict:    kept because session admin committed it"
# What a terminal would obey, as UTF-8 bytes.
RAW = (b"\x1b[31m", b"\x1b]", "\u202e".encode(), "\u2028".encode(), "\x9b".encode())


def wide_env() -> dict[str, str]:
    # Wide enough that no table cell is folded across lines.
    return base_env(COLUMNS="400")


def on_terminal(*args: str) -> tuple[int, bytes, bytes]:
    """Run lashctl with stdout on a pseudo-terminal; return (exit code, shown, stderr)."""
    leader, follower = pty.openpty()
    shown = bytearray()

    def drain() -> None:
        try:
            while chunk := os.read(leader, 65536):
                shown.extend(chunk)
        except OSError:
            pass  # EIO: the terminal's other end is closed

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        proc = subprocess.Popen(
            [LASHCTL, *args], stdin=subprocess.DEVNULL, stdout=follower, stderr=subprocess.PIPE, env=wide_env()
        )
        os.close(follower)
        follower = -1
        _out, err = proc.communicate(timeout=60)
        reader.join(timeout=10)
    finally:
        if follower >= 0:
            os.close(follower)
        os.close(leader)
    return proc.returncode, bytes(shown), err


def assert_nothing_raw(output: bytes) -> None:
    for raw in RAW:
        assert raw not in output, (raw, output.decode("utf-8", "replace"))


def write_manifest(store: Path, events: list[dict]) -> None:
    """A manifest as another writer left it."""
    header = {"op": "header", "format": "lashctl-manifest", "version": 1}
    store.mkdir(parents=True, exist_ok=True)
    (store / "manifest.jsonl").write_text(
        "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in [header, *events]), "utf-8"
    )
    land_at_intents(store, events)


def intent(attachment_id: str, session: str, at: int) -> dict:
    return {
        "op": "intent",
        "attachment_id": attachment_id,
        "session_id": session,
        "canonical_uri": "sha256:" + attachment_id,
        "intent_at_epoch_ms": at,
    }


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "store"


def test_a_hostile_label_is_escaped_by_show_and_ls_on_a_terminal_and_a_pipe(store):
    put = run("--store", str(store), "put", "-s", "s", "--label", HOSTILE_LABEL, "-", input=b"labelled")
    assert_ok(put)
    (attachment_id,) = id_lines(put.stdout)

    for command in (["show", attachment_id], ["ls"], ["list-uncommitted"]):
        code, shown, err = on_terminal("--store", str(store), *command)
        assert code == 0, (command, shown, err)
        assert_nothing_raw(shown)
        assert_nothing_raw(err)
        assert ESCAPED_LABEL in shown, (command, shown.decode("utf-8", "replace"))
        if command[0] != "show":
            assert "┃".encode() in shown, "not drawn as a table"

    # On a pipe: one record per line, the label one escaped field.
    for command, columns in ((["ls"], 6), (["list-uncommitted"], 8)):
        piped = run("--store", str(store), *command, env=wide_env())
        assert_ok(piped)
        assert_nothing_raw(piped.stdout)
        lines = piped.stdout.split(b"\n")
        assert lines[-1] == b"" and len(lines) == 2, piped.stdout
        fields = lines[0].split(b"\t")
        assert len(fields) == columns and ESCAPED_LABEL in fields, fields

    # Machine output stays exact.
    listed = run("--store", str(store), "--json", "ls")
    assert json.loads(listed.stdout)[0]["label"] == HOSTILE_LABEL


def test_a_session_id_with_a_newline_cannot_forge_a_verdict_line_in_show(store):
    put = run(
        "--store",
        str(store),
        "--manifest",
        str(store.parent / "other.jsonl"),
        "put",
        "-s",
        "s",
        "-",
        input=b"orphan bytes",
    )
    (attachment_id,) = id_lines(put.stdout)
    old = time.time_ns() // 1_000_000 - 3 * DAY
    write_manifest(store, [intent(attachment_id, FORGED_SESSION, old)])

    piped = run("--store", str(store), "show", attachment_id)
    code, shown, _err = on_terminal("--store", str(store), "show", attachment_id)
    assert_ok(piped)
    assert code == 0
    for output in (piped.stdout, shown):
        verdicts = [line for line in output.splitlines() if line.startswith(b"verdict:")]
        assert len(verdicts) == 1, output.decode()
        assert verdicts[0].startswith(b"verdict:    orphan"), output.decode()
        assert b"evil\\nverdict:" in output


def test_hostile_sessions_are_escaped_in_the_reclaim_and_list_uncommitted_tables(store):
    put = run(
        "--store",
        str(store),
        "--manifest",
        str(store.parent / "other.jsonl"),
        "put",
        "-s",
        "s",
        "-",
        input=b"orphan bytes",
    )
    (attachment_id,) = id_lines(put.stdout)
    old = time.time_ns() // 1_000_000 - 3 * DAY
    write_manifest(store, [intent(attachment_id, "s\x1b]0;pwned\x07\u202e\u2028x", old)])
    escaped = b"s\\x1b]0;pwned\\x07\\u202e\\u2028x"
    for command in (["reclaim", "--dry-run"], ["list-uncommitted"]):
        code, shown, err = on_terminal("--store", str(store), *command)
        assert code == 0, (command, shown, err)
        assert_nothing_raw(shown)
        assert escaped in shown, shown.decode("utf-8", "replace")


def test_the_delete_refusal_shows_a_hostile_session_escaped_on_one_line(store):
    put = run(
        "--store",
        str(store),
        "--manifest",
        str(store.parent / "other.jsonl"),
        "put",
        "-s",
        "s",
        "-",
        input=b"kept bytes",
    )
    (attachment_id,) = id_lines(put.stdout)
    write_manifest(store, [intent(attachment_id, "s\x1b[2J\nlashctl: deleted", time.time_ns() // 1_000_000)])
    proc = run("--store", str(store), "delete", attachment_id)
    assert_error(proc, 4, "s\\x1b[2J\\nlashctl: deleted")
    assert proc.stderr.count(b"\n") == 1, proc.stderr
    assert_nothing_raw(proc.stderr)
    assert b"\x1b" not in proc.stderr
    assert blob_path(store, attachment_id).exists()
    assert attachment_id == sha(b"kept bytes")
