"""``lashctl commit``: mark a session's intents as durably referenced."""

from typing import Annotated

import typer

from lashctl.commands import JsonFlag, SessionOption, app_state, complete_id, parse_ids, read_stdin_words
from lashctl.errors import NotFound, UsageError
from lashctl.render import Col, Field

EPILOG = """Examples:

    lashctl commit -s s-42 5f5d584c5857 9a0b1c2d3e4f
    lashctl put -s s-42 photo.png | lashctl commit -s s-42 -

Exit codes: 0 committed; 2 usage error; 3 an id has no intent for the session (the others are still committed); 65 corrupt manifest; 75 manifest locked."""

# One id's outcome (a transfer.CommitResult): committed, already_committed or no_intent.
ITEM = (
    Field("id", lambda r: r.attachment_id, Col("id", "id")),
    Field("session_id", lambda r: r.session_id, Col("session")),
    Field("status", lambda r: r.status, Col("status", "fixed")),
)


def commit(
    ctx: typer.Context,
    attachments: Annotated[
        list[str],
        typer.Argument(
            metavar="ID... | -", help="Ids or unique prefixes; - reads them from stdin.", autocompletion=complete_id
        ),
    ],
    session: SessionOption = None,
    json_flag: JsonFlag = False,
) -> None:
    """Commit the session's rows for the given ids.

    Reports each id as committed, already_committed or no_intent; any id with
    no intent for the session gives exit 3 (the others are still committed).
    """
    from lashctl import core, transfer

    state = app_state(ctx, json_flag)
    session = core.validate_session(session)
    if attachments == ["-"]:
        attachments = read_stdin_words()
        if not attachments:
            # An empty batch is a successful no-op, for set -e scripts.
            if state.ui.json:
                state.ui.emit_json([])
            state.ui.info("nothing to commit: standard input held no ids")
            return
    elif "-" in attachments:
        raise UsageError("'-' (read ids from stdin) must be the only id argument")
    queries = parse_ids(attachments)
    results = transfer.commit(state.store(), session, queries)
    state.ui.listing(ITEM, results)
    missing = [r.attachment_id for r in results if r.status == transfer.NO_INTENT]
    if missing:
        shown = ", ".join(missing[:10]) + (
            f" and {len(missing) - 10} more (--json lists each)" if len(missing) > 10 else ""
        )
        raise NotFound(f"{len(missing)} id(s) have no intent for session {session}: {shown}")
    done = sum(r.status == transfer.COMMITTED for r in results)
    state.ui.info(f"committed {done} row(s) for session {session}")
