"""``lashctl stats``: where the space goes and what a sweep would free."""

import typer

from lashctl.commands import JsonFlag, MetricsFileOption, app_state, end_inspection, inspect_state
from lashctl.render import Col, Field, item
from lashctl.timefmt import now_ms

EPILOG = """Examples:

    lashctl stats
    lashctl --json stats

Exit codes: 0 shown; 2 usage error; 65 corrupt manifest."""

# What the store holds (an inspect.Stats), each under its --json key.
STATS = (
    Field("blobs", lambda s: s.blobs),
    Field("blob_bytes", lambda s: s.blob_bytes),
    Field("blobs_by_state", lambda s: s.blobs_by_state),
    Field("bytes_by_state", lambda s: s.bytes_by_state),
    Field("rows_committed", lambda s: s.rows_committed),
    Field("rows_uncommitted", lambda s: s.rows_uncommitted),
    Field("committed_rows_missing_bytes", lambda s: s.committed_rows_missing_bytes),
    Field("uncommitted_rows_missing_bytes", lambda s: s.uncommitted_rows_missing_bytes),
    Field("orphans_reclaimable", lambda s: s.orphans_reclaimable),
    Field("orphan_bytes_reclaimable", lambda s: s.orphan_bytes_reclaimable),
    Field("unmanaged_blobs", lambda s: s.blobs_by_state["unmanaged"]),
    Field("unmanaged_bytes", lambda s: s.bytes_by_state["unmanaged"]),
    Field("staging_files", lambda s: s.staging_files),
    Field("staging_bytes", lambda s: s.staging_bytes),
    Field("stray_files", lambda s: s.stray_files),
    Field("orphan_sidecars", lambda s: s.orphan_sidecars),
    Field("manifest_lines", lambda s: s.manifest_lines),
    Field("manifest_lines_after_compaction", lambda s: s.compacted_lines),
    Field("manifest_torn_tail", lambda s: s.torn_tail),
)

# The table: a line per quantity, its count and its bytes named by their
# --json keys ("{state}": a line for each reference state).
LINES = (
    ("blobs", "blobs", "blob_bytes"),
    ("  {state}", "blobs_by_state", "bytes_by_state"),
    ("rows committed", "rows_committed", None),
    ("rows uncommitted", "rows_uncommitted", None),
    ("committed rows missing bytes", "committed_rows_missing_bytes", None),
    ("uncommitted rows missing bytes", "uncommitted_rows_missing_bytes", None),
    ("orphans reclaimable now (24h grace)", "orphans_reclaimable", "orphan_bytes_reclaimable"),
    ("staging litter", "staging_files", "staging_bytes"),
    ("stray files", "stray_files", None),
    ("sidecars without a blob", "orphan_sidecars", None),
    ("manifest lines", "manifest_lines", None),
    ("  after compaction", "manifest_lines_after_compaction", None),
)
COLUMNS = (Col("what"), Col("count", "count"), Col("bytes", "bytes"))


def stats(ctx: typer.Context, json_flag: JsonFlag = False, metrics_file: MetricsFileOption = None) -> None:
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
    if state.metrics is not None:
        state.metrics.stats(s)
    document = item(STATS, s)
    state.ui.records(COLUMNS, lambda: _lines(document), document)
    end_inspection(state, store, manifest_state)


def _lines(document: dict) -> list[list]:
    rows: list[list] = []
    for what, count, size in LINES:
        if "{state}" in what:
            rows += [[what.format(state=k), n, document[size][k]] for k, n in document[count].items()]
        elif document[count] is not None:  # (a PostgreSQL manifest has no lines)
            rows.append([what, document[count], document[size] if size else None])
    return rows
