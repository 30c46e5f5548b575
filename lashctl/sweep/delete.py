"""``delete`` (named blobs, refused while rows reference them unless forced)
and ``forget`` (one session's rows). Both under the sweep lock."""

from __future__ import annotations

from dataclasses import dataclass

from lashctl import faults
from lashctl.backends.base import BlobStat
from lashctl.core import Store, precheck_prefixes, resolve_ids
from lashctl.errors import LashctlError, Refused, StoreIOError
from lashctl.fold import Event, Row
from lashctl.ids import IdQuery
from lashctl.sweep.rules import (
    SWEEP_BATCH,
    forget_intents,
)


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
        results = [
            DeleteResult(i, stats[i] is not None, stats[i].size if _is_file(stats[i]) else 0, referenced[i], dry_run)
            for i in ids
        ]
        if not dry_run:
            _delete_in_order(store, view, results, rows)
    return results


def _is_file(st: BlobStat | None) -> bool:
    return st is not None and st.is_file


def _delete_in_order(store: Store, view, results: list[DeleteResult], rows: dict[str, list[Row]]) -> None:
    """Forget the ids' uncommitted intents (guarded: only the intent as read),
    then delete the bytes, then (shared manifests) look for rows that came.
    The audit log has a line before and after for each id that had bytes or
    uncommitted intents to lose."""
    log = store.audit
    if log is not None:
        log.write(
            [
                _audit(log, store, res, rows, "deleting" if res.existed else "forgetting")
                for res in results
                if _changes(res, rows)
            ]
        )
    forget_intents(view, [r for res in results for r in rows[res.attachment_id]])
    faults.point("delete.forgotten")
    for res in results:
        store.blobs.delete(res.attachment_id)
    store.blobs.sync([res.attachment_id for res in results])
    faults.point("delete.deleted")
    if not store.manifest.blocks_writers:
        after = view.rows_for_ids([res.attachment_id for res in results])
        for res in results:
            before = {(r.session_id, r.intent_at_epoch_ms) for r in rows[res.attachment_id]}
            if any((r.session_id, r.intent_at_epoch_ms) not in before for r in after[res.attachment_id]):
                res.error = "a row for it appeared while it was being deleted: re-upload it"
    if log is not None:
        log.write(
            [
                _audit(log, store, res, rows, "deleted" if res.existed else "forgotten")
                for res in results
                if _changes(res, rows)
            ]
        )


def _changes(res: DeleteResult, rows: dict[str, list[Row]]) -> bool:
    """Whether deleting this id loses anything: bytes, or an uncommitted intent."""
    return res.existed or any(not r.committed for r in rows[res.attachment_id])


def _audit(log, store: Store, res: DeleteResult, rows: dict[str, list[Row]], action: str) -> dict:
    forgotten = sorted({r.session_id for r in rows[res.attachment_id] if not r.committed})
    kept = sorted({r.session_id for r in rows[res.attachment_id] if r.committed})
    reason = "delete --force" if res.sessions else "delete"
    if forgotten:
        reason += f": uncommitted intents of session(s) {', '.join(forgotten)} forgotten"
    if kept:
        reason += f"{';' if forgotten else ':'} committed rows of session(s) {', '.join(kept)} kept"
    return log.item(
        action,
        res.attachment_id,
        path=store.blobs.where(res.attachment_id),
        byte_len=res.byte_len if res.existed else None,
        sessions=forgotten,
        reason=reason,
        error=res.error,
    )


# -- forget --------------------------------------------------------------------
@dataclass
class ForgetItem:
    """One row ``forget`` removed (or, in a dry run, would remove)."""

    attachment_id: str
    session_id: str
    state: str  # committed | uncommitted
    dry_run: bool


def forget(
    store: Store, session: str, queries: list[IdQuery], *, dry_run: bool = False
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
        items = [
            ForgetItem(r.attachment_id, session, "committed" if r.committed else "uncommitted", dry_run) for r in rows
        ]
        if not dry_run:
            log = store.audit
            for start in range(0, len(rows), 10 * SWEEP_BATCH):
                batch = rows[start : start + 10 * SWEEP_BATCH]
                if log is not None:
                    log.write([_forget_line(log, store, r, "forgetting") for r in batch])
                view.append([Event.forget(r.attachment_id, session) for r in batch])
                if log is not None:
                    log.write([_forget_line(log, store, r, "forgotten") for r in batch])
    return items, missing


def _forget_line(log, store: Store, row: Row, action: str) -> dict:
    state = "committed" if row.committed else "uncommitted"
    return log.item(
        action,
        row.attachment_id,
        path=store.blobs.where(row.attachment_id),
        sessions=[row.session_id],
        reason=f"forget: session {row.session_id}'s {state} row",
    )
