"""``stats``' bar charts as a person sees them: the installed ``lashctl`` with
its stdout on a pseudo terminal of 60, 80, 120 and 200 columns (as
tests/e2e/test_terminal_e2e.py does for tables), and what a pipe and --json
get instead. The aggregation and the chart layout: tests/unit/test_stats_charts.py.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from reliability_helpers import run
from test_terminal_e2e import WIDTHS, assert_fits, run_tty

pytestmark = pytest.mark.e2e

LONG = "a-session-whose-name-goes-on-and-on-" + "x" * 60
EVIL = "evil\x1b]0;owned\x07name"
TABLE = [
    "blobs",
    "  committed",
    "  uncommitted",
    "  unmanaged",
    "rows committed",
    "rows uncommitted",
    "committed rows missing bytes",
    "uncommitted rows missing bytes",
    "orphans reclaimable now (24h grace)",
    "staging litter",
    "stray files",
    "sidecars without a blob",
    "manifest lines",
    "  after compaction",
]


@pytest.fixture(scope="module")
def charted(tmp_path_factory) -> Path:
    """Twelve sessions (one long-named, one shared blob), bytes written over ten days,
    and a row whose session id holds control characters."""
    root = tmp_path_factory.mktemp("charts")
    store = root / "store"
    inputs = root / "in"
    inputs.mkdir()
    for i in range(12):
        path = inputs / f"file{i}.{'txt' if i % 3 == 0 else 'bin'}"
        path.write_bytes(os.urandom(2000 * (i + 1)) if i % 3 else b"text\n" * 400 * (i + 1))
        session = LONG if i == 11 else f"session-{i}"
        result = run(["--store", store, "put", "-s", session, path])
        assert result.returncode == 0, result.stderr
        if i == 5:
            shared = result.stdout.decode().strip()
            assert run(["--store", store, "commit", "-s", session, shared]).returncode == 0
            assert run(["--store", store, "put", "-s", LONG, path]).returncode == 0
    with (store / "manifest.jsonl").open("a") as handle:
        handle.write(
            json.dumps(
                {
                    "op": "intent",
                    "attachment_id": shared,
                    "session_id": EVIL,
                    "canonical_uri": "sha256:" + shared,
                    "intent_at_epoch_ms": int(time.time() * 1000),
                }
            )
            + "\n"
        )
    blobs = sorted(p for p in (store / "sha256").rglob("*") if p.is_file() and p.suffix != ".json")
    for n, path in enumerate(blobs):
        then = time.time() - n % 10 * 86400
        os.utime(path, (then, then))
    return store


@pytest.mark.parametrize("columns", WIDTHS)
def test_stats_draws_its_charts_at_each_width(charted, columns):
    screen, err, code = run_tty(["--store", charted, "stats"], columns)
    assert code == 0, err
    assert_fits(screen, columns)
    lines = screen.splitlines()
    assert any(line.startswith(" blobs ") for line in lines), "the table comes first"
    assert "Bytes by day written (UTC)" in screen and "Bytes by session" in screen
    assert "\u2588" in screen and "\u2592" in screen
    # The top ten sessions by bytes, then the other two; the long name cut to fit.
    session_lines = lines[lines.index("Bytes by session") + 1 :]
    assert session_lines[10].startswith("other (3 sessions)")
    assert any(line.startswith("a-session-whose-") and "\u2026" in line for line in session_lines[:10])
    assert all(line.rstrip()[-1] == "B" for line in session_lines[:11]), "each bar ends in its bytes"
    # A session id's control characters are shown escaped, never sent to the terminal.
    assert "\x1b]" not in screen and "\x07" not in screen
    assert "counts in full in each" in " ".join(screen.split())  # the caption, however wrapped


@pytest.mark.parametrize("columns", WIDTHS)
@pytest.mark.parametrize("by", ["day", "session", "media-type"])
def test_by_draws_one_chart_alone(charted, columns, by):
    screen, err, code = run_tty(["--store", charted, "stats", "--by", by], columns)
    assert code == 0, err
    assert_fits(screen, columns)
    titles = [line for line in screen.splitlines() if line.startswith("Bytes by ")]
    assert len(titles) == 1 and not any(line.startswith(" blobs ") for line in screen.splitlines())
    if by == "day":
        assert titles == ["Bytes by day written (UTC)"]
        assert sum(line[:2] == "20" for line in screen.splitlines()) == 10  # a bar for each of ten days
    if by == "media-type":
        assert "text/plain" in screen and "application/" in screen  # cut at 60 columns


def test_a_pipe_gets_the_table_as_before(charted):
    result = run(["--store", charted, "stats"])
    assert result.returncode == 0, result.stderr
    lines = [line.split("\t") for line in result.stdout.decode().splitlines()]
    assert [cells[0] for cells in lines] == TABLE
    assert all(len(cells) == 3 for cells in lines)
    assert "\u2588" not in result.stdout.decode()


def test_by_on_a_pipe_gets_the_series_as_tsv(charted):
    result = run(["--store", charted, "stats", "--by", "session"])
    assert result.returncode == 0, result.stderr
    lines = [line.split("\t") for line in result.stdout.decode().splitlines()]
    assert len(lines) == 11 and lines[-1][0] == "-"  # the top ten, then the others
    assert all(len(cells) == 7 and cells[1].isdigit() for cells in lines)
    assert int(lines[0][2]) == int(lines[0][3]) + int(lines[0][4]) + int(lines[0][5])
    assert any(cells[0] == LONG for cells in lines)  # whole, exact


def test_json_carries_the_series(charted):
    result = run(["--store", charted, "--json", "stats"])
    document = json.loads(result.stdout)
    assert [one["by"] for one in document["series"]] == ["day", "session"]
    days = document["series"][0]["buckets"]
    assert len(days) == 10 and sum(b["bytes"] for b in days) == document["blob_bytes"]
    sessions = {b["key"]: b for b in document["series"][1]["buckets"]}
    assert EVIL in sessions or None in sessions
    result = run(["--store", charted, "--json", "stats", "--by", "media-type"])
    [media] = json.loads(result.stdout)["series"]
    assert {b["key"] for b in media["buckets"]} == {"text/plain", "application/octet-stream"}
