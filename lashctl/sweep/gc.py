"""``gc``: delete what no row references and no put is writing: unreferenced
blobs, staging files and orphan sidecars past the grace period."""

from __future__ import annotations

from dataclasses import dataclass, field

from lashctl.backends.base import BlobStat
from lashctl.core import Store, by_id
from lashctl.errors import LashctlError, Refused
from lashctl.strays import remove_stray, scan_strays
from lashctl.sweep.rules import (
    DELETE,
    DELETED_WHILE_REFERENCED,
    FAILED,
    SWEEP_BATCH,
    Progress,
)

from lashctl.sweep.delete import delete_blob


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


def gc(
    store: Store, cutoff: int, *, dry_run: bool = False, progress: Progress | None = None, force: bool = False
) -> GcReport:
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


def _unreferenced(store: Store, view, cutoff: int, report: GcReport, progress: Progress | None) -> dict[str, BlobStat]:
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


def _gc_blobs(
    store: Store, view, candidates: dict[str, BlobStat], cutoff: int, report: GcReport, *, dry_run: bool
) -> list[str]:
    """Delete the unreferenced blobs; the ids whose shard changed. With an
    audit log, a batch at a time: its "deleting" lines, the deletes, the
    outcomes."""
    shared = not store.manifest.blocks_writers
    touched: list[str] = []
    log = None if dry_run else store.audit
    listed = list(candidates.items())
    for start in range(0, len(listed), SWEEP_BATCH if log is not None else max(1, len(listed))):
        batch = listed[start : start + SWEEP_BATCH] if log is not None else listed
        if log is not None:
            log.write(
                [
                    log.item("deleting", i, path=store.blobs.where(i), byte_len=st.size, reason=UNREFERENCED)
                    for i, st in batch
                ]
            )
        outcomes: list[tuple] = []
        for attachment_id, st in batch:
            if shared and not dry_run:
                # Writers go on during a sweep of a shared manifest: look again just before.
                again = store.blobs.stat(attachment_id)
                if view.rows_for_id(attachment_id) or again is None or again.mtime_ms > cutoff:
                    if log is not None:
                        outcomes.append(
                            log.item(
                                "kept",
                                attachment_id,
                                path=store.blobs.where(attachment_id),
                                reason="a row or newer bytes appeared before the delete",
                            )
                        )
                    continue
            item = GcItem(store.blobs.where(attachment_id), attachment_id, "blob", st.size, DELETE, UNREFERENCED)
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
            if log is not None:
                outcomes.append(
                    log.item(
                        "failed" if item.action == FAILED else "deleted",
                        attachment_id,
                        path=item.path,
                        byte_len=item.byte_len if item.action != FAILED else None,
                        reason=item.reason,
                        error=item.error,
                    )
                )
        if log is not None:
            done_ids = set(touched)
            store.blobs.sync([i for i, _st in batch if i in done_ids])  # durable before the log says so
            log.write(outcomes)
    return touched


UNREFERENCED = "unreferenced: no manifest row"


def _gc_litter(store: Store, view, cutoff: int, report: GcReport, *, dry_run: bool) -> None:
    """Delete staging litter and sidecars without a blob older than the cutoff."""
    log = None if dry_run else store.audit
    doomed = []
    for stray in scan_strays(store):
        if stray.kind not in ("staging", "orphan-sidecar") or stray.mtime_ms > cutoff:
            continue
        if stray.kind == "orphan-sidecar" and view.rows_for_id(stray.attachment_id):
            continue  # the last metadata of a row whose bytes are missing: keep it for the operator
        doomed.append(stray)
    for start in range(0, len(doomed), SWEEP_BATCH):
        batch = doomed[start : start + SWEEP_BATCH]
        if log is not None:
            log.write(
                [
                    log.item("deleting", s.attachment_id, path=s.path, byte_len=s.byte_len, reason=s.reason)
                    for s in batch
                ]
            )
        items = []
        for stray in batch:
            item = GcItem(stray.path, None, stray.kind, stray.byte_len, DELETE, stray.reason)
            if not dry_run:
                try:
                    remove_stray(store, stray)
                except LashctlError as exc:
                    item.action, item.error = FAILED, exc.message
                except OSError as exc:
                    item.action, item.error = FAILED, f"cannot delete: {exc.strerror}"
            report.items.append(item)
            items.append((stray, item))
        if log is not None:
            log.write(
                [
                    log.item(
                        "failed" if i.action == FAILED else "deleted",
                        s.attachment_id,
                        path=s.path,
                        byte_len=s.byte_len if i.action != FAILED else None,
                        reason=s.reason,
                        error=i.error,
                    )
                    for s, i in items
                ]
            )
