"""``lashctl ls``: every blob with its size, type, label and reference state."""

from enum import Enum
from typing import Annotated, Optional

import typer

from lashctl.commands import JsonFlag, app_state, end_inspection, inspect_state
from lashctl.render import Col, Field, human_bytes
from lashctl.timefmt import iso_ms

EPILOG = """Examples:

    lashctl ls --state unmanaged --sort size -r
    lashctl ls --media-type 'image/*' | cut -f1,2

Exit codes: 0 listed; 2 usage error; 65 corrupt manifest."""


class RefState(str, Enum):
    committed = "committed"
    uncommitted = "uncommitted"
    unmanaged = "unmanaged"


class SortKey(str, Enum):
    id = "id"
    size = "size"
    mtime = "mtime"
    media_type = "media-type"
    label = "label"
    state = "state"


# One blob (an inspect.BlobEntry).
ENTRY = (
    Field("id", lambda e: e.attachment_id, Col("id", "id")),
    Field("byte_len", lambda e: e.byte_len, Col("size", "bytes")),
    Field("media_type", lambda e: e.media_type, Col("media type", drop=2, min_width=10)),
    Field("label", lambda e: e.label, Col("label", drop=1)),
    Field("state", lambda e: e.state, Col("state", "fixed")),
    Field("sessions", lambda e: e.sessions),
    Field("mtime_epoch_ms", lambda e: e.mtime_ms),
    Field("mtime", lambda e: iso_ms(e.mtime_ms), Col("modified", "fixed", drop=3)),
)


def ls(
    ctx: typer.Context,
    session: Annotated[
        Optional[str], typer.Option("--session", "-s", metavar="SESSION", help="Only blobs this session has a row for.")
    ] = None,
    ref_state: Annotated[
        Optional[RefState], typer.Option("--state", help="Only blobs in this reference state.")
    ] = None,
    media_type: Annotated[
        Optional[str],
        typer.Option("--media-type", metavar="TYPE", help="Only this MIME type; image/* matches a whole type."),
    ] = None,
    sort: Annotated[SortKey, typer.Option("--sort", help="Sort key.")] = SortKey.id,
    reverse: Annotated[bool, typer.Option("--reverse", "-r", help="Reverse the order.")] = False,
    json_flag: JsonFlag = False,
) -> None:
    """List every blob: id, size, media type, label, reference state, modification time.

    The state is committed (some session committed it), uncommitted (only
    intents reference it) or unmanaged (no manifest row).
    """
    from lashctl import inspect
    from lashctl.core import session_filter

    state = app_state(ctx, json_flag)
    session = session_filter(session)
    store = state.store()
    manifest_state = inspect_state(state, store)
    wanted = inspect.BlobFilter(session=session, state=ref_state.value if ref_state else None, media_type=media_type)
    entries = inspect.select_blobs(
        inspect.list_blobs(store, manifest_state, warn=state.ui.warn), wanted, sort=sort.value, reverse=reverse
    )
    state.ui.listing(ENTRY, entries)
    if entries:
        state.ui.info(f"{len(entries)} blob(s), {human_bytes(sum(e.byte_len for e in entries))}")
    else:
        state.ui.info("no blobs" + (" match" if wanted.narrows else " in the store"))
    end_inspection(state, store, manifest_state)
