"""``stats``' series (where the bytes are, by day, session and media type) and
the bar charts a terminal draws of them. The charts at real terminal widths:
tests/e2e/test_stats_charts_e2e.py."""

from __future__ import annotations

import io
import os

import pytest

from lashctl import core, inspect, transfer
from lashctl.backends.manifests.jsonl.log import StateView
from lashctl.commands import stats as stats_command
from lashctl.ids import parse_id
from lashctl.render import Chart, _bar_cells, render_chart
from lashctl.timefmt import now_ms

DAY_MS = 86_400_000
WIDTHS = [60, 80, 120, 200]


def put(store: core.Store, data: bytes, session: str, name: str = "file.bin") -> str:
    source = transfer.PutSource(name, lambda: io.BytesIO(data), name)
    [result] = list(transfer.put(store, [source], transfer.PutOptions(session)))
    return result.attachment_id


def view_of(store: core.Store) -> StateView:
    return StateView(store.manifest.read_state())


def series_of(store: core.Store, *by: str) -> dict[str, inspect.Series]:
    s = inspect.stats(store, view_of(store), now_ms(), by)
    assert [one.by for one in s.series] == list(by)
    return {one.by: one for one in s.series}


def buckets(series: inspect.Series) -> dict:
    return {key: (b.blobs, b.committed_bytes, b.uncommitted_bytes, b.unmanaged_bytes) for key, b in series.buckets}


def test_no_series_unless_asked(store):
    s = core.Store(store)
    put(s, b"x" * 10, "s1")
    assert inspect.stats(s, view_of(s), now_ms()).series == []


def test_a_shared_blob_counts_in_full_in_each_session(store):
    s = core.Store(store)
    shared = put(s, b"shared" * 10, "s1")
    put(s, b"shared" * 10, "s2")
    put(s, b"only s2", "s2")
    transfer.commit(s, "s1", [parse_id(shared)])
    got = buckets(series_of(s, "session")["session"])
    # s1 committed the shared blob; s2's row for it is still an intent.
    assert got == {"s1": (1, 60, 0, 0), "s2": (2, 0, 67, 0)}


def test_unmanaged_bytes_are_in_the_day_series_but_no_session(store):
    s = core.Store(store)
    put(s, b"managed", "s1")
    from conftest import blob_path, sha

    stray = b"no row references me"
    path = blob_path(store, sha(stray))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(stray)
    old = (now_ms() - 3 * DAY_MS) / 1000
    os.utime(path, (old, old))
    series = series_of(s, "day", "session")
    days = buckets(series["day"])
    assert len(days) == 2
    assert sorted(days.values()) == [(1, 0, 0, len(stray)), (1, 0, 7, 0)]
    assert list(days) == sorted(days)  # oldest first
    assert buckets(series["session"]) == {"s1": (1, 0, 7, 0)}
    assert sum(b.bytes for _, b in series["day"].buckets) == 7 + len(stray)


def test_top_sessions_and_the_rest_as_other(store):
    s = core.Store(store)
    for i in range(inspect.TOP_KEYS + 3):
        put(s, bytes([i]) * (100 + i), f"session-{i:02d}")
    series = series_of(s, "session")["session"]
    keys = [key for key, _ in series.buckets]
    assert keys[:-1] == [f"session-{i:02d}" for i in range(inspect.TOP_KEYS + 2, 2, -1)]  # largest first
    assert keys[-1] is None and series.other_keys == 3 and not series.approximate
    assert series.buckets[-1][1].bytes == 100 + 101 + 102


def test_more_sessions_than_held_are_counted_approximately_but_add_up(store, monkeypatch):
    monkeypatch.setattr(inspect, "TALLY_LIMIT", 4)
    s = core.Store(store)
    total = 0
    for i in range(12):
        data = bytes([i]) * (10 + i * 10)
        put(s, data, f"s{i:02d}")
        total += len(data)
    series = series_of(s, "session")["session"]
    assert series.approximate
    assert sum(b.bytes for _, b in series.buckets) == total
    assert series.buckets[-1][0] is None


def test_media_types_come_from_the_sidecars(store):
    s = core.Store(store)
    put(s, b"some text\n", "s1", "notes.txt")
    put(s, b"\x00\x01binary", "s1", "data.bin")
    got = buckets(series_of(s, "media-type")["media-type"])
    assert set(got) == {"text/plain", "application/octet-stream"}


def test_a_bare_store_says_unknown_without_opening_a_sidecar(store, monkeypatch):
    s = core.Store(store, layout="bare")
    put(s, b"some text\n", "s1", "notes.txt")
    put(s, b"more text\n", "s1", "more.txt")
    assert s.layout == "bare"

    def refuse(attachment_id):
        raise AssertionError("a sidecar was opened on a bare store")

    monkeypatch.setattr(s.blobs, "read_sidecar", refuse)
    got = buckets(series_of(s, "media-type")["media-type"])
    assert got == {"unknown": (2, 0, 20, 0)}


def test_a_store_of_many_blobs_keeps_few_buckets(store):
    """Memory stays flat: buckets by day, the top sessions and "other"."""
    s = core.Store(store)
    for i in range(40):
        put(s, f"blob {i}".encode(), f"s{i}")
    series = series_of(s, "day", "session", "media-type")
    assert len(series["day"].buckets) == 1
    assert len(series["session"].buckets) == inspect.TOP_KEYS + 1
    assert len(series["media-type"].buckets) == 1


# -- the bar charts --------------------------------------------------------------
@pytest.mark.parametrize(
    ("amounts", "largest", "width"),
    [
        ([3, 2, 1], 6, 30),
        ([1, 1, 1], 10, 7),
        ([0, 0, 5], 5, 13),
        ([1, 0, 0], 10**9, 20),
        ([999, 1, 0], 1000, 10),
    ],
)
def test_bar_cells_add_up_to_the_bar(amounts, largest, width):
    cells = _bar_cells(amounts, largest, width)
    assert sum(cells) == max(1, round(sum(amounts) * width / largest))
    assert all(c >= 0 for c in cells)


def chart(labels: list[str]) -> Chart:
    parts = [("committed", "\u2588", "green"), ("uncommitted", "\u2592", "yellow")]
    rows = [(label, [i * 1000 * 1024, (len(labels) - i) * 300]) for i, label in enumerate(labels)]
    return Chart("Bytes by session", parts, rows, "a blob shared by several sessions counts in full in each")


@pytest.mark.parametrize("width", WIDTHS)
def test_a_chart_fits_its_width(width):
    labels = ["s1", "a-very-long-session-name-" + "x" * 80, "2026-11-26", "other (7 sessions)"]
    lines = render_chart(chart(labels), width).splitlines()
    assert all(len(line) <= width for line in lines), lines
    bars = lines[1 : 1 + len(labels)]
    # Labels start each line (the long one cut with an ellipsis), byte counts end it, right-aligned.
    assert [line.split(" ")[0] for line in bars][:1] == ["s1"]
    assert "\u2026" in bars[1] and "x" * (width // 3) not in bars[1]
    ends = {len(line) for line in bars}
    assert len(ends) == 1, "the byte counts end in one column"
    assert bars[-1].endswith("2.9 MiB")
    # The largest bar is the longest and reaches the numbers' column.
    drawn = [line.count("\u2588") + line.count("\u2592") for line in bars]
    assert max(drawn) == drawn[-1] and drawn == sorted(drawn)
    assert "\u2588 committed  \u2592 uncommitted" in " ".join(lines[1 + len(labels) :])


def test_a_label_with_control_characters_is_escaped():
    text = render_chart(chart(["evil\x1b[31m\nname", "ok"]), 80)
    assert "\x1b" not in text and "evil\\x1b[31m\\nname" in text


@pytest.mark.parametrize(
    ("days", "period", "labels"),
    [
        (["2026-11-20", "2026-11-22"], "day", ["2026-11-20", "2026-11-21", "2026-11-22"]),
        (["2026-11-01", "2026-11-30"], "week", None),
        (["2026-01-15", "2026-11-30"], "month", None),
        (["2019-01-15", "2026-11-30"], "year", ["2019", "2020", "2021", "2022", "2023", "2024", "2025", "2026"]),
        # A clock once at the epoch (or far ahead): the years before the last 13 make one bar.
        (["1970-01-02", "2026-11-30"], "year", ["before 2014"] + [str(y) for y in range(2014, 2027)]),
        (["2026-11-30", "2446-05-10"], "year", ["before 2434"] + [str(y) for y in range(2434, 2447)]),
    ],
)
def test_days_are_drawn_as_a_timeline_of_few_bars(days, period, labels):
    bucket = inspect.Bucket(blobs=1, committed_bytes=5)
    got_period, rows = stats_command._periods([(day, bucket) for day in days])
    assert got_period == period
    assert len(rows) <= stats_command.BARS_BY_TIME
    assert sum(b.bytes for _, b in rows) == 5 * len(days)
    if labels is not None:
        assert [label for label, _ in rows] == labels
    if period == "week":
        assert rows[0][0] == "2026-10-26+" and rows[-1][0] == "2026-11-30+"
