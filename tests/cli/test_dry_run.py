"""Every dry run's summary says what would happen, never what happened."""

from __future__ import annotations

import re

import pytest

from .helpers import DAY, assert_ok, commit_ev, intent, now_ms, pin_mtime, snapshot, write_manifest

# A past tense in a dry run's summary reads as a change that was made.
DONE = re.compile(r"\b(released|reclaimed|deleted|forgot|forgotten|copied|compacted|spared|stored)\b")


@pytest.fixture
def aged(cli, store, put_blobs):
    """x: aged intents of A and B, B committed; y: an aged orphan of A; z: bytes no row names."""
    x, y, z = put_blobs({"x": b"shared bytes", "y": b"orphan", "z": b"unreferenced"})
    now = now_ms()
    write_manifest(
        store,
        [
            intent(x, "A", now - 3 * DAY),
            intent(x, "B", now - 3 * DAY),
            commit_ev(x, "B", now - 3 * DAY + 1),
            intent(y, "A", now - 3 * DAY),
            intent(y, "A", now - 2 * DAY),
        ],
    )
    for attachment_id in (x, y, z):
        pin_mtime(store, attachment_id)
    return x, y, z


@pytest.mark.parametrize(
    "command",
    [
        ["reclaim", "-n", "--older-than", "1h"],
        ["gc", "-n", "--older-than", "1h"],
        ["delete", "-n", "--force", "X"],
        ["forget", "-n", "-s", "A"],
        ["manifest", "compact", "-n"],
        ["migrate", "-n", "--to-store", "DEST"],
    ],
)
def test_a_dry_runs_summary_says_what_would_happen(cli, store, tmp_path, aged, command):
    x, _, _ = aged
    command = [{"X": x, "DEST": str(tmp_path / "dest")}.get(a, a) for a in command]
    before = snapshot(store)
    result = cli(*command)
    assert_ok(result)
    assert snapshot(store) == before
    summary = result.stderr.strip().splitlines()[-1]
    assert summary.startswith("dry run: "), summary
    assert "would " in summary and not DONE.search(summary), summary


def test_reclaims_dry_run_would_release_the_shared_row(cli, aged):
    result = cli("reclaim", "-n", "--older-than", "1h")
    assert_ok(result)
    assert result.stderr.startswith("dry run: would reclaim 1 blob(s), 6 B; would release 1 row(s); scanned ")
