"""Shell completion in process: what a TAB offers (ids from the store, nothing after a
duration, file names where a path goes, a manifest's URL schemes). Through a fresh
interpreter and the generated bash script: tests/e2e/test_completion_e2e.py."""

from __future__ import annotations

import pytest
from conftest import LASHCTL_ENV
from typer.testing import CliRunner

from .helpers import ids_out, write_inputs


def complete(*words: str, env: dict | None = None) -> list[str]:
    """What lashctl replies to bash for ``lashctl WORDS`` (the last word incomplete)."""
    from lashctl.cli import app

    runner = CliRunner(env={name: None for name in LASHCTL_ENV})
    environ = {
        "_LASHCTL_COMPLETE": "complete_bash",
        "COMP_WORDS": " ".join(["lashctl", *words]),
        "COMP_CWORD": str(len(words)),
        **(env or {}),
    }
    result = runner.invoke(app, [], prog_name="lashctl", env=environ)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result.stdout.split()


def test_ids_come_from_the_store(cli, store, tmp_path):
    paths = write_inputs(tmp_path / "in", {"a": b"first", "b": b"second"})
    ids = ids_out(cli("put", "-s", "s", *map(str, paths)))
    assert complete("--store", str(store), "show", ids[0][:3]) == [ids[0]]
    assert complete("get", ids[1][:3], env={"LASHCTL_STORE": str(store)}) == [ids[1]]
    assert sorted(complete("--store", str(store), "delete", "")) == sorted(ids)


@pytest.mark.parametrize("words", [("reclaim", "--older-than", ""), ("commit", "-s", "")])
def test_nothing_is_offered_after_a_duration_or_a_session(words):
    assert complete(*words) == []


def test_file_names_are_offered_where_a_path_goes():
    assert complete("put", "-s", "s", "") == ["::files"]


def test_a_manifest_offers_its_url_schemes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert complete("--manifest", "p") == ["postgresql://"]
    assert complete("--manifest", "lash") == ["lash-sqlite:"]
