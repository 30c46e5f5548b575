"""Operations that combine the blob store and the manifest.

Each returns plain dataclasses for the CLI to render; none imports typer or
rich. Destructive operations hold the manifest lock and derive every path from
a validated id.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Iterator

from lashctl import media, sidecar
from lashctl.errors import Corrupt, LashctlError, NotFound, Refused, StoreIOError, UsageError
from lashctl.ids import IdQuery, is_utf8_text
from lashctl.backends.jsonl_log import (
    Manifest,
    ManifestState,
    Row,
    Warn,
    commit_event,
    forget_event,
    intent_event,
)
from lashctl.backends.localfs import CHUNK, BlobStore, StagedBlob, unique_suffix
from lashctl.text import has_control
from lashctl.timefmt import now_ms

MIN_GRACE_MS = 60_000
DEFAULT_GRACE = "24h"
# A put batch shares one lock acquisition, one manifest fsync and one fsync
# per shard directory; batches bound the staging space held at once.
PUT_BATCH_FILES = 2048
PUT_BATCH_BYTES = 512 * 1024 * 1024
MAX_SESSION_LEN = 1024


class Store:
    """A lash attachment store: blobs under ``root`` and a manifest."""

    def __init__(
        self,
        root: Path,
        manifest_path: Path | None = None,
        lock_timeout: float = 30.0,
        warn: Warn | None = None,
        note: Warn | None = None,
    ) -> None:
        self.root = Path(root)
        # Detail for -v only (why the state cache was not used), said once per command.
        self.note = _once(note) if note is not None else None
        self.blobs = BlobStore(self.root)
        if manifest_path is None:
            # The manifest lives in the root: a symlinked or foreign root stops
            # the manifest commands too, not only those that touch blobs.
            self.blobs.check_root()
        kwargs = {} if warn is None else {"warn": warn}
        self.manifest = Manifest(
            Path(manifest_path) if manifest_path else self.root / "manifest.jsonl",
            lock_timeout=lock_timeout,
            **kwargs,
        )

    def warn(self, message: str) -> None:
        self.manifest.warn(message)

    def index(self):
        """The manifest's state index (a rebuildable cache of the fold), refreshed."""
        from lashctl.backends.jsonl_cache import ManifestIndex

        index = ManifestIndex(self.manifest, note=self.note)
        index.refresh()
        return index


def _once(say: Warn) -> Warn:
    said: set[str] = set()

    def once(message: str) -> None:
        if message not in said:
            said.add(message)
            say(message)

    return once


def validate_session(session: str | None) -> str:
    if session is None or not session.strip():
        raise UsageError("a session is required: pass --session/-s or set LASHCTL_SESSION")
    if len(session) > MAX_SESSION_LEN:
        raise UsageError(f"--session is longer than {MAX_SESSION_LEN} characters")
    # The class the escaper shows escaped: such a session id could not be
    # shown to a person as it is.
    if has_control(session):
        raise UsageError(f"--session '{session}' contains control, bidi or line separator characters")
    if not is_utf8_text(session):
        raise UsageError(f"--session '{session}' is not valid UTF-8")
    return session


# -- ids -----------------------------------------------------------------------
def resolve_id(
    store: Store,
    query: IdQuery,
    state: object = None,
) -> str:
    """Resolve a full id or unique prefix against blobs and manifest rows.

    A full id resolves to itself without touching anything. ``state`` is
    anything with ``ids_with_prefix`` (a ManifestState or a ManifestIndex), a
    callable giving one (called only when a prefix needs it), or None to
    match blobs only.
    """
    if query.is_full:
        return query.hex
    matches = set(store.blobs.iter_ids(query.hex))
    if callable(state):
        state = state()
    if state is not None:
        matches.update(state.ids_with_prefix(query.hex))
    if not matches:
        raise NotFound(f"no blob or manifest row matches id prefix {query.hex!r}")
    if len(matches) > 1:
        shown = ", ".join(sorted(matches)[:5]) + (", ..." if len(matches) > 5 else "")
        raise UsageError(
            f"id prefix {query.hex!r} is ambiguous: it matches {len(matches)} ids ({shown})"
        )
    return matches.pop()


def resolve_ids(store: Store, queries: list[IdQuery], state: ManifestState | None) -> list[str]:
    return [resolve_id(store, q, state) for q in queries]


def precheck_prefixes(store: Store, queries: list[IdQuery]) -> None:
    """Reject ambiguous prefixes before a command takes the lock or creates anything.

    Resolution is repeated under the lock; this pass only makes a usage error
    leave the store exactly as it was.
    """
    prefixes = [q for q in queries if not q.is_full]
    if not prefixes:
        return
    with store.index() as index:
        for query in prefixes:
            try:
                resolve_id(store, query, index)
            except NotFound:
                pass


# -- put -----------------------------------------------------------------------
@dataclass
class PutSource:
    """One input to ``put``: a file path, or ``-`` for standard input."""

    name: str
    opener: Callable[[], BinaryIO]
    label: str | None

    @classmethod
    def from_path(cls, path: str, stdin: Callable[[], BinaryIO]) -> "PutSource":
        if path == "-":
            return cls(name="-", opener=stdin, label=None)
        return cls(name=path, opener=lambda: open(path, "rb"), label=utf8_label(os.path.basename(path)))


def utf8_label(name: str) -> str | None:
    """A file name as a sidecar label: undecodable bytes become U+FFFD."""
    if not name:
        return None
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


@dataclass
class PutOptions:
    session: str
    media_type: str | None = None
    label: str | None = None
    width: int | None = None
    height: int | None = None


@dataclass
class PutResult:
    attachment_id: str
    path: str
    byte_len: int
    media_type: str
    label: str | None
    width: int | None
    height: int | None
    deduplicated: bool


def check_put_sources(paths: list[str]) -> None:
    """Fail fast (exit 2) on inputs that cannot be read, before anything is written."""
    if paths.count("-") > 1:
        raise UsageError("'-' (standard input) can be given only once")
    for path in paths:
        if path == "-":
            continue
        try:
            st = os.stat(path)
        except OSError as exc:
            raise UsageError(f"cannot read input {path}: {exc.strerror}") from exc
        if stat.S_ISDIR(st.st_mode):
            raise UsageError(f"input {path} is a directory")
        if not os.access(path, os.R_OK):
            raise UsageError(f"cannot read input {path}: permission denied")


def put(
    store: Store,
    sources: Iterable[PutSource],
    options: PutOptions,
    progress: Callable[[int], None] | None = None,
) -> Iterator[PutResult]:
    """Store each source; yield results in input order, batch by batch.

    Per batch, the write-ahead order is: stream every input into ``tmp/``
    while hashing (fsync each) -> append all intents durably (one lock, one
    write, one fsync) -> rename each blob into place -> fsync the shard
    directories -> write the sidecars. A crash at any point leaves blobs only
    where an intent already records them.
    """
    validate_session(options.session)
    explicit_type = (
        media.normalize_mime(options.media_type) if options.media_type is not None else None
    )
    batch: list[tuple[PutSource, StagedBlob]] = []
    batch_bytes = 0
    with store.blobs.opened():
        store.blobs.ensure_writable_layout()
        try:
            for source in sources:
                staged = _stage_source(store, source, progress)
                batch.append((source, staged))
                batch_bytes += staged.byte_len
                if len(batch) >= PUT_BATCH_FILES or batch_bytes >= PUT_BATCH_BYTES:
                    yield from _land_batch(store, batch, options, explicit_type)
                    batch, batch_bytes = [], 0
            if batch:
                yield from _land_batch(store, batch, options, explicit_type)
                batch = []
        finally:
            for _source, staged in batch:
                store.blobs.discard(staged)


def _stage_source(store: Store, source: PutSource, progress: Callable[[int], None] | None) -> StagedBlob:
    try:
        handle = source.opener()
    except OSError as exc:
        raise StoreIOError.wrap("read input", source.name, exc) from exc
    try:
        return store.blobs.stage(handle, source.name, progress)
    finally:
        if source.name != "-":
            handle.close()


def _land_batch(
    store: Store,
    batch: list[tuple[PutSource, StagedBlob]],
    options: PutOptions,
    explicit_type: str | None,
) -> Iterator[PutResult]:
    with store.manifest.locked():
        # Stamped once the lock is held: time spent waiting for it must not
        # come out of the intent's grace period.
        at = now_ms()
        store.manifest.append(
            [intent_event(s.attachment_id, options.session, at) for _, s in batch]
        )
    results: list[PutResult] = []
    metas: list[sidecar.Metadata] = []
    landed: set[str] = set()
    renamed: set[str] = set()  # shards whose entries changed and need an fsync
    for source, staged in batch:
        meta = _metadata_for(store, source, staged, options, explicit_type)
        if staged.attachment_id in landed:
            store.blobs.discard(staged)  # the same bytes twice in one batch
            deduplicated = True
        else:
            deduplicated = store.blobs.install(staged)
            landed.add(staged.attachment_id)
            if not deduplicated:
                renamed.add(staged.attachment_id)
        metas.append(meta)
        results.append(
            PutResult(
                attachment_id=staged.attachment_id,
                path=source.name,
                byte_len=staged.byte_len,
                media_type=meta.media_type,
                label=meta.label,
                width=meta.width,
                height=meta.height,
                deduplicated=deduplicated,
            )
        )
    for meta in metas:
        if store.blobs.write_sidecar(meta, sync_dir=False):
            renamed.add(meta.attachment_id)
    # One directory fsync per shard makes both the blob and sidecar renames durable.
    store.blobs.fsync_shards(renamed)
    yield from results


def _metadata_for(
    store: Store,
    source: PutSource,
    staged: StagedBlob,
    options: PutOptions,
    explicit_type: str | None,
) -> sidecar.Metadata:
    media_type = (
        explicit_type
        or media.sniff(staged.head)
        or (media.guess_from_name(source.name) if source.name != "-" else None)
        or media.OCTET_STREAM
    )
    width, height = options.width, options.height
    if (width is None or height is None) and media.sniff(staged.head) is not None:
        with store.blobs.open_staged(staged) as stream:
            size = media.image_size(stream)
        if size is not None:
            width = size[0] if width is None else width
            height = size[1] if height is None else height
    label = utf8_label(options.label) if options.label is not None else source.label
    return sidecar.Metadata(
        staged.attachment_id, media_type, staged.byte_len, width, height, label
    )


# -- get -----------------------------------------------------------------------
@dataclass
class BlobInfo:
    attachment_id: str
    path: Path
    sidecar_path: Path
    metadata: sidecar.Metadata | None
    byte_len: int


def blob_info(store: Store, attachment_id: str) -> BlobInfo:
    """Stat a blob and read its sidecar. NotFound if absent; Corrupt if the sidecar is bad.

    A missing sidecar is not an error: ``metadata`` is None (the bytes are there).
    """
    path = store.blobs.blob_path(attachment_id)
    st = store.blobs.entry_stat(attachment_id)  # UnsafePath for a shard that is a symlink
    if st is None:
        raise NotFound(f"no blob {attachment_id} in store {store.root}")
    if not stat.S_ISREG(st.st_mode):
        what = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a regular file"
        raise Corrupt(f"{path} is {what}, not a blob: refusing to follow it")
    side_path = store.blobs.sidecar_path(attachment_id)
    meta = store.blobs.read_sidecar(attachment_id)
    if meta is not None and meta.attachment_id != attachment_id:
        raise Corrupt(f"undecodable sidecar {side_path}: its id is {meta.attachment_id}")
    return BlobInfo(attachment_id, path, side_path, meta, st.st_size)


def copy_verified(store: Store, attachment_id: str, out: BinaryIO) -> int:
    """Stream a blob to ``out``, re-hashing as it flows. Corrupt on a mismatch."""
    digest = hashlib.sha256()
    total = 0
    with store.blobs.open_blob(attachment_id) as handle:
        buffer = bytearray(CHUNK)
        view = memoryview(buffer)
        while True:
            try:
                n = handle.readinto(buffer)
            except OSError as exc:
                raise StoreIOError.wrap("read", store.blobs.blob_path(attachment_id), exc) from exc
            if not n:
                break
            digest.update(view[:n])
            out.write(view[:n])
            total += n
    if digest.hexdigest() != attachment_id:
        raise Corrupt(
            f"hash mismatch: {store.blobs.blob_path(attachment_id)} hashes to "
            f"{digest.hexdigest()}, not its name"
        )
    return total


def get_to_file(store: Store, attachment_id: str, dest: Path) -> int:
    """Write a verified copy to ``dest`` via a temp file; no partial file on failure."""
    dest = Path(dest)
    if dest.is_dir():
        raise UsageError(f"-o {dest} is a directory; give a file path")
    parent = dest.parent
    tmp = parent / f".{dest.name}.{unique_suffix()}.part"
    try:
        handle = open(tmp, "xb")
    except OSError as exc:
        raise StoreIOError.wrap("create", tmp, exc) from exc
    try:
        with handle:
            total = copy_verified(store, attachment_id, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, dest)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise StoreIOError.wrap("write", dest, exc) from exc
        raise
    return total


# -- delete --------------------------------------------------------------------
@dataclass
class DeleteResult:
    attachment_id: str
    existed: bool
    byte_len: int
    sessions: list[str]
    dry_run: bool


def delete(store: Store, queries: list[IdQuery], force: bool = False, dry_run: bool = False) -> list[DeleteResult]:
    """Content-addressed delete of blobs and sidecars, refused while rows reference them.

    Refuses (Refused, exit 4, nothing deleted) if any id is referenced by a
    manifest row, naming the sessions, unless ``force``. Absent blobs succeed.
    """
    if dry_run:
        with store.blobs.opened():
            return _delete_locked(store, queries, force, dry_run)
    precheck_prefixes(store, queries)
    with store.manifest.locked(), store.blobs.opened():
        return _delete_locked(store, queries, force, dry_run)


def _delete_locked(store: Store, queries: list[IdQuery], force: bool, dry_run: bool) -> list[DeleteResult]:
    store.blobs.check_layout()
    state = store.manifest.read_state()
    ids = list(dict.fromkeys(resolve_ids(store, queries, state)))
    referenced = {i: sorted({r.session_id for r in state.rows_for(i)}) for i in ids}
    if not force:
        blocked = [(i, s) for i, s in referenced.items() if s]
        if blocked:
            detail = "; ".join(f"{i} by session(s) {', '.join(s)}" for i, s in blocked)
            raise Refused(
                f"refusing to delete content that manifest rows reference: {detail} "
                "(it would vanish for every session; use --force to delete anyway)"
            )
    results = []
    for attachment_id in ids:
        st = store.blobs.entry_stat(attachment_id)
        present = st is not None
        size = st.st_size if st is not None and stat.S_ISREG(st.st_mode) else 0
        if not dry_run:
            store.blobs.delete(attachment_id)
        results.append(DeleteResult(attachment_id, present, size, referenced[attachment_id], dry_run))
    if not dry_run:
        store.blobs.fsync_shards(ids)
    return results


# -- list-uncommitted ------------------------------------------------------------
@dataclass
class UncommittedRow:
    row: Row
    bytes_present: bool
    byte_len: int | None
    media_type: str | None
    label: str | None


def list_uncommitted(
    store: Store, cutoff: int | None = None, session: str | None = None,
    malformed: list[Corrupt] | None = None,
) -> list[UncommittedRow]:
    """Uncommitted rows with intent at or before ``cutoff`` (all if None), oldest first."""
    return list(iter_uncommitted(store, cutoff, session, malformed))


def iter_uncommitted(
    store: Store, cutoff: int | None = None, session: str | None = None,
    malformed: list[Corrupt] | None = None,
) -> Iterator[UncommittedRow]:
    """``list_uncommitted`` as a stream from the manifest index: memory does
    not grow with the manifest.

    With a ``malformed`` list, a manifest with malformed lines is folded in
    memory, skipping them (listed there), instead of stopping the listing.
    """
    shards: dict[str, bool] = {}
    try:
        index = store.index()
    except Corrupt:
        if malformed is None:
            raise
        state = store.manifest.read_state(tolerant=True)
        malformed.extend(state.malformed)
        rows = sorted((r for r in state.rows.values()
                       if r.committed_at_epoch_ms is None
                       and (cutoff is None or r.intent_at_epoch_ms <= cutoff)
                       and (session is None or r.session_id == session)),
                      key=lambda r: (r.intent_at_epoch_ms, r.attachment_id, r.session_id))
        for row in rows:
            yield _describe_row(store, row, shards)
        return
    with index:
        for row in index.uncommitted(cutoff, session):
            yield _describe_row(store, row, shards)


def _describe_row(store: Store, row: Row, shards: dict[str, bool]) -> UncommittedRow:
    prefix = row.attachment_id[:2]
    if prefix not in shards:
        shards[prefix] = store.blobs.shard_is_real(row.attachment_id)
    if not shards[prefix]:  # no shard directory: neither bytes nor sidecar
        return UncommittedRow(row, False, None, None, None)
    st = store.blobs.blob_stat(row.attachment_id)
    meta = None
    try:
        meta = store.blobs.read_sidecar(row.attachment_id)
    except LashctlError as exc:
        store.warn(exc.message)
    return UncommittedRow(
        row=row,
        bytes_present=st is not None,
        byte_len=st.st_size if st is not None else (meta.byte_len if meta else None),
        media_type=meta.media_type if meta else None,
        label=meta.label if meta else None,
    )


# -- commit --------------------------------------------------------------------
COMMITTED = "committed"
ALREADY_COMMITTED = "already_committed"
NO_INTENT = "no_intent"


@dataclass
class CommitResult:
    attachment_id: str
    session_id: str
    status: str


def commit(store: Store, session: str, queries: list[IdQuery]) -> list[CommitResult]:
    """Stamp the session's rows committed; report each id's status."""
    validate_session(session)
    precheck_prefixes(store, queries)
    with store.manifest.locked(), store.index() as index:
        # The index reads only what was appended since its last use: a commit
        # costs the same on a million-row manifest as on an empty one. It is
        # never trusted to skip a write, though: every row it knows gets a
        # commit event (on a committed row the fold ignores it), and a row it
        # does not know is looked up in the log before "no intent" is said.
        at = now_ms()
        resolved: list[str | None] = []
        for query in queries:
            try:
                resolved.append(resolve_id(store, query, index))
            except NotFound:
                resolved.append(None)
        rows = index.rows_for_keys([(session, i) for i in resolved if i is not None])
        unknown = [n for n, i in enumerate(resolved) if i is None or (session, i) not in rows]
        if unknown and not index.using_fallback:
            log = store.manifest.read_state()
            for n in unknown:
                if resolved[n] is None:
                    try:
                        resolved[n] = resolve_id(store, queries[n], log)
                    except NotFound:
                        continue
                key = (session, resolved[n])
                if key in log.rows:
                    rows[key] = log.rows[key]  # type: ignore[index]
        results, events, done = [], [], set()
        for query, attachment_id in zip(queries, resolved):
            row = rows.get((session, attachment_id)) if attachment_id is not None else None
            if row is None:
                status = NO_INTENT
            elif attachment_id in done:
                status = ALREADY_COMMITTED
            else:
                events.append(commit_event(attachment_id, session, at))
                done.add(attachment_id)
                status = ALREADY_COMMITTED if row.committed else COMMITTED
            results.append(CommitResult(attachment_id or query.hex, session, status))
        store.manifest.append(events)
    return results


# -- reclaim -------------------------------------------------------------------
RECLAIM = "reclaim"
RELEASE = "release"
FAILED = "failed"


@dataclass
class ReclaimItem:
    attachment_id: str
    action: str  # reclaim | release | failed
    sessions: list[str]  # the sessions whose aged rows this item forgets
    byte_len: int  # the blob's size (0 when absent); freed only when action is reclaim
    bytes_present: bool
    reason: str
    error: str | None = None


@dataclass
class ReclaimReport:
    cutoff_epoch_ms: int
    dry_run: bool
    scanned_intents: int = 0
    items: list[ReclaimItem] = field(default_factory=list)

    @property
    def blobs_reclaimed(self) -> int:
        return sum(1 for i in self.items if i.action == RECLAIM)

    @property
    def bytes_freed(self) -> int:
        return sum(i.byte_len for i in self.items if i.action == RECLAIM)

    @property
    def rows_released(self) -> int:
        return sum(len(i.sessions) for i in self.items if i.action == RELEASE)

    @property
    def failures(self) -> list[ReclaimItem]:
        return [i for i in self.items if i.action == FAILED]


def check_grace(cutoff: int, now: int, force: bool, option: str = "cutoff") -> None:
    if cutoff > now - MIN_GRACE_MS and not force:
        what = "a cutoff less than 1 minute in the past" if option == "cutoff" else f"{option} under 1 minute"
        raise Refused(
            f"refusing {what}: puts in flight could be swept (use --force if no writer is running)"
        )


def plan_reclaim(state: ManifestState, cutoff: int) -> tuple[int, list[tuple[str, list[Row], str | None]]]:
    """Which blobs a sweep at ``cutoff`` reclaims or releases.

    Returns the number of aged rows (uncommitted, intent at or before the
    cutoff) and, per blob id with aged rows, ``(id, aged rows, live reason)``:
    a live reason means release.
    """
    scanned = 0
    aged_by_id: dict[str, list[Row]] = {}
    for row in state.rows.values():
        if row.committed_at_epoch_ms is None and row.intent_at_epoch_ms <= cutoff:
            scanned += 1
            aged_by_id.setdefault(row.attachment_id, []).append(row)
    plan = []
    for attachment_id, aged in aged_by_id.items():
        live = None
        for row in state.rows_for(attachment_id):
            if row.committed:
                live = f"session {row.session_id} committed it"
                break
            if row.intent_at_epoch_ms > cutoff:
                live = f"session {row.session_id} has a recent intent"
        aged.sort(key=lambda r: r.session_id)
        plan.append((attachment_id, aged, live))
    plan.sort(key=lambda p: (min(r.intent_at_epoch_ms for r in p[1]), p[0]))
    return scanned, plan


def reclaim(
    store: Store, cutoff: int, dry_run: bool = False, progress: Callable[[int], None] | None = None,
    planned: Callable[[int], None] | None = None,
) -> ReclaimReport:
    """Sweep orphans: delete bytes no live row needs; forget the aged rows.

    A dry run takes no lock and reads a snapshot; it reports exactly the items
    a real run on the same state acts on. ``planned`` is told how many blobs
    the sweep will handle (``progress`` is then called once per blob): the
    plan is made under the lock, so only the sweep itself knows it.
    """
    if dry_run:
        with store.blobs.opened():
            return _reclaim(store, cutoff, True, progress, planned)
    with store.manifest.locked(), store.blobs.opened():
        return _reclaim(store, cutoff, False, progress, planned)


def _reclaim(store: Store, cutoff: int, dry_run: bool, progress: Callable[[int], None] | None,
             planned: Callable[[int], None] | None = None) -> ReclaimReport:
    store.blobs.check_layout()
    state = store.manifest.read_state()
    scanned, plan = plan_reclaim(state, cutoff)
    if planned is not None:
        planned(len(plan))
    report = ReclaimReport(cutoff_epoch_ms=cutoff, dry_run=dry_run, scanned_intents=scanned)
    forgets: list[dict] = []
    touched: list[str] = []
    items: dict[str, ReclaimItem] = {}
    # Work in id order, shard by shard: deletes then walk each directory once,
    # which the file system serves far faster than a random order.
    for attachment_id, aged, live in sorted(plan, key=lambda p: p[0]):
        sessions = [r.session_id for r in aged]
        st = store.blobs.blob_stat(attachment_id)
        size = st.st_size if st is not None else 0
        present = st is not None
        if live is not None:
            item = ReclaimItem(attachment_id, RELEASE, sessions, size, present, f"kept: {live}")
        else:
            item = ReclaimItem(attachment_id, RECLAIM, sessions, size, present,
                               "orphan: no live row" + ("" if present else "; bytes already gone"))
            problem = store.blobs.delete_problem(attachment_id)
            if problem is not None:
                # The dry run says what the real run will do: this delete fails.
                item.action, item.error = FAILED, problem
            elif not dry_run:
                try:
                    item.byte_len = store.blobs.delete(attachment_id)
                    touched.append(attachment_id)
                except LashctlError as exc:
                    item.action, item.error = FAILED, exc.message
        if progress is not None:
            progress(1)
        if item.action != FAILED:
            forgets.extend(forget_event(attachment_id, r.session_id) for r in aged)
        items[attachment_id] = item
    report.items = [items[attachment_id] for attachment_id, _aged, _live in plan]
    if not dry_run:
        store.blobs.fsync_shards(touched)
        store.manifest.append(forgets)
    return report
