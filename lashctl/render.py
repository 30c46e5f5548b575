"""All output: the only module that imports rich (and only when a table is drawn).

stdout carries data (ids, records, ``--json`` documents); stderr carries
everything meant for people (summaries, warnings, errors). Records are drawn
as a Rich table when stdout is a terminal and as tab-separated lines, one
record per line with no header, when it is not, so pipes get full ids and no
escape codes.

Everything meant for a person (tables, TSV lines, ``show``, summaries,
warnings, errors) passes through ``escape_text``: labels and session ids come
from other writers, and a control character in them is shown, never obeyed.
``--json`` documents and ``exact_line`` stay exact.
"""

from __future__ import annotations

import json
import sys
from typing import Any, Callable, Iterable, Sequence

from lashctl.text import escape_text


class UI:
    """Where and how a command reports: machine or human, quiet or verbose."""

    def __init__(self, json_output: bool = False, quiet: bool = False, verbose: bool = False) -> None:
        self.json = json_output
        self.quiet = quiet
        self.verbose = verbose
        self.wrote_data = False  # something reached stdout: an error adds no JSON document of its own

    # -- stdout: data ------------------------------------------------------------
    def emit_json(self, document: Any) -> None:
        # Indented for a person at a terminal; compact (and C-encoded, many
        # times faster on big listings) for the pipes that scripts read.
        self.wrote_data = True
        indent = 2 if sys.stdout.isatty() else None
        sys.stdout.write(_dumps(document, indent) + "\n")
        sys.stdout.flush()

    def emit_json_array(self, items: Iterable[Any]) -> int:
        """Stream a JSON array item by item (flat memory for big listings).

        On a terminal the array is gathered and indented like emit_json.
        Returns the number of items written.
        """
        if sys.stdout.isatty():
            gathered = list(items)
            self.emit_json(gathered)
            return len(gathered)
        self.wrote_data = True
        out, count, pending = sys.stdout, 0, ["["]
        for item in items:
            pending.append(("," if count else "") + _dumps(item, None))
            count += 1
            if len(pending) >= 1000:
                out.write("".join(pending))
                pending.clear()
        pending.append("]\n")
        out.write("".join(pending))
        out.flush()
        return count

    @staticmethod
    def line(text: str) -> None:
        """One line of human text on stdout, control characters escaped."""
        sys.stdout.write(escape_text(text) + "\n")

    @staticmethod
    def exact_line(text: str) -> None:
        """One line of machine text (a JSON event) on stdout, exactly as given."""
        sys.stdout.write(text + "\n")

    def records(
        self,
        columns: Sequence[str],
        rows: Sequence[Sequence[object]] | Callable[[], Sequence[Sequence[object]]],
        document: Any,
        title: str | None = None,
    ) -> None:
        """One listing in its machine form (``document``) or its human form.

        ``rows`` and ``document`` may be given as zero-argument callables so
        that only the form printed is built.
        """
        self.wrote_data = True
        if self.json:
            self.emit_json(document() if callable(document) else document)
            return
        if callable(rows):
            rows = rows()
        if sys.stdout.isatty():
            _rich_table(columns, rows, title)
        else:
            out = sys.stdout
            for row in rows:
                out.write("\t".join(_plain(cell) for cell in row) + "\n")
            out.flush()

    # -- stderr: people ------------------------------------------------------------
    def info(self, message: str) -> None:
        if not self.quiet:
            print(escape_text(message), file=sys.stderr)

    def warn(self, message: str) -> None:
        if not self.quiet:
            print(f"lashctl: warning: {escape_text(message)}", file=sys.stderr)

    def note(self, message: str) -> None:
        """Detail only a -v run shows."""
        if self.verbose:
            print(f"lashctl: note: {message}", file=sys.stderr)

    @staticmethod
    def error(message: str) -> None:
        print(f"lashctl: error: {escape_text(message)}", file=sys.stderr)

    def progress(self, description: str, total: int | None, unit: str = "bytes") -> "ProgressBar":
        """A progress bar on stderr, only for a person watching a terminal.

        Never drawn with --json, --quiet, or when stderr is not a terminal.
        """
        if not self.wants_progress():
            return ProgressBar()
        return _RichProgressBar(description, total, unit)

    def wants_progress(self) -> bool:
        return not (self.json or self.quiet) and sys.stderr.isatty()


class ProgressBar:
    """The silent progress bar: ``advance`` does nothing."""

    def __enter__(self) -> "ProgressBar":
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def advance(self, amount: int = 1) -> None:
        return None


class _RichProgressBar(ProgressBar):
    def __init__(self, description: str, total: int | None, unit: str) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        amount = [DownloadColumn(), TransferSpeedColumn()] if unit == "bytes" else [MofNCompleteColumn()]
        self._progress = Progress(
            TextColumn("{task.description}"), BarColumn(), *amount, TimeRemainingColumn(),
            console=Console(stderr=True), transient=True, redirect_stdout=False, redirect_stderr=False,
        )
        self._task = self._progress.add_task(description, total=total)

    def __enter__(self) -> "ProgressBar":
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def advance(self, amount: int = 1) -> None:
        self._progress.advance(self._task, amount)


def _dumps(document: Any, indent: int | None) -> str:
    # One style for every command: indented on a terminal, compact on a pipe.
    separators = (",", ": ") if indent is not None else (",", ":")
    text = json.dumps(document, indent=indent, ensure_ascii=False, separators=separators)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # A file name that is not UTF-8: escape it rather than emit invalid JSON.
        text = json.dumps(document, indent=indent, ensure_ascii=True, separators=separators)
    return text


def _plain(cell: object) -> str:
    if cell is None:
        return "-"
    # One record per line, and nothing a terminal obeys, whatever another
    # writer put in a field: tabs and newlines are escaped with the rest.
    return escape_text(str(cell))


def _rich_table(columns: Sequence[str], rows: Sequence[Sequence[object]], title: str | None) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    # Cells are Text, not strings: Rich parses neither markup nor :emoji: codes
    # in them, so a label shows as the characters it is.
    table = Table(title=Text(escape_text(title)) if title else None, show_edge=False, header_style="bold")
    for name in columns:
        # Every column keeps room for its header; on a narrow terminal long
        # values (ids included) fold onto more lines rather than vanish.
        table.add_column(name, overflow="fold", min_width=min(len(name), 12))
    for row in rows:
        table.add_row(*(Text(_plain(cell)) for cell in row))
    Console(highlight=False).print(table)


def human_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"
