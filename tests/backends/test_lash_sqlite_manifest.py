"""lash's SQLite session databases as the manifest (``--manifest lash-sqlite:DIR``).

Session databases are built as lash-sqlite-store builds them
(tests/lash_sqlite_fixture.py), with a sidecar database and WAL files beside
them that lashctl must skip, and every command runs through the installed
``lashctl``.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
from pathlib import Path

import pytest
from conftest import blob_path, sha
from lash_sqlite_fixture import (
    commit,
    intent,
    litter_beside,
    make_process_registry,
    make_session_db,
    rows,
    turn_committed,
)
from reliability_helpers import find_lashctl, one_line_error, run

from lashctl.backends.manifests.lash_sqlite import SWEEP_LOCK, is_primary_db_name, session_db_name

pytestmark = pytest.mark.e2e

DAY_MS = 86_400_000
OLD_S = 1_600_000_000  # 2020-09-13: long before any cutoff
HOST_DB = "20260710_011120.db"  # a host's own name for a session's database
UNWIRED = "(lash keeps process-owned intents unless its process registry is named: --process-registry)"


class Lash:
    """A store directory and a sessions directory of lash's SQLite databases."""

    def __init__(self, tmp_path: Path) -> None:
        self.root = tmp_path / "store"
        self.sessions = tmp_path / "sessions"
        self.inputs = tmp_path / "inputs"
        self.inputs.mkdir()
        self.alpha = make_session_db(self.sessions, "alpha")
        self.beta = make_session_db(self.sessions, "beta")
        self.host = make_session_db(self.sessions, "host session", name=HOST_DB)
        self.litter = litter_beside(self.sessions, self.alpha)

    def lashctl(self, *args: str) -> "subprocess.CompletedProcess":  # noqa: F821
        return run(["--store", str(self.root), "--manifest", f"lash-sqlite:{self.sessions}", *args])

    def ok(self, *args: str):
        result = self.lashctl(*args)
        assert result.returncode == 0, result.stderr.decode()
        assert b"Traceback" not in result.stderr
        return result

    def put(self, data: bytes, session: str) -> str:
        path = self.inputs / f"input-{len(list(self.inputs.iterdir()))}"
        path.write_bytes(data)
        return self.ok("put", "-s", session, str(path)).stdout.decode().strip()

    def aged(self, data: bytes, db: Path, session: str, owner: tuple[str, str] | None = None) -> str:
        """Bytes put three days ago for ``session``, never committed, owned as lash records it."""
        attachment_id = self.put(data, session)
        intent(db, session, attachment_id, self.now_ms() - 3 * DAY_MS, owner)
        os.utime(blob_path(self.root, attachment_id), (OLD_S, OLD_S))
        return attachment_id

    @staticmethod
    def now_ms() -> int:
        import time

        return int(time.time() * 1000)

    def reclaim(self, *options: str, dry_run: bool) -> dict[str, str]:
        result = self.ok(*options, "--json", "reclaim", *(["--dry-run"] if dry_run else []))
        return {i["id"]: i["action"] for i in json.loads(result.stdout)["items"]}

    def verdict(self, attachment_id: str, *options: str) -> str:
        lines = self.ok(*options, "show", attachment_id).stdout.decode().splitlines()
        return next(line for line in lines if line.startswith("verdict:"))

    def databases(self) -> list[str]:
        """The databases in the sessions directory (a read-only reader of a WAL
        database may leave SQLite's -wal and -shm files, as lash's own do)."""
        return sorted(p.name for p in self.sessions.iterdir() if p.name.endswith(".db"))


@pytest.fixture
def lash(tmp_path: Path) -> Lash:
    return Lash(tmp_path)


def test_lashs_names_for_session_databases():
    digest = "8ed3f6ad685b959e"  # sha256("alpha")[:16]
    assert session_db_name("alpha") == f"alpha-{digest}.db"
    assert session_db_name("a/b c.d") == f"a_b_c_d-{__import__('hashlib').sha256(b'a/b c.d').hexdigest()[:16]}.db"
    assert session_db_name("__é__").startswith("session-")  # nothing left once trimmed
    assert session_db_name("x" * 100).startswith("x" * 80 + "-")
    assert [
        n
        for n in ("a.db", HOST_DB, "a.db.effects.db", "a.db-wal", "a.db-shm", ".lashctl-sweep.lock", ".db")
        if is_primary_db_name(n)
    ] == ["a.db", HOST_DB]


def test_put_commit_and_listings_span_every_session_database(lash):
    shared = lash.put(b"the same bytes in two sessions", "alpha")
    assert lash.put(b"the same bytes in two sessions", "beta") == shared
    own = lash.put(b"only the host's session", "host session")  # found by its session_meta
    lash.ok("commit", "-s", "alpha", shared[:12])
    assert [(r[0], r[1], r[3] is not None) for r in rows(lash.alpha)] == [("alpha", shared, True)]
    assert [(r[0], r[1], r[3]) for r in rows(lash.beta)] == [("beta", shared, None)]
    assert [(r[0], r[1]) for r in rows(lash.host)] == [("host session", own)]

    listed = json.loads(lash.ok("--json", "list-uncommitted").stdout)
    assert sorted((r["id"], r["session_id"]) for r in listed) == sorted([(shared, "beta"), (own, "host session")])
    ls = {e["id"]: e for e in json.loads(lash.ok("--json", "ls").stdout)}
    assert sorted(ls) == sorted([shared, own])
    assert sorted(ls[shared]["sessions"]) == ["alpha", "beta"]
    stats = json.loads(lash.ok("--json", "stats").stdout)
    assert (stats["rows_committed"], stats["rows_uncommitted"]) == (1, 2)
    assert "rows:       2" in lash.ok("show", shared).stdout.decode()
    lash.ok("verify")
    # The sidecar database and the WAL files were never opened, let alone changed.
    for path in lash.litter:
        assert path.read_bytes() == b"not a session database\n" * 50


def test_a_session_without_a_database_is_a_usage_error(lash):
    before = lash.databases()
    data = lash.inputs / "data"
    data.write_bytes(b"bytes for a session lash never opened")
    for args in (("put", "-s", "nobody", str(data)), ("commit", "-s", "nobody", "ab" * 32)):
        result = lash.lashctl(*args)
        assert result.returncode == 2, result.stderr.decode()
        line = one_line_error(result.stderr)
        assert "session 'nobody' has no session database" in line and session_db_name("nobody") in line, line
    assert lash.databases() == before  # no database created
    assert not blob_path(lash.root, sha(data.read_bytes())).exists()


def test_reclaim_applies_lashs_owner_rules(lash, tmp_path):
    old = lash.now_ms() - 3 * DAY_MS
    plain = lash.aged(b"no owner", lash.alpha, "alpha")
    turn_dead = lash.aged(b"a turn another turn outlived", lash.alpha, "alpha", ("turn", "t1"))
    turn_live = lash.aged(b"the latest turn's upload", lash.beta, "beta", ("turn", "t9"))
    process = lash.aged(b"a process upload", lash.beta, "beta", ("process", "p-gone"))
    running = lash.aged(b"a running process upload", lash.beta, "beta", ("process", "p-live"))
    released = lash.aged(b"aged here, committed there", lash.alpha, "alpha")
    lash.put(b"aged here, committed there", "host session")
    lash.ok("commit", "-s", "host session", released)
    turn_committed(lash.alpha, "alpha", "t2", old + 1000)  # another turn committed after t1's intent
    turn_committed(lash.beta, "beta", "t9", old + 1000)  # t9 itself: proves nothing
    registry = make_process_registry(tmp_path / "processes.db", ["p-live"])

    expected = {plain: "reclaim", turn_dead: "reclaim", released: "release"}
    assert lash.reclaim(dry_run=True) == expected
    assert lash.verdict(process) == f"verdict:    kept: owned by process p-gone {UNWIRED}"
    assert lash.verdict(turn_live).startswith("verdict:    kept: owner turn t9 not proven dead")
    wired = ("--process-registry", str(registry))
    assert lash.reclaim(*wired, dry_run=True) == {**expected, process: "reclaim"}
    assert lash.verdict(running, *wired) == (
        f"verdict:    kept: owner process p-live is still registered in {registry}"
    )
    assert all(blob_path(lash.root, i).exists() for i in expected)  # a dry run changes nothing
    assert len(rows(lash.alpha)) == 3

    assert lash.reclaim(*wired, dry_run=False) == {**expected, process: "reclaim"}
    for gone in (plain, turn_dead, process):
        assert not blob_path(lash.root, gone).exists()
    for kept in (turn_live, running, released):
        assert blob_path(lash.root, kept).exists()
    assert rows(lash.alpha) == []  # released: alpha's aged row is forgotten, the bytes stay for the host
    assert [(r[1], r[5]) for r in rows(lash.beta)] == sorted([(turn_live, "t9"), (running, "p-live")])
    assert [(r[1], r[3] is not None) for r in rows(lash.host)] == [(released, True)]
    for path in lash.litter:
        assert path.read_bytes() == b"not a session database\n" * 50


def test_gc_delete_and_forget_work_on_session_databases(lash):
    from reliability_helpers import plant_blob

    kept = lash.put(b"bytes with a row", "alpha")
    stray = plant_blob(lash.root, b"bytes without rows")
    os.utime(blob_path(lash.root, stray), (OLD_S, OLD_S))
    os.utime(blob_path(lash.root, kept), (OLD_S, OLD_S))
    assert [i["path"] for i in json.loads(lash.ok("--json", "gc", "--dry-run").stdout)["items"]] == [
        str(blob_path(lash.root, stray))
    ]
    assert blob_path(lash.root, stray).exists()
    lash.ok("gc")
    assert not blob_path(lash.root, stray).exists() and blob_path(lash.root, kept).exists()

    refused = lash.lashctl("delete", kept)
    assert refused.returncode == 4 and "by session(s) alpha" in one_line_error(refused.stderr)
    lash.ok("delete", "--force", kept)  # its uncommitted intent is forgotten with the bytes
    assert not blob_path(lash.root, kept).exists() and rows(lash.alpha) == []

    committed = lash.put(b"committed bytes", "beta")
    lash.ok("commit", "-s", "beta", committed)
    lash.ok("forget", "-s", "beta", committed)
    assert rows(lash.beta) == [] and blob_path(lash.root, committed).exists()


@pytest.mark.parametrize("damage", ["garbage", "version"])
def test_an_unreadable_session_database_stops_a_sweep(lash, damage):
    orphan = lash.aged(b"would be reclaimed", lash.alpha, "alpha")
    if damage == "garbage":
        lash.beta.write_bytes(b"this is not a SQLite database at all\n" * 100)
        needle = "could not be opened or read"
    else:
        conn = sqlite3.connect(lash.beta)
        conn.execute("PRAGMA user_version = 11")
        conn.close()
        needle = "lash schema version 11"
    for args in (("reclaim",), ("reclaim", "--dry-run"), ("gc",), ("ls",)):
        result = lash.lashctl(*args)
        assert result.returncode == 65, (args, result.stderr.decode())
        line = one_line_error(result.stderr)
        assert str(lash.beta) in line and needle in line, line
    assert blob_path(lash.root, orphan).exists()
    assert [r[1] for r in rows(lash.alpha)] == [orphan]


def test_one_sweep_at_a_time(lash):
    lash.aged(b"an orphan", lash.alpha, "alpha")
    fd = os.open(lash.sessions / SWEEP_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        result = lash.lashctl("--lock-timeout", "0.2", "reclaim")
        assert result.returncode == 75, result.stderr.decode()
        assert "another sweep holds it" in one_line_error(result.stderr)
        lash.ok("--lock-timeout", "0.2", "reclaim", "--dry-run")  # a dry run takes no lock
    finally:
        os.close(fd)
    assert lash.reclaim(dry_run=False) != {}


def test_a_lash_writer_holding_a_session_database_makes_a_commit_wait_then_time_out(lash):
    attachment_id = lash.put(b"to commit", "alpha")
    writer = sqlite3.connect(lash.alpha, isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")
        result = lash.lashctl("--lock-timeout", "0.2", "commit", "-s", "alpha", attachment_id)
        assert result.returncode == 75, result.stderr.decode()
        assert str(lash.alpha) in one_line_error(result.stderr)
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    lash.ok("commit", "-s", "alpha", attachment_id)
    assert rows(lash.alpha)[0][3] is not None


def test_process_registry_values(lash, tmp_path):
    lash.put(b"bytes", "alpha")
    for value, code, needle in (
        (str(tmp_path / "none.db"), 2, "is not a file"),
        ("table", 2, "give the path of lash's SQLite process registry file"),
    ):
        result = lash.lashctl("--process-registry", value, "reclaim", "-n")
        assert result.returncode == code, result.stderr.decode()
        assert needle in one_line_error(result.stderr)
    not_registry = tmp_path / "other.db"
    sqlite3.connect(not_registry).execute("CREATE TABLE t (x)").connection.close()
    result = lash.lashctl("--process-registry", str(not_registry), "reclaim", "-n")
    assert result.returncode == 2 and "has no table processes" in one_line_error(result.stderr)
    jsonl = run(
        ["--store", str(tmp_path / "plain"), "--process-registry", str(not_registry), "put", "-s", "s", "-"],
        input=b"bytes",
    )
    assert jsonl.returncode == 2 and "lash-sqlite:DIR" in one_line_error(jsonl.stderr)


def test_manifest_check_reads_every_session_database(lash):
    shared = lash.put(b"in two sessions", "alpha")
    lash.put(b"in two sessions", "beta")
    lash.ok("commit", "-s", "beta", shared)
    report = json.loads(lash.ok("--json", "manifest", "check").stdout)
    assert {k: report[k] for k in ("valid", "databases", "rows", "rows_committed", "problems")} == {
        "valid": True,
        "databases": 3,
        "rows": 2,
        "rows_committed": 1,
        "problems": [],
    }
    assert report["skipped"] >= len(lash.litter)
    lash.host.write_bytes(b"garbage, not SQLite\n" * 100)
    result = lash.lashctl("manifest", "check")
    assert result.returncode == 65
    errors = [line for line in result.stderr.decode().splitlines() if line.startswith("lashctl: error:")]
    assert errors == [
        f"lashctl: error: session database {lash.host} could not be opened or read: file is not a database",
        f"lashctl: error: 1 problem(s) in lash-sqlite:{lash.sessions}",
    ]
    refused = lash.lashctl("manifest", "log")
    assert refused.returncode == 2 and "lash's SQLite session databases" in one_line_error(refused.stderr)


def test_verify_reports_an_unreadable_session_database(lash):
    attachment_id = lash.put(b"bytes", "alpha")
    lash.beta.write_bytes(b"garbage, not SQLite\n" * 100)
    result = lash.lashctl("--json", "verify")
    assert result.returncode == 65, result.stderr.decode()
    findings = json.loads(result.stdout)["findings"]
    assert [(f["kind"], str(lash.beta) in f["message"]) for f in findings] == [("manifest-corrupt", True)]
    assert blob_path(lash.root, attachment_id).exists()


def test_a_sweep_rechecks_the_live_databases_not_its_snapshot(tmp_path):
    from lashctl.backends.manifests.lash_sqlite import LashSqliteManifest
    from lashctl.fold import Event

    sessions = tmp_path / "sessions"
    alpha = make_session_db(sessions, "alpha")
    a = "a" * 64
    intent(alpha, "alpha", a, 1000)
    manifest = LashSqliteManifest(f"lash-sqlite:{sessions}", lock_timeout=5)
    with manifest.sweeping() as sweep:
        assert [g[0].attachment_id for g in sweep.aged(5000)] == [a]
        commit(alpha, "alpha", a, 2000)  # lash commits while the sweep runs
        gamma = make_session_db(sessions, "gamma")  # and opens a new session that takes the same bytes
        intent(gamma, "gamma", a, 1500)
        assert [(r.session_id, r.committed_at_epoch_ms) for r in sweep.rows_for_ids([a])[a]] == [
            ("alpha", 2000),
            ("gamma", None),
        ]
        assert [r.session_id for g in sweep.aged(5000) for r in g] == ["alpha"]  # the snapshot, as planned
        sweep.append([Event.forget(a, "alpha", until_ms=5000)])  # guarded: the commit keeps the row
    assert rows(alpha) == [("alpha", a, 1000, 2000, None, None)]
    assert rows(gamma) == [("gamma", a, 1500, None, None, None)]


def test_a_commit_by_prefix_for_a_host_named_session_without_rows_is_not_found(lash):
    attachment_id = lash.put(b"alpha's bytes", "alpha")
    result = lash.lashctl("commit", "-s", "host session", attachment_id[:10])  # resolving reads every database
    assert result.returncode == 3, result.stderr.decode()
    assert rows(lash.host) == []


def test_migrate_copies_rows_out_of_lashs_session_databases(lash, tmp_path):
    shared = lash.put(b"in two sessions", "alpha")
    lash.put(b"in two sessions", "beta")
    lash.ok("commit", "-s", "alpha", shared)
    lash.ok("migrate", "--to-store", str(tmp_path / "copy"))
    copied = json.loads(run(["--store", str(tmp_path / "copy"), "--json", "ls"]).stdout)
    assert [(e["id"], sorted(e["sessions"]), e["state"]) for e in copied] == [(shared, ["alpha", "beta"], "committed")]


def test_a_session_database_lash_deletes_during_a_sweep_holds_no_rows(tmp_path, monkeypatch):
    from lashctl.backends.manifests.lash_sqlite import LashSqliteManifest

    sessions = tmp_path / "sessions"
    alpha = make_session_db(sessions, "alpha")
    a = "a" * 64
    intent(alpha, "alpha", a, 1000)
    gone = sessions / session_db_name("deleted")  # listed, then deleted by lash before it is opened
    listed = LashSqliteManifest.primaries
    monkeypatch.setattr(LashSqliteManifest, "primaries", lambda self: [*listed(self), str(gone)])
    manifest = LashSqliteManifest(f"lash-sqlite:{sessions}", lock_timeout=5)
    with manifest.sweeping() as sweep:
        assert [r.session_id for g in sweep.aged(5000) for r in g] == ["alpha"]
        assert [r.session_id for r in sweep.rows_for_ids([a])[a]] == ["alpha"]
    assert not gone.exists()


def test_delete_refuses_while_a_session_database_holds_a_row_it_cannot_read(lash):
    """A row whose id is upper case may name the very blob being deleted:
    delete stops (exit 65) naming the database, and nothing is deleted."""
    attachment_id = lash.put(b"committed elsewhere", "alpha")
    intent(lash.beta, "beta", attachment_id.upper(), 1000)
    commit(lash.beta, "beta", attachment_id.upper(), 2000)
    result = lash.lashctl("delete", "--force", attachment_id)
    assert result.returncode == 65, result.stderr.decode()
    line = one_line_error(result.stderr)
    assert str(lash.beta) in line and attachment_id.upper() in line, line
    assert blob_path(lash.root, attachment_id).exists()
    assert [r[1] for r in rows(lash.alpha)] == [attachment_id]


def test_an_empty_database_lash_is_creating_holds_no_rows(lash):
    (lash.sessions / session_db_name("starting")).write_bytes(b"")  # opened by lash, schema not yet written
    orphan = lash.aged(b"an orphan", lash.alpha, "alpha")
    assert json.loads(lash.ok("--json", "stats").stdout)["rows_uncommitted"] == 1
    assert lash.reclaim(dry_run=False) == {orphan: "reclaim"}
    result = lash.lashctl("put", "-s", "starting", str(lash.inputs / "input-0"))
    assert result.returncode == 2 and "not initialised yet" in one_line_error(result.stderr)


def test_a_sweep_beside_a_busy_lash_writer(lash):
    """lash writes to its session databases all through a sweep: the sweep
    waits for its locks (never longer than the busy timeout) and neither
    side fails."""
    import threading

    orphans = [lash.aged(b"orphan %d" % n, lash.beta, "beta") for n in range(5)]
    stop, errors, written = threading.Event(), [], []

    def lash_writer() -> None:
        n = 0
        try:
            while not stop.is_set():
                aid = f"{n:064x}"
                for db, session in ((lash.alpha, "alpha"), (lash.beta, "beta")):  # beta: the sweep's too
                    intent(db, session, aid, lash.now_ms())
                    commit(db, session, aid, lash.now_ms())
                written.append(aid)
                n += 1
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    thread = threading.Thread(target=lash_writer)
    thread.start()
    try:
        assert lash.reclaim(dry_run=False) == {i: "reclaim" for i in orphans}
    finally:
        stop.set()
        thread.join(30)
    assert errors == [] and written
    for db in (lash.alpha, lash.beta):  # every row lash wrote is there, committed; the orphans' rows are gone
        assert [(r[1], r[3] is not None) for r in rows(db)] == [(aid, True) for aid in sorted(written)]


def test_manifest_init_says_lash_creates_session_databases(lash):
    before = lash.databases()
    result = lash.lashctl("manifest", "init")
    assert result.returncode == 2
    assert "lash's SQLite session databases, which lash creates" in one_line_error(result.stderr)
    assert lash.databases() == before


def test_a_process_registry_of_another_schema_version_is_refused(lash, tmp_path):
    lash.aged(b"a process upload", lash.beta, "beta", ("process", "p-gone"))
    registry = make_process_registry(tmp_path / "processes.db", [], version=11)
    result = lash.lashctl("--process-registry", str(registry), "reclaim")
    assert result.returncode == 65, result.stderr.decode()
    assert "schema version 11" in one_line_error(result.stderr)
    assert len(rows(lash.beta)) == 1


def test_migrate_to_lashs_postgresql_table_resumes_after_a_kill(lash, tmp_path, pg_url):
    """The path a growing deployment takes: lash's SQLite sessions to lash's
    PostgreSQL table, killed after its bytes were copied, then run again."""
    import os
    import subprocess

    shared = lash.put(b"in two sessions", "alpha")
    lash.put(b"in two sessions", "beta")
    own = lash.put(b"alpha's own", "alpha")
    lash.ok("commit", "-s", "alpha", shared)
    copy = ["--to-store", str(tmp_path / "copy"), "--to-manifest", pg_url]
    assert run(["--store", str(tmp_path / "copy"), "--manifest", pg_url, "manifest", "init"]).returncode == 0
    env = {**os.environ, "LASHCTL_FAULT": "migrate.copied"}
    killed = subprocess.run(
        [find_lashctl(), "--store", str(lash.root), "--manifest", f"lash-sqlite:{lash.sessions}", "migrate", *copy],
        capture_output=True,
        env=env,
        timeout=60,
    )
    assert killed.returncode == -9
    lash.ok("migrate", *copy)
    listed = json.loads(run(["--store", str(tmp_path / "copy"), "--manifest", pg_url, "--json", "ls"]).stdout)
    assert sorted((e["id"], sorted(e["sessions"]), e["state"]) for e in listed) == sorted(
        [(shared, ["alpha", "beta"], "committed"), (own, ["alpha"], "uncommitted")]
    )
    assert run(["--store", str(tmp_path / "copy"), "--manifest", pg_url, "verify"]).returncode == 0
