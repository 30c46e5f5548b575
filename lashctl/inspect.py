"""The commands that look: ``show``, ``ls``, ``stats`` and ``verify``.

They read the blob listing and the manifest's rows, both in id order, and
merge them (``core.by_id``): memory stays flat however large the store. Only
``verify --fix`` changes anything (it quarantines corrupt blobs, rebuilds
missing sidecars and removes old staging litter), and only under the lock.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, Iterator, cast

from lashctl import faults, media, sidecar
from lashctl.backends.base import LAYOUT_SIDECARS, BlobStat
from lashctl.core import DEFAULT_GRACE, Store, by_id, default_grace_ms
from lashctl.errors import Corrupt, LashctlError, NotFound
from lashctl.fold import Row
from lashctl.ids import _FULL_ID, is_utf8_text
from lashctl.sweep.rules import aged_rows, forget_intents, live_reason
from lashctl.strays import StrayFile, remove_stray, scan_strays
from lashctl.timefmt import in_future

COMMITTED = "committed"
UNCOMMITTED = "uncommitted"
UNMANAGED = "unmanaged"
STATES = (COMMITTED, UNCOMMITTED, UNMANAGED)

Progress = Callable[[int], None]  # called with bytes (or items) just done


def reference_state(rows: list[Row]) -> str:
    if any(r.committed for r in rows):
        return COMMITTED
    return UNCOMMITTED if rows else UNMANAGED


def _read_sidecar(store: Store, attachment_id: str) -> tuple[sidecar.Metadata | None, str | None]:
    try:
        meta = store.blobs.read_sidecar(attachment_id)
    except LashctlError as exc:
        return None, exc.message
    if meta is not None and meta.attachment_id != attachment_id:
        return meta, f"its id is {meta.attachment_id}"
    return meta, None


def _file_stat(store: Store, attachment_id: str) -> BlobStat | None:
    """The blob's stat if a regular file is at its name (in a real shard), else None."""
    try:
        st = store.blobs.stat(attachment_id)
    except Corrupt:  # UnsafePath: a shard that is a symlink
        store.blobs.check_layout()  # unless the root or sha256/ is one: that stops the command
        return None
    return st if st is not None and st.is_file else None


# -- show ----------------------------------------------------------------------
@dataclass
class Verdict:
    state: str  # kept | orphan | unmanaged | missing
    reason: str


@dataclass
class BlobReport:
    attachment_id: str
    blob_path: str
    sidecar_path: str
    bytes_present: bool
    byte_len: int | None
    size_on_disk: int | None
    mtime_ms: int | None
    metadata: sidecar.Metadata | None
    sidecar_problem: str | None
    rows: list[Row]
    verdict: Verdict


def show(store: Store, attachment_id: str, view, now: int) -> BlobReport:
    """Everything about one blob, and why it is kept or would go."""
    st = _file_stat(store, attachment_id)
    rows = sorted(view.rows_for_id(attachment_id), key=lambda r: (r.intent_at_epoch_ms, r.session_id))
    if st is None and not rows:
        raise NotFound(f"no blob or manifest row for {attachment_id}")
    meta, problem = _read_sidecar(store, attachment_id)
    if st is not None and meta is None and problem is None and store.layout == LAYOUT_SIDECARS:
        problem = "missing"
    return BlobReport(
        attachment_id=attachment_id,
        blob_path=store.blobs.where(attachment_id),
        sidecar_path=store.blobs.where(attachment_id, sidecar=True),
        bytes_present=st is not None,
        byte_len=st.size if st is not None else None,
        size_on_disk=st.size_on_disk if st is not None else None,
        mtime_ms=st.mtime_ms if st is not None else None,
        metadata=meta,
        sidecar_problem=problem,
        rows=rows,
        verdict=_verdict(st is not None, rows, view, now, st.mtime_ms if st is not None else None),
    )


def _verdict(present: bool, rows: list[Row], view, now: int, mtime_ms: int | None = None) -> Verdict:
    from lashctl.timefmt import in_future, iso_ms

    committed = [r for r in rows if r.committed]
    if not present:
        if committed:
            return Verdict(
                "missing",
                f"missing bytes: session {committed[0].session_id} committed it, but the blob is gone (data loss)",
            )
        return Verdict("missing", "missing bytes: only uncommitted rows reference it")
    if committed:
        first = min(committed, key=lambda r: r.committed_at_epoch_ms or 0)
        return Verdict(
            "kept", f"kept because session {first.session_id} committed it at {iso_ms(first.committed_at_epoch_ms)}"
        )
    if not rows:
        return Verdict("unmanaged", "unmanaged: no manifest row (gc deletes it once older than the grace period)")
    cutoff = now - default_grace_ms()
    if aged_rows(rows, cutoff):
        live = live_reason(rows, cutoff, view)
        if live is None and mtime_ms is not None and mtime_ms > cutoff:
            return Verdict(
                "kept",
                f"kept for now: its rows aged, but its bytes were written at {iso_ms(mtime_ms)}, "
                f"within the {DEFAULT_GRACE} grace period (a writer's clock behind?); "
                f"reclaimable after {iso_ms(mtime_ms + default_grace_ms())}",
            )
        if live is None:
            return Verdict("orphan", f"orphan: would be reclaimed by a sweep with the default grace ({DEFAULT_GRACE})")
        if not any(r.intent_at_epoch_ms > cutoff for r in rows):
            return Verdict("kept", f"kept: {live}")
    newest = max(rows, key=lambda r: r.intent_at_epoch_ms)
    due = newest.intent_at_epoch_ms + default_grace_ms()
    if in_future(newest.intent_at_epoch_ms, now):
        return Verdict(
            "kept",
            f"kept: session {newest.session_id}'s intent time {iso_ms(newest.intent_at_epoch_ms)} "
            f"is in the future (a clock ahead?): no sweep reclaims it before {iso_ms(due)}",
        )
    return Verdict(
        "kept",
        f"kept for now: session {newest.session_id}'s intent is within the "
        f"{DEFAULT_GRACE} grace period (reclaimable after {iso_ms(due)})",
    )


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


def list_blobs(store: Store, view, warn: Callable[[str], None] | None = None) -> Iterator[BlobEntry]:
    """Every blob present, with its metadata and reference state, in id order."""
    with store.blobs.opened():
        for attachment_id, present, rows in by_id(store, view):
            if not present:
                continue
            st = _file_stat(store, attachment_id)
            if st is None:
                continue
            meta, problem = _read_sidecar(store, attachment_id)
            if problem is not None and warn is not None:
                warn(
                    problem
                    if problem.startswith("undecodable")
                    else f"sidecar {store.blobs.where(attachment_id, sidecar=True)}: {problem}"
                )
            yield BlobEntry(
                attachment_id=attachment_id,
                byte_len=st.size,
                mtime_ms=st.mtime_ms,
                media_type=meta.media_type if meta else None,
                label=meta.label if meta else None,
                state=reference_state(rows),
                sessions=sorted({r.session_id for r in rows}),
            )


@dataclass(frozen=True)
class BlobFilter:
    """Which blobs ``ls`` keeps: a session with a row, a reference state, a
    media type (``image/*`` matches a whole type). None keeps all."""

    session: str | None = None
    state: str | None = None
    media_type: str | None = None

    def __post_init__(self) -> None:
        if self.media_type is not None:
            from lashctl.media import normalize_mime

            wanted = self.media_type.strip().lower()
            if wanted.endswith("/*"):
                kind = normalize_mime(wanted[:-2] + "/x", "--media-type").split("/")[0]
                object.__setattr__(self, "media_type", kind + "/*")
            else:
                object.__setattr__(self, "media_type", normalize_mime(self.media_type, "--media-type"))

    @property
    def narrows(self) -> bool:
        return any(v is not None for v in (self.session, self.state, self.media_type))

    def keeps(self, entry: BlobEntry) -> bool:
        if self.session is not None and self.session not in entry.sessions:
            return False
        if self.state is not None and entry.state != self.state:
            return False
        if self.media_type is not None:
            if self.media_type.endswith("/*"):
                return (entry.media_type or "").startswith(self.media_type[:-1])
            return entry.media_type == self.media_type
        return True


# Sort keys: each, then the id between equals.
SORT_KEYS = {
    "id": lambda e: e.attachment_id,
    "size": lambda e: (e.byte_len, e.attachment_id),
    "mtime": lambda e: (e.mtime_ms, e.attachment_id),
    "media-type": lambda e: (e.media_type or "", e.attachment_id),
    "label": lambda e: (e.label or "", e.attachment_id),
    "state": lambda e: (e.state, e.attachment_id),
}


def select_blobs(entries, wanted: BlobFilter, *, sort: str = "id", reverse: bool = False) -> list[BlobEntry]:
    """The entries ``wanted`` keeps, sorted (id order needs no sort: the listing has it)."""
    kept = [e for e in entries if wanted.keeps(e)]
    if sort != "id" or reverse:
        kept.sort(key=SORT_KEYS[sort], reverse=reverse)
    return kept


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
    manifest_lines: int | None = 0  # None: the manifest is not a log (PostgreSQL)
    compacted_lines: int | None = 0
    torn_tail: bool = False
    series: list[Series] = field(default_factory=list)


# Where the bytes are, for the charts: each series a few buckets of bytes
# split by reference state, gathered in the same pass (memory stays flat).
DAY, SESSION, MEDIA_TYPE = "day", "session", "media-type"
SERIES = (DAY, SESSION, MEDIA_TYPE)
TOP_KEYS = 10  # the sessions (media types) a series names; the rest add up to "other"
TALLY_LIMIT = 10_000  # keys held while counting; past it the smallest half is folded into "other"
UNKNOWN_MEDIA_TYPE = "unknown"
_DAY_MS = 86_400_000
SERIES_NOTES = {
    DAY: "by the date (UTC) the bytes were written",
    SESSION: "a blob shared by several sessions counts in full in each; unmanaged blobs (no session) are left out",
    MEDIA_TYPE: "from the sidecars; unknown where a blob has none (a bare store keeps none)",
}


@dataclass
class Bucket:
    """Blobs and their bytes, split by reference state (for a session: its own row's)."""

    blobs: int = 0
    committed_bytes: int = 0
    uncommitted_bytes: int = 0
    unmanaged_bytes: int = 0
    reclaimable_bytes: int = 0  # orphans a sweep at the default grace would reclaim now

    @property
    def bytes(self) -> int:
        return self.committed_bytes + self.uncommitted_bytes + self.unmanaged_bytes

    def add(self, state: str, size: int, reclaimable: bool) -> None:
        self.blobs += 1
        if state == COMMITTED:
            self.committed_bytes += size
        elif state == UNCOMMITTED:
            self.uncommitted_bytes += size
        else:
            self.unmanaged_bytes += size
        if reclaimable:
            self.reclaimable_bytes += size

    def merge(self, other: Bucket) -> None:
        self.blobs += other.blobs
        self.committed_bytes += other.committed_bytes
        self.uncommitted_bytes += other.uncommitted_bytes
        self.unmanaged_bytes += other.unmanaged_bytes
        self.reclaimable_bytes += other.reclaimable_bytes


@dataclass
class Series:
    """One chart's buckets: ``(key, bucket)`` in the order drawn, key None for
    "other" (``other_keys`` keys). ``approximate``: more keys than
    ``TALLY_LIMIT`` were seen, so some were folded into "other" while
    counting; a named key's bytes are then at least those shown."""

    by: str
    buckets: list[tuple[str | None, Bucket]]
    other_keys: int = 0
    approximate: bool = False

    @property
    def note(self) -> str:
        return SERIES_NOTES[self.by]


class _Tally:
    """Buckets by key, at most ``limit`` of them held (None: no limit)."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.buckets: dict = {}
        self.other = Bucket()
        self.other_keys = 0
        self.approximate = False

    def add(self, key, state: str, size: int, reclaimable: bool) -> None:
        bucket = self.buckets.get(key)
        if bucket is None:
            if self.limit is not None and len(self.buckets) >= self.limit:
                self._fold(sorted(self.buckets, key=lambda k: (self.buckets[k].bytes, k))[: self.limit // 2])
                self.approximate = True
            bucket = self.buckets[key] = Bucket()
        bucket.add(state, size, reclaimable)

    def _fold(self, keys) -> None:
        for key in keys:
            self.other.merge(self.buckets.pop(key))
        self.other_keys += len(keys)

    def series(self, by: str, top: int | None) -> Series:
        if top is None:  # days: every one, oldest first
            ordered = sorted(self.buckets)
        else:  # the largest first; the rest "other"
            ordered = sorted(self.buckets, key=lambda k: (-self.buckets[k].bytes, k))
            self._fold(ordered[top:])
            ordered = ordered[:top]
        buckets: list[tuple[Any, Bucket]] = [(k, self.buckets[k]) for k in ordered]
        if by == DAY:
            from lashctl.timefmt import iso_ms

            buckets = [(cast(str, iso_ms(k * _DAY_MS))[:10], b) for k, b in buckets]
        if self.other_keys:
            buckets.append((None, self.other))
        return Series(by, buckets, self.other_keys, self.approximate)


def stats(store: Store, view, now: int, series: tuple[str, ...] = ()) -> Stats:
    """The store's counts; with ``series`` (of SERIES) the charts' buckets too.
    Only a media-type series reads sidecars, and never on a bare store."""
    out = Stats()
    cutoff = now - default_grace_ms()
    days = _Tally(None) if DAY in series else None
    sessions = _Tally(TALLY_LIMIT) if SESSION in series else None
    media_types = _Tally(TALLY_LIMIT) if MEDIA_TYPE in series else None
    read_sidecars = media_types is not None and store.layout == LAYOUT_SIDECARS
    with store.blobs.opened():
        for attachment_id, present, rows in by_id(store, view):
            st = _file_stat(store, attachment_id) if present else None
            if st is not None:
                kind = reference_state(rows)
                out.blobs += 1
                out.blob_bytes += st.size
                out.blobs_by_state[kind] += 1
                out.bytes_by_state[kind] += st.size
                reclaimable = bool(
                    aged_rows(rows, cutoff) and live_reason(rows, cutoff, view) is None and st.mtime_ms <= cutoff
                )  # bytes written since are spared, as reclaim does
                if reclaimable:
                    out.orphans_reclaimable += 1
                    out.orphan_bytes_reclaimable += st.size
                if days is not None:
                    days.add(st.mtime_ms // _DAY_MS, kind, st.size, reclaimable)
                if sessions is not None:
                    for row in rows:
                        sessions.add(row.session_id, COMMITTED if row.committed else UNCOMMITTED, st.size, reclaimable)
                if media_types is not None:
                    meta = _read_sidecar(store, attachment_id)[0] if read_sidecars else None
                    media_types.add(
                        meta.media_type if meta is not None and meta.media_type else UNKNOWN_MEDIA_TYPE,
                        kind,
                        st.size,
                        reclaimable,
                    )
            for row in rows:
                if row.committed:
                    out.rows_committed += 1
                    out.committed_rows_missing_bytes += st is None
                else:
                    out.rows_uncommitted += 1
                    out.uncommitted_rows_missing_bytes += st is None
        for stray in scan_strays(store):
            if stray.kind == "staging":
                out.staging_files += 1
                out.staging_bytes += stray.byte_len
            elif stray.kind == "orphan-sidecar":
                out.orphan_sidecars += 1
            else:
                out.stray_files += 1
    out.manifest_lines = view.log_lines
    out.compacted_lines = None
    if out.manifest_lines is not None:
        from lashctl.fold import compacted_lines

        out.compacted_lines = compacted_lines(out.rows_committed + out.rows_uncommitted, out.rows_committed)
    out.torn_tail = view.torn_tail
    for by, tally in ((DAY, days), (SESSION, sessions), (MEDIA_TYPE, media_types)):
        if tally is not None:
            out.series.append(tally.series(by, None if by == DAY else TOP_KEYS))
    out.series.sort(key=lambda one: series.index(one.by))
    return out


# -- verify --------------------------------------------------------------------
ERROR = "error"
WARNING = "warning"


@dataclass(slots=True)
class Finding:
    kind: str
    severity: str
    path: str | None
    attachment_id: str | None
    message: str
    repair: str | None = None  # what --fix did about it


class _Found:
    """What verify finds, told as it is found (``add``): the checked counts,
    and the findings a concurrent writer can cause, by id, for ``_settle``
    (up to ``_SETTLE_LIMIT`` ids; past it, None: they are reported as seen)."""

    def __init__(self) -> None:
        self.blobs_checked = 0
        self.bytes_checked = 0
        self.passing: dict[tuple[str, str, str], int] | None = {}  # (kind, severity, id): findings
        self._passing_ids: set[str] = set()

    def add(self, finding: Finding) -> None:
        self._record(finding)
        if (
            self.passing is not None
            and finding.kind in _PASSING
            and finding.repair is None
            and finding.attachment_id is not None
        ):
            self._passed(finding.kind, finding.severity, finding.attachment_id)

    def _passed(self, kind: str, severity: str, attachment_id: str) -> None:
        passing = cast(dict, self.passing)
        key = (kind, severity, attachment_id)
        passing[key] = passing.get(key, 0) + 1
        self._passing_ids.add(attachment_id)
        if len(self._passing_ids) > _SETTLE_LIMIT:
            self.passing, self._passing_ids = None, set()

    def extend(self, findings) -> None:
        for finding in findings:
            self.add(finding)

    def bytes_missing(self, path: str, rows: list[Row]) -> None:
        """The rows of one id (its blob at ``path``) reference bytes that are not there."""
        for row in rows:
            self.add(Finding(*_missing(row), path, row.attachment_id, _missing_message(row)))

    def _record(self, finding: Finding) -> None:
        raise NotImplementedError  # SpooledReport records in add, inlined

    def settled(self, keep: Callable[[str, str], bool], extra: list[Finding]) -> None:
        """Leave out the passing findings ``keep`` drops; ``extra`` goes last."""
        raise NotImplementedError


def _settles(finding: Finding) -> bool:
    """Whether ``_settle`` looks at this finding again."""
    return finding.kind in _PASSING and finding.repair is None and finding.attachment_id is not None


@dataclass
class VerifyReport(_Found):
    blobs_checked: int = 0
    bytes_checked: int = 0
    findings: list[Finding] = field(default_factory=list)

    def __post_init__(self) -> None:
        checked, checked_bytes, findings = self.blobs_checked, self.bytes_checked, self.findings
        _Found.__init__(self)
        self.blobs_checked, self.bytes_checked, self.findings = checked, checked_bytes, findings

    def _record(self, finding: Finding) -> None:
        self.findings.append(finding)

    def settled(self, keep: Callable[[str, str], bool], extra: list[Finding]) -> None:
        self.findings = [
            f for f in self.findings if not _settles(f) or keep(f.kind, cast(str, f.attachment_id))
        ] + extra

    @property
    def errors(self) -> list[Finding]:
        """What is still wrong: errors --fix did not repair."""
        return [f for f in self.findings if f.severity == ERROR and not f.repair]

    @property
    def repairs(self) -> list[Finding]:
        return [f for f in self.findings if f.repair]

    @property
    def warnings(self) -> int:
        return sum(1 for f in self.findings if f.severity == WARNING)

    ascii_only = False  # a list is written whole: its encoding is decided then


class _Spool:
    """Findings in the order found: a batch in memory, the rest on an unnamed
    temporary file (memory stays flat however many there are). Where no
    temporary file can be written they stay in memory."""

    BATCH = 4096

    def __init__(self) -> None:
        self._batch: list[tuple] = []
        self._held: list[list[tuple]] = []  # batches the file could not take
        self._file: Any = None
        self._end = 0  # bytes of whole batches on the file

    def append(self, finding: tuple) -> None:
        """One finding's fields, in ``Finding``'s order."""
        self._batch.append(finding)
        if len(self._batch) >= self.BATCH:
            self._spill()

    def _spill(self) -> None:
        batch, self._batch = self._batch, []
        if self._held:  # the file failed once: keep the order, in memory
            self._held.append(batch)
            return
        import marshal

        data = marshal.dumps(batch)
        try:
            if self._file is None:
                import tempfile

                self._file = tempfile.TemporaryFile(prefix="lashctl-verify-")
            self._file.seek(self._end)
            self._file.write(len(data).to_bytes(8, "little"))
            self._file.write(data)
            self._end += 8 + len(data)
        except OSError:
            self._held.append(batch)

    def __iter__(self) -> Iterator[tuple]:
        if self._file is not None and self._end:
            import marshal

            handle, offset = self._file, 0
            handle.flush()
            while offset < self._end:
                handle.seek(offset)
                size = int.from_bytes(handle.read(8), "little")
                batch = marshal.loads(handle.read(size))
                offset += 8 + size
                yield from batch
        for batch in self._held:
            yield from batch
        yield from self._batch

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class SpooledReport(_Found):
    """``verify``'s report of a whole store: the findings kept in order on a
    spool, counted as found. ``findings``, ``errors`` and ``repairs`` are
    views that read the spool each time they are iterated (their ``len`` is
    counted); ``ascii_only``: some finding holds text UTF-8 cannot encode (a
    file name that is not UTF-8)."""

    def __init__(self) -> None:
        super().__init__()
        self._spool = _Spool()
        self._counts: dict[tuple[str, str, bool], int] = {}  # (kind, severity, repaired): findings
        self._keep: Callable[[str, str], bool] | None = None
        self._extra: list[Finding] = []
        self.ascii_only = False

    def add(self, finding: Finding) -> None:  # _Found.add, inlined: it runs once per finding
        kind, severity, attachment_id, repair = finding.kind, finding.severity, finding.attachment_id, finding.repair
        self._spool.append((kind, severity, finding.path, attachment_id, finding.message, repair))
        key = (kind, severity, repair is not None)
        self._counts[key] = self._counts.get(key, 0) + 1
        if not self.ascii_only:
            self._check_text(finding)
        if self.passing is not None and kind in _PASSING and repair is None and attachment_id is not None:
            self._passed(kind, severity, attachment_id)

    def bytes_missing(self, path: str, rows: list[Row]) -> None:  # add's work, for the most common finding
        counts, spool = self._counts, self._spool
        for row in rows:
            kind, severity = _missing(row)
            attachment_id, message = row.attachment_id, _missing_message(row)
            spool.append((kind, severity, path, attachment_id, message, None))
            key = (kind, severity, False)
            counts[key] = counts.get(key, 0) + 1
            if not self.ascii_only and not (message.isascii() and path.isascii()):
                self._check_text(Finding(kind, severity, path, attachment_id, message))
            if self.passing is not None:
                self._passed(kind, severity, attachment_id)

    def _check_text(self, finding: Finding) -> None:
        for text in (finding.path, finding.message, finding.repair):
            if text is not None and not text.isascii() and not is_utf8_text(text):
                self.ascii_only = True

    def _note(self, finding: Finding) -> None:
        key = (finding.kind, finding.severity, finding.repair is not None)
        self._counts[key] = self._counts.get(key, 0) + 1
        if not self.ascii_only:
            self._check_text(finding)

    def settled(self, keep: Callable[[str, str], bool], extra: list[Finding]) -> None:
        for (kind, severity, attachment_id), n in (self.passing or {}).items():
            if not keep(kind, attachment_id):
                self._counts[(kind, severity, False)] -= n
        self._keep = keep
        for finding in extra:  # given after the spool's, as they are: they are no longer passing
            self._note(finding)
        self._extra = extra

    def _iter(self) -> Iterator[Finding]:
        keep = self._keep
        for kind, severity, path, attachment_id, message, repair in self._spool:
            if (
                keep is not None
                and kind in _PASSING
                and repair is None
                and attachment_id is not None
                and not keep(kind, attachment_id)
            ):
                continue
            yield Finding(kind, severity, path, attachment_id, message, repair)
        yield from self._extra

    def counted(self, want: Callable[[str, str, bool], bool]) -> int:
        return sum(n for key, n in self._counts.items() if want(*key))

    @property
    def findings(self) -> _FindingView:
        return _FindingView(self, None, self.counted(lambda _k, _s, _r: True))

    @property
    def errors(self) -> _FindingView:
        """What is still wrong: errors --fix did not repair."""
        return _FindingView(
            self,
            lambda f: f.severity == ERROR and not f.repair,
            self.counted(lambda _k, severity, repaired: severity == ERROR and not repaired),
        )

    @property
    def repairs(self) -> _FindingView:
        return _FindingView(self, lambda f: bool(f.repair), self.counted(lambda _k, _s, repaired: repaired))

    @property
    def warnings(self) -> int:
        return self.counted(lambda _k, severity, _r: severity == WARNING)

    def close(self) -> None:
        self._spool.close()


class _FindingView:
    """Some of a spooled report's findings, in order; iterable again and again."""

    def __init__(self, report: SpooledReport, want: Callable[[Finding], bool] | None, count: int) -> None:
        self._report, self._want, self._count = report, want, count

    def __len__(self) -> int:
        return self._count

    def __bool__(self) -> bool:
        return self._count > 0

    def __iter__(self) -> Iterator[Finding]:
        if not self._count:
            return iter(())
        found = self._report._iter()
        return found if self._want is None else (f for f in found if self._want(f))


def verify(
    store: Store,
    now: int,
    *,
    fix: bool = False,
    grace_ms: int | None = None,
    progress: Progress | None = None,
    spool: bool = False,
) -> VerifyReport | SpooledReport:
    """Check every blob, sidecar, stray file and manifest row; repair safely with ``fix``.

    With ``fix`` the manifest lock is held throughout. A manifest that cannot
    be read is one finding: the blob checks still run, the row checks do not.
    Returns a VerifyReport (every finding in a list), or with ``spool`` a
    SpooledReport (the findings on a spool: memory stays flat).
    """
    from contextlib import ExitStack

    report: VerifyReport | SpooledReport = SpooledReport() if spool else VerifyReport()
    with ExitStack() as stack:
        view, problem = None, None
        try:
            # --fix: the sweep lock, and on PostgreSQL each forget committed at once
            # (a quarantined blob's intents are gone before it moves).
            view = stack.enter_context(store.manifest.sweeping() if fix else store.manifest.reading())
        except Corrupt as exc:
            problem = exc.message
            if fix:
                # A JSON-lines log's lock still keeps writers off while blobs move;
                # a database that cannot be read is only reported.
                stack.enter_context(store.manifest.locked())
        if view is not None:
            # A database manifest's bad row is one finding: the view skips it
            # (naming it in view.malformed) and every other check still runs.
            view.tolerant = True
        stack.enter_context(store.blobs.opened())
        _verify(store, view, problem, now, report, fix=fix, grace_ms=grace_ms, progress=progress)
        return report


def _verify(
    store: Store,
    view,
    manifest_problem: str | None,
    now: int,
    report: _Found,
    *,
    fix: bool,
    grace_ms: int | None,
    progress: Progress | None,
) -> None:
    grace = default_grace_ms() if grace_ms is None else grace_ms
    name = store.manifest.name
    where = _Where(store)
    if manifest_problem is not None:
        report.add(Finding("manifest-corrupt", ERROR, name, None, manifest_problem))
    elif view is not None and view.torn_tail:
        report.add(
            Finding(
                "manifest-torn-tail",
                WARNING,
                name,
                None,
                "torn final line (a crashed append); the next write repairs it",
            )
        )
    for attachment_id, present, rows, hashed in _hashed_ahead(store, by_id(store, view), progress):
        for row in rows:
            if not row.committed and in_future(row.intent_at_epoch_ms, now):
                report.extend(_intents_in_future(store, rows, now))
                break
        if present and hashed is not None and _verify_blob(store, attachment_id, view, rows, report, hashed, fix=fix):
            continue  # a blob quarantined by --fix is no longer present
        if rows:
            report.bytes_missing(where(attachment_id), rows)
    for stray in scan_strays(store):
        _verify_stray(store, stray, report, fix=fix, now=now, grace=grace)
    for bad in view.malformed if view is not None else ():
        report.add(Finding("manifest-corrupt", ERROR, name, None, bad.message))
    if view is not None:
        _settle(store, report)


class _Where:
    """``store.blobs.where`` of blobs, remembered per shard: a blob's path is
    its shard's (named by the id's first two digits in every backend) and
    its id; building each through pathlib would cost more than the check."""

    def __init__(self, store: Store) -> None:
        self._where = store.blobs.where
        self._shards: dict[str, str] = {}

    def __call__(self, attachment_id: str) -> str:
        head = self._shards.get(attachment_id[:2])
        if head is not None and _FULL_ID.fullmatch(attachment_id) is not None:  # ids.is_valid_id, inlined
            return head + attachment_id
        path = self._where(attachment_id)
        if path.endswith(attachment_id):
            self._shards[attachment_id[:2]] = path[: -len(attachment_id)]
        return path


# What a writer running beside verify (which holds no lock without --fix)
# can make verify see for a moment: a sweep deleting a blob, its sidecar and
# then its rows; a put landing a sidecar, then the blob, after its intent.
_PASSING = {
    "unreadable",
    "sidecar-missing",
    "orphan-sidecar-file",
    "committed-bytes-missing",
    "uncommitted-bytes-missing",
}


# More passing findings than this are not a moment's race (a store whose
# rows lost their bytes long ago): they are reported as seen, unchecked.
_SETTLE_LIMIT = 10_000


def _settle(store: Store, report: _Found) -> None:
    """Check once more, against the store and a fresh read of the manifest,
    every finding a concurrent writer can cause; keep only what is still
    wrong. A blob that vanished while it was read is no finding if its rows
    went with it (a sweep); rows that still reference it are reported as
    their bytes missing. Up to ``_SETTLE_LIMIT`` ids."""
    passing = report.passing
    if not passing:
        return
    ids: list[str] = sorted({i for _kind, _severity, i in passing})
    # The store, the manifest, then the store again: a sweep deletes bytes
    # before it forgets their rows; a put records its intent before its bytes
    # land (and a commit may follow). Bytes seen either time are there.
    unreadable = {i for kind, _severity, i in passing if kind == "unreadable"}
    present = {i: _still_there(store, i, i in unreadable) for i in ids}
    sidecar = {
        i: _still_there(store, i, False, sidecar=True)
        for kind, _severity, i in passing
        if kind in ("sidecar-missing", "orphan-sidecar-file")
    }
    with store.manifest.reading(tolerant=True) as fresh:
        now_rows = {
            i: [r for group in fresh.rows_by_id(i) for r in group if r.attachment_id == i]
            for i in ids
            if present[i] is False
        }
    for i in now_rows:
        present[i] = _still_there(store, i, i in unreadable)
    # What the store would not say (a shard that is now a symlink): as seen.
    unsure = {i for i in ids if present[i] is None or sidecar.get(i, False) is None}

    def keep(kind: str, fid: str) -> bool:
        if fid in unsure:
            return True
        if kind == "unreadable":
            return bool(present[fid])
        if kind == "sidecar-missing":
            return bool(present[fid] and not sidecar[fid])
        if kind == "orphan-sidecar-file":
            return bool(sidecar[fid] and not present[fid])
        return False

    # Rows that reference bytes not there now, whatever verify saw before.
    where = _Where(store)
    report.settled(
        keep, [_bytes_missing(store, row, where) for i, rows in now_rows.items() if present[i] is False for row in rows]
    )


def _still_there(store: Store, attachment_id: str, listed_counts: bool, sidecar: bool = False) -> bool | None:
    """Whether a blob (or its sidecar) is in the store now; with
    ``listed_counts``, a key still listed counts too (an object-store folder
    marker with content: listed, never readable). None when the store will
    not say (a shard that is not a safe directory)."""
    try:
        if _is_file(store.blobs.stat(attachment_id, sidecar=sidecar)):
            return True
        return listed_counts and attachment_id in store.blobs.iter_ids(attachment_id)
    except LashctlError:
        return None


def _bytes_missing(store: Store, row: Row, where: Callable[[str], str] | None = None) -> Finding:
    return Finding(
        *_missing(row), (where or store.blobs.where)(row.attachment_id), row.attachment_id, _missing_message(row)
    )


def _missing(row: Row) -> tuple[str, str]:
    """The kind and severity of a row whose bytes are missing."""
    if row.committed_at_epoch_ms is not None:
        return "committed-bytes-missing", ERROR
    return "uncommitted-bytes-missing", WARNING


def _missing_message(row: Row) -> str:
    if row.committed_at_epoch_ms is not None:
        return f"session {row.session_id} committed this blob but its bytes are missing"
    return f"session {row.session_id}'s uncommitted intent has no bytes (an interrupted put; reclaim forgets it)"


def _intents_in_future(store: Store, rows: list[Row], now: int) -> list[Finding]:
    """Intents stamped by a clock that runs ahead: a sweep keeps their bytes until that time."""
    from lashctl.timefmt import age_text, in_future, iso_ms

    return [
        Finding(
            "intent-in-future",
            WARNING,
            store.blobs.where(row.attachment_id),
            row.attachment_id,
            f"session {row.session_id}'s intent time {iso_ms(row.intent_at_epoch_ms)} is "
            f"{age_text(row.intent_at_epoch_ms - now)} ahead of this clock: no sweep reclaims "
            "these bytes before then",
        )
        for row in rows
        if not row.committed and in_future(row.intent_at_epoch_ms, now)
    ]


def _is_file(st: BlobStat | None) -> bool:
    return st is not None and st.is_file


def _hashed_ahead(
    store: Store, items: Iterator[tuple[str, bool, list[Row]]], progress: Progress | None
) -> Iterator[tuple[str, bool, list[Row], Callable[[], tuple[str, BlobStat]] | None]]:
    """``by_id``'s items, each with a function giving its blob's hash (None
    where the id has no bytes).

    A backend whose reads are requests (``parallel_reads`` > 1: an object
    store) has that many hashes streaming ahead of the item in hand, in
    order; memory stays bounded by that many read buffers. A file store
    hashes each blob when it is asked for, one at a time."""
    limit = store.blobs.parallel_reads
    if limit <= 1:
        hash_of = store.blobs.hash
        for attachment_id, present, rows in items:
            yield attachment_id, present, rows, (partial(hash_of, attachment_id, progress) if present else None)
        return
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=limit, thread_name_prefix="lashctl-verify") as pool:
        pending: deque = deque()
        try:
            for item in items:
                attachment_id, present = item[0], item[1]
                future = pool.submit(store.blobs.hash, attachment_id, progress) if present else None
                pending.append((item, future))
                while len(pending) > limit or (pending and pending[0][1] is None):
                    yield _with_result(*pending.popleft())
            while pending:
                yield _with_result(*pending.popleft())
        finally:
            for _item, future in pending:
                if future is not None:
                    future.cancel()


def _with_result(item: tuple[str, bool, list[Row]], future) -> tuple:
    return (*item, (future.result if future is not None else None))


def _verify_blob(
    store: Store,
    attachment_id: str,
    view,
    rows: list[Row],
    report: _Found,
    hashed_of: Callable[[], tuple[str, BlobStat]],
    *,
    fix: bool,
) -> bool:
    """Check one blob (repairing with ``fix``); whether it is still in place afterwards."""
    path = store.blobs.where(attachment_id)
    side = store.blobs.where(attachment_id, sidecar=True)
    try:
        actual, hashed = hashed_of()
    except LashctlError as exc:
        report.add(Finding("unreadable", ERROR, path, attachment_id, exc.message))
        return True
    report.blobs_checked += 1
    size = hashed.size
    report.bytes_checked += size
    if hashed.links > 1:
        report.add(
            Finding(
                "hard-linked",
                ERROR,
                path,
                attachment_id,
                f"the blob has {hashed.links} hard links: it may be shared with a file outside the store",
            )
        )
    side_st = store.blobs.stat(attachment_id, sidecar=True)
    if side_st is not None and side_st.is_file and side_st.links > 1:
        report.add(
            Finding(
                "hard-linked",
                ERROR,
                side,
                attachment_id,
                f"the sidecar has {side_st.links} hard links: it may be shared with a file outside the store",
            )
        )
    if actual != attachment_id:
        finding = Finding("hash-mismatch", ERROR, path, attachment_id, f"content hashes to {actual}")
        if fix:
            log, lost = store.audit, sorted({r.session_id for r in rows if not r.committed})
            if log is not None:
                log.write(
                    [
                        log.item(
                            "quarantining",
                            attachment_id,
                            path=path,
                            byte_len=size,
                            sessions=lost,
                            reason=finding.message,
                        )
                    ]
                )
            _forget_intents(view, rows)
            moved = quarantine(store, attachment_id, hashed)
            if moved is not None:
                finding.repair = f"moved to {moved}"
            else:
                finding.message += "; not quarantined: the file changed after it was hashed (re-run verify)"
            if log is not None:
                log.write(
                    [
                        log.item(
                            "quarantined" if moved else "kept",
                            attachment_id,
                            path=path,
                            byte_len=size if moved else None,
                            sessions=lost,
                            reason=finding.message,
                            moved_to=moved,
                        )
                    ]
                )
        report.add(finding)
        return finding.repair is None
    meta, problem = _read_sidecar(store, attachment_id)
    if meta is None and problem is None:
        if store.layout == LAYOUT_SIDECARS:
            finding = Finding("sidecar-missing", ERROR, side, attachment_id, "no sidecar for this blob")
            if fix:
                rebuilt = rebuild_sidecar(store, attachment_id, size)
                finding.repair = f"rebuilt the sidecar from the content ({rebuilt.media_type})"
            report.add(finding)
    elif problem is not None and meta is not None:
        report.add(
            Finding("sidecar-mismatch", ERROR, side, attachment_id, f"sidecar disagrees with the blob: {problem}")
        )
    elif problem is not None:
        report.add(Finding("sidecar-undecodable", ERROR, side, attachment_id, problem))
    elif meta is not None and meta.byte_len != size:
        report.add(
            Finding(
                "sidecar-mismatch",
                ERROR,
                side,
                attachment_id,
                f"sidecar says byte_len {meta.byte_len}, the blob has {size}",
            )
        )
    if view is not None and not rows:
        report.add(Finding("unmanaged", WARNING, path, attachment_id, "no manifest row references this blob"))
    return True


def _verify_stray(store: Store, stray: StrayFile, report: _Found, *, fix: bool, now: int, grace: int) -> None:
    severity = WARNING if stray.kind in ("staging", "orphan-sidecar") else ERROR
    finding = Finding(
        f"{stray.kind}-file" if stray.kind != "staging" else "staging-litter",
        severity,
        stray.path,
        stray.attachment_id,
        stray.reason,
    )
    if fix and stray.kind == "staging" and stray.mtime_ms <= now - grace:
        log = store.audit
        if log is not None:
            log.write([log.item("deleting", None, path=stray.path, byte_len=stray.byte_len, reason=stray.reason)])
        error = None
        try:
            remove_stray(store, stray)
            finding.repair = "removed (older than the grace period)"
        except (LashctlError, OSError) as exc:
            error = exc.message if isinstance(exc, LashctlError) else exc.strerror
            finding.message += f"; could not remove: {error}"
        if log is not None:
            log.write(
                [
                    log.item(
                        "failed" if error else "deleted",
                        None,
                        path=stray.path,
                        byte_len=None if error else stray.byte_len,
                        reason=stray.reason,
                        error=error,
                    )
                ]
            )
    report.add(finding)


def _forget_intents(view, rows: list[Row]) -> None:
    """Before corrupt bytes move aside: forget their uncommitted intents
    (guarded: only the intent as read), so that a later ``commit`` finds no
    intent and the client uploads again, rather than stamping a row whose
    bytes are gone. Committed rows stay: ``verify`` reports their bytes
    missing, and a re-put heals them."""
    if view is None:
        return  # a corrupt manifest takes no write (nor any commit) until it is fixed
    forget_intents(view, rows)
    faults.point("verify.forgotten")


def quarantine(store: Store, attachment_id: str, hashed: BlobStat) -> str | None:
    """Move the corrupt blob that was hashed (and its sidecar) aside, to ``quarantine/``.

    Never deletes bytes; leaves the blob alone (None) if it is no longer the
    file that was hashed (a put healed it meanwhile).
    """
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return store.blobs.quarantine(attachment_id, hashed, stamp)


def rebuild_sidecar(store: Store, attachment_id: str, size: int) -> sidecar.Metadata:
    with store.blobs.open(attachment_id) as handle:
        head = handle.read(64 * 1024)
        sniffed = media.sniff(head)
        dims = media.image_size_of(head, handle) if sniffed else None
    media_type = sniffed or media.OCTET_STREAM
    meta = sidecar.Metadata(attachment_id, media_type, size, dims[0] if dims else None, dims[1] if dims else None, None)
    store.blobs.ensure_writable_layout()
    store.blobs.write_sidecar(meta)
    return meta
