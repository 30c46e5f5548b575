"""Ids and prefixes, for every command that takes them: malformed ids, ambiguity, accepted forms."""

from __future__ import annotations

import json

import pytest
from conftest import blob_path, sha

from .helpers import assert_error, assert_ok, ids_out, snapshot, write_inputs


def colliding_inputs(prefix_len: int = 4) -> tuple[bytes, bytes]:
    """Two small inputs whose sha256 ids share their first ``prefix_len`` hex chars."""
    seen: dict[str, bytes] = {}
    for n in range(200_000):
        data = f"collide-{n}".encode()
        key = sha(data)[:prefix_len]
        if key in seen:
            return seen[key], data
        seen[key] = data
    raise AssertionError("no collision found")


BAD_IDS = ["../../etc/passwd", "zz", "abc", "sha256:abc", "g" * 64, "a" * 65, "", "abcd/../..", "12 34"]


@pytest.mark.parametrize("bad", BAD_IDS)
@pytest.mark.parametrize(
    "command", [["get"], ["get", "-o", "OUT"], ["delete"], ["delete", "--force"], ["commit", "-s", "s"]]
)
def test_malformed_ids_are_usage_errors_that_touch_nothing(cli, store, tmp_path, bad, command):
    assert_ok(cli("put", "-s", "s", "-", input=b"present"))
    out = tmp_path / "out.bin"
    command = [str(out) if arg == "OUT" else arg for arg in command]
    before = snapshot(tmp_path)
    result = cli(*command, bad)
    assert_error(result, 2)
    assert result.stdout == ""
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("command", [["get"], ["delete"], ["commit", "-s", "s"]])
def test_malformed_ids_never_create_the_store(cli, store, command):
    result = cli(*command, "../../etc/passwd")
    assert_error(result, 2)
    assert not store.exists()


@pytest.mark.parametrize(
    "command",
    [
        ["get"],
        ["get", "-o", "OUT"],
        ["delete"],
        ["delete", "--force"],
        ["delete", "--dry-run", "--force"],
        ["commit", "-s", "s"],
    ],
)
def test_an_ambiguous_prefix_is_a_usage_error_that_touches_nothing(cli, store, tmp_path, command):
    one, two = colliding_inputs(4)
    id_one, id_two = sha(one), sha(two)
    sources = write_inputs(tmp_path / "in", {"one": one, "two": two})
    assert ids_out(cli("put", "-s", "s", *map(str, sources))) == [id_one, id_two]
    out = tmp_path / "out.bin"
    command = [str(out) if arg == "OUT" else arg for arg in command]
    before = snapshot(tmp_path)
    result = cli(*command, id_one[:4])
    assert_error(result, 2, "ambiguous")
    assert result.stdout == ""
    assert snapshot(tmp_path) == before

    # A longer prefix that tells them apart resolves.
    n = next(i for i in range(64) if id_one[i] != id_two[i]) + 1
    result = cli("get", id_two[: max(n, 4)])
    assert_ok(result)
    assert result.stdout_bytes == two


def test_an_ambiguous_prefix_among_blobs_written_by_hand(cli, store, tmp_path):
    fake_one, fake_two = "abcd" + "0" * 60, "abcd" + "1" * 60
    shard = store / "sha256" / "ab"
    shard.mkdir(parents=True)
    (shard / fake_one).write_bytes(b"1")
    (shard / fake_two).write_bytes(b"2")
    before = snapshot(store)
    for command in (["get"], ["delete", "--force"], ["commit", "-s", "s"]):
        result = cli(*command, "ABCD")
        assert_error(result, 2, "ambiguous")
        assert snapshot(store) == before
    result = cli("get", "abcd0")
    # resolves to fake_one; its bytes do not hash to its name
    assert_error(result, 65, fake_one)


def test_a_well_formed_prefix_that_matches_nothing_is_not_found(cli, store):
    attachment_id = ids_out(cli("put", "-s", "s", "-", input=b"present"))[0]
    other = "0123" if not attachment_id.startswith("0123") else "4567"
    result = cli("get", other)
    assert_error(result, 3, other)
    assert result.stdout == ""


def test_lash_core_staging_litter_is_not_a_blob(cli, store):
    litter = sha(b"half written by lash-core")
    shard = store / "sha256" / litter[:2]
    shard.mkdir(parents=True)
    (shard / (litter + ".tmp")).write_bytes(b"half written")
    result = cli("get", litter[:8])
    assert_error(result, 3)
    result = cli("get", litter)
    assert_error(result, 3)


def test_upper_case_and_uri_ids_are_accepted(cli, store, tmp_path):
    data = b"case folded"
    attachment_id = ids_out(cli("put", "-s", "s", "-", input=data))[0]
    for text in (
        attachment_id.upper(),
        "sha256:" + attachment_id,
        "SHA256:" + attachment_id.upper(),
        attachment_id[:6].upper(),
        "sha256:" + attachment_id[:5],
    ):
        result = cli("get", text)
        assert_ok(result)
        assert result.stdout_bytes == data
    result = cli("commit", "-s", "s", "--json", "sha256:" + attachment_id.upper())
    assert_ok(result)
    assert json.loads(result.stdout) == [{"id": attachment_id, "session_id": "s", "status": "committed"}]
    result = cli("delete", "--force", attachment_id[:8].upper())
    assert_ok(result)
    assert not blob_path(store, attachment_id).exists()
