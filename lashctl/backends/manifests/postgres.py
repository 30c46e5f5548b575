"""lash's PostgreSQL manifest table as a manifest backend (psycopg 3).

The table is lash's own ``lash_attachment_manifest``: one row per (session,
attachment) reference, the fold's state kept directly (there is no event log).
Every write follows ``lashctl.fold.step``: a batch of events is reduced per
key with ``lashctl.fold.Effect`` and written with one statement per key:

- an intent inserts an uncommitted row or raises the intent time of an
  uncommitted one (``INSERT … ON CONFLICT … DO UPDATE SET intent_at_ms =
  GREATEST(…) WHERE committed_at_ms IS NULL``); a committed row is unchanged;
- a commit stamps only an uncommitted row (the first commit wins), never inserts;
- a forget deletes the row (what follows it in the batch starts from nothing);
  a sweep's guarded forget only while the row is still an uncommitted intent
  from at or before its cutoff (``DELETE … WHERE committed_at_ms IS NULL AND
  intent_at_ms <= cutoff``): a row a writer refreshed or committed meanwhile stays.

Connections. ``reading()`` is a REPEATABLE READ, READ ONLY transaction;
``writing()`` one READ COMMITTED transaction, committed on exit and rolled back
on an exception; ``sweeping()`` holds a session-level advisory lock (one sweep
per database and table) on an autocommit connection: each ``append`` is its own
short transaction, so a sweep never holds a row lock a writer waits on for
longer than one batch. The streams (``uncommitted``, ``aged``, ``rows_by_id``)
use server-side cursors fetched ``ITERSIZE`` rows at a time (``WITH HOLD``
under autocommit), so memory stays flat whatever the table's size.

Indexes. lash's own indexes serve lash; lashctl's queries need two more, in
byte order (``COLLATE "C"``, the order of the blob listing a sweep merges with):
``lashctl_attachment_manifest_by_id`` (attachment_id, session_id) and
``lashctl_attachment_manifest_uncommitted_order`` (intent_at_ms, attachment_id,
session_id) WHERE committed_at_ms IS NULL. ``init()`` creates the table (lash's
definition) and lash's indexes if missing, and lashctl's indexes
(``CONCURRENTLY``, so it is safe on a live lash database).

Owners. A row lash wrote for a turn or a process stays, when aged and
uncommitted, until lash's own rule proves its owner dead (lash-postgres-store,
``live_attachment_refs``): a turn is dead once another turn of the same session
committed after the row's intent (``lash_runtime_turn_commits``; where that
table does not exist nothing proves it). A process is dead once it has no row
in the process registry, a rule lash applies only when its host says where the
registry lives (``session_store_factory_with_shared_process_registry``); an
unwired lash keeps process-owned rows for ever. So does lashctl, unless
``--process-registry`` names the registry's table (``process_registry``).

Schema version. lash stamps its schema version in ``lash_schema_versions``
(component ``lash-postgres-store``) and refuses a database of another version.
Where the stamp exists, lashctl reads it once per connection and refuses
(Corrupt) a version whose manifest and owner semantics it was not built for
(``SUPPORTED_SCHEMA_VERSIONS``); a database without it (a table ``init()``
made, an older lash) is read as before.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

from lashctl.backends import (
    POSTGRES_SCHEMES,
    is_postgres_url,
    is_registry_table,
    require_extra,
    strip_password,
)
from lashctl.backends.base import POSTGRES, ManifestBackend, ManifestWriter, uncommitted_where
from lashctl.errors import Corrupt, Denied, LashctlError, LockTimeout, Refused, Unavailable, UsageError
from lashctl.fold import Effect, Event, Row, canonical_uri, effect_runs
from lashctl.ids import URI_SCHEME, is_utf8_text, is_valid_id
from lashctl.timefmt import MAX_EPOCH_MS

if TYPE_CHECKING:  # pragma: no cover
    import psycopg

TABLE = "lash_attachment_manifest"
TURN_COMMITS = "lash_runtime_turn_commits"
SCHEMA_VERSIONS = "lash_schema_versions"
SCHEMA_COMPONENT = "lash-postgres-store"
# lash's versions whose lash_attachment_manifest, lash_runtime_turn_commits and
# lash_processes mean what lashctl implements: 15 bound intents to turn and
# process owners; 16 and 17 changed other tables only.
SUPPORTED_SCHEMA_VERSIONS = (15, 16, 17)

ITERSIZE = 2000  # rows fetched per round trip by the streams
_KEEP_BATCH = 500  # aged groups whose owners are checked with one query
_LOCK_POLL_S = 0.1
_CONNECT_TIMEOUT_S = 10

# The shape lashctl relies on: column -> type (format_type), and the primary key.
EXPECTED_COLUMNS = {
    "attachment_id": "text",
    "session_id": "text",
    "canonical_uri": "text",
    "intent_at_ms": "bigint",
    "committed_at_ms": "bigint",
    "owner_kind": "text",
    "owner_id": "text",
}
EXPECTED_PRIMARY_KEY = ("session_id", "attachment_id")

# lash's table and indexes (lash-postgres-store schema.sql), created only by init().
CREATE_TABLE = f"""CREATE TABLE IF NOT EXISTS {TABLE} (
    attachment_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    canonical_uri TEXT NOT NULL,
    intent_at_ms BIGINT NOT NULL,
    committed_at_ms BIGINT,
    owner_kind TEXT CHECK (owner_kind IN ('turn', 'process')),
    owner_id TEXT,
    CHECK ((owner_kind IS NULL) = (owner_id IS NULL)),
    PRIMARY KEY (session_id, attachment_id)
)"""
LASH_INDEXES = (
    f"CREATE INDEX IF NOT EXISTS idx_lash_attachment_manifest_uncommitted"
    f" ON {TABLE}(committed_at_ms) WHERE committed_at_ms IS NULL",
    f"CREATE INDEX IF NOT EXISTS idx_lash_attachment_manifest_owner"
    f" ON {TABLE}(session_id, owner_kind, owner_id, committed_at_ms)",
)
# lashctl's own: name -> definition (after "ON <table>").
LASHCTL_INDEXES = {
    "lashctl_attachment_manifest_by_id": '(attachment_id COLLATE "C", session_id COLLATE "C")',
    "lashctl_attachment_manifest_uncommitted_order": '(intent_at_ms, attachment_id COLLATE "C", session_id COLLATE "C") WHERE committed_at_ms IS NULL',
}

_COLS = "session_id, attachment_id, canonical_uri, intent_at_ms, committed_at_ms, owner_kind, owner_id"
_M_COLS = ", ".join(f"m.{c.strip()}" for c in _COLS.split(","))
_ID = 'attachment_id COLLATE "C"'
_SESSION = 'session_id COLLATE "C"'
_BY_ID_ORDER = f"ORDER BY {_ID}, {_SESSION}"

_SQL_UPSERT = (
    f"INSERT INTO {TABLE} AS m (session_id, attachment_id, canonical_uri, intent_at_ms, committed_at_ms)"
    " VALUES (%s, %s, %s, %s, %s)"
    " ON CONFLICT (session_id, attachment_id) DO UPDATE"
    " SET intent_at_ms = GREATEST(m.intent_at_ms, %s::bigint),"
    " committed_at_ms = %s::bigint"
    " WHERE m.committed_at_ms IS NULL"
)
_SQL_COMMIT = (
    f"UPDATE {TABLE} SET committed_at_ms = %s WHERE session_id = %s AND attachment_id = %s AND committed_at_ms IS NULL"
)
_SQL_DELETE = f"DELETE FROM {TABLE} WHERE session_id = %s AND attachment_id = %s"
# A sweep's guarded forget (``Event.forget(..., until_ms=cutoff)``, ``fold.step``):
# only a row that is still an uncommitted intent from at or before the cutoff.
_SQL_DELETE_AGED = (
    f"DELETE FROM {TABLE} WHERE session_id = %s AND attachment_id = %s"
    " AND committed_at_ms IS NULL AND intent_at_ms <= %s"
)
# After a forget the row is new: owner and any other column back to their defaults.
# ON CONFLICT only covers a concurrent writer inserting the key after our delete.
_SQL_REPLACE = (
    f"INSERT INTO {TABLE} AS m (session_id, attachment_id, canonical_uri, intent_at_ms, committed_at_ms)"
    " VALUES (%s, %s, %s, %s, %s)"
    " ON CONFLICT (session_id, attachment_id) DO UPDATE"
    " SET canonical_uri = EXCLUDED.canonical_uri, intent_at_ms = EXCLUDED.intent_at_ms,"
    " committed_at_ms = EXCLUDED.committed_at_ms, owner_kind = NULL, owner_id = NULL"
)

# Patterns of libpq's connection failures (they carry no SQLSTATE).
_DENIED_MARKS = (
    "authentication failed",
    "no password supplied",
    "password is required",
    "pg_hba.conf",
    "permission denied",
    "does not have connect privilege",
    "server requested",
    'role "',  # role "x" does not exist
)


def _row(values: tuple) -> Row:
    session_id, attachment_id, uri, intent_at, committed_at, owner_kind, owner_id = values
    if not is_valid_id(attachment_id):
        raise Corrupt(
            f"table {TABLE}: the row ({session_id!r}, {attachment_id!r}) has an attachment_id "
            "that is not a 64-character lowercase hex sha256; fix or delete that row"
        )
    if not session_id:
        raise Corrupt(f"table {TABLE}: a row of attachment {attachment_id} has an empty session_id")
    for name, value in (("intent_at_ms", intent_at), ("committed_at_ms", committed_at)):
        if value is not None and not 0 <= value <= MAX_EPOCH_MS:
            raise Corrupt(
                f"table {TABLE}: the row ({session_id!r}, {attachment_id}) has {name} {value}, "
                "outside the years 1970-9999; fix or delete that row"
            )
    return Row(
        session_id,
        attachment_id,
        uri if uri is not None else canonical_uri(attachment_id),
        intent_at,
        committed_at,
        owner_kind,
        owner_id,
    )


def _uncommitted_where(cutoff_ms: int | None, session: str | None) -> tuple[str, tuple]:
    """The WHERE clause (and its parameters) of uncommitted rows at or before a cutoff, of a session."""
    return uncommitted_where(cutoff_ms, session, suffix="_ms", mark="%s")


def _prefix_upper(prefix: str) -> str | None:
    """The least string above every string that starts with ``prefix`` (byte order)."""
    while prefix:
        last = ord(prefix[-1])
        if last < 0x10FFFF:
            return prefix[:-1] + chr(last + 1)
        prefix = prefix[:-1]
    return None


def lock_key(qualified_table: str) -> int:
    """The advisory-lock key of sweeps on one table: a fixed signed 64-bit number."""
    digest = hashlib.sha256(f"lashctl sweep {qualified_table}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


# An intent must be on disk before its bytes land, a sweep's forget before
# the bytes go: whatever the server's setting, a commit returns once durable.
_DURABLE = "SET synchronous_commit TO on"
CLOCK_SKEW_MS = 5 * 60_000  # how far ahead of the server's clock a sweeper's may be


class PostgresManifest(ManifestBackend):
    """``ManifestBackend`` on lash's ``lash_attachment_manifest`` table."""

    # A sweep holds an advisory lock that writers do not take: it re-checks
    # each candidate before and after deleting it (lashctl.sweep).
    kind = POSTGRES
    blocks_writers = False

    def __init__(
        self,
        url: str,
        lock_timeout: float = 30.0,
        process_registry: str | None = None,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        self._warn = warn
        if not is_postgres_url(url):
            raise UsageError(
                f"not a PostgreSQL URL: {strip_password(url)} (expected one of {', '.join(POSTGRES_SCHEMES)})"
            )
        if not is_utf8_text(url):  # argv bytes that are not UTF-8: libpq could never be given them
            raise UsageError("the PostgreSQL URL is not valid UTF-8 (percent-encode such bytes: %FF)")
        if not math.isfinite(lock_timeout) or lock_timeout < 0:
            raise ValueError(f"lock timeout {lock_timeout} is not a finite, non-negative number of seconds")
        if process_registry is not None and not is_registry_table(process_registry):
            raise ValueError(f"process registry {process_registry!r} is not a [SCHEMA.]NAME of plain identifiers")
        require_extra("psycopg", "postgres", "a PostgreSQL manifest")
        # psycopg logs what it ignores while closing a broken connection (a
        # warning Python would print to stderr): the failure itself is already
        # reported as one lashctl error line.
        import logging

        logging.getLogger("psycopg").addHandler(logging.NullHandler())
        self.url = url
        self.name = strip_password(url)
        self.lock_timeout = lock_timeout
        # The table of lash's process registry (``backends.process_registry``);
        # None: process owners are never proven dead, as in an unwired lash.
        self.process_registry = process_registry
        # Quoted as PostgreSQL folds an unquoted name (lower case): a keyword is a name too.
        self._registry_sql = (
            ".".join(f'"{part.lower()}"' for part in process_registry.split("."))
            if process_registry is not None
            else None
        )
        self._shape_checked = False

    def __repr__(self) -> str:
        return f"PostgresManifest({self.name!r})"

    # -- connections and errors ----------------------------------------------------
    def _fail(self, exc: Exception) -> LashctlError:
        """The lashctl error for a psycopg error: one line, never the password."""
        import psycopg
        from psycopg import errors as e

        text = " ".join(str(exc).split()) or type(exc).__name__
        text = text.replace("connection failed: ", "", 1)
        password = self._password()
        if password and len(password) >= 4:  # libpq never says it; a short one would mangle the text
            text = text.replace(password, "***")
        low = text.lower()
        if isinstance(exc, e.LockNotAvailable):
            return LockTimeout(
                f"PostgreSQL manifest {self.name}: a lock on {TABLE} was not granted within "
                f"{self.lock_timeout:g}s (another transaction holds it); retry later"
            )
        if (
            isinstance(exc, e.InsufficientPrivilege)
            or (getattr(exc, "sqlstate", None) or "").startswith("28")
            or (exc.__class__ is psycopg.OperationalError and any(m in low for m in _DENIED_MARKS))
        ):
            return Denied(f"PostgreSQL manifest {self.name}: access denied: {text}")
        if isinstance(exc, e.InvalidCatalogName) or (
            exc.__class__ is psycopg.OperationalError and "database" in low and "does not exist" in low
        ):
            return UsageError(f"PostgreSQL manifest {self.name}: {text}")
        if isinstance(exc, e.UndefinedTable):
            return UsageError(f"no table {TABLE} in {self.name} (create it with `lashctl manifest init`): {text}")
        if isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)):
            if "server closed the connection" in low or "terminating connection" in low:
                # libpq's wording ("...unexpectedly. This probably means...") in plain words
                text = "the server closed the connection (it stopped, restarted or ended this session)"
            return Unavailable(f"PostgreSQL manifest {self.name} unavailable: {text}")
        if isinstance(exc, (e.UndefinedColumn, e.DatatypeMismatch, e.CheckViolation, e.NotNullViolation)):
            return Corrupt(f"PostgreSQL manifest {self.name}: table {TABLE} is not as lashctl expects: {text}")
        return Unavailable(f"PostgreSQL manifest {self.name} failed: {text}")

    def _password(self) -> str | None:
        try:
            from psycopg.conninfo import conninfo_to_dict

            return conninfo_to_dict(self.url).get("password") or os.environ.get("PGPASSWORD") or None
        except Exception:  # noqa: BLE001 - a malformed URL: connect() will say so
            return None

    @contextmanager
    def _errors(self) -> Iterator[None]:
        import psycopg

        try:
            yield
        except psycopg.Error as exc:
            raise self._fail(exc) from exc

    def _connect(self, autocommit: bool = False) -> "psycopg.Connection":
        import psycopg

        kwargs: dict = {"autocommit": autocommit}
        if "connect_timeout" not in self.url and "PGCONNECT_TIMEOUT" not in os.environ:
            kwargs["connect_timeout"] = _CONNECT_TIMEOUT_S
        if "application_name" not in self.url and "PGAPPNAME" not in os.environ:
            kwargs["application_name"] = "lashctl"
        if "options" not in self.url and "PGOPTIONS" not in os.environ:
            # A table or row lock held elsewhere (a migration, VACUUM FULL, a
            # stuck transaction) stops a statement after --lock-timeout (exit
            # 75) instead of hanging the command; 0 would mean "for ever" to
            # PostgreSQL, so 1 ms is the least.
            kwargs["options"] = f"-c lock_timeout={max(1, round(self.lock_timeout * 1000))}"
        try:
            return psycopg.connect(self.url, **kwargs)
        except psycopg.ProgrammingError as exc:  # a malformed URL
            # libpq quotes the URI (or the token) it cannot parse: a password may be in it.
            reason = re.sub(r'".*"', '"..."', " ".join(str(exc).split()))  # first to last quote
            raise UsageError(f"bad PostgreSQL URL {self.name}: {reason}") from exc
        except UnicodeError as exc:  # percent-encoded bytes that are not UTF-8
            raise UsageError(f"bad PostgreSQL URL {self.name}: a percent-encoded value is not valid UTF-8") from exc
        except psycopg.Error as exc:
            raise self._fail(exc) from exc

    @contextmanager
    def _connection(self, autocommit: bool = False) -> Iterator["psycopg.Connection"]:
        conn = self._connect(autocommit)
        try:
            yield conn
        finally:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - closing a broken connection
                pass

    # -- the table -----------------------------------------------------------------
    def _table_oid(self, conn: "psycopg.Connection") -> int | None:
        return conn.execute("SELECT to_regclass(%s)::oid", (TABLE,)).fetchone()[0]

    def _probe(self, conn: "psycopg.Connection") -> int | None:
        """The table's oid (None: missing), once a lash schema version this
        lashctl was not built for has been refused: one round trip, a second
        only where lash stamped its version."""
        oid, stamped = conn.execute(
            "SELECT to_regclass(%s)::oid, to_regclass(%s) IS NOT NULL", (TABLE, SCHEMA_VERSIONS)
        ).fetchone()
        if stamped:
            self._check_schema_version(conn)
        return oid

    def _check_schema_version(self, conn: "psycopg.Connection") -> None:
        """Corrupt unless lash's stamp in ``lash_schema_versions`` is a supported
        version. A table without a row of lash's component is read as no stamp,
        as lash reads it (it would stamp its version there)."""
        from psycopg import errors as e

        where = f"{SCHEMA_VERSIONS} in {conn.info.dbname} at {self.name}"
        try:
            found = conn.execute(
                f"SELECT version FROM {SCHEMA_VERSIONS} WHERE component = %s", (SCHEMA_COMPONENT,)
            ).fetchone()
        except (e.UndefinedColumn, e.UndefinedFunction, e.DatatypeMismatch) as exc:
            raise Corrupt(f"table {where} is not lash's schema version table: {' '.join(str(exc).split())}") from exc
        if found is None:
            return
        supported = ", ".join(str(v) for v in SUPPORTED_SCHEMA_VERSIONS)
        if not isinstance(found[0], int):
            raise Corrupt(f"table {where} is not lash's schema version table: version {found[0]!r} is not a number")
        if found[0] not in SUPPORTED_SCHEMA_VERSIONS:
            raise Corrupt(
                f"PostgreSQL manifest {self.name}: lash schema version {found[0]} (in {SCHEMA_VERSIONS}) "
                f"is not one this lashctl was built for (it supports {supported}), and its rows may "
                "mean something else: nothing was read or changed"
            )

    def _check_process_registry(self, conn: "psycopg.Connection") -> None:
        """UsageError unless the table ``--process-registry`` names exists with
        lash's ``process_id`` column."""
        table, quoted = self.process_registry, self._registry_sql
        if table is None:
            return
        exists, has_id = conn.execute(
            "SELECT to_regclass(%s) IS NOT NULL, EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass(%s)"
            " AND attname = 'process_id' AND attnum > 0 AND NOT attisdropped)",
            (quoted, quoted),
        ).fetchone()
        if not exists:
            raise UsageError(
                f"--process-registry: no table {table} in {conn.info.dbname} at {self.name} "
                "(name the table lash's process registry lives in)"
            )
        if not has_id:
            raise UsageError(
                f"--process-registry: table {table} in {conn.info.dbname} has no process_id column: "
                "it is not lash's process registry"
            )

    def _check_shape(self, conn: "psycopg.Connection") -> None:
        """Corrupt for a lash schema version lashctl does not support, UsageError
        if the table is missing, Corrupt naming what differs if misshapen;
        UsageError if the process registry named is not there."""
        oid = self._probe(conn)
        if oid is None:
            raise UsageError(
                f"no table {TABLE} in {conn.info.dbname} at {self.name} (create it with `lashctl manifest init`)"
            )
        if self._shape_checked:
            return
        relkind = conn.execute("SELECT relkind FROM pg_class WHERE oid = %s", (oid,)).fetchone()[0]
        if relkind not in ("r", "p"):
            raise Corrupt(f"{TABLE} in {conn.info.dbname} is not a table (relkind {relkind!r})")
        columns = dict(
            conn.execute(
                "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
                " WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped",
                (oid,),
            ).fetchall()
        )
        problems = []
        for column, expected in EXPECTED_COLUMNS.items():
            found = columns.get(column)
            if found is None:
                problems.append(f"no column {column} ({expected})")
            elif found != expected:
                problems.append(f"column {column} is {found}, expected {expected}")
        pk = conn.execute(
            "SELECT array_agg(a.attname::text ORDER BY k.ord) FROM pg_index i"
            " CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)"
            " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum"
            " WHERE i.indrelid = %s AND i.indisprimary",
            (oid,),
        ).fetchone()[0]
        if pk is None:
            problems.append(f"no primary key, expected ({', '.join(EXPECTED_PRIMARY_KEY)})")
        elif sorted(pk) != sorted(EXPECTED_PRIMARY_KEY):
            problems.append(f"primary key is ({', '.join(pk)}), expected ({', '.join(EXPECTED_PRIMARY_KEY)})")
        if problems:
            raise Corrupt(
                f"table {TABLE} in {conn.info.dbname} at {self.name} is not lash's attachment "
                f"manifest: {'; '.join(problems)}"
            )
        self._check_process_registry(conn)
        self._shape_checked = True

    def init(self) -> list[str]:
        """Create the table and its indexes where missing (``lashctl manifest init``).

        lash's table and indexes in one transaction, then lashctl's indexes
        concurrently (writers are not blocked on a live table). Never creates
        lash's other tables. Returns what was created.
        """
        created: list[str] = []
        with self._connection(autocommit=True) as conn, self._errors():
            if self._probe(conn) is not None:
                # A table of that name that is not lash's is refused before anything is added to it.
                self._shape_checked = False
                self._check_shape(conn)
            with conn.transaction():
                if self._table_oid(conn) is None:
                    created.append(f"table {TABLE}")
                conn.execute(CREATE_TABLE)
                existing = self._index_names(conn)
                for sql in LASH_INDEXES:
                    name = sql.split(" EXISTS ", 1)[1].split()[0]
                    if name not in existing:
                        created.append(f"index {name}")
                    conn.execute(sql)
            self._shape_checked = False
            self._check_shape(conn)
            for name, definition in LASHCTL_INDEXES.items():
                valid = self._index_names(conn).get(name)
                if valid:
                    continue
                if valid is False:  # an earlier CONCURRENTLY build was interrupted
                    conn.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
                conn.execute(f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON {TABLE} {definition}")
                created.append(f"index {name}")
        return created

    def _index_names(self, conn: "psycopg.Connection") -> dict[str, bool]:
        """Index name -> whether it is valid, for the table's indexes."""
        return dict(
            conn.execute(
                "SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
                " WHERE i.indrelid = to_regclass(%s)",
                (TABLE,),
            ).fetchall()
        )

    def exists(self) -> bool:
        """The server answers and the table exists (Unavailable/Denied if it does not answer)."""
        with self._connection(autocommit=True) as conn, self._errors():
            return self._table_oid(conn) is not None

    def identity(self) -> str:
        """The server and database (a URL as written where it cannot be parsed)."""
        try:
            from psycopg.conninfo import conninfo_to_dict

            info = conninfo_to_dict(self.url)
        except Exception:  # noqa: BLE001 - an unparsable URL: compare it as written
            return "postgresql:" + self.name
        host = info.get("host") or "localhost"
        return f"postgresql://{host}:{info.get('port') or 5432}/{info.get('dbname') or info.get('user') or ''}"

    def check_writable(self) -> None:
        """Refuse a missing (UsageError) or misshapen (Corrupt) table."""
        with self._connection(autocommit=True) as conn, self._errors():
            self._check_shape(conn)

    # -- the three ways in ---------------------------------------------------------
    def litter(self) -> list:
        """A table leaves no litter behind (the interface of lashctl.backends.base)."""
        return []

    def remove_litter(self, found) -> None:
        raise ValueError("a PostgreSQL manifest has no litter")

    @contextmanager
    def reading(self, tolerant: bool = False) -> Iterator["PostgresView"]:
        from psycopg import IsolationLevel

        with self._connection() as conn:
            with self._errors():
                conn.isolation_level = IsolationLevel.REPEATABLE_READ
                conn.read_only = True
                self._check_shape(conn)
            try:
                yield PostgresView(self, conn, autocommit=False, tolerant=tolerant, read_only=True)
            finally:
                if not conn.closed:
                    try:
                        conn.rollback()  # nothing was written; closing would end it too
                    except Exception:  # noqa: BLE001 - never hide the command's own error
                        pass

    @contextmanager
    def writing(self) -> Iterator["PostgresView"]:
        with self._connection() as conn:
            with self._errors():
                self._check_shape(conn)
                conn.execute(_DURABLE)
            try:
                yield PostgresView(self, conn, autocommit=False)
            except BaseException:
                if not conn.closed:
                    try:
                        conn.rollback()
                    except Exception:  # noqa: BLE001 - the original error matters
                        pass
                raise
            with self._errors():
                conn.commit()

    @contextmanager
    def sweeping(self) -> Iterator["PostgresView"]:
        with self._connection(autocommit=True) as conn:
            with self._errors():
                self._check_shape(conn)
                conn.execute(_DURABLE)
                qualified = conn.execute(
                    "SELECT to_regclass(%s)::regclass::text, current_database()", (TABLE,)
                ).fetchone()
                key = lock_key(f"{qualified[1]}.{qualified[0]}")
                started = time.monotonic()
                deadline, told = started + self.lock_timeout, False
                while not conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]:
                    if (
                        not told
                        and self._warn is not None
                        and time.monotonic() - started >= 1
                        and self.lock_timeout > 1
                    ):
                        self._warn(
                            f"waiting for the sweep lock on {TABLE} at {self.name} (another sweep "
                            f"holds it; up to {self.lock_timeout:g}s, --lock-timeout)"
                        )
                        told = True
                    if time.monotonic() >= deadline:
                        raise LockTimeout(
                            f"could not take the sweep lock on {TABLE} at {self.name} within "
                            f"{self.lock_timeout:g}s: another sweep holds it; retry later"
                        )
                    time.sleep(_LOCK_POLL_S)
            try:
                view = PostgresView(self, conn, autocommit=True)
                view.check_sweep_clock()
                yield view
            finally:
                if not conn.closed:
                    try:
                        conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
                    except Exception:  # noqa: BLE001 - closing the session releases it anyway
                        pass


class PostgresView(ManifestWriter):
    """``ManifestView`` and ``ManifestWriter`` on one connection."""

    def __init__(
        self,
        backend: PostgresManifest,
        conn: "psycopg.Connection",
        autocommit: bool,
        tolerant: bool = False,
        read_only: bool = False,
    ) -> None:
        self.backend = backend
        self.conn = conn
        self.autocommit = autocommit
        self.read_only = read_only
        # A tolerant view (a listing) skips rows it cannot trust, keeping why
        # here, as a tolerant read of a JSON-lines log skips malformed lines.
        self.tolerant = tolerant
        self.malformed: list[Corrupt] = []
        self._owner_tables: tuple[bool, str | None] | None = None  # (turn commits exist, process registry)
        self._keep_cache: dict[tuple, str | None] = {}
        self._cursors = 0

    # -- helpers -------------------------------------------------------------------
    def _stream(self, sql: str, params: tuple = ()) -> Iterator[tuple]:
        """Rows of ``sql`` through a server-side cursor, ``ITERSIZE`` at a time."""
        for chunk in self._chunks(sql, params):
            yield from chunk

    def _chunks(self, sql: str, params: tuple = ()) -> Iterator[list[tuple]]:
        """``_stream``'s rows as fetched: lists of up to ``ITERSIZE``."""
        self._cursors += 1
        name = f"lashctl_stream_{self._cursors}"
        with self.backend._errors():
            cur = self.conn.cursor(name, withhold=self.autocommit)
            cur.itersize = ITERSIZE
        try:
            with self.backend._errors():
                cur.execute(sql, params)
                while True:
                    chunk = cur.fetchmany(ITERSIZE)
                    if not chunk:
                        break
                    yield chunk
        finally:
            if not self.conn.closed:
                try:
                    cur.close()
                except Exception:  # noqa: BLE001 - a broken connection: the error is raised elsewhere
                    pass

    def _grouped(self, rows: Iterable[tuple]) -> Iterator[list[Row]]:
        group: list[Row] = []
        for values in rows:
            row = self._trusted(values)
            if row is None:
                continue  # a tolerant view skips it (and names it)
            if group and group[0].attachment_id != row.attachment_id:
                yield group
                group = []
            group.append(row)
        if group:
            yield group

    def owner_tables(self) -> tuple[bool, str | None]:
        """Whether lash's ``lash_runtime_turn_commits`` exists (probed once per
        connection), and the process registry's table: None where
        ``--process-registry`` did not name one, and no process owner is ever
        proven dead (lash's rule without a wired registry)."""
        if self._owner_tables is None:
            with self.backend._errors():
                turns = self.conn.execute("SELECT to_regclass(%s) IS NOT NULL", (TURN_COMMITS,)).fetchone()[0]
            self._owner_tables = (turns, self.backend.process_registry)
        return self._owner_tables

    def _dead_owner_sql(self, alias: str = "m") -> str:
        """SQL true when the uncommitted row ``alias`` has no owner or lash proves its owner dead."""
        turns, registry = self.owner_tables()
        parts = [f"{alias}.owner_kind IS NULL"]
        if turns:
            parts.append(
                f"({alias}.owner_kind = 'turn' AND EXISTS (SELECT 1 FROM {TURN_COMMITS} AS tc"
                f" WHERE tc.session_id = {alias}.session_id AND tc.turn_id <> {alias}.owner_id"
                f" AND tc.committed_at_ms > {alias}.intent_at_ms))"
            )
        if registry is not None:
            parts.append(
                f"({alias}.owner_kind = 'process' AND NOT EXISTS (SELECT 1 FROM {self.backend._registry_sql} AS p"
                f" WHERE p.process_id = {alias}.owner_id))"
            )
        return "(" + " OR ".join(parts) + ")"

    # -- ManifestView ----------------------------------------------------------------
    def rows_for_keys(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], Row]:
        """The rows of these keys. In a write transaction they are also locked
        (in key order) until it ends: what a writer decides from them (commit's
        status) stays true, since a sweep's forget of such a row waits for it."""
        if not keys:
            return {}
        sessions = [k[0] for k in keys]
        ids = [k[1] for k in keys]
        lock = f" ORDER BY m.{_SESSION}, m.{_ID} FOR UPDATE OF m" if not self.autocommit and not self.read_only else ""
        with self.backend._errors():
            found = self.conn.execute(
                f"SELECT {_M_COLS} FROM unnest(%s::text[], %s::text[]) AS k(session_id, attachment_id)"
                f" JOIN {TABLE} AS m ON m.session_id = k.session_id AND m.attachment_id = k.attachment_id{lock}",
                (sessions, ids),
            ).fetchall()
        return {(r[0], r[1]): _row(r) for r in found}

    def rows_for_ids(self, attachment_ids: list[str]) -> dict[str, list[Row]]:
        """The rows of many ids in one indexed query (a sweep's re-check of a batch)."""
        out: dict[str, list[Row]] = {i: [] for i in attachment_ids}
        if not attachment_ids:
            return out
        with self.backend._errors():
            found = self.conn.execute(
                f"SELECT {_COLS} FROM {TABLE} WHERE {_ID} = ANY(%s) ORDER BY {_ID}, {_SESSION}", (list(attachment_ids),)
            ).fetchall()
        for values in found:
            row = _row(values)
            out[row.attachment_id].append(row)
        return out

    def check_ids(self) -> None:
        """Corrupt if any row's id is not a valid one (upper case, padded, ...):
        such a row may name a blob that the id-equal queries cannot see. One
        scan of the table in the server, asked by commands that delete named
        ids (a sweep reads every row anyway)."""
        with self.backend._errors():
            bad = self.conn.execute(f"SELECT {_COLS} FROM {TABLE} WHERE {_ID} !~ '^[0-9a-f]{{64}}$' LIMIT 1").fetchone()
        if bad is not None:
            _row(bad)  # raises Corrupt naming the row

    def rows_for_id(self, attachment_id: str) -> list[Row]:
        with self.backend._errors():
            found = self.conn.execute(
                f"SELECT {_COLS} FROM {TABLE} WHERE {_ID} = %s {_BY_ID_ORDER}", (attachment_id,)
            ).fetchall()
        return [_row(r) for r in found]

    def ids_with_prefix(self, prefix: str) -> list[str]:
        where, params = self._prefix_where(prefix)
        with self.backend._errors():
            found = self.conn.execute(f"SELECT DISTINCT {_ID} FROM {TABLE} {where} ORDER BY {_ID}", params).fetchall()
        for (attachment_id,) in found:
            if not is_valid_id(attachment_id):
                raise Corrupt(
                    f"table {TABLE}: attachment_id {attachment_id!r} is not a 64-character "
                    "lowercase hex sha256; fix or delete its rows"
                )
        return [r[0] for r in found]

    @staticmethod
    def _prefix_where(prefix: str) -> tuple[str, tuple]:
        if not prefix:
            return "", ()
        upper = _prefix_upper(prefix)
        if upper is None:
            return f"WHERE {_ID} >= %s", (prefix,)
        return f"WHERE {_ID} >= %s AND {_ID} < %s", (prefix, upper)

    def uncommitted(self, cutoff_ms: int | None, session: str | None) -> Iterator[Row]:
        """Uncommitted rows with intent at or before the cutoff: oldest first, then by id, then session."""
        where, params = _uncommitted_where(cutoff_ms, session)
        sql = f"SELECT {_COLS} FROM {TABLE} WHERE {where} ORDER BY intent_at_ms, {_ID}, {_SESSION}"
        for values in self._stream(sql, params):
            row = self._trusted(values)
            if row is not None:
                yield row

    def _trusted(self, values: tuple) -> Row | None:
        """The row of these column values; a tolerant view keeps why it cannot
        trust one (and returns None) where another raises Corrupt."""
        try:
            return _row(values)
        except Corrupt as exc:
            if not self.tolerant:
                raise
            self.malformed.append(exc)
            return None

    def uncommitted_chunks(self, cutoff_ms: int | None, session: str | None) -> Iterator[list[tuple]]:
        """``uncommitted`` as raw rows ``(id, session, uri, intent_at)``, in
        chunks as fetched; ``rendered_row`` turns one into its ``Row``."""
        where, params = _uncommitted_where(cutoff_ms, session)
        sql = (
            f"SELECT {_ID}, {_SESSION}, coalesce(canonical_uri, '{URI_SCHEME}' || {_ID}), intent_at_ms"
            f" FROM {TABLE} WHERE {where} ORDER BY intent_at_ms, {_ID}, {_SESSION}"
        )
        return self._chunks(sql, params)

    def rendered_row(self, values: tuple) -> Row | None:
        """The ``Row`` of a raw row of ``uncommitted_chunks`` (uncommitted;
        owners are not listed); None for a row a tolerant view skips."""
        attachment_id, session_id, uri, intent_at = values
        return self._trusted((session_id, attachment_id, uri, intent_at, None, None, None))

    def aged(self, cutoff_ms: int) -> Iterator[list[Row]]:
        """For each id with an uncommitted row at or before the cutoff, every row of it, in id order."""
        sql = (
            f"SELECT {_M_COLS} FROM ("
            f"  SELECT DISTINCT {_ID} AS aid FROM {TABLE}"
            f"  WHERE committed_at_ms IS NULL AND intent_at_ms <= %s) AS c"
            f" JOIN {TABLE} AS m ON m.{_ID} = c.aid"
            f" ORDER BY c.aid, m.{_SESSION}"
        )
        batch: list[list[Row]] = []
        for group in self._grouped(self._stream(sql, (cutoff_ms,))):
            batch.append(group)
            if len(batch) >= _KEEP_BATCH:
                self._prefetch_keep(batch, cutoff_ms)
                yield from batch
                batch = []
        if batch:
            self._prefetch_keep(batch, cutoff_ms)
            yield from batch

    def rows_by_id(self, prefix: str = "") -> Iterator[list[Row]]:
        where, params = self._prefix_where(prefix)
        yield from self._grouped(self._stream(f"SELECT {_COLS} FROM {TABLE} {where} {_BY_ID_ORDER}", params))

    def row_count(self) -> int:
        with self.backend._errors():
            return self.conn.execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0]

    # -- owners ----------------------------------------------------------------------
    @staticmethod
    def _keep_key(row: Row) -> tuple:
        return (row.session_id, row.attachment_id, row.intent_at_epoch_ms, row.owner_kind, row.owner_id)

    def keep_reason(self, row: Row) -> str | None:
        """Why an aged uncommitted row must stay although no session committed it, or None.

        None for a row without an owner. A turn-owned row stays until another
        turn of its session committed after the row's intent (always, where
        ``lash_runtime_turn_commits`` does not exist); a process-owned row
        stays unless ``--process-registry`` named the registry's table and
        the process has no row there.
        """
        if row.committed or row.owner_kind is None:
            return None
        key = self._keep_key(row)
        if key not in self._keep_cache:
            self._check_owners([row])
        return self._keep_cache[key]

    def _prefetch_keep(self, groups: list[list[Row]], cutoff_ms: int) -> None:
        if len(self._keep_cache) > 100_000:
            self._keep_cache.clear()
        self._check_owners(
            [
                r
                for g in groups
                for r in g
                if not r.committed
                and r.owner_kind is not None
                and r.intent_at_epoch_ms <= cutoff_ms
                and self._keep_key(r) not in self._keep_cache
            ]
        )

    def _check_owners(self, rows: list[Row]) -> None:
        """Decide and cache the keep reason of owned uncommitted rows, batched."""
        if not rows:
            return
        turns_table, _registry = self.owner_tables()
        turn_rows = [r for r in rows if r.owner_kind == "turn"]
        process_rows = [r for r in rows if r.owner_kind == "process"]
        other_rows = [r for r in rows if r.owner_kind not in ("turn", "process")]
        for row in other_rows:
            self._keep_cache[self._keep_key(row)] = f"owner {row.owner_kind} {row.owner_id} is of an unknown kind"
        if turn_rows:
            dead: set[int] = set()
            if turns_table:
                with self.backend._errors():
                    dead = {
                        i - 1
                        for (i,) in self.conn.execute(
                            f"SELECT k.i FROM unnest(%s::text[], %s::text[], %s::bigint[]) WITH ORDINALITY"
                            f" AS k(session_id, owner_id, intent_at_ms, i)"
                            f" WHERE EXISTS (SELECT 1 FROM {TURN_COMMITS} AS tc WHERE tc.session_id = k.session_id"
                            f" AND tc.turn_id <> k.owner_id AND tc.committed_at_ms > k.intent_at_ms)",
                            (
                                [r.session_id for r in turn_rows],
                                [r.owner_id for r in turn_rows],
                                [r.intent_at_epoch_ms for r in turn_rows],
                            ),
                        ).fetchall()
                    }
            for i, row in enumerate(turn_rows):
                if i in dead:
                    reason = None
                elif turns_table:
                    reason = (
                        f"owner turn {row.owner_id} not proven dead: no later commit of another turn "
                        f"of session {row.session_id}"
                    )
                else:
                    reason = f"owner turn {row.owner_id} not proven dead (no {TURN_COMMITS} table)"
                self._keep_cache[self._keep_key(row)] = reason
        if process_rows:
            self._check_process_owners(process_rows)

    def _check_process_owners(self, rows: list[Row]) -> None:
        """Cache the keep reason of process-owned rows: dead (None) only when
        the registry is named and lacks the process, as lash decides."""
        _turns, registry = self.owner_tables()
        alive: set[str] = set()
        if registry is not None:
            with self.backend._errors():
                alive = {
                    p
                    for (p,) in self.conn.execute(
                        f"SELECT process_id FROM {self.backend._registry_sql} WHERE process_id = ANY(%s::text[])",
                        (sorted({r.owner_id for r in rows}),),
                    ).fetchall()
                }
        for row in rows:
            if registry is None:
                reason = (
                    f"owned by process {row.owner_id} (lash keeps process-owned intents unless its "
                    "process registry is named: --process-registry)"
                )
            elif row.owner_id in alive:
                reason = f"owner process {row.owner_id} is still registered in {registry}"
            else:
                reason = None
            self._keep_cache[self._keep_key(row)] = reason

    def check_sweep_clock(self) -> None:
        """Ages are judged by this machine's clock: one ahead of the server's
        takes fresh uploads for aged ones (Refused, exit 4)."""
        with self.backend._errors():
            ahead = (
                time.time() * 1000
                - self.conn.execute("SELECT (extract(epoch FROM clock_timestamp()) * 1000)::float8").fetchone()[0]
            )
        if ahead > CLOCK_SKEW_MS:
            raise Refused(
                f"refusing to sweep: this machine's clock is {ahead / 60_000:.0f} minute(s) "
                f"ahead of the PostgreSQL server's at {self.backend.name}; fix the clock (NTP)"
            )

    def has_live_row(self, attachment_id: str, cutoff_ms: int) -> bool:
        """Whether the id has a row a sweep must respect: committed, uncommitted
        with intent after ``cutoff_ms``, or uncommitted with an owner not proven
        dead (lash's root predicate). One indexed query; re-checked by a sweep
        before and after deleting the object."""
        sql = (
            f"SELECT EXISTS (SELECT 1 FROM {TABLE} AS m WHERE m.{_ID} = %s"
            f" AND NOT (m.committed_at_ms IS NULL AND m.intent_at_ms <= %s AND {self._dead_owner_sql('m')}))"
        )
        with self.backend._errors():
            return self.conn.execute(sql, (attachment_id, cutoff_ms)).fetchone()[0]

    # -- ManifestWriter ----------------------------------------------------------------
    def append(self, events: list[Event]) -> None:
        """Apply events, in order, in one transaction: per key the net effect
        (``fold.Effect``), one or two statements, all pipelined.

        A guarded forget (a sweep's, with its cutoff) is a conditional delete:
        whether it deletes depends on the stored row, so it ends the key's run
        of events and what follows it starts a new run on whatever is left.
        """
        if not events:
            return
        try:
            runs = effect_runs(events)
        except ValueError as exc:
            raise Corrupt(str(exc)) from None
        # Keys in one order: two lashctl writers lock rows in the same order, never deadlock.
        statements: list[tuple[str, tuple]] = []
        for session, aid in sorted(runs):
            for effect in runs[(session, aid)]:
                if isinstance(effect, Effect):
                    statements += self._effect_statements(session, aid, effect)
                else:
                    statements.append((_SQL_DELETE_AGED, (session, aid, effect)))
        if not statements:
            return
        with self.backend._errors():
            if self.autocommit:
                with self.conn.transaction():
                    self._write(statements)
            else:
                self._write(statements)

    @staticmethod
    def _effect_statements(session: str, aid: str, effect: Effect) -> list[tuple[str, tuple]]:
        row = effect.from_absent
        if effect.replaces:
            out = [(_SQL_DELETE, (session, aid))]
            if row is not None:
                out.append(
                    (_SQL_REPLACE, (session, aid, row.canonical_uri, row.intent_at_epoch_ms, row.committed_at_epoch_ms))
                )
            return out
        if row is not None:
            return [
                (
                    _SQL_UPSERT,
                    (
                        session,
                        aid,
                        row.canonical_uri,
                        row.intent_at_epoch_ms,
                        row.committed_at_epoch_ms,
                        effect.refreshed_intent,
                        effect.commit_at,
                    ),
                )
            ]
        if effect.commit_at is not None:
            return [(_SQL_COMMIT, (effect.commit_at, session, aid))]
        return []

    def _write(self, statements: list[tuple[str, tuple]]) -> None:
        """Send the statements pipelined: one round trip per batch, not per key."""
        with self.conn.pipeline(), self.conn.cursor() as cur:
            for sql, params in statements:
                cur.execute(sql, params)
