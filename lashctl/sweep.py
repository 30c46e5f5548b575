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
    as_view,
    by_id,
    confirmed_rows,
    rows_for_ids,
    stat_many,
    live_reason,
    precheck_prefixes,
    resolve_ids,
)
from lashctl.backends.base import BlobStat
from lashctl.errors import LashctlError, Refused, StoreIOError
from lashctl.fold import Event, Row
from lashctl.ids import IdQuery
from lashctl.record import Record
from lashctl.strays import remove_stray, scan_strays

Progress = Callable[[int], None]
SWEEP_BATCH = 1000  # ids a sweep stats, re-checks and deletes together

# Item actions.
RECLAIM, RELEASE, FAILED = "reclaim", "release", "failed"
DELETE = "delete"
SPARED = "spared"  # a shared store's object turned out newer than the cutoff
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


def delete(store: Store, queries: list[IdQuery], *, force: bool = False, dry_run: bool = False) -> list[DeleteResult]:
    """Content-addressed delete of blobs and sidecars, refused while rows reference them.

    Refuses (Refused, exit 4, nothing deleted) if any id is referenced by a
    manifest row, naming the sessions, unless ``force``. Absent blobs succeed.
    """
    if not dry_run:
        precheck_prefixes(store, queries)
    with store.exclusive(dry_run=dry_run) as view:
        store.blobs.check_layout()
        ids = list(dict.fromkeys(resolve_ids(store, queries, view)))
        rows = confirmed_rows(view, ids)
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
        results = []
        for attachment_id in ids:
            st = stats[attachment_id]
            size = st.size if st is not None and st.is_file else 0
            if not dry_run:
                store.blobs.delete(attachment_id)
            results.append(DeleteResult(attachment_id, st is not None, size, referenced[attachment_id], dry_run))
        if not dry_run:
            store.blobs.sync(ids)
    return results


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
    view = as_view(view)
    candidates = [rows[0].attachment_id for rows in view.aged(cutoff)]
    scanned, plan = 0, []
    for attachment_id, rows in sorted(confirmed_rows(view, candidates).items()):
        aged = aged_rows(rows, cutoff)
        scanned += len(aged)
        # An intent whose lash owner is not proven dead is neither swept nor forgotten.
        aged = [r for r in aged if view.keep_reason(r) is None]
        if aged:
            plan.append((attachment_id, aged, live_reason(rows, cutoff, view)))
    return scanned, plan


def reclaim(store: Store, cutoff: int, *, dry_run: bool = False, progress: Progress | None = None,
            planned: Callable[[int], None] | None = None) -> ReclaimReport:
    """Sweep orphans: delete bytes no live row needs; forget the aged rows.

    Candidates come from the manifest's uncommitted rows (indexed), grouped by
    id in id order: the cost grows with the orphans, not with the store. A dry
    run takes no lock and reports exactly the items a real run on the same
    state acts on. ``planned`` is told how many blobs the sweep will handle
    (``progress`` is then called once per blob). The report lists the items
    oldest aged intent first.

    When the manifest does not stop writers during a sweep (PostgreSQL), each
    candidate is re-checked just before its delete (a live row, or an object
    newer than the cutoff, spares it) and after it (a row that appeared
    meanwhile is reported as ``deleted_while_referenced``, exit 5).
    """
    with store.exclusive(dry_run=dry_run) as view:
        store.blobs.check_layout()
        scanned, plan = plan_reclaim(view, cutoff)
        if planned is not None:
            planned(len(plan))
        shared = not getattr(store.manifest, "blocks_writers", True)
        report = ReclaimReport(cutoff_epoch_ms=cutoff, dry_run=dry_run, scanned_intents=scanned,
                               kept_for_owners=scanned - sum(len(aged) for _id, aged, _live in plan))
        forgets: list[Event] = []
        touched: list[str] = []
        for start in range(0, len(plan), SWEEP_BATCH):
            chunk = plan[start:start + SWEEP_BATCH]
            plan[start:start + SWEEP_BATCH] = [None] * len(chunk)  # type: ignore[list-item]  # its rows are freed
            for item in _reclaim_batch(store, view, chunk, cutoff, dry_run=dry_run, shared=shared):
                if item.action == RECLAIM and not dry_run:
                    touched.append(item.attachment_id)
                if item.action == RELEASE or (item.action == RECLAIM and not shared):
                    # Guarded by the cutoff: a row refreshed since it was read is not
                    # forgotten. (A shared sweep forgot its deleted ones' rows already.)
                    forgets.extend(Event.forget(item.attachment_id, s, until_ms=cutoff) for s in item.sessions)
                report.items.append(item)
                if progress is not None:
                    progress(1)
            if shared and not dry_run:
                # Writers go on during a shared sweep: the batch's rows go as soon
                # as its bytes did, so that a commit coming later finds no intent
                # (exit 3) rather than stamping a row whose blob is gone.
                view.append(forgets)
                forgets = []
        report.items.sort(key=lambda i: (i.first_intent_ms, i.attachment_id))
        if not dry_run:
            store.blobs.sync(touched)
            view.append(forgets)
    return report


def _reclaim_batch(store: Store, view, chunk: Plan, cutoff: int, *, dry_run: bool,
                   shared: bool) -> list[ReclaimItem]:
    """Reclaim or release a batch of the plan: one stat each (concurrent on an
    object store), one batch delete, and on a shared manifest one query of the
    batch's rows before the delete and one after."""
    stats = stat_many(store.blobs, [attachment_id for attachment_id, _aged, _live in chunk])
    items, orphans = [], []
    for attachment_id, aged, live in chunk:
        st = stats[attachment_id]
        present = st is not None and st.is_file
        sessions = [r.session_id for r in aged]
        size = st.size if present else 0
        first = min(r.intent_at_epoch_ms for r in aged)
        if live is not None:
            items.append(ReclaimItem(attachment_id, RELEASE, sessions, size, present, f"kept: {live}",
                                     first_intent_ms=first))
            continue
        item = ReclaimItem(attachment_id, RECLAIM, sessions, size, present,
                           ORPHAN if present else ORPHAN_GONE, first_intent_ms=first)
        items.append(item)
        orphans.append(item)
    if shared and orphans:  # read-only: a dry run reports what the real run will do
        again = rows_for_ids(view, [i.attachment_id for i in orphans])
        for item in orphans:
            reason = live_reason(again[item.attachment_id], cutoff, view)
            st = stats[item.attachment_id]
            if reason is not None:  # a writer came back for it since the candidates were read
                item.action, item.reason = RELEASE, f"kept: {reason}"
            elif st is not None and st.mtime_ms > cutoff:
                item.action, item.reason = SPARED, "spared: the object was written after the cutoff"
                item.sessions = []
    for item in orphans:
        if item.action == RECLAIM:
            problem = store.blobs.delete_problem(item.attachment_id)
            if problem is not None:  # the dry run says what the real run will meet
                item.action, item.error = FAILED, problem
    doomed = [i for i in orphans if i.action == RECLAIM]
    if dry_run or not doomed:
        return items
    results = store.blobs.delete_many([i.attachment_id for i in doomed], known=stats)
    for item in doomed:
        outcome = results[item.attachment_id]
        if isinstance(outcome, str):
            item.action, item.error = FAILED, outcome
        else:
            item.byte_len = outcome
    if shared:
        deleted = [i for i in doomed if i.action == RECLAIM]
        # The batch's own aged rows go first (guarded: a row committed or
        # refreshed meanwhile stays), then whatever is left live is reported.
        view.append([Event.forget(i.attachment_id, s, until_ms=cutoff) for i in deleted for s in i.sessions])
        after = rows_for_ids(view, [i.attachment_id for i in deleted])
        late = [i for i in deleted if live_reason(after[i.attachment_id], cutoff, view) is not None]
        again = stat_many(store.blobs, [i.attachment_id for i in late]) if late else {}
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
    return items


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
    confirmed = confirmed_rows(view, candidates)
    # The log references these: never deleted on a cache's word.
    return {i: st for i, st in candidates.items() if not confirmed[i]}


def _gc_blobs(store: Store, view, candidates: dict[str, BlobStat], cutoff: int, report: GcReport, *,
              dry_run: bool) -> list[str]:
    """Delete the unreferenced blobs; the ids whose shard changed."""
    shared = not getattr(store.manifest, "blocks_writers", True)
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
