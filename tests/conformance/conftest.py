"""Fixtures of the conformance suite: every backend behind the same protocol.

``blobs`` is a ``BlobBackend`` (``local``: a BlobStore in tmp_path; ``s3``: an
S3Blobs on a moto server). ``manifest`` is a ``ManifestBackend`` (``jsonl``: a
JSON-lines file; ``postgres``: a fresh PostgreSQL database; ``lash-sqlite``: a
sessions directory holding a lash session database for each session the tests
use, since lashctl never creates one). The servers start
only for the params that need them (``request.getfixturevalue``).

A test reaches behind the protocol only through a ``Harness``: what it takes to
plant rotten bytes or a stray object is the one thing that differs per medium.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from lashctl.ids import is_valid_id


@dataclass
class BlobHarness:
    """A blob backend and the medium-specific helpers the tests need."""

    kind: str
    backend: object
    # Overwrite the bytes stored under an id, behind the backend's back.
    rot: Callable[[str, bytes], None]
    # Plant an object at ``name`` relative to the blob area (``ab/whatever``).
    plant: Callable[[str, bytes], None]
    # Read the raw bytes at ``name`` relative to the blob area (None if absent).
    peek: Callable[[str], bytes | None]
    # A backend of the same kind whose root does not exist.
    missing: Callable[[], object]


def _local(tmp_path: Path) -> BlobHarness:
    from lashctl.backends.blobs.localfs import BlobStore

    root = tmp_path / "store"
    backend = BlobStore(root)
    backend.ensure_writable_layout()
    objects = root / "sha256"

    def rot(attachment_id: str, data: bytes) -> None:
        # In place, as a failing disk would: same file, other bytes.
        with open(objects / attachment_id[:2] / attachment_id, "r+b") as handle:
            handle.write(data)
            handle.truncate()

    def plant(name: str, data: bytes) -> None:
        path = objects / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def peek(name: str) -> bytes | None:
        path = objects / name
        return path.read_bytes() if path.is_file() else None

    return BlobHarness("local", backend, rot, plant, peek, lambda: BlobStore(tmp_path / "no-such-root"))


def _s3(request) -> BlobHarness:
    import servers

    servers.need("obstore", "the S3 conformance tests")
    bucket = request.getfixturevalue("s3_bucket")
    endpoint = request.getfixturevalue("s3_server")
    from lashctl.backends.blobs.s3 import S3Blobs

    prefix = "team/lash"
    backend = S3Blobs(f"s3://{bucket}/{prefix}")
    backend.ensure_writable_layout()
    client = servers.s3_client(endpoint)
    base = f"{prefix}/sha256/"

    def rot(attachment_id: str, data: bytes) -> None:
        assert is_valid_id(attachment_id)
        client.put_object(Bucket=bucket, Key=f"{base}{attachment_id[:2]}/{attachment_id}", Body=data)

    def plant(name: str, data: bytes) -> None:
        client.put_object(Bucket=bucket, Key=base + name, Body=data)

    def peek(name: str) -> bytes | None:
        try:
            return client.get_object(Bucket=bucket, Key=base + name)["Body"].read()
        except client.exceptions.NoSuchKey:
            return None

    return BlobHarness("s3", backend, rot, plant, peek, lambda: S3Blobs(f"s3://{bucket}-missing/{prefix}"))


@pytest.fixture(params=["local", "s3"])
def blob_harness(request, tmp_path) -> BlobHarness:
    if request.param == "local":
        return _local(tmp_path)
    return _s3(request)


@pytest.fixture
def blobs(blob_harness):
    """A BlobBackend (``local`` or ``s3``), its layout ready for writes."""
    return blob_harness.backend


# -- manifests ---------------------------------------------------------------------
LOCK_TIMEOUT = 0.3  # seconds: a second sweep gives up quickly
# The sessions of test_manifest_backend.py: a lash-sqlite manifest writes only to databases that exist.
LASH_SQLITE_SESSIONS = ("S", "s0", "s1", "s2", "é", "s1 with space")


def make_manifest(kind: str, request, tmp_path: Path, lock_timeout: float = LOCK_TIMEOUT):
    """A fresh, empty ManifestBackend of ``kind``."""
    if kind == "jsonl":
        from lashctl.backends.manifests.jsonl.manifest import JsonlManifest

        return JsonlManifest(tmp_path / "manifest.jsonl", lock_timeout=lock_timeout, warn=lambda _m: None)
    if kind == "lash-sqlite":
        from lash_sqlite_fixture import make_session_db

        from lashctl.backends.manifests.lash_sqlite import LashSqliteManifest

        for session in LASH_SQLITE_SESSIONS:
            make_session_db(tmp_path / "sessions", session)
        return LashSqliteManifest(f"lash-sqlite:{tmp_path / 'sessions'}", lock_timeout=lock_timeout)
    pytest.importorskip("psycopg")
    from lashctl.backends.manifests.postgres import PostgresManifest

    backend = PostgresManifest(request.getfixturevalue("pg_url"), lock_timeout=lock_timeout)
    backend.init()
    return backend


@pytest.fixture(params=["jsonl", "postgres", "lash-sqlite"])
def manifest_kind(request) -> str:
    return request.param


@pytest.fixture
def manifest(manifest_kind, request, tmp_path):
    """A ManifestBackend (``jsonl``, ``postgres`` or ``lash-sqlite``), empty and ready for writes."""
    return make_manifest(manifest_kind, request, tmp_path)
