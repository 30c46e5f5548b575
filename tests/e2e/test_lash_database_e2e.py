"""lash's own rules on its PostgreSQL database, through the installed ``lashctl``.

- Process owners: lash applies "an intent of a process that has no row in the
  process registry is dead" only when its host names the registry; unnamed,
  lash keeps process-owned intents for ever. lashctl does the same unless
  ``--process-registry`` names it.
- The schema version: lash stamps ``lash_schema_versions`` and refuses a
  database of another version; lashctl refuses one it was not built for.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from conftest import blob_path
from reliability_helpers import base_env, one_line_error, run

pytestmark = pytest.mark.e2e

DAY_MS = 86_400_000
OLD_S = 1_600_000_000  # 2020-09-13: long before any cutoff
UNWIRED = "(lash keeps process-owned intents unless its process registry is named: --process-registry)"
# lash's process registry table, as lash-postgres-store creates it.
LASH_PROCESSES = (
    "CREATE TABLE lash_processes (process_id TEXT PRIMARY KEY, registration_hash TEXT NOT NULL,"
    " owner_scope_id TEXT NOT NULL, created_at_ms BIGINT NOT NULL, updated_at_ms BIGINT NOT NULL,"
    " change_seq BIGINT NOT NULL, status TEXT NOT NULL, record_json TEXT NOT NULL)"
)
LASH_SCHEMA_VERSIONS = "CREATE TABLE lash_schema_versions (component TEXT PRIMARY KEY, version INTEGER NOT NULL)"


def sql(url: str, *statements: str, params: tuple | None = None) -> list[tuple]:
    import psycopg

    out: list[tuple] = []
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in statements:
            cur = conn.execute(statement, params if "%s" in statement else None)
            if cur.description is not None:
                out = cur.fetchall()
    return out


class LashDb:
    """A store directory and lash's manifest table in a fresh database."""

    def __init__(self, root: Path, url: str, inputs: Path) -> None:
        self.root, self.url, self.inputs = root, url, inputs

    def lashctl(self, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
        return run(["--store", str(self.root), "--manifest", self.url, *args], env=env)

    def ok(self, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
        result = self.lashctl(*args, env=env)
        assert result.returncode == 0, result.stderr.decode()
        assert b"Traceback" not in result.stderr
        return result

    def put(self, data: bytes, session: str = "s") -> str:
        path = self.inputs / f"input-{len(list(self.inputs.iterdir()))}"
        path.write_bytes(data)
        return self.ok("put", "-s", session, str(path)).stdout.decode().strip()

    def owned_orphan(self, data: bytes, process: str) -> str:
        """An upload lash made for a process, three days ago, never committed."""
        attachment_id = self.put(data, session=f"session-of-{process}")
        sql(
            self.url,
            "UPDATE lash_attachment_manifest SET intent_at_ms = intent_at_ms - %s,"
            " owner_kind = 'process', owner_id = %s WHERE attachment_id = %s",
            params=(3 * DAY_MS, process, attachment_id),
        )
        os.utime(blob_path(self.root, attachment_id), (OLD_S, OLD_S))
        return attachment_id

    def rows(self, attachment_id: str) -> list[tuple]:
        return sql(
            self.url,
            "SELECT session_id, owner_id FROM lash_attachment_manifest WHERE attachment_id = %s",
            params=(attachment_id,),
        )

    def verdict(self, attachment_id: str, *options: str) -> str:
        lines = self.ok(*options, "show", attachment_id).stdout.decode().splitlines()
        return next(line for line in lines if line.startswith("verdict:"))

    def reclaim_items(self, *options: str, dry_run: bool) -> tuple[dict, str]:
        result = self.ok(*options, "--json", "reclaim", *(["--dry-run"] if dry_run else []))
        items = {i["id"]: i["action"] for i in json.loads(result.stdout)["items"]}
        return items, result.stderr.decode()

    def orphans(self, *options: str) -> int:
        return json.loads(self.ok(*options, "--json", "stats").stdout)["orphans_reclaimable"]


@pytest.fixture
def lash(tmp_path: Path, pg_url: str) -> LashDb:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    db = LashDb(tmp_path / "store", pg_url, inputs)
    db.ok("manifest", "init")
    return db


# -- process owners -----------------------------------------------------------------------
def test_a_process_owned_intent_is_kept_by_default_even_when_lash_processes_lacks_the_process(lash):
    sql(lash.url, LASH_PROCESSES)  # lash's DDL always creates it, wherever the registry really lives
    gone = lash.owned_orphan(b"uploaded by a process the table does not list", "p-elsewhere")
    for dry_run in (True, False):
        items, stderr = lash.reclaim_items(dry_run=dry_run)
        assert items == {}
        assert "1 aged intent(s) kept: their lash owners are not proven dead" in stderr
    assert blob_path(lash.root, gone).exists()
    assert lash.rows(gone) == [("session-of-p-elsewhere", "p-elsewhere")]
    assert lash.verdict(gone) == f"verdict:    kept: owned by process p-elsewhere {UNWIRED}"
    assert lash.orphans() == 0
    lash.ok("verify")


def test_the_process_registry_option_applies_lashs_process_rule(lash):
    sql(
        lash.url, LASH_PROCESSES, "INSERT INTO lash_processes VALUES ('p-live', 'h', 'scope', 0, 0, 1, 'running', '{}')"
    )
    gone = lash.owned_orphan(b"uploaded by a pruned process", "p-gone")
    live = lash.owned_orphan(b"uploaded by a running process", "p-live")
    wired = ("--process-registry", "table")
    items, _ = lash.reclaim_items(*wired, dry_run=True)
    assert items == {gone: "reclaim"}
    assert lash.verdict(gone, *wired).startswith("verdict:    orphan: would be reclaimed")
    assert lash.verdict(live, *wired) == "verdict:    kept: owner process p-live is still registered in lash_processes"
    assert lash.orphans(*wired) == 1
    assert lash.orphans() == 0  # the default still keeps both
    # Given after the command, as every global option may be.
    result = lash.ok("--json", "reclaim", "--process-registry", "table")
    assert {i["id"]: i["action"] for i in json.loads(result.stdout)["items"]} == {gone: "reclaim"}
    assert not blob_path(lash.root, gone).exists() and lash.rows(gone) == []
    assert blob_path(lash.root, live).exists() and lash.rows(live) == [("session-of-p-live", "p-live")]


def test_the_process_registry_from_the_environment_and_as_a_named_table(lash):
    sql(lash.url, "CREATE SCHEMA registry", LASH_PROCESSES.replace("TABLE lash_processes", "TABLE registry.procs"))
    gone = lash.owned_orphan(b"uploaded by a process the named table lacks", "p-gone")
    assert lash.orphans("--process-registry", "table:registry.procs") == 1
    env = base_env(LASHCTL_PROCESS_REGISTRY="table:registry.procs")
    result = lash.ok("--json", "reclaim", env=env)
    assert {i["id"]: i["action"] for i in json.loads(result.stdout)["items"]} == {gone: "reclaim"}
    assert lash.rows(gone) == []


@pytest.mark.parametrize(
    "value, needle",
    [
        ("processes", "table or table:[SCHEMA.]NAME"),
        ("table:", "table or table:[SCHEMA.]NAME"),
        ("table:a.b.c", "table or table:[SCHEMA.]NAME"),
        ("table:x;drop", "table or table:[SCHEMA.]NAME"),
    ],
)
def test_a_process_registry_lashctl_cannot_read_is_a_usage_error(lash, value, needle):
    for args in (("--process-registry", value, "reclaim", "-n"), ("reclaim", "-n", "--process-registry", value)):
        result = lash.lashctl(*args)
        assert result.returncode == 2, result.stderr.decode()
        line = one_line_error(result.stderr)
        assert "--process-registry" in line and needle in line, line


def test_a_process_registry_table_that_does_not_exist_is_a_usage_error(lash):
    lash.put(b"an upload")
    for value, table in (("table", "lash_processes"), ("table:nosuch.procs", "nosuch.procs")):
        result = lash.lashctl("--process-registry", value, "reclaim", "-n")
        assert result.returncode == 2, result.stderr.decode()
        line = one_line_error(result.stderr)
        assert f"no table {table}" in line and "--process-registry" in line, line


def test_a_process_registry_with_a_json_lines_manifest_is_a_usage_error(tmp_path):
    result = run(
        ["--store", str(tmp_path / "store"), "--process-registry", "table", "put", "-s", "s", "-"], input=b"bytes"
    )
    assert result.returncode == 2, result.stderr.decode()
    line = one_line_error(result.stderr)
    assert "--process-registry" in line and "PostgreSQL" in line, line
    assert not (tmp_path / "store").exists()


# -- the schema version ---------------------------------------------------------------------
def _stamp(url: str, version: int, component: str = "lash-postgres-store") -> None:
    sql(
        url,
        f"CREATE TABLE IF NOT EXISTS {LASH_SCHEMA_VERSIONS[len('CREATE TABLE ') :]}",
        "INSERT INTO lash_schema_versions VALUES (%s, %s)",
        params=(component, version),
    )


@pytest.mark.parametrize("version", [14, 18])
def test_a_lash_schema_version_lashctl_was_not_built_for_is_refused(lash, version):
    attachment_id = lash.put(b"written before the stamp")
    _stamp(lash.url, version)
    (lash.inputs / "new").write_bytes(b"a new upload")
    before = sql(lash.url, "SELECT * FROM lash_attachment_manifest")
    for args in (
        ("reclaim", "--older-than", "1m"),
        ("list-uncommitted",),
        ("commit", "-s", "s", attachment_id),
        ("put", "-s", "s", str(lash.inputs / "new")),
    ):
        result = lash.lashctl(*args)
        assert result.returncode == 65, (args, result.stderr.decode())
        line = one_line_error(result.stderr)
        assert f"schema version {version}" in line and "supports 15, 16, 17" in line, line
        assert result.stdout == b""
    assert sql(lash.url, "SELECT * FROM lash_attachment_manifest") == before
    assert sorted(
        p.name
        for p in blob_path(lash.root, attachment_id).parent.parent.rglob("*")
        if p.is_file() and len(p.name) == 64
    ) == [attachment_id]  # the put landed nothing


def test_an_unsupported_version_under_json_is_one_document_too(lash):
    lash.put(b"an upload")
    _stamp(lash.url, 18)
    result = lash.lashctl("--json", "reclaim")
    assert result.returncode == 65
    document = json.loads(result.stdout)
    assert document["exit_code"] == 65 and "schema version 18" in document["error"]


@pytest.mark.parametrize("version", [15, 16, 17])
def test_a_supported_lash_schema_version_works(lash, version):
    _stamp(lash.url, version)
    _stamp(lash.url, 99, component="another-component")  # not lash's manifest: not read
    attachment_id = lash.put(b"under a supported version")
    lash.ok("commit", "-s", "s", attachment_id)
    lash.ok("list-uncommitted")
    lash.ok("reclaim", "--older-than", "1m")
    assert lash.rows(attachment_id) == [("s", None)]
