"""The PostgreSQL manifest backend against a real server (tests/pgserver.py).

The fold (``lashctl.fold.fold``) is the reference: whatever events are
appended, in whatever batches, the table must hold exactly the rows the fold
computes.
"""

from __future__ import annotations

import json
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

psycopg = pytest.importorskip("psycopg")

from lashctl.backends.manifests.postgres import (  # noqa: E402
    TABLE,
    PostgresManifest,
    lock_key,
    strip_password,
)
from lashctl.backends.base import ManifestView  # noqa: E402
from lashctl.errors import Corrupt, Denied, LockTimeout, Unavailable, UsageError  # noqa: E402
from lashctl.fold import COMMIT, FORGET, INTENT, Event, Row, canonical_uri, fold  # noqa: E402

IDS = [c * 64 for c in "0a9f"] + ["ab" * 32, "abc" + "0" * 61]
SESSIONS = ["s1", "s2", "S", "é"]


def aid(n: int) -> str:
    return f"{n:064x}"


@pytest.fixture
def manifest(pg_url) -> PostgresManifest:
    m = PostgresManifest(pg_url, lock_timeout=0.3)
    m.init()
    return m


def all_rows(m: PostgresManifest) -> dict[tuple[str, str], Row]:
    with m.reading() as view:
        return {r.key: r for group in view.rows_by_id() for r in group}


def exec_sql(url: str, *statements: str, params: tuple | None = None) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for sql in statements:
            conn.execute(sql, params)


# -- the fold ------------------------------------------------------------------------------
events_st = st.lists(
    st.builds(
        lambda op, i, s, at, uri_tag: Event(
            op,
            IDS[i],
            SESSIONS[s],
            None if op == FORGET else at,
            (canonical_uri(IDS[i]) if uri_tag == 0 else f"lash-attachment://other/{uri_tag}") if op == INTENT else None,
        ),
        st.sampled_from([INTENT, INTENT, COMMIT, FORGET]),
        st.integers(0, len(IDS) - 1),
        st.integers(0, len(SESSIONS) - 1),
        st.integers(0, 20),
        st.integers(0, 2),
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=events_st, cuts=st.lists(st.integers(0, 40), max_size=6), sweep=st.booleans())
def test_append_in_any_batches_equals_the_fold(manifest, events, cuts, sweep):
    exec_sql(manifest.url, f"TRUNCATE {TABLE}")
    bounds = sorted({0, len(events), *[c for c in cuts if c < len(events)]})
    batches = [events[a:b] for a, b in zip(bounds, bounds[1:])]
    if sweep:
        with manifest.sweeping() as view:
            for batch in batches:
                view.append(batch)
    else:
        for batch in batches:
            with manifest.writing() as view:
                view.append(batch)
    expected = fold(events)
    assert all_rows(manifest) == expected
    with manifest.reading() as view:
        assert view.row_count() == len(expected)
        want = sorted(
            (r for r in expected.values() if not r.committed),
            key=lambda r: (r.intent_at_epoch_ms, r.attachment_id, r.session_id),
        )
        assert list(view.uncommitted(None, None)) == want
        assert list(view.uncommitted(10, "s1")) == [
            r for r in want if r.intent_at_epoch_ms <= 10 and r.session_id == "s1"
        ]


def test_intent_later_time_wins_commit_first_wins_forget_deletes(manifest):
    a = IDS[0]
    with manifest.writing() as w:
        w.append([Event.intent(a, "s1", 10)])
        w.append([Event.intent(a, "s1", 5)])  # earlier: ignored
    assert all_rows(manifest)[("s1", a)].intent_at_epoch_ms == 10
    with manifest.writing() as w:
        w.append(
            [
                Event.intent(a, "s1", 20),
                Event.commit(a, "s1", 30),
                Event.commit(a, "s1", 40),
                Event.intent(a, "s1", 50),
                Event.commit(a, "s2", 60),
            ]
        )  # no row for s2: commit never inserts
    rows = all_rows(manifest)
    assert list(rows) == [("s1", a)]
    assert (rows[("s1", a)].intent_at_epoch_ms, rows[("s1", a)].committed_at_epoch_ms) == (20, 30)
    with manifest.writing() as w:
        w.append([Event.forget(a, "s1"), Event.intent(a, "s1", 1)])
    assert all_rows(manifest)[("s1", a)] == Row("s1", a, canonical_uri(a), 1, None)


def test_writing_rolls_back_on_an_exception(manifest):
    with pytest.raises(RuntimeError):
        with manifest.writing() as w:
            w.append([Event.intent(IDS[0], "s1", 1)])
            raise RuntimeError("boom")
    assert all_rows(manifest) == {}


def test_an_intent_keeps_lashs_owner_until_a_forget(manifest):
    a = IDS[0]
    exec_sql(manifest.url, f"INSERT INTO {TABLE} VALUES (%s, 's1', 'u', 5, NULL, 'turn', 't1')", params=(a,))
    with manifest.writing() as w:
        w.append([Event.intent(a, "s1", 9)])
    assert all_rows(manifest)[("s1", a)] == Row("s1", a, "u", 9, None, "turn", "t1")
    with manifest.writing() as w:
        w.append([Event.forget(a, "s1"), Event.intent(a, "s1", 3)])
    assert all_rows(manifest)[("s1", a)] == Row("s1", a, canonical_uri(a), 3, None, None, None)


# -- queries ---------------------------------------------------------------------------------
@pytest.fixture
def filled(manifest):
    events = []
    for n in range(30):
        for s in ("s2", "s1"):
            events.append(Event.intent(aid(n), s, 1000 - n * 10))
        if n % 3 == 0:
            events.append(Event.commit(aid(n), "s1", 2000))
    with manifest.writing() as w:
        w.append(events)
    return manifest, fold(events)


def test_point_queries(filled):
    m, rows = filled
    with m.reading() as v:
        keys = [("s1", aid(1)), ("s2", aid(1)), ("nope", aid(1)), ("s1", "f" * 64)]
        assert v.rows_for_keys(keys) == {k: rows[k] for k in keys if k in rows}
        assert v.rows_for_keys([]) == {}
        assert v.rows_for_id(aid(3)) == [rows[("s1", aid(3))], rows[("s2", aid(3))]]
        assert v.rows_for_id("f" * 64) == []
        assert v.ids_with_prefix("0" * 62 + "1") == [aid(n) for n in range(16, 30)]
        assert v.ids_with_prefix("") == [aid(n) for n in range(30)]
        assert v.ids_with_prefix("f") == []
        assert v.row_count() == 60


def test_streams_order_and_grouping(filled):
    m, rows = filled
    with m.reading() as v:
        groups = list(v.rows_by_id())
        assert [g[0].attachment_id for g in groups] == [aid(n) for n in range(30)]
        assert all([r.session_id for r in g] == ["s1", "s2"] for g in groups)
        assert [g[0].attachment_id for g in v.rows_by_id("0" * 62 + "1")] == [aid(n) for n in range(16, 30)]
        unc = list(v.uncommitted(None, None))
        assert [(r.intent_at_epoch_ms, r.attachment_id, r.session_id) for r in unc] == sorted(
            (r.intent_at_epoch_ms, r.attachment_id, r.session_id) for r in rows.values() if not r.committed
        )
        assert [r.attachment_id for r in v.uncommitted(800, "s2")] == [aid(n) for n in range(29, 19, -1)]
        aged = list(v.aged(850))  # ids 15..29 have an uncommitted row at or before 850
        assert [g[0].attachment_id for g in aged] == [aid(n) for n in range(15, 30)]
        assert aged[0] == [rows[("s1", aid(15))], rows[("s2", aid(15))]]  # every row, committed too


def test_streams_fetch_in_chunks(manifest, monkeypatch):
    import lashctl.backends.manifests.postgres as pg

    monkeypatch.setattr(pg, "ITERSIZE", 7)
    monkeypatch.setattr(pg, "_KEEP_BATCH", 3)
    events = [Event.intent(aid(n), s, n) for n in range(50) for s in ("a", "b")]
    with manifest.writing() as w:
        w.append(events)
    for mode in ("reading", "writing", "sweeping"):
        with getattr(manifest, mode)() as v:
            assert [g[0].attachment_id for g in v.rows_by_id()] == [aid(n) for n in range(50)]
            assert len(list(v.uncommitted(None, None))) == 100
            assert [len(g) for g in v.aged(10**6)] == [2] * 50


def test_queries_use_indexes(manifest):
    """EXPLAIN of the streams as declared (server-side cursors plan for the first rows)
    and of the lookups, on a table big enough for the planner to care."""
    exec_sql(
        manifest.url,
        f"INSERT INTO {TABLE} (session_id, attachment_id, canonical_uri, intent_at_ms, committed_at_ms)"
        " SELECT 's' || (g % 7), lpad(to_hex(g), 64, '0'), 'u', g, CASE WHEN g % 3 = 0 THEN NULL ELSE g END"
        " FROM generate_series(1, 60000) AS g",
        f"ANALYZE {TABLE}",
    )
    import lashctl.backends.manifests.postgres as pg

    plans = {}
    with psycopg.connect(manifest.url) as conn:
        queries = {
            "rows_by_id": (f"SELECT {pg._COLS} FROM {TABLE} {pg._BY_ID_ORDER}", ()),
            "rows_by_id prefix": (
                f"SELECT {pg._COLS} FROM {TABLE} WHERE {pg._ID} >= %s AND {pg._ID} < %s {pg._BY_ID_ORDER}",
                ("00a", "00b"),
            ),
            "rows_for_id": (f"SELECT {pg._COLS} FROM {TABLE} WHERE {pg._ID} = %s {pg._BY_ID_ORDER}", ("0" * 64,)),
            "uncommitted": (
                f"SELECT {pg._COLS} FROM {TABLE} WHERE committed_at_ms IS NULL AND intent_at_ms <= %s"
                f" ORDER BY intent_at_ms, {pg._ID}, {pg._SESSION}",
                (100000,),
            ),
        }
        for name, (sql, params) in queries.items():
            plans[name] = "\n".join(r[0] for r in conn.execute("EXPLAIN DECLARE c CURSOR FOR " + sql, params))
    for name, plan in plans.items():
        assert "Seq Scan" not in plan and "Sort" not in plan.split("->")[0], f"{name}:\n{plan}"
        assert "Index" in plan, f"{name}:\n{plan}"
    # aged: the candidate ids come from a partial index of uncommitted rows (sorted on the
    # server when the planner prefers), their rows stream in order from the by-id index.
    with psycopg.connect(manifest.url) as conn:
        sql = (
            f"SELECT {pg._M_COLS} FROM (SELECT DISTINCT {pg._ID} AS aid FROM {TABLE}"
            f" WHERE committed_at_ms IS NULL AND intent_at_ms <= %s) AS c"
            f" JOIN {TABLE} AS m ON m.{pg._ID} = c.aid ORDER BY c.aid, m.{pg._SESSION}"
        )
        plan = "\n".join(r[0] for r in conn.execute("EXPLAIN DECLARE c CURSOR FOR " + sql, (100000,)))
    assert "lashctl_attachment_manifest_by_id" in plan and "uncommitted" in plan, plan
    assert "Seq Scan" not in plan and "Sort" not in plan.split("->")[0], plan
    print("\n".join(f"-- {k}\n{v}" for k, v in {**plans, "aged": plan}.items()))


# -- locks -----------------------------------------------------------------------------------
def test_a_second_sweeper_times_out(manifest):
    with manifest.sweeping():
        started = time.monotonic()
        with pytest.raises(LockTimeout) as info:
            with PostgresManifest(manifest.url, lock_timeout=0.3).sweeping():
                pass
        assert time.monotonic() - started >= 0.3
        assert info.value.exit_code == 75
    with PostgresManifest(manifest.url, lock_timeout=0).sweeping():  # released
        pass


def test_lock_key_is_fixed_per_table():
    assert lock_key("db.public.lash_attachment_manifest") == lock_key("db.public.lash_attachment_manifest")
    assert lock_key("db.a.lash_attachment_manifest") != lock_key("db.b.lash_attachment_manifest")


def test_a_writer_is_not_blocked_by_a_sweeper(manifest):
    a, b = IDS[0], IDS[1]
    with manifest.writing() as w:
        w.append([Event.intent(a, "s1", 1), Event.intent(b, "s1", 1)])
    with manifest.sweeping() as sweep:
        stream = sweep.aged(10)
        first = next(stream)  # a stream is open
        sweep.append([Event.forget(first[0].attachment_id, "s1")])  # a sweep's write, committed at once
        done = threading.Event()

        def write():
            with manifest.writing() as w:
                w.append([Event.intent(a, "s1", 5), Event.intent(b, "s1", 5), Event.commit(b, "s1", 6)])
            done.set()

        t = threading.Thread(target=write)
        t.start()
        assert done.wait(5), "a writer waited on the sweep"
        t.join()
        assert [g[0].attachment_id for g in stream] == [b]  # the stream carries on
        assert sweep.rows_for_id(b)[0].committed_at_epoch_ms == 6  # and sees the writer's commit
    rows = all_rows(manifest)
    assert rows[("s1", a)].intent_at_epoch_ms == 5 and rows[("s1", b)].committed


# -- owners ----------------------------------------------------------------------------------
def _owned(manifest):
    rows = [
        ("t_dead", "s1", "turn", "t1", 100),
        ("t_live", "s1", "turn", "t2", 300),
        ("t_other", "s2", "turn", "t9", 100),
        ("p_dead", "s1", "process", "p1", 100),
        ("p_live", "s1", "process", "p2", 100),
        ("none", "s1", None, None, 100),
    ]
    names = {}
    for n, (name, session, kind, owner, at) in enumerate(rows):
        names[name] = aid(n + 1)
        exec_sql(
            manifest.url,
            f"INSERT INTO {TABLE} VALUES (%s, %s, 'u', %s, NULL, %s, %s)",
            params=(aid(n + 1), session, at, kind, owner),
        )
    return names


def _lash_owner_tables(url):
    exec_sql(
        url,
        "CREATE TABLE lash_runtime_turn_commits (session_id TEXT NOT NULL, turn_id TEXT NOT NULL,"
        " turn_commit_hash TEXT NOT NULL, result_json TEXT NOT NULL, committed_at_ms BIGINT NOT NULL,"
        " PRIMARY KEY (session_id, turn_id))",
        "CREATE TABLE lash_processes (process_id TEXT PRIMARY KEY, status TEXT NOT NULL)",
        # t1 (intent 100) is superseded by t3 committing at 200; t2's intent (300) is later.
        "INSERT INTO lash_runtime_turn_commits VALUES ('s1', 't1', 'h', '{}', 150),"
        " ('s1', 't3', 'h', '{}', 200), ('s2', 't9', 'h', '{}', 500)",
        "INSERT INTO lash_processes VALUES ('p2', 'running')",
    )


def test_owner_rules_with_lash_tables(manifest):
    names = _owned(manifest)
    _lash_owner_tables(manifest.url)
    wired = PostgresManifest(manifest.url, lock_timeout=0.3, process_registry="lash_processes")
    with wired.sweeping() as v:
        aged = {g[0].attachment_id: g[0] for g in v.aged(1000)}
        reasons = {name: v.keep_reason(aged[i]) for name, i in names.items()}
        assert reasons["t_dead"] is None and reasons["p_dead"] is None and reasons["none"] is None
        assert "t2" in reasons["t_live"] and "not proven dead" in reasons["t_live"]
        assert "t9" in reasons["t_other"]  # only its own turn committed in s2: not superseded
        assert "p2" in reasons["p_live"] and "registered" in reasons["p_live"]
        kept = {row.key for row in aged.values() if v.keep_reason(row) is not None}
        assert kept == {("s1", names["t_live"]), ("s2", names["t_other"]), ("s1", names["p_live"])}
        live = {name: v.has_live_row(i, 1000) for name, i in names.items()}
        assert live == {
            "t_dead": False,
            "t_live": True,
            "t_other": True,
            "p_dead": False,
            "p_live": True,
            "none": False,
        }
        assert v.has_live_row(names["none"], 99)  # newer than the cutoff


def test_owner_rules_without_lash_tables(manifest):
    names = _owned(manifest)
    with manifest.reading() as v:
        aged = {g[0].attachment_id: g[0] for g in v.aged(1000)}
        for name in ("t_dead", "t_live", "t_other"):
            assert v.keep_reason(aged[names[name]]).startswith("owner turn t")
            assert "not proven dead" in v.keep_reason(aged[names[name]])
        for name in ("p_dead", "p_live"):
            assert "unless its process registry is named" in v.keep_reason(aged[names[name]])
        assert v.keep_reason(aged[names["none"]]) is None
        assert [v.has_live_row(names[n], 1000) for n in ("t_dead", "p_dead", "none")] == [True, True, False]


def test_process_owners_are_kept_while_the_registry_is_not_named(manifest):
    """lash applies its process rule only where its host wires the registry:
    lash_processes existing (lash always creates it) proves nothing."""
    names = _owned(manifest)
    _lash_owner_tables(manifest.url)
    with manifest.reading() as v:
        aged = {g[0].attachment_id: g[0] for g in v.aged(1000)}
        assert v.keep_reason(aged[names["p_dead"]]) == (
            "owned by process p1 (lash keeps process-owned intents unless its process registry is named: "
            "--process-registry)"
        )
        assert v.keep_reason(aged[names["t_dead"]]) is None  # the turn rule stands as it was
        assert [v.has_live_row(names[n], 1000) for n in ("p_dead", "p_live", "t_dead")] == [True, True, False]


def test_a_named_process_registry_must_be_a_table_with_process_ids(manifest):
    for table, problem in (
        ("lash_processes", "no table lash_processes"),
        ("elsewhere.procs", "no table elsewhere.procs"),
        (TABLE, "has no process_id column"),
    ):
        with pytest.raises(UsageError, match=problem):
            with PostgresManifest(manifest.url, process_registry=table).reading():
                pass


def test_has_live_row_for_committed_and_recent_rows(manifest):
    with manifest.writing() as w:
        w.append(
            [
                Event.intent(IDS[0], "s1", 5),
                Event.commit(IDS[0], "s1", 6),
                Event.intent(IDS[1], "s1", 50),
                Event.intent(IDS[2], "s1", 5),
            ]
        )
        assert w.has_live_row(IDS[0], 100) and w.has_live_row(IDS[1], 10)
        assert not w.has_live_row(IDS[2], 10) and not w.has_live_row(IDS[3], 10)


# -- the table ---------------------------------------------------------------------------------
def test_init_creates_lashs_table_and_indexes_once(pg_url):
    m = PostgresManifest(pg_url)
    assert not m.exists()
    created = m.init()
    assert created[0] == f"table {TABLE}" and len(created) == 5
    assert m.exists() and m.init() == []
    with psycopg.connect(pg_url) as conn:
        names = {r[0] for r in conn.execute("SELECT indexname FROM pg_indexes WHERE tablename = %s", (TABLE,))}
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert {
        "idx_lash_attachment_manifest_uncommitted",
        "idx_lash_attachment_manifest_owner",
        "lashctl_attachment_manifest_by_id",
        "lashctl_attachment_manifest_uncommitted_order",
    } <= names
    assert tables == {TABLE}


def test_init_adds_only_lashctls_indexes_to_lashs_newer_table(pg_url):
    exec_sql(
        pg_url,
        f"""CREATE TABLE {TABLE} (attachment_id TEXT NOT NULL, session_id TEXT NOT NULL,
        canonical_uri TEXT NOT NULL, intent_at_ms BIGINT NOT NULL, write_id TEXT, written_at_ms BIGINT,
        committed_at_ms BIGINT, owner_kind TEXT, owner_id TEXT, owner_incarnation BIGINT,
        PRIMARY KEY (session_id, attachment_id))""",
        f"CREATE INDEX idx_lash_attachment_manifest_uncommitted ON {TABLE}(committed_at_ms)"
        " WHERE committed_at_ms IS NULL",
        f"CREATE INDEX idx_lash_attachment_manifest_owner ON {TABLE}(session_id, owner_kind, owner_id,"
        " owner_incarnation, committed_at_ms)",
    )
    m = PostgresManifest(pg_url)
    m.check_writable()  # extra columns are fine
    assert m.init() == [
        "index lashctl_attachment_manifest_by_id",
        "index lashctl_attachment_manifest_uncommitted_order",
    ]
    with m.writing() as w:
        w.append([Event.intent(IDS[0], "s", 1)])
    assert list(all_rows(m)) == [("s", IDS[0])]


def test_missing_table_is_a_usage_error(pg_url):
    m = PostgresManifest(pg_url)
    for attempt in (
        m.check_writable,
        lambda: m.reading().__enter__(),
        lambda: m.writing().__enter__(),
        lambda: m.sweeping().__enter__(),
    ):
        with pytest.raises(UsageError) as info:
            attempt()
        assert info.value.exit_code == 2
        assert f"no table {TABLE} in t_" in info.value.message and "lashctl manifest init" in info.value.message


@pytest.mark.parametrize(
    "ddl, says",
    [
        (
            f"CREATE TABLE {TABLE} (attachment_id TEXT PRIMARY KEY, session_id TEXT NOT NULL, canonical_uri TEXT NOT NULL,"
            " intent_at_ms BIGINT NOT NULL, committed_at_ms BIGINT)",
            ["no column owner_kind", "no column owner_id", "primary key is (attachment_id)"],
        ),
        (
            f"CREATE TABLE {TABLE} (attachment_id TEXT, session_id TEXT, canonical_uri TEXT, intent_at_ms INTEGER NOT NULL,"
            " committed_at_ms TIMESTAMPTZ, owner_kind TEXT, owner_id TEXT, PRIMARY KEY (session_id, attachment_id))",
            ["column intent_at_ms is integer, expected bigint", "column committed_at_ms is timestamp with time zone"],
        ),
        (
            f"CREATE TABLE {TABLE} (attachment_id TEXT, session_id TEXT, canonical_uri TEXT, intent_at_ms BIGINT,"
            " committed_at_ms BIGINT, owner_kind TEXT, owner_id TEXT)",
            ["no primary key"],
        ),
        (f"CREATE VIEW {TABLE} AS SELECT 1 AS x", ["is not a table"]),
    ],
)
def test_a_misshapen_table_is_corrupt(pg_url, ddl, says):
    exec_sql(pg_url, ddl)
    with pytest.raises(Corrupt) as info:
        PostgresManifest(pg_url).check_writable()
    assert info.value.exit_code == 65
    for text in says:
        assert text in info.value.message


# -- the server --------------------------------------------------------------------------------
def test_an_unreachable_server_is_unavailable(pg_server):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    m = PostgresManifest(f"postgresql://u:topsecret@127.0.0.1:{port}/db")
    for attempt in (m.exists, m.check_writable, lambda: m.reading().__enter__()):
        with pytest.raises(Unavailable) as info:
            attempt()
        assert info.value.exit_code == 69
        assert "\n" not in info.value.message and "topsecret" not in info.value.message
        assert m.name in info.value.message


def test_a_server_gone_mid_command_is_unavailable(manifest):
    with manifest.writing() as w:
        w.append([Event.intent(aid(n), "s", n) for n in range(10)])
    with pytest.raises(Unavailable) as info:
        with manifest.reading() as v:
            stream = v.rows_by_id()
            next(stream)
            exec_sql(manifest.url, "SELECT pg_terminate_backend(%s)", params=(v.conn.info.backend_pid,))
            v.row_count()
    assert info.value.exit_code == 69 and "\n" not in info.value.message


def test_a_wrong_password_is_denied(pg_server):
    from pgserver import PASSWORD

    m = PostgresManifest(pg_server.tcp_url(password="not-the-password"))
    with pytest.raises(Denied) as info:
        m.exists()
    assert info.value.exit_code == 77
    assert "not-the-password" not in info.value.message and PASSWORD not in info.value.message
    assert "not-the-password" not in m.name
    assert PostgresManifest(pg_server.tcp_url()).exists() is False  # the right one gets in


def test_a_missing_database_is_a_usage_error(pg_server):
    with pytest.raises(UsageError) as info:
        PostgresManifest(pg_server.url("no_such_db")).exists()
    assert "does not exist" in info.value.message


def test_libpq_environment_applies(manifest, monkeypatch, pg_server):
    from urllib.parse import quote

    monkeypatch.setenv("PGHOST", str(pg_server.socket_dir))
    monkeypatch.setenv("PGPORT", str(pg_server.port))
    monkeypatch.setenv("PGUSER", "postgres")
    dbname = manifest.url.split("/")[3].split("?")[0]
    assert PostgresManifest(f"postgresql:///{quote(dbname)}").exists()


def test_name_has_no_password():
    assert strip_password("postgresql://u:pw@h:5432/db") == "postgresql://u@h:5432/db"
    assert (
        strip_password("postgres://u:p%40w@h1:1,h2:2/db?password=x&sslmode=require")
        == "postgres://u@h1:1,h2:2/db?sslmode=require"
    )
    assert strip_password("postgresql:///db?password=x") == "postgresql:///db"
    assert strip_password("postgresql://h/db") == "postgresql://h/db"
    assert PostgresManifest("postgresql://u:pw@h/db").name == "postgresql://u@h/db"
    # libpq ends the user part only at "/", and a query value only at "&":
    # "#" and "?" may be in a password, "@" in a query value.
    for url in (
        "postgresql://u:SE#CRET@127.0.0.1:1/db",
        "postgresql://u:SE?CRET@127.0.0.1:1/db",
        "postgresql://127.0.0.1:1/db?application_name=x#&password=SECRET",
        "postgresql://h?password=SECRET@x",
        "postgresql://u:p@SECRET@h/db",
        "postgresql://h/db?Password=SECRET&sslmode=require",
        "postgresql://h/db?pass%77ord=SECRET",
        "postgresql://u:p/SECRET@h:1/db",
    ):
        shown = strip_password(url)
        assert "SECRET" not in shown and "CRET" not in shown, (url, shown)
    assert strip_password("postgresql://u:SE#CRET@127.0.0.1:1/db") == "postgresql://u@127.0.0.1:1/db"


def test_not_a_postgres_url():
    with pytest.raises(UsageError):
        PostgresManifest("s3://bucket/x")


def test_streams_keep_memory_flat(manifest):
    """100,000 rows stream through in a few MB: a list of them all would take tens."""
    import tracemalloc

    exec_sql(
        manifest.url,
        f"INSERT INTO {TABLE} (session_id, attachment_id, canonical_uri, intent_at_ms, committed_at_ms)"
        " SELECT 'session-' || (g % 3), lpad(to_hex(g / 3), 64, '0'), 'u', g, NULL"
        " FROM generate_series(0, 99999) AS g",
        f"ANALYZE {TABLE}",
    )
    with manifest.reading() as v:
        tracemalloc.start()
        try:
            groups = sum(1 for _ in v.rows_by_id())
            rows = sum(1 for _ in v.uncommitted(None, None))
            aged = sum(len(g) for g in v.aged(10**6))
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert (groups, rows, aged) == (33334, 100000, 100000)
    assert peak < 8 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB"


def test_a_table_lock_held_elsewhere_is_a_lock_timeout_not_a_hang(manifest):
    with psycopg.connect(manifest.url) as holder:
        holder.execute(f"LOCK TABLE {TABLE} IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        for action in ("read", "write"):
            with pytest.raises(LockTimeout) as info:
                if action == "read":
                    with manifest.reading() as view:
                        view.row_count()
                else:
                    with manifest.writing() as writer:
                        writer.append([Event.intent("a" * 64, "s", 1)])
            assert info.value.exit_code == 75
        assert time.monotonic() - started < 10
        holder.rollback()


@pytest.mark.parametrize("bad_id", ["../../p2/sha256/x", "A" * 64, "a" * 63])
def test_a_row_with_an_invalid_id_is_corrupt_data(manifest, bad_id):
    exec_sql(
        manifest.url, f"INSERT INTO {TABLE} VALUES (%s, 's', 'sha256:x', 1000, NULL, NULL, NULL)", params=(bad_id,)
    )
    for query in (
        lambda v: list(v.rows_by_id()),
        lambda v: list(v.uncommitted(None, None)),
        lambda v: list(v.aged(2000)),
        lambda v: v.rows_for_id(bad_id),
    ):
        with pytest.raises(Corrupt) as info, manifest.reading() as view:
            query(view)
        assert info.value.exit_code == 65


def test_init_changes_nothing_on_a_table_it_refuses(pg_url):
    exec_sql(
        pg_url,
        f"CREATE TABLE {TABLE} (attachment_id TEXT, session_id TEXT, canonical_uri TEXT, "
        "intent_at_ms BIGINT NOT NULL, committed_at_ms BIGINT, owner_kind TEXT, owner_id TEXT)",
    )
    with pytest.raises(Corrupt):
        PostgresManifest(pg_url).init()
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT count(*) FROM pg_indexes WHERE tablename = %s", (TABLE,)).fetchone()[0] == 0


@pytest.mark.parametrize("json_flag", [True, False], ids=["json", "tsv"])
def test_list_uncommitted_on_a_pipe_rendered_by_postgres_is_what_python_prints(
    cli, store, manifest, monkeypatch, json_flag
):
    """Rows without bytes are written by PostgreSQL itself: byte for byte what
    rendering each row in Python prints, for every kind of text and time."""
    import hashlib

    import lashctl.commands.list_uncommitted as command
    from lashctl.backends.manifests.postgres import PostgresView
    from lashctl.timefmt import now_ms

    def h(text: str) -> str:
        return hashlib.sha256(text.encode()).hexdigest()

    assert cli("--manifest", manifest.url, "put", "-q", "-s", "with-bytes", "-", input=b"bytes here").exit_code == 0
    now = now_ms()
    monkeypatch.setattr(command, "now_ms", lambda: now)
    sessions = [
        "plain",
        'quote"s',
        "back\\slash",
        "tab\there",
        "caf\u00e9",
        "\u2028sep",
        "bidi\u202e",
        "emoji \U0001f600",
        "del\x7f",
        "c1\x85",
        "ctl\x1b[31m",
        "new\nline",
        "~ !#$%&'()*+,-./:;<=>?@[]^_`{|}",
    ]
    rows = [(h(f"gone {i}"), s, None, now - i * 7_777_777 - i) for i, s in enumerate(sessions)]
    for i, at in enumerate(
        [
            now - 86_400_000,
            now - 90_061_001,
            now - 3_600_000,
            now - 3_660_000,
            now - 60_000,
            now - 61_999,
            now - 999,
            now,
            now + 1,
            now + 2_500,
            0,
            253_402_300_799_999,
        ]
    ):  # (outside 1970-9999: a bad row, tested below)
        rows.append((h(f"age {i}"), "ages", None, at))
    rows += [
        (h("own uri"), "uris", 's3://b/k \u00e9"\\', now - 5),
        (h("own uri 2"), "uris", "x-lash:1", now - 6),
        (h("quoted uri"), "uris", 'a"b\\c', now - 7),
    ]
    with psycopg.connect(manifest.url, autocommit=True) as conn:
        for aid_, session, uri, at in rows:
            conn.execute(
                f"INSERT INTO {TABLE} (attachment_id, session_id, canonical_uri, intent_at_ms) VALUES (%s, %s, %s, %s)",
                (aid_, session, uri or canonical_uri(aid_), at),
            )
    args = ["--manifest", manifest.url, "list-uncommitted"] + (["--json"] if json_flag else [])
    written_by_postgres = []
    import lashctl.listing as listing

    real = listing.rendered_uncommitted  # over PostgreSQL's raw rows (PostgresView.uncommitted_chunks)

    def spy(*a):
        for chunk in real(*a):
            written_by_postgres.extend(chunk)
            yield chunk

    monkeypatch.setattr(listing, "rendered_uncommitted", spy)
    fast = cli(*args)
    assert fast.exit_code == 0, fast.stderr
    texts = {}
    for item in written_by_postgres:
        if type(item) is str:
            fields = json.loads(item) if json_flag else dict(zip(("id", "session_id"), item.split("\t")))
            texts[(fields["session_id"], fields["id"])] = item
        else:
            texts[(item[1], item[0])] = None
    assert texts[("plain", h("gone 0"))] is not None and texts[("uris", h("own uri 2"))] is not None
    assert texts[("caf\u00e9", h("gone 4"))] is None and texts[("new\nline", h("gone 11"))] is None
    assert texts[("del\x7f", h("gone 8"))] is None
    assert sum(t is not None for t in texts.values()) >= len(rows) - 14

    fast_chunks = PostgresView.uncommitted_chunks

    def slow_args(*extra):
        monkeypatch.setattr(PostgresView, "uncommitted_chunks", ManifestView.uncommitted_chunks)  # no fast path
        return cli(*args, *extra)

    slow = slow_args()
    assert slow.exit_code == 0, slow.stderr
    assert fast.stdout_bytes == slow.stdout_bytes
    assert fast.stderr == slow.stderr
    assert len(json.loads(slow.stdout) if json_flag else slow.stdout.splitlines()) == len(rows) + 1
    for extra in (["--older-than", "1h"], ["-s", "caf\u00e9"], ["-s", "plain"], ["--before", "@1"]):
        monkeypatch.setattr(PostgresView, "uncommitted_chunks", fast_chunks)
        fast = cli(*args, *extra)
        slow = slow_args(*extra)
        assert fast.exit_code == 0 and slow.exit_code == 0, (fast.stderr, slow.stderr)
        assert (fast.stdout_bytes, fast.stderr) == (slow.stdout_bytes, slow.stderr), extra


@pytest.mark.parametrize("json_flag", [True, False], ids=["json", "tsv"])
def test_list_uncommitted_lists_every_good_row_and_reports_bad_ones_as_json_lines_does(cli, store, manifest, json_flag):
    """A row lashctl cannot trust (an invalid id, an empty session, a time
    outside 1970-9999) is skipped and named on stderr, the listing is
    complete (valid JSON) and the exit code 65, as for a malformed line of a
    JSON-lines manifest."""
    good = [f"{n:064x}" for n in range(2500)]
    (store / "sha256").mkdir(parents=True)  # an empty store (a bare directory is not one)
    with psycopg.connect(manifest.url, autocommit=True) as conn:
        with conn.cursor().copy(
            f"COPY {TABLE} (attachment_id, session_id, canonical_uri, intent_at_ms) FROM STDIN"
        ) as copy:
            for n, i in enumerate(good):
                copy.write_row((i, "s", canonical_uri(i), 1_000 + n))
            for bad_id, session, at in [
                ("ABC", "s", 5_000),
                ("f" * 64, "", 5_001),
                ("e" * 64, "s", -1),
                ("d" * 64, "s", 9_000_000_000_000_000_000),
                ("c" * 64, "s", -(2**63)),
            ]:  # the age of it overflows a bigint
                copy.write_row((bad_id, session, "u", at))
    result = cli("--manifest", manifest.url, *(["--json"] if json_flag else []), "list-uncommitted")
    assert result.exit_code == 65, result.stderr
    listed = (
        [r["id"] for r in json.loads(result.stdout)]
        if json_flag
        else [line.split("\t")[0] for line in result.stdout.splitlines()]
    )
    assert listed == good
    assert result.stderr.count("\n") >= 5 and "ABC" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("fix", [False, True], ids=["verify", "verify --fix"])
def test_verify_reports_a_bad_row_and_checks_everything_else(cli, store, manifest, fix):
    """A row lashctl cannot trust is one manifest-corrupt finding (exit 65);
    the blobs and the other rows are still checked, as with a malformed line
    of a JSON-lines manifest, never the whole report lost."""
    store.mkdir()
    (store / "kept.bin").write_bytes(b"kept and committed\n")
    put = cli("--manifest", manifest.url, "-q", "put", "-s", "s", str(store / "kept.bin"))
    assert put.exit_code == 0, put.stderr
    lost = "b" * 64
    exec_sql(manifest.url, f"INSERT INTO {TABLE} VALUES (%s, 's', 'u', 1000, 2000, NULL, NULL)", params=(lost,))
    exec_sql(manifest.url, f"INSERT INTO {TABLE} VALUES ('NOTANID', 's', 'u', 1000, NULL, NULL, NULL)")
    result = cli("--manifest", manifest.url, "--json", "verify", *(["--fix"] if fix else []))
    assert result.exit_code == 65, result.stderr
    document = json.loads(result.stdout)
    assert "findings" in document, document
    kinds = sorted((f["kind"], f["id"]) for f in document["findings"])
    assert ("committed-bytes-missing", lost) in kinds
    assert [k for k, _ in kinds].count("manifest-corrupt") == 1
    assert document["blobs_checked"] == 1
    assert "NOTANID" in result.stdout


# -- lash's schema version -------------------------------------------------------------------
def _versions(url, *rows, columns="component TEXT PRIMARY KEY, version INTEGER NOT NULL"):
    exec_sql(url, f"CREATE TABLE lash_schema_versions ({columns})")
    for row in rows:
        exec_sql(url, "INSERT INTO lash_schema_versions VALUES (%s, %s)", params=row)


def _open(m: PostgresManifest, way: str) -> None:
    """One of the backend's ways to the table, opened and closed."""
    if way in ("check_writable", "init"):
        getattr(m, way)()
        return
    with getattr(m, way)():
        pass


@pytest.mark.parametrize("version, refused", [(14, True), (15, False), (16, False), (17, False), (18, True)])
def test_every_way_in_reads_lashs_schema_version(manifest, version, refused):
    _versions(manifest.url, ("lash-postgres-store", version))
    fresh = PostgresManifest(manifest.url, lock_timeout=0.3)
    for way in ("reading", "writing", "sweeping", "check_writable", "init"):
        if refused:
            with pytest.raises(Corrupt, match=f"lash schema version {version} .* supports 15, 16, 17"):
                _open(fresh, way)
        else:
            _open(fresh, way)


def test_a_version_table_without_lashs_row_is_read_as_no_stamp(manifest):
    _versions(manifest.url, ("another-component", 99))
    with manifest.reading() as view:
        assert view.row_count() == 0


def test_a_version_table_not_shaped_like_lashs_is_corrupt(manifest):
    _versions(manifest.url, columns="name TEXT, v INTEGER")
    with pytest.raises(Corrupt, match="lash_schema_versions .* is not lash's schema version table"):
        _open(manifest, "reading")
