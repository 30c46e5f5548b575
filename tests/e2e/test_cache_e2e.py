"""End to end: whatever happened to the state cache, the installed ``lashctl``
commits every row the manifest holds, and reclaim keeps what was committed.

Each case puts X for session s1, attacks the cache (or the manifest under it),
commits X, then sweeps every uncommitted row: X must survive, and its commit
line must be in the manifest.
"""

from __future__ import annotations

import json
import re
import os
import sqlite3
import subprocess
from pathlib import Path

import pytest

from test_e2e import assert_error, assert_ok, blob_path, id_lines, run

pytestmark = pytest.mark.e2e


def cache_root() -> Path:
    return Path(os.environ["LASHCTL_CACHE_DIR"])


def idx_file(store: Path) -> Path:
    from lashctl.backends.manifests.jsonl.cache import index_path

    return index_path(store / "manifest.jsonl")


def lashctl(store: Path, *args: str) -> subprocess.CompletedProcess:
    return run("--store", str(store), *args)


def put(store: Path, tmp_path: Path, name: str, data: bytes, session: str = "s1") -> str:
    source = tmp_path / name
    source.write_bytes(data)
    proc = lashctl(store, "put", "-s", session, str(source))
    assert_ok(proc)
    [attachment_id] = id_lines(proc.stdout)
    return attachment_id


def events(store: Path) -> list[dict]:
    return [json.loads(line) for line in (store / "manifest.jsonl").read_bytes().splitlines() if line.strip()]


def commit_and_sweep(store: Path, attachment_id: str) -> subprocess.CompletedProcess:
    """commit X, check the commit line, sweep everything uncommitted, check X survived."""
    proc = lashctl(store, "commit", "-s", "s1", attachment_id)
    assert_ok(proc)
    assert any(
        e["op"] == "commit" and e["session_id"] == "s1" and e["attachment_id"] == attachment_id for e in events(store)
    )
    assert_ok(lashctl(store, "reclaim", "--force", "--older-than", "0s"))
    assert blob_path(store, attachment_id).is_file()
    return proc


def edit_in_place(store: Path, old: bytes, new: bytes) -> None:
    assert len(old) == len(new)
    path = store / "manifest.jsonl"
    data = path.read_bytes()
    assert data.count(old) == 1
    with open(path, "r+b") as handle:  # as `cp edited manifest.jsonl` writes it: same inode
        handle.write(data.replace(old, new))


# -- 7: an edit before the end, then an append --------------------------------------------
def test_same_length_edit_that_uncommits_then_an_append(tmp_path):
    store = tmp_path / "store"
    x = put(store, tmp_path, "x", b"x bytes")
    assert_ok(lashctl(store, "commit", "-s", "s1", x))
    put(store, tmp_path, "y", b"y bytes")
    assert_ok(lashctl(store, "list-uncommitted"))  # the cache has seen X committed
    edit_in_place(store, b'"session_id":"s1","committed_at', b'"session_id":"s9","committed_at')
    put(store, tmp_path, "z", b"z bytes")  # any append
    proc = commit_and_sweep(store, x)
    assert proc.stdout.decode().split("\t")[2].strip() == "committed"


def test_same_length_edit_that_unforgets_then_an_append(tmp_path):
    store = tmp_path / "store"
    x = put(store, tmp_path, "x", b"x bytes")
    with open(store / "manifest.jsonl", "ab") as handle:
        handle.write(
            json.dumps({"op": "forget", "attachment_id": x, "session_id": "s1"}, separators=(",", ":")).encode() + b"\n"
        )
    put(store, tmp_path, "y", b"y bytes")
    assert_ok(lashctl(store, "list-uncommitted"))  # the cache has seen no row for X
    edit_in_place(
        store,
        b'"op":"forget","attachment_id":"%s","session_id":"s1"' % x.encode(),
        b'"op":"forget","attachment_id":"%s","session_id":"s9"' % x.encode(),
    )
    put(store, tmp_path, "z", b"z bytes")
    commit_and_sweep(store, x)  # exit 0, not "no intent"


# -- 8: the cache's rows were edited ---------------------------------------------------------
@pytest.mark.parametrize("lie", ["committed", "absent"])
def test_edited_cache_rows_do_not_stop_a_commit(tmp_path, lie):
    store = tmp_path / "store"
    x = put(store, tmp_path, "x", b"x bytes")
    assert_ok(lashctl(store, "list-uncommitted"))
    conn = sqlite3.connect(idx_file(store))
    with conn:
        if lie == "committed":
            conn.execute("UPDATE rows SET committed_at = 1 WHERE attachment_id = ?", (x,))
        else:
            conn.execute("DELETE FROM rows WHERE attachment_id = ?", (x,))
    conn.close()
    commit_and_sweep(store, x)


# -- 9: another process holds a transaction on the cache -------------------------------------
def test_commit_finishes_while_the_cache_is_locked(tmp_path):
    store = tmp_path / "store"
    x = put(store, tmp_path, "x", b"x bytes")
    assert_ok(lashctl(store, "list-uncommitted"))
    put(store, tmp_path, "y", b"y bytes")  # the cache has something to catch up on
    blocker = sqlite3.connect(idx_file(store), isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        proc = run("--store", str(store), "commit", "-s", "s1", x)  # run() gives up after 60 s
        assert_ok(proc)
        other = run("--store", str(store), "--lock-timeout", "20", "put", "-s", "s2", str(tmp_path / "x"))
        assert_ok(other)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    commit_and_sweep(store, x)


# -- 5: a symlink at the cache file's predictable path -------------------------------------
@pytest.mark.parametrize("target", ["absent", "database"])
def test_symlink_at_the_cache_path_is_not_followed(tmp_path, target):
    store = tmp_path / "store"
    x = put(store, tmp_path, "x", b"x bytes")
    idx = idx_file(store)
    idx.parent.mkdir(parents=True, mode=0o700, exist_ok=True)
    idx.unlink(missing_ok=True)  # the put validated the log through the cache
    victim = tmp_path / "victim" / "app.db"
    victim.parent.mkdir()
    before = None
    if target == "database":
        conn = sqlite3.connect(victim)
        with conn:
            conn.execute("CREATE TABLE rows (precious TEXT)")
            conn.execute("INSERT INTO rows VALUES ('keep')")
        conn.close()
        before = victim.read_bytes()
    idx.symlink_to(victim)
    assert_ok(lashctl(store, "list-uncommitted"))
    commit_and_sweep(store, x)
    if before is None:
        assert os.listdir(victim.parent) == []
    else:
        assert victim.read_bytes() == before and os.listdir(victim.parent) == ["app.db"]


# -- 5: a cache directory others can write, or that is not ours ------------------------------
def test_cache_directory_writable_by_others_is_not_used(tmp_path):
    os.chmod(cache_root(), 0o777)
    store = tmp_path / "store"
    x = put(store, tmp_path, "x", b"x bytes")
    proc = commit_and_sweep(store, x)
    assert b"note" not in proc.stderr
    loud = lashctl(store, "-v", "list-uncommitted")
    assert_ok(loud)
    assert loud.stderr.decode().count("lashctl: note:") == 1
    assert not (cache_root() / "index").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a directory away")
def test_cache_directory_of_another_user_is_not_used(tmp_path):
    os.chown(cache_root(), 65534, 65534)
    store = tmp_path / "store"
    x = put(store, tmp_path, "x", b"x bytes")
    commit_and_sweep(store, x)
    assert not (cache_root() / "index").exists()


def test_private_cache_directory_is_used(tmp_path):
    store = tmp_path / "store"
    x = put(store, tmp_path, "x", b"x bytes")
    commit_and_sweep(store, x)
    assert idx_file(store).is_file()
    assert os.stat(idx_file(store).parent).st_mode & 0o777 == 0o700


def test_fifo_manifest_is_an_error_not_a_hang(tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    os.mkfifo(store / "manifest.jsonl")
    assert_error(lashctl(store, "list-uncommitted"), 65, "not a regular file")


# -- sweeps never delete on the cache's word ---------------------------------------
def _age(store: Path) -> None:
    old = 1_600_000_000
    for path in (store / "sha256").rglob("*"):
        os.utime(path, (old, old), follow_symlinks=False)


def _lie(store: Path, sql: str, *params) -> None:
    """Edit the cache behind lashctl's back, keeping it otherwise valid."""
    lashctl(store, "ls")  # the cache exists and is current
    with sqlite3.connect(idx_file(store)) as conn:
        conn.execute(sql, params)


@pytest.mark.parametrize("lie", ["drop the rows", "uncommit and age"])
def test_an_edited_cache_never_makes_a_sweep_delete_a_committed_blob(tmp_path, lie):
    store = tmp_path / "store"
    x = put(store, tmp_path, "x.txt", b"committed bytes")
    y = put(store, tmp_path, "y.txt", b"other committed bytes")
    assert_ok(lashctl(store, "commit", "-s", "s1", x, y))
    _age(store)
    if lie == "drop the rows":
        _lie(store, "DELETE FROM rows WHERE attachment_id = ?", x)
    else:
        _lie(store, "UPDATE rows SET committed_at = NULL, intent_at = 1 WHERE attachment_id = ?", x)
    for command in (["gc", "--force", "--older-than", "1m"], ["reclaim", "--force", "--older-than", "1m"]):
        dry = lashctl(store, "--json", *command, "--dry-run")
        assert_ok(dry)
        assert x.encode() not in dry.stdout
        assert_ok(lashctl(store, *command))
        assert blob_path(store, x).is_file(), command
    refused = lashctl(store, "delete", x)
    assert refused.returncode == 4
    verify = lashctl(store, "verify")
    assert_ok(verify)


def _decoy(line: str, real: str, decoy: str) -> str:
    """The same event, its id key written with an escape and a plain decoy id
    in an extra key: a valid line that a key-spotting shortcut would misread."""
    line = line.replace(f'"attachment_id":"{real}"', f'"attachment_\\u0069d":"{real}"')
    return line[:-1] + f',"note":{{"attachment_id":"{decoy}"}}}}'


def test_escaped_keys_and_decoy_ids_never_make_a_sweep_delete_a_committed_blob(tmp_path):
    store = tmp_path / "store"
    x = put(store, tmp_path, "x.txt", b"shared bytes")
    put(store, tmp_path, "x2.txt", b"shared bytes", session="s2")
    assert_ok(lashctl(store, "commit", "-s", "s2", x))
    decoy = "b" * 64
    path = store / "manifest.jsonl"
    lines = path.read_text().splitlines()
    lines = [(_decoy(line, x, decoy) if '"session_id":"s2"' in line else line) for line in lines]
    # s1's intent is aged: x is a reclaim candidate, kept only by s2's commit.
    lines = [
        re.sub(r'"intent_at_epoch_ms":\d+', '"intent_at_epoch_ms":1000000000000', line)
        if '"session_id":"s1"' in line
        else line
        for line in lines
    ]
    path.write_text("\n".join(lines) + "\n")
    assert b"committed" in lashctl(store, "show", x).stdout
    assert lashctl(store, "delete", x).returncode == 4
    assert_ok(lashctl(store, "reclaim"))
    assert blob_path(store, x).is_file()
    _age(store)
    _lie(store, "DELETE FROM rows WHERE attachment_id = ?", x)
    assert_ok(lashctl(store, "gc", "--force", "--older-than", "1m"))
    assert blob_path(store, x).is_file()
