"""``lashctl delete``: the content-addressed delete, refused while rows reference the id."""

from typing import Annotated

import typer

from lashctl.commands import AuditLogOption, DryRunFlag, JsonFlag, MetricsFileOption, app_state, complete_id, parse_ids
from lashctl.errors import Partial
from lashctl.render import Col, Field, human_bytes

EPILOG = """Examples:

    lashctl delete -n 5f5d584c5857
    lashctl delete --force 5f5d584c5857 9a0b1c2d3e4f

Exit codes: 0 deleted (or absent); 2 usage error; 4 refused: a manifest row references the id; 5 a row for an id appeared while it was deleted (PostgreSQL); 65 corrupt manifest; 75 manifest locked."""

# One id asked for (a sweep.DeleteResult): deleted, or absent already.
ITEM = (
    Field("id", lambda r: r.attachment_id, Col("id", "id")),
    Field(
        "existed",
        lambda r: r.existed,
        Col("action", "fixed"),
        cell=lambda r: ("would delete" if r.dry_run else "deleted") if r.existed else "absent",
    ),
    Field(
        "byte_len", lambda r: r.byte_len, Col("size", "bytes", drop=2), cell=lambda r: r.byte_len if r.existed else None
    ),
    Field("sessions", lambda r: r.sessions, Col("referenced by", drop=1), cell=lambda r: ", ".join(r.sessions) or None),
)


def delete(
    ctx: typer.Context,
    attachments: Annotated[
        list[str], typer.Argument(metavar="ID...", help="Ids or unique prefixes.", autocompletion=complete_id)
    ],
    force: Annotated[bool, typer.Option("--force", help="Delete even if manifest rows reference the id.")] = False,
    dry_run: DryRunFlag = False,
    json_flag: JsonFlag = False,
    metrics_file: MetricsFileOption = None,
    audit_log: AuditLogOption = None,
) -> None:
    """Delete blobs and their sidecars, for every session at once.

    Refuses (exit 4) while any manifest row references an id, naming the
    sessions, unless --force. Deleting an absent blob succeeds.
    """
    from lashctl import audit, sweep

    queries = parse_ids(attachments)
    state = app_state(ctx, json_flag)
    store = state.store(sweep=True)
    with audit.running(state, store, "delete", audit_log, dry_run):
        results = sweep.delete(store, queries, force=force, dry_run=dry_run)
    if state.metrics is not None:
        state.metrics.delete(results, dry_run)
    state.ui.listing(
        ITEM,
        results,
        lambda: {
            **state.run_fields(),
            "dry_run": dry_run,
            "blobs_deleted": sum(r.existed for r in results),
            "bytes_freed": sum(r.byte_len for r in results),
        },
    )
    gone = sum(r.existed for r in results)
    verb = "dry run: would delete" if dry_run else "deleted"
    state.ui.info(f"{verb} {gone} blob(s), {human_bytes(sum(r.byte_len for r in results))}")
    raced = [r.attachment_id for r in results if r.error is not None]
    if raced:
        raise Partial(f"deleted while referenced (a row for it appeared meanwhile: re-upload it): {', '.join(raced)}")
