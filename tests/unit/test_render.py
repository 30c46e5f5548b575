"""Tables laid out at a fixed width, IEC units in progress bars, unique id prefixes.

What the installed ``lashctl`` draws on a real terminal: tests/e2e/test_terminal_e2e.py.
"""

from __future__ import annotations

import pytest

WIDTHS = [60, 80, 120, 200]
# Two blob names that share their first 14 hex digits: their short forms must
# be 15 characters long to stay apart.
TWIN_A = "abcdef0123456" + "7" + "a" * 50
TWIN_B = "abcdef0123456" + "7" + "b" * 50


def test_progress_bars_count_bytes_in_iec_units():
    import io

    from rich.console import Console
    from rich.progress import Progress

    from lashctl.render import _iec_columns

    console = Console(file=io.StringIO(), width=100, force_terminal=True, color_system=None)
    with Progress(*_iec_columns(), console=console, auto_refresh=False) as progress:
        task = progress.add_task("storing", total=400 * 1024 * 1024)
        progress.advance(task, 12 * 1024 * 1024)
        progress.refresh()
    shown = console.file.getvalue()
    assert "12.0 MiB/400.0 MiB" in shown, shown
    assert " MB" not in shown


def test_unique_prefix_length_is_at_least_12_and_long_enough_to_tell_ids_apart():
    from lashctl.render import unique_prefix_length

    assert unique_prefix_length(["a" * 64]) == 12
    assert unique_prefix_length(["ab" * 32, "ab" * 6 + "c" * 52]) == 13
    assert unique_prefix_length([TWIN_A, TWIN_B, "f" * 64]) == 15


@pytest.mark.parametrize("columns", WIDTHS)
def test_every_table_fits_each_width(columns):
    """The other listings (reclaim, verify, gc, delete, commit, stats) laid out at a fixed width."""
    from lashctl.render import Col, render_table

    ids = [TWIN_A, TWIN_B, "0" * 63 + "1"]
    root = "/srv/lash/attachments"
    tables = [
        (
            [
                Col("id", "id"),
                Col("action", "fixed"),
                Col("size", "bytes", drop=2),
                Col("sessions", drop=3),
                Col("reason", drop=4, min_width=12),
            ],
            [[i, "reclaim", 5 * 1024**3, "session-alpha, session-beta", "orphan: no live row"] for i in ids],
        ),
        (
            [
                Col("severity", "fixed"),
                Col("kind", "fixed"),
                Col("path", "path", min_width=20, base=root),
                Col("problem", drop=1, min_width=16),
                Col("repair", drop=2),
            ],
            [
                [
                    "error",
                    "uncommitted-bytes-missing",
                    f"{root}/sha256/{i[:2]}/{i}.json",
                    "the sidecar's id disagrees with its blob's name",
                    "rebuilt from the content",
                ]
                for i in ids
            ],
        ),
        ([Col("id", "id"), Col("session"), Col("status", "fixed")], [[i, "s-42", "already committed"] for i in ids]),
        (
            [Col("what"), Col("count", "count"), Col("bytes", "bytes")],
            [["orphans reclaimable now (24h grace)", 3, 3 * 1024**2], ["rows committed", 7, None]],
        ),
    ]
    for cols, rows in tables:
        text = render_table(cols, rows, columns)
        lines = text.splitlines()
        assert len(lines) == 2 + len(rows), f"a row wrapped at {columns}:\n{text}"
        assert max(len(line) for line in lines) <= columns, text
        assert cols[0].name in lines[0]
        if cols[0].kind == "id":
            for twin in (TWIN_A, TWIN_B):
                assert twin in text or twin[:15] + "\u2026" in text, text
        if cols[2].kind == "path":
            assert root not in text and "sha256/" in text, "paths are shown relative to the store"
