"""``lashctl gc``: mark and sweep blobs that no manifest row references."""

from typing import Annotated

import typer

from lashctl.commands import (
    AuditLogOption,
    BeforeOption,
    DryRunFlag,
    JsonFlag,
    MetricsFileOption,
    OlderThanOption,
    app_state,
)
from lashctl.errors import Partial
from lashctl.render import Col, Field, human_bytes
from lashctl.timefmt import cutoff_ms, iso_ms, now_ms

EPILOG = """Examples:

    lashctl gc --dry-run
    lashctl gc --older-than 7d

Exit codes: 0 swept; 2 usage error; 4 refused: cutoff under 1 minute, or an empty manifest, without --force; 5 partial: some deletes failed; 65 corrupt manifest; 75 manifest locked."""

# One file the sweep acted on (a sweep.GcItem): a blob or litter. The table
# shows an error in place of the reason.
ITEM = (
    Field("path", lambda i: i.path, Col("path", "path", min_width=20)),
    Field("id", lambda i: i.attachment_id),
    Field("kind", lambda i: i.kind, Col("kind", "fixed")),
    Field("action", lambda i: i.action, Col("action", "fixed")),
    Field("byte_len", lambda i: i.byte_len, Col("size", "bytes", drop=2)),
    Field("reason", lambda i: i.reason, Col("reason", drop=1, min_width=12), cell=lambda i: i.error or i.reason),
    Field("error", lambda i: i.error),
)


def gc(
    ctx: typer.Context,
    older_than: OlderThanOption = None,
    before: BeforeOption = None,
    dry_run: DryRunFlag = False,
    force: Annotated[
        bool, typer.Option("--force", help="Allow a cutoff less than 1 minute in the past, or a manifest with no rows.")
    ] = False,
    json_flag: JsonFlag = False,
    metrics_file: MetricsFileOption = None,
    audit_log: AuditLogOption = None,
) -> None:
    """Delete blobs no manifest row references, and staging litter, older than the grace period (default 24h).

    ASSUMES EVERY WRITER OF THIS STORE RECORDS INTENTS IN THIS MANIFEST: a blob
    written by a process that does not (lash-core itself with its own
    manifest, for instance) looks unreferenced here and would be deleted. Use
    reclaim for the write-ahead sweep; use gc only on stores lashctl alone
    writes. Age is the blob's modification time (put refreshes it).
    """
    from lashctl import audit, core, sweep

    state = app_state(ctx, json_flag)
    now = now_ms()
    cutoff = cutoff_ms(older_than, before, now, default=core.DEFAULT_GRACE)
    core.check_grace(cutoff, now, force=force)
    store = state.store(sweep=True)
    total = sum(1 for _ in store.blobs.iter_ids()) if state.ui.wants_progress() else None
    with audit.running(state, store, "gc", audit_log, dry_run), state.ui.progress("gc", total, unit="blobs") as bar:
        report = sweep.gc(store, cutoff, dry_run=dry_run, progress=bar.advance, force=force)
    if state.metrics is not None:
        state.metrics.gc(report)
    state.ui.listing(
        ITEM,
        report.items,
        lambda: {
            **state.run_fields(),
            "dry_run": report.dry_run,
            "cutoff_epoch_ms": report.cutoff_epoch_ms,
            "cutoff": iso_ms(report.cutoff_epoch_ms),
            "blobs_scanned": report.blobs_scanned,
            "blobs_deleted": sum(1 for i in report.items if i.kind == "blob" and i.action == "delete"),
            "litter_deleted": sum(1 for i in report.items if i.kind != "blob" and i.action == "delete"),
            "bytes_freed": report.bytes_freed,
            "failures": len(report.failures),
        },
        base=str(store.root),
    )
    verb = "dry run: would delete" if dry_run else "deleted"
    deleted = [i for i in report.items if i.action == "delete"]
    if not report.items:
        state.ui.info(
            f"{'dry run: ' if dry_run else ''}nothing to delete: scanned {report.blobs_scanned} blob(s), "
            f"none unreferenced and older than {iso_ms(cutoff)}"
        )
    else:
        state.ui.info(
            f"{verb} {len(deleted)} file(s), {human_bytes(report.bytes_freed)}; scanned {report.blobs_scanned} "
            f"blob(s) older than {iso_ms(cutoff)}; {len(report.failures)} failure(s)"
        )
    if report.failures:
        raise Partial(
            f"gc finished with {len(report.failures)} failure(s): " + ", ".join(i.path for i in report.failures)
        )
