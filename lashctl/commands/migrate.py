"""``lashctl migrate``: copy a store's blobs, sidecars and rows to another store."""

from typing import Annotated, Optional

import typer

from lashctl.commands import DryRunFlag, JsonFlag, app_state
from lashctl.errors import Partial
from lashctl.render import Col, human_bytes

EPILOG = """Examples:

    lashctl migrate --store /srv/lash --to-store s3://bucket/lash --to-manifest postgresql://lash@db/lash --dry-run
    lashctl migrate --store s3://bucket/lash --manifest postgresql://lash@db/lash --to-store /srv/lash-copy

Exit codes: 0 copied (or nothing to copy); 2 usage error: the destination is the source, or its manifest is the source's, or a missing bucket or table; 4 refused: --to-layout differs from the layout the destination records; 5 partial: some blobs or sidecars failed (their rows held back); 65 corrupt manifest; 69 server unavailable; 75 manifest locked; 77 access denied."""


def migrate(
    ctx: typer.Context,
    to_store: Annotated[
        str,
        typer.Option(
            "--to-store",
            metavar="PATH|URL",
            show_default=False,
            help="Destination store root: a directory (created if missing) or s3://BUCKET/PREFIX.",
        ),
    ],
    to_manifest: Annotated[
        Optional[str],
        typer.Option(
            "--to-manifest",
            metavar="PATH|URL",
            help="Destination manifest: a JSON-lines file, a postgresql:// URL or lash-sqlite:DIR "
            "(default: <to-store>/manifest.jsonl; required for an s3:// destination).",
        ),
    ] = None,
    to_layout: Annotated[
        Optional[str],
        typer.Option(
            "--to-layout",
            metavar="sidecars|bare",
            help="The destination's layout (default: what it records, else what its blobs show, else the source's).",
        ),
    ] = None,
    dry_run: DryRunFlag = False,
    json_flag: JsonFlag = False,
) -> None:
    """Copy the store's blobs, sidecars and manifest rows to another store.

    Directory to S3 and back, directory to directory; JSON-lines to PostgreSQL
    and back. The source is only read. Per blob, in id order: one already at
    the destination that hashes to its id is skipped; otherwise it streams
    over, is hashed on the way (a source blob that does not hash to its name
    is reported and not copied), installed, given its sidecar, and re-hashed
    at the destination. A blob's rows are written (its intent and commit
    times kept) only after its bytes are verified there; rows whose blob the
    source lacks are copied as they are and listed. Rerun after an
    interruption: what is already there is verified and skipped.
    """
    from lashctl import core
    from lashctl import migrate as core_migrate
    from lashctl.timefmt import iso_ms, now_ms
    from lashctl.backends import is_s3_url, is_url
    from lashctl.core import Store
    from lashctl.errors import UsageError

    state = app_state(ctx, json_flag)
    for option, given in (("--to-store", to_store), ("--to-manifest", to_manifest)):
        if given is not None and not given.strip():  # never the current directory or the default
            raise UsageError(f"{option} is empty: name a directory, file or URL")
    if is_s3_url(to_store) and to_manifest is None:
        raise UsageError(
            "an s3:// destination keeps no manifest of its own: name one with --to-manifest "
            "(a file or a postgresql:// URL)"
        )
    if to_layout not in (None, "sidecars", "bare"):
        raise UsageError(f"--to-layout '{to_layout}' is not one of sidecars, bare")
    src = state.store()
    dest_root = to_store if is_url(to_store) else _path(to_store)
    dest_manifest = None if to_manifest is None else to_manifest if is_url(to_manifest) else _path(to_manifest)
    dest = Store(
        dest_root,
        dest_manifest,
        state.lock_timeout,
        warn=state.ui.warn,
        note=state.ui.note,
        layout=to_layout or _destination_layout(dest_root, src, own=core.owns_manifest(dest_root, dest_manifest)),
    )
    core_migrate.check_distinct(src, dest)
    total = None
    if state.ui.wants_progress():
        total = sum(1 for _ in src.blobs.iter_ids())
    with state.ui.progress("migrating", total, unit="blobs") as bar:
        report = core_migrate.migrate(src, dest, dry_run=dry_run, progress=bar.advance)
    # Copies an object store dates now look just written to the destination's
    # sweeps, which spare such bytes for a grace period (default 24h).
    fresh_until = now_ms() + core.default_grace_ms() if report.copies_undated else None
    state.ui.records(
        [Col("id", "id"), Col("what", "fixed"), Col("problem", min_width=16)],
        [[i.attachment_id, i.what, i.message] for i in report.items],
        {
            **state.run_fields(),
            "dry_run": report.dry_run,
            "destination_store": report.destination,
            "destination_manifest": report.destination_manifest,
            "blobs_seen": report.blobs_seen,
            "blobs_copied": report.blobs_copied,
            "blobs_skipped": report.blobs_skipped,
            "blobs_failed": report.blobs_failed,
            "bytes_copied": report.bytes_copied,
            "bytes_skipped": report.bytes_skipped,
            "sidecars_copied": report.sidecars_copied,
            "rows_seen": report.rows_seen,
            "rows_copied": report.rows_copied,
            "rows_skipped": report.rows_skipped,
            "rows_held": report.rows_held,
            "rows_without_bytes": report.rows_without_bytes,
            "rows_differing": report.rows_differing,
            "owners_dropped": report.owners_dropped,
            "copies_undated": report.copies_undated,
            "copies_sweepable_after": iso_ms(fresh_until) if fresh_until is not None else None,
            "failures": [{"id": i.attachment_id, "what": i.what, "error": i.message} for i in report.failures],
            "notes": [
                {"id": i.attachment_id, "what": i.what, "message": i.message} for i in report.items if not i.failed
            ],
        },
    )
    if report.rows_differing:
        state.ui.warn(
            f"{report.rows_differing} row(s) at the destination still differ from the source: "
            "it had rows of its own for those keys (a commit there is never overwritten)"
        )
    if fresh_until is not None:
        state.ui.warn(
            f"{report.copies_undated} copied blob(s) are dated now at the destination (an object store "
            f"keeps no source time): its sweeps spare them, orphans included, until {iso_ms(fresh_until)}"
        )
    if report.owners_dropped:
        state.ui.warn(
            f"{report.owners_dropped} uncommitted row(s) {'have' if dry_run else 'had'} an owner (turn or "
            "process) that manifest events cannot carry: the destination's sweeps "
            f"{'would judge' if dry_run else 'judge'} them by age alone"
        )
    verb = "would copy" if dry_run else "copied"
    state.ui.info(
        f"{'dry run: ' if dry_run else ''}{report.source} -> {report.destination}: {verb} "
        f"{report.blobs_copied} blob(s), {human_bytes(report.bytes_copied)}; {report.blobs_skipped} already "
        f"there and verified ({human_bytes(report.bytes_skipped)}); {report.blobs_failed} failed. Rows: {verb} "
        f"{report.rows_copied}, {report.rows_skipped} already there, {report.rows_held} held back, "
        f"{report.rows_without_bytes} without bytes at the source; {len(report.failures)} failure(s)"
    )
    if report.failures:
        raise Partial(f"migrate finished with {len(report.failures)} failure(s); rerun to retry them")


def _destination_layout(root, src, own: bool) -> str:
    """What the destination records, else what its blobs show, else the source's layout."""
    from itertools import islice

    from lashctl.backends import open_blobs
    from lashctl.core import detect_layout

    blobs = open_blobs(root)
    if not blobs.exists():
        return src.layout
    recorded = blobs.recorded_layout()
    if recorded is not None:
        return recorded
    with blobs.opened():
        empty = not list(islice(blobs.iter_ids(), 1))
    return src.layout if empty else detect_layout(blobs, own=own)


def _path(text: str):
    from pathlib import Path

    return Path(text)
