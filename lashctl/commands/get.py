"""``lashctl get``: stream a blob out, verifying its hash as it flows."""

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from lashctl.commands import JsonFlag, app_state, complete_id
from lashctl.errors import UsageError
from lashctl.ids import parse_id
from lashctl.render import human_bytes

EPILOG = """Examples:

    lashctl get 5f5d584c5857 -o photo.png
    lashctl get 5f5d584c5857 | sha256sum

Exit codes: 0 written; 2 usage error (bad or ambiguous id, binary data to a terminal); 3 not found; 65 hash mismatch or undecodable sidecar (a file given with -o is left as it was)."""


def get(
    ctx: typer.Context,
    attachment: Annotated[
        str,
        typer.Argument(
            metavar="ID", help="Full id, sha256:<id>, or a unique prefix (4+ hex).", autocompletion=complete_id
        ),
    ],
    output: Annotated[
        Optional[str],
        typer.Option(
            "--output",
            "-o",
            metavar="PATH|-",
            help="Write to PATH (a file is replaced whole, a FIFO or device written into) or - for stdout.",
        ),
    ] = None,
    json_flag: JsonFlag = False,
) -> None:
    """Write a blob's bytes to stdout or a file, re-hashing them on the way.

    A hash mismatch is corruption (exit 65): a file given with -o is left as
    it was; what a FIFO or device was sent cannot be taken back. Refuses to
    write binary data to a terminal unless -o - is given.
    """
    from lashctl import core, transfer
    from lashctl.fsutil import STANDARD_ERROR, STANDARD_OUTPUT

    query = parse_id(attachment)
    if output is not None and output.endswith("/") and not os.path.isdir(output):
        # Path() drops the slash: the blob would land in a file of that name.
        raise UsageError(f"-o {output}: Not a directory")
    state = app_state(ctx, json_flag)
    store = state.store()
    if query.is_full:
        attachment_id = query.hex
    else:
        with store.manifest.reading() as view:
            attachment_id = core.resolve_id(store, query, view)
    info = transfer.blob_info(store, attachment_id)
    if info.metadata is None:
        state.ui.warn(f"sidecar {info.sidecar_path} is missing; the bytes are still there")
    if output is None or output == "-":
        is_text = info.metadata is not None and info.metadata.media_type.startswith("text/")
        if output is None and sys.stdout.isatty() and not is_text:
            raise UsageError("refusing to write binary data to a terminal: use -o PATH, or -o - to force")
        sys.stdout.flush()
        transfer.copy_verified(store, attachment_id, sys.stdout.buffer)
        sys.stdout.buffer.flush()
        return
    written, stream = transfer.get_to_file(store, attachment_id, Path(output))
    if stream == STANDARD_OUTPUT:
        return  # as for -o -: a report would land in the file the bytes went into
    if state.ui.json:
        state.ui.emit_json({"id": attachment_id, "path": output, "byte_len": written})
    if stream != STANDARD_ERROR:
        state.ui.info(f"wrote {human_bytes(written)} of {attachment_id} to {output}")
