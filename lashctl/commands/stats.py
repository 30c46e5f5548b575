"""``lashctl stats``: where the space goes and what a sweep would free."""

from enum import Enum
from typing import Annotated, Optional

import typer

from lashctl.commands import JsonFlag, MetricsFileOption, app_state, end_inspection, inspect_state
from lashctl.render import Chart, Col, Field, item
from lashctl.timefmt import now_ms

EPILOG = """Examples:

    lashctl stats
    lashctl stats --by session
    lashctl --json stats --by media-type

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
    Field("series", lambda s: [item(SERIES, one) for one in s.series]),
)


class By(str, Enum):
    day = "day"
    session = "session"
    media_type = "media-type"


# The buckets of a series (inspect.Bucket under its key; key None: "other"),
# in --json and as the TSV of --by on a pipe.
BUCKET = (
    Field("key", lambda kb: kb[0], Col("key")),
    Field("blobs", lambda kb: kb[1].blobs, Col("blobs", "count")),
    Field("bytes", lambda kb: kb[1].bytes, Col("bytes", "bytes")),
    Field("committed_bytes", lambda kb: kb[1].committed_bytes, Col("committed", "bytes")),
    Field("uncommitted_bytes", lambda kb: kb[1].uncommitted_bytes, Col("uncommitted", "bytes")),
    Field("unmanaged_bytes", lambda kb: kb[1].unmanaged_bytes, Col("unmanaged", "bytes")),
    Field("reclaimable_bytes", lambda kb: kb[1].reclaimable_bytes, Col("reclaimable", "bytes")),
)
# A series (an inspect.Series).
SERIES = (
    Field("by", lambda x: x.by),
    Field("note", lambda x: x.note),
    Field("approximate", lambda x: x.approximate),
    Field("other_keys", lambda x: x.other_keys),
    Field("buckets", lambda x: [item(BUCKET, kb) for kb in x.buckets]),
)
# A chart's stacked parts: (Bucket attribute, legend name, character, style).
PARTS = (
    ("committed_bytes", "committed", "\u2588", "green"),
    ("uncommitted_bytes", "uncommitted", "\u2592", "yellow"),
    ("unmanaged_bytes", "unmanaged", "\u2591", "red"),
)
TITLES = {"day": "Bytes by day written (UTC)", "session": "Bytes by session", "media-type": "Bytes by media type"}
BARS_BY_TIME = 14  # a chart by day draws days, else weeks, months or years: the first that fits in as many bars

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


def stats(
    ctx: typer.Context,
    by: Annotated[
        Optional[By],
        typer.Option(
            "--by", help="Show only where the bytes are by this: a chart on a terminal, its buckets as TSV on a pipe."
        ),
    ] = None,
    json_flag: JsonFlag = False,
    metrics_file: MetricsFileOption = None,
) -> None:
    """Summarise the store: where the space goes and what a sweep would free.

    Blobs and bytes by reference state; rows committed and uncommitted;
    orphans reclaimable now at the default grace (24h) and their bytes;
    unmanaged blobs; staging litter; manifest lines against what compaction
    would leave. On a terminal, bar charts of the bytes by day written and
    by session (top 10) follow; --by picks one chart (day, session or
    media-type) and shows it alone.
    """
    from lashctl import inspect

    state = app_state(ctx, json_flag)
    store = state.store()
    manifest_state = inspect_state(state, store)
    if by is not None:
        wanted: tuple[str, ...] = (by.value,)
    elif state.ui.json or state.ui.stdout_is_terminal():
        wanted = (inspect.DAY, inspect.SESSION)
    else:
        wanted = ()  # the TSV of the table: no series
    s = inspect.stats(store, manifest_state, now_ms(), wanted)
    if state.metrics is not None:
        state.metrics.stats(s)
    document = item(STATS, s)
    if by is None:
        state.ui.records(COLUMNS, lambda: _lines(document), document)
        state.ui.charts(lambda: [_chart(one) for one in s.series])
    elif state.ui.json or not state.ui.stdout_is_terminal():
        state.ui.records(
            [f.col for f in BUCKET], [[f.cell_of(kb) for f in BUCKET] for kb in s.series[0].buckets], document
        )
    else:
        state.ui.charts(lambda: [_chart(s.series[0])])
    if by is not None and not s.series[0].buckets:
        state.ui.info("no bytes to show" + (" by session" if by is By.session and s.blobs else ""))
    end_inspection(state, store, manifest_state)


def _chart(series) -> Chart:
    """A series as its bar chart: a timeline, or the top keys and "other"."""
    from lashctl.inspect import TALLY_LIMIT

    rows = list(series.buckets)
    title, note = TITLES[series.by], series.note
    if series.by == "day" and rows:
        period, rows = _periods(rows)
        title = f"Bytes by {period} written (UTC)"
        note += "; a week is named by its Monday" if period == "week" else ""
    parts = [p for p in PARTS if series.by != "session" or p[0] != "unmanaged_bytes"]
    kind = {"session": "sessions", "media-type": "media types"}.get(series.by, "keys")
    other = "other" if series.approximate else f"other ({series.other_keys} {kind})"
    if series.approximate:
        note += f"; approximate: past {TALLY_LIMIT} {kind} the smallest were added to other while counting"
    return Chart(
        title,
        [(name, char, style) for _, name, char, style in parts],
        [(other if key is None else key, [getattr(bucket, attr) for attr, *_ in parts]) for key, bucket in rows],
        note,
    )


def _periods(days: list) -> tuple[str, list]:
    """Day buckets (oldest first) as a timeline of at most ``BARS_BY_TIME``
    bars: days, weeks (from Monday), months or years, from the first with
    bytes to the last, the empty ones included; in years, those before the
    last ``BARS_BY_TIME - 1`` make one bar; (the period, its rows)."""
    from datetime import date, timedelta

    from lashctl.inspect import Bucket

    first, last = date.fromisoformat(days[0][0]), date.fromisoformat(days[-1][0])
    starts = {
        "day": lambda d: d,
        "week": lambda d: d - timedelta(days=d.weekday()),
        "month": lambda d: d.replace(day=1),
        "year": lambda d: d.replace(month=1, day=1),
    }
    labels = {
        "day": date.isoformat,
        "week": lambda d: f"{d.isoformat()}+",
        "month": lambda d: d.isoformat()[:7],
        "year": lambda d: d.isoformat()[:4],
    }

    def following(period: str, d: date) -> date:
        if period in ("day", "week"):
            return d + timedelta(days=1 if period == "day" else 7)
        if period == "month":
            return d.replace(year=d.year + d.month // 12, month=d.month % 12 + 1)
        return d.replace(year=d.year + 1)

    for period in ("day", "week", "month", "year"):
        start = starts[period]
        timeline = [start(first)]
        while timeline[-1] < start(last):
            timeline.append(following(period, timeline[-1]))
        if len(timeline) <= BARS_BY_TIME or period == "year":
            break
    # Years past the bars (a clock once at the epoch): the oldest make one bar.
    earlier = timeline[-BARS_BY_TIME + 1] if len(timeline) > BARS_BY_TIME else None
    if earlier is not None:
        timeline = timeline[-BARS_BY_TIME + 1 :]
    before = Bucket()
    buckets = {d: Bucket() for d in timeline}
    for key, bucket in days:
        when = start(date.fromisoformat(key))
        (before if earlier is not None and when < earlier else buckets[when]).merge(bucket)
    rows = [(labels[period](d), buckets[d]) for d in timeline]
    return period, ([(f"before {labels[period](earlier)}", before)] if earlier is not None else []) + rows


def _lines(document: dict) -> list[list]:
    rows: list[list] = []
    for what, count, size in LINES:
        if "{state}" in what:
            rows += [[what.format(state=k), n, document[size][k]] for k, n in document[count].items()]
        elif document[count] is not None:  # (a PostgreSQL manifest has no lines)
            rows.append([what, document[count], document[size] if size else None])
    return rows
