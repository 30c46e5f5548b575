"""``lashctl forget``: remove one session's rows, never bytes."""

from typing import Annotated, Optional

import typer

from lashctl.commands import AuditLogOption, DryRunFlag, JsonFlag, SessionOption, app_state, complete_id, parse_ids
from lashctl.errors import NotFound
from lashctl.render import Col, Field

EPILOG = """Examples:

    lashctl forget -s s-42 --dry-run
    lashctl forget -s s-42 5f5d584c5857

Exit codes: 0 forgotten (or nothing to forget); 2 usage error; 3 an id the session has no row for (the others are still forgotten); 65 corrupt manifest; 75 manifest locked."""

# One row forgotten (a sweep.ForgetItem).
ITEM = (
    Field("id", lambda r: r.attachment_id, Col("id", "id")),
    Field("session_id", lambda r: r.session_id, Col("session")),
    Field("state", lambda r: r.state, Col("state", "fixed")),
)


def forget(
    ctx: typer.Context,
    attachments: Annotated[
        Optional[list[str]],
        typer.Argument(
            metavar="[ID...]",
            help="Ids or unique prefixes (default: every row of the session).",
            autocompletion=complete_id,
        ),
    ] = None,
    session: SessionOption = None,
    dry_run: DryRunFlag = False,
    json_flag: JsonFlag = False,
    audit_log: AuditLogOption = None,
) -> None:
    """Remove a session's rows from the manifest: all of them, or those of the given ids.

    What lash does when it drops a session's reference or deletes a session.
    Bytes are never touched: a blob no row references any more is reclaimed
    by a later reclaim (if other sessions' intents aged) or gc. Committed rows
    go too: their blobs are then unreferenced for this session.
    """
    from lashctl import audit, core, sweep

    session = core.validate_session(session)
    queries = parse_ids(attachments or [])
    state = app_state(ctx, json_flag)
    store = state.store(sweep=True)
    with audit.running(state, store, "forget", audit_log, dry_run):
        items, missing = sweep.forget(store, session, queries, dry_run=dry_run)
    state.ui.listing(
        ITEM,
        items,
        lambda: {
            **state.run_fields(),
            "dry_run": dry_run,
            "session_id": session,
            "rows_forgotten": len(items),
            "committed_rows_forgotten": sum(1 for i in items if i.state == "committed"),
            "missing": missing,  # the ids the session has no row for (exit 3)
        },
    )
    verb = "dry run: would forget" if dry_run else "forgot"
    committed = sum(1 for i in items if i.state == "committed")
    state.ui.info(
        f"{verb} {len(items)} row(s) of session {session} ({committed} committed); "
        "bytes kept (reclaim or gc removes what nothing references)"
    )
    if missing:
        shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        raise NotFound(f"{len(missing)} id(s) have no row for session {session}: {shown}")
