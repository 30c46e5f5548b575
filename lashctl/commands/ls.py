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

# --sort: each key, then the id between equals.
SORT_KEYS = {
    SortKey.id: lambda e: e.attachment_id,
    SortKey.size: lambda e: (e.byte_len, e.attachment_id),
    SortKey.mtime: lambda e: (e.mtime_ms, e.attachment_id),
    SortKey.media_type: lambda e: (e.media_type or "", e.attachment_id),
    SortKey.label: lambda e: (e.label or "", e.attachment_id),
    SortKey.state: lambda e: (e.state, e.attachment_id),
}


def ls(
    ctx: typer.Context,
    session: Annotated[Optional[str], typer.Option("--session", "-s", metavar="SESSION", help="Only blobs this session has a row for.")] = None,
    ref_state: Annotated[Optional[RefState], typer.Option("--state", help="Only blobs in this reference state.")] = None,
    media_type: Annotated[
        Optional[str], typer.Option("--media-type", metavar="TYPE", help="Only this MIME type; image/* matches a whole type.")
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

    state = app_state(ctx, json_flag)
    store = state.store()
    manifest_state = inspect_state(state, store)
    entries = _matching(inspect.list_blobs(store, manifest_state, warn=state.ui.warn), session, ref_state, media_type)
    entries.sort(key=SORT_KEYS[sort], reverse=reverse)
    state.ui.listing(ENTRY, entries)
    if entries:
        state.ui.info(f"{len(entries)} blob(s), {human_bytes(sum(e.byte_len for e in entries))}")
    else:
        state.ui.info("no blobs" + (" match" if session or ref_state or media_type else " in the store"))
    end_inspection(state, store, manifest_state)


def _matching(entries, session: Optional[str], ref_state: Optional[RefState], media_type: Optional[str]) -> list:
    """The blobs the filters keep: --session, --state, --media-type."""
    entries = list(entries)
    if session is not None:
        entries = [e for e in entries if session in e.sessions]
    if ref_state is not None:
        entries = [e for e in entries if e.state == ref_state.value]
    if media_type is not None:
        from lashctl.media import normalize_mime

        wanted = media_type.strip().lower()
        if wanted.endswith("/*"):
            kind = normalize_mime(wanted[:-2] + "/x", "--media-type").split("/")[0]
            entries = [e for e in entries if (e.media_type or "").startswith(kind + "/")]
        else:
            wanted = normalize_mime(media_type, "--media-type")
            entries = [e for e in entries if e.media_type == wanted]
    return entries
