"""Global options and the entry point: ``--json``, ``--quiet``, ``--lock-timeout``, the cache
directory, ``--manifest`` and ``--store`` URLs, Ctrl-C."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import sha

from .helpers import assert_error, assert_ok, files_under, ids_out, write_inputs


def test_json_before_and_after_the_command(cli, store, tmp_path):
    (source,) = write_inputs(tmp_path / "in", {"note.txt": b"hello\n"})
    for args in (["--json", "put", "-s", "s", str(source)], ["put", "-s", "s", "--json", str(source)]):
        result = cli(*args)
        assert_ok(result)
        records = json.loads(result.stdout)
        assert len(records) == 1
        record = records[0]
        assert record["id"] == sha(b"hello\n")
        assert record["path"] == str(source)
        assert record["byte_len"] == 6
        assert record["media_type"] == "text/plain"
        assert record["label"] == "note.txt"
        assert isinstance(record["deduplicated"], bool)
    for args in (["--json", "list-uncommitted"], ["list-uncommitted", "--json"]):
        result = cli(*args)
        assert_ok(result)
        assert [r["id"] for r in json.loads(result.stdout)] == [sha(b"hello\n")]
    for args in (["--json", "reclaim", "--dry-run"], ["reclaim", "--dry-run", "--json"]):
        result = cli(*args)
        assert_ok(result)
        assert json.loads(result.stdout)["items"] == []


def test_quiet_keeps_stdout_and_silences_stderr(cli, store):
    result = cli("-q", "put", "-s", "s", "-", input=b"quiet")
    assert_ok(result)
    assert result.stdout == sha(b"quiet") + "\n"
    assert result.stderr == ""


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "Infinity", "-1", "-0.5"])
def test_a_non_finite_or_negative_lock_timeout_is_a_usage_error(cli, store, value):
    for result in (
        cli("--lock-timeout", value, "put", "-s", "s", "-", input=b"x"),
        cli("put", "-s", "s", "-", input=b"x", env={"LASHCTL_LOCK_TIMEOUT": value}),
    ):
        assert_error(result, 2, "--lock-timeout")
        assert result.stderr.count("\n") == 1, result.stderr
    assert files_under(store / "sha256") == []


def test_unusable_cache_directory_is_noted_once_only_with_verbose(cli, store, tmp_path):
    cache = Path(os.environ["LASHCTL_CACHE_DIR"])
    os.chmod(cache, 0o777)  # others could plant files there: the cache is not used
    sources = write_inputs(tmp_path / "in", {"a": b"note me", "b": b"and me"})
    a, b = ids_out(cli("put", "-s", "s1", *map(str, sources)))
    quiet = cli("commit", "-s", "s1", a[:8])  # a prefix: two lookups open the cache
    assert_ok(quiet)
    assert "note" not in quiet.stderr
    loud = cli("-v", "commit", "-s", "s1", b[:8])
    assert_ok(loud)
    notes = [line for line in loud.stderr.splitlines() if line.startswith("lashctl: note:")]
    assert len(notes) == 1 and "writable by others" in notes[0], loud.stderr
    assert not (cache / "index").exists()
    assert store.joinpath("manifest.jsonl").read_text().count('"op":"commit"') == 2


def test_ctrl_c_while_the_tool_is_still_loading_is_one_line_and_exit_130(monkeypatch, capsys):
    """The console script's entry point loads the command-line app inside its
    own guard: an interrupt during those imports (a slow disk, a TAB pressed
    twice) says the same one line as during a command, never a traceback."""
    import sys

    import lashctl

    class Interrupting:
        @staticmethod
        def find_spec(name, path=None, target=None):
            if name == "lashctl.cli":
                raise KeyboardInterrupt
            return None

    monkeypatch.delitem(sys.modules, "lashctl.cli", raising=False)
    monkeypatch.setattr(sys, "meta_path", [Interrupting(), *sys.meta_path])
    with pytest.raises(SystemExit) as info:
        lashctl.main()
    assert info.value.code == 130
    err = capsys.readouterr().err
    assert err == "lashctl: interrupted; nothing half-written was left\n"


def test_the_console_script_enters_through_the_guard():
    import tomllib
    from pathlib import Path

    project = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    assert project["project"]["scripts"]["lashctl"] == "lashctl:main"


def test_ctrl_c_after_loading_but_before_the_command_runs_is_one_line_and_exit_130(monkeypatch, capsys):
    """Building the command line and parsing it (where --help and --version
    answer) are guarded too: one line, exit 130, never a traceback or silence."""
    import sys

    from typer.core import TyperGroup

    import lashctl
    import lashctl.cli

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(TyperGroup, "make_context", interrupted)
    monkeypatch.setattr(sys, "argv", ["lashctl", "--help"])
    with pytest.raises(SystemExit) as info:
        lashctl.main()
    assert info.value.code == 130
    assert capsys.readouterr().err == "lashctl: interrupted; nothing half-written was left\n"
    monkeypatch.undo()
    monkeypatch.setattr(lashctl.cli, "main", interrupted)
    with pytest.raises(SystemExit) as info:
        lashctl.main()
    assert info.value.code == 130
    assert capsys.readouterr().err == "lashctl: interrupted; nothing half-written was left\n"


@pytest.mark.parametrize("url", ["postgresql://\udcff", "postgresql://u:p\udcff@localhost/db"])
def test_a_manifest_url_that_is_not_utf8_is_a_usage_error(cli, url):
    result = cli("--manifest", url, "ls")
    assert result.exit_code == 2, (result.exit_code, result.stderr)
    assert result.stderr.count("\n") == 1 and "not valid UTF-8" in result.stderr
    assert "\udcff" not in result.stderr and "unexpected" not in result.stderr


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://postgres:s3crETpw@[::1/db",  # libpq quotes the URI it cannot parse
        "postgresql://postgres:s3cr%zzETpw@/db",  # ... or the token
        "postgresql://postgres@/db?password=s3crETpw%ZZ",
        "postgresql://postgres:s3cr%FFETpw@/db?host=/tmp&port=1",  # percent-decodes to bytes that are not UTF-8
        "postgresql://postgres@/db?host=/tmp&password=s3crETpw%FF",
        "postgresql+psycopg://postgres:s3crETpw@/db",  # a scheme lashctl does not know
        "mysql://root:s3crETpw@localhost/db",
        'postgresql://u:s3crETpw@[::1]"/db',  # quotes in the URL itself
        'postgresql://u:s3"crETpw%zz@h/db',
    ],
)
def test_a_bad_manifest_url_is_a_usage_error_that_never_shows_its_password(cli, store, url):
    """README: a password is never shown. A URL libpq cannot parse, one whose
    percent-decoded bytes are not UTF-8 and one of an unknown scheme are each
    one line, exit 2, with the password nowhere on stderr or stdout."""
    (store / "sha256").mkdir(parents=True)
    for args in (["--manifest", url, "ls"], ["--json", "--manifest", url, "list-uncommitted"]):
        result = cli(*args)
        assert result.exit_code == 2, (result.exit_code, result.stderr)
        assert result.stderr.count("\n") == 1 and "error: unexpected" not in result.stderr, result.stderr
        assert "s3crETpw" not in result.stderr and "s3crETpw" not in result.stdout
        assert "s3cr%" not in result.stderr


@pytest.mark.parametrize("where", ["table", "typer"])
def test_ctrl_c_while_completing_is_one_line_and_exit_130(monkeypatch, capsys, where):
    """A TAB is answered from the completion table (or, for the lines the
    table leaves to it, by Typer) outside a command's own error handling:
    an interrupt there is still the one line and exit 130."""
    import sys

    from typer.core import TyperGroup

    import lashctl
    import lashctl.completion

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    if where == "table":
        monkeypatch.setattr(lashctl.completion, "answer", interrupted)
    else:
        monkeypatch.setattr(lashctl.completion, "answer", lambda *a, **k: None)  # left to Typer
        monkeypatch.setattr(TyperGroup, "make_context", interrupted)
    monkeypatch.setattr(sys, "argv", ["lashctl"])
    monkeypatch.setenv("_LASHCTL_COMPLETE", "complete_bash")
    monkeypatch.setenv("COMP_WORDS", "lashctl l")
    monkeypatch.setenv("COMP_CWORD", "1")
    with pytest.raises(SystemExit) as info:
        lashctl.main()
    assert info.value.code == 130
    assert capsys.readouterr().err == "lashctl: interrupted; nothing half-written was left\n"


def test_an_s3_store_url_with_a_password_in_it_is_never_shown_whole(cli, tmp_path):
    for manifest in (["--manifest", str(tmp_path / "m.jsonl")], []):
        result = cli("--json", "--store", "s3://u:s3crETpw@bucket/p", *manifest, "ls")
        assert result.exit_code == 2, result.stderr
        assert "s3crETpw" not in result.stderr and "s3crETpw" not in result.stdout


def test_python_dash_m_lashctl_runs_the_app(monkeypatch, capsys):
    import runpy

    monkeypatch.setattr("sys.argv", ["lashctl", "--help"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module("lashctl", run_name="__main__")
    assert exit_info.value.code == 0
    assert "Usage: lashctl" in capsys.readouterr().out
