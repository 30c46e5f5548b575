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
