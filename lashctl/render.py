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

import re
import sys
from typing import Any, Callable, Iterable, Sequence

from lashctl.record import FrozenRecord
from lashctl.text import escape_text, say


class UI:
    """Where and how a command reports: machine or human, quiet or verbose."""

    def __init__(
        self, json_output: bool = False, quiet: bool = False, verbose: bool = False, full_ids: bool = False
    ) -> None:
        self.json = json_output
        self.quiet = quiet
        self.verbose = verbose
        self.wrote_data = False  # something reached stdout: an error adds no JSON document of its own
        self.full_ids = full_ids  # tables on a terminal show ids whole, however narrow

    # -- stdout: data ------------------------------------------------------------
    def emit_json(self, document: Any) -> None:
        # Indented for a person at a terminal; compact (and C-encoded, many
        # times faster on big listings) for the pipes that scripts read.
        self.wrote_data = True
        indent = 2 if sys.stdout.isatty() else None
        sys.stdout.write(_dumps(document, indent) + "\n")
        sys.stdout.flush()

    @staticmethod
    def stdout_is_terminal() -> bool:
        """Whether records print as a table (a terminal) or as data (a pipe)."""
        return sys.stdout.isatty()

    def emit_json_array(self, items: Iterable[Any]) -> int:
        """Stream a JSON array item by item (flat memory for big listings).

        On a terminal the array is gathered and indented like emit_json.
        Returns the number of items written.
        """
        if sys.stdout.isatty():
            gathered = list(items)
            self.emit_json(gathered)
            return len(gathered)
        out, count, pending = sys.stdout, 0, ["["]
        for item in items:
            pending.append(("," if count else "") + _dumps(item, None))
            count += 1
            if len(pending) >= 1000:
                self._write(out, pending)
        pending.append("]\n")
        self._write(out, pending)
        out.flush()
        return count

    def emit_rendered(self, chunks: Iterable[list[Any]], render: Callable[[Any], Any]) -> int:
        """A listing on a pipe whose items come in chunks (lists), each item
        either already written (str: one JSON object, or one TSV line without
        its newline), an object that ``render`` turns into a JSON document
        (with --json) or the cells of a TSV line, or None (left out): the
        same bytes ``emit_json_array`` / ``records`` write. Returns the
        number of items written."""
        out, count, pending = sys.stdout, 0, []
        json_form = self.json
        if json_form:
            pending.append("[")

        def written(item: Any) -> str:
            if json_form:
                return _dumps(render(item), None)
            return "\t".join(_plain(cell) for cell in render(item))

        for chunk in chunks:
            texts = [item if type(item) is str else written(item) for item in chunk if item is not None]
            if not texts:
                continue
            if json_form:
                pending.append(("," if count else "") + ",".join(texts))
            else:
                pending.append("\n".join(texts) + "\n")
            count += len(texts)
            self._write(out, pending)
        if json_form:
            pending.append("]\n")
        self._write(out, pending)
        out.flush()
        return count

    def _write(self, out, pending: list[str]) -> None:
        """Write a streamed listing's pending pieces. Until the first write a
        failing listing still gets its error object (README, "For operators");
        after it, a failure leaves the JSON array open: never a whole document."""
        if pending:
            self.wrote_data = True
            out.write("".join(pending))
            pending.clear()

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
        columns: Sequence["str | Col"],
        rows: Sequence[Sequence[object]] | Callable[[], Sequence[Sequence[object]]],
        document: Any,
        title: str | None = None,
    ) -> None:
        """One listing in its machine form (``document``) or its human form.

        ``rows`` and ``document`` may be given as zero-argument callables so
        that only the form printed is built. Rows hold raw values (full ids,
        byte counts as integers): a table on a terminal shortens and formats
        them, a pipe gets them exactly. No rows print nothing at all (the
        command's summary on stderr says so), never a header alone.
        """
        self.wrote_data = True
        if self.json:
            self.emit_json(document() if callable(document) else document)
            return
        if callable(rows):
            rows = rows()
        cols = [c if isinstance(c, Col) else Col(c) for c in columns]
        if not rows:
            return
        if sys.stdout.isatty():
            _print_table(cols, rows, title, self.full_ids)
        else:
            out = sys.stdout
            for row in rows:
                out.write("\t".join(_plain(cell) for cell in row) + "\n")
            out.flush()

    def listing(
        self,
        fields: Sequence["Field"],
        records: Iterable[Any],
        document: Any = None,
        items: str = "items",
        title: str | None = None,
        base: str | None = None,
        ascii_json: bool = False,
    ) -> int:
        """A listing of ``records``, each read through ``fields``; the number of records.

        With --json: ``document`` (the fields of the run; a zero-argument
        callable builds it only then) with the items last under ``items``, or
        without a document the array of items alone. Otherwise the table (or
        TSV) of the fields that have a column, as ``records`` draws it; a
        terminal shows paths relative to ``base``. When ``records`` is an
        iterable rather than a list, a pipe gets it streamed (the same bytes);
        ``ascii_json`` says that some record holds text UTF-8 cannot encode,
        which makes the whole document ASCII, as ``emit_json`` would.
        """
        if self.json and document is None and not isinstance(records, (list, tuple)):
            return self.emit_json_array(item(fields, r) for r in records)
        if not isinstance(records, (list, tuple)) and not sys.stdout.isatty():
            return self._stream_listing(fields, records, document, items, ascii_json)
        records = list(records)
        if self.json:
            entries = [item(fields, r) for r in records]
            document = document() if callable(document) else document
            self.emit_json(entries if document is None else {**document, items: entries})
        else:
            shown = [f for f in fields if f.col is not None]
            cols = [
                Col(f.col.name, f.col.kind, f.col.drop, f.col.min_width, base)
                if base is not None and f.col.kind == "path"
                else f.col
                for f in shown
            ]
            self.records(cols, [[f.cell_of(r) for f in shown] for r in records], None, title)
        return len(records)

    def _stream_listing(
        self, fields: Sequence["Field"], records: Iterable[Any], document: Any, items: str, ascii_json: bool
    ) -> int:
        """``listing`` on a pipe, written as the records come, a chunk at a
        time: the bytes of the gathered listing (a JSON document's items
        last, in one array)."""
        from itertools import islice

        out, count, pending = sys.stdout, 0, []  # type: Any, int, list[str]
        self.wrote_data = True
        records = iter(records)
        chunks = iter(lambda: list(islice(records, 1000)), [])
        if self.json:
            import json

            head = document() if callable(document) else document
            if not ascii_json:
                text = json.dumps(head, ensure_ascii=False, separators=(",", ":"))
                ascii_json = not _is_utf8(text)
            encode = json.JSONEncoder(ensure_ascii=ascii_json, separators=(",", ":")).encode
            text = encode(head)
            pending.append(inert_json(text[:-1] + ("," if head else "") + encode(items) + ":"))
            keyed = [(f.key, f.get) for f in fields]
            for chunk in chunks:
                # One array of the chunk's items: the same bytes as each item's, joined by commas.
                text = inert_json(encode([{key: get(r) for key, get in keyed} for r in chunk]))
                pending.append(text[:-1] if not count else "," + text[1:-1])
                count += len(chunk)
                self._write(out, pending)
            pending.append("]}\n" if count else "[]}\n")
        else:
            cell_of = [f.get if f.cell is None else f.cell for f in fields if f.col is not None]
            width = len(cell_of)
            for chunk in chunks:
                texts = [
                    "-" if c is None else c if type(c) is str else str(c)
                    for r in chunk
                    for c in [get(r) for get in cell_of]
                ]
                joined = "".join(texts)
                if not (joined.isprintable() and "\\" not in joined):  # else nothing to escape
                    texts = [escape_text(t) for t in texts]
                pending.append(
                    "".join(["\t".join(texts[at : at + width]) + "\n" for at in range(0, len(texts), width)])
                )
                count += len(chunk)
                self._write(out, pending)
        self._write(out, pending)
        out.flush()
        return count

    def charts(self, charts: Callable[[], Sequence["Chart"]]) -> None:
        """Bar charts on a terminal (``charts`` builds them only then); nothing elsewhere."""
        if sys.stdout.isatty():
            self.wrote_data = True
            print_charts([chart for chart in charts() if chart.rows])

    # -- stderr: people ------------------------------------------------------------
    def info(self, message: str) -> None:
        if not self.quiet:
            say(escape_text(message))

    def warn(self, message: str) -> None:
        if not self.quiet:
            say(f"lashctl: warning: {escape_text(message)}")

    def note(self, message: str) -> None:
        """Detail only a -v run shows."""
        if self.verbose:
            say(f"lashctl: note: {message}")

    @staticmethod
    def error(message: str) -> None:
        say(f"lashctl: error: {escape_text(message)}")

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

    def set_total(self, total: int | None) -> None:
        """The total, once the work is planned (a bar started without one counts up)."""
        return None

    def item(self, name: str) -> None:
        """What the work is on now (the file ``put`` reads): shown in place of the description."""
        return None


# The widest an amount (``1023.9 MiB/1023.9 MiB``), a speed (``1023.9 MiB/s``)
# and a time left (``12:00:00``) get: their columns are this wide from the
# start, so that the bar neither wraps nor jumps as the figures grow.
AMOUNT_WIDTH, SPEED_WIDTH, TIME_WIDTH = 21, 12, 8
SPEED_FROM_WIDTH = 80  # narrower terminals drop the speed
BAR_WIDTH = (10, 40)  # the bar's narrowest and widest
LABEL_MAX_WIDTH = 40


def progress_layout(width: int) -> tuple[int, int, bool]:
    """(label width, bar width, whether the speed is shown) for a terminal of
    ``width`` columns: one line, never wrapped (Rich leaves the last column
    free, and a column between each two)."""
    speed = width >= SPEED_FROM_WIDTH
    fixed = AMOUNT_WIDTH + TIME_WIDTH + (SPEED_WIDTH if speed else 0)
    gaps = 4 if speed else 3
    room = max(width - 1 - fixed - gaps, 2)
    bar = max(min(room - 30, BAR_WIDTH[1]), BAR_WIDTH[0])
    label = max(min(room - bar, LABEL_MAX_WIDTH), 1)
    return label, bar, speed


class _RichProgressBar(ProgressBar):
    def __init__(self, description: str, total: int | None, unit: str, console: Any = None) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
        from rich.table import Column

        console = console or Console(stderr=True)
        label, bar, speed = progress_layout(console.width)
        amount = (
            _iec_columns(speed)
            if unit == "bytes"
            else [MofNCompleteColumn(table_column=Column(width=AMOUNT_WIDTH, justify="right", no_wrap=True))]
        )
        self._progress = Progress(
            # A file name is cut with an ellipsis, never wrapped; markup off: "[" in a name is a "[".
            TextColumn(
                "{task.description}", markup=False, table_column=Column(width=label, no_wrap=True, overflow="ellipsis")
            ),
            BarColumn(bar_width=bar),
            *amount,
            TimeRemainingColumn(table_column=Column(width=TIME_WIDTH, justify="right", no_wrap=True)),
            console=console,
            transient=True,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._task = self._progress.add_task(description, total=total)

    def __enter__(self) -> "ProgressBar":
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def advance(self, amount: int = 1) -> None:
        self._progress.advance(self._task, amount)

    def set_total(self, total: int | None) -> None:
        self._progress.update(self._task, total=total)

    def item(self, name: str) -> None:
        self._progress.update(self._task, description=escape_text(name))


def _iec_columns(speed: bool = True) -> list:
    """Amount and speed in IEC units (Rich's own columns say MB, ls says MiB),
    each in a column as wide as its widest figure."""
    from rich.progress import ProgressColumn
    from rich.table import Column
    from rich.text import Text

    class IecAmount(ProgressColumn):
        """``12.0 MiB/400.0 MiB``: the units ``ls`` and the summaries use."""

        def render(self, task):  # type: ignore[no-untyped-def]
            done = human_bytes(int(task.completed))
            total = f"/{human_bytes(int(task.total))}" if task.total is not None else ""
            return Text(done + total, style="progress.download")

    class IecSpeed(ProgressColumn):
        def render(self, task):  # type: ignore[no-untyped-def]
            speed = task.finished_speed or task.speed
            return Text("?" if speed is None else f"{human_bytes(int(speed))}/s", style="progress.data.speed")

    def fixed(width: int) -> Column:
        return Column(width=width, justify="right", no_wrap=True)

    columns = [IecAmount(table_column=fixed(AMOUNT_WIDTH))]
    return columns + [IecSpeed(table_column=fixed(SPEED_WIDTH))] if speed else columns


def _dumps(document: Any, indent: int | None) -> str:
    # One style for every command: indented on a terminal, compact on a pipe.
    separators = (",", ": ") if indent is not None else (",", ":")
    import json  # imported on the first document, not at start-up (completion needs none)

    text = json.dumps(document, indent=indent, ensure_ascii=False, separators=separators)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # A file name that is not UTF-8: escape it rather than emit invalid JSON.
        text = json.dumps(document, indent=indent, ensure_ascii=True, separators=separators)
    return inert_json(text)


# What a terminal obeys or hides inside a JSON string: DEL and C1 controls,
# bidi marks and overrides, line and paragraph separators, zero-width and
# other invisible format characters. JSON's own escapes keep the value exact.
_OBEYED = "[\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff\ufff9-\ufffb]"
_obeyed = None


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def inert_json(text: str) -> str:
    """JSON text with every character a terminal would obey written as ``\\uXXXX``."""
    global _obeyed
    if text.isascii():
        return text
    if _obeyed is None:
        import re

        _obeyed = re.compile(_OBEYED)
    return _obeyed.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _plain(cell: object) -> str:
    if cell is None:
        return "-"
    # One record per line, and nothing a terminal obeys, whatever another
    # writer put in a field: tabs and newlines are escaped with the rest.
    return escape_text(str(cell))


class Col:
    """A column of a listing: its header, what its values are, how it gives way.

    ``kind`` says how a terminal shows a value: ``id`` (shortened to a unique
    prefix when the table would not fit), ``bytes`` (an integer: IEC units on a
    terminal, the exact count on a pipe), ``count`` (right-aligned), ``path``
    (shown relative to ``base``, cut in the middle), ``text`` (cut at the end with an ellipsis) or
    ``fixed`` (never cut: times, states, counts). ``drop`` > 0 lets the column
    go on a narrow terminal; the highest goes first.
    """

    __slots__ = ("name", "kind", "drop", "min_width", "base")

    def __init__(
        self, name: str, kind: str = "text", drop: int = 0, min_width: int = 8, base: str | None = None
    ) -> None:
        self.name, self.kind, self.drop, self.min_width, self.base = name, kind, drop, min_width, base


class Field(FrozenRecord):
    """One field of a record, declared once for the --json item and the table.

    ``key`` names it in the item; ``get`` reads its value from the record
    object; ``col`` is its table column (None: the field is in --json only);
    ``cell`` reads what the table shows from the record, when that is not
    the value itself.
    """

    __slots__ = ("key", "get", "col", "cell")

    def __init__(
        self, key: str, get: Callable[[Any], Any], col: Col | None = None, cell: Callable[[Any], Any] | None = None
    ) -> None:
        self._set(key, get, col, cell)

    def cell_of(self, record: Any) -> Any:
        return self.get(record) if self.cell is None else self.cell(record)


def item(fields: Iterable[Field], record: Any) -> dict:
    """A record as its --json item: every field under its key, in declaration order."""
    return {f.key: f.get(record) for f in fields}


def cells(fields: Iterable[Field], record: Any) -> list:
    """A record as its table (or TSV) row: the cells of the fields with a column."""
    return [f.cell_of(record) for f in fields if f.col is not None]


# A shortened id is at least this long (as git abbreviates), longer where
# needed to be unique among the ids shown, and ends in this marker. lashctl
# reads a pasted short id with the marker as the prefix it is.
SHORT_ID_MIN = 12
ELLIPSIS = "\u2026"
_HEX64 = r"[0-9a-f]{64}"  # re's own cache compiles it once, when a table first needs it


def unique_prefix_length(ids: Iterable[str], minimum: int = SHORT_ID_MIN) -> int:
    """The shortest prefix length (at least ``minimum``) that tells ``ids`` apart."""
    ordered = sorted(set(ids))
    length = minimum
    for a, b in zip(ordered, ordered[1:]):
        common = 0
        for x, y in zip(a, b):
            if x != y:
                break
            common += 1
        length = max(length, common + 1)
    return length


def render_table(
    columns: Sequence["str | Col"],
    rows: Sequence[Sequence[object]],
    width: int,
    full_ids: bool = False,
    title: str | None = None,
) -> str:
    """The table a terminal ``width`` columns wide shows, as text (for tests and previews)."""
    import io

    from rich.console import Console

    console = Console(width=width, file=io.StringIO(), force_terminal=False, highlight=False, color_system=None)
    cols = [c if isinstance(c, Col) else Col(c) for c in columns]
    console.print(_table(cols, rows, width, full_ids, title))
    return console.file.getvalue()  # type: ignore[attr-defined]


def _print_table(cols: Sequence[Col], rows: Sequence[Sequence[object]], title: str | None, full_ids: bool) -> None:
    from rich.console import Console

    console = Console(highlight=False)
    console.print(_table(cols, rows, console.width, full_ids, title))


def _table(cols: Sequence[Col], rows: Sequence[Sequence[object]], width: int, full_ids: bool, title: str | None):
    from rich.table import Table
    from rich.text import Text

    texts, fitted = _fit(list(cols), rows, width, full_ids)
    # Cells are Text, not strings: Rich parses neither markup nor :emoji: codes
    # in them, so a label shows as the characters it is.
    table = Table(title=Text(escape_text(title)) if title else None, show_edge=False, header_style="bold")
    for col, w in fitted:
        # Whole ids asked for on a terminal too narrow for them fold onto a
        # second line rather than lose characters.
        fold = full_ids and col.kind == "id"
        table.add_column(
            Text(_cut(col.name, w, "text")),
            width=None if fold else w,
            no_wrap=not fold,
            overflow="fold" if fold else "ellipsis",
            justify="right" if col.kind in ("bytes", "count") else "left",
        )
    for row in texts:
        table.add_row(*(Text(cell) for cell in row))
    return table


def _fit(
    cols: list[Col], rows: Sequence[Sequence[object]], width: int, full_ids: bool
) -> tuple[list[list[str]], list[tuple[Col, int]]]:
    """Lay a table out in ``width`` cells: each row on one line.

    Ids stay whole when every column fits with text and paths cut to their
    minimum; otherwise they are shortened to a unique prefix. Then, until it
    fits: text and paths cut (widest first, down to each column's minimum);
    the least important column dropped and the cutting tried again. The
    cells come back cut to their column's width.
    """
    cells = [[_terminal_cell(col, value) for col, value in zip(cols, row)] for row in rows]
    if not full_ids:
        natural = _widths(cols, cells)
        floors = _floors(cols, natural, range(len(cols)))
        if sum(floors.values()) + 3 * len(cols) - 1 > width:
            cells = _shorten_ids(cols, cells)
    keep = list(range(len(cols)))
    while True:
        natural = _widths(cols, cells)
        widths = {i: natural[i] for i in keep}
        excess = sum(widths.values()) + 3 * len(keep) - 1 - width
        floors = _floors(cols, natural, keep)
        # Take the excess from the widest cuttable columns first.
        while excess > 0:
            room = [i for i in keep if widths[i] > floors[i]]
            if not room:
                break
            widest = max(room, key=lambda i: (widths[i] - floors[i], i))
            widths[widest] -= 1
            excess -= 1
        droppable = [i for i in keep if cols[i].drop > 0]
        if excess <= 0 or not droppable:
            break
        keep.remove(max(droppable, key=lambda i: (cols[i].drop, i)))
    out_cols = [(cols[i], widths[i]) for i in keep]
    out_cells = [
        [row[i] if full_ids and cols[i].kind == "id" else _cut(row[i], widths[i], cols[i].kind) for i in keep]
        for row in cells
    ]
    return out_cells, out_cols


def _floors(cols: Sequence[Col], natural: Sequence[int], keep: Iterable[int]) -> dict[int, int]:
    """How narrow each column may be cut: text and paths to their minimum, nothing else."""
    from rich.cells import cell_len

    return {
        i: max(min(cols[i].min_width, natural[i]), cell_len(cols[i].name))
        if cols[i].kind in ("text", "path")
        else natural[i]
        for i in keep
    }


def _widths(cols: Sequence[Col], cells: Sequence[Sequence[str]]) -> list[int]:
    from rich.cells import cell_len

    widths = [cell_len(c.name) for c in cols]
    for row in cells:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], cell_len(cell))
    return widths


def _shorten_ids(cols: Sequence[Col], cells: list[list[str]]) -> list[list[str]]:
    from lashctl.ids import SHORT_ID_MARK

    for i, col in enumerate(cols):
        if col.kind != "id":
            continue
        ids = [row[i] for row in cells if re.fullmatch(_HEX64, row[i])]
        if not ids:
            continue
        n = unique_prefix_length(ids)
        if n >= 64:
            continue
        for row in cells:
            if re.fullmatch(_HEX64, row[i]):
                row[i] = row[i][:n] + SHORT_ID_MARK
    return cells


def _terminal_cell(col: Col, value: object) -> str:
    if value is None:
        return "-"
    if col.kind == "bytes" and isinstance(value, int):
        return human_bytes(value)
    text = str(value)
    if col.kind == "path" and col.base:
        import os

        base = col.base.rstrip(os.sep) + os.sep
        if text.startswith(base):
            text = text[len(base) :]
    return escape_text(text)


def _cut(text: str, width: int, kind: str) -> str:
    """``text`` in at most ``width`` cells: cut at the end, or in the middle for a path."""
    from rich.cells import cell_len

    if cell_len(text) <= width:
        return text
    if width <= 1:
        return ELLIPSIS[:width]
    if kind == "path":
        # Keep more of the start (where the shard and id begin) than of the end.
        head = _take(text, (width - 1) * 2 // 3)
        tail = _take(text[::-1], width - 1 - cell_len(head))[::-1]
        return head + ELLIPSIS + tail
    return _take(text, width - 1) + ELLIPSIS


def _take(text: str, width: int) -> str:
    """The longest start of ``text`` that fits in ``width`` cells."""
    from rich.cells import cell_len

    out, used = [], 0
    for char in text:
        w = cell_len(char)
        if used + w > width:
            break
        out.append(char)
        used += w
    return "".join(out)


def human_bytes(n: int | None) -> str:
    """A size in IEC units, as every terminal output of lashctl shows one."""
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


# -- charts --------------------------------------------------------------------
class Chart(FrozenRecord):
    """A bar chart: a bar per row, each bar stacked from ``parts``.

    ``parts``: ``(name, character, style)`` for each segment, in the order
    stacked (the characters tell the parts apart without colour); ``rows``:
    ``(label, [amount per part])``, amounts in bytes. ``caption`` is shown
    under the bars after the legend.
    """

    __slots__ = ("title", "parts", "rows", "caption")

    def __init__(
        self,
        title: str,
        parts: Sequence[tuple[str, str, str]],
        rows: Sequence[tuple[str, Sequence[int]]],
        caption: str = "",
    ) -> None:
        self._set(title, tuple(parts), tuple(rows), caption)


CHART_LABEL_MIN = 10  # labels get a third of the width, at least this (a day, 2026-11-26, fits)


def print_charts(charts: Sequence[Chart]) -> None:
    """Charts on stdout (a terminal), each after a blank line, as wide as the terminal."""
    from rich.console import Console

    console = Console(highlight=False)
    for chart in charts:
        console.print()
        console.print(_chart(chart, console.width))


def render_chart(chart: Chart, width: int) -> str:
    """The chart a terminal ``width`` columns wide shows, as text (for tests and previews)."""
    import io

    from rich.console import Console

    console = Console(width=width, file=io.StringIO(), force_terminal=False, highlight=False, color_system=None)
    console.print(_chart(chart, width))
    return console.file.getvalue()  # type: ignore[attr-defined]


def _chart(chart: Chart, width: int):
    """Lines of ``label bar bytes``: labels escaped and cut to fit, the byte
    counts right-aligned, the longest bar as wide as the rest leaves."""
    from rich.cells import cell_len
    from rich.console import Group
    from rich.text import Text

    labels = [escape_text(label) for label, _ in chart.rows]
    totals = [sum(amounts) for _, amounts in chart.rows]
    numbers = [human_bytes(t) for t in totals]
    number_w = max((len(n) for n in numbers), default=0)
    label_w = min(max((cell_len(label) for label in labels), default=1), max(CHART_LABEL_MIN, width // 3))
    bar_w = max(width - label_w - number_w - 2, 1)
    largest = max(totals, default=0)
    lines = [Text(escape_text(chart.title), style="bold", no_wrap=True, overflow="ellipsis")]
    for label, (_, amounts), total, number in zip(labels, chart.rows, totals, numbers):
        line = Text(no_wrap=True, overflow="crop")
        cut = _cut(label, label_w, "text")
        line.append(cut + " " * (label_w - cell_len(cut)) + " ")
        drawn = 0
        for (_, char, style), cells in zip(chart.parts, _bar_cells(amounts, largest, bar_w)):
            line.append(char * cells, style=style)
            drawn += cells
        line.append(" " * (bar_w - drawn) + " " + number.rjust(number_w))
        lines.append(line)
    legend = "  ".join(f"{char} {name}" for name, char, _ in chart.parts)
    lines.append(Text(legend + (f"; {chart.caption}" if chart.caption else ""), style="dim"))
    return Group(*lines)


def _bar_cells(amounts: Sequence[int], largest: int, width: int) -> list[int]:
    """How many cells each stacked part takes of a bar ``width`` long for
    ``largest``: the boundaries rounded, so the parts add up to the bar; a
    bar with any bytes at all gets a cell."""
    if largest <= 0:
        return [0] * len(amounts)
    cells, done, edge = [], 0, 0
    for amount in amounts:
        done += amount
        end = round(done * width / largest)
        cells.append(end - edge)
        edge = end
    if edge == 0 and done > 0:
        cells[max(range(len(amounts)), key=lambda i: amounts[i])] = 1
    return cells
