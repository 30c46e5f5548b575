"""Read-mostly operator tooling: show, ls, stats, verify and gc.

Like ``lashctl.ops`` these return plain dataclasses and never import typer or
rich. ``verify`` and ``gc`` report each finding and repair; only ``gc`` (and
``verify --fix`` for staging litter) deletes, and only under the lock.
"""

from __future__ import annotations

import hashlib
import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from lashctl import media, sidecar
from lashctl.errors import LashctlError, NotFound, Refused, StoreIOError
from lashctl.ids import is_valid_id
from lashctl.backends.jsonl_log import ManifestState, Row
from lashctl.ops import DEFAULT_GRACE, Store, plan_reclaim
from lashctl.backends.localfs import LASH_STAGING_SUFFIX, SIDECAR_SUFFIX, Entry, FileIdentity
from lashctl.timefmt import parse_duration

COMMITTED = "committed"
UNCOMMITTED = "uncommitted"
UNMANAGED = "unmanaged"
STATES = (COMMITTED, UNCOMMITTED, UNMANAGED)

Progress = Callable[[int], None]  # called with bytes (or items) just done


def reference_state(rows: list[Row]) -> str:
    if any(r.committed for r in rows):
        return COMMITTED
    return UNCOMMITTED if rows else UNMANAGED


def default_grace_ms() -> int:
    return parse_duration(DEFAULT_GRACE)


# -- show ----------------------------------------------------------------------
@dataclass
class Verdict:
    state: str  # kept | orphan | unmanaged | missing
    reason: str


@dataclass
class BlobReport:
    attachment_id: str
    blob_path: Path
    sidecar_path: Path
    bytes_present: bool
    byte_len: int | None
    size_on_disk: int | None
    mtime_ms: int | None
    metadata: sidecar.Metadata | None
    sidecar_problem: str | None
    rows: list[Row]
    verdict: Verdict


def show(store: Store, attachment_id: str, state: ManifestState, now: int) -> BlobReport:
    """Everything about one blob, and why it is kept or would go."""
    st = store.blobs.blob_stat(attachment_id)
    rows = sorted(state.rows_for(attachment_id), key=lambda r: (r.intent_at_epoch_ms, r.session_id))
    if st is None and not rows:
        raise NotFound(f"no blob or manifest row for {attachment_id}")
    meta, problem = _read_sidecar(store, attachment_id)
    if st is not None and meta is None and problem is None:
        problem = "missing"
    return BlobReport(
        attachment_id=attachment_id,
        blob_path=store.blobs.blob_path(attachment_id),
        sidecar_path=store.blobs.sidecar_path(attachment_id),
        bytes_present=st is not None,
        byte_len=st.st_size if st is not None else None,
        size_on_disk=st.st_blocks * 512 if st is not None else None,
        mtime_ms=st.st_mtime_ns // 1_000_000 if st is not None else None,
        metadata=meta,
        sidecar_problem=problem,
        rows=rows,
        verdict=_verdict(st is not None, rows, state, attachment_id, now),
    )


def _read_sidecar(store: Store, attachment_id: str) -> tuple[sidecar.Metadata | None, str | None]:
    try:
        meta = store.blobs.read_sidecar(attachment_id)
    except LashctlError as exc:
        return None, exc.message
    if meta is not None and meta.attachment_id != attachment_id:
        return meta, f"its id is {meta.attachment_id}"
    return meta, None


def _verdict(present: bool, rows: list[Row], state: ManifestState, attachment_id: str, now: int) -> Verdict:
    from lashctl.timefmt import iso_ms

    committed = [r for r in rows if r.committed]
    if not present:
        if committed:
            return Verdict("missing", f"missing bytes: session {committed[0].session_id} committed it, "
                                      "but the blob is gone (data loss)")
        return Verdict("missing", "missing bytes: only uncommitted rows reference it")
    if committed:
        first = min(committed, key=lambda r: r.committed_at_epoch_ms or 0)
        return Verdict("kept", f"kept because session {first.session_id} committed it at "
                               f"{iso_ms(first.committed_at_epoch_ms)}")
    if not rows:
        return Verdict("unmanaged", "unmanaged: no manifest row (gc deletes it once older than the grace period)")
    cutoff = now - default_grace_ms()
    _scanned, plan = plan_reclaim(_only(state, attachment_id), cutoff)
    if plan and plan[0][2] is None:
        return Verdict("orphan", f"orphan: would be reclaimed by a sweep with the default grace ({DEFAULT_GRACE})")
    newest = max(rows, key=lambda r: r.intent_at_epoch_ms)
    due = newest.intent_at_epoch_ms + default_grace_ms()
    return Verdict("kept", f"kept for now: session {newest.session_id}'s intent is within the "
                           f"{DEFAULT_GRACE} grace period (reclaimable after {iso_ms(due)})")


def _only(state: ManifestState, attachment_id: str) -> ManifestState:
    sub = ManifestState()
    for row in state.rows_for(attachment_id):
        sub.rows[(row.session_id, row.attachment_id)] = row
    return sub


# -- ls ------------------------------------------------------------------------
@dataclass
class BlobEntry:
    attachment_id: str
    byte_len: int
    mtime_ms: int
    media_type: str | None
    label: str | None
    state: str
    sessions: list[str]


def list_blobs(store: Store, state: ManifestState, warn: Callable[[str], None] | None = None) -> list[BlobEntry]:
    """Every blob present, with its metadata and reference state."""
    entries = []
    for attachment_id in store.blobs.iter_ids():
        st = store.blobs.blob_stat(attachment_id)
        if st is None:
            continue
        meta, problem = _read_sidecar(store, attachment_id)
        if problem is not None and warn is not None:
            warn(problem if problem.startswith("undecodable") else
                 f"sidecar {store.blobs.sidecar_path(attachment_id)}: {problem}")
        rows = state.rows_for(attachment_id)
        entries.append(
            BlobEntry(
                attachment_id=attachment_id,
                byte_len=st.st_size,
                mtime_ms=st.st_mtime_ns // 1_000_000,
                media_type=meta.media_type if meta else None,
                label=meta.label if meta else None,
                state=reference_state(rows),
                sessions=sorted({r.session_id for r in rows}),
            )
        )
    return entries


# -- litter --------------------------------------------------------------------
@dataclass
class StrayFile:
    path: Path
    kind: str  # staging | stray | orphan-sidecar
    byte_len: int
    mtime_ms: int
    reason: str
    entry: Entry | None = None  # where it was found in the store, for removal
    litter_name: str | None = None  # or a compaction's leftover beside the manifest


def scan_strays(store: Store) -> Iterator[StrayFile]:
    """Files under ``tmp/`` and ``sha256/`` that are not a blob or its sidecar,
    and the staging files a killed ``manifest compact`` left beside the manifest."""
    for entry in store.blobs.walk():
        st, name = entry.st, entry.name
        mtime = st.st_mtime_ns // 1_000_000
        size = st.st_size if stat.S_ISREG(st.st_mode) else 0
        if entry.directory == "tmp":
            yield StrayFile(entry.path, "staging", size, mtime, "staging litter in tmp/", entry)
            continue
        if entry.directory == "sha256":
            if not stat.S_ISDIR(st.st_mode):
                yield StrayFile(entry.path, "stray", size, mtime, "not a shard directory", entry)
            continue
        shard_name = entry.directory.rpartition("/")[2]
        shard_ok = len(shard_name) == 2 and all(c in "0123456789abcdef" for c in shard_name)
        base = name[: -len(SIDECAR_SUFFIX)] if name.endswith(SIDECAR_SUFFIX) else name
        if name.endswith(LASH_STAGING_SUFFIX) or ".staging." in name:
            yield StrayFile(entry.path, "staging", size, mtime, "lash-core staging litter", entry)
        elif not shard_ok or not is_valid_id(base):
            yield StrayFile(entry.path, "stray", size, mtime, "name is not a blob id", entry)
        elif base[:2] != shard_name:
            yield StrayFile(entry.path, "stray", size, mtime, "in the wrong prefix directory", entry)
        elif stat.S_ISLNK(st.st_mode):
            yield StrayFile(entry.path, "stray", 0, mtime, "a symlink, not a file", entry)
        elif not stat.S_ISREG(st.st_mode):
            yield StrayFile(entry.path, "stray", 0, mtime, "not a regular file", entry)
        elif name.endswith(SIDECAR_SUFFIX) and not store.blobs.entry_exists(entry.directory, base):
            yield StrayFile(entry.path, "orphan-sidecar", size, mtime, "a sidecar with no blob", entry)
    manifest = store.manifest
    for name, st in manifest.litter():
        yield StrayFile(manifest.path.parent / name, "staging", st.st_size, st.st_mtime_ns // 1_000_000,
                        "left by an interrupted manifest compaction", litter_name=name)


def remove_stray(store: Store, stray: StrayFile) -> None:
    """Unlink a stray file where it was found: never through a symlink, never a directory."""
    if stray.litter_name is not None:
        store.manifest.remove_litter(stray.litter_name)
    elif stray.entry is not None:
        store.blobs.remove_entry(stray.entry)


# -- stats ---------------------------------------------------------------------
@dataclass
class Stats:
    blobs: int = 0
    blob_bytes: int = 0
    rows_committed: int = 0
    rows_uncommitted: int = 0
    committed_rows_missing_bytes: int = 0
    uncommitted_rows_missing_bytes: int = 0
    blobs_by_state: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATES, 0))
    bytes_by_state: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATES, 0))
    orphans_reclaimable: int = 0
    orphan_bytes_reclaimable: int = 0
    staging_files: int = 0
    staging_bytes: int = 0
    stray_files: int = 0
    orphan_sidecars: int = 0
    manifest_lines: int = 0
    compacted_lines: int = 0
    torn_tail: bool = False


def stats(store: Store, state: ManifestState, now: int) -> Stats:
    out = Stats()
    sizes: dict[str, int] = {}  # one walk of sha256/ serves every count below
    for attachment_id in store.blobs.iter_ids():
        st = store.blobs.blob_stat(attachment_id)
        if st is None:
            continue
        sizes[attachment_id] = st.st_size
        kind = reference_state(state.rows_for(attachment_id))
        out.blobs += 1
        out.blob_bytes += st.st_size
        out.blobs_by_state[kind] += 1
        out.bytes_by_state[kind] += st.st_size
    for row in state.rows.values():
        missing = row.attachment_id not in sizes
        if row.committed:
            out.rows_committed += 1
            out.committed_rows_missing_bytes += missing
        else:
            out.rows_uncommitted += 1
            out.uncommitted_rows_missing_bytes += missing
    _scanned, plan = plan_reclaim(state, now - default_grace_ms())
    for attachment_id, _aged, live in plan:
        if live is None and attachment_id in sizes:
            out.orphans_reclaimable += 1
            out.orphan_bytes_reclaimable += sizes[attachment_id]
    for stray in scan_strays(store):
        if stray.kind == "staging":
            out.staging_files += 1
            out.staging_bytes += stray.byte_len
        elif stray.kind == "orphan-sidecar":
            out.orphan_sidecars += 1
        else:
            out.stray_files += 1
    out.manifest_lines = state.lines
    out.compacted_lines = 1 + out.rows_committed * 2 + out.rows_uncommitted
    out.torn_tail = state.torn_tail
    return out


# -- verify --------------------------------------------------------------------
ERROR = "error"
WARNING = "warning"


@dataclass
class Finding:
    kind: str
    severity: str
    path: str | None
    attachment_id: str | None
    message: str
    repair: str | None = None  # what --fix did about it


@dataclass
class VerifyReport:
    blobs_checked: int = 0
    bytes_checked: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == ERROR and not f.repair]

    @property
    def repairs(self) -> list[Finding]:
        return [f for f in self.findings if f.repair]


def verify(
    store: Store,
    state: ManifestState | None,
    manifest_problem: str | None,
    now: int,
    fix: bool = False,
    grace_ms: int | None = None,
    progress: Progress | None = None,
) -> VerifyReport:
    """Check every blob, sidecar, stray file and manifest row; repair safely with ``fix``.

    ``state`` is None when the manifest could not be read (``manifest_problem``
    says why): the blob checks still run, the row checks do not.
    """
    report = VerifyReport()
    grace = default_grace_ms() if grace_ms is None else grace_ms
    if manifest_problem is not None:
        report.findings.append(Finding("manifest-corrupt", ERROR, str(store.manifest.path), None, manifest_problem))
    elif state is not None and state.torn_tail:
        report.findings.append(Finding("manifest-torn-tail", WARNING, str(store.manifest.path), None,
                                       "torn final line (a crashed append); the next write repairs it"))
    present: set[str] = set()
    with store.blobs.opened():
        for attachment_id in store.blobs.iter_ids():
            if _verify_blob(store, attachment_id, state, report, fix, progress):
                present.add(attachment_id)  # a blob quarantined by --fix is no longer present
        for stray in scan_strays(store):
            _verify_stray(store, stray, report, fix, now, grace)
    if state is not None:
        for row in state.rows.values():
            if row.attachment_id in present:
                continue
            path = str(store.blobs.blob_path(row.attachment_id))
            if row.committed:
                report.findings.append(Finding(
                    "committed-bytes-missing", ERROR, path, row.attachment_id,
                    f"session {row.session_id} committed this blob but its bytes are missing"))
            else:
                report.findings.append(Finding(
                    "uncommitted-bytes-missing", WARNING, path, row.attachment_id,
                    f"session {row.session_id}'s uncommitted intent has no bytes (an interrupted put; reclaim forgets it)"))
    return report


def _verify_blob(store: Store, attachment_id: str, state: ManifestState | None, report: VerifyReport,
                 fix: bool, progress: Progress | None) -> bool:
    """Check one blob (repairing with ``fix``); whether it is still in place afterwards."""
    path = store.blobs.blob_path(attachment_id)
    side = store.blobs.sidecar_path(attachment_id)
    try:
        actual, hashed, links = store.blobs.hash_blob(attachment_id, progress)
    except LashctlError as exc:
        report.findings.append(Finding("unreadable", ERROR, str(path), attachment_id, exc.message))
        return True
    report.blobs_checked += 1
    size = hashed.size
    report.bytes_checked += size
    if links > 1:
        report.findings.append(Finding(
            "hard-linked", ERROR, str(path), attachment_id,
            f"the blob has {links} hard links: it may be shared with a file outside the store"))
    side_st = store.blobs.entry_stat(attachment_id, SIDECAR_SUFFIX)
    if side_st is not None and stat.S_ISREG(side_st.st_mode) and side_st.st_nlink > 1:
        report.findings.append(Finding(
            "hard-linked", ERROR, str(side), attachment_id,
            f"the sidecar has {side_st.st_nlink} hard links: it may be shared with a file outside the store"))
    if actual != attachment_id:
        finding = Finding("hash-mismatch", ERROR, str(path), attachment_id, f"content hashes to {actual}")
        if fix:
            moved = quarantine(store, attachment_id, hashed)
            if moved is not None:
                finding.repair = f"moved to {moved}"
            else:
                finding.message += "; not quarantined: the file changed after it was hashed (re-run verify)"
        report.findings.append(finding)
        return finding.repair is None
    meta, problem = _read_sidecar(store, attachment_id)
    if meta is None and problem is None:
        finding = Finding("sidecar-missing", ERROR, str(side), attachment_id, "no sidecar for this blob")
        if fix:
            rebuilt = rebuild_sidecar(store, attachment_id, size)
            finding.repair = f"rebuilt the sidecar from the content ({rebuilt.media_type})"
        report.findings.append(finding)
    elif problem is not None and meta is not None:
        report.findings.append(Finding("sidecar-mismatch", ERROR, str(side), attachment_id,
                                       f"sidecar disagrees with the blob: {problem}"))
    elif problem is not None:
        report.findings.append(Finding("sidecar-undecodable", ERROR, str(side), attachment_id, problem))
    elif meta is not None and meta.byte_len != size:
        report.findings.append(Finding("sidecar-mismatch", ERROR, str(side), attachment_id,
                                       f"sidecar says byte_len {meta.byte_len}, the blob has {size}"))
    if state is not None and not state.rows_for(attachment_id):
        report.findings.append(Finding("unmanaged", WARNING, str(path), attachment_id,
                                       "no manifest row references this blob"))
    return True


def _verify_stray(store: Store, stray: StrayFile, report: VerifyReport, fix: bool, now: int, grace: int) -> None:
    severity = WARNING if stray.kind in ("staging", "orphan-sidecar") else ERROR
    finding = Finding(f"{stray.kind}-file" if stray.kind != "staging" else "staging-litter", severity,
                      str(stray.path), None, stray.reason)
    if fix and stray.kind == "staging" and stray.mtime_ms <= now - grace:
        try:
            remove_stray(store, stray)
            finding.repair = "removed (older than the grace period)"
        except (LashctlError, OSError) as exc:
            reason = exc.message if isinstance(exc, LashctlError) else exc.strerror
            finding.message += f"; could not remove: {reason}"
    report.findings.append(finding)


def quarantine(store: Store, attachment_id: str, hashed: FileIdentity) -> Path | None:
    """Move the corrupt blob that was hashed (and its sidecar) to ``<root>/quarantine/``.

    Never deletes bytes; leaves the blob alone (None) if it is no longer the
    file that was hashed (a put healed it meanwhile).
    """
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return store.blobs.quarantine(attachment_id, hashed, stamp)


def rebuild_sidecar(store: Store, attachment_id: str, size: int) -> sidecar.Metadata:
    with store.blobs.open_blob(attachment_id) as handle:
        head = handle.read(64 * 1024)
        sniffed = media.sniff(head)
        handle.seek(0)
        dims = media.image_size(handle) if sniffed else None
    media_type = sniffed or media.OCTET_STREAM
    meta = sidecar.Metadata(attachment_id, media_type, size,
                            dims[0] if dims else None, dims[1] if dims else None, None)
    store.blobs.ensure_writable_layout()
    store.blobs.write_sidecar(meta)
    return meta


# -- gc ------------------------------------------------------------------------
@dataclass
class GcItem:
    path: str
    attachment_id: str | None
    kind: str  # blob | staging | orphan-sidecar
    byte_len: int
    action: str  # delete | failed
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
        return sum(i.byte_len for i in self.items if i.action == "delete")

    @property
    def failures(self) -> list[GcItem]:
        return [i for i in self.items if i.action == "failed"]


def gc(store: Store, cutoff: int, dry_run: bool = False, progress: Progress | None = None,
       force: bool = False) -> GcReport:
    """Mark and sweep: delete unreferenced blobs and staging litter older than ``cutoff``.

    Assumes every writer of this store records intents in this manifest: a
    blob another writer placed without an intent here looks unreferenced.
    ``force`` sweeps even when the manifest holds no rows (or none for any
    blob present), which otherwise looks like the wrong manifest.
    """
    store.manifest.check_writable()  # a FIFO or /dev/null is refused before anything else
    if dry_run:
        with store.blobs.opened():
            return _gc(store, cutoff, True, progress, force)
    with store.manifest.locked(), store.blobs.opened():
        return _gc(store, cutoff, False, progress, force)


def _gc(store: Store, cutoff: int, dry_run: bool, progress: Progress | None, force: bool) -> GcReport:
    manifest = store.manifest.path
    first_blob = next(store.blobs.iter_ids(), None)
    if not os.path.lexists(manifest) and first_blob is not None:
        # A mistyped --manifest would make every blob look unreferenced.
        raise Refused(
            f"refusing gc: manifest {manifest} does not exist, so every blob would look "
            "unreferenced (check --manifest; create an empty manifest to really sweep them all)"
        )
    state = store.manifest.read_state()
    if first_blob is not None and not force and not any(state.rows_for(i) for i in store.blobs.iter_ids()):
        # An empty, truncated or foreign manifest: every blob would look unreferenced.
        what = "holds no rows" if not state.rows else "references none of the blobs present"
        raise Refused(
            f"refusing gc: manifest {manifest} {what}, so every blob would look unreferenced "
            "(check --manifest; use --force to sweep them all)"
        )
    report = GcReport(cutoff_epoch_ms=cutoff, dry_run=dry_run)
    touched = []
    for attachment_id in store.blobs.iter_ids():
        report.blobs_scanned += 1
        if progress is not None:
            progress(1)
        if state.rows_for(attachment_id):
            continue
        st = store.blobs.blob_stat(attachment_id)
        if st is None or st.st_mtime_ns // 1_000_000 > cutoff:
            continue
        item = GcItem(str(store.blobs.blob_path(attachment_id)), attachment_id, "blob", st.st_size,
                      "delete", "unreferenced: no manifest row")
        if not dry_run:
            try:
                item.byte_len = store.blobs.delete(attachment_id)
                touched.append(attachment_id)
            except LashctlError as exc:
                item.action, item.error = "failed", exc.message
        report.items.append(item)
    for stray in scan_strays(store):
        if stray.kind not in ("staging", "orphan-sidecar") or stray.mtime_ms > cutoff:
            continue
        if stray.kind == "orphan-sidecar" and state.rows_for(stray.path.name[: -len(SIDECAR_SUFFIX)]):
            continue  # the last metadata of a row whose bytes are missing: keep it for the operator
        item = GcItem(str(stray.path), None, stray.kind, stray.byte_len, "delete", stray.reason)
        if not dry_run:
            try:
                remove_stray(store, stray)
            except LashctlError as exc:
                item.action, item.error = "failed", exc.message
            except OSError as exc:
                item.action, item.error = "failed", f"cannot delete: {exc.strerror}"
        report.items.append(item)
    if not dry_run:
        store.blobs.fsync_shards(touched)
    return report
