"""``reclaim``: forget aged intents nobody committed, then delete the bytes
no live row needs, a batch at a time (docs/guarantees.md, "The steps of
each destructive command")."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from lashctl import faults
from lashctl.backends.base import BlobStat
from lashctl.core import Store
from lashctl.fold import INTENT, Event, Row
from lashctl.record import Record
from lashctl.sweep.rules import (
    DELETED_WHILE_REFERENCED,
    FAILED,
    LEFT_FOR_GC,
    RECLAIM,
    RELEASE,
    SPARED,
    SPARED_REASON,
    SWEEP_BATCH,
    Plan,
    Progress,
    forget_intents,
    live_reason,
    plan_reclaim,
)

from lashctl.sweep.delete import _is_file


# -- reclaim -------------------------------------------------------------------
ORPHAN, ORPHAN_GONE = "orphan: no live row", "orphan: no live row; bytes already gone"  # one string each, shared


class ReclaimItem(Record):
    """One blob of a sweep. ``action``: reclaim | release | failed | spared |
    deleted_while_referenced; ``sessions``: those whose aged rows this item
    forgets; ``byte_len``: the blob's size (0 when absent), freed only when
    the action is reclaim; ``first_intent_ms``: its oldest aged intent, the
    report's order. Slotted: a sweep of 100,000 orphans keeps one each."""

    __slots__ = (
        "attachment_id",
        "action",
        "sessions",
        "byte_len",
        "bytes_present",
        "reason",
        "error",
        "first_intent_ms",
    )

    def __init__(
        self,
        attachment_id: str,
        action: str,
        sessions: list[str],
        byte_len: int,
        bytes_present: bool,
        reason: str,
        error: str | None = None,
        first_intent_ms: int = 0,
    ) -> None:
        self.attachment_id = attachment_id
        self.action = action
        self.sessions = sessions
        self.byte_len = byte_len
        self.bytes_present = bytes_present
        self.reason = reason
        self.error = error
        self.first_intent_ms = first_intent_ms


@dataclass
class ReclaimReport:
    cutoff_epoch_ms: int
    dry_run: bool
    scanned_intents: int = 0
    items: list[ReclaimItem] = field(default_factory=list)
    kept_for_owners: int = 0  # aged intents of lash owners not proven dead: neither swept nor forgotten

    @property
    def blobs_reclaimed(self) -> int:
        return sum(1 for i in self.items if i.action == RECLAIM)

    @property
    def bytes_freed(self) -> int:
        return sum(i.byte_len for i in self.items if i.action in (RECLAIM, DELETED_WHILE_REFERENCED))

    @property
    def rows_released(self) -> int:
        return sum(len(i.sessions) for i in self.items if i.action == RELEASE)

    @property
    def failures(self) -> list[ReclaimItem]:
        return [i for i in self.items if i.action in (FAILED, DELETED_WHILE_REFERENCED)]


def reclaim(
    store: Store,
    cutoff: int,
    *,
    dry_run: bool = False,
    progress: Progress | None = None,
    planned: Callable[[int], None] | None = None,
) -> ReclaimReport:
    """Sweep orphans: forget the aged rows, then delete bytes no live row needs.

    Candidates come from the manifest's uncommitted rows (indexed), grouped by
    id in id order: the cost grows with the orphans, not with the store. A dry
    run takes no lock and reports exactly the items a real run on the same
    state acts on. ``planned`` is told how many blobs the sweep will handle
    (``progress`` is then called once per blob). The report lists the items
    oldest aged intent first.

    Each batch makes its rows' fate durable before any of its bytes go (a
    guarded forget: only an intent still uncommitted and aged is removed),
    so a sweep that dies anywhere leaves at worst bytes without rows, which
    ``gc`` removes; never a row whose bytes are gone. Bytes written after
    the cutoff are spared whatever the rows' times say (a writer's clock may
    be behind). When the manifest does not stop writers during a sweep
    (PostgreSQL), the rows are read again after the forget (a live row
    spares the bytes) and after the delete (a row that appeared meanwhile is
    reported as ``deleted_while_referenced``, exit 5).
    """
    with store.exclusive(dry_run=dry_run) as view:
        store.blobs.check_layout()
        scanned, plan = plan_reclaim(view, cutoff)
        if planned is not None:
            planned(len(plan))
        report = ReclaimReport(
            cutoff_epoch_ms=cutoff,
            dry_run=dry_run,
            scanned_intents=scanned,
            kept_for_owners=scanned - sum(len(c.aged) for c in plan),
        )
        touched = _run_plan(store, view, plan, report, cutoff, progress)
        report.items.sort(key=lambda i: (i.first_intent_ms, i.attachment_id))
        if not dry_run:
            store.blobs.sync(touched)
    return report


def _run_plan(
    store: Store, view, plan: Plan, report: "ReclaimReport", cutoff: int, progress: Progress | None
) -> list[str]:
    """Each batch planned (``_plan_batch``: all a dry run does), then carried
    out (``_sweep_batch``); the ids whose bytes were deleted."""
    shared = not store.manifest.blocks_writers
    touched: list[str] = []
    for start in range(0, len(plan), SWEEP_BATCH):
        chunk = plan[start : start + SWEEP_BATCH]
        plan[start : start + SWEEP_BATCH] = [None] * len(chunk)  # type: ignore[list-item]  # its rows are freed
        items, stats = _plan_batch(store, view, chunk, cutoff, shared=shared)
        if not report.dry_run:
            aged = {c.attachment_id: c.aged for c in chunk}
            touched.extend(_sweep_batch(store, view, items, stats, aged, cutoff, shared=shared))
        report.items.extend(items)
        if progress is not None:
            for _item in items:
                progress(1)
    return touched


def _plan_batch(
    store: Store, view, chunk: Plan, cutoff: int, *, shared: bool
) -> tuple[list[ReclaimItem], dict[str, BlobStat | None]]:
    """What a batch of the plan will do, read-only (a dry run stops here and
    so reports what the real run does): one stat each (concurrent on an
    object store), and on a shared manifest one query of the batch's rows."""
    stats = store.blobs.stat_many([c.attachment_id for c in chunk])
    items, orphans = [], []
    for attachment_id, aged, live in chunk:
        st = stats[attachment_id]
        present = st is not None and st.is_file
        sessions = [r.session_id for r in aged]
        first = min(r.intent_at_epoch_ms for r in aged)
        item = ReclaimItem(
            attachment_id,
            RECLAIM,
            sessions,
            st.size if present else 0,
            present,
            ORPHAN if present else ORPHAN_GONE,
            first_intent_ms=first,
        )
        if live is not None:
            item.action, item.reason = RELEASE, f"kept: {live}"
        else:
            orphans.append(item)
        items.append(item)
    again = view.rows_for_ids([i.attachment_id for i in orphans]) if shared and orphans else {}
    for item in orphans:
        st = stats[item.attachment_id]
        reason = live_reason(again[item.attachment_id], cutoff, view) if shared else None
        if reason is not None:  # a writer came back for it since the candidates were read
            item.action, item.reason = RELEASE, f"kept: {reason}"
        elif _is_file(st) and st.mtime_ms > cutoff:
            # Its rows say aged, its bytes say recent: the writer's clock may be behind.
            item.action, item.reason, item.sessions = SPARED, SPARED_REASON, []
        else:
            # A file at the blob path: its shard opened and it is no directory.
            problem = None if _is_file(st) else store.blobs.delete_problem(item.attachment_id)
            if problem is not None:  # the dry run says what the real run will meet
                item.action, item.error = FAILED, problem
    return items, stats


def _sweep_batch(
    store: Store,
    view,
    items: list[ReclaimItem],
    stats: dict[str, BlobStat | None],
    aged: dict[str, list[Row]],
    cutoff: int,
    *,
    shared: bool,
) -> list[str]:
    """Carry out a planned batch: forget, re-check, delete, re-check. The ids
    deleted whose shards are not yet durable (with an audit log each batch
    makes its own durable before saying so)."""
    # 1. The rows' fate first, durably: a commit that comes later finds no
    #    intent (exit 3, upload again) rather than stamping a row for bytes
    #    about to go. Guarded by the cutoff: a row committed or refreshed
    #    since it was read stays. The audit log says so first (docs/audit.md).
    log = store.audit
    if log is not None:
        log.write(
            [
                _audit(log, store, i, "deleting" if i.action == RECLAIM else "forgetting")
                for i in items
                if i.action in (RECLAIM, RELEASE)
            ]
        )
    view.append(
        [
            Event.forget(i.attachment_id, s, until_ms=cutoff)
            for i in items
            if i.action in (RECLAIM, RELEASE)
            for s in i.sessions
        ]
    )
    faults.point("reclaim.forgotten")
    doomed = (
        _still_doomed(view, [i for i in items if i.action == RECLAIM], cutoff)
        if shared
        else [i for i in items if i.action == RECLAIM]
    )
    if log is not None:  # rows gone, bytes kept
        log.write([_audit(log, store, i, "forgotten") for i in items if i.action == RELEASE])
    if not doomed:
        return []
    # 3. The bytes.
    try:
        results = store.blobs.delete_many([i.attachment_id for i in doomed], known=stats)
    except BaseException:
        # A server that failed, or a signal, during the delete: its rows come
        # back where the bytes are still there, and late intents go (step 4).
        there = _restore_failed(store, view, doomed, aged, shielded=True)
        if shared:
            _forget_late_intents(view, [i for i in doomed if i.attachment_id not in there], shielded=True)
        raise
    for item in doomed:
        outcome = results[item.attachment_id]
        if isinstance(outcome, str):
            item.action, item.error = FAILED, outcome
        else:
            item.byte_len = outcome
    _restore_failed(store, view, [i for i in doomed if i.action == FAILED], aged)
    deleted = [i for i in doomed if i.action == RECLAIM]
    if log is not None:
        store.blobs.sync([i.attachment_id for i in deleted])  # durable before the log says so
    faults.point("reclaim.deleted")
    if shared and deleted:
        _report_late_rows(store, view, deleted, cutoff)  # 4.
    if log is not None:
        log.write([_audit(log, store, i, "failed" if i.action == FAILED else "deleted") for i in doomed])
        return []
    return [i.attachment_id for i in deleted]


def _audit(log, store: Store, item: ReclaimItem, action: str) -> dict:
    """The audit line of a reclaim item: ``action`` it is about to undergo, or has."""
    reason = f"aged intent released ({item.reason})" if item.action == RELEASE else item.reason
    return log.item(
        action,
        item.attachment_id,
        path=store.blobs.where(item.attachment_id),
        byte_len=item.byte_len if action in ("deleting", "deleted") else None,
        sessions=item.sessions,
        reason=reason,
        error=item.error,
    )


def _still_doomed(view, doomed: list["ReclaimItem"], cutoff: int) -> list["ReclaimItem"]:
    """2. (a shared manifest) Every row a doomed blob had was forgotten: any
    row there now (one the guard kept, or a writer's new intent, whatever its
    time says: the writer's clock may be behind) keeps the bytes."""
    if not doomed:
        return doomed
    after_forget = view.rows_for_ids([i.attachment_id for i in doomed])
    for item in doomed:
        if after_forget[item.attachment_id]:
            reason = live_reason(after_forget[item.attachment_id], cutoff, view) or _CAME_BACK
            item.action, item.reason = RELEASE, f"kept: {reason}"
    return [i for i in doomed if i.action == RECLAIM]


def _restore_failed(
    store: Store, view, failed: list[ReclaimItem], aged: dict[str, list[Row]], shielded: bool = False
) -> set[str]:
    """A blob whose delete failed keeps its rows for the next sweep: its
    forgotten intents are recorded again, as they were, once a look shows
    the bytes still there. Bytes that may be gone stay without rows (gc
    removes what is left), so that no commit can stamp a row for them.
    ``shielded``: on the way out of a failure, which this never hides.
    Returns the ids whose bytes are there."""
    if not failed:
        return set()
    if shielded:
        try:
            return _restore_failed(store, view, failed, aged)
        except Exception:  # noqa: BLE001 - the server that failed the delete may fail this too
            return set()
    again = store.blobs.stat_many([i.attachment_id for i in failed])
    back = [i for i in failed if _is_file(again[i.attachment_id])]
    view.append(
        [
            Event(INTENT, r.attachment_id, r.session_id, r.intent_at_epoch_ms, r.canonical_uri)
            for i in back
            for r in aged[i.attachment_id]
        ]
    )
    for item in failed:
        if item not in back and item.error is not None:
            item.error = f"{item.error}{LEFT_FOR_GC}"
    return {i.attachment_id for i in back}


_CAME_BACK = "a writer recorded an intent for it again during the sweep"


def _forget_late_intents(view, items: list[ReclaimItem], shielded: bool = False) -> dict[str, list[Row]]:
    """Forget the uncommitted intents that appeared for bytes being deleted
    (guarded: only each intent as read), so that their writer's commit finds
    no intent and it uploads again. The rows read; ``shielded`` as above."""
    try:
        after = view.rows_for_ids([i.attachment_id for i in items])
        forget_intents(view, [r for i in items for r in after[i.attachment_id]])
    except Exception:
        if not shielded:
            raise
        return {}
    return after


def _report_late_rows(store: Store, view, deleted: list[ReclaimItem], cutoff: int) -> None:
    """A row that appeared while its bytes were deleted: ``deleted_while_referenced``.
    Its uncommitted intents are forgotten (its writer's commit then fails and
    it uploads again); a commit that landed already cannot be taken back."""
    after = _forget_late_intents(view, deleted)
    late = [i for i in deleted if after[i.attachment_id]]
    again = store.blobs.stat_many([i.attachment_id for i in late]) if late else {}
    for item in late:
        item.action = DELETED_WHILE_REFERENCED
        st = again[item.attachment_id]
        if st is not None and st.is_file:
            # A put wrote the bytes again after the delete: they are there,
            # but the sidecar it wrote before them may have gone with the delete.
            item.byte_len = 0
            item.error = (
                "a live row for it appeared while it was being deleted; its bytes were put "
                "again since, but its sidecar may be gone: put it again"
            )
        else:
            item.error = "a live row for it appeared while it was being deleted: re-upload it"
