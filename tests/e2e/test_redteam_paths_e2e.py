"""Paths and text that another user, a bad clock or a careless list can hand
lashctl: directories it creates, where ``get -o`` writes, what a torn-tail
repair saves, what reaches a terminal, what a session id may hold."""

from __future__ import annotations

import json
import os
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
        input=DATA, capture_output=True, env=base_env(LASHCTL_CACHE_DIR=str(cache)), umask=0, timeout=60)
    assert result.returncode == 0, result.stderr
    made = [p for top in ("a", "m", "c") for p in [tmp_path / top, *(tmp_path / top).rglob("*")] if p.is_dir()]
    assert store in made and manifest.parent in made and cache in made
    assert [p for p in made if _wide(p)] == []


def test_migrate_under_umask_000_creates_no_writable_directory(tmp_path):
    source = tmp_path / "source"
    _put(source)
    dest = tmp_path / "x" / "y" / "dest"
    result = subprocess.run([find_lashctl(), "--store", str(source), "migrate", "--to-store", str(dest)],
                            capture_output=True, env=base_env(), umask=0, timeout=60)
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
