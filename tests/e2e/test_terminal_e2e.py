"""What a person sees in a terminal of a given width, and what a pipe gets.

These tests run the installed ``lashctl`` with its stdout on a pseudo
terminal of 60, 80, 120 and 200 columns (COLUMNS and the window size both
set) and read the screen text back: every row on one line, no line wider than
the terminal, ids shortened to a unique prefix of at least 12 characters that
ends in ``…`` when a whole id does not fit, and the most important columns
kept as the terminal narrows. Layout without a terminal: tests/unit/test_render.py.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import termios
from pathlib import Path

import pytest

from conftest import png_bytes
from reliability_helpers import base_env, find_lashctl, run

pytestmark = pytest.mark.e2e

WIDTHS = [60, 80, 120, 200]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
SHORT = re.compile(r"([0-9a-f]{12,63})\u2026")
HEX64 = re.compile(r"[0-9a-f]{64}")
# Two planted blob names that share their first 14 hex digits: their short
# forms must be 15 characters long to stay apart.
TWIN_A = "abcdef0123456" + "7" + "a" * 50
TWIN_B = "abcdef0123456" + "7" + "b" * 50


def run_tty(args: list, columns: int, stdin: int | None = subprocess.DEVNULL) -> tuple[str, str, int]:
    """Run lashctl with stdout on a terminal ``columns`` wide; (screen text, stderr, exit code)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    env = base_env(COLUMNS=str(columns), TERM="xterm-256color")
    proc = subprocess.Popen(
        [find_lashctl(), *map(str, args)], stdout=slave, stderr=subprocess.PIPE, stdin=stdin, env=env
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    _, err = proc.communicate(timeout=60)
    screen = ANSI.sub("", b"".join(chunks).decode("utf-8")).replace("\r\n", "\n")
    return screen, err.decode("utf-8", "replace"), proc.returncode


def plant_blob(store: Path, attachment_id: str, data: bytes, label: str) -> None:
    """A blob file under its name (ls reads names and sidecars, it does not re-hash)."""
    shard = store / "sha256" / attachment_id[:2]
    shard.mkdir(parents=True, exist_ok=True)
    (shard / attachment_id).write_bytes(data)
    sidecar = {"id": attachment_id, "media_type": "application/octet-stream", "byte_len": len(data), "label": label}
    (shard / (attachment_id + ".json")).write_text(json.dumps(sidecar, indent=2))


@pytest.fixture(scope="module")
def populated(tmp_path_factory) -> tuple[Path, list[str]]:
    """A store with a PNG, a large-ish file, a text file with a long label, and two near-twin ids."""
    root = tmp_path_factory.mktemp("render")
    store = root / "store"
    inputs = root / "in"
    inputs.mkdir()
    (inputs / "pixel.png").write_bytes(png_bytes(3, 2))
    (inputs / "archive.bin").write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    (inputs / "a rather long label for a quarterly report.txt").write_bytes(b"text\n" * 100)
    result = run(["--store", store, "put", "-s", "session-with-a-long-name", *sorted(str(p) for p in inputs.iterdir())])
    assert result.returncode == 0, result.stderr
    ids = result.stdout.decode().split()
    plant_blob(store, TWIN_A, b"twin a", "twin-a")
    plant_blob(store, TWIN_B, b"twin b", "twin-b")
    manifest = store / "manifest.jsonl"
    with manifest.open("a") as handle:
        for twin in (TWIN_A, TWIN_B):
            handle.write(
                json.dumps(
                    {
                        "op": "intent",
                        "attachment_id": twin,
                        "session_id": "s-twins",
                        "canonical_uri": "sha256:" + twin,
                        "intent_at_epoch_ms": 1764150000000,
                    }
                )
                + "\n"
            )
    return store, ids + [TWIN_A, TWIN_B]


def id_cells(screen: str) -> list[str]:
    """The id shown at the start of each data row: whole, or a short form with its marker."""
    found = []
    for line in screen.splitlines():
        match = re.match(r"\s*([0-9a-f]{12,64}\u2026?)", line)
        if match:
            found.append(match.group(1))
    return found


def assert_fits(screen: str, columns: int) -> None:
    lines = screen.splitlines()
    assert lines, "nothing was drawn"
    too_wide = [line for line in lines if len(line) > columns]
    assert not too_wide, f"lines wider than {columns}: {too_wide}"


def assert_ids_shown(shown: list[str], ids: list[str], whole: bool) -> None:
    assert len(shown) == len(ids), f"every row on one line: {shown}"
    if whole:
        assert sorted(shown) == sorted(ids)
        return
    prefixes = []
    for cell in shown:
        match = SHORT.fullmatch(cell)
        assert match, f"{cell!r} is not a short id ending in the marker"
        prefixes.append(match.group(1))
    for prefix in prefixes:
        assert sum(i.startswith(prefix) for i in ids) == 1, f"{prefix} is not unique"
    twins = [p for p in prefixes if p.startswith(TWIN_A[:14])]
    assert twins and all(len(p) == 15 for p in twins), "near-twin ids need 15 characters to stay apart"


def header(screen: str) -> str:
    return screen.splitlines()[0]


@pytest.mark.parametrize("columns", WIDTHS)
def test_ls_at_each_width(populated, columns):
    store, ids = populated
    screen, err, code = run_tty(["--store", store, "ls"], columns)
    assert code == 0, err
    assert_fits(screen, columns)
    assert_ids_shown(id_cells(screen), ids, whole=columns >= 200)
    head = header(screen)
    for kept in ("id", "size", "state"):
        assert kept in head
    if columns >= 120:
        for kept in ("media type", "label", "modified"):
            assert kept in head
        assert "3.0 MiB" in screen and "2026" not in head
        assert re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", screen), "whole timestamps"
    if columns == 60:
        assert "modified" not in head  # the least important column went first
        assert "label" in head


@pytest.mark.parametrize("columns", WIDTHS)
def test_list_uncommitted_at_each_width(populated, columns):
    store, ids = populated
    screen, err, code = run_tty(["--store", store, "list-uncommitted"], columns)
    assert code == 0, err
    assert_fits(screen, columns)
    assert_ids_shown(id_cells(screen), ids, whole=columns >= 200)
    head = header(screen)
    for kept in ("id", "session", "age", "bytes"):
        assert kept in head
    if columns >= 120:
        for kept in ("intent at", "size", "media type", "label"):
            assert kept in head
    if columns == 60:
        assert "intent at" not in head and "media type" not in head
    # Long sessions and labels are cut with an ellipsis, never wrapped mid-word.
    if columns < 120:
        assert "session-with-a-long-name" not in screen or columns >= 80
        assert "\u2026" in screen


@pytest.mark.parametrize("columns", [60, 120])
def test_show_prints_the_whole_id_at_any_width(populated, columns):
    store, ids = populated
    screen, err, code = run_tty(["--store", store, "show", ids[0][:8]], columns)
    assert code == 0, err
    assert f"id:         {ids[0]}" in screen


def test_full_ids_shows_whole_ids_on_a_narrow_terminal(populated):
    store, ids = populated
    screen, err, code = run_tty(["--store", store, "ls", "--full-ids"], 120)
    assert code == 0, err
    assert_fits(screen, 120)
    assert sorted(id_cells(screen)) == sorted(ids)
    screen, err, code = run_tty(["--store", store, "--full-ids", "list-uncommitted"], 120)
    assert_fits(screen, 120)
    assert code == 0, err
    assert sorted(id_cells(screen)) == sorted(ids)


def test_a_short_id_copied_from_a_table_is_accepted_back(populated):
    store, ids = populated
    screen, _, _ = run_tty(["--store", store, "ls"], 80)
    short = id_cells(screen)[0]
    assert short.endswith("\u2026")
    shown = run(["--store", store, "--json", "show", short])
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["id"].startswith(short[:-1])


def test_pipes_keep_whole_ids_and_exact_byte_counts(populated):
    store, ids = populated
    listed = run(["--store", store, "ls"], env=base_env(COLUMNS="60"))
    assert listed.returncode == 0, listed.stderr
    rows = [line.split("\t") for line in listed.stdout.decode().splitlines()]
    assert sorted(r[0] for r in rows) == sorted(ids)
    assert all(r[1].isdigit() for r in rows), rows
    assert str(3 * 1024 * 1024 + 17) in [r[1] for r in rows]
    pending = run(["--store", store, "list-uncommitted"], env=base_env(COLUMNS="60"))
    rows = [line.split("\t") for line in pending.stdout.decode().splitlines()]
    assert sorted(r[0] for r in rows) == sorted(ids)
    assert all(r[4].isdigit() for r in rows), rows


def test_summaries_use_iec_units_only(populated, tmp_path):
    store, ids = populated
    listed = run(["--store", store, "ls"])
    assert re.search(r"\d+ blob\(s\), 3\.0 MiB$", listed.stderr.decode().strip()), listed.stderr
    assert b"bytes" not in listed.stderr
    swept = run(["--store", store, "reclaim", "-n", "--older-than", "1m"])
    assert b"bytes)" not in swept.stderr and b"B" in swept.stderr, swept.stderr
    copy = run(["--store", store, "get", ids[0], "-o", tmp_path / "out"])
    assert copy.returncode == 0 and re.search(rb"wrote \d+ B of ", copy.stderr), copy.stderr


@pytest.mark.parametrize(
    "args, words",
    [
        (["verify"], "no problems found"),
        (["reclaim", "-n", "--older-than", "1h"], "nothing to reclaim"),
        (["gc", "-n"], "nothing to delete"),
        (["ls"], "no blobs"),
        (["list-uncommitted"], "no uncommitted rows"),
    ],
)
def test_an_empty_listing_on_a_terminal_prints_no_table(tmp_path, args, words):
    store = tmp_path / "store"
    (tmp_path / "a.txt").write_bytes(b"committed, so nothing is pending")
    put = run(["--store", store, "put", "-s", "s", tmp_path / "a.txt"])
    run(["--store", store, "commit", "-s", "s", put.stdout.decode().strip()])
    if args == ["ls"]:
        store = tmp_path / "empty"
        (store / "sha256").mkdir(parents=True)  # an empty store (a bare directory is not one)
    screen, err, code = run_tty(["--store", store, *args], 80)
    assert code == 0, err
    assert screen == "", f"a header-only table: {screen!r}"
    assert words in err
    piped = run(["--store", store, *args])
    assert piped.returncode == 0 and piped.stdout == b""
