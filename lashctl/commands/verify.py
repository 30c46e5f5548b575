"""``lashctl verify``: re-hash every blob and check everything around it."""

from typing import Annotated, Optional

import typer

from lashctl.commands import AuditLogOption, JsonFlag, MetricsFileOption, app_state
from lashctl.errors import Corrupt
from lashctl.render import Col, Field, human_bytes
from lashctl.timefmt import now_ms, parse_duration

EPILOG = """Examples:

    lashctl verify
    lashctl verify --fix --grace 2h

Exit codes: 0 no errors (warnings allowed); 2 usage error; 4 refused: --grace under 1 minute without --force; 65 errors remain; 75 manifest locked (--fix)."""

# One problem found (an inspect.Finding), and the repair --fix made of it. A
# repaired finding's row says "repaired" where an open one gives its severity.
FINDING = (
    Field(
        "severity",
        lambda f: f.severity,
        Col("severity", "fixed"),
        cell=lambda f: "repaired" if f.repair else f.severity,
    ),
    Field("status", lambda f: "repaired" if f.repair else "open"),
    Field("kind", lambda f: f.kind, Col("kind", "fixed")),
    Field("path", lambda f: f.path, Col("path", "path", min_width=20)),
    Field("id", lambda f: f.attachment_id),
    Field("message", lambda f: f.message, Col("problem", drop=1, min_width=16)),
    Field("repair", lambda f: f.repair, Col("repair", drop=2)),
)


def verify(
    ctx: typer.Context,
    fix: Annotated[
        bool,
        typer.Option(
            "--fix",
            help="Safe repairs only: remove old staging litter, rebuild missing sidecars, "
            "quarantine corrupt blobs (bytes are never deleted).",
        ),
    ] = False,
    grace: Annotated[
        Optional[str],
        typer.Option(
            "--grace", metavar="DURATION", help="Staging litter older than this is removed by --fix (default 24h)."
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Allow a --grace under 1 minute (only when no put is running).")
    ] = False,
    json_flag: JsonFlag = False,
    metrics_file: MetricsFileOption = None,
    audit_log: AuditLogOption = None,
) -> None:
    """Check the store's health: re-hash every blob and check what surrounds it.

    Finds sidecars missing, undecodable or disagreeing with their blob; stray
    files under sha256/; staging litter; manifest rows whose bytes are missing
    (an error when committed, a warning when not); blobs with no row.

    Exit 0 when no error is found (warnings, such as litter or unmanaged blobs,
    do not fail it), 65 when errors remain. --fix prints each repair.
    """
    from lashctl import audit, core, inspect

    state = app_state(ctx, json_flag)
    store = state.store(sweep=fix)
    now = now_ms()
    grace_ms = parse_duration(grace, "--grace") if grace is not None else None
    if fix and grace_ms is not None:
        # A put in flight keeps its staging file in tmp/: the same floor as the sweeps.
        core.check_grace(now - grace_ms, now, force=force, option="--grace")
    store.manifest.check_readable()  # a FIFO or a device there: one line now, not a hang
    total = None  # the bar's total costs a walk of the store: only when a bar is drawn
    if state.ui.wants_progress():
        total = sum(st.size for i in store.blobs.iter_ids() if (st := store.blobs.stat(i)) is not None)
    with audit.running(state, store, "verify", audit_log, not fix), state.ui.progress("verifying", total) as bar:
        # Findings go to a spool as found (memory stays flat however many),
        # counted: the document's counts come before its findings.
        report = inspect.verify(store, now, fix=fix, grace_ms=grace_ms, progress=bar.advance, spool=True)
    if state.metrics is not None:
        state.metrics.verify(report)
    warnings = report.warnings
    state.ui.listing(
        FINDING,
        report.findings,
        lambda: {
            **state.run_fields(),
            "fix": fix,
            "clean": not report.errors,
            "blobs_checked": report.blobs_checked,
            "bytes_checked": report.bytes_checked,
            "errors": len(report.errors),
            "warnings": warnings,
            "repairs": len(report.repairs),
        },
        items="findings",
        base=str(store.root),
        ascii_json=report.ascii_only,
    )
    for f in report.repairs:
        state.ui.info(f"repaired {f.path}: {f.repair}")
    checked = f"checked {report.blobs_checked} blob(s), {human_bytes(report.bytes_checked)}"
    if not report.findings:
        state.ui.info(f"{checked}: no problems found")
    else:
        state.ui.info(
            f"{checked}: {len(report.errors)} error(s), {warnings} warning(s), {len(report.repairs)} repair(s)"
        )
    if report.errors:
        raise Corrupt(f"verify found {len(report.errors)} error(s) in store {store.root}")
