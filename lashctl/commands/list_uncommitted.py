"""``lashctl list-uncommitted``: intents that no session has committed."""

from typing import Annotated, Optional

import typer

from lashctl.commands import BeforeOption, JsonFlag, OlderThanOption, app_state, end_inspection
from lashctl.listing import uncommitted_row
from lashctl.render import cells, item
from lashctl.timefmt import FUTURE_SKEW, cutoff_ms, in_future, iso_ms, now_ms

EPILOG = """Examples:

    lashctl list-uncommitted --older-than 24h
    lashctl --json list-uncommitted -s s-42

Exit codes: 0 listed (also when there is nothing to list); 2 usage error (bad DURATION or TIMESTAMP); 65 corrupt manifest."""


def list_uncommitted(
    ctx: typer.Context,
    older_than: OlderThanOption = None,
    before: BeforeOption = None,
    session: Annotated[
        Optional[str], typer.Option("--session", "-s", metavar="SESSION", help="Only this session's rows.")
    ] = None,
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
            transfer.iter_uncommitted_rendered(
                store, cutoff, session, malformed, now, "json" if state.ui.json else "tsv"
            ),
            (lambda r: item(fields, future(r))) if state.ui.json else (lambda r: cells(fields, future(r))),
        )
    else:
        rows = transfer.iter_uncommitted(store, cutoff, session, malformed)
        count = state.ui.listing(uncommitted_row(now, terminal=True), (future(r) for r in rows))
    suffix = f" with intent at or before {iso_ms(cutoff)}" if cutoff is not None else ""
    state.ui.info(f"{count} uncommitted row(s){suffix}" if count else f"no uncommitted rows{suffix}")
    if future.count:
        state.ui.warn(
            f"{future.count} uncommitted row(s) have an intent time more than {FUTURE_SKEW} in the "
            "future (a clock ahead?): no sweep reclaims them before that time"
        )
    if malformed:
        end_inspection(state, store, malformed)


class _FutureCount:
    """Passes rows through, counting those whose intent time is in the future."""

    def __init__(self, now: int) -> None:
        self.now, self.count = now, 0

    def __call__(self, r):
        if in_future(r.row.intent_at_epoch_ms, self.now):
            self.count += 1
        return r
