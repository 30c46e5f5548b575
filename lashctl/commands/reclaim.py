"""``lashctl reclaim``: the sweep that deletes orphaned uploads."""

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

    lashctl reclaim --dry-run
    lashctl -q --json reclaim --older-than 7d

Exit codes: 0 swept; 2 usage error; 4 refused: cutoff under 1 minute without --force, or (PostgreSQL) this machine's clock ahead of the server's; 5 partial: some deletes failed, their rows kept; 65 corrupt manifest (nothing deleted); 69 a server failed (rows of bytes still there kept); 75 manifest locked; 77 access denied; 129/130/143 stopped by a signal."""

# One blob the sweep acted on (a sweep.ReclaimItem). The table shows a size
# only for bytes that go, and an error in place of the reason.
ITEM = (
    Field("id", lambda i: i.attachment_id, Col("id", "id")),
    Field("action", lambda i: i.action, Col("action", "fixed")),
    Field(
        "byte_len",
        lambda i: i.byte_len,
        Col("size", "bytes", drop=2),
        cell=lambda i: i.byte_len if i.action == "reclaim" else None,
    ),
    Field("sessions", lambda i: i.sessions, Col("sessions", drop=3), cell=lambda i: ", ".join(i.sessions) or None),
    Field("bytes_present", lambda i: i.bytes_present),
    Field("reason", lambda i: i.reason, Col("reason", drop=4, min_width=12), cell=lambda i: i.error or i.reason),
    Field("error", lambda i: i.error),
)


def reclaim(
    ctx: typer.Context,
    older_than: OlderThanOption = None,
    before: BeforeOption = None,
    dry_run: DryRunFlag = False,
    force: Annotated[bool, typer.Option("--force", help="Allow a cutoff less than 1 minute in the past.")] = False,
    json_flag: JsonFlag = False,
    metrics_file: MetricsFileOption = None,
    audit_log: AuditLogOption = None,
) -> None:
    """Delete the bytes of uncommitted intents older than the grace period (default 24h).

    Per blob: if any row for it is live (committed, or an intent newer than the
    cutoff) the aged rows are released and the bytes kept; otherwise bytes and
    sidecar are deleted, its rows forgotten first. Bytes written after the
    cutoff are spared, whatever the rows say. A blob that cannot be deleted
    gives exit 5 and keeps its rows for the next sweep (if its bytes may be
    gone, its rows stay forgotten and gc removes what is left). --dry-run
    takes no lock and reports exactly what a real run would do.
    """
    from lashctl import audit, core, sweep

    state = app_state(ctx, json_flag)
    now = now_ms()
    cutoff = cutoff_ms(older_than, before, now, default=core.DEFAULT_GRACE)
    core.check_grace(cutoff, now, force=force)
    store = state.store(sweep=True)
    with (
        audit.running(state, store, "reclaim", audit_log, dry_run),
        state.ui.progress("reclaiming", None, unit="blobs") as bar,
    ):
        report = sweep.reclaim(store, cutoff, dry_run=dry_run, progress=bar.advance, planned=bar.set_total)
    if state.metrics is not None:
        state.metrics.reclaim(report)
    # Streamed to a pipe, a chunk at a time (the same bytes as the gathered listing).
    records = iter(report.items) if report.items else report.items
    state.ui.listing(
        ITEM,
        records,
        lambda: {
            **state.run_fields(),
            "dry_run": report.dry_run,
            "cutoff_epoch_ms": report.cutoff_epoch_ms,
            "cutoff": iso_ms(report.cutoff_epoch_ms),
            "scanned_intents": report.scanned_intents,
            "blobs_reclaimed": report.blobs_reclaimed,
            "bytes_freed": report.bytes_freed,
            "rows_released": report.rows_released,
            "failures": len(report.failures),
        },
        ascii_json=state.ui.json and _not_utf8(report.items),
    )
    prefix = "dry run: " if dry_run else ""
    kept = (
        (
            f"{report.kept_for_owners} aged intent(s) kept: their lash owners are not proven dead "
            "(`lashctl show ID` says which)"
        )
        if report.kept_for_owners
        else ""
    )
    spared = sum(1 for i in report.items if i.action == sweep.SPARED)
    spared = f"{'would spare' if dry_run else 'spared'} {spared} blob(s) written after the cutoff" if spared else ""
    if not report.items:
        state.ui.info(
            f"{prefix}nothing to reclaim: " + (kept or f"no uncommitted intent at or before {iso_ms(cutoff)}")
        )
    else:
        state.ui.info(
            f"{prefix}{'would reclaim' if dry_run else 'reclaimed'} {report.blobs_reclaimed} blob(s), "
            f"{human_bytes(report.bytes_freed)}; {'would release' if dry_run else 'released'} "
            f"{report.rows_released} row(s); "
            f"scanned {report.scanned_intents} uncommitted intent(s) at or before {iso_ms(cutoff)}; "
            f"{len(report.failures)} failure(s)" + (f"; {spared}" if spared else "") + (f"; {kept}" if kept else "")
        )
    if report.failures:
        later = [i.attachment_id for i in report.failures if (i.error or "").endswith(sweep.LEFT_FOR_GC)]
        raced = [i.attachment_id for i in report.failures if i.action == sweep.DELETED_WHILE_REFERENCED]
        kept = [i.attachment_id for i in report.failures if i.attachment_id not in {*later, *raced}]
        what = [f"rows kept for the next sweep: {', '.join(kept)}"] if kept else []
        what += [f"rows forgotten, bytes left for gc: {', '.join(later)}"] if later else []
        what += [f"deleted while referenced: {', '.join(raced)}"] if raced else []
        raise Partial(f"sweep finished with {len(report.failures)} failure(s); {'; '.join(what)}")


def _not_utf8(items) -> bool:
    """Whether some item holds text UTF-8 cannot encode (a session id from
    another writer, a path): the --json document is then ASCII throughout."""
    for i in items:
        for text in (i.reason, i.error or "", *i.sessions):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                return True
    return False
