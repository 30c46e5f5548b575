"""The sweeps' rules: which rows a sweep forgets, what keeps a blob's bytes,
and the plan of a reclaim. One place for them; ``inspect`` (``show``,
``stats``) judges with the same rules, so that what it says a sweep would
do is what the sweep does. The owner rules of lash's databases are the
manifest backend's (``ManifestView.keep_reason``).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

from lashctl.fold import Event, Row

Progress = Callable[[int], None]
SWEEP_BATCH = 1000  # ids a sweep stats, re-checks and deletes together

# Item actions.
RECLAIM, RELEASE, FAILED = "reclaim", "release", "failed"
DELETE = "delete"
SPARED = "spared"  # its bytes were written after the cutoff, whatever its rows say
LEFT_FOR_GC = " (its rows were forgotten first: gc removes the bytes later)"
SPARED_REASON = "spared: its bytes were written after the cutoff (a writer's clock may be behind)"
DELETED_WHILE_REFERENCED = "deleted_while_referenced"  # a row appeared during the delete


def aged_rows(rows: list[Row], cutoff: int) -> list[Row]:
    """The rows a sweep at ``cutoff`` forgets: uncommitted, intent at or before it (by session)."""
    aged = [r for r in rows if r.committed_at_epoch_ms is None and r.intent_at_epoch_ms <= cutoff]
    aged.sort(key=lambda r: r.session_id)
    return aged


def forget_intents(view, rows) -> None:
    """Forget the uncommitted intents among ``rows``, each guarded by its own
    intent time (only the intent as read goes: one refreshed or committed
    since stays). Before bytes go, so that a later commit finds no intent."""
    view.append(
        [Event.forget(r.attachment_id, r.session_id, until_ms=r.intent_at_epoch_ms) for r in rows if not r.committed]
    )


def live_reason(rows: list[Row], cutoff: int, view) -> str | None:
    """Why an id's bytes must stay although some of its rows aged, or None."""
    live = None
    for row in rows:
        if row.committed:
            return f"session {row.session_id} committed it"
        if row.intent_at_epoch_ms > cutoff:
            live = f"session {row.session_id} has a recent intent"
        elif live is None:
            live = view.keep_reason(row)
    return live


class Candidate(NamedTuple):
    """One blob a sweep plans for: its aged rows (those the sweep forgets)
    and, when some other row keeps its bytes, why (``live``: release)."""

    attachment_id: str
    aged: list[Row]
    live: str | None


Plan = list[Candidate]


def plan_reclaim(view, cutoff: int) -> tuple[int, Plan]:
    """Which blobs a sweep at ``cutoff`` reclaims or releases.

    Returns the number of aged rows (uncommitted, intent at or before the
    cutoff) and, per blob id with aged rows, a ``Candidate`` in id order:
    a live reason means release.
    """
    confirmed = view.confirm([rows[0].attachment_id for rows in view.aged(cutoff)])
    scanned, plan = 0, []
    for attachment_id in sorted(confirmed):
        rows = confirmed.pop(attachment_id)  # a big sweep's plan takes the place of the rows read
        aged = aged_rows(rows, cutoff)
        scanned += len(aged)
        # An intent whose lash owner is not proven dead is neither swept nor forgotten.
        aged = [r for r in aged if view.keep_reason(r) is None]
        if aged:
            plan.append(Candidate(attachment_id, aged, live_reason(rows, cutoff, view)))
    return scanned, plan
