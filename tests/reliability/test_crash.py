"""Crash safety: SIGKILL the installed ``lashctl`` at random instants.

For each of a batch ``put``, a ``reclaim --force --older-than 0s`` over many
orphans and a ``commit`` of many ids, many trials (seeded delays) kill the
process somewhere between start-up and exit. After every kill:

- every file at a blob path hashes to its name, and every blob present has a
  manifest row (write-ahead: bytes never land before their intent is durable),
  except after a killed ``reclaim``, which forgets rows before it deletes
  bytes: there no intent outlives its bytes, and bytes left without rows are
  ``gc``'s to remove;
- no committed blob is missing;
- the manifest still reads (``list-uncommitted`` exits 0, at most a torn-tail
  warning);
- rerunning the command (for ``reclaim``: then ``gc``) finishes the job, and a
  second rerun changes nothing.

Default: a few dozen trials (well under a minute). ``LASHCTL_LONG_TESTS=1``:
hundreds.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from lashctl.backends.blobs.localfs import read_sidecar_file
from reliability_helpers import (
    base_env,
    blob_files,
    blob_inodes,
    blob_path,
    check_store,
    commit,
    file_sha,
    find_lashctl,
    fold_file,
    intent,
    keys_and_commits,
    one_line_error,
    read_log,
    report,
    run,
    scaled,
    sha,
    shm_module_path,  # noqa: F401 (fixture)
    shm_path,  # noqa: F401 (fixture)
    sidecar_path,
    staging_litter,
    write_manifest,
)

pytestmark = pytest.mark.e2e

LASHCTL = find_lashctl()
SEED = int(os.environ.get("LASHCTL_CRASH_SEED", "20261126"))
DAY = 86_400_000


def kill_at_random(args: list[str], delay: float, input: bytes | None = None) -> tuple[bool, int]:
    """Start lashctl, SIGKILL it after ``delay`` seconds if still running.

    Returns (killed before exit, return code).
    """
    proc = subprocess.Popen(
        [LASHCTL, *args],
        stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=base_env(),
    )
    if input is not None:
        try:
            proc.stdin.write(input)
            proc.stdin.close()
        except BrokenPipeError:
            pass
    deadline = time.monotonic() + delay
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        time.sleep(min(0.002, max(0.0, deadline - time.monotonic())))
    landed = proc.poll() is None
    if landed:
        proc.send_signal(signal.SIGKILL)
    rc = proc.wait(timeout=30)
    return landed, rc


def manifest_reads(store: Path) -> None:
    """``list-uncommitted`` exits 0 on what a crash left, with at most a torn-tail warning."""
    if not store.exists():
        return  # killed before the put created the store: nothing to read (and naming it is an error)
    result = run(["--store", str(store), "--json", "list-uncommitted"])
    stderr = result.stderr.decode("utf-8", "replace")
    assert result.returncode == 0, f"manifest unreadable after a crash: rc={result.returncode} {stderr}"
    for line in stderr.splitlines():
        if line.startswith("lashctl: warning:"):
            assert "torn final line" in line, line
        else:
            # "3 uncommitted row(s)", or "no uncommitted rows"
            assert "uncommitted row" in line, f"unexpected stderr after a crash: {line!r}"


def startup_seconds(scratch: Path) -> float:
    """How long lashctl takes to start and read an empty store (the dead zone for kills)."""
    (scratch / "startup-probe" / "sha256").mkdir(parents=True, exist_ok=True)  # an empty store
    best = min(timed(["--store", str(scratch / "startup-probe"), "list-uncommitted"]) for _ in range(3))
    return best


def pick_delay(rng: random.Random, startup: float, duration: float) -> float:
    """Mostly inside the working phase, sometimes during start-up or after the end."""
    if rng.random() < 0.15:
        return rng.uniform(0.0, duration * 1.1)
    return rng.uniform(startup * 0.8, duration * 1.02)


def timed(args: list[str], input: bytes | None = None) -> float:
    started = time.monotonic()
    result = run(args, input=input)
    assert result.returncode == 0, result.stderr.decode()
    return time.monotonic() - started


# -- put ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def put_inputs(shm_module_path) -> tuple[Path, list[str]]:
    """200 small files (a few with equal content) plus three 1-4 MiB files."""
    src = shm_module_path / "put-src"
    src.mkdir()
    rng = random.Random(SEED)
    paths = []
    for i in range(200):
        body = f"small file {i % 190}\n".encode() * (1 + i % 7)  # 10 duplicate contents
        path = src / f"f{i:03d}.txt"
        path.write_bytes(body)
        paths.append(str(path))
    for i, size in enumerate((1 << 20, (5 << 19) + 3, (4 << 20) - 1)):
        path = src / f"big{i}.bin"
        path.write_bytes(rng.randbytes(size))
        paths.insert(60 * (i + 1), str(path))
    listing = src / "list.txt"
    listing.write_text("".join(p + "\n" for p in paths))
    return listing, [file_sha(Path(p)) for p in paths]


def test_sigkill_during_batch_put(shm_path: Path, put_inputs) -> None:
    listing, expected = put_inputs
    args = lambda store: ["--store", str(store), "-q", "put", "-s", "crash-put", "--files-from", str(listing)]
    duration = timed(args(shm_path / "calibrate"))
    startup = startup_seconds(shm_path)
    rng = random.Random(SEED + 1)
    trials = scaled(20, 300)
    landed = litter_left = midway = 0
    for trial in range(trials):
        store = shm_path / f"s{trial}"
        killed, rc = kill_at_random(args(store), pick_delay(rng, startup, duration))
        landed += killed
        present = len(blob_files(store))
        midway += killed and (
            0 < present < len(set(expected))
            or read_log(store / "manifest.jsonl").torn_tail
            or (present and not all(sidecar_path(store, i).exists() for i in expected))
        )
        if not killed:
            assert rc == 0, f"trial {trial}: put exited {rc} without being killed"
        check_store(store)
        manifest_reads(store)

        first = run(args(store))
        assert first.returncode == 0, f"trial {trial}: rerun failed: {first.stderr.decode()}"
        assert first.stdout.decode().split() == expected, f"trial {trial}: rerun printed other ids"
        rows = check_store(store)
        for attachment_id in expected:
            assert blob_path(store, attachment_id).is_file()
            assert file_sha(blob_path(store, attachment_id)) == attachment_id
            assert ("crash-put", attachment_id) in rows
            side = sidecar_path(store, attachment_id)
            assert side.is_file(), f"trial {trial}: sidecar {side} missing after rerun"
            assert read_sidecar_file(side).attachment_id == attachment_id
        before_blobs, before_rows = blob_inodes(store), keys_and_commits(rows)

        second = run(args(store))
        assert second.returncode == 0, second.stderr.decode()
        assert second.stdout.decode().split() == expected
        assert blob_inodes(store) == before_blobs, f"trial {trial}: a second rerun rewrote blobs"
        assert keys_and_commits(check_store(store)) == before_rows
        assert not read_log(store / "manifest.jsonl").torn_tail
        litter_left += len(staging_litter(store))
        shutil.rmtree(store)
    report(
        f"crash/put: {trials} trials, {landed} kills landed before exit, {midway} visibly mid-batch; "
        f"{litter_left} staging file(s) left in tmp/ by killed runs (never cleaned up)"
    )
    assert landed >= trials // 3, "too few kills landed: the delay distribution is off"


# -- reclaim -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def reclaim_template(shm_module_path) -> tuple[Path, set[str], set[str]]:
    """A store with 800 aged orphans, 30 blobs committed by another session
    (20 of them also with an aged orphan row) and a few big orphans."""
    base = shm_module_path / "reclaim-template"
    base.mkdir()
    store = base / "store"
    src = base / "src"
    src.mkdir()
    rng = random.Random(SEED + 2)
    orphans, committed = [], []
    paths = []
    for i in range(800):
        data = f"orphan {i}\n".encode() * (1 + i % 5) if i % 200 else rng.randbytes(1 << 20)
        (src / f"o{i}").write_bytes(data)
        paths.append(str(src / f"o{i}"))
        orphans.append(sha(data))
    for i in range(30):
        data = f"committed {i}\n".encode()
        (src / f"c{i}").write_bytes(data)
        paths.append(str(src / f"c{i}"))
        committed.append(sha(data))
    (base / "list").write_text("\n".join(paths) + "\n")
    result = run(["--store", str(store), "-q", "put", "-s", "s-orphan", "--files-from", str(base / "list")])
    assert result.returncode == 0, result.stderr.decode()
    # Rewrite the manifest: old intents for the orphan session, committed rows for "s-live".
    old = int(time.time() * 1000) - 3 * DAY
    events = [intent(i, "s-orphan", old + n) for n, i in enumerate(orphans + committed[:20])]
    events += [intent(i, "s-live", old) for i in committed] + [commit(i, "s-live", old + 1) for i in committed]
    write_manifest(store / "manifest.jsonl", events)
    check_store(store)
    return store, set(orphans), set(committed)


def test_sigkill_during_reclaim(shm_path: Path, reclaim_template) -> None:
    template, orphans, committed = reclaim_template
    args = lambda store: ["--store", str(store), "-q", "reclaim", "--force", "--older-than", "0s"]
    calibrate = shm_path / "calibrate"
    shutil.copytree(template, calibrate)
    duration = timed(args(calibrate))
    startup = startup_seconds(shm_path)
    rng = random.Random(SEED + 3)
    trials = scaled(20, 300)
    landed = midway = 0
    expected_rows = {("s-live", i): True for i in committed}
    for trial in range(trials):
        store = shm_path / f"s{trial}"
        shutil.copytree(template, store)
        killed, rc = kill_at_random(args(store), pick_delay(rng, startup, duration))
        landed += killed
        left = len(orphans & set(blob_files(store)))
        midway += killed and (
            0 < left < len(orphans) or (left == 0 and len(fold_file(store / "manifest.jsonl")) > len(committed))
        )
        if not killed:
            assert rc == 0
        rows = check_store(store, unreferenced_ok=True)
        for (session, attachment_id), row in rows.items():
            # Rows go before bytes: no row the sweep would forget outlives its bytes.
            assert row["committed_at_epoch_ms"] is not None or blob_path(store, attachment_id).is_file(), (
                f"trial {trial}: the intent of {attachment_id} ({session}) survived its bytes"
            )
        for attachment_id in committed:
            assert file_sha(blob_path(store, attachment_id)) == attachment_id, "a committed blob was lost"
        manifest_reads(store)

        first = run(args(store))
        assert first.returncode == 0, f"trial {trial}: rerun failed: {first.stderr.decode()}"
        # Bytes whose rows a killed run forgot are gc's to remove.
        swept = run(["--store", str(store), "-q", "gc", "--force", "--older-than", "0s"])
        assert swept.returncode == 0, swept.stderr.decode()
        rows = check_store(store)
        assert keys_and_commits(rows) == expected_rows, f"trial {trial}: rows left after the rerun"
        present = set(blob_files(store))
        assert present == committed, (
            f"trial {trial}: orphans left {len(present - committed)}, lost {committed - present}"
        )
        for attachment_id in orphans:
            assert not sidecar_path(store, attachment_id).exists(), "an orphan's sidecar outlived its blob"
        snapshot = (blob_inodes(store), fold_file(store / "manifest.jsonl"))

        second = run(args(store))
        assert second.returncode == 0, second.stderr.decode()
        assert (blob_inodes(store), fold_file(store / "manifest.jsonl")) == snapshot
        shutil.rmtree(store)
    report(f"crash/reclaim: {trials} trials, {landed} kills landed before exit, {midway} visibly mid-sweep")
    assert landed >= trials // 3


# -- commit --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def commit_template(shm_module_path) -> tuple[Path, list[str]]:
    """A store with 400 uncommitted rows of session s-c (50 already committed)."""
    base = shm_module_path / "commit-template"
    base.mkdir()
    store = base / "store"
    src = base / "src"
    src.mkdir()
    paths = []
    for i in range(400):
        (src / f"f{i}").write_bytes(f"to commit {i}\n".encode())
        paths.append(str(src / f"f{i}"))
    (base / "list").write_text("\n".join(paths) + "\n")
    result = run(["--store", str(store), "-q", "put", "-s", "s-c", "--files-from", str(base / "list")])
    assert result.returncode == 0, result.stderr.decode()
    ids = result.stdout.decode().split()
    result = run(["--store", str(store), "-q", "commit", "-s", "s-c", *ids[:50]])
    assert result.returncode == 0, result.stderr.decode()
    return store, ids


def test_sigkill_during_commit(shm_path: Path, commit_template) -> None:
    template, ids = commit_template
    args = lambda store: ["--store", str(store), "-q", "--json", "commit", "-s", "s-c", "-"]
    stdin = "\n".join(ids).encode() + b"\n"
    calibrate = shm_path / "calibrate"
    shutil.copytree(template, calibrate)
    duration = timed(args(calibrate), input=stdin)
    startup = startup_seconds(shm_path)
    rng = random.Random(SEED + 4)
    trials = scaled(20, 300)
    landed = applied = 0
    for trial in range(trials):
        store = shm_path / f"s{trial}"
        shutil.copytree(template, store)
        killed, rc = kill_at_random(args(store), pick_delay(rng, startup, duration), input=stdin)
        landed += killed
        applied += (
            killed
            and sum(r["committed_at_epoch_ms"] is not None for r in fold_file(store / "manifest.jsonl").values()) > 50
        )
        if not killed:
            assert rc == 0
        rows = check_store(store)
        assert len(rows) == len(ids)
        assert all(rows[("s-c", i)]["committed_at_epoch_ms"] is not None for i in ids[:50])
        manifest_reads(store)

        first = run(args(store), input=stdin)
        assert first.returncode == 0, f"trial {trial}: rerun failed: {first.stderr.decode()}"
        rows = check_store(store)
        assert all(r["committed_at_epoch_ms"] is not None for r in rows.values())
        assert set(rows) == {("s-c", i) for i in ids}
        snapshot = (blob_inodes(store), rows)

        second = run(args(store), input=stdin)
        assert second.returncode == 0
        assert {r["status"] for r in json.loads(second.stdout)} == {"already_committed"}
        assert (blob_inodes(store), fold_file(store / "manifest.jsonl")) == snapshot
        shutil.rmtree(store)
    report(
        f"crash/commit: {trials} trials, {landed} kills landed before exit "
        f"({applied} of them after the commit lines were durable)"
    )
    assert landed >= trials // 3


# -- torn appends, cut at every kind of offset -------------------------------------------
def test_torn_append_at_any_offset_is_tolerated_and_repaired(shm_path: Path) -> None:
    """Simulate a kill inside the one ``write`` of an append: cut the payload anywhere.

    Readers see the old state plus whole lines (a torn tail only warns);
    the next writer truncates the fragment and its own events land intact.
    """
    store = shm_path / "store"
    data = [f"torn {i}".encode() for i in range(6)]
    for i, body in enumerate(data):
        (shm_path / f"f{i}").write_bytes(body)
    result = run(["--store", str(store), "-q", "put", "-s", "a", *[str(shm_path / f"f{i}") for i in range(6)]])
    assert result.returncode == 0
    ids = result.stdout.decode().split()
    manifest = store / "manifest.jsonl"
    base = manifest.read_bytes()
    payload = b"".join(
        f'{{"op":"commit","attachment_id":"{i}","session_id":"a","committed_at_epoch_ms":{1764150002000 + n}}}\n'.encode()
        for n, i in enumerate(ids[:3])
    )
    rng = random.Random(SEED + 5)
    cuts = sorted(
        {0, 1, len(payload) - 1, len(payload)}
        | {rng.randrange(len(payload)) for _ in range(scaled(10, 60))}
        | {payload.index(b"\n") + k for k in (-1, 0, 1)}
    )
    for cut in cuts:
        manifest.write_bytes(base + payload[:cut])
        whole = payload[:cut].count(b"\n")
        listing = run(["--store", str(store), "--json", "list-uncommitted"])
        assert listing.returncode == 0, (cut, listing.stderr)
        # A complete last event lacking only its newline counts too.
        complete = whole + (1 if cut and payload[cut - 1 : cut] == b"}" else 0)
        assert len(json.loads(listing.stdout)) == 6 - complete, cut
        done = run(["--store", str(store), "-q", "commit", "-s", "a", ids[5]])
        assert done.returncode == 0, (cut, done.stderr)
        rows = check_store(store)
        log = read_log(manifest, strict=True)
        assert not log.torn_tail
        assert rows[("a", ids[5])]["committed_at_epoch_ms"] is not None
        assert sum(rows[("a", i)]["committed_at_epoch_ms"] is not None for i in ids[:3]) == complete
    report(f"crash/torn-append: {len(cuts)} cut offsets")


def test_stale_staging_files_are_never_taken_for_blobs(shm_path: Path) -> None:
    """Litter a kill leaves (``tmp/*.part``, lash-core's ``<final>.tmp``) is not a blob."""
    store = shm_path / "store"
    (shm_path / "f").write_bytes(b"real")
    result = run(["--store", str(store), "-q", "put", "-s", "a", str(shm_path / "f")])
    real = result.stdout.decode().strip()
    fake = sha(b"half-written")
    litter = blob_path(store, fake).with_name(fake + ".tmp")
    litter.parent.mkdir(parents=True, exist_ok=True)
    litter.write_bytes(b"half-wr")
    (store / "tmp" / "put-0123456789abcdef.part").write_bytes(b"partial")
    got = run(["--store", str(store), "get", "-o", "-", fake[:12]])
    assert got.returncode == 3, got.stderr
    one_line_error(got.stderr)
    result = run(["--store", str(store), "-q", "reclaim", "--force", "--older-than", "0s"])
    assert result.returncode == 0
    assert litter.read_bytes() == b"half-wr"  # not lashctl's to judge; certainly not a blob
    assert not blob_path(store, real).exists()


# -- manifest compaction -------------------------------------------------------------------
def test_sigkill_during_manifest_compact(shm_path: Path) -> None:
    """A killed compaction leaves the old log or the new one, never a torn or partial file."""
    if run(["manifest", "compact", "--help"]).returncode != 0:
        pytest.skip("this lashctl has no 'manifest compact'")
    template = shm_path / "template"
    rng = random.Random(SEED + 6)
    ids = [sha(f"compact {i}".encode()) for i in range(400)]
    events = []
    for n in range(20_000):
        attachment_id, session = rng.choice(ids), f"s{rng.randrange(5)}"
        kind = rng.random()
        if kind < 0.5:
            events.append(intent(attachment_id, session, 1_700_000_000_000 + rng.randrange(10**6)))
        elif kind < 0.8:
            events.append(commit(attachment_id, session, 1_700_000_000_000 + n))
        else:
            events.append({"op": "forget", "attachment_id": attachment_id, "session_id": session})
    write_manifest(template / "manifest.jsonl", events)
    expected = fold_file(template / "manifest.jsonl")
    args = lambda store: ["--store", str(store), "-q", "manifest", "compact"]
    calibrate = shm_path / "calibrate"
    shutil.copytree(template, calibrate)
    duration = timed(args(calibrate))
    compacted = (calibrate / "manifest.jsonl").read_bytes()
    startup = startup_seconds(shm_path)
    trials = scaled(12, 150)
    landed = replaced = litter = 0
    for trial in range(trials):
        store = shm_path / f"s{trial}"
        shutil.copytree(template, store)
        original = (store / "manifest.jsonl").read_bytes()
        killed, rc = kill_at_random(args(store), pick_delay(rng, startup, duration))
        landed += killed
        now = (store / "manifest.jsonl").read_bytes()
        assert now in (original, compacted), f"trial {trial}: the manifest is neither the old nor the new log"
        replaced += killed and now == compacted
        assert fold_file(store / "manifest.jsonl") == expected
        manifest_reads(store)
        litter += len([p for p in store.iterdir() if p.name.endswith(".part")])
        assert run(args(store)).returncode == 0
        assert (store / "manifest.jsonl").read_bytes() == compacted
        assert run(args(store)).returncode == 0
        assert (store / "manifest.jsonl").read_bytes() == compacted
        shutil.rmtree(store)
    report(
        f"crash/compact: {trials} trials, {landed} kills landed before exit "
        f"({replaced} after the rename); {litter} staging file(s) left beside the manifest"
    )
