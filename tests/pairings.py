"""The installed lashctl over every backend pairing, for black-box tests:
``Lashctl`` runs it; the ``lashctl`` fixture gives one per pairing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
from conftest import sha

from reliability_helpers import find_lashctl

LASHCTL = find_lashctl()
PAIRINGS = [("file", "jsonl"), ("file", "postgres"), ("s3", "jsonl"), ("s3", "postgres")]
KILLED = -signal.SIGKILL


class Lashctl:
    """``lashctl --store … [--manifest …] ARGS`` in a subprocess."""

    def __init__(self, tmp_path: Path, store: str, manifest: list[str]) -> None:
        self.tmp_path, self.store, self.manifest = tmp_path, store, manifest

    def __call__(
        self,
        *args: str,
        input: bytes = b"",
        fault: str | None = None,
        manifest: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess:
        extra = env or {}
        env = {k: v for k, v in os.environ.items() if not k.startswith("LASHCTL_")}
        env.update(COLUMNS="80", NO_COLOR="1", **extra)
        if fault is not None:
            env["LASHCTL_FAULT"] = fault
        given = self.manifest if manifest is None else manifest
        return subprocess.run(
            [LASHCTL, "--store", self.store, *given, *args],
            input=input,
            capture_output=True,
            env=env,
            timeout=120,
            cwd=self.tmp_path,
        )

    def ok(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        done = self(*args, **kwargs)
        assert done.returncode == 0, (args, done.returncode, done.stderr.decode(errors="replace"))
        return done

    def put(self, session: str, *contents: bytes) -> list[str]:
        paths = []
        for data in contents:
            path = self.tmp_path / f"in-{sha(data)[:12]}"
            path.write_bytes(data)
            paths.append(str(path))
        return self.ok("-q", "put", "-s", session, *paths).stdout.decode().split()

    def commits(self, session: str, ids: list[str]) -> dict[str, str]:
        """Each id's commit status (``committed`` or ``no_intent`` ...)."""
        done = self("--json", "commit", "-s", session, *ids)
        assert done.returncode in (0, 3), done.stderr.decode(errors="replace")
        return {item["id"]: item["status"] for item in json.loads(done.stdout)}

    def present(self, attachment_id: str) -> bool:
        out = self.tmp_path / "out"
        done = self("get", attachment_id, "-o", str(out))
        assert done.returncode in (0, 3), done.stderr.decode(errors="replace")
        return done.returncode == 0


@pytest.fixture(params=PAIRINGS, ids=lambda p: f"{p[0]}+{p[1]}")
def lashctl(request, tmp_path) -> Lashctl:
    blobs, manifest = request.param
    if blobs == "file":
        store = str(tmp_path / "store")
    else:
        import servers

        servers.need("obstore", "the S3 pairings")
        store = f"s3://{request.getfixturevalue('s3_bucket')}/lash"
    if manifest == "jsonl":
        given = [] if blobs == "file" else ["--manifest", str(tmp_path / "manifest.jsonl")]
    else:
        given = ["--manifest", request.getfixturevalue("pg_url")]
    run = Lashctl(tmp_path, store, given)
    if manifest == "postgres":
        run.ok("manifest", "init")
    return run
