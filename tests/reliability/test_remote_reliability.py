"""Reliability on the remote backends: an S3 bucket (moto) and lash's PostgreSQL table.

End to end: the installed ``lashctl`` runs in subprocesses with
``--store s3://BUCKET/lash --manifest postgresql://...``; boto3 and psycopg
read (and, as lash would, write) the bucket and the table behind its back.

1. SIGKILL at random instants (seeded) during a batch ``put``, a ``commit``
   and a ``reclaim``. After each kill: no committed row's bytes are missing;
   every object under ``sha256/`` that has a row hashes to its id; a rerun
   completes; ``verify`` finds no error (warnings only: litter, unmanaged
   objects, intents without bytes).
2. A lash-style writer (intent rows straight into ``lash_attachment_manifest``,
   some with an owner, then a re-PUT of the object, then the commit) races
   ``reclaim --force --before CUTOFF`` run in a loop while aged orphans keep
   appearing. Afterwards every committed row has its bytes, except ids a sweep
   reported as ``deleted_while_referenced`` with exit 5 (never silently);
   re-uploading those, as the report says, heals the store.
3. The PostgreSQL server is stopped (``pg_ctl stop -m fast``) in the middle of
   a sweep over a few thousand orphans: the sweep fails cleanly (one line,
   exit 69, no traceback), nothing committed is lost, and after a restart a
   rerun completes. A dedicated server: the session's shared one stays up.
4. Misconfiguration, for ``put``, ``ls``, ``reclaim`` and ``list-uncommitted``:
   refused S3 credentials (77), a missing bucket (2), a missing table (2,
   naming ``manifest init``), a wrong password (77), an S3 endpoint or a
   PostgreSQL server that does not answer (69). One line on stderr, no
   traceback, nothing created (no object, no row, no table, no temporary file).

The slowest cases carry the ``slow`` marker: CI runs them (no skips there);
``-m "not slow"`` leaves them out of a quick local run.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import servers
from reliability_helpers import LASHCTL_ENV, find_lashctl, one_line_error, report
from conftest import sha

pytestmark = pytest.mark.e2e

LASHCTL = find_lashctl()
SEED = int(os.environ.get("LASHCTL_CRASH_SEED", "20261127"))
DAY = 86_400_000
TABLE = "lash_attachment_manifest"
PREFIX = "lash"
# Warnings a killed command may legitimately leave for verify to mention.
TOLERATED_WARNINGS = {"unmanaged", "uncommitted-bytes-missing", "staging", "orphan-sidecar", "stray"}


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def iso(ms: int) -> str:
    return f"@{ms // 1000}"


def lash_env(**extra: str) -> dict[str, str]:
    """The test's environment (AWS_* from the fixtures) without an operator's LASHCTL_*."""
    env = {k: v for k, v in os.environ.copy().items() if k not in LASHCTL_ENV}
    env.update({"COLUMNS": "100", "NO_COLOR": "1"})
    env.update(extra)
    return env


def run(
    args: list[str], *, input: bytes | None = None, env: dict | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [LASHCTL, *args],
        input=input if input is not None else b"",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env if env is not None else lash_env(),
        timeout=timeout,
    )


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr.decode(errors='replace')}"
    return result


# -- a remote store: a bucket and a database -------------------------------------------
@dataclass
class Remote:
    endpoint: str
    bucket: str
    db_url: str
    client: object = field(repr=False, default=None)

    @property
    def store(self) -> str:
        return f"s3://{self.bucket}/{PREFIX}"

    def args(self, *rest: str) -> list[str]:
        return ["--store", self.store, "--manifest", self.db_url, *rest]

    def key(self, attachment_id: str, sidecar: bool = False) -> str:
        return f"{PREFIX}/sha256/{attachment_id[:2]}/{attachment_id}" + (".json" if sidecar else "")

    # the bucket, behind lashctl's back
    def objects(self) -> dict[str, dict]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket)
        return {o["Key"]: o for page in pages for o in page.get("Contents", [])}

    def body(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def put_object(self, data: bytes) -> str:
        attachment_id = sha(data)
        self.client.put_object(Bucket=self.bucket, Key=self.key(attachment_id), Body=data)
        return attachment_id

    def put_objects(self, datas: list[bytes]) -> list[str]:
        with ThreadPoolExecutor(8) as pool:
            return list(pool.map(self.put_object, datas))

    # the table, behind lashctl's back
    def sql(self, statement: str, params=None, many: list | None = None) -> list[tuple]:
        import psycopg

        with psycopg.connect(self.db_url, autocommit=True) as conn:
            if many is not None:
                with conn.cursor() as cur:
                    cur.executemany(statement, many)
                return []
            cur = conn.execute(statement, params)
            return cur.fetchall() if cur.description else []

    def rows(self) -> dict[tuple[str, str], tuple]:
        """(session, id) -> (intent_at_ms, committed_at_ms, owner_kind, owner_id)."""
        return {
            (r[0], r[1]): r[2:]
            for r in self.sql(
                f"SELECT session_id, attachment_id, intent_at_ms, committed_at_ms, owner_kind, owner_id FROM {TABLE}"
            )
        }

    def insert_rows(self, rows: list[tuple]) -> None:
        """(session, id, intent_at_ms, committed_at_ms or None)."""
        self.sql(
            f"INSERT INTO {TABLE} (session_id, attachment_id, canonical_uri, intent_at_ms, committed_at_ms)"
            " VALUES (%s, %s, %s, %s, %s)",
            many=[(s, i, "sha256:" + i, at, c) for s, i, at, c in rows],
        )


def init_table(db_url: str) -> None:
    """``lashctl manifest init``, in-process (the CLI's own path is tested elsewhere)."""
    from lashctl.backends.manifests.postgres import PostgresManifest

    PostgresManifest(db_url).init()


def make_remote(endpoint: str, db_url: str, init: bool = True) -> Remote:
    """A fresh bucket beside ``db_url``, whose table (created if ``init``) is emptied."""
    remote = Remote(endpoint, servers.new_bucket(endpoint, "lashctl-rel"), db_url, servers.s3_client(endpoint))
    if init:
        init_table(db_url)
        remote.sql(f"TRUNCATE {TABLE}")
    return remote


@pytest.fixture
def remote(s3_bucket, s3_server, pg_url) -> Remote:
    """A bucket (AWS_* set by s3_bucket) and a database with lash's table."""
    return make_remote(s3_server, pg_url)


def check_invariants(r: Remote, exempt: set[str] = frozenset()) -> dict:
    """No committed row without its bytes (ids in ``exempt`` aside); every object
    under sha256/ that has a row hashes to its id. Returns the rows."""
    rows = r.rows()
    objects = r.objects()
    ids_with_rows = {aid for (_s, aid) in rows}
    for (session, attachment_id), (_at, committed, _k, _o) in rows.items():
        if committed is not None and attachment_id not in exempt:
            assert r.key(attachment_id) in objects, (
                f"committed row ({session}, {attachment_id}) has no bytes in {r.bucket}"
            )
    for key in objects:
        name = key.rsplit("/", 1)[-1]
        if name in ids_with_rows:
            assert sha(r.body(key)) == name, f"{key} does not hash to its name (torn or foreign bytes)"
    return rows


def verify_clean(r: Remote) -> dict:
    """``verify`` exits 0 and reports warnings of the tolerated kinds only."""
    result = run(r.args("--json", "verify"))
    out = json.loads(result.stdout) if result.stdout.strip() else {}
    assert result.returncode == 0, f"verify exit {result.returncode}: {result.stderr.decode()} {out}"
    assert out["errors"] == 0, out
    unexpected = [f for f in out["findings"] if f["severity"] != "warning" or f["kind"] not in TOLERATED_WARNINGS]
    assert not unexpected, unexpected
    return out


# -- kills at random instants --------------------------------------------------------
def kill_after(args: list[str], delay: float, input: bytes | None = None) -> tuple[bool, int, bytes]:
    """Run lashctl; SIGKILL it after ``delay`` seconds if still running.
    Returns (killed, exit code, stderr)."""
    proc = subprocess.Popen(
        [LASHCTL, *args], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=lash_env()
    )
    try:
        proc.stdin.write(input or b"")
        proc.stdin.close()
    except BrokenPipeError:
        pass
    try:
        proc.wait(timeout=delay)
        killed = False
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        killed = True
    stderr = proc.stderr.read()
    proc.stderr.close()
    return killed, proc.wait(timeout=30), stderr


def timed(args: list[str], input: bytes | None = None) -> float:
    started = time.monotonic()
    ok(run(args, input=input))
    return time.monotonic() - started


def startup_seconds(r: Remote) -> float:
    """How long lashctl takes to start and answer one query (kills before that are uninteresting)."""
    return timed(r.args("list-uncommitted"))


def pick_delay(rng: random.Random, startup: float, duration: float) -> float:
    """Mostly after start-up (the working phase), sometimes during it."""
    if rng.random() < 0.15:
        return rng.uniform(0.0, duration)
    return rng.uniform(min(startup * 0.8, duration * 0.6), duration)


@dataclass
class Scenario:
    """One kill trial: ``setup`` fills a fresh remote and returns the lashctl
    args and stdin; ``after`` checks the rerun's result."""

    name: str
    setup: callable
    after: callable


def _put_setup(r: Remote, src: Path):
    listing = src / "list"
    return r.args("-q", "put", "-s", "crash-put", "--files-from", str(listing)), None


def _put_after(r: Remote, src: Path, rows: dict, objects: dict) -> None:
    expected = {sha(p.read_bytes()) for p in src.iterdir() if p.name != "list"}
    assert {aid for (s, aid) in rows if s == "crash-put"} == expected
    for attachment_id in expected:
        assert r.key(attachment_id) in objects


def _commit_setup(r: Remote, src: Path):
    """80 uploads of session crash-commit (as lash leaves them: object and intent), 10 already committed."""
    at = now_ms() - 60_000
    ids = r.put_objects([f"to commit {i}\n".encode() for i in range(80)])
    r.insert_rows([("crash-commit", i, at, at + 1 if n < 10 else None) for n, i in enumerate(ids)])
    return r.args("-q", "commit", "-s", "crash-commit", "-"), "\n".join(ids).encode() + b"\n"


def _commit_after(r: Remote, src: Path, rows: dict, objects: dict) -> None:
    assert rows and all(v[1] is not None for v in rows.values()), "a rerun of commit left rows uncommitted"


def _reclaim_setup(r: Remote, src: Path):
    """90 aged orphans (60 with bytes), 20 committed blobs (10 also with an aged orphan row)."""
    old = now_ms() - 3 * DAY
    orphans = r.put_objects([f"orphan {i}\n".encode() * (1 + i % 4) for i in range(60)])
    orphans += [sha(f"gone {i}".encode()) for i in range(30)]
    committed = r.put_objects([f"committed {i}\n".encode() for i in range(20)])
    r.insert_rows(
        [("s-orphan", i, old + n, None) for n, i in enumerate(orphans + committed[:10])]
        + [("s-live", i, old, old + 1) for i in committed]
    )
    time.sleep(1.1)  # S3 LastModified has second resolution: every object is older than the cutoff
    cutoff = now_ms() - 100
    (src / "reclaim-ids").write_text(json.dumps({"orphans": orphans, "committed": committed}))
    return r.args("-q", "reclaim", "--force", "--before", iso(cutoff)), None


def _reclaim_after(r: Remote, src: Path, rows: dict, objects: dict) -> None:
    ids = json.loads((src / "reclaim-ids").read_text())
    assert set(rows) == {("s-live", i) for i in ids["committed"]}, "rows left after the rerun"
    assert {k.rsplit("/", 1)[-1] for k in objects} <= set(ids["committed"]) | {
        k.rsplit("/", 1)[-1][:-5] for k in objects if k.endswith(".json")
    }
    assert not any(r.key(i) in objects for i in ids["orphans"]), "an orphan outlived the rerun"


SCENARIOS = {
    "put": Scenario("put", _put_setup, _put_after),
    "commit": Scenario("commit", _commit_setup, _commit_after),
    "reclaim": Scenario("reclaim", _reclaim_setup, _reclaim_after),
}


@pytest.fixture(scope="module")
def put_sources(tmp_path_factory) -> Path:
    """24 small files (a few with equal content) and two of 1-2 MiB."""
    src = tmp_path_factory.mktemp("remote-put-src")
    rng = random.Random(SEED)
    paths = []
    for i in range(24):
        path = src / f"f{i:02d}.txt"
        path.write_bytes(f"remote file {i % 21}\n".encode() * (1 + i % 5))
        paths.append(path)
    for i, size in enumerate((1 << 20, (3 << 19) + 5)):
        path = src / f"big{i}.bin"
        path.write_bytes(rng.randbytes(size))
        paths.insert(9 * (i + 1), path)
    (src / "list").write_text("".join(f"{p}\n" for p in paths))
    return src


@pytest.mark.parametrize(
    "command",
    [
        "put",
        "commit",
        pytest.param("reclaim", marks=pytest.mark.slow),
    ],
)
def test_sigkill_at_random_instants(command, s3_server, s3_bucket, pg_url, put_sources, tmp_path):
    scenario = SCENARIOS[command]
    src = tmp_path / "src"
    src.mkdir()
    for p in put_sources.iterdir():
        (src / p.name).write_bytes(p.read_bytes())
    (src / "list").write_text(
        "".join(f"{src / Path(line).name}\n" for line in (put_sources / "list").read_text().split())
    )

    calibrate = make_remote(s3_server, pg_url)
    args, stdin = scenario.setup(calibrate, src)
    duration = timed(args, input=stdin)
    startup = startup_seconds(calibrate)
    if command == "put":
        # A fresh store keeps sidecars (README, "Two layouts"): the first batch writes them too.
        objects = calibrate.objects()
        for key in [k for k in objects if not k.endswith(".json")]:
            assert key + ".json" in objects, f"put into an empty store wrote no sidecar for {key}"

    rng = random.Random(f"{SEED}-{command}")
    trials = 3
    landed = 0
    for trial in range(trials):
        r = make_remote(s3_server, pg_url)
        args, stdin = scenario.setup(r, src)
        killed, rc, stderr = kill_after(args, pick_delay(rng, startup, duration), input=stdin)
        landed += killed
        if not killed:
            assert rc == 0, f"trial {trial}: {command} exited {rc}: {stderr.decode(errors='replace')}"
        check_invariants(r)

        rerun = run(args, input=stdin)
        assert rerun.returncode == 0, f"trial {trial}: rerun of {command} exited {rerun.returncode}: {rerun.stderr}"
        rows = check_invariants(r)
        scenario.after(r, src, rows, r.objects())
        verify_clean(r)
    report(
        f"remote crash/{command}: {trials} trials, {landed} kills landed before exit "
        f"(startup {startup:.2f}s, run {duration:.2f}s)"
    )


# -- a lash writer racing the sweeps ----------------------------------------------------
RACE_SECONDS = float(os.environ.get("LASHCTL_RACE_SECONDS", "6"))


class LashWriter(threading.Thread):
    """What lash does, straight to the table and the bucket: an intent row (some
    with an owner), then the object (re-PUT when it exists), then the commit.
    Between writes it also leaves aged orphans (old intents) on objects of the
    pool, so that every sweep has candidates the writer may be coming back for."""

    def __init__(self, r: Remote, pool: dict[str, bytes], cutoff: int, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.r, self.pool, self.cutoff, self.stop = r, pool, cutoff, stop
        self.contents: dict[str, bytes] = dict(pool)
        self.committed: list[tuple[str, str]] = []
        self.error: BaseException | None = None
        self.rng = random.Random(f"{SEED}-writer")

    def run(self) -> None:
        import psycopg

        try:
            with psycopg.connect(self.r.db_url, autocommit=True) as conn:
                n = 0
                while not self.stop.wait(0.03):  # lash's pace, not a flood: sweeps stay short
                    n += 1
                    if n % 2:
                        self.seed_orphans(conn, n)
                    self.write_one(conn, n)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc

    def seed_orphans(self, conn, n: int) -> None:
        ids = self.rng.sample(sorted(self.pool), 2)
        with conn.cursor() as cur:
            cur.executemany(
                f"INSERT INTO {TABLE} (session_id, attachment_id, canonical_uri, intent_at_ms)"
                " VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                [(f"old-{n % 7}", i, "sha256:" + i, self.cutoff - DAY - n) for i in ids],
            )

    def write_one(self, conn, n: int) -> None:
        if self.rng.random() < 0.6:
            attachment_id = self.rng.choice(sorted(self.pool))
            data = self.pool[attachment_id]
        else:
            data = f"lash upload {n}\n".encode()
            attachment_id = sha(data)
            self.contents[attachment_id] = data
        session = f"lash-{n % 4}"
        owner = self.rng.choice([(None, None), ("turn", f"turn-{n}"), ("process", f"proc-{n % 3}")])
        conn.execute(
            f"INSERT INTO {TABLE} AS m (session_id, attachment_id, canonical_uri, intent_at_ms, owner_kind, owner_id)"
            " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (session_id, attachment_id) DO UPDATE"
            " SET intent_at_ms = GREATEST(m.intent_at_ms, EXCLUDED.intent_at_ms) WHERE m.committed_at_ms IS NULL",
            (session, attachment_id, "sha256:" + attachment_id, now_ms(), *owner),
        )
        self.r.client.put_object(Bucket=self.r.bucket, Key=self.r.key(attachment_id), Body=data)
        conn.execute(
            f"UPDATE {TABLE} SET committed_at_ms = %s WHERE session_id = %s AND attachment_id = %s"
            " AND committed_at_ms IS NULL",
            (now_ms(), session, attachment_id),
        )
        self.committed.append((session, attachment_id))


def test_lash_writer_racing_reclaim(remote: Remote):
    r = remote
    datas = [f"pool object {i}\n".encode() * (1 + i % 3) for i in range(200)]
    pool = dict(zip(r.put_objects(datas), datas))
    old = now_ms() - 3 * DAY
    r.insert_rows([("s-orphan", i, old + n, None) for n, i in enumerate(pool)])
    time.sleep(1.1)  # LastModified has second resolution: the pool is older than the cutoff
    cutoff = (now_ms() // 1000) * 1000  # what --before @SECONDS means
    stop = threading.Event()
    writer = LashWriter(r, pool, cutoff, stop)
    writer.start()
    deadline = time.monotonic() + RACE_SECONDS
    sweeps, exits, actions = 0, {}, {}
    reported: set[str] = set()
    try:
        while True:
            last = time.monotonic() >= deadline
            if last:
                stop.set()
                writer.join(timeout=60)
            result = run(r.args("-q", "--json", "reclaim", "--force", "--before", iso(cutoff)))
            sweeps += 1
            exits[result.returncode] = exits.get(result.returncode, 0) + 1
            assert result.returncode in (0, 5), f"sweep exit {result.returncode}: {result.stderr.decode()}"
            out = json.loads(result.stdout)
            for item in out["items"]:
                actions[item["action"]] = actions.get(item["action"], 0) + 1
            dwr = {i["id"] for i in out["items"] if i["action"] == "deleted_while_referenced"}
            failed = {i["id"] for i in out["items"] if i["action"] in ("failed", "deleted_while_referenced")}
            if result.returncode == 5:
                line = one_line_error(result.stderr)
                assert failed and all(i in line for i in failed), line
            else:
                assert not failed and not result.stderr.strip(), (out, result.stderr)
            reported |= dwr
            if last:
                break
    finally:
        stop.set()
        writer.join(timeout=60)
    assert writer.error is None, f"the writer failed: {writer.error!r}"
    assert writer.committed, "the writer committed nothing"

    rows = check_invariants(r, exempt=reported)
    for key in writer.committed:
        # lash's commit stamps whatever row is there and checks no count: an
        # intent that appeared while its bytes were deleted was forgotten
        # (README, "The steps of each destructive command"), and the sweep
        # said so (deleted_while_referenced). Any other committed row stays.
        if key[1] not in reported:
            assert key in rows and rows[key][1] is not None, f"a sweep forgot the committed row {key}"
    missing = {aid for (_s, aid), v in rows.items() if v[1] is not None and r.key(aid) not in r.objects()}
    assert missing <= reported, f"committed bytes deleted silently: {sorted(missing - reported)}"
    # The report says: re-upload it. Then nothing committed lacks its bytes.
    for attachment_id in reported:
        r.client.put_object(Bucket=r.bucket, Key=r.key(attachment_id), Body=writer.contents[attachment_id])
    check_invariants(r)
    verify_clean(r)
    report(
        f"remote race: {sweeps} sweeps (exits {exits}), actions {actions}, {len(writer.committed)} lash commits, "
        f"{len(reported)} deleted_while_referenced (re-uploaded), {len(missing)} committed ids had lost bytes"
    )


# -- the PostgreSQL server stops in the middle of a sweep ------------------------------------
class DedicatedPg:
    """A server of its own (tests/pgserver.py) that this test may stop and restart."""

    def __init__(self) -> None:
        import pgserver

        self.pgserver = pgserver
        self.server, self.remove = pgserver.start()
        self.root = self.server.socket_dir
        self.bindir = pgserver._bindir()

    def _ctl(self, *args: str) -> None:
        argv = self.pgserver._as_server_user([str(self.bindir / "pg_ctl"), "-D", str(self.root / "data"), *args])
        subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=120,
            check=True,
        )

    def stop(self) -> None:
        self._ctl("-m", "fast", "-w", "-t", "60", "stop")

    def start(self) -> None:
        options = (
            f"-k {self.root} -c listen_addresses=127.0.0.1 -p {self.server.port} -c fsync=off"
            " -c synchronous_commit=off -c full_page_writes=off -c max_connections=50"
        )
        self._ctl("-l", str(self.root / "server.log"), "-w", "-t", "60", "-o", options, "start")


@pytest.mark.slow
def test_server_stopped_mid_sweep_fails_cleanly_then_rerun_completes(s3_server, s3_bucket):
    servers.need("psycopg", "the PostgreSQL backend tests")
    pg = DedicatedPg()
    try:
        from pgserver import fresh_database

        r = make_remote(s3_server, fresh_database(pg.server, "restart_mid_sweep"))
        old = now_ms() - 3 * DAY
        with_bytes = r.put_objects([f"orphan with bytes {i}\n".encode() for i in range(150)])
        orphans = with_bytes + [sha(f"orphan without bytes {i}".encode()) for i in range(1850)]
        committed = r.put_objects([f"committed {i}\n".encode() for i in range(30)])
        r.insert_rows(
            [("s-orphan", i, old + n, None) for n, i in enumerate(orphans + committed[:15])]
            + [("s-live", i, old, old + 1) for i in committed]
        )
        time.sleep(1.1)
        args = r.args("-q", "reclaim", "--force", "--before", iso(now_ms()))

        proc = subprocess.Popen(
            [LASHCTL, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=lash_env(),
        )
        # Wait until the sweep is visibly deleting, then stop the server under it.
        deadline = time.monotonic() + 60
        while len(r.objects()) > len(with_bytes) + len(committed) - 5 and proc.poll() is None:
            assert time.monotonic() < deadline, "the sweep never started deleting"
            time.sleep(0.05)
        assert proc.poll() is None, "the sweep finished before the server could be stopped: use more orphans"
        pg.stop()
        stopped_at = time.monotonic()
        rc = proc.wait(timeout=120)
        stderr = proc.stderr.read()
        proc.stderr.close()
        assert rc == 69, f"exit {rc}: {stderr.decode(errors='replace')}"
        line = one_line_error(stderr)
        assert len(stderr.decode().strip().splitlines()) == 1, stderr
        objects = r.objects()
        for attachment_id in committed:
            assert r.key(attachment_id) in objects, f"committed blob {attachment_id} lost by the interrupted sweep"
        left = sum(r.key(i) in objects for i in with_bytes)

        pg.start()
        check_invariants(r)
        rerun = run(args)
        assert rerun.returncode == 0, rerun.stderr.decode()
        rows = check_invariants(r)
        assert set(rows) == {("s-live", i) for i in committed}
        objects = r.objects()
        assert not any(r.key(i) in objects for i in orphans)
        verify_clean(r)
        report(
            f"remote restart: sweep stopped {time.monotonic() - stopped_at:.1f}s before the rerun with "
            f"{left}/{len(with_bytes)} orphan objects left; error: {line}"
        )
    finally:
        pg.remove()


# -- misconfiguration ---------------------------------------------------------------------
def closed_port() -> int:
    return servers.free_port()  # nothing listens there once the probe socket is closed


@pytest.fixture(scope="module")
def auth_s3(tmp_path_factory):
    """A moto that checks credentials: it knows none, so every key is refused."""
    servers.need("moto", "the S3 backend tests")
    with servers.moto_server(tmp_path_factory.mktemp("moto-auth"), env={"INITIAL_NO_AUTH_ACTION_COUNT": "0"}) as url:
        yield url


MISCONFIGURED = {
    # name: (expected exit, what the one line must mention)
    "s3-credentials-refused": (77, "access denied"),
    "bucket-missing": (2, "does not exist"),
    "table-missing": (2, "manifest init"),
    "password-wrong": (77, "access denied"),
    "s3-unreachable": (69, "cannot reach"),
    "postgres-unreachable": (69, "unavailable"),
}
COMMANDS = {
    "put": lambda src: ["put", "-s", "s-misconf", str(src)],
    "ls": lambda src: ["ls"],
    "reclaim": lambda src: ["reclaim", "--force", "--older-than", "0s"],
    "list-uncommitted": lambda src: ["list-uncommitted"],
}


@pytest.mark.parametrize("case", list(MISCONFIGURED))
def test_misconfiguration_is_one_line_and_creates_nothing(case, remote: Remote, pg_server, auth_s3, tmp_path):
    from urllib.parse import urlsplit

    from pgserver import fresh_database

    r = remote
    old = now_ms() - 3 * DAY
    live, orphan = r.put_objects([b"committed bytes", b"orphan bytes"])
    r.insert_rows([("s-live", live, old, old + 1), ("s-orphan", orphan, old, None)])
    src = tmp_path / "input.txt"
    src.write_bytes(b"a new upload that must not land\n")
    scratch = tmp_path / "tmpdir"
    scratch.mkdir()
    env = lash_env(TMPDIR=str(scratch))
    store, manifest = r.store, r.db_url
    bad_password = "not-the-password-42"
    empty_db = None
    if case == "s3-credentials-refused":
        env["AWS_ENDPOINT_URL"] = auth_s3
    elif case == "bucket-missing":
        store = f"s3://{r.bucket}-missing/{PREFIX}"
    elif case == "table-missing":
        empty_db = manifest = fresh_database(pg_server, f"rel_no_table_{os.getpid()}")
    elif case == "password-wrong":
        manifest = pg_server.tcp_url(dbname=urlsplit(r.db_url).path.lstrip("/"), password=bad_password)
    elif case == "s3-unreachable":
        env["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{closed_port()}"
    elif case == "postgres-unreachable":
        manifest = f"postgresql://lashctl_pw:{bad_password}@127.0.0.1:{closed_port()}/lash"
    code, says = MISCONFIGURED[case]
    before = (r.rows(), {k: o["ETag"] for k, o in r.objects().items()})

    for command, make_args in COMMANDS.items():
        result = run(["--store", store, "--manifest", manifest, *make_args(src)], env=env, timeout=90)
        stderr = result.stderr.decode(errors="replace")
        assert result.returncode == code, f"{case}/{command}: exit {result.returncode}, expected {code}: {stderr}"
        line = one_line_error(result.stderr)
        assert stderr.strip() == line, f"{case}/{command}: more than one line on stderr: {stderr!r}"
        assert says in line, f"{case}/{command}: {line!r} does not mention {says!r}"
        assert bad_password not in stderr and servers.S3_TEST_SECRET not in stderr
        assert not result.stdout.strip(), f"{case}/{command}: output on stdout: {result.stdout!r}"
        # Nothing created: no object, no row, no table, no bucket, no temporary file.
        assert (r.rows(), {k: o["ETag"] for k, o in r.objects().items()}) == before, (
            f"{case}/{command} changed the store"
        )
        # (the private staging directory of S3 puts may stay, empty: README, "Beyond one machine")
        left = [p for p in scratch.rglob("*") if p.name != f"lashctl-s3-staging-{os.getuid()}"]
        assert not left, f"{case}/{command} left {left}"
        if empty_db is not None:
            assert Remote(r.endpoint, r.bucket, empty_db).sql("SELECT to_regclass(%s)", (TABLE,)) == [(None,)]
        if case == "bucket-missing":
            with pytest.raises(Exception):
                r.client.head_bucket(Bucket=f"{r.bucket}-missing")
