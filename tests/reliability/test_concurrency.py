"""Concurrency: writers, committers, sweepers and readers racing on one store.

For a bounded time (default ~10 s; ``LASHCTL_LONG_TESTS=1``: 60 s) several
worker threads, each a distinct session, run the installed ``lashctl`` to put
overlapping content (a shared pool plus unique files) and commit some of the
ids right after each put; one sweeper runs ``reclaim --force`` with a cutoff of
now in a loop, and one reader ``get``s ids that were reported committed.

Afterwards: every (session, id) committed in the final fold has its blob,
hashing right; every commit a worker was told about is in the fold; the
manifest holds exactly the lines every writer appended (intents, commits and
forgets counted per writer), each a whole, valid event.

Also: the manifest lock. A process holding ``flock`` on ``<manifest>.lock``
makes writers exit 75 within their ``--lock-timeout``; a lock holder killed
with SIGKILL never leaves the store locked.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from reliability_helpers import (
    LONG,
    base_env,
    blob_files,
    blob_path,
    check_store,
    file_sha,
    find_lashctl,
    fold_file,
    intent,
    one_line_error,
    plant_blob,
    read_log,
    report,
    run,
    sha,
    shm_path,  # noqa: F401 (fixture)
    snapshot_tree,
    staging_litter,
    write_manifest,
)

pytestmark = pytest.mark.e2e

LASHCTL = find_lashctl()
DURATION_S = float(os.environ.get("LASHCTL_RACE_SECONDS", "60" if LONG else "10"))
WORKERS = 4
SEED = 4242


class Worker(threading.Thread):
    """One session: put a few shared files and one unique file, commit some ids."""

    def __init__(
        self, n: int, store: Path, shared: list[Path], scratch: Path, deadline: float, committed_log: list, errors: list
    ) -> None:
        super().__init__(name=f"worker-{n}", daemon=True)
        self.session = f"w{n}"
        self.store, self.shared, self.scratch, self.deadline = store, shared, scratch, deadline
        self.rng = random.Random(SEED + n)
        self.committed_log, self.errors = committed_log, errors
        self.intents = 0
        self.commits_reported = 0
        self.no_intent = 0
        self.already = 0
        self.ops = 0
        self.committed: set[tuple[str, str]] = set()

    def run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # noqa: BLE001 (reported to the test)
            self.errors.append(f"{self.name}: {exc!r}")

    def _loop(self) -> None:
        counter = 0
        while time.monotonic() < self.deadline:
            counter += 1
            unique = self.scratch / f"{self.session}-{counter}.bin"
            unique.write_bytes(
                f"{self.session} unique {counter} ".encode() + self.rng.randbytes(self.rng.randrange(1, 3000))
            )
            paths = self.rng.sample(self.shared, self.rng.randint(1, 4)) + [unique]
            self.rng.shuffle(paths)
            result = run(["--store", str(self.store), "-q", "put", "-s", self.session, *map(str, paths)])
            self.ops += 1
            assert result.returncode == 0, f"put failed: {result.returncode} {result.stderr!r}"
            ids = result.stdout.decode().split()
            assert ids == [file_sha(p) for p in paths], "put printed other ids"
            self.intents += len(paths)
            chosen = [i for i in ids if self.rng.random() < 0.6]
            if not chosen:
                continue
            result = run(["--store", str(self.store), "-q", "--json", "commit", "-s", self.session, *chosen])
            self.ops += 1
            # 3 = a sweep forgot the fresh intent first: legal with --force and a 0s cutoff.
            assert result.returncode in (0, 3), f"commit failed: {result.returncode} {result.stderr!r}"
            for record in json.loads(result.stdout):
                key = (record["session_id"], record["id"])
                if record["status"] == "committed":
                    self.commits_reported += 1
                    self.committed.add(key)
                    # The promise, checked at once: committed bytes are there and whole.
                    path = blob_path(self.store, record["id"])
                    assert path.is_file() and file_sha(path) == record["id"], (
                        f"committed {key} but its blob is missing or torn"
                    )
                    self.committed_log.append(record["id"])
                elif record["status"] == "already_committed":
                    self.already += 1
                else:
                    assert record["status"] == "no_intent", record
                    self.no_intent += 1


class Sweeper(threading.Thread):
    def __init__(self, store: Path, deadline: float, errors: list) -> None:
        super().__init__(name="sweeper", daemon=True)
        self.store, self.deadline, self.errors = store, deadline, errors
        self.sweeps = self.forgets = self.reclaimed = self.released = 0
        self.rng = random.Random(SEED * 7)

    def run(self) -> None:
        try:
            while time.monotonic() < self.deadline:
                if self.sweeps % 2:
                    cutoff = ["--before", str(time.time_ns() // 1_000_000)]
                else:
                    cutoff = ["--older-than", "0s"]
                result = run(["--store", str(self.store), "-q", "--json", "reclaim", "--force", *cutoff])
                assert result.returncode == 0, f"reclaim failed: {result.returncode} {result.stderr!r}"
                doc = json.loads(result.stdout)
                self.sweeps += 1
                for item in doc["items"]:
                    # spared: a put landed its bytes again after the cutoff (the sweep's clock)
                    assert item["action"] in ("reclaim", "release", "spared"), item
                    self.forgets += len(item["sessions"])
                self.reclaimed += doc["blobs_reclaimed"]
                self.released += doc["rows_released"]
                time.sleep(self.rng.uniform(0.0, 0.4))  # let some commits land between sweeps
        except BaseException as exc:  # noqa: BLE001
            self.errors.append(f"sweeper: {exc!r}")


class Reader(threading.Thread):
    """``get`` ids already reported committed: they must always come back whole."""

    def __init__(self, store: Path, deadline: float, committed_log: list, errors: list) -> None:
        super().__init__(name="reader", daemon=True)
        self.store, self.deadline, self.log, self.errors = store, deadline, committed_log, errors
        self.gets = self.lists = 0
        self.rng = random.Random(SEED - 1)

    def run(self) -> None:
        try:
            while time.monotonic() < self.deadline:
                if self.log:
                    attachment_id = self.rng.choice(self.log)
                    result = run(["--store", str(self.store), "get", "-o", "-", attachment_id])
                    self.gets += 1
                    assert result.returncode == 0, (
                        f"get of committed {attachment_id}: {result.returncode} {result.stderr!r}"
                    )
                    assert sha(result.stdout) == attachment_id
                result = run(["--store", str(self.store), "--json", "list-uncommitted"])
                self.lists += 1
                assert result.returncode == 0, f"list-uncommitted: {result.stderr!r}"
                json.loads(result.stdout)
                time.sleep(0.01)
        except BaseException as exc:  # noqa: BLE001
            self.errors.append(f"reader: {exc!r}")


def test_racing_puts_commits_sweeps_and_reads(shm_path: Path) -> None:
    store = shm_path / "store"
    (store / "sha256").mkdir(parents=True)  # an empty store: the sweeper may start before the first put
    scratch = shm_path / "src"
    scratch.mkdir()
    rng = random.Random(SEED)
    shared = []
    for i in range(12):
        path = scratch / f"shared{i}.bin"
        size = 200_000 if i < 2 else rng.randrange(10, 4000)
        path.write_bytes(f"shared {i} ".encode() + rng.randbytes(size))
        shared.append(path)
    deadline = time.monotonic() + DURATION_S
    errors: list[str] = []
    committed_log: list[str] = []
    workers = [Worker(n, store, shared, scratch, deadline, committed_log, errors) for n in range(WORKERS)]
    sweeper = Sweeper(store, deadline, errors)
    reader = Reader(store, deadline, committed_log, errors)
    threads = [*workers, sweeper, reader]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=DURATION_S + 120)
        assert not thread.is_alive(), f"{thread.name} is stuck"
    assert not errors, "\n".join(errors)

    # Every line is whole and valid, and there are exactly the lines writers appended.
    from lashctl.backends.manifests.jsonl.log import parse_line

    manifest = store / "manifest.jsonl"
    log = read_log(manifest, strict=True)
    for number, line in enumerate(log.lines, 1):
        parse_line(line, number, manifest)
    ops = Counter(e["op"] for e in log.events)
    assert ops["header"] == 1 and log.events[0]["op"] == "header"
    per_session = Counter((e["op"], e.get("session_id")) for e in log.events)
    for worker in workers:
        assert per_session[("intent", worker.session)] == worker.intents, worker.session
        # commit never lets its state cache skip a line: an id reported as already
        # committed gets a no-op commit line too, so there may be more lines than commits.
        assert per_session[("commit", worker.session)] >= worker.commits_reported, worker.session
    assert ops["forget"] == sweeper.forgets
    assert set(ops) <= {"header", "intent", "commit", "forget"}

    # No committed blob is ever missing; every reported commit is in the fold.
    rows = fold_file(manifest)
    reported = set().union(*(w.committed for w in workers))
    committed = {k for k, r in rows.items() if r["committed_at_epoch_ms"] is not None}
    assert reported <= committed, f"commits reported but not in the fold: {sorted(reported - committed)[:5]}"
    for session, attachment_id in committed:
        path = blob_path(store, attachment_id)
        assert path.is_file(), f"committed blob {attachment_id} of {session} is missing"
        assert file_sha(path) == attachment_id
    for attachment_id, path in blob_files(store).items():
        assert file_sha(path) == attachment_id

    # A quiet final sweep leaves exactly the committed content (plus unreferenced strays).
    result = run(["--store", str(store), "-q", "reclaim", "--force", "--older-than", "0s"])
    assert result.returncode == 0, result.stderr
    rows = fold_file(manifest)
    assert all(r["committed_at_epoch_ms"] is not None for r in rows.values())
    present = set(blob_files(store))
    needed = {aid for (_s, aid) in rows}
    assert needed <= present
    strays = present - needed
    total_ops = sum(w.ops for w in workers) + sweeper.sweeps + reader.gets + reader.lists + 1
    report(
        f"concurrency: {DURATION_S:g}s, {total_ops} lashctl runs "
        f"(puts+commits {sum(w.ops for w in workers)}, sweeps {sweeper.sweeps}, gets {reader.gets}, "
        f"lists {reader.lists}); intents {sum(w.intents for w in workers)}, commits {len(reported)}, "
        f"'no intent' after a sweep {sum(w.no_intent for w in workers)}, forgets {sweeper.forgets}, "
        f"blobs reclaimed {sweeper.reclaimed}; unreferenced blobs left {len(strays)}; "
        f"staging litter {len(staging_litter(store))}"
    )
    assert sum(w.ops for w in workers) >= WORKERS * 4, "the race barely ran"
    assert sweeper.sweeps >= 3


# -- the lock -------------------------------------------------------------------------
def _hold_lock(lock_path: Path) -> int:
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def _lock_is_free(lock_path: Path) -> bool:
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


@pytest.fixture
def small_store(shm_path: Path) -> tuple[Path, list[str], Path]:
    store = shm_path / "store"
    files = []
    for i in range(3):
        path = shm_path / f"in{i}"
        path.write_bytes(f"lock test {i}".encode())
        files.append(str(path))
    result = run(["--store", str(store), "-q", "put", "-s", "s", *files])
    assert result.returncode == 0
    ids = result.stdout.decode().split()
    assert run(["--store", str(store), "-q", "commit", "-s", "s", ids[0]]).returncode == 0
    extra = shm_path / "extra"
    extra.write_bytes(b"put while locked")
    return store, ids, extra


def test_held_lock_makes_writers_exit_75_in_bounded_time(small_store) -> None:
    store, ids, extra = small_store
    lock = store / "manifest.jsonl.lock"
    fd = _hold_lock(lock)
    try:
        before = snapshot_tree(store)
        for args in (
            ["commit", "-s", "s", ids[1]],
            ["put", "-s", "s", str(extra)],
            ["reclaim", "--force", "--older-than", "0s"],
            ["delete", "--force", ids[2]],
        ):
            started = time.monotonic()
            result = run(["--store", str(store), "--lock-timeout", "0.3", *args], timeout=30)
            elapsed = time.monotonic() - started
            assert result.returncode == 75, (args, result.returncode, result.stderr)
            assert "lock" in one_line_error(result.stderr)
            assert elapsed < 3.0, f"{args[0]} took {elapsed:.2f}s to give up a 0.3s lock wait"
            assert snapshot_tree(store) == before, f"{args[0]} changed the store without the lock"
            assert staging_litter(store) == []
        # A read never needs the lock.
        assert run(["--store", str(store), "list-uncommitted"], timeout=10).returncode == 0
        assert run(["--store", str(store), "get", "-o", "-", ids[0]], timeout=10).returncode == 0
    finally:
        os.close(fd)
    result = run(["--store", str(store), "--lock-timeout", "0.3", "commit", "-s", "s", ids[1]])
    assert result.returncode == 0, result.stderr


HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(600)
"""


def test_sigkilled_lock_holder_never_leaves_the_store_locked(small_store) -> None:
    store, ids, extra = small_store
    lock = store / "manifest.jsonl.lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock)], stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline() == b"locked\n"
        blocked = run(["--store", str(store), "--lock-timeout", "0.2", "commit", "-s", "s", ids[1]])
        assert blocked.returncode == 75
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
    started = time.monotonic()
    result = run(["--store", str(store), "--lock-timeout", "5", "put", "-s", "s", str(extra)])
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert elapsed < 2.0, f"put after a killed holder took {elapsed:.2f}s: the lock outlived its holder"


def test_sigkilled_lashctl_inside_its_locked_section_releases_the_lock(shm_path: Path) -> None:
    """Freeze a real ``reclaim`` while it holds the lock, SIGKILL it, write at once."""
    store = shm_path / "store"
    rows = []
    for i in range(3000):
        attachment_id = plant_blob(store, f"orphan {i}".encode())
        rows.append(intent(attachment_id, "old", 1_000_000 + i))
    write_manifest(store / "manifest.jsonl", rows)
    lock = store / "manifest.jsonl.lock"
    caught = False
    for _attempt in range(20):
        proc = subprocess.Popen(
            [LASHCTL, "--store", str(store), "-q", "reclaim", "--force", "--older-than", "0s"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=base_env(),
        )
        try:
            while proc.poll() is None:
                if not _lock_is_free(lock):
                    proc.send_signal(signal.SIGSTOP)
                    if not _lock_is_free(lock):
                        caught = True
                        break
                    proc.send_signal(signal.SIGCONT)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        if caught:
            break
        # The sweep finished before we caught it: give it more to do.
        for i in range(3000):
            attachment_id = plant_blob(store, f"orphan {_attempt} {i}".encode())
            rows.append(intent(attachment_id, "old", 1_000_000 + i))
        write_manifest(store / "manifest.jsonl", rows)
    if not caught:
        pytest.skip("never caught reclaim inside its locked section")
    assert _lock_is_free(lock), "a SIGKILLed lashctl left the manifest locked"
    check_store(store)
    (shm_path / "after").write_bytes(b"after the kill")
    started = time.monotonic()
    result = run(["--store", str(store), "--lock-timeout", "5", "put", "-s", "s", str(shm_path / "after")])
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 2.0
    result = run(["--store", str(store), "-q", "reclaim", "--force", "--older-than", "0s"])
    assert result.returncode == 0, result.stderr
    assert set(blob_files(store)) == set(), "the rerun sweep left orphans"


# -- the same race, with compaction and gc in the mix ------------------------------------------
RACE2_S = float(os.environ.get("LASHCTL_RACE2_SECONDS", "40" if LONG else "6"))


def _has_command(*words: str) -> bool:
    return run([*words, "--help"]).returncode == 0


class Maintainer(threading.Thread):
    """Cycles ``manifest compact``, ``gc`` (10 s grace) and ``reclaim --force``."""

    def __init__(self, store: Path, deadline: float, errors: list) -> None:
        super().__init__(name="maintainer", daemon=True)
        self.store, self.deadline, self.errors = store, deadline, errors
        self.counts = Counter()
        self.gc_deleted = 0

    def run(self) -> None:
        try:
            n = 0
            while time.monotonic() < self.deadline:
                kind = ("compact", "gc", "reclaim")[n % 3]
                n += 1
                if kind == "compact":
                    result = run(["--store", str(self.store), "-q", "manifest", "compact"])
                elif kind == "gc":
                    before = str(time.time_ns() // 1_000_000 - 10_000)
                    result = run(["--store", str(self.store), "-q", "--json", "gc", "--force", "--before", before])
                    if result.returncode == 0:
                        self.gc_deleted += json.loads(result.stdout)["blobs_deleted"]
                else:
                    result = run(["--store", str(self.store), "-q", "reclaim", "--force", "--older-than", "0s"])
                assert result.returncode == 0, f"{kind} failed: {result.returncode} {result.stderr!r}"
                self.counts[kind] += 1
                time.sleep(0.05)
        except BaseException as exc:  # noqa: BLE001
            self.errors.append(f"maintainer: {exc!r}")


def test_race_with_compaction_and_gc(shm_path: Path) -> None:
    if not (_has_command("manifest", "compact") and _has_command("gc")):
        pytest.skip("this lashctl has no 'manifest compact' / 'gc'")
    store = shm_path / "store"
    scratch = shm_path / "src"
    scratch.mkdir()
    rng = random.Random(SEED + 99)
    shared = []
    day_ago = time.time() - 86_400
    for i in range(10):
        path = scratch / f"shared{i}.bin"
        path.write_bytes(f"shared {i} ".encode() + rng.randbytes(rng.randrange(10, 3000)))
        shared.append(path)
        # Every shared content starts as an old, unreferenced blob: gc's prey, and put's dedup target.
        attachment_id = plant_blob(store, path.read_bytes())
        os.utime(blob_path(store, attachment_id), (day_ago, day_ago))
    (store / "tmp").mkdir(parents=True, exist_ok=True)
    litter = store / "tmp" / "put-00000000deadbeef.part"
    litter.write_bytes(b"old litter")
    os.utime(litter, (day_ago, day_ago))
    write_manifest(store / "manifest.jsonl", [])
    deadline = time.monotonic() + RACE2_S
    errors: list[str] = []
    committed_log: list[str] = []
    workers = [Worker(n + 10, store, shared, scratch, deadline, committed_log, errors) for n in range(3)]
    maintainer = Maintainer(store, deadline, errors)
    threads = [*workers, maintainer]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=RACE2_S + 120)
        assert not thread.is_alive(), f"{thread.name} is stuck"
    assert not errors, "\n".join(errors)

    from lashctl.backends.manifests.jsonl.log import parse_line

    manifest = store / "manifest.jsonl"
    log = read_log(manifest, strict=True)
    for number, line in enumerate(log.lines, 1):
        parse_line(line, number, manifest)
    assert [e["op"] for e in log.events].count("header") == 1
    rows = fold_file(manifest)
    reported = set().union(*(w.committed for w in workers))
    committed = {k for k, r in rows.items() if r["committed_at_epoch_ms"] is not None}
    assert reported <= committed, f"commits lost by compaction/gc: {sorted(reported - committed)[:5]}"
    for session, attachment_id in committed:
        path = blob_path(store, attachment_id)
        assert path.is_file() and file_sha(path) == attachment_id, f"committed blob {attachment_id} of {session} lost"
    assert not litter.exists(), "gc left old staging litter"
    report(
        f"concurrency+compaction+gc: {RACE2_S:g}s, worker runs {sum(w.ops for w in workers)}, "
        f"maintenance runs {dict(maintainer.counts)}, gc deleted {maintainer.gc_deleted} blob(s), "
        f"commits {len(reported)}"
    )
