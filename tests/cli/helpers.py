"""Helpers shared by the CLI tests: manifest lines, store snapshots, result checks, drawn tables."""

from __future__ import annotations

import json
import os
import re
import time
from datetime import datetime, timezone
from pathlib import Path

from conftest import blob_path, land_at_intents

HEX64 = re.compile(r"[0-9a-f]{64}")
HEADER = {"op": "header", "format": "lashctl-manifest", "version": 1}
MINUTE = 60_000
HOUR = 3_600_000
DAY = 86_400_000


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def blob_files(store: Path) -> list[Path]:
    """Every file under sha256/ that is not a sidecar."""
    root = store / "sha256"
    if not root.exists():
        return []
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.name.endswith(".json"))


def files_under(directory: Path) -> list[Path]:
    if not directory.exists():
        return []
    return sorted(p for p in directory.rglob("*") if p.is_file())


def manifest_file(store: Path) -> Path:
    return store / "manifest.jsonl"


def read_events(store: Path) -> list[dict]:
    return [json.loads(line) for line in manifest_file(store).read_text("utf-8").splitlines()]


def intent(attachment_id: str, session: str, at: int) -> dict:
    return {
        "op": "intent",
        "attachment_id": attachment_id,
        "session_id": session,
        "canonical_uri": "sha256:" + attachment_id,
        "intent_at_epoch_ms": at,
    }


def commit_ev(attachment_id: str, session: str, at: int) -> dict:
    return {"op": "commit", "attachment_id": attachment_id, "session_id": session, "committed_at_epoch_ms": at}


def forget(attachment_id: str, session: str) -> dict:
    return {"op": "forget", "attachment_id": attachment_id, "session_id": session}


def event_line(event: dict) -> str:
    return json.dumps(event, separators=(",", ":"))


def write_manifest(store: Path, events: list[dict], header: bool = True) -> None:
    store.mkdir(parents=True, exist_ok=True)
    lines = ([HEADER] if header else []) + events
    manifest_file(store).write_text("".join(event_line(e) + "\n" for e in lines), "utf-8")
    land_at_intents(store, events)


def snapshot(root: Path) -> dict[str, object]:
    """Every directory and file under ``root``: a file as (bytes, mtime_ns)."""
    result: dict[str, object] = {}
    if not root.exists():
        return result
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_dir():
            result[rel] = "dir"
        else:
            st = path.stat()
            result[rel] = (path.read_bytes(), st.st_mtime_ns)
    return result


def error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("lashctl: error:")]


def assert_error(result, code: int, *needles: str) -> None:
    """Exit ``code``, exactly one error line on stderr, no traceback, needles in stderr."""
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert len(error_lines(result)) == 1, result.stderr
    for needle in needles:
        assert needle in result.stderr, (needle, result.stderr)


def assert_ok(result) -> None:
    assert result.exit_code == 0, (result.exit_code, result.stdout, result.stderr, result.exception)


def ids_out(result) -> list[str]:
    lines = result.stdout.splitlines()
    for line in lines:
        assert HEX64.fullmatch(line), repr(line)
    return lines


def write_inputs(directory: Path, contents: dict[str, bytes]) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, data in contents.items():
        path = directory / name
        path.write_bytes(data)
        paths.append(path)
    return paths


def iso(epoch_ms: int) -> str:
    moment = datetime.fromtimestamp(epoch_ms / 1000, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{epoch_ms % 1000:03d}Z"


# The *_record_whole tests pin each listing command's record in all three forms (its
# --json item, its line on a pipe, its table), so that the declaration behind them can
# change without the output changing.
OLD_MS = 1_700_000_000_000  # 2023-11-14T22:13:20.000Z, a blob's pinned modification time


class _Terminal:
    """A stream that says it is a terminal and is otherwise the stream."""

    def __init__(self, stream) -> None:
        self._stream = stream

    def isatty(self) -> bool:
        return True

    def __getattr__(self, name):
        return getattr(self._stream, name)


def drawn(cli, monkeypatch, *args):
    """Run ``args`` with stdout a terminal; the result and each table handed to Rich,
    as its columns (name, kind, drop, min_width, base) and raw rows."""
    import sys

    from lashctl import render

    tables = []

    class TerminalStdout:
        def __getattr__(self, name):
            value = getattr(sys, name)
            return _Terminal(value) if name == "stdout" else value

    def capture(cols, rows, title, full_ids):
        tables.append(([(c.name, c.kind, c.drop, c.min_width, c.base) for c in cols], [list(r) for r in rows]))

    with monkeypatch.context() as patch:
        patch.setattr(render, "sys", TerminalStdout())
        patch.setattr(render, "_print_table", capture)
        result = cli(*args)
    return result, tables


def tsv(result) -> list[list[str]]:
    return [line.split("\t") for line in result.stdout.splitlines()]


def pin_mtime(store: Path, attachment_id: str, epoch_ms: int = OLD_MS) -> None:
    os.utime(blob_path(store, attachment_id), ns=(epoch_ms * 1_000_000, epoch_ms * 1_000_000))


RUN_FIELDS = ["lashctl_version", "store", "manifest", "started_at", "finished_at"]
