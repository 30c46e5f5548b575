"""Shared test helpers: a store directory, a CLI runner, a tiny PNG builder."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest
from typer.testing import CliRunner

# Environment variables that would leak an operator's settings into a test.
LASHCTL_ENV = (
    "LASHCTL_STORE",
    "LASHCTL_MANIFEST",
    "LASHCTL_SESSION",
    "LASHCTL_LOCK_TIMEOUT",
    "LASHCTL_DEBUG",
    "LASHCTL_PROCESS_REGISTRY",
)


def sha(data: bytes) -> str:
    """A blob's id: the hex sha256 of its bytes."""
    import hashlib

    return hashlib.sha256(data).hexdigest()


def blob_path(root, attachment_id: str):
    """Where the file backend keeps a blob (README, "The tree")."""
    from lashctl.backends.blobs.localfs import BlobStore

    return BlobStore(Path(root)).blob_path(attachment_id)


def sidecar_path(root, attachment_id: str):
    """Where the file backend keeps a blob's sidecar."""
    from lashctl.backends.blobs.localfs import BlobStore

    return BlobStore(Path(root)).sidecar_path(attachment_id)


def land_at_intents(root, events) -> None:
    """Date each blob (and sidecar) under ``root`` at its earliest intent in
    ``events``: bytes land when their intent is recorded, and a sweep spares
    bytes written after its cutoff whatever the rows' times say."""
    import os
    from pathlib import Path

    first: dict[str, int] = {}
    for event in events:
        if not isinstance(event, dict):  # a lashctl.fold.Event
            event = {"op": event.op, "attachment_id": event.attachment_id, "intent_at_epoch_ms": event.at_ms}
        if event.get("op") == "intent" and isinstance(event.get("intent_at_epoch_ms"), int):
            aid = event.get("attachment_id")
            if isinstance(aid, str) and len(aid) == 64 and all(c in "0123456789abcdef" for c in aid):
                first[aid] = min(first.get(aid, event["intent_at_epoch_ms"]), event["intent_at_epoch_ms"])
    for aid, at_ms in first.items():
        for path in (Path(blob_path(root, aid)), Path(sidecar_path(root, aid))):
            # Only ever older: bytes a test dated further back stay so.
            if path.is_file() and not path.is_symlink() and path.stat().st_mtime_ns > at_ms * 1_000_000:
                os.utime(path, ns=(at_ms * 1_000_000, at_ms * 1_000_000), follow_symlinks=False)


def objects_dir(root):
    """The file backend's ``sha256/`` directory."""
    from lashctl.backends.blobs.localfs import BlobStore

    return BlobStore(Path(root)).objects


def png_bytes(width: int, height: int) -> bytes:
    """A valid, minimal greyscale PNG of the given size."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


# -- the fast tier ----------------------------------------------------------------------
# ``pytest -m "not slow"`` is the quick loop while working; the full run (CI) runs
# everything. Slow are: every test under these directories (subprocesses of the
# installed lashctl, the crash, race, model and fuzz suites, each remote backend
# against its real server), every test marked ``e2e`` wherever it lives, and the few
# tests marked ``slow`` by hand (an exhaustive or hypothesis-driven search, a lock
# wait). The conformance suite stays in the fast tier, S3 and PostgreSQL included:
# their servers start in about a second.
SLOW_DIRECTORIES = ("e2e", "reliability", "backends")


def pytest_collection_modifyitems(config, items):
    tests = Path(__file__).parent
    for item in items:
        parts = Path(item.fspath).relative_to(tests).parts
        if parts[0] in SLOW_DIRECTORIES or item.get_closest_marker("e2e"):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _private_cache_dir(tmp_path_factory, monkeypatch):
    """Each test gets its own cache dir for the manifest index (never ~/.cache)."""
    monkeypatch.setenv("LASHCTL_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """The store root (not created: lashctl creates what it needs)."""
    return tmp_path / "store"


@pytest.fixture
def cli(store: Path):
    """Run ``lashctl --store <store> ARGS`` through Typer's CliRunner.

    stdout and stderr are captured separately (``result.stdout``,
    ``result.stderr``, ``result.stdout_bytes``).
    """
    from lashctl.cli import app

    runner = CliRunner(env={name: None for name in LASHCTL_ENV})

    def run(*args: str, input: bytes | str | None = None, env: dict | None = None):
        return runner.invoke(app, ["--store", str(store), *args], input=input, env=env)

    return run


# -- S3 (moto in server mode): tests/servers.py ---------------------------------------
@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """The endpoint URL of a moto S3 server shared by the session."""
    import servers

    servers.need("moto", "the S3 backend tests")
    with servers.moto_server(tmp_path_factory.mktemp("moto")) as url:
        yield url


@pytest.fixture
def s3_bucket(s3_server, monkeypatch) -> str:
    """A fresh bucket, with AWS_* set so that obstore finds the server."""
    import servers

    servers.s3_env(monkeypatch, s3_server)
    return servers.new_bucket(s3_server)


# -- PostgreSQL (tests/pgserver.py) ----------------------------------------------
@pytest.fixture(scope="session")
def pg_server():
    """A throwaway PostgreSQL server for the whole session (skipped if none can start)."""
    import servers

    servers.need("psycopg", "the PostgreSQL backend tests")
    from pgserver import start

    server, stop = start()
    yield server
    stop()


@pytest.fixture
def pg_url(pg_server, request):
    """A URL of a fresh, empty database on ``pg_server``."""
    from pgserver import fresh_database

    return fresh_database(pg_server, f"t_{abs(hash(request.node.nodeid)):x}"[:60])
