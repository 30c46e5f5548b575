"""``lashctl manifest check|log|compact|init``: the write-ahead log itself."""

import json
from typing import Annotated, Optional

import typer

from lashctl.commands import DryRunFlag, JsonFlag, app_state, complete_id
from lashctl.errors import Corrupt, UsageError
from lashctl.render import Col, inert_json

app = typer.Typer(
    name="manifest",
    help="Inspect and maintain the manifest: check, log, compact (a JSON-lines file); init (a PostgreSQL table); "
    "check (lash's SQLite session databases).",
    no_args_is_help=True,
)


@app.command(
    "check",
    epilog="""Examples:

    lashctl manifest check
    lashctl --manifest /data/manifest.jsonl manifest check

Exit codes: 0 every line is valid; 2 usage error; 65 malformed lines (each is listed).""",
)
def check(ctx: typer.Context, json_flag: JsonFlag = False) -> None:
    """Validate every line of the manifest and count its events and rows.

    Lists every malformed line (not only the first), reports a torn final
    line, and how many lines compaction would leave. Exit 65 if any line is
    malformed.
    """
    from lashctl.backends.base import LASH_SQLITE

    state = app_state(ctx, json_flag)
    if state.store().manifest.kind == LASH_SQLITE:
        return _check_databases(state)
    report = jsonl_only(state, "check").check_log()
    document = {
        "path": str(report.path),
        "exists": report.exists,
        "valid": not report.problems,
        "lines": report.lines,
        "events": report.events_by_op,
        "has_header": report.has_header,
        "rows": report.rows,
        "rows_committed": report.rows_committed,
        "rows_uncommitted": report.rows - report.rows_committed,
        "lines_after_compaction": report.compacted_lines,
        "torn_tail": report.torn_tail,
        "problems": report.problems,
    }
    state.ui.records(
        [Col("what"), Col("value", "path", min_width=20)],
        [
            ["path", report.path],
            ["lines", report.lines],
            *[[f"  {op}", n] for op, n in report.events_by_op.items()],
            ["header", "yes" if report.has_header else "no (read as version 1)"],
            ["rows", report.rows],
            ["  committed", report.rows_committed],
            ["  uncommitted", report.rows - report.rows_committed],
            ["lines after compaction", report.compacted_lines],
            ["torn tail", "yes" if report.torn_tail else "no"],
            ["malformed lines", len(report.problems)],
        ],
        document,
    )
    if not state.ui.json:
        for problem in report.problems:
            state.ui.error(problem)
    if report.problems:
        raise Corrupt(f"{len(report.problems)} malformed line(s) in {report.path}")


def _check_databases(state) -> None:
    """``manifest check`` of lash's SQLite session databases: every one is
    read; exit 65 if any cannot be, or holds a row lashctl cannot trust."""
    manifest = state.store().manifest
    report = manifest.check_databases()
    document = {
        "manifest": manifest.name,
        "valid": not report.problems,
        "databases": report.databases,
        "uninitialised": report.uninitialised,
        "skipped": report.skipped,
        "rows": report.rows,
        "rows_committed": report.rows_committed,
        "rows_uncommitted": report.rows - report.rows_committed,
        "problems": report.problems,
    }
    state.ui.records(
        [Col("what"), Col("value", "path", min_width=20)],
        [
            ["sessions directory", report.directory],
            ["session databases", report.databases],
            ["  not initialised", report.uninitialised],
            ["skipped (sidecars, WAL files)", report.skipped],
            ["rows", report.rows],
            ["  committed", report.rows_committed],
            ["  uncommitted", report.rows - report.rows_committed],
            ["problems", len(report.problems)],
        ],
        document,
    )
    if not state.ui.json:
        for problem in report.problems:
            state.ui.error(problem)
    if report.problems:
        raise Corrupt(f"{len(report.problems)} problem(s) in {manifest.name}")


@app.command(
    "log",
    epilog="""Examples:

    lashctl manifest log --id 5f5d584c5857
    lashctl manifest log -s s-42 --op commit --since 2026-11-01 | jq .

Exit codes: 0 printed (also when nothing matched); 2 usage error (bad ID, OP or TIMESTAMP); 65 corrupt manifest.""",
)
def log(
    ctx: typer.Context,
    attachment: Annotated[
        Optional[str],
        typer.Option(
            "--id", metavar="ID", help="Only events for this id (or unique-length prefix).", autocompletion=complete_id
        ),
    ] = None,
    session: Annotated[
        Optional[str], typer.Option("--session", "-s", metavar="SESSION", help="Only events of this session.")
    ] = None,
    op: Annotated[
        Optional[str],
        typer.Option("--op", metavar="OP", help="Only events with this op (intent, commit, forget, header)."),
    ] = None,
    since: Annotated[
        Optional[str],
        typer.Option(
            "--since",
            metavar="TIMESTAMP",
            help="Only timed events at or after this (ISO-8601, @EPOCH_SECONDS or EPOCH_MSms).",
        ),
    ] = None,
    until: Annotated[
        Optional[str], typer.Option("--until", metavar="TIMESTAMP", help="Only timed events at or before this.")
    ] = None,
    json_flag: JsonFlag = False,
) -> None:
    """Print raw manifest events, one JSON object per line, for reading or for jq.

    On a terminal each event follows its line number in the file and a tab
    (the line a hand fix opens); on a pipe the events come alone, ready for
    jq. Filters combine. A time filter keeps only events
    that carry a time (intent and commit). With --json: one array of {line,
    event} objects.
    """
    from lashctl.ids import parse_id
    from lashctl.errors import describe_malformed
    from lashctl.fold import LOG_OPS as OPS, event_time
    from lashctl.core import session_filter
    from lashctl.timefmt import parse_timestamp

    session = session_filter(session)
    prefix = parse_id(attachment).hex if attachment is not None else None
    if op is not None and op not in OPS:
        raise UsageError(f"--op '{op}' is not one of {', '.join(OPS)}")
    start = parse_timestamp(since, "--since") if since is not None else None
    end = parse_timestamp(until, "--until") if until is not None else None
    state = app_state(ctx, json_flag)
    matched: list[dict] = []
    malformed: list[Corrupt] = []

    def mark(exc: Corrupt) -> None:
        # Keep going: the line is marked where it stands, and the exit is 65 at the end.
        malformed.append(exc)
        if state.ui.json:
            matched.append(
                {"line": exc.lineno, "malformed": exc.raw.decode("utf-8", "replace"), "problem": exc.message}
            )
        else:
            state.ui.warn(describe_malformed(exc))

    manifest = jsonl_only(state, "log")
    numbered = state.ui.stdout_is_terminal()
    for lineno, event in manifest.iter_events(on_error=mark):
        if prefix is not None and not str(event.get("attachment_id", "")).startswith(prefix):
            continue
        if session is not None and event.get("session_id") != session:
            continue
        if op is not None and event["op"] != op:
            continue
        if start is not None or end is not None:
            at = event_time(event)
            if at is None or (start is not None and at < start) or (end is not None and at > end):
                continue
        if state.ui.json:
            matched.append({"line": lineno, "event": event})
        else:
            # On a terminal each event follows its line number (what a hand fix
            # opens); on a pipe the events alone, ready for jq.
            text = inert_json(json.dumps(event, separators=(",", ":"), ensure_ascii=False))
            state.ui.exact_line(f"{lineno}\t{text}" if numbered else text)
    if state.ui.json:
        state.ui.emit_json(matched)
    if malformed:
        raise Corrupt(f"{len(malformed)} malformed line(s) in manifest {manifest.path}")


@app.command(
    "compact",
    epilog="""Examples:

    lashctl manifest compact --dry-run
    lashctl manifest compact

Exit codes: 0 compacted; 2 usage error; 65 corrupt manifest (left untouched); 75 manifest locked.""",
)
def compact(ctx: typer.Context, dry_run: DryRunFlag = False, json_flag: JsonFlag = False) -> None:
    """Rewrite the manifest as its folded state, atomically, under the lock.

    The result is the header, then one intent line (and a commit line when
    committed) per row: the same state in fewer lines.
    """
    state = app_state(ctx, json_flag)
    manifest = jsonl_only(state, "compact")
    before, after, rows = manifest.compact_log(dry_run=dry_run)
    document = {
        **state.run_fields(),
        "path": str(manifest.path),
        "dry_run": dry_run,
        "lines_before": before,
        "lines_after": after,
        "rows": rows,
    }
    state.ui.records(["what", "value"], [["lines before", before], ["lines after", after], ["rows", rows]], document)
    state.ui.info(f"{'dry run: would compact' if dry_run else 'compacted'} {manifest.path}: {before} -> {after} lines")


def jsonl_only(state, what: str):
    """The store's manifest, refused (exit 2) unless it is a JSON-lines file."""
    from lashctl.backends.base import JSONL, LASH_SQLITE

    store = state.store()
    if store.manifest.kind != JSONL:
        kind = (
            "lash's SQLite session databases (query them with sqlite3)"
            if store.manifest.kind == LASH_SQLITE
            else "a PostgreSQL table (query it with psql)"
        )
        raise UsageError(f"manifest {what} works on a JSON-lines manifest; {store.manifest.name} is {kind}")
    return store.manifest


@app.command(
    "init",
    epilog="""Examples:

    lashctl manifest init --manifest postgresql://lash@db/lash

Exit codes: 0 created (or already there); 2 usage error (not a PostgreSQL manifest);
65 a table of that name with another shape; 69 server unreachable; 77 access denied.""",
)
def init(ctx: typer.Context, json_flag: JsonFlag = False) -> None:
    """Create lash's manifest table and the indexes lashctl's queries use.

    For a PostgreSQL manifest: creates ``lash_attachment_manifest`` (as lash
    does) when it is missing, and the two indexes lashctl needs (built
    concurrently: lash's writers are not blocked). Never creates lash's
    other tables. A JSON-lines manifest needs no init.
    """
    state = app_state(ctx, json_flag)
    store = state.store(create=True)
    from lashctl.backends.base import LASH_SQLITE, POSTGRES

    if store.manifest.kind != POSTGRES:
        kind = (
            "lash's SQLite session databases, which lash creates"
            if store.manifest.kind == LASH_SQLITE
            else "a JSON-lines file, created by the first put"
        )
        raise UsageError(f"manifest init creates a PostgreSQL table; {store.manifest.name} is {kind}")
    created = store.manifest.init()
    state.ui.records(
        ["created"],
        [[name] for name in created],
        {**state.run_fields(), "manifest": store.manifest.name, "created": created},
    )
    state.ui.info(
        f"{store.manifest.name}: created {', '.join(created)}"
        if created
        else f"{store.manifest.name}: already initialised"
    )
