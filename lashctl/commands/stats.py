"""``lashctl stats``: where the space goes and what a sweep would free."""

import typer

from lashctl.commands import JsonFlag, app_state, end_inspection, inspect_state
from lashctl.render import Col
from lashctl.timefmt import now_ms

EPILOG = """Examples:

    lashctl stats
    lashctl --json stats

Exit codes: 0 shown; 2 usage error; 65 corrupt manifest."""


def stats(ctx: typer.Context, json_flag: JsonFlag = False) -> None:
    """Summarise the store: where the space goes and what a sweep would free.

    Blobs and bytes by reference state; rows committed and uncommitted;
    orphans reclaimable now at the default grace (24h) and their bytes;
    unmanaged blobs; staging litter; manifest lines against what compaction
    would leave.
    """
    from lashctl import inspect

    state = app_state(ctx, json_flag)
    store = state.store()
    manifest_state = inspect_state(state, store)
    s = inspect.stats(store, manifest_state, now_ms())
    document = {
        "blobs": s.blobs,
        "blob_bytes": s.blob_bytes,
        "blobs_by_state": s.blobs_by_state,
        "bytes_by_state": s.bytes_by_state,
        "rows_committed": s.rows_committed,
        "rows_uncommitted": s.rows_uncommitted,
        "committed_rows_missing_bytes": s.committed_rows_missing_bytes,
        "uncommitted_rows_missing_bytes": s.uncommitted_rows_missing_bytes,
        "orphans_reclaimable": s.orphans_reclaimable,
        "orphan_bytes_reclaimable": s.orphan_bytes_reclaimable,
        "unmanaged_blobs": s.blobs_by_state[inspect.UNMANAGED],
        "unmanaged_bytes": s.bytes_by_state[inspect.UNMANAGED],
        "staging_files": s.staging_files,
        "staging_bytes": s.staging_bytes,
        "stray_files": s.stray_files,
        "orphan_sidecars": s.orphan_sidecars,
        "manifest_lines": s.manifest_lines,
        "manifest_lines_after_compaction": s.compacted_lines,
        "manifest_torn_tail": s.torn_tail,
    }
    rows = [
        ["blobs", s.blobs, s.blob_bytes],
        *[[f"  {k}", s.blobs_by_state[k], s.bytes_by_state[k]] for k in inspect.STATES],
        ["rows committed", s.rows_committed, None],
        ["rows uncommitted", s.rows_uncommitted, None],
        ["committed rows missing bytes", s.committed_rows_missing_bytes, None],
        ["uncommitted rows missing bytes", s.uncommitted_rows_missing_bytes, None],
        ["orphans reclaimable now (24h grace)", s.orphans_reclaimable, s.orphan_bytes_reclaimable],
        ["staging litter", s.staging_files, s.staging_bytes],
        ["stray files", s.stray_files, None],
        ["sidecars without a blob", s.orphan_sidecars, None],
        ["manifest lines", s.manifest_lines, None],
        ["  after compaction", s.compacted_lines, None],
    ]
    state.ui.records([Col("what"), Col("count", "count"), Col("bytes", "bytes")], rows, document)
    end_inspection(state, store, manifest_state)
