"""Operator ergonomics, end to end: what a cron line or a shell script typed is read as meant."""

from __future__ import annotations

import pytest

from reliability_helpers import one_line_error, run

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("args, hint", [
    (["reclaim", "--older-than", "1M"], "m for minutes"),
    (["list-uncommitted", "--older-than", "24H"], "24h"),
    (["reclaim", "--before", "1795647212"], "@1795647212"),
    (["manifest", "log", "--since", "1795647212"], "1795647212ms"),
])
def test_ambiguous_durations_and_times_are_refused_with_a_hint(tmp_path, args, hint):
    store = tmp_path / "store"
    result = run(["--store", store, *args])
    assert result.returncode == 2, result.stderr
    assert hint in one_line_error(result.stderr)
    assert not store.exists()


def test_epoch_seconds_with_an_at_sign_are_a_cutoff_in_seconds(tmp_path):
    store = tmp_path / "store"
    (tmp_path / "in.txt").write_bytes(b"x")
    assert run(["--store", store, "put", "-s", "s", tmp_path / "in.txt"]).returncode == 0
    listed = run(["--store", store, "list-uncommitted", "--before", "@4102444800"])  # 2100-01-01
    assert listed.returncode == 0 and len(listed.stdout.splitlines()) == 1
    none = run(["--store", store, "list-uncommitted", "--before", "@1000000000"])  # 2001
    assert none.returncode == 0 and none.stdout == b""


@pytest.mark.parametrize("args", [["put", "-s", "s", "--files-from", "-"], ["put", "-s", "s", "--files-from", "-", "-0"],
                                  ["commit", "-s", "s", "-"]])
def test_an_empty_batch_on_stdin_is_a_successful_no_op(tmp_path, args):
    store = tmp_path / "store"
    result = run(["--store", store, *args], input=b"")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b""
    assert b"nothing" in result.stderr
    quiet = run(["--store", store, "-q", *args], input=b"")
    assert quiet.returncode == 0 and quiet.stderr == b""


def test_an_empty_batch_with_json_prints_an_empty_array(tmp_path):
    result = run(["--store", tmp_path / "store", "--json", "put", "-s", "s", "--files-from", "-"], input=b"")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"[]\n"


def test_put_without_any_input_is_still_a_usage_error(tmp_path):
    result = run(["--store", tmp_path / "store", "put", "-s", "s"])
    assert result.returncode == 2
    one_line_error(result.stderr)
