"""Text from other writers, shown to people: labels and sessions escaped, input text refused."""

from __future__ import annotations

import json

import pytest
from conftest import blob_path, sha

from .helpers import DAY, assert_error, assert_ok, files_under, ids_out, intent, manifest_file, now_ms, write_manifest

HOSTILE_LABEL = "red\x1b[31m\u202eevil\nforged"
ESCAPED_LABEL = "red\\x1b[31m\\u202eevil\\nforged"
RAW_CONTROLS = ("\x1b", "\u202e", "\x9b", "\u2028")


def assert_no_raw_controls(text: str) -> None:
    for char in RAW_CONTROLS:
        assert char not in text, (char, text)


def test_a_hostile_label_is_escaped_in_show_ls_and_list_uncommitted(cli, store):
    result = cli("put", "-s", "s", "--label", HOSTILE_LABEL, "-", input=b"labelled")
    assert_ok(result)
    attachment_id = ids_out(result)[0]

    shown = cli("show", attachment_id)
    assert_ok(shown)
    assert_no_raw_controls(shown.stdout)
    assert f"label:      {ESCAPED_LABEL}\n" in shown.stdout

    for command in (["ls"], ["list-uncommitted"]):
        listed = cli(*command)
        assert_ok(listed)
        assert_no_raw_controls(listed.stdout)
        lines = listed.stdout.splitlines()
        assert len(lines) == 1, listed.stdout  # one record per line
        assert ESCAPED_LABEL in lines[0].split("\t")

    # Machine output stays exact.
    document = json.loads(cli("--json", "ls").stdout)
    assert document[0]["label"] == HOSTILE_LABEL


def test_a_session_id_with_a_newline_cannot_forge_a_verdict_line_in_show(cli, store, put_blobs):
    (x,) = put_blobs({"x": b"x bytes"})
    forged = "evil\nverdict:    kept because session admin committed it"
    write_manifest(store, [intent(x, forged, now_ms() - 3 * DAY)])
    result = cli("show", x)
    assert_ok(result)
    verdicts = [line for line in result.stdout.splitlines() if line.startswith("verdict:")]
    assert len(verdicts) == 1, result.stdout
    assert verdicts[0].startswith("verdict:    orphan"), result.stdout
    assert "evil\\nverdict:" in result.stdout
    assert json.loads(cli("--json", "show", x).stdout)["rows"][0]["session_id"] == forged


def test_delete_refusal_shows_a_hostile_session_escaped_on_one_line(cli, store, put_blobs):
    (x,) = put_blobs({"x": b"x bytes"})
    write_manifest(store, [intent(x, "s\x1b]0;pwned\x07\nlashctl: ok", now_ms())])
    result = cli("delete", x)
    assert_error(result, 4, "s\\x1b]0;pwned\\x07\\nlashctl: ok")
    assert result.stderr.count("\n") == 1, result.stderr
    assert_no_raw_controls(result.stderr)
    assert blob_path(store, x).exists()


def test_reclaim_and_list_uncommitted_show_hostile_sessions_escaped(cli, store, put_blobs):
    x, y = put_blobs({"x": b"x bytes", "y": b"y bytes"})
    old = now_ms() - 3 * DAY
    write_manifest(store, [intent(x, "a\u202eb", old), intent(y, "c\td\u2028e", old)])
    listed = cli("list-uncommitted")
    assert_ok(listed)
    assert_no_raw_controls(listed.stdout)
    assert [line.split("\t")[1] for line in listed.stdout.splitlines()] == ["a\\u202eb", "c\\td\\u2028e"]
    swept = cli("reclaim", "--dry-run")
    assert_ok(swept)
    assert_no_raw_controls(swept.stdout)
    assert sorted(line.split("\t")[3] for line in swept.stdout.splitlines()) == ["a\\u202eb", "c\\td\\u2028e"]


def test_error_messages_show_control_characters_escaped_on_one_line(cli, store, tmp_path):
    missing = str(tmp_path / "no\x1b[2Jsuch\nlashctl: error: forged")
    result = cli("put", "-s", "s", missing)
    assert_error(result, 2, "no\\x1b[2Jsuch\\nlashctl: error: forged")
    assert result.stderr.count("\n") == 1, result.stderr
    assert_no_raw_controls(result.stderr)
    # Input quoted in a usage error is escaped once, as typed.
    result = cli("reclaim", "--older-than", "\x1b[2J")
    assert_error(result, 2, "--older-than '\\x1b[2J' is not a duration")


def test_summaries_and_warnings_show_control_characters_escaped(capsys):
    from lashctl.render import UI

    ui = UI()
    ui.info("info \x1b[31m\u202e")
    ui.warn("warn \x9b\u2028")
    UI.error("error \x00\n")
    ui.line("line \x1b\\")
    out, err = capsys.readouterr()
    assert err == ("info \\x1b[31m\\u202e\nlashctl: warning: warn \\x9b\\u2028\nlashctl: error: error \\x00\\n\n")
    assert out == "line \\x1b\\\\\n"


def test_manifest_log_stays_exact_json(cli, store, put_blobs):
    (x,) = put_blobs({"x": b"x bytes"})
    session = "a\u202eb\u2028c\x9bd"
    write_manifest(store, [intent(x, session, now_ms())])
    result = cli("manifest", "log", "--op", "intent")
    assert_ok(result)
    assert json.loads(result.stdout)["session_id"] == session  # a pipe: the event alone


@pytest.mark.parametrize(
    "session",
    ["a\u009bb", "a\x85b", "a\u202eb", "a\u2066b", "a\u200fb", "a\u2028b", "a\u2029b"],
    ids=lambda s: f"U+{ord(s[1]):04X}",
)
def test_a_session_with_c1_bidi_or_separator_characters_is_a_usage_error(cli, store, session):
    result = cli("put", "-s", session, "-", input=b"x")
    assert_error(result, 2, "--session")
    assert result.stderr.count("\n") == 1, result.stderr
    assert_no_raw_controls(result.stderr)
    assert files_under(store / "sha256") == []
    assert_error(cli("put", "-", input=b"x", env={"LASHCTL_SESSION": session}), 2, "--session")
    assert_error(cli("commit", "-s", session, sha(b"x")), 2, "--session")
    assert not manifest_file(store).exists()


@pytest.mark.parametrize(
    "args",
    [["list-uncommitted"], ["--json", "list-uncommitted"], ["ls"], ["manifest", "log"]],
    ids=["list-uncommitted", "json", "ls", "manifest log"],
)
def test_a_session_filter_that_is_not_utf8_is_a_usage_error(cli, put_blobs, args):
    """A session filter from argv bytes that are not UTF-8 (Python hands them
    over as lone surrogates) can match no row: one line and exit 2, as for
    commit's --session, never an unexpected error."""
    put_blobs({"a.txt": b"a"})
    result = cli(*args, "-s", "caf\udcff")
    assert result.exit_code == 2, (result.exit_code, result.stderr)
    assert result.stderr.count("\n") == 1 and "not valid UTF-8" in result.stderr
    assert "unexpected" not in result.stderr
