"""Configuration and data faults a red team found: each one line and the
documented exit code, never a traceback, a password or a guess."""

from __future__ import annotations

import json
import subprocess

import pytest

from reliability_helpers import base_env, find_lashctl

pytestmark = pytest.mark.e2e


def run(*args: str, cwd, input: bytes = b"", env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [find_lashctl(), *args], input=input, capture_output=True, env=env or base_env(), cwd=cwd, timeout=60
    )


def test_a_raw_at_sign_in_a_postgresql_password_is_a_usage_error_showing_no_password(tmp_path):
    (tmp_path / "store" / "sha256").mkdir(parents=True)
    done = run("--store", "store", "--manifest", "postgresql://lash:se@cret@127.0.0.1:1/db", "ls", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    err = done.stderr.decode()
    assert err.count("\n") == 1 and "%40" in err and "cret" not in err and "se@" not in err


@pytest.mark.parametrize("option", ["--store", "--manifest"])
def test_an_empty_location_is_a_usage_error(tmp_path, option):
    done = run(option, "", "ls", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.decode().startswith(f"lashctl: error: {option} is empty")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("variable", ["LASHCTL_STORE", "LASHCTL_MANIFEST"])
def test_an_empty_location_variable_is_a_usage_error(tmp_path, variable):
    done = run("reclaim", cwd=tmp_path, env=base_env(**{variable: ""}))
    assert done.returncode == 2, done.stderr
    assert f"{variable} is empty" in done.stderr.decode()
    assert list(tmp_path.iterdir()) == []


def test_commit_names_at_most_a_few_unknown_ids(tmp_path):
    (tmp_path / "a").write_bytes(b"a\n")
    assert run("--store", "s", "put", "-s", "s", "a", cwd=tmp_path).returncode == 0
    ids = "\n".join(f"{n:064x}" for n in range(5000)).encode()
    done = run("--store", "s", "commit", "-s", "s", "-", cwd=tmp_path, input=ids)
    assert done.returncode == 3
    err = done.stderr.decode()
    assert err.count("\n") == 1 and len(err) < 2000, err[:300]
    assert "5000 id(s) have no intent for session s" in err and "and 4990 more" in err
    listed = json.loads(run("--store", "s", "--json", "commit", "-s", "s", "-", cwd=tmp_path, input=ids).stdout)
    assert len(listed) == 5000  # the data keeps every id


def test_verify_fix_on_a_postgresql_table_of_an_unsupported_version_is_exit_65(tmp_path, pg_url):
    import psycopg

    (tmp_path / "store" / "sha256").mkdir(parents=True)
    assert run("--store", "store", "--manifest", pg_url, "manifest", "init", cwd=tmp_path).returncode == 0
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE lash_schema_versions (component TEXT PRIMARY KEY, version INTEGER NOT NULL)")
        conn.execute("INSERT INTO lash_schema_versions VALUES ('lash-postgres-store', 99)")
    done = run("--store", "store", "--manifest", pg_url, "verify", "--fix", cwd=tmp_path)
    assert done.returncode == 65, done.stderr
    assert b"Traceback" not in done.stderr and b"unexpected" not in done.stderr


def test_json_output_escapes_what_a_terminal_would_obey(tmp_path):
    """C1 controls, bidi overrides, line separators and zero-width characters
    from other writers reach stdout as \\uXXXX escapes: still the same JSON."""
    (tmp_path / "a").write_bytes(b"a\n")
    hostile = "s\u202eLIVE\u0085x\u2028y\u200bz"
    done = run("--store", "s", "put", "-s", "s", "--label", "l\u202eabel", "a", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    attachment_id = done.stdout.decode().strip()
    with open(tmp_path / "s" / "manifest.jsonl", "a", encoding="utf-8") as log:
        log.write(
            json.dumps(
                {
                    "op": "intent",
                    "attachment_id": attachment_id,
                    "session_id": hostile,
                    "canonical_uri": f"sha256:{attachment_id}",
                    "intent_at_epoch_ms": 1_700_000_000_000,
                },
                ensure_ascii=False,
            )
            + "\n"
        )
    for args in (
        ["--json", "show", attachment_id],
        ["--json", "list-uncommitted"],
        ["manifest", "log"],
        ["--json", "ls"],
    ):
        out = run("--store", "s", *args, cwd=tmp_path).stdout
        text = out.decode("utf-8")
        for char in ("\u202e", "\u0085", "\u2028", "\u200b"):
            assert char not in text, (args, char)
        assert "\\u202e" in text, args
    shown = json.loads(run("--store", "s", "--json", "show", attachment_id, cwd=tmp_path).stdout)
    assert hostile in json.dumps(shown, ensure_ascii=False)


def test_a_plain_http_endpoint_without_allow_http_names_the_variable(tmp_path):
    pytest.importorskip("obstore")
    env = base_env(
        AWS_ENDPOINT_URL="http://127.0.0.1:9", AWS_ACCESS_KEY_ID="k", AWS_SECRET_ACCESS_KEY="s", AWS_REGION="us-east-1"
    )
    env.pop("AWS_ALLOW_HTTP", None)
    done = run("--store", "s3://bucket/p", "--manifest", "m.jsonl", "ls", cwd=tmp_path, env=env)
    assert done.returncode == 2, done.stderr
    assert b"AWS_ALLOW_HTTP=true" in done.stderr and done.stderr.count(b"\n") == 1


def test_a_sweep_refuses_a_local_clock_ahead_of_the_postgresql_servers(tmp_path, pg_url, monkeypatch):
    """A sweeper whose clock runs days ahead would take fresh uploads for
    aged ones: on PostgreSQL, the server's clock is there to compare with."""
    import time

    from lashctl import core, sweep
    from lashctl.errors import Refused

    store = core.Store(tmp_path / "store", pg_url)
    store.manifest.init()
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 2 * 86_400)
    with pytest.raises(Refused, match="ahead of the PostgreSQL server"):
        sweep.reclaim(store, int(time.time() * 1000) - 86_400_000)
    # A dry run tells the truth: it is refused as the real run would be.
    for dry in (
        lambda: sweep.reclaim(store, int(time.time() * 1000) - 86_400_000, dry_run=True),
        lambda: sweep.gc(store, int(time.time() * 1000) - 86_400_000, dry_run=True),
    ):
        with pytest.raises(Refused, match="ahead of the PostgreSQL server"):
            dry()
    monkeypatch.setattr(time, "time", real)
    assert sweep.reclaim(store, int(time.time() * 1000) - 86_400_000).items == []


def test_a_put_refused_by_its_manifest_makes_no_store(tmp_path):
    (tmp_path / "a").write_bytes(b"a\n")
    (tmp_path / "notman").write_bytes(b"garbage\n")
    done = run("--store", "nst", "--manifest", "notman", "put", "-s", "s", "a", cwd=tmp_path)
    assert done.returncode == 65, done.stderr
    assert not (tmp_path / "nst").exists()


def test_delete_refuses_while_the_table_holds_a_row_it_cannot_read(tmp_path, pg_url):
    """A row whose id is upper case (or padded) may name the very blob being
    deleted: delete stops (exit 65) as every other command does, nothing deleted."""
    import psycopg

    (tmp_path / "a").write_bytes(b"committed elsewhere\n")
    assert run("--store", "store", "--manifest", pg_url, "manifest", "init", cwd=tmp_path).returncode == 0
    done = run("--store", "store", "--manifest", pg_url, "put", "-s", "s", "a", cwd=tmp_path)
    attachment_id = done.stdout.decode().strip()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("DELETE FROM lash_attachment_manifest")
        conn.execute(
            "INSERT INTO lash_attachment_manifest (attachment_id, session_id, canonical_uri, "
            "intent_at_ms, committed_at_ms) VALUES (%s, 's5', 'u', 1000, 2000)",
            (attachment_id.upper(),),
        )
    done = run("--store", "store", "--manifest", pg_url, "delete", attachment_id, cwd=tmp_path)
    assert done.returncode == 65, done.stderr
    assert (
        run("--store", "store", "--manifest", pg_url, "get", attachment_id, "-o", "out", cwd=tmp_path).returncode == 0
    )


def test_a_command_waiting_for_the_lock_says_so(tmp_path):
    import fcntl
    import os

    (tmp_path / "a").write_bytes(b"a\n")
    assert run("--store", "s", "put", "-s", "s", "a", cwd=tmp_path).returncode == 0
    fd = os.open(tmp_path / "s" / "manifest.jsonl.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        done = run("--store", "s", "--lock-timeout", "3", "put", "-s", "s", "a", cwd=tmp_path)
    finally:
        os.close(fd)
    assert done.returncode == 75
    lines = done.stderr.decode().splitlines()
    assert lines[0].startswith("lashctl: warning: waiting for the lock on ") and "up to 3s" in lines[0], lines


def test_an_append_by_another_program_is_never_overwritten(tmp_path):
    """A plain `echo >> manifest.jsonl` racing lashctl's writers: every line
    of both is in the log, none torn or overwritten."""
    import threading

    (tmp_path / "a").write_bytes(b"a\n")
    attachment_id = run("--store", "s", "put", "-s", "s1", "a", cwd=tmp_path).stdout.decode().strip()
    manifest = tmp_path / "s" / "manifest.jsonl"
    line = json.dumps(
        {
            "op": "intent",
            "attachment_id": attachment_id,
            "session_id": "echo-" + "x" * 200,
            "canonical_uri": f"sha256:{attachment_id}",
            "intent_at_epoch_ms": 1_796_691_149_058,
        }
    )
    stop, written = threading.Event(), [0]

    def echo() -> None:
        while not stop.is_set():
            with open(manifest, "a", encoding="utf-8") as log:
                log.write(line + "\n")
            written[0] += 1
            stop.wait(0.00002)

    appender = threading.Thread(target=echo)
    appender.start()
    try:
        for n in range(40):
            done = run("--store", "s", "commit", "-s", f"s{n}", attachment_id, cwd=tmp_path)
            assert done.returncode in (0, 3), done.stderr
    finally:
        stop.set()
        appender.join()
    assert run("--store", "s", "manifest", "check", cwd=tmp_path).returncode == 0
    assert manifest.read_text("utf-8").count(line + "\n") == written[0]


def test_postgresql_writes_are_durable_whatever_the_servers_synchronous_commit(pg_url):
    """A sweep forgets rows before it deletes bytes, and a put records its
    intent before its bytes land: both need the commit on disk when it returns,
    even where the server trades durability for speed (synchronous_commit=off)."""
    import psycopg

    from lashctl.backends.manifests.postgres import PostgresManifest

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"ALTER DATABASE {conn.info.dbname} SET synchronous_commit = off")
    manifest = PostgresManifest(pg_url)
    manifest.init()
    for way in (manifest.writing, manifest.sweeping):
        with way() as view:
            assert view.conn.execute("SHOW synchronous_commit").fetchone()[0] == "on", way.__name__


def test_a_sweep_waiting_for_the_postgresql_sweep_lock_says_so(tmp_path, pg_url):
    import psycopg

    from lashctl.backends.manifests.postgres import TABLE, lock_key

    (tmp_path / "store" / "sha256").mkdir(parents=True)
    assert run("--store", "store", "--manifest", pg_url, "manifest", "init", cwd=tmp_path).returncode == 0
    with psycopg.connect(pg_url, autocommit=True) as conn:
        qualified = conn.execute("SELECT to_regclass(%s)::regclass::text, current_database()", (TABLE,)).fetchone()
        conn.execute("SELECT pg_advisory_lock(%s)", (lock_key(f"{qualified[1]}.{qualified[0]}"),))
        done = run("--store", "store", "--manifest", pg_url, "--lock-timeout", "3", "reclaim", cwd=tmp_path)
    assert done.returncode == 75
    assert "waiting for the sweep lock" in done.stderr.decode() and "up to 3s" in done.stderr.decode()
