"""The installed lashctl over every pairing of blob and manifest backend.

One scenario, six stores: a local directory or an S3 bucket for the blobs,
a JSON-lines file, a PostgreSQL table or lash's SQLite session databases (one
made, as lash would, for each session the scenario uses) for the manifest. Each command runs
in a subprocess, the way an operator runs it.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from conftest import sha
from reliability_helpers import find_lashctl

pytestmark = pytest.mark.e2e

LASHCTL_ENV = ("LASHCTL_STORE", "LASHCTL_MANIFEST", "LASHCTL_SESSION", "LASHCTL_LOCK_TIMEOUT", "LASHCTL_DEBUG")


@pytest.fixture(
    params=[
        ("file", "jsonl"),
        ("file", "postgres"),
        ("file", "lash-sqlite"),
        ("s3", "jsonl"),
        ("s3", "postgres"),
        ("s3", "lash-sqlite"),
    ],
    ids=lambda p: f"{p[0]}+{p[1]}",
)
def lashctl(request, tmp_path):
    """Run ``lashctl --store … [--manifest …] ARGS`` in a subprocess: (exit code, stdout, stderr)."""
    lashctl_bin = find_lashctl()
    blobs, manifest = request.param
    if blobs == "file":
        store = str(tmp_path / "store")
    else:
        import servers

        servers.need("obstore", "the S3 end-to-end matrix")
        store = f"s3://{request.getfixturevalue('s3_bucket')}/team/lash"
    if manifest == "jsonl":
        # A file store keeps its manifest inside (the default); an S3 store must name one.
        given = [] if blobs == "file" else ["--manifest", str(tmp_path / "manifest.jsonl")]
    elif manifest == "lash-sqlite":
        from lash_sqlite_fixture import make_session_db

        for session in ("s1", "old", "live"):
            make_session_db(tmp_path / "sessions", session)
        given = ["--manifest", f"lash-sqlite:{tmp_path / 'sessions'}"]
    else:
        pytest.importorskip("psycopg")
        given = ["--manifest", request.getfixturevalue("pg_url")]

    def run(*args: str, input: bytes | None = None, check: bool = True) -> tuple[int, bytes, str]:
        env = os.environ.copy()  # the AWS_* the s3 fixture set, the private cache dir
        for name in LASHCTL_ENV:
            env.pop(name, None)
        proc = subprocess.run(
            [lashctl_bin, "--store", store, *given, *args],
            input=input,
            capture_output=True,
            env=env,
            timeout=120,
            cwd=tmp_path,
        )
        if check:
            assert proc.returncode == 0, (args, proc.returncode, proc.stderr.decode(errors="replace"))
        return proc.returncode, proc.stdout, proc.stderr.decode(errors="replace")

    if manifest == "postgres":
        run("manifest", "init")
    run.store, run.manifest = store, (given[1] if given else None)  # for tests that open the store in-process
    return run


def as_json(result) -> object:
    return json.loads(result[1])


def test_put_commit_reclaim_and_inspect(lashctl, tmp_path, request):
    kept_bytes, dropped_bytes = b"kept: committed by s1\n", b"dropped: never committed\n"
    (tmp_path / "kept.txt").write_bytes(kept_bytes)
    (tmp_path / "dropped.txt").write_bytes(dropped_bytes)
    kept, dropped = sha(kept_bytes), sha(dropped_bytes)

    put = as_json(lashctl("--json", "put", "--session", "s1", "kept.txt", "dropped.txt"))
    assert [p["id"] for p in put] == [kept, dropped]
    assert [p["deduplicated"] for p in put] == [False, False]

    pending = as_json(lashctl("--json", "list-uncommitted"))
    assert sorted(r["id"] for r in pending) == sorted([kept, dropped])
    assert all(r["session_id"] == "s1" and r["bytes_present"] for r in pending)

    committed = as_json(lashctl("--json", "commit", "--session", "s1", kept))
    assert committed == [{"id": kept, "session_id": "s1", "status": "committed"}]
    assert [r["id"] for r in as_json(lashctl("--json", "list-uncommitted", "--session", "s1"))] == [dropped]

    # A cutoff in the future: every uncommitted intent is aged (hence --force).
    code, _, err = lashctl("reclaim", "--before", "2999-01-01T00:00:00Z", check=False)
    assert code != 0 and "--force" in err  # refused without --force
    reclaim = as_json(lashctl("--json", "reclaim", "--before", "2999-01-01T00:00:00Z", "--force"))
    assert reclaim["blobs_reclaimed"] == 1 and reclaim["failures"] == 0
    assert reclaim["bytes_freed"] == len(dropped_bytes)
    assert [(i["id"], i["action"]) for i in reclaim["items"]] == [(dropped, "reclaim")]
    assert as_json(lashctl("--json", "list-uncommitted")) == []

    listing = as_json(lashctl("--json", "ls"))
    assert [(e["id"], e["state"], e["sessions"]) for e in listing] == [(kept, "committed", ["s1"])]
    assert listing[0]["byte_len"] == len(kept_bytes) and listing[0]["label"] == "kept.txt"

    stats = as_json(lashctl("--json", "stats"))
    assert (stats["blobs"], stats["blob_bytes"]) == (1, len(kept_bytes))
    assert (stats["rows_committed"], stats["rows_uncommitted"]) == (1, 0)
    assert stats["orphans_reclaimable"] == 0 and stats["stray_files"] == 0 and stats["orphan_sidecars"] == 0
    # Lines are a JSON-lines manifest's; a table has none.
    assert (stats["manifest_lines"] is None) == ("jsonl" not in request.node.name)

    show = as_json(lashctl("--json", "show", kept))
    assert show["id"] == kept and show["bytes_present"] is True
    assert show["verdict"]["state"] == "kept"
    assert [r["session_id"] for r in show["rows"]] == ["s1"]
    gone = as_json(lashctl("--json", "show", dropped, check=False))
    assert gone.get("bytes_present") in (False, None)

    assert lashctl("get", kept)[1] == kept_bytes
    assert lashctl("get", kept[:12], "-o", "-")[1] == kept_bytes  # a unique prefix resolves
    code, out, _ = lashctl("get", dropped, check=False)
    assert code != 0 and out == b""

    verify = as_json(lashctl("--json", "verify"))
    assert verify["clean"] is True and verify["blobs_checked"] == 1 and verify["errors"] == 0

    gc = as_json(lashctl("--json", "gc", "--dry-run"))
    assert gc["dry_run"] is True and gc["items"] == [] and gc["failures"] == 0
    assert lashctl("get", kept)[1] == kept_bytes  # still there


def test_verify_beside_a_sweep_reports_only_what_is_still_wrong(lashctl, tmp_path, monkeypatch):
    """verify holds no lock: a reclaim that runs while it reads deletes blobs,
    sidecars and rows under it. What that sweep removed is no finding (a
    cron verify overlapping the nightly reclaim raises no false alarm); a
    committed blob whose bytes vanish meanwhile still is."""
    from lashctl import inspect
    from lashctl.core import Store
    from lashctl.timefmt import now_ms

    for n in range(12):
        (tmp_path / f"orphan{n}.bin").write_bytes(b"orphan %d\n" % n)
    (tmp_path / "kept.bin").write_bytes(b"kept and committed\n")
    (tmp_path / "lost.bin").write_bytes(b"committed, then lost\n")
    names = [f"orphan{n}.bin" for n in range(12)]
    lashctl("-q", "put", "-s", "old", *names)
    kept, lost = sha(b"kept and committed\n"), sha(b"committed, then lost\n")
    lashctl("-q", "put", "-s", "live", "kept.bin", "lost.bin")
    lashctl("-q", "commit", "-s", "live", kept, lost)
    store = Store(lashctl.store, lashctl.manifest)
    swept = []
    real_hash = type(store.blobs).hash

    def hash_beside_a_sweep(self, attachment_id, progress=None):
        if not swept:  # the first blob verify reads: the nightly reclaim starts
            swept.append(lashctl("reclaim", "--older-than", "0s", "--force"))
            self.delete(lost)  # and a committed blob's bytes are lost meanwhile
        return real_hash(self, attachment_id, progress)

    monkeypatch.setattr(type(store.blobs), "hash", hash_beside_a_sweep)
    with store.blobs.opened():
        report = inspect.verify(store, now_ms())
    assert swept[0][0] == 0
    found = sorted((f.kind, f.attachment_id) for f in report.findings)
    assert found == [("committed-bytes-missing", lost)], found
