"""``migrate`` from one directory store to another: blobs and rows copied, a rerun skips
them. The kill-and-resume, remote and lash-database cases are in tests/e2e/test_migrate.py
and tests/backends/."""

from __future__ import annotations

import json

from conftest import LASHCTL_ENV, blob_path
from typer.testing import CliRunner

from .helpers import assert_ok, ids_out, write_inputs


def test_migrate_copies_blobs_and_rows_and_a_rerun_skips_them(cli, store, tmp_path):
    paths = write_inputs(tmp_path / "in", {"a.txt": b"alpha", "b.bin": b"beta"})
    a, b = ids_out(cli("put", "-s", "s1", *map(str, paths)))
    assert_ok(cli("commit", "-s", "s1", a))
    dest = tmp_path / "copy"

    first = cli("--json", "migrate", "--to-store", str(dest))
    assert_ok(first)
    report = json.loads(first.stdout)
    assert (report["blobs_copied"], report["rows_copied"], report["blobs_failed"], report["failures"]) == (2, 2, 0, [])
    assert blob_path(dest, a).read_bytes() == b"alpha" and blob_path(dest, b).read_bytes() == b"beta"

    from lashctl.cli import app

    runner = CliRunner(env={name: None for name in LASHCTL_ENV})
    pending = runner.invoke(app, ["--store", str(dest), "--json", "list-uncommitted"])
    assert_ok(pending)
    assert [(row["id"], row["session_id"]) for row in json.loads(pending.stdout)] == [(b, "s1")]

    rerun = cli("--json", "migrate", "--to-store", str(dest))
    assert_ok(rerun)
    report = json.loads(rerun.stdout)
    counts = [report[key] for key in ("blobs_copied", "blobs_skipped", "rows_copied", "rows_skipped")]
    assert counts == [0, 2, 0, 2]
