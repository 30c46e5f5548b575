"""Owners and modes of what lashctl writes (README, "Threat model"): run as
root on another user's store, whatever lashctl creates takes the owner and
group of the directory it lands in, and whatever it replaces keeps the owner,
group and mode of what it replaced; a new sidecar is no wider than its blob."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

from reliability_helpers import base_env, blob_path, find_lashctl, run, sidecar_path

pytestmark = pytest.mark.e2e

USER = 65534  # nobody


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def _put(store: Path, data: bytes, *extra: str, env: dict | None = None) -> str:
    result = run(["--store", store, *extra, "put", "-s", "s", "-"], input=data, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout.decode().strip()


# -- modes (any user) -----------------------------------------------------------------
def test_compaction_keeps_the_manifests_mode(tmp_path):
    store = tmp_path / "store"
    _put(store, b"one")
    _put(store, b"one")
    manifest = store / "manifest.jsonl"
    os.chmod(manifest, 0o600)
    result = run(["--store", store, "manifest", "compact"])
    assert result.returncode == 0, result.stderr
    assert _mode(manifest) == 0o600


def test_a_rebuilt_sidecar_is_no_wider_than_its_blob(tmp_path):
    store = tmp_path / "store"
    attachment_id = _put(store, b"private bytes")
    os.chmod(blob_path(store, attachment_id), 0o600)
    sidecar_path(store, attachment_id).unlink()
    result = run(["--store", store, "verify", "--fix"])
    assert result.returncode == 0, result.stderr
    assert sidecar_path(store, attachment_id).exists()
    assert _mode(sidecar_path(store, attachment_id)) == 0o600


def test_a_re_put_keeps_the_modes_of_the_blob_and_sidecar_it_replaces(tmp_path):
    store = tmp_path / "store"
    attachment_id = _put(store, b"private bytes")
    blob, side = blob_path(store, attachment_id), sidecar_path(store, attachment_id)
    os.chmod(blob, 0o644)
    blob.write_bytes(b"rotten bytes!")  # a re-put replaces these
    os.chmod(blob, 0o600)
    os.chmod(side, 0o640)
    result = run(["--store", store, "put", "-s", "s", "--label", "another", "-"], input=b"private bytes")
    assert result.returncode == 0, result.stderr
    assert blob.read_bytes() == b"private bytes"
    assert b"another" in side.read_bytes()
    assert (_mode(blob), _mode(side)) == (0o600, 0o640)


# -- owners (root on another user's store) ------------------------------------------
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="operating another user's store needs root")


@pytest.fixture
def users_tree():
    """A directory tree owned by an unprivileged user, reachable by that user
    (pytest's own temporary directories are private to root)."""
    base = Path(tempfile.mkdtemp(prefix="lashctl-owner-", dir="/tmp"))
    os.chmod(base, 0o755)
    for name in ("store", "meta", "out", "cache"):
        (base / name).mkdir()
        os.chown(base / name, USER, USER)
    yield base
    shutil.rmtree(base)


def _as_user(base: Path, args: list, input: bytes = b"") -> subprocess.CompletedProcess:
    return subprocess.run(
        ["setpriv", f"--reuid={USER}", f"--regid={USER}", "--clear-groups", find_lashctl(), *map(str, args)],
        input=input,
        capture_output=True,
        env=base_env(LASHCTL_CACHE_DIR=str(base / "cache"), HOME=str(base / "cache")),
    )


def _not_the_users(*roots: Path) -> list[str]:
    wrong = []
    for root in roots:
        for where, dirs, files in os.walk(root):
            for name in [*dirs, *files]:
                st = os.lstat(Path(where) / name)
                if (st.st_uid, st.st_gid) != (USER, USER):
                    wrong.append(f"{Path(where) / name} {st.st_uid}:{st.st_gid}")
    return wrong


@needs_root
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv to run as another user")
@pytest.mark.parametrize("manifest_beside", [False, True], ids=["manifest-in-store", "manifest-elsewhere"])
def test_root_on_another_users_store_leaves_everything_theirs(users_tree, manifest_beside):
    base = users_tree
    store, out = base / "store", base / "out"
    where = ["--store", store] + (["--manifest", base / "meta" / "m.jsonl"] if manifest_beside else [])
    manifest = base / "meta" / "m.jsonl" if manifest_beside else store / "manifest.jsonl"

    # Root is the first to write: the manifest, its lock, sha256/, tmp/, shards.
    first = _put(where[1], b"first", *where[2:])
    second = _put(where[1], b"second", *where[2:])
    Path(f"{manifest}.lock").unlink()
    assert run([*where, "reclaim"]).returncode == 0  # a no-op sweep creates the lock file again
    assert run([*where, "commit", "-s", "s", first]).returncode == 0
    assert run([*where, "manifest", "compact"]).returncode == 0
    # A torn append, repaired (and saved beside the manifest) by root's next write.
    with open(manifest, "ab") as handle:
        handle.write(b'{"op":"intent","attach')
    _put(where[1], b"third", *where[2:])
    # verify --fix rebuilds a sidecar and moves rotten bytes to quarantine/.
    sidecar_path(store, first).unlink()
    rotten = blob_path(store, second)
    os.chmod(rotten, 0o644)
    rotten.write_bytes(b"rotten")
    os.chown(rotten, USER, USER)
    assert run([*where, "verify", "--fix"]).returncode == 0
    assert (store / "quarantine").is_dir()
    # get -o: a new file in the user's directory, and one replacing the user's file.
    (out / "mine").write_bytes(b"the user's")
    os.chown(out / "mine", USER, USER)
    os.chmod(out / "mine", 0o600)
    for dest in (out / "mine", out / "new", store / "copy"):
        assert run([*where, "get", first, "-o", dest]).returncode == 0
    assert _mode(out / "mine") == 0o600

    assert _not_the_users(store, manifest.parent, out) == []
    # ... and the user can still write it all.
    user = _as_user(base, [*where, "put", "-s", "u", "-"], input=b"the user's own")
    assert user.returncode == 0, user.stderr
    assert _as_user(base, [*where, "manifest", "compact"]).returncode == 0
    assert _as_user(base, [*where, "verify", "--fix"]).returncode in (0, 65)


@needs_root
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv to run as another user")
def test_get_o_will_not_replace_a_file_its_user_may_not_write(users_tree):
    """As ``cat > FILE`` and ``cp`` refuse a read-only file, so does ``get -o``:
    its rename would replace what the user may not write."""
    store, out = users_tree / "store", users_tree / "out"
    (out / "in.txt").write_bytes(b"payload\n")
    os.chown(out / "in.txt", USER, USER)
    done = _as_user(users_tree, ["--store", store, "put", "-s", "s", out / "in.txt"])
    assert done.returncode == 0, done.stderr
    attachment_id = done.stdout.decode().strip()
    kept = out / "kept.txt"
    kept.write_bytes(b"the user's own read-only file\n")
    os.chown(kept, USER, USER)
    kept.chmod(0o444)
    done = _as_user(users_tree, ["--store", store, "get", attachment_id, "-o", kept])
    assert done.returncode == 1, done.stderr
    assert b"Permission denied" in done.stderr and done.stderr.count(b"\n") == 1
    assert kept.read_bytes() == b"the user's own read-only file\n"
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []


def test_a_re_put_over_a_hard_linked_blob_is_no_wider_than_it(tmp_path):
    """A backup tool's hard link makes the blob shared: a re-put replaces it
    (never writes through it), and the new blob is no wider than the old."""
    store = tmp_path / "store"
    attachment_id = _put(store, b"private bytes")
    blob = blob_path(store, attachment_id)
    os.chmod(blob, 0o600)
    os.link(blob, tmp_path / "backup-link")
    (tmp_path / "again").write_bytes(b"private bytes")
    done = run(["--store", store, "put", "-s", "s", tmp_path / "again"])
    assert done.returncode == 0, done.stderr
    assert os.stat(blob).st_nlink == 1  # replaced, not written through
    assert _mode(blob) == 0o600


@needs_root
def test_root_with_another_users_home_creates_nothing_in_it(tmp_path):
    """su without '-', sudo -E, a cron line: root with HOME still another
    user's. The state cache is root's business: nothing is made in that home."""
    home = tmp_path / "alicehome"
    home.mkdir()
    os.chown(home, USER, USER)
    store = tmp_path / "store"
    attachment_id = _put(store, b"some bytes")
    env = base_env(HOME=str(home))
    for name in ("LASHCTL_CACHE_DIR", "XDG_CACHE_HOME"):
        env.pop(name, None)
    done = subprocess.run([find_lashctl(), "--store", str(store), "ls"], capture_output=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert attachment_id.encode() in done.stdout
    assert list(home.iterdir()) == []
