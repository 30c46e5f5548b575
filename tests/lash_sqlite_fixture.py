"""Session databases as lash-sqlite-store makes them, for tests.

The tables lashctl reads (``attachment_manifest``, ``runtime_turn_commits``,
``session_meta``) with lash's columns, keys, CHECKs and indexes, stamped with
lash's schema version (``PRAGMA user_version`` 12) in WAL mode, and lash's
process registry (``processes``, version 12). Rows are written with the
statements lash uses: an intent's upsert, a commit's ``COALESCE`` stamp.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from lashctl.backends.manifests.lash_sqlite import session_db_name

SCHEMA_VERSION = 12
SESSION_TABLES = """
CREATE TABLE session_meta (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
    session_id TEXT NOT NULL, session_name TEXT NOT NULL, created_at TEXT NOT NULL,
    model TEXT NOT NULL, cwd TEXT, relation_json TEXT);
CREATE TABLE runtime_turn_commits (
    session_id TEXT NOT NULL, turn_id TEXT NOT NULL, turn_commit_hash TEXT NOT NULL,
    result_json TEXT NOT NULL, committed_at_ms INTEGER NOT NULL,
    PRIMARY KEY (session_id, turn_id));
CREATE TABLE attachment_manifest (
    attachment_id TEXT NOT NULL, session_id TEXT NOT NULL, canonical_uri TEXT NOT NULL,
    intent_at_ms INTEGER NOT NULL, committed_at_ms INTEGER,
    owner_kind TEXT CHECK (owner_kind IN ('turn', 'process')), owner_id TEXT,
    CHECK ((owner_kind IS NULL) = (owner_id IS NULL)),
    PRIMARY KEY (session_id, attachment_id));
CREATE INDEX idx_attachment_manifest_session ON attachment_manifest(session_id, committed_at_ms);
CREATE INDEX idx_attachment_manifest_uncommitted ON attachment_manifest(committed_at_ms)
    WHERE committed_at_ms IS NULL;
CREATE INDEX idx_attachment_manifest_owner
    ON attachment_manifest(session_id, owner_kind, owner_id, committed_at_ms);
"""
PROCESS_TABLES = """
CREATE TABLE processes (
    process_id TEXT PRIMARY KEY, registration_hash TEXT NOT NULL, owner_scope_id TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL, updated_at_ms INTEGER NOT NULL, change_seq INTEGER NOT NULL,
    status TEXT NOT NULL, record_json TEXT NOT NULL);
"""


def _connect(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


def make_session_db(directory: Path, session_id: str, name: str | None = None, version: int = SCHEMA_VERSION) -> Path:
    """A session's primary database (named by lash's rule unless ``name``), as lash opens one."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / (name or session_db_name(session_id))
    if path.exists():
        return path
    with _connect(path) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.executescript(SESSION_TABLES)
        conn.execute(f"PRAGMA user_version = {version}")
        conn.execute(
            "INSERT INTO session_meta VALUES (1, ?, ?, '2026-01-01T00:00:00Z', 'model', NULL, NULL)",
            (session_id, session_id),
        )
    conn.close()
    return path


def intent(path: Path, session_id: str, attachment_id: str, at_ms: int, owner: tuple[str, str] | None = None) -> None:
    """lash's ``record_intent``: insert, or refresh time and owner."""
    kind, owner_id = owner if owner is not None else (None, None)
    conn = _connect(path)
    conn.execute(
        "INSERT INTO attachment_manifest (attachment_id, session_id, canonical_uri, intent_at_ms,"
        " committed_at_ms, owner_kind, owner_id) VALUES (?, ?, ?, ?, NULL, ?, ?)"
        " ON CONFLICT(session_id, attachment_id) DO UPDATE SET canonical_uri = excluded.canonical_uri,"
        " intent_at_ms = excluded.intent_at_ms, owner_kind = excluded.owner_kind, owner_id = excluded.owner_id",
        (attachment_id, session_id, f"sha256:{attachment_id}", at_ms, kind, owner_id),
    )
    conn.close()


def commit(path: Path, session_id: str, attachment_id: str, at_ms: int) -> None:
    """lash's ``commit_refs``: the first commit wins."""
    conn = _connect(path)
    conn.execute(
        "UPDATE attachment_manifest SET committed_at_ms = COALESCE(committed_at_ms, ?)"
        " WHERE attachment_id = ? AND session_id = ?",
        (at_ms, attachment_id, session_id),
    )
    conn.close()


def turn_committed(path: Path, session_id: str, turn_id: str, at_ms: int) -> None:
    conn = _connect(path)
    conn.execute("INSERT INTO runtime_turn_commits VALUES (?, ?, 'hash', '{}', ?)", (session_id, turn_id, at_ms))
    conn.close()


def rows(path: Path) -> list[tuple]:
    """Every row of a session database, by key."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute(
            "SELECT session_id, attachment_id, intent_at_ms, committed_at_ms, owner_kind, owner_id"
            " FROM attachment_manifest ORDER BY session_id, attachment_id"
        ).fetchall()
    finally:
        conn.close()


def make_process_registry(path: Path, process_ids: list[str], version: int = SCHEMA_VERSION) -> Path:
    with _connect(path) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.executescript(PROCESS_TABLES)
        conn.execute(f"PRAGMA user_version = {version}")
        for process_id in process_ids:
            conn.execute("INSERT INTO processes VALUES (?, 'h', 'scope', 1, 1, 1, 'running', '{}')", (process_id,))
    conn.close()
    return path


def litter_beside(directory: Path, primary: Path) -> list[Path]:
    """What lash keeps beside its primaries and skips: a sidecar database
    (garbage here: reading it would fail) and WAL files of a closed database."""
    made = [
        primary.with_name(primary.name + ".effects.db"),
        directory / "closed-0000000000000000.db-wal",
        directory / "closed-0000000000000000.db-shm",
    ]
    for path in made:
        path.write_bytes(b"not a session database\n" * 50)
    return made
