"""``migrate``: copy a store's blobs, sidecars and manifest rows to another store.

The source is only read: a listing of its blobs, a stream of each blob's
bytes, its sidecars and one reading view of its manifest (no lock). The
destination is written in the order that keeps it safe at every instant:

1. per blob (in id order): a blob already at the destination that hashes to
   its id is skipped; otherwise the bytes stream from the source into the
   destination's staging (hashed as they flow: a source blob whose bytes do
   not hash to its name is a failure and is not installed), are installed
   under their id, the sidecar is copied, the installs are made durable and
   the blob is re-hashed at the destination;
2. only then do the rows of that id join the pending batch, which is
   appended (intent at the row's intent time, commit at its commit time)
   every ``ROW_BATCH`` rows;
3. only once a batch's rows are written (and re-read) are its copies given
   their source's age: until then a copy is dated now, so a sweep of the
   destination running meanwhile spares bytes no row references yet.

So the destination never holds a row, committed or not, whose bytes are not
already there and verified, except the rows whose blob the source itself
lacks (copied as they are, and listed in the report). The rows of a blob that
failed are held back. A rerun after a kill completes the copy: verified
blobs and identical rows are skipped, and the fold makes a repeated event
harmless (a later intent time wins, the first commit wins).

Memory stays flat: blobs stream in chunks, the blob listing and the rows are
merged in id order (``core.by_id``), and at most one batch of rows is held.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable

from lashctl import faults
from lashctl.backends.base import LAYOUT_SIDECARS
from lashctl.core import Store, by_id
from lashctl.errors import Corrupt, Denied, LashctlError, NotFound, Refused, Unavailable, UsageError
from lashctl.fold import INTENT, Event, Row

ROW_BATCH = 5000

# What a failure or a note is about (MigrateItem.what).
BLOB, SIDECAR, ROWS, MISSING_BYTES = "blob", "sidecar", "rows", "missing_bytes"


@dataclass
class MigrateItem:
    """One thing the report names: a failure, or rows copied without bytes."""

    attachment_id: str
    what: str  # BLOB | SIDECAR | ROWS | MISSING_BYTES
    message: str
    failed: bool = True


@dataclass
class MigrateReport:
    source: str
    source_manifest: str
    destination: str
    destination_manifest: str
    dry_run: bool
    blobs_seen: int = 0
    blobs_copied: int = 0  # (dry run: would copy)
    blobs_skipped: int = 0  # already at the destination and verified
    blobs_failed: int = 0
    bytes_copied: int = 0
    bytes_skipped: int = 0
    sidecars_copied: int = 0
    rows_seen: int = 0
    rows_copied: int = 0  # (dry run: would copy)
    rows_skipped: int = 0  # already identical at the destination
    rows_held: int = 0  # not copied: their blob failed
    rows_without_bytes: int = 0  # copied, but the source has no bytes for them either
    rows_differing: int = 0  # after the copy the destination's row still differs (it had its own)
    owners_dropped: int = 0  # rows whose owner (PostgreSQL) a manifest event cannot carry
    copies_undated: int = 0  # copies the destination dates now (an object store): sweeps see them as new
    items: list[MigrateItem] = field(default_factory=list)

    @property
    def failures(self) -> list[MigrateItem]:
        return [i for i in self.items if i.failed]


# -- refusing a copy onto itself ------------------------------------------------------
def blob_identity(store: Store) -> str:
    """What tells two blob roots apart: the real path, or the normalised s3:// URL."""
    name = store.blobs.name
    return name if name.startswith("s3://") else "file:" + os.path.realpath(name)


def manifest_identity(store: Store) -> str:
    return store.manifest.identity()


def check_distinct(src: Store, dest: Store) -> None:
    """UsageError (exit 2) when the destination is the source, or shares its manifest."""
    mine, theirs = blob_identity(src), blob_identity(dest)
    if mine == theirs:
        raise UsageError(f"the destination store {dest.blobs.name} is the source store: nothing to migrate")
    if mine.startswith("file:") and theirs.startswith("file:"):
        # A store inside the other would be seen, and swept, as the other's strays.
        if theirs.startswith(mine.rstrip("/") + "/"):
            raise UsageError(
                f"the destination store {dest.blobs.name} is inside the source store "
                f"{src.blobs.name}: choose a directory outside it"
            )
        if mine.startswith(theirs.rstrip("/") + "/"):
            raise UsageError(
                f"the destination store {dest.blobs.name} contains the source store "
                f"{src.blobs.name}: choose a directory outside it"
            )
    elif mine.startswith("s3://") and theirs.startswith("s3://"):
        if theirs.startswith(mine.rstrip("/") + "/") or mine.startswith(theirs.rstrip("/") + "/"):
            raise UsageError(
                f"the destination store {dest.blobs.name} overlaps the source store "
                f"{src.blobs.name}: choose a prefix outside it"
            )
    if manifest_identity(src) == manifest_identity(dest):
        raise UsageError(
            f"the destination manifest {dest.manifest.name} is the source's manifest: name another with --to-manifest"
        )


# -- the copy -----------------------------------------------------------------------
def migrate(
    src: Store,
    dest: Store,
    *,
    dry_run: bool = False,
    row_batch: int = ROW_BATCH,
    progress: Callable[[int], None] | None = None,
) -> MigrateReport:
    """Copy every blob, sidecar and row of ``src`` to ``dest`` (see the module doc).

    ``progress`` is called with 1 per source blob or blob-less id handled.
    Per-item failures are recorded in the report, never raised; a failure of
    the destination manifest (a lock, a server) stops the copy with its error.
    """
    check_distinct(src, dest)
    report = MigrateReport(src.blobs.name, src.manifest.name, dest.blobs.name, dest.manifest.name, dry_run)
    dest.blobs.check_root()  # a missing bucket: exit 2 (an absent directory is created)
    dest.manifest.check_writable()  # a missing table: exit 2 before any byte moves
    recorded = _check_layout(dest)
    dest_manifest_exists = dest.manifest.exists()
    if not dry_run:
        dest.blobs.ensure_writable_layout()
        if recorded is None:
            dest.blobs.record_layout(dest.layout)  # Refused if another was recorded meanwhile
    pending: list[Row] = []
    dates: list[tuple[str, int | None]] = []  # the pending batch's copies: (id, source mtime)
    with src.manifest.reading() as view, src.blobs.opened(), dest.blobs.opened():
        dest_ids = _Cursor(dest.blobs.iter_ids())
        for attachment_id, present, rows in by_id(src, view):
            report.rows_seen += len(rows)
            if present:
                report.blobs_seen += 1
                ok = _migrate_blob(
                    src, dest, attachment_id, dest_ids.has(attachment_id), report, dates, dry_run=dry_run
                )
                faults.point("migrate.copied")
                if progress is not None:
                    progress(1)
                if not ok:
                    if rows:
                        report.rows_held += len(rows)
                        report.items.append(
                            MigrateItem(
                                attachment_id, ROWS, f"{len(rows)} row(s) not copied: their blob was not copied"
                            )
                        )
                    continue
            elif rows:
                report.rows_without_bytes += len(rows)
                sessions = ", ".join(r.session_id for r in rows)
                committed = sum(1 for r in rows if r.committed)
                report.items.append(
                    MigrateItem(
                        attachment_id,
                        MISSING_BYTES,
                        f"the source has no bytes for this id: {len(rows)} row(s) ({committed} committed; "
                        f"session(s) {sessions}) copied as they are",
                        failed=False,
                    )
                )
            pending.extend(rows)
            if len(pending) >= row_batch or len(dates) >= row_batch:
                _flush_rows(dest, pending, report, dry_run=dry_run, dest_exists=dest_manifest_exists)
                _date_copies(dest, dates, report)
                pending, dates = [], []
        if pending:
            _flush_rows(dest, pending, report, dry_run=dry_run, dest_exists=dest_manifest_exists)
        _date_copies(dest, dates, report)
    return report


def _date_copies(dest: Store, dates: list[tuple[str, int | None]], report: MigrateReport) -> None:
    """Give copies whose rows are written their source's age where the
    destination can keep it: a sweep there spares bytes written within its
    grace period, as the source's would have. Called only after the rows."""
    for attachment_id, mtime_ms in dates:
        if mtime_ms is None or not dest.blobs.date_blob(attachment_id, mtime_ms):
            report.copies_undated += 1


def _check_layout(dest: Store) -> str | None:
    """The layout the destination records (None if none); Refused (exit 4) when
    it records another than the one the copy would follow (``--to-layout``):
    sidecars in a bare store, or blobs without them in one that keeps them."""
    recorded = dest.blobs.recorded_layout()
    if recorded is not None and recorded != dest.layout:
        raise Refused(
            f"store {dest.blobs.name} records layout {recorded}: refusing to migrate into it "
            f"as {dest.layout} (drop --to-layout to follow its record)"
        )
    return recorded


class _Cursor:
    """Membership in an id-ordered stream, asked in increasing id order."""

    def __init__(self, ids) -> None:
        self._ids = iter(ids)
        self._current: str | None = next(self._ids, None)

    def has(self, attachment_id: str) -> bool:
        while self._current is not None and self._current < attachment_id:
            self._current = next(self._ids, None)
        return self._current == attachment_id


def _size(store: Store, attachment_id: str) -> int:
    try:
        st = store.blobs.stat(attachment_id)
    except LashctlError:
        return 0
    return st.size if st is not None else 0


def _verified(store: Store, attachment_id: str) -> bool:
    """The blob is at ``store`` and hashes to its id (re-read in full)."""
    try:
        digest, _stat = store.blobs.hash(attachment_id)
    except (NotFound, Corrupt):
        return False
    return digest == attachment_id


def _migrate_blob(
    src: Store,
    dest: Store,
    attachment_id: str,
    at_dest: bool,
    report: MigrateReport,
    dates: list[tuple[str, int | None]],
    *,
    dry_run: bool,
) -> bool:
    """Copy one blob (and its sidecar); whether it is verified at the destination
    (for a dry run: whether it would be, if the source bytes are sound). A
    copy made is added to ``dates`` (dated now until its rows are written)."""

    def fail(message: str) -> bool:
        report.items.append(MigrateItem(attachment_id, BLOB, message))
        report.blobs_failed += 1
        return False

    try:
        if at_dest and _verified(dest, attachment_id):
            report.blobs_skipped += 1
            report.bytes_skipped += _size(dest, attachment_id)
            if not dry_run:
                _copy_sidecar(src, dest, attachment_id, report)
            return True
        if dry_run:
            report.blobs_copied += 1
            report.bytes_copied += _size(src, attachment_id)
            return True
        source = src.blobs.stat(attachment_id)
        with src.blobs.open(attachment_id) as handle:
            staged = dest.blobs.stage(handle, src.blobs.where(attachment_id))
        try:
            if staged.attachment_id != attachment_id:
                return fail(
                    f"{src.blobs.where(attachment_id)} hashes to {staged.attachment_id}, not its name: not copied"
                )
            dest.blobs.install(staged)
            staged = None
        finally:
            if staged is not None:
                dest.blobs.discard(staged)
        _copy_sidecar(src, dest, attachment_id, report)
        dest.blobs.sync([attachment_id])  # the blob and its sidecar durable before any row
        digest, hashed = dest.blobs.hash(attachment_id)
        if digest != attachment_id:
            return fail(f"{dest.blobs.where(attachment_id)} hashes to {digest} after the copy")
    except (Unavailable, Denied):
        raise  # the server, not this blob: stop (a rerun resumes)
    except LashctlError as exc:
        return fail(exc.message)
    except OSError as exc:
        return fail(f"I/O error: {exc.strerror or exc}")
    report.blobs_copied += 1
    report.bytes_copied += hashed.size
    dates.append((attachment_id, None if source is None else source.mtime_ms))
    return True


def _copy_sidecar(src: Store, dest: Store, attachment_id: str, report: MigrateReport) -> None:
    """Copy the source's sidecar when it has one and the destination keeps them;
    a sidecar already saying exactly this is not rewritten. A failure is
    recorded: the bytes are copied all the same, and so are their rows."""

    def fail(message: str) -> None:
        report.items.append(MigrateItem(attachment_id, SIDECAR, message))

    if dest.layout != LAYOUT_SIDECARS:
        return
    try:
        meta = src.blobs.read_sidecar(attachment_id)
        if meta is None:
            return
        if meta.attachment_id != attachment_id:
            fail(f"{src.blobs.where(attachment_id, sidecar=True)} names id {meta.attachment_id}: not copied")
            return
        if dest.blobs.write_sidecar(meta, durable=False):
            report.sidecars_copied += 1
    except (Unavailable, Denied):
        raise
    except LashctlError as exc:
        fail(exc.message)


def _same(a: Row | None, b: Row) -> bool:
    return (
        a is not None
        and a.canonical_uri == b.canonical_uri
        and a.intent_at_epoch_ms == b.intent_at_epoch_ms
        and a.committed_at_epoch_ms == b.committed_at_epoch_ms
    )


def row_events(row: Row) -> list[Event]:
    """The events that recreate ``row``: its intent (with its canonical URI) and its commit."""
    events = [Event(INTENT, row.attachment_id, row.session_id, row.intent_at_epoch_ms, row.canonical_uri)]
    if row.committed_at_epoch_ms is not None:
        events.append(Event.commit(row.attachment_id, row.session_id, row.committed_at_epoch_ms))
    return events


def _flush_rows(dest: Store, rows: list[Row], report: MigrateReport, *, dry_run: bool, dest_exists: bool) -> None:
    keys = [r.key for r in rows]
    existing: dict = {}
    if dest_exists or not dry_run:
        # A reading view (no lock): the skip only saves a write, the fold decides.
        with dest.manifest.reading() as view:
            existing = view.rows_for_keys(keys)
    todo = [r for r in rows if not _same(existing.get(r.key), r)]
    report.rows_skipped += len(rows) - len(todo)
    report.owners_dropped += sum(1 for r in todo if r.owner_kind is not None)
    if dry_run or not todo:
        report.rows_copied += len(todo)
        return
    events = [e for r in todo for e in row_events(r)]
    with dest.manifest.writing() as writer:
        writer.append(events)
    faults.point("migrate.rows")
    report.rows_copied += len(todo)
    with dest.manifest.reading() as view:
        after = view.rows_for_keys([r.key for r in todo])
    report.rows_differing += sum(1 for r in todo if not _same(after.get(r.key), r))
