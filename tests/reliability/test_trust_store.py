"""Trust round: nothing outside the root, one manifest and one lock, bytes that heal, guards.

Each test plants what a hostile surrounding (or a typo in a cron line) would
leave and runs the installed ``lashctl`` against it, then checks that nothing
outside the store changed, that committed content is intact, and that a refusal
is one clear line with its documented exit code.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path

import pytest

from reliability_helpers import (
    blob_path,
    commit,
    file_sha,
    fold_file,
    intent,
    one_line_error,
    plant_blob,
    run,
    sha,
    snapshot_tree,
    write_manifest,
)

pytestmark = pytest.mark.e2e

OLD = 1_700_000_000_000  # 2023: aged for any cutoff
OLD_S = OLD // 1000


def _age(path: Path) -> None:
    os.utime(path, (OLD_S, OLD_S), follow_symlinks=False)


class Store:
    """A store with blob A committed by s1 and blob B an aged orphan of s2, and a directory outside."""

    def __init__(self, base: Path) -> None:
        self.root = base / "store"
        self.manifest = self.root / "manifest.jsonl"
        self.outside = base / "outside"
        self.outside.mkdir()
        (self.outside / "precious.txt").write_bytes(b"keep me\n")
        self.a_data, self.b_data = b"committed content A\n", b"orphan content B\n"
        self.a = plant_blob(self.root, self.a_data)
        self.b = plant_blob(self.root, self.b_data)
        write_manifest(
            self.manifest, [intent(self.a, "s1", OLD), commit(self.a, "s1", OLD + 1), intent(self.b, "s2", OLD)]
        )
        for attachment_id in (self.a, self.b):
            _age(blob_path(self.root, attachment_id))

    def lashctl(self, *args: str, timeout: float = 60):
        return run(["--store", self.root, *args], timeout=timeout)

    def outside_snapshot(self) -> dict:
        return snapshot_tree(self.outside)


@pytest.fixture
def world(tmp_path: Path) -> Store:
    return Store(tmp_path)


def _plant_outside_litter(directory: Path) -> list[Path]:
    """Files an unguarded sweep would take for staging litter, aged past any grace."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ab").mkdir(exist_ok=True)
    planted = [
        directory / "put-1234.part",
        directory / "notes.txt",
        directory / "ab" / "x.tmp",
        directory / "ab" / "y.staging.7.tmp",
    ]
    for path in planted:
        path.write_bytes(b"outside data\n")
        _age(path)
    return planted


# -- A. nothing outside the root ------------------------------------------------------
@pytest.mark.parametrize("command", [["gc"], ["verify", "--fix"], ["stats"], ["verify"]])
def test_a_symlinked_tmp_directory_is_refused(world: Store, command: list[str]) -> None:
    target = world.outside / "elsewhere"
    _plant_outside_litter(target)
    (world.root / "tmp").symlink_to(target)
    before = world.outside_snapshot()
    result = world.lashctl(*command)
    assert result.returncode == 65, result.stderr
    assert "tmp" in one_line_error(result.stderr)
    assert world.outside_snapshot() == before


@pytest.mark.parametrize("command", [["gc"], ["verify", "--fix"], ["reclaim"]])
def test_a_symlinked_sha256_directory_is_refused_by_sweeps(world: Store, command: list[str]) -> None:
    real = world.root / "sha256"
    target = world.outside / "objects"
    real.rename(target)
    _plant_outside_litter(target)
    real.symlink_to(target)
    before = world.outside_snapshot()
    result = world.lashctl(*command)
    assert result.returncode == 65, result.stderr
    assert "sha256" in one_line_error(result.stderr)
    assert world.outside_snapshot() == before


def test_put_never_writes_through_a_symlinked_sha256_directory(world: Store, tmp_path: Path) -> None:
    real = world.root / "sha256"
    target = world.outside / "objects"
    target.mkdir()
    for entry in real.iterdir():
        entry.rename(target / entry.name)
    real.rmdir()
    real.symlink_to(target)
    before = world.outside_snapshot()
    source = tmp_path / "new.txt"
    source.write_bytes(b"new content\n")
    result = world.lashctl("put", "-s", "s9", str(source))
    assert result.returncode == 65, result.stderr
    assert "sha256" in one_line_error(result.stderr)
    assert world.outside_snapshot() == before
    assert sha(b"new content\n") not in world.manifest.read_text()  # nothing recorded either


def test_a_symlinked_quarantine_directory_is_refused(world: Store) -> None:
    blob_path(world.root, world.a).write_bytes(b"rotten content A\n")
    target = world.outside / "q"
    target.mkdir()
    (world.root / "quarantine").symlink_to(target)
    before = world.outside_snapshot()
    result = world.lashctl("verify", "--fix")
    assert result.returncode == 65, result.stderr
    assert "quarantine" in one_line_error(result.stderr)
    assert world.outside_snapshot() == before
    assert blob_path(world.root, world.a).read_bytes() == b"rotten content A\n"  # not moved out


def test_a_symlinked_store_root_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real"
    plant_blob(real, b"x")
    link = tmp_path / "link"
    link.symlink_to(real)
    result = run(["--store", link, "gc", "--force", "--older-than", "1m"])
    assert result.returncode == 65, result.stderr
    assert str(link) in one_line_error(result.stderr)
    assert blob_path(real, sha(b"x")).exists()


def test_put_refuses_a_manifest_symlink_to_a_file_that_is_not_a_manifest(world: Store, tmp_path: Path) -> None:
    notes = world.outside / "notes.txt"
    notes.write_bytes(b"my own notes, not a manifest\n")
    world.manifest.unlink()
    world.manifest.symlink_to(notes)
    before = world.outside_snapshot()
    source = tmp_path / "in.txt"
    source.write_bytes(b"payload\n")
    result = world.lashctl("put", "-s", "s9", str(source))
    assert result.returncode == 65, result.stderr
    assert "not a manifest" in one_line_error(result.stderr)
    assert world.outside_snapshot() == before
    assert not blob_path(world.root, sha(b"payload\n")).exists()


@pytest.mark.parametrize("content", [b"hello", b"plain text\nmore text\n", b"\x00\x01binary"])
def test_append_refuses_any_existing_file_that_does_not_read_as_a_manifest(
    world: Store, tmp_path: Path, content: bytes
) -> None:
    world.manifest.write_bytes(content)
    result = world.lashctl("commit", "-s", "s1", world.a)
    assert result.returncode == 65, result.stderr
    one_line_error(result.stderr)
    assert world.manifest.read_bytes() == content


def test_a_dangling_lock_symlink_creates_nothing_outside(world: Store, tmp_path: Path) -> None:
    target = world.outside / "created-by-lock"
    Path(str(world.manifest) + ".lock").symlink_to(target)
    source = tmp_path / "in.txt"
    source.write_bytes(b"payload\n")
    result = world.lashctl("put", "-s", "s9", str(source))
    assert result.returncode == 65, result.stderr
    assert "lock" in one_line_error(result.stderr)
    assert not os.path.lexists(target)


def test_a_dangling_manifest_symlink_creates_nothing_outside(tmp_path: Path) -> None:
    root = tmp_path / "store"
    root.mkdir()
    target = tmp_path / "outside-manifest.jsonl"
    (root / "manifest.jsonl").symlink_to(target)
    source = tmp_path / "in.txt"
    source.write_bytes(b"payload\n")
    result = run(["--store", root, "put", "-s", "s9", str(source)])
    assert result.returncode == 65, result.stderr
    one_line_error(result.stderr)
    assert not os.path.lexists(target)
    assert not os.path.lexists(str(target) + ".lock")


# -- B. one manifest, one lock, one log ---------------------------------------------
def _symlinked_manifest(world: Store) -> Path:
    real = world.outside / "disk" / "manifest.jsonl"
    real.parent.mkdir()
    world.manifest.rename(real)
    world.manifest.symlink_to(real)
    return real


def test_a_writer_through_a_manifest_symlink_takes_the_real_files_lock(world: Store) -> None:
    real = _symlinked_manifest(world)
    fd = os.open(str(real) + ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        result = world.lashctl("--lock-timeout", "0.3", "commit", "-s", "s2", world.b)
    finally:
        os.close(fd)
    assert result.returncode == 75, result.stderr
    assert not os.path.lexists(str(world.manifest) + ".lock")


def test_compaction_through_a_manifest_symlink_keeps_one_log(world: Store) -> None:
    real = _symlinked_manifest(world)
    assert world.lashctl("manifest", "compact").returncode == 0
    assert world.manifest.is_symlink() and world.manifest.resolve() == real.resolve()
    # A commit through the real path is seen by a sweep through the link.
    assert run(["--store", world.root, "--manifest", real, "commit", "-s", "s2", world.b]).returncode == 0
    result = world.lashctl("reclaim", "--json")
    assert result.returncode == 0, result.stderr
    assert blob_path(world.root, world.b).exists()
    assert fold_file(real)[("s2", world.b)]["committed_at_epoch_ms"] is not None


# -- D. bytes ----------------------------------------------------------------------
def test_a_re_put_heals_a_blob_whose_bytes_rotted_at_the_same_size(world: Store, tmp_path: Path) -> None:
    path = blob_path(world.root, world.a)
    path.write_bytes(b"X" * len(world.a_data))  # bit rot, same size
    source = tmp_path / "a.txt"
    source.write_bytes(world.a_data)
    result = world.lashctl("--json", "put", "-s", "s3", str(source))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)[0]["deduplicated"] is False
    assert file_sha(path) == world.a
    assert world.lashctl("get", "-o", str(tmp_path / "out"), world.a).returncode == 0


def test_a_re_put_of_intact_content_keeps_the_file_and_refreshes_it(world: Store, tmp_path: Path) -> None:
    path = blob_path(world.root, world.a)
    inode = path.stat().st_ino
    source = tmp_path / "a.txt"
    source.write_bytes(world.a_data)
    result = world.lashctl("--json", "put", "-s", "s3", str(source))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)[0]["deduplicated"] is True
    assert path.stat().st_ino == inode
    assert path.stat().st_mtime > OLD_S + 1000


def test_verify_reports_hard_linked_blobs_and_sidecars(world: Store) -> None:
    os.link(blob_path(world.root, world.a), world.outside / "shared-blob")
    result = world.lashctl("--json", "verify")
    kinds = {(f["kind"], f["id"]) for f in json.loads(result.stdout)["findings"]}
    assert ("hard-linked", world.a) in kinds
    assert result.returncode == 65


def test_verify_fix_quarantines_only_the_file_it_hashed(tmp_path: Path) -> None:
    """A put that heals the blob while verify hashes the rotten copy keeps its fresh bytes."""
    from lashctl import inspect
    from lashctl.core import Store as CoreStore

    root = tmp_path / "store"
    data = b"good bytes " * 100_000  # more than one chunk: progress is reported mid-hash
    attachment_id = plant_blob(root, data)
    path = blob_path(root, attachment_id)
    path.write_bytes(b"x" * len(data))
    write_manifest(root / "manifest.jsonl", [intent(attachment_id, "s1", OLD), commit(attachment_id, "s1", OLD)])
    healed = []

    def heal_once(_n: int) -> None:
        if not healed:
            fresh = path.with_name("fresh")
            fresh.write_bytes(data)
            os.replace(fresh, path)  # what a re-put does
            healed.append(True)

    store = CoreStore(root)
    inspect.verify(store, int(time.time() * 1000), fix=True, progress=heal_once)
    assert healed
    assert path.read_bytes() == data


# -- E. guards ---------------------------------------------------------------------
def test_gc_refuses_a_manifest_that_is_not_a_regular_file(world: Store, tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for manifest in (fifo, world.outside):
        result = run(["--store", world.root, "--manifest", manifest, "gc"], timeout=20)
        assert result.returncode == 65, result.stderr
        one_line_error(result.stderr)
    assert not os.path.lexists(str(fifo) + ".lock")
    assert blob_path(world.root, world.a).exists()


def test_gc_with_dev_null_as_manifest_deletes_nothing(world: Store) -> None:
    import stat

    if not stat.S_ISCHR(os.stat("/dev/null").st_mode):
        pytest.skip("/dev/null is not a character device on this machine")
    lock_existed = os.path.lexists("/dev/null.lock")
    result = run(["--store", world.root, "--manifest", "/dev/null", "gc"])
    assert result.returncode == 65, result.stderr
    assert blob_path(world.root, world.a).exists() and blob_path(world.root, world.b).exists()
    if not lock_existed:
        assert not os.path.lexists("/dev/null.lock")


@pytest.mark.parametrize("content", [b"", b'{"op":"header","format":"lashctl-manifest","version":1}\n'])
def test_gc_refuses_a_manifest_without_rows_while_blobs_exist(world: Store, content: bytes) -> None:
    world.manifest.write_bytes(content)
    result = world.lashctl("gc")
    assert result.returncode == 4, result.stderr
    assert "--force" in one_line_error(result.stderr)
    assert blob_path(world.root, world.a).exists()
    forced = world.lashctl("gc", "--force")
    assert forced.returncode == 0, forced.stderr
    assert not blob_path(world.root, world.a).exists()


def test_verify_fix_honours_the_one_minute_floor_on_grace(world: Store) -> None:
    staging = world.root / "tmp" / "put-abc.part"
    staging.parent.mkdir()
    staging.write_bytes(b"a put in flight")
    result = world.lashctl("verify", "--fix", "--grace", "0s")
    assert result.returncode == 4, result.stderr
    assert "--force" in one_line_error(result.stderr)
    assert staging.exists()
    forced = world.lashctl("verify", "--fix", "--grace", "0s", "--force")
    assert forced.returncode == 0, forced.stderr
    assert not staging.exists()


def test_compaction_leftovers_are_reported_and_swept_after_the_grace(world: Store) -> None:
    part = world.root / ".manifest.jsonl.0a1b2c3d4e5f.part"
    part.write_bytes(world.manifest.read_bytes())
    _age(part)
    verify = world.lashctl("--json", "verify")
    assert str(part) in {f["path"] for f in json.loads(verify.stdout)["findings"] if f["kind"] == "staging-litter"}
    stats = world.lashctl("--json", "stats")
    assert json.loads(stats.stdout)["staging_files"] == 1
    dry = world.lashctl("--json", "gc", "--dry-run")
    assert str(part) in {i["path"] for i in json.loads(dry.stdout)["items"]}
    assert part.exists()
    assert world.lashctl("gc").returncode == 0
    assert not part.exists()
    assert world.manifest.exists()


def test_compaction_leftovers_within_the_grace_are_kept(world: Store) -> None:
    part = world.root / ".manifest.jsonl.0a1b2c3d4e5f.part"
    part.write_bytes(b"fresh")
    assert world.lashctl("verify", "--fix").returncode == 0
    assert world.lashctl("gc").returncode == 0
    assert part.exists()


def test_reclaim_dry_run_says_failed_where_the_real_run_fails(world: Store) -> None:
    shard = world.root / "sha256" / world.b[:2]
    if world.a[:2] == world.b[:2]:
        pytest.skip("A and B share a shard")
    moved = world.outside / "shard"
    shard.rename(moved)
    shard.symlink_to(moved)
    dry = world.lashctl("--json", "reclaim", "--dry-run")
    real = world.lashctl("--json", "reclaim")
    assert real.returncode == 5
    assert dry.returncode == 5
    dry_items = [(i["id"], i["action"]) for i in json.loads(dry.stdout)["items"]]
    real_items = [(i["id"], i["action"]) for i in json.loads(real.stdout)["items"]]
    assert dry_items == real_items == [(world.b, "failed")]
    assert (moved / world.b).exists()


def test_reclaim_dry_run_says_failed_for_a_directory_at_a_blob_path(world: Store) -> None:
    path = blob_path(world.root, world.b)
    path.unlink()
    path.mkdir()
    (path / "inner").write_bytes(b"x")
    dry = world.lashctl("--json", "reclaim", "--dry-run")
    assert [(i["id"], i["action"]) for i in json.loads(dry.stdout)["items"]] == [(world.b, "failed")]
    assert dry.returncode == 5


@pytest.mark.parametrize(
    "command",
    [
        ["list-uncommitted"],
        ["ls"],
        ["reclaim"],
        ["manifest", "check"],
        ["verify"],
        ["stats"],
        ["show", "abcd"],
        ["commit", "-s", "s", "a" * 64],
        ["manifest", "log"],
        ["manifest", "compact"],
        ["gc"],
    ],
)
def test_a_fifo_at_the_manifest_path_answers_at_once(world: Store, command: list[str]) -> None:
    world.manifest.unlink()
    os.mkfifo(world.manifest)
    result = world.lashctl(*command, timeout=20)
    assert result.returncode == 65, (result.returncode, result.stderr)
    assert "not a regular file" in one_line_error(result.stderr)


# -- found by attacking the installed tool ---------------------------------------------
@pytest.mark.parametrize(
    "command", [["commit", "-s", "s2", "B"], ["manifest", "compact"], ["list-uncommitted"], ["manifest", "log"]]
)
def test_a_symlinked_store_root_stops_manifest_commands_too(tmp_path: Path, command: list[str]) -> None:
    world = Store(tmp_path)
    real = world.outside / "realstore"
    world.root.rename(real)
    world.root.symlink_to(real)
    before = world.outside_snapshot()
    result = world.lashctl(*[world.b if c == "B" else c for c in command])
    assert result.returncode == 65, result.stderr
    one_line_error(result.stderr)
    assert world.outside_snapshot() == before


def test_only_litter_of_lashctls_own_name_format_is_swept_beside_a_manifest(world: Store) -> None:
    real = _symlinked_manifest(world)
    foreign = [real.parent / ".manifest.jsonl.zz.part", real.parent / ".manifest.jsonl.abcd1234.part"]
    ours = real.parent / ".manifest.jsonl.0123456789ab.part"
    for path in (*foreign, ours):
        path.write_bytes(b"x")
        _age(path)
    assert world.lashctl("verify", "--fix").returncode == 0
    assert all(p.exists() for p in foreign)
    assert not ours.exists()


def test_a_hard_linked_manifest_is_not_written_through(world: Store) -> None:
    copy = world.outside / "copy.jsonl"
    os.link(world.manifest, copy)
    before = copy.read_bytes()
    result = world.lashctl("commit", "-s", "s2", world.b)
    assert result.returncode == 65, result.stderr
    assert "hard link" in one_line_error(result.stderr)
    assert copy.read_bytes() == before


def test_a_label_that_is_not_utf8_is_stored_with_replacement_characters(world: Store, tmp_path: Path) -> None:
    source = tmp_path / "in.txt"
    source.write_bytes(b"labelled\n")
    result = run(["--store", world.root, "--json", "put", "-s", "s9", "--label", b"a\x9bb", source])
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)[0]["label"] == "a\ufffdb"


def test_a_missing_files_from_list_is_a_usage_error(world: Store, tmp_path: Path) -> None:
    result = world.lashctl("put", "-s", "s9", "--files-from", str(tmp_path / "no-such-list"))
    assert result.returncode == 2, result.stderr
    one_line_error(result.stderr)


@pytest.mark.parametrize(
    "command",
    [["list-uncommitted"], ["--json", "list-uncommitted"], ["show", "A"]],
    ids=["list-uncommitted", "json", "show"],
)
def test_a_symlinked_sha256_directory_stops_the_commands_that_report_on_bytes(world: Store, command: list[str]) -> None:
    """Whether bytes are present cannot be answered through a symlinked
    sha256/: the command stops with one line (exit 65) instead of reporting
    every blob missing, on a pipe and in the general rendering alike."""
    real = world.root / "sha256"
    target = world.outside / "objects"
    real.rename(target)
    real.symlink_to(target)
    before = world.outside_snapshot()
    result = world.lashctl(*[world.a if part == "A" else part for part in command])
    assert result.returncode == 65, (result.stdout, result.stderr)
    assert "sha256" in one_line_error(result.stderr)
    assert b'"bytes_present":false' not in result.stdout and b"missing" not in result.stdout
    assert world.outside_snapshot() == before
