"""The commands that delete: ``delete``, ``reclaim`` and ``gc``.

Each holds the manifest's sweep lock (a dry run reads a snapshot without it),
derives every object name from a validated id, works in id order, and
records a failed delete as a failed item rather than stopping: the report
says what was done and the command exits 5 if anything failed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from lashctl.core import (
    Store,
    aged_rows,
    by_id,
    forget_intents,
    live_reason,
    precheck_prefixes,
    resolve_ids,
)
from lashctl import faults
from lashctl.backends.base import BlobStat
from lashctl.errors import LashctlError, Refused, StoreIOError
from lashctl.fold import INTENT, Event, Row
from lashctl.ids import IdQuery
from lashctl.record import Record
from lashctl.strays import remove_stray, scan_strays

Progress = Callable[[int], None]
SWEEP_BATCH = 1000  # ids a sweep stats, re-checks and deletes together

# Item actions.
RECLAIM, RELEASE, FAILED = "reclaim", "release", "failed"
DELETE = "delete"
SPARED = "spared"  # its bytes were written after the cutoff, whatever its rows say
LEFT_FOR_GC = " (its rows were forgotten first: gc removes the bytes later)"
SPARED_REASON = "spared: its bytes were written after the cutoff (a writer's clock may be behind)"
DELETED_WHILE_REFERENCED = "deleted_while_referenced"  # a row appeared during the delete


@dataclass
class Deletion:
    """What deleting one blob did: bytes freed, or why it failed."""

    byte_len: int = 0
    error: str | None = None


def delete_blob(store: Store, attachment_id: str, *, dry_run: bool) -> Deletion:
    """The one way a sweep deletes a blob: a dry run reports the failure a
    real run would meet; a failure is recorded, never raised."""
    problem = store.blobs.delete_problem(attachment_id)
    if problem is not None:
        return Deletion(error=problem)
    if dry_run:
        return Deletion()
    try:
        return Deletion(byte_len=store.blobs.delete(attachment_id))
    except LashctlError as exc:
        return Deletion(error=exc.message)


# -- delete --------------------------------------------------------------------
@dataclass
class DeleteResult:
    attachment_id: str
    existed: bool
    byte_len: int
    sessions: list[str]
    dry_run: bool
    error: str | None = None  # a live row appeared while its bytes were deleted (shared manifests)


def delete(store: Store, queries: list[IdQuery], *, force: bool = False, dry_run: bool = False) -> list[DeleteResult]:
    """Content-addressed delete of blobs and sidecars, refused while rows reference them.

    Refuses (Refused, exit 4, nothing deleted) if any id is referenced by a
    manifest row, naming the sessions, unless ``force``. Absent blobs succeed.
    With ``force``, the uncommitted intents of the ids are forgotten before
    their bytes go (a later ``commit`` finds no intent and the client uploads
    again); committed rows stay, and ``show`` reports their bytes missing.
    On a manifest that does not stop writers, the rows are read again after
    the delete: an id that gained a live row meanwhile carries an ``error``.
    """
    if not dry_run:
        precheck_prefixes(store, queries)
    with store.exclusive(dry_run=dry_run) as view:
        store.blobs.check_layout()
        ids = list(dict.fromkeys(resolve_ids(store, queries, view)))
        view.check_ids()  # a table may hold rows its id queries cannot see
        rows = view.confirm(ids)
        referenced = {i: sorted({r.session_id for r in rows[i]}) for i in ids}
        if not force:
            blocked = [(i, s) for i, s in referenced.items() if s]
            if blocked:
                detail = "; ".join(f"{i} by session(s) {', '.join(s)}" for i, s in blocked)
                raise Refused(
                    f"refusing to delete content that manifest rows reference: {detail} "
                    "(it would vanish for every session; use --force to delete anyway)"
                )
        # Every id is looked at before any is deleted: an unsafe shard or a
        # directory at a blob's path stops the command with nothing deleted.
        stats = {i: store.blobs.stat(i) for i in ids}
        for attachment_id in ids:
            problem = store.blobs.delete_problem(attachment_id)
            if problem is not None:
                raise StoreIOError(problem)
        results = [DeleteResult(i, stats[i] is not None, stats[i].size if _is_file(stats[i]) else 0,
                                referenced[i], dry_run) for i in ids]
        if not dry_run:
            _delete_in_order(store, view, results, rows)
    return results


def _is_file(st: BlobStat | None) -> bool:
    return st is not None and st.is_file


def _delete_in_order(store: Store, view, results: list[DeleteResult], rows: dict[str, list[Row]]) -> None:
    """Forget the ids' uncommitted intents (guarded: only the intent as read),
    then delete the bytes, then (shared manifests) look for rows that came."""
    forget_intents(view, [r for res in results for r in rows[res.attachment_id]])
    faults.point("delete.forgotten")
    for res in results:
        store.blobs.delete(res.attachment_id)
    store.blobs.sync([res.attachment_id for res in results])
    faults.point("delete.deleted")
    if store.manifest.blocks_writers:
        return
    after = view.rows_for_ids([res.attachment_id for res in results])
    for res in results:
        before = {(r.session_id, r.intent_at_epoch_ms) for r in rows[res.attachment_id]}
        if any((r.session_id, r.intent_at_epoch_ms) not in before for r in after[res.attachment_id]):
            res.error = "a row for it appeared while it was being deleted: re-upload it"


# -- forget --------------------------------------------------------------------
@dataclass
class ForgetItem:
    """One row ``forget`` removed (or, in a dry run, would remove)."""

    attachment_id: str
    session_id: str
    state: str  # committed | uncommitted
    dry_run: bool


def forget(store: Store, session: str, queries: list[IdQuery], *, dry_run: bool = False
           ) -> tuple[list[ForgetItem], list[str]]:
    """Remove one session's rows: every row of it, or those of the given ids.

    Never touches bytes: a blob no row references any more is for ``reclaim``
    (its other sessions' aged intents) or ``gc`` to judge. Returns the rows
    forgotten, in id order, and the ids asked for that the session has no
    row for. Held under the sweep lock, appended in batches.
    """
    if not dry_run:
        precheck_prefixes(store, queries)
    with store.exclusive(dry_run=dry_run) as view:
        if queries:
            ids = list(dict.fromkeys(resolve_ids(store, queries, view)))
            found = view.confirm(ids)
            rows = [r for i in ids for r in found[i] if r.session_id == session]
            missing = [i for i in ids if not any(r.session_id == session for r in found[i])]
        else:
            rows = [r for group in view.rows_by_id() for r in group if r.session_id == session]
            missing = []
        rows.sort(key=lambda r: r.attachment_id)
        items = [ForgetItem(r.attachment_id, session, "committed" if r.committed else "uncommitted", dry_run)
                 for r in rows]
        if not dry_run:
            for start in range(0, len(rows), 10 * SWEEP_BATCH):
                view.append([Event.forget(r.attachment_id, session) for r in rows[start:start + 10 * SWEEP_BATCH]])
    return items, missing


# -- reclaim -------------------------------------------------------------------
ORPHAN, ORPHAN_GONE = "orphan: no live row", "orphan: no live row; bytes already gone"  # one string each, shared


class ReclaimItem(Record):
    """One blob of a sweep. ``action``: reclaim | release | failed | spared |
    deleted_while_referenced; ``sessions``: those whose aged rows this item
    forgets; ``byte_len``: the blob's size (0 when absent), freed only when
    the action is reclaim; ``first_intent_ms``: its oldest aged intent, the
    report's order. Slotted: a sweep of 100,000 orphans keeps one each."""

    __slots__ = ("attachment_id", "action", "sessions", "byte_len", "bytes_present", "reason", "error",
                 "first_intent_ms")

    def __init__(self, attachment_id: str, action: str, sessions: list[str], byte_len: int, bytes_present: bool,
                 reason: str, error: str | None = None, first_intent_ms: int = 0) -> None:
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


Plan = list[tuple[str, list[Row], str | None]]


def plan_reclaim(view, cutoff: int) -> tuple[int, Plan]:
    """Which blobs a sweep at ``cutoff`` reclaims or releases.

    Returns the number of aged rows (uncommitted, intent at or before the
    cutoff) and, per blob id with aged rows, ``(id, aged rows, live reason)``
    in id order: a live reason means release.
    """
    candidates = [rows[0].attachment_id for rows in view.aged(cutoff)]
    scanned, plan = 0, []
    for attachment_id, rows in sorted(view.confirm(candidates).items()):
        aged = aged_rows(rows, cutoff)
        scanned += len(aged)
        # An intent whose lash owner is not proven dead is neither swept nor forgotten.
        aged = [r for r in aged if view.keep_reason(r) is None]
        if aged:
            plan.append((attachment_id, aged, live_reason(rows, cutoff, view)))
    return scanned, plan


def reclaim(store: Store, cutoff: int, *, dry_run: bool = False, progress: Progress | None = None,
            planned: Callable[[int], None] | None = None) -> ReclaimReport:
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
        shared = not store.manifest.blocks_writers
        report = ReclaimReport(cutoff_epoch_ms=cutoff, dry_run=dry_run, scanned_intents=scanned,
                               kept_for_owners=scanned - sum(len(aged) for _id, aged, _live in plan))
        touched: list[str] = []
        for start in range(0, len(plan), SWEEP_BATCH):
            chunk = plan[start:start + SWEEP_BATCH]
            plan[start:start + SWEEP_BATCH] = [None] * len(chunk)  # type: ignore[list-item]  # its rows are freed
            items, stats = _plan_batch(store, view, chunk, cutoff, shared=shared)
            if not dry_run:
                aged = {attachment_id: rows for attachment_id, rows, _live in chunk}
                touched.extend(_sweep_batch(store, view, items, stats, aged, cutoff, shared=shared))
            report.items.extend(items)
            if progress is not None:
                for _item in items:
                    progress(1)
        report.items.sort(key=lambda i: (i.first_intent_ms, i.attachment_id))
        if not dry_run:
            store.blobs.sync(touched)
    return report


def _plan_batch(store: Store, view, chunk: Plan, cutoff: int, *,
                shared: bool) -> tuple[list[ReclaimItem], dict[str, BlobStat | None]]:
    """What a batch of the plan will do, read-only (a dry run stops here and
    so reports what the real run does): one stat each (concurrent on an
    object store), and on a shared manifest one query of the batch's rows."""
    stats = store.blobs.stat_many([attachment_id for attachment_id, _aged, _live in chunk])
    items, orphans = [], []
    for attachment_id, aged, live in chunk:
        st = stats[attachment_id]
        present = st is not None and st.is_file
        sessions = [r.session_id for r in aged]
        first = min(r.intent_at_epoch_ms for r in aged)
        item = ReclaimItem(attachment_id, RECLAIM, sessions, st.size if present else 0, present,
                           ORPHAN if present else ORPHAN_GONE, first_intent_ms=first)
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
            problem = store.blobs.delete_problem(item.attachment_id)
            if problem is not None:  # the dry run says what the real run will meet
                item.action, item.error = FAILED, problem
    return items, stats


def _sweep_batch(store: Store, view, items: list[ReclaimItem], stats: dict[str, BlobStat | None],
                 aged: dict[str, list[Row]], cutoff: int, *, shared: bool) -> list[str]:
    """Carry out a planned batch: forget, re-check, delete, re-check. The ids deleted."""
    # 1. The rows' fate first, durably: a commit that comes later finds no
    #    intent (exit 3, upload again) rather than stamping a row for bytes
    #    about to go. Guarded by the cutoff: a row committed or refreshed
    #    since it was read stays.
    view.append([Event.forget(i.attachment_id, s, until_ms=cutoff)
                 for i in items if i.action in (RECLAIM, RELEASE) for s in i.sessions])
    faults.point("reclaim.forgotten")
    doomed = [i for i in items if i.action == RECLAIM]
    if shared and doomed:
        # 2. Every row a doomed blob had was forgotten: any row there now (one
        #    the guard kept, or a writer's new intent, whatever its time says:
        #    the writer's clock may be behind) keeps the bytes.
        after_forget = view.rows_for_ids([i.attachment_id for i in doomed])
        for item in doomed:
            if after_forget[item.attachment_id]:
                reason = live_reason(after_forget[item.attachment_id], cutoff, view) or _CAME_BACK
                item.action, item.reason = RELEASE, f"kept: {reason}"
        doomed = [i for i in doomed if i.action == RECLAIM]
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
    faults.point("reclaim.deleted")
    if shared and deleted:
        _report_late_rows(store, view, deleted, cutoff)  # 4.
    return [i.attachment_id for i in deleted]


def _restore_failed(store: Store, view, failed: list[ReclaimItem], aged: dict[str, list[Row]],
                    shielded: bool = False) -> set[str]:
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
    view.append([Event(INTENT, r.attachment_id, r.session_id, r.intent_at_epoch_ms, r.canonical_uri)
                 for i in back for r in aged[i.attachment_id]])
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
    except Exception:  # noqa: BLE001
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
            item.error = ("a live row for it appeared while it was being deleted; its bytes were put "
                          "again since, but its sidecar may be gone: put it again")
        else:
            item.error = "a live row for it appeared while it was being deleted: re-upload it"


# -- gc ------------------------------------------------------------------------
@dataclass
class GcItem:
    path: str
    attachment_id: str | None
    kind: str  # blob | staging | orphan-sidecar
    byte_len: int
    action: str  # delete | failed | deleted_while_referenced
    reason: str
    error: str | None = None


@dataclass
class GcReport:
    cutoff_epoch_ms: int
    dry_run: bool
    blobs_scanned: int = 0
    items: list[GcItem] = field(default_factory=list)

    @property
    def bytes_freed(self) -> int:
        return sum(i.byte_len for i in self.items if i.action == DELETE)

    @property
    def failures(self) -> list[GcItem]:
        return [i for i in self.items if i.action in (FAILED, DELETED_WHILE_REFERENCED)]


def gc(store: Store, cutoff: int, *, dry_run: bool = False, progress: Progress | None = None,
       force: bool = False) -> GcReport:
    """Mark and sweep: delete unreferenced blobs and staging litter older than ``cutoff``.

    Assumes every writer of this store records intents in this manifest: a
    blob another writer placed without an intent here looks unreferenced.
    ``force`` sweeps even when the manifest holds no rows (or none for any
    blob present), which otherwise looks like the wrong manifest. The blob
    listing and the rows are merged in id order: memory stays flat.
    """
    store.manifest.check_writable()  # a FIFO or /dev/null is refused before anything else
    with store.exclusive(dry_run=dry_run) as view:
        _check_gc_manifest(store, view, force=force)
        report = GcReport(cutoff_epoch_ms=cutoff, dry_run=dry_run)
        candidates = _unreferenced(store, view, cutoff, report, progress)
        touched = _gc_blobs(store, view, candidates, cutoff, report, dry_run=dry_run)
        _gc_litter(store, view, cutoff, report, dry_run=dry_run)
        if not dry_run:
            store.blobs.sync(touched)
    return report


def _check_gc_manifest(store: Store, view, *, force: bool) -> None:
    """Refuse a manifest that would make every blob look unreferenced."""
    if next(store.blobs.iter_ids(), None) is None:
        return
    name = store.manifest.name
    if not store.manifest.exists():
        # A mistyped --manifest would make every blob look unreferenced.
        raise Refused(
            f"refusing gc: manifest {name} does not exist, so every blob would look "
            "unreferenced (check --manifest; create an empty manifest to really sweep them all)"
        )
    if not force and not any(present and rows for _i, present, rows in by_id(store, view)):
        # An empty, truncated or foreign manifest: every blob would look unreferenced.
        what = "holds no rows" if not view.row_count() else "references none of the blobs present"
        raise Refused(
            f"refusing gc: manifest {name} {what}, so every blob would look unreferenced "
            "(check --manifest; use --force to sweep them all)"
        )


def _unreferenced(store: Store, view, cutoff: int, report: GcReport,
                  progress: Progress | None) -> dict[str, BlobStat]:
    """Blobs with no row and last written at or before the cutoff, confirmed
    against the manifest's source of truth."""
    candidates: dict[str, BlobStat] = {}
    for attachment_id, present, rows in by_id(store, view):
        if not present:
            continue
        report.blobs_scanned += 1
        if progress is not None:
            progress(1)
        if rows:
            continue
        st = store.blobs.stat(attachment_id)
        if st is not None and st.is_file and st.mtime_ms <= cutoff:
            candidates[attachment_id] = st
    confirmed = view.confirm(candidates)
    # The log references these: never deleted on a cache's word.
    return {i: st for i, st in candidates.items() if not confirmed[i]}


def _gc_blobs(store: Store, view, candidates: dict[str, BlobStat], cutoff: int, report: GcReport, *,
              dry_run: bool) -> list[str]:
    """Delete the unreferenced blobs; the ids whose shard changed."""
    shared = not store.manifest.blocks_writers
    touched = []
    for attachment_id, st in candidates.items():
        if shared and not dry_run:
            # Writers go on during a sweep of a shared manifest: look again just before.
            again = store.blobs.stat(attachment_id)
            if view.rows_for_id(attachment_id) or again is None or again.mtime_ms > cutoff:
                continue
        item = GcItem(store.blobs.where(attachment_id), attachment_id, "blob", st.size,
                      DELETE, "unreferenced: no manifest row")
        done = delete_blob(store, attachment_id, dry_run=dry_run)
        if done.error is not None:
            item.action, item.error = FAILED, done.error
        elif not dry_run:
            item.byte_len = done.byte_len
            touched.append(attachment_id)
            if shared and view.rows_for_id(attachment_id):
                item.action = DELETED_WHILE_REFERENCED
                item.error = "a row for it appeared while it was being deleted: re-upload it"
        report.items.append(item)
    return touched


def _gc_litter(store: Store, view, cutoff: int, report: GcReport, *, dry_run: bool) -> None:
    """Delete staging litter and sidecars without a blob older than the cutoff."""
    for stray in scan_strays(store):
        if stray.kind not in ("staging", "orphan-sidecar") or stray.mtime_ms > cutoff:
            continue
        if stray.kind == "orphan-sidecar" and view.rows_for_id(stray.attachment_id):
            continue  # the last metadata of a row whose bytes are missing: keep it for the operator
        item = GcItem(stray.path, None, stray.kind, stray.byte_len, DELETE, stray.reason)
        if not dry_run:
            try:
                remove_stray(store, stray)
            except LashctlError as exc:
                item.action, item.error = FAILED, exc.message
            except OSError as exc:
                item.action, item.error = FAILED, f"cannot delete: {exc.strerror}"
        report.items.append(item)
