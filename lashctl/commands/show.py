"""``lashctl show``: everything about one blob, and why it is kept."""

from typing import Annotated

import typer

from lashctl.commands import JsonFlag, app_state, complete_id, end_inspection, inspect_state
from lashctl.ids import parse_id
from lashctl.render import human_bytes
from lashctl.timefmt import age_text, iso_ms, now_ms

EPILOG = """Examples:

    lashctl show 5f5d584c5857
    lashctl --json show sha256:5f5d584c5857

Exit codes: 0 shown; 2 usage error (bad or ambiguous id); 3 not found; 65 corrupt manifest."""


def show(
    ctx: typer.Context,
    attachment: Annotated[str, typer.Argument(metavar="ID", help="Full id, sha256:<id>, or a unique prefix (4+ hex).",
                                       autocompletion=complete_id)],
    json_flag: JsonFlag = False,
) -> None:
    """Show one blob: metadata, paths, size on disk, every manifest row, and a verdict.

    The verdict says why the blob is kept (a session committed it; an intent
    is within the grace period), or that it is an orphan a default sweep would
    reclaim, unmanaged (no manifest row), or missing its bytes.
    """
    from lashctl import core, inspect

    query = parse_id(attachment)
    state = app_state(ctx, json_flag)
    store = state.store()
    manifest_state = inspect_state(state, store)
    attachment_id = core.resolve_id(store, query, manifest_state)
    now = now_ms()
    report = inspect.show(store, attachment_id, manifest_state, now)
    meta = report.metadata
    rows = [
        {
            "session_id": r.session_id,
            "canonical_uri": r.canonical_uri,
            "intent_at_epoch_ms": r.intent_at_epoch_ms,
            "intent_at": iso_ms(r.intent_at_epoch_ms),
            "age_ms": now - r.intent_at_epoch_ms,
            "committed_at_epoch_ms": r.committed_at_epoch_ms,
            "committed_at": iso_ms(r.committed_at_epoch_ms),
        }
        for r in report.rows
    ]
    if state.ui.json:
        state.ui.emit_json(
            {
                "id": report.attachment_id,
                "blob_path": str(report.blob_path),
                "sidecar_path": str(report.sidecar_path),
                "bytes_present": report.bytes_present,
                "byte_len": report.byte_len,
                "size_on_disk": report.size_on_disk,
                "mtime_epoch_ms": report.mtime_ms,
                "mtime": iso_ms(report.mtime_ms),
                "metadata": meta.to_json_dict() if meta else None,
                "media_type": meta.media_type if meta else None,
                "sidecar_problem": report.sidecar_problem,
                "rows": rows,
                "verdict": {"state": report.verdict.state, "reason": report.verdict.reason},
            }
        )
        return
    blob = (
        f"present, {human_bytes(report.byte_len)}, {human_bytes(report.size_on_disk)} on disk, "
        f"modified {iso_ms(report.mtime_ms)}"
        if report.bytes_present else "MISSING"
    )
    lines = [
        ("id", report.attachment_id),
        ("blob", f"{report.blob_path} ({blob})"),
        ("sidecar", f"{report.sidecar_path}" + (f" ({report.sidecar_problem})" if report.sidecar_problem else "")),
        ("media type", meta.media_type if meta else "-"),
        ("byte_len", str(meta.byte_len) if meta else "-"),
        ("dimensions", f"{meta.width}x{meta.height}" if meta and meta.width is not None and meta.height is not None else "-"),
        ("label", meta.label if meta and meta.label is not None else "-"),
        ("verdict", report.verdict.reason),
        ("rows", str(len(rows)) if rows else "none"),
    ]
    for key, value in lines:
        state.ui.line(f"{key + ':':<12}{value}")
    for r in report.rows:
        committed = f"committed {iso_ms(r.committed_at_epoch_ms)}" if r.committed else "uncommitted"
        state.ui.line(
            f"  session {r.session_id}: intent {iso_ms(r.intent_at_epoch_ms)} "
            f"({age_text(now - r.intent_at_epoch_ms)} ago), {committed}"
        )
    end_inspection(state, store, manifest_state)
