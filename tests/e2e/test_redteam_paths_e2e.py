"""Paths and text that another user, a bad clock or a careless list can hand
lashctl: directories it creates, where ``get -o`` writes, what a torn-tail
repair saves, what reaches a terminal, what a session id may hold."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from reliability_helpers import base_env, blob_path, find_lashctl, one_line_error, run, sha

pytestmark = pytest.mark.e2e

DATA = b"payload\n"


def _put(store: Path, data: bytes = DATA, **kwargs) -> str:
    result = run(["--store", store, "put", "-s", "s", "-"], input=data, **kwargs)
    assert result.returncode == 0, result.stderr
    return result.stdout.decode().strip()


def _wide(path: Path) -> bool:
    return bool(os.lstat(path).st_mode & 0o022)


# -- F1: directories lashctl creates are never group- or world-writable ----------
def test_put_under_umask_000_creates_no_writable_directory(tmp_path):
    """Under umask 000 another user could otherwise swap the manifest in a
    0777 store root (or in a parent lashctl created)."""
    store = tmp_path / "a" / "b" / "store"
    manifest = tmp_path / "m" / "n" / "manifest.jsonl"
    cache = tmp_path / "c" / "d" / "cache"
    result = subprocess.run(
        [find_lashctl(), "--store", str(store), "--manifest", str(manifest), "put", "-s", "s", "-"],
        input=DATA,
        capture_output=True,
        env=base_env(LASHCTL_CACHE_DIR=str(cache)),
        umask=0,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    made = [p for top in ("a", "m", "c") for p in [tmp_path / top, *(tmp_path / top).rglob("*")] if p.is_dir()]
    assert store in made and manifest.parent in made and cache in made
    assert [p for p in made if _wide(p)] == []


def test_migrate_under_umask_000_creates_no_writable_directory(tmp_path):
    source = tmp_path / "source"
    _put(source)
    dest = tmp_path / "x" / "y" / "dest"
    result = subprocess.run(
        [find_lashctl(), "--store", str(source), "migrate", "--to-store", str(dest)],
        capture_output=True,
        env=base_env(),
        umask=0,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    made = [p for p in [tmp_path / "x", *(tmp_path / "x").rglob("*")] if p.is_dir()]
    assert dest in made
    assert [p for p in made if _wide(p)] == []


# -- F2: a dangling symlink is not written through -------------------------------
def test_get_onto_a_dangling_symlink_is_refused_and_creates_nothing(tmp_path):
    store = tmp_path / "store"
    attachment_id = _put(store)
    (tmp_path / "elsewhere").mkdir()
    target = tmp_path / "elsewhere" / "evil"
    link = tmp_path / "report.txt"
    link.symlink_to(target)
    result = run(["--store", store, "get", attachment_id, "-o", link])
    assert result.returncode == 2
    assert one_line_error(result.stderr) == f"lashctl: error: -o {link}: not writing through dangling symlink"
    assert not os.path.lexists(target)
    assert os.readlink(link) == str(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere", "report.txt", "store"]
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_get_through_a_symlink_to_an_existing_file_still_writes_the_file(tmp_path):
    store = tmp_path / "store"
    attachment_id = _put(store)
    target = tmp_path / "target"
    target.write_bytes(b"old")
    link = tmp_path / "link"
    link.symlink_to(target)
    result = run(["--store", store, "get", attachment_id, "-o", link])
    assert result.returncode == 0, result.stderr
    assert target.read_bytes() == DATA and os.readlink(link) == str(target)


# -- F9: the report never lands in the file the blob went into -------------------
def test_json_get_to_dev_stdout_redirected_to_a_file_holds_the_blob_alone(tmp_path):
    store = tmp_path / "store"
    attachment_id = _put(store)
    out = tmp_path / "out"
    with open(out, "wb") as handle:
        result = subprocess.run(
            [find_lashctl(), "--json", "--store", str(store), "get", attachment_id, "-o", "/dev/stdout"],
            stdout=handle,
            stderr=subprocess.PIPE,
            env=base_env(),
        )
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == DATA


def test_json_get_to_the_file_stdout_appends_to_holds_the_blob_alone(tmp_path):
    store = tmp_path / "store"
    attachment_id = _put(store)
    out = tmp_path / "out"
    out.write_bytes(b"before\n")
    with open(out, "ab") as handle:
        result = subprocess.run(
            [find_lashctl(), "--json", "--store", str(store), "get", attachment_id, "-o", str(out)],
            stdout=handle,
            stderr=subprocess.PIPE,
            env=base_env(),
        )
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == b"before\n" + DATA


def test_get_to_the_file_stderr_appends_to_holds_the_blob_alone(tmp_path):
    """``-o log 2>> log``: the summary line would follow the bytes into the log."""
    store = tmp_path / "store"
    attachment_id = _put(store)
    log = tmp_path / "log"
    with open(log, "ab") as handle:
        result = subprocess.run(
            [find_lashctl(), "--store", str(store), "get", attachment_id, "-o", str(log)],
            stdout=subprocess.PIPE,
            stderr=handle,
            env=base_env(),
        )
    assert (result.returncode, result.stdout) == (0, b"")
    assert log.read_bytes() == DATA


def test_json_get_to_dev_stdout_on_a_pipe_sends_the_blob_alone_as_dash_does(tmp_path):
    store = tmp_path / "store"
    attachment_id = _put(store)
    dash = run(["--json", "--store", store, "get", attachment_id, "-o", "-"])
    assert (dash.returncode, dash.stdout) == (0, DATA)
    result = run(["--json", "--store", store, "get", attachment_id, "-o", "/dev/stdout"])
    assert (result.returncode, result.stdout) == (0, DATA), result.stderr


def test_json_get_to_another_file_still_reports(tmp_path):
    store = tmp_path / "store"
    attachment_id = _put(store)
    dest = tmp_path / "dest"
    result = run(["--json", "--store", store, "get", attachment_id, "-o", dest])
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"id": attachment_id, "path": str(dest), "byte_len": len(DATA)}
    assert dest.read_bytes() == DATA


# -- F14: a trailing slash names a directory -------------------------------------
@pytest.mark.parametrize("existing", [False, True])
def test_get_onto_a_path_with_a_trailing_slash_that_is_no_directory_is_a_usage_error(tmp_path, existing):
    store = tmp_path / "store"
    attachment_id = _put(store)
    name = tmp_path / "newdir"
    if existing:
        name.write_bytes(b"keep")
    result = run(["--store", store, "get", attachment_id, "-o", f"{name}/"])
    assert result.returncode == 2
    assert one_line_error(result.stderr) == f"lashctl: error: -o {name}/: Not a directory"
    if existing:
        assert name.read_bytes() == b"keep"
    else:
        assert not os.path.lexists(name)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["store"] + (["newdir"] if existing else []))


# -- F10: a NUL byte in a newline-separated list -------------------------------
@pytest.mark.parametrize("from_stdin", [False, True])
def test_a_nul_byte_in_a_newline_separated_list_names_the_list_and_line(tmp_path, from_stdin):
    store = tmp_path / "store"
    (tmp_path / "a").write_bytes(b"a")
    listing = b"a\na\0b\n"
    source = "-"
    if not from_stdin:
        (tmp_path / "list").write_bytes(listing)
        source = "list"
    result = run(
        ["--store", store, "put", "-s", "s", "--files-from", source],
        input=listing if from_stdin else None,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert one_line_error(result.stderr) == (
        f"lashctl: error: --files-from {source}, line 2: a path holds a NUL byte (for a NUL-separated list, add -0)"
    )
    assert not store.exists()


def test_a_nul_byte_in_a_list_under_json_prints_the_failure_object(tmp_path):
    (tmp_path / "list").write_bytes(b"a\0b\n")
    result = run(["--json", "--store", tmp_path / "store", "put", "-s", "s", "--files-from", "list"], cwd=tmp_path)
    assert result.returncode == 2
    assert json.loads(result.stdout)["exit_code"] == 2


# -- F7: the saved torn tail -------------------------------------------------------
def _tear(manifest: Path) -> None:
    with open(manifest, "ab") as handle:
        handle.write(b'{"op":"intent","attachment_id":"secret')


def test_a_saved_torn_tail_is_no_wider_than_its_manifest(tmp_path):
    store = tmp_path / "store"
    _put(store, b"a")
    manifest = store / "manifest.jsonl"
    os.chmod(manifest, 0o600)
    _tear(manifest)
    _put(store, b"b")
    saved = sorted(store.glob("manifest.jsonl.torn-*"))
    assert len(saved) == 1
    assert saved[0].read_bytes() == b'{"op":"intent","attachment_id":"secret'
    assert stat.S_IMODE(os.stat(saved[0]).st_mode) == 0o600


def test_a_torn_tail_beside_a_manifest_with_a_long_name_is_saved_under_a_name_that_fits(tmp_path):
    store = tmp_path / "store"
    manifest = tmp_path / ("m" * 240)
    args = ["--store", store, "--manifest", manifest]
    result = run([*args, "put", "-s", "s", "-"], input=b"a")
    assert result.returncode == 0, result.stderr
    _tear(manifest)
    result = run([*args, "put", "-s", "s", "-"], input=b"b")
    assert result.returncode == 0, result.stderr
    saved = [p for p in tmp_path.iterdir() if ".torn-" in p.name]
    assert len(saved) == 1
    assert len(os.fsencode(saved[0].name)) <= 255
    assert saved[0].name.startswith("m" * 200) and saved[0].read_bytes().endswith(b"secret")
    assert f"saved to {saved[0]}" in result.stderr.decode()
    assert run([*args, "commit", "-s", "s", sha(b"a")]).returncode == 0


# -- F13: raw bytes of a non-UTF-8 name never reach the terminal --------------------
def test_bytes_0x80_to_0xff_of_a_file_name_are_shown_escaped(tmp_path):
    store = tmp_path / "store"
    attachment_id = _put(store)
    shard = blob_path(store, attachment_id).parent
    (shard / os.fsdecode(b"\x9b2J")).touch()
    (shard / os.fsdecode(b"\xff\xa0x")).touch()
    result = run(["--store", store, "verify"])
    lines = result.stdout.splitlines()
    assert any(line.endswith(rb"/\x9b2J") for line in (l.split(b"\t")[2] for l in lines)), result.stdout
    assert any(line.endswith(rb"/\xff\xa0x") for line in (l.split(b"\t")[2] for l in lines)), result.stdout
    assert not any(0x80 <= byte for byte in result.stdout + result.stderr)
    dest = tmp_path / os.fsdecode(b"\x9b2J")
    result = run(["--store", store, "get", attachment_id, "-o", dest])
    assert result.returncode == 0, result.stderr
    assert result.stderr.decode("ascii").endswith(f"to {tmp_path}/\\x9b2J\n")


# -- F3: a clock outside 1970..9999 writes nothing ------------------------------------
needs_faketime = pytest.mark.skipif(shutil.which("faketime") is None, reason="needs faketime")
CLOCK_ERROR = re.compile(
    r"lashctl: error: the system clock reads 1969-12-31T23:\d\d:\d\dZ, outside "
    r"1970-01-01\.\.9999-12-31: refusing to stamp a manifest row with it"
)


def _before_1970(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["faketime", "1969-12-31 23:00:00", find_lashctl(), *map(str, args)],
        input=b"b",
        capture_output=True,
        env=base_env(TZ="UTC"),
        timeout=60,
    )


@needs_faketime
def test_put_and_commit_under_a_clock_before_1970_refuse_and_write_nothing(tmp_path):
    store = tmp_path / "store"
    attachment_id = _put(store, b"a")
    manifest = store / "manifest.jsonl"
    before = manifest.read_bytes()
    blobs = sorted(p for p in store.rglob("*") if p.is_file() and p.name != "manifest.jsonl")
    for args in (["put", "-s", "s", "-"], ["commit", "-s", "s", attachment_id]):
        result = _before_1970("--store", store, *args)
        assert result.returncode == 1
        assert CLOCK_ERROR.fullmatch(one_line_error(result.stderr))
        assert manifest.read_bytes() == before
        assert sorted(p for p in store.rglob("*") if p.is_file() and p.name != "manifest.jsonl") == blobs
    assert run(["--store", store, "commit", "-s", "s", attachment_id]).returncode == 0


@needs_faketime
def test_put_under_a_clock_before_1970_creates_no_store(tmp_path):
    result = _before_1970("--store", tmp_path / "store", "put", "-s", "s", "-")
    assert result.returncode == 1
    assert CLOCK_ERROR.fullmatch(one_line_error(result.stderr))
    assert list(tmp_path.iterdir()) == []


# -- F16: invisible format characters in a session id --------------------------------
@pytest.mark.parametrize(
    "session, shown", [("\ufeffs-1", "U+FEFF"), ("s\u200b1", "U+200B"), ("s-1\u2060", "U+2060"), ("s\u200d1", "U+200D")]
)
def test_a_session_id_with_an_invisible_format_character_is_refused(tmp_path, session, shown):
    store = tmp_path / "store"
    message = f"lashctl: error: --session contains an invisible format character ({shown})"
    result = run(["--store", store, "put", "-s", session, "-"], input=b"a")
    assert result.returncode == 2
    assert one_line_error(result.stderr) == message
    assert not store.exists()
    result = run(["--store", store, "put", "-"], input=b"a", env=base_env(LASHCTL_SESSION=session))
    assert result.returncode == 2
    assert one_line_error(result.stderr) == message
    attachment_id = _put(store, b"a")
    result = run(["--store", store, "commit", "-s", session, attachment_id])
    assert result.returncode == 2
    assert one_line_error(result.stderr) == message
