"""``lashctl show``: everything about one blob, and why it is kept."""

from typing import Annotated, Iterator

import typer

from lashctl.commands import AuditLogReadOption, JsonFlag, app_state, complete_id, end_inspection, inspect_state
from lashctl.errors import NotFound
from lashctl.ids import parse_id
from lashctl.render import Field, human_bytes, item
from lashctl.timefmt import age_text, in_future, iso_ms, now_ms

EPILOG = """Examples:

    lashctl show 5f5d584c5857
    lashctl --json show sha256:5f5d584c5857

Exit codes: 0 shown; 2 usage error (bad or ambiguous id; a named audit log that is not a regular file); 3 not found (what the audit log says of it is shown); 65 corrupt manifest."""

# The blob (an inspect.BlobReport) as --json shows it; its rows and verdict follow.
BLOB = (
    Field("id", lambda b: b.attachment_id),
    Field("blob_path", lambda b: str(b.blob_path)),
    Field("sidecar_path", lambda b: str(b.sidecar_path)),
    Field("bytes_present", lambda b: b.bytes_present),
    Field("byte_len", lambda b: b.byte_len),
    Field("size_on_disk", lambda b: b.size_on_disk),
    Field("mtime_epoch_ms", lambda b: b.mtime_ms),
    Field("mtime", lambda b: iso_ms(b.mtime_ms)),
    Field("metadata", lambda b: b.metadata.to_json_dict() if b.metadata else None),
    Field("media_type", lambda b: b.metadata.media_type if b.metadata else None),
    Field("sidecar_problem", lambda b: b.sidecar_problem),
)


def manifest_row(now: int) -> tuple[Field, ...]:
    """One manifest row of the blob (a fold.Row), with its age at ``now``."""
    return (
        Field("session_id", lambda r: r.session_id),
        Field("canonical_uri", lambda r: r.canonical_uri),
        Field("intent_at_epoch_ms", lambda r: r.intent_at_epoch_ms),
        Field("intent_at", lambda r: iso_ms(r.intent_at_epoch_ms)),
        Field("age_ms", lambda r: now - r.intent_at_epoch_ms),
        Field("committed_at_epoch_ms", lambda r: r.committed_at_epoch_ms),
        Field("committed_at", lambda r: iso_ms(r.committed_at_epoch_ms)),
    )


def show(
    ctx: typer.Context,
    attachment: Annotated[
        str,
        typer.Argument(
            metavar="ID", help="Full id, sha256:<id>, or a unique prefix (4+ hex).", autocompletion=complete_id
        ),
    ],
    json_flag: JsonFlag = False,
    audit_log: AuditLogReadOption = None,
) -> None:
    """Show one blob: metadata, paths, size on disk, every manifest row, and a verdict.

    The verdict says why the blob is kept (a session committed it; an intent
    is within the grace period), or that it is an orphan a default sweep would
    reclaim, unmanaged (no manifest row), or missing its bytes. For an id
    that is gone (no blob, no row): when, by which command and why it went,
    from the audit log, and exit 3.
    """
    from lashctl import core, inspect

    query = parse_id(attachment)
    state = app_state(ctx, json_flag)
    store = state.store()
    manifest_state = inspect_state(state, store)
    now = now_ms()
    try:
        attachment_id = core.resolve_id(store, query, manifest_state)
        report = inspect.show(store, attachment_id, manifest_state, now)
    except NotFound as exc:
        _gone(state, query, audit_log, exc)
    if state.ui.json:
        rows = [item(manifest_row(now), r) for r in report.rows]
        verdict = {"state": report.verdict.state, "reason": report.verdict.reason}
        state.ui.emit_json({**item(BLOB, report), "rows": rows, "verdict": verdict})
    else:
        for line in _lines(report, now):
            state.ui.line(line)
    end_inspection(state, store, manifest_state)


def _lines(report, now: int) -> Iterator[str]:
    """What a person reads: the blob's key/value lines, then a line per manifest row."""
    meta = report.metadata
    blob = (
        f"present, {human_bytes(report.byte_len)}, {human_bytes(report.size_on_disk)} on disk, "
        f"modified {iso_ms(report.mtime_ms)}"
        if report.bytes_present
        else "MISSING"
    )
    lines = [
        ("id", report.attachment_id),
        ("blob", f"{report.blob_path} ({blob})"),
        ("sidecar", f"{report.sidecar_path}" + (f" ({report.sidecar_problem})" if report.sidecar_problem else "")),
        ("media type", meta.media_type if meta else "-"),
        ("byte_len", str(meta.byte_len) if meta else "-"),
        (
            "dimensions",
            f"{meta.width}x{meta.height}" if meta and meta.width is not None and meta.height is not None else "-",
        ),
        ("label", meta.label if meta and meta.label is not None else "-"),
        ("verdict", report.verdict.reason),
        ("rows", str(len(report.rows)) if report.rows else "none"),
    ]
    for key, value in lines:
        yield f"{key + ':':<12}{value}"
    for r in report.rows:
        committed = f"committed {iso_ms(r.committed_at_epoch_ms)}" if r.committed else "uncommitted"
        at = r.intent_at_epoch_ms
        age = f"{age_text(at - now)} in the future" if in_future(at, now) else f"{age_text(now - at)} ago"
        yield f"  session {r.session_id}: intent {iso_ms(at)} ({age}), {committed}"


def _gone(state, query, audit_log: str | None, exc: NotFound) -> None:
    """An id with no blob and no row: what the audit log says of it (human
    lines on stdout, or the error document with its ``history``), then the
    same exit 3 as before."""
    from lashctl import audit

    audit_log = audit_log or None  # (an empty LASHCTL_AUDIT_LOG: the store's own)
    path = audit.read_location(audit_log, state.store_root)
    # This store's lines only: a log several stores share holds others' deletions of the same id.
    lines = (
        list(
            audit.read(path, warn=state.ui.warn, wanted=query.hex, named=audit_log is not None, store=state.store_root)
        )
        if path is not None
        else []
    )
    ids = sorted({line["id"] for line in lines if isinstance(line.get("id"), str) and line["id"].startswith(query.hex)})
    attachment_id = query.hex if query.is_full else (ids[0] if len(ids) == 1 else None)
    history = audit.history(lines, attachment_id) if attachment_id is not None else []
    message = exc.message
    outcomes = [line for line in history if line.get("action") in audit.OUTCOMES]
    if outcomes:
        last = outcomes[-1]
        message += (
            f"; the audit log says: {last.get('action')} at {last.get('time')} by "
            f"`{' '.join(['lashctl', *(last.get('args') or [])])}` ({last.get('reason')})"
        )
    elif history:
        message += (
            f"; the audit log has a {history[-1].get('action')} line at {history[-1].get('time')} "
            "with no outcome after it: look at the store"
        )
    if state.ui.json:
        state.ui.emit_json(
            {
                "error": message,
                "exit_code": exc.exit_code,
                **state.run_fields(),
                "id": attachment_id,
                "history": history,
            }
        )
    elif history:
        state.ui.line(f"{'id:':<12}{attachment_id}")
        # Each item's outcome; a line written before a change only where no outcome followed.
        open_ = audit.unfinished(history)
        shown = [line for n, line in enumerate(history) if line.get("action") in audit.OUTCOMES or n in open_]
        for n, line in enumerate(shown):
            state.ui.line(
                f"{'history:' if n == 0 else '':<12}{audit.describe(line)}"
                + (" (no outcome recorded: look at the store)" if line.get("action") in audit.BEFORE else "")
            )
    raise NotFound(message)
