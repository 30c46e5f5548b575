"""list-uncommitted's template (``listing.rendered_uncommitted``): the
bytes it writes for a row are the bytes the command's own rendering writes,
chunk by chunk, and it writes only rows it can write exactly whose bytes and
sidecar are known to be absent (README, "list-uncommitted")."""

from __future__ import annotations

import hashlib

import pytest

from lashctl.listing import rendered_uncommitted, uncommitted_row
from lashctl import render
from lashctl.timefmt import FUTURE_SKEW_MS, MAX_EPOCH_MS
from lashctl.transfer import UncommittedRow
from lashctl.backends.manifests.jsonl.log import Row

NOW = 1_795_694_400_250


def h(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def expected(row: tuple, form: str) -> str:
    """What the command writes for a row without bytes or sidecar, rendered
    the slow way: by the row's fields, as ``render.Ui.emit_rendered`` does."""
    aid, session, uri, at = row
    described = UncommittedRow(Row(session, aid, uri, at), False, None, None, None)
    fields = uncommitted_row(NOW)
    if form == "json":
        return render._dumps(render.item(fields, described), None)
    return "\t".join(render._plain(cell) for cell in render.cells(fields, described))


GOOD = [(h(f"good {i}"), f"s-{i % 3}", f"sha256:{h(f'good {i}')}", NOW - 1000 * i - i) for i in range(50)]
ODD = [
    (h("quote"), 'quo"te', "u", NOW - 1),  # JSON: escaped; TSV: written as is
    (h("backslash"), "back\\slash", "u", NOW - 2),  # JSON: escaped; TSV: not the template's
    (h("uri quote"), "s", 'a"b\\c', NOW - 3),
    (h("cafe"), "caf\u00e9", "u", NOW - 4),
    (h("newline"), "new\nline", "u", NOW - 5),
    (h("del"), "del\x7f", "u", NOW - 6),
    (h("empty"), "", "u", NOW - 7),
    ("A" * 64, "s", "u", NOW - 8),
    (h("short")[:63], "s", "u", NOW - 9),
    (h("g") + "0", "s", "u", NOW - 10),
    (h("negative"), "s", "u", -1),
    (h("far"), "s", "u", MAX_EPOCH_MS + 1),
    (h("edge"), "s", "u", NOW + FUTURE_SKEW_MS),  # the latest time a clock may be ahead
    (h("ahead"), "s", "u", NOW + FUTURE_SKEW_MS + 1),  # a clock ahead: the command counts it
    (h("year 9999"), "s", "u", MAX_EPOCH_MS),
    (h("zero"), "s", "u", 0),
    (h("uri control"), "s", "u\x1b[31m", NOW - 11),
]


def exact(row: tuple, form: str) -> bool:
    aid, session, uri, at = row
    probe = aid + session + (uri if form == "json" else "")
    return (
        len(aid) == 64
        and not aid.strip("0123456789abcdef")
        and bool(session)
        and probe.isascii()
        and probe.isprintable()
        and 0 <= at <= NOW + FUTURE_SKEW_MS
        and (form == "json" or "\\" not in session)
    )


@pytest.mark.parametrize("form", ["json", "tsv"])
def test_each_chunk_comes_back_in_order_with_exact_rows_written_and_the_others_as_given(form):
    chunks = [GOOD[:20], GOOD[20:35] + ODD[:8], ODD[8:] + GOOD[35:], []]
    out = list(rendered_uncommitted(iter(chunks), form, NOW, lambda shards: shards))
    assert [len(c) for c in out] == [len(c) for c in chunks if c]
    for chunk, items in zip([c for c in chunks if c], out):
        for row, item in zip(chunk, items):
            if exact(row, form):
                assert item == expected(row, form), row
            else:
                assert item == row
    written = sum(type(i) is str for c in out for i in c)
    assert written == len(GOOD) + 5


@pytest.mark.parametrize("form", ["json", "tsv"])
def test_rows_whose_shard_may_hold_bytes_are_left_to_the_caller_and_the_store_is_asked_each_chunk(form):
    """The store is asked once per chunk, for the shards the chunk meets,
    and its answer holds for that chunk only: bytes landing in a new shard
    while a listing runs are seen from the next chunk on."""
    asked: list[set[str]] = []
    present = {GOOD[3][0][:2], GOOD[40][0][:2]}
    late = GOOD[45][0][:2]  # a shard created after the first chunk was written

    def absent(shards: set[str]) -> set[str]:
        asked.append(set(shards))
        there = present | ({late} if len(asked) > 1 else set())
        return shards - there

    rows = GOOD + ODD
    chunks = [rows[:30], rows[30:]]
    out = list(rendered_uncommitted(iter(chunks), form, NOW, absent))
    assert asked == [{row[0][:2] for row in chunk} for chunk in chunks]
    for n, (chunk, items) in enumerate(zip(chunks, out)):
        there = present | ({late} if n else set())
        for row, item in zip(chunk, items):
            if row[0][:2] in there or not exact(row, form):
                assert item == row
            else:
                assert item == expected(row, form)


def test_without_a_store_answer_every_row_is_left_to_the_caller():
    out = list(rendered_uncommitted(iter([GOOD[:10], GOOD[10:]]), "json", NOW, lambda shards: None))
    assert out == [GOOD[:10], GOOD[10:]]
