"""``lashctl list-uncommitted``: intents that no session has committed."""

from typing import Annotated, Optional

import typer

from lashctl.commands import BeforeOption, JsonFlag, OlderThanOption, app_state, end_inspection
from lashctl.render import Col, Field, cells, item
from lashctl.timefmt import FUTURE_SKEW, age_text, cutoff_ms, in_future, iso_ms, now_ms

EPILOG = """Examples:

    lashctl list-uncommitted --older-than 24h
    lashctl --json list-uncommitted -s s-42

Exit codes: 0 listed (also when there is nothing to list); 2 usage error (bad DURATION or TIMESTAMP); 65 corrupt manifest."""


def uncommitted_row(now: int, terminal: bool = False) -> tuple[Field, ...]:
    """One uncommitted row (a transfer.UncommittedRow), with its age at
    ``now``; a ``terminal`` table marks an intent time in the future."""
    age = (lambda r: _age_shown(now, r.row.intent_at_epoch_ms)) if terminal else \
        (lambda r: age_text(now - r.row.intent_at_epoch_ms))
    return (
        Field("id", lambda r: r.row.attachment_id, Col("id", "id")),
        Field("session_id", lambda r: r.row.session_id, Col("session")),
        Field("canonical_uri", lambda r: r.row.canonical_uri),
        Field("intent_at_epoch_ms", lambda r: r.row.intent_at_epoch_ms),
        Field("intent_at", lambda r: iso_ms(r.row.intent_at_epoch_ms), Col("intent at", "fixed", drop=7)),
        Field("age_ms", lambda r: now - r.row.intent_at_epoch_ms, Col("age", "fixed", drop=2), cell=age),
        Field("byte_len", lambda r: r.byte_len, Col("size", "bytes", drop=4)),
        Field("media_type", lambda r: r.media_type, Col("media type", drop=6, min_width=10)),
        Field("label", lambda r: r.label, Col("label", drop=5)),
        Field("bytes_present", lambda r: r.bytes_present, Col("bytes", "fixed", drop=3),
              cell=lambda r: "present" if r.bytes_present else "missing"),
    )


def list_uncommitted(
    ctx: typer.Context,
    older_than: OlderThanOption = None,
    before: BeforeOption = None,
    session: Annotated[Optional[str], typer.Option("--session", "-s", metavar="SESSION", help="Only this session's rows.")] = None,
    json_flag: JsonFlag = False,
) -> None:
    """List uncommitted rows, oldest first (all of them unless a cutoff is given).

    With --older-than or --before, only rows whose intent is at or before the
    cutoff: the candidates of a reclaim sweep with that cutoff.
    """
    from lashctl import transfer
    from lashctl.core import session_filter

    state = app_state(ctx, json_flag)
    session = session_filter(session)
    now = now_ms()
    cutoff = cutoff_ms(older_than, before, now)
    store = state.store()
    malformed: list = []  # lines a damaged manifest holds, shown after the listing
    future = _FutureCount(now)
    if not state.ui.stdout_is_terminal():
        # On a pipe the rows without bytes (most of a big listing) come from the
        # manifest's index through one template; the others (an intent time
        # in the future among them) are rendered here.
        fields = uncommitted_row(now)
        count = state.ui.emit_rendered(
            transfer.iter_uncommitted_rendered(store, cutoff, session, malformed, now,
                                               "json" if state.ui.json else "tsv"),
            (lambda r: item(fields, future(r))) if state.ui.json else (lambda r: cells(fields, future(r))),
        )
    else:
        rows = transfer.iter_uncommitted(store, cutoff, session, malformed)
        count = state.ui.listing(uncommitted_row(now, terminal=True), (future(r) for r in rows))
    suffix = f" with intent at or before {iso_ms(cutoff)}" if cutoff is not None else ""
    state.ui.info(f"{count} uncommitted row(s){suffix}" if count else f"no uncommitted rows{suffix}")
    if future.count:
        state.ui.warn(f"{future.count} uncommitted row(s) have an intent time more than {FUTURE_SKEW} in the "
                      "future (a clock ahead?): no sweep reclaims them before that time")
    if malformed:
        end_inspection(state, store, malformed)


def _age_shown(now: int, intent_at: int) -> str:
    """The age a person reads: an intent time in the future says so."""
    if in_future(intent_at, now):
        return f"in {age_text(intent_at - now)} (future)"
    return age_text(now - intent_at)


class _FutureCount:
    """Passes rows through, counting those whose intent time is in the future."""

    def __init__(self, now: int) -> None:
        self.now, self.count = now, 0

    def __call__(self, r):
        if in_future(r.row.intent_at_epoch_ms, self.now):
            self.count += 1
        return r


COLUMNS = [Col("id", "id"), Col("session"), Col("intent at", "fixed", drop=7), Col("age", "fixed", drop=2),
           Col("size", "bytes", drop=4), Col("media type", drop=6, min_width=10), Col("label", drop=5),
           Col("bytes", "fixed", drop=3)]


def _json_item(r, now: int) -> dict:
    return {
        "id": r.row.attachment_id,
        "session_id": r.row.session_id,
        "canonical_uri": r.row.canonical_uri,
        "intent_at_epoch_ms": r.row.intent_at_epoch_ms,
        "intent_at": iso_ms(r.row.intent_at_epoch_ms),
        "age_ms": now - r.row.intent_at_epoch_ms,
        "byte_len": r.byte_len,
        "media_type": r.media_type,
        "label": r.label,
        "bytes_present": r.bytes_present,
    }


def _tsv_cells(r, now: int) -> list:
    return [
        r.row.attachment_id,
        r.row.session_id,
        iso_ms(r.row.intent_at_epoch_ms),
        age_text(now - r.row.intent_at_epoch_ms),
        r.byte_len,
        r.media_type,
        r.label,
        "present" if r.bytes_present else "missing",
    ]
