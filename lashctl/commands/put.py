"""``lashctl put``: store files, recording each intent before its bytes land."""

import os
import sys
from typing import Annotated, Optional

import typer

from lashctl.commands import JsonFlag, SessionOption, app_state, strip_bom
from lashctl.errors import UsageError
from lashctl.render import Field, human_bytes, item

EPILOG = """Examples:

    lashctl put -s s-42 photo.png notes.pdf
    find outbox -type f -print0 | lashctl put -s s-42 --files-from - -0

Exit codes: 0 stored; 1 I/O error; 2 usage error (bad option, missing or unreadable input); 65 corrupt manifest; 75 manifest locked; 130 interrupted."""


def _not_negative(value: Optional[int]) -> Optional[int]:
    if value is not None and value < 0:
        raise typer.BadParameter(f"{value} is negative; give a number of pixels, 0 or more")
    return value


# One input stored (a transfer.PutResult), as --json shows it; a person and a
# pipe get the id alone.
STORED = (
    Field("id", lambda r: r.attachment_id),
    Field("path", lambda r: r.path),
    Field("byte_len", lambda r: r.byte_len),
    Field("media_type", lambda r: r.media_type),
    Field("label", lambda r: r.label),
    Field("width", lambda r: r.width),
    Field("height", lambda r: r.height),
    Field("deduplicated", lambda r: r.deduplicated),
)

# Below these a put is over before a progress bar would be read.
PROGRESS_MIN_INPUTS = 20
PROGRESS_MIN_BYTES = 64 * 1024 * 1024


def put(
    ctx: typer.Context,
    paths: Annotated[
        Optional[list[str]],
        typer.Argument(metavar="PATH... | -", help="Files to store; - reads standard input.", show_default=False),
    ] = None,
    session: SessionOption = None,
    media_type: Annotated[
        Optional[str],
        typer.Option("--media-type", metavar="TYPE", help="MIME type (default: sniffed, then from the file name)."),
    ] = None,
    label: Annotated[
        Optional[str], typer.Option("--label", metavar="LABEL", help="Label (default: the file's base name).")
    ] = None,
    width: Annotated[
        Optional[int],
        typer.Option(
            "--width",
            metavar="N",
            callback=_not_negative,
            help="Image width in pixels (default: read from the header).",
        ),
    ] = None,
    height: Annotated[
        Optional[int],
        typer.Option(
            "--height",
            metavar="N",
            callback=_not_negative,
            help="Image height in pixels (default: read from the header).",
        ),
    ] = None,
    files_from: Annotated[
        Optional[str],
        typer.Option("--files-from", metavar="FILE|-", help="Read input paths from FILE (- for stdin), one per line."),
    ] = None,
    null: Annotated[bool, typer.Option("-0", "--null", help="With --files-from: paths are NUL-separated.")] = False,
    json_flag: JsonFlag = False,
) -> None:
    """Store files in the blob store and record an intent for each.

    Prints one full id per input, in input order. Each input is hashed while it
    streams into the staging area; its intent is durable in the manifest before
    the blob is renamed into place. Many inputs share lock and fsync work.
    """
    from lashctl import core, transfer

    state = app_state(ctx, json_flag)
    ui = state.ui
    inputs = _inputs(ui, paths or [], files_from, null)
    core.validate_session(session)
    if not inputs:
        if files_from is None:
            raise UsageError("nothing to store: give PATH..., - for standard input, or --files-from FILE")
        # An empty list (an empty outbox) is a batch of nothing: success, for set -e scripts.
        if ui.json:
            ui.emit_json([])
        ui.info(f"nothing to store: --files-from {files_from} listed no paths")
        return
    transfer.check_put_sources(inputs)
    transfer.clock_ms()  # before the store is created
    sources = [transfer.PutSource.from_path(p, _stdin) for p in inputs]
    options = transfer.PutOptions(session, media_type, label, width, height)
    store = state.store(create=True)
    show_bar = ui.wants_progress() and (len(inputs) >= PROGRESS_MIN_INPUTS or _known_size(inputs) >= PROGRESS_MIN_BYTES)
    if "-" in inputs and sys.stdin.isatty():
        ui.info("reading standard input (end it with Ctrl-D)")
    landed: list = []
    try:
        if show_bar:
            # Ids are printed after the bar is gone, so stdout and the bar never mix.
            with ui.progress("storing", _known_size(inputs) or None) as bar:
                for result in transfer.put(store, [_named(s, bar) for s in sources], options, progress=bar.advance):
                    landed.append(result)
        else:
            for result in transfer.put(store, sources, options):
                landed.append(result)
                if not ui.json:
                    ui.line(result.attachment_id)
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM or SIGHUP (lashctl.Terminated)
        # What landed is stored and recorded: its ids are what a script needs
        # to commit. transfer.put removed the staged copies of the rest.
        if show_bar or ui.json:
            _print_results(ui, landed)
        sys.stdout.flush()
        from lashctl import interruption

        exc.args = (_interrupted(interruption(exc), len(landed), len(inputs)),)
        raise exc from None
    if not show_bar and not ui.json:
        sys.stdout.flush()
    else:
        _print_results(ui, landed)
    total = human_bytes(sum(r.byte_len for r in landed))
    deduplicated = sum(r.deduplicated for r in landed)
    ui.info(
        f"stored {len(landed)} blob(s), {total} for session {session}: "
        f"{len(landed) - deduplicated} new, {deduplicated} already present"
    )
    _warn_unreadable_sidecars(ui, store, landed)


def _warn_unreadable_sidecars(ui, store, landed: list) -> None:
    """A put told ``--layout sidecars`` writes for lash-core 0.1.0-alpha.85,
    whose sidecar decoder knows only its five image types and fails on any
    other media type (README, "Two layouts"): the bytes are stored, and the
    user is told."""
    from lashctl.backends.base import LAYOUT_SIDECARS
    from lashctl.media import lash_image_type

    if store.layout != LAYOUT_SIDECARS or not store.layout_given:
        return
    others = sorted({r.media_type for r in landed if lash_image_type(r.media_type) is None})
    if others:
        ui.warn(
            f"lash-core 0.1.0-alpha.85 cannot read the sidecar of a {', '.join(others)} blob (it reads "
            "png, jpeg, gif, webp and bmp only): the bytes are stored; a store lash at its current "
            "HEAD reads is made with 'init --layout bare'"
        )


def _stdin():
    """Standard input as a put reads it, asked for only when an input is "-".
    A terminal reports its end once per Ctrl-D; the buffered reader reads on
    after a short read and would swallow it, waiting for a second one."""
    return sys.stdin.buffer.raw if sys.stdin.isatty() else sys.stdin.buffer


def _inputs(ui, paths: list[str], files_from: Optional[str], null: bool) -> list[str]:
    """The PATH arguments, then the paths --files-from lists."""
    inputs = list(paths)
    if files_from is not None:
        if files_from == "-" and sys.stdin.isatty():
            ui.info("reading paths from standard input (end it with Ctrl-D)")
        inputs.extend(_read_path_list(files_from, null))
        if files_from == "-" and "-" in paths:
            raise UsageError("--files-from - already reads standard input; '-' cannot also be an input")
    elif null:
        raise UsageError("-0/--null only applies to --files-from")
    return inputs


def _interrupted(how: str, stored: int, inputs: int) -> str:
    """The one line Ctrl-C leaves: what is kept, and that nothing staged stays behind.

    Inputs are stored batch by batch, and ids are printed only for a batch
    that landed whole; an interrupt while a batch lands may leave intents
    (and bytes) for inputs that were not reported, which reclaim sweeps.
    """
    of = f"{stored} of {inputs} input{'s' if inputs != 1 else ''}"
    ids = " (their ids are on stdout)" if stored else ""
    return (
        f"{how}: {of} stored and recorded{ids}; staged copies of the rest were removed, "
        "and reclaim sweeps anything else they left"
    )


def _print_results(ui, results: list) -> None:
    """The ids (or the --json array) of the inputs that were stored, in input order."""
    if not ui.json:
        for result in results:
            ui.line(result.attachment_id)
        sys.stdout.flush()
        return
    ui.emit_json([item(STORED, result) for result in results])


def _named(source, bar):
    """``source``, whose opening names it on the bar: the bar shows the file it is on."""
    from lashctl import transfer

    name = "standard input" if source.name == "-" else os.path.basename(source.name) or source.name
    opener = source.opener

    def opened():
        bar.item(name)
        return opener()

    return transfer.PutSource(source.name, opened, source.label)


def _known_size(paths: list[str]) -> int:
    """Total size of the inputs that are regular files (stdin counts as 0)."""
    total = 0
    for path in paths:
        if path != "-":
            try:
                total += os.stat(path).st_size
            except OSError:
                pass
    return total


def _read_path_list(source: str, null: bool) -> list[str]:
    """The paths a list names (README, "Lists"): a byte-order mark at its
    start is no part of the first path, and a line ``-`` is the file named
    ``-`` in the current directory, never standard input."""
    try:
        if source == "-":
            data = sys.stdin.buffer.read()
        else:
            with open(source, "rb") as handle:
                data = handle.read()
    except OSError as exc:
        # Like a missing input path: a usage error, before anything is written.
        raise UsageError(f"cannot read --files-from {source}: {exc.strerror or exc}") from exc
    separator = b"\0" if null else b"\n"
    names = []
    for line, raw in enumerate(strip_bom(data).split(separator), 1):
        if not null and raw.endswith(b"\r"):
            raw = raw[:-1]
        if b"\0" in raw:  # no path holds one: most likely a -print0 list read without -0
            raise UsageError(
                f"--files-from {source}, line {line}: a path holds a NUL byte (for a NUL-separated list, add -0)"
            )
        if raw:
            name = raw.decode(sys.getfilesystemencoding(), "surrogateescape")
            names.append(os.path.join(os.curdir, name) if name == "-" else name)
    return names
