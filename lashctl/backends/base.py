"""The two storage seams: where blob bytes live and where the manifest lives.

The core (``lashctl.core``, ``lashctl.sweep``, ``lashctl.inspect``) talks to a
store only through these interfaces; a backend is the only code that touches
its medium (the file system, an object store, a database). The format each
backend keeps is the store format (docs/store-format.md); how to add a
backend is docs/backends.md.

Each backend class subclasses its interface: the methods without a body are
what it must provide; the capabilities with a body (``stat_many``,
``parallel_reads``, ``confirm``, ``blocks_writers``, ...) are defaults that
are correct for any backend, which a backend overrides where it can do
better (one request for many, a lock that does not stop writers). Nothing
above the backends asks whether a backend has a method.

Every id passed in has been validated (``lashctl.ids.is_valid_id``); a backend
builds object names from such ids only and checks again.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import TYPE_CHECKING, BinaryIO, Callable, ContextManager, Iterable, Iterator, Protocol, Sequence

from lashctl.fold import Event, Row
from lashctl.record import FrozenRecord, Record

if TYPE_CHECKING:
    from pathlib import Path

    from lashctl.sidecar import Metadata

Progress = Callable[[int], None]

# Kinds of object a listing can find (BlobStat.kind).
FILE, SYMLINK, DIRECTORY, OTHER = "file", "symlink", "directory", "other"

# Layouts (README, "Two layouts"): lash-core 0.1.0-alpha.85 writes a sidecar
# beside every blob; later lash releases keep no sidecars.
LAYOUT_SIDECARS, LAYOUT_BARE = "sidecars", "bare"
LAYOUT_RECORD = "lashctl-layout"  # at the root (or prefix): "sidecars\n" or "bare\n"
LAYOUT_RECORD_LIMIT = 4096  # bytes read of a record at most: a larger one is refused unread

# Kinds of manifest (ManifestBackend.kind).
JSONL, POSTGRES, LASH_SQLITE = "jsonl", "postgres", "lash-sqlite"


def parse_layout_record(data: bytes, where: str) -> str:
    """The layout a record names: exactly ``sidecars`` or ``bare``, with
    optional spaces, tabs and line ends around it. Corrupt for anything else,
    a record larger than ``LAYOUT_RECORD_LIMIT`` bytes included."""
    from lashctl.errors import Corrupt

    check_layout_record_size(len(data), where)
    text = data.decode("ascii", "replace").strip(" \t\r\n")
    if text not in (LAYOUT_SIDECARS, LAYOUT_BARE):
        raise Corrupt(f"{where} does not name a layout (sidecars or bare): fix or delete it")
    return text


def check_layout_record_size(size: int, where: str) -> None:
    """Corrupt for a record larger than ``LAYOUT_RECORD_LIMIT`` bytes (refused unread)."""
    from lashctl.errors import Corrupt

    if size > LAYOUT_RECORD_LIMIT:
        raise Corrupt(
            f"{where} is larger than {LAYOUT_RECORD_LIMIT} bytes: it does not name a layout "
            "(sidecars or bare): fix or delete it"
        )


def same_layout_record(recorded: str | None, layout: str, store: str) -> bool:
    """After a record could not be made because one exists: False when it
    names ``layout`` (nothing to record), Refused (exit 4) when it names another."""
    from lashctl.errors import Refused

    if recorded is not None and recorded != layout:
        raise Refused(
            f"store {store} records layout {recorded}: refusing to record {layout} "
            "(recorded meanwhile by another lashctl)"
        )
    return False


class BlobStat(FrozenRecord):
    """What a backend knows of one stored object, in neutral terms.

    ``mtime_ms``: last modification (LastModified on an object store);
    ``kind``: FILE | SYMLINK | DIRECTORY | OTHER; ``links``: hard links (1
    where the medium has none); ``size_on_disk``: allocated bytes, where the
    medium says; ``token``: identity for compare-and-move, (dev, ino, size,
    mtime) or an ETag.
    """

    size: int
    mtime_ms: int
    kind: str
    links: int
    size_on_disk: int | None
    token: object
    __slots__ = ("size", "mtime_ms", "kind", "links", "size_on_disk", "token")

    def __init__(
        self,
        size: int,
        mtime_ms: int,
        kind: str = FILE,
        links: int = 1,
        size_on_disk: int | None = None,
        token: object = None,
    ) -> None:
        self._set(size, mtime_ms, kind, links, size_on_disk, token)

    @property
    def is_file(self) -> bool:
        return self.kind == FILE


class Staged(Record):
    """Bytes received and hashed, not yet visible under their id. ``head``:
    the first bytes, for sniffing the media type; ``handle``: the backend's
    own (a temp file, a spool)."""

    __slots__ = ("attachment_id", "byte_len", "head", "handle")

    def __init__(self, attachment_id: str, byte_len: int, head: bytes, handle: object) -> None:
        self.attachment_id = attachment_id
        self.byte_len = byte_len
        self.head = head
        self.handle = handle


class Found(FrozenRecord):
    """One object a sweep listing found that is not simply a blob by its id.

    ``area`` is ``"blobs"`` (under ``sha256/``) or ``"staging"`` (litter of an
    interrupted write: ``tmp/``, an unfinished multipart upload, a
    compaction's leftover beside the manifest). ``name`` is relative to the
    area (``ab/abcd….json``); ``where`` is how to show it to a person;
    ``handle`` is what the backend needs to remove exactly this; ``reason``,
    for staging litter, what left it.
    """

    area: str
    name: str
    where: str
    stat: BlobStat
    handle: object
    reason: str | None
    __slots__ = ("area", "name", "where", "stat", "handle", "reason")

    def __init__(
        self, area: str, name: str, where: str, stat: BlobStat, handle: object = None, reason: str | None = None
    ) -> None:
        self._set(area, name, where, stat, handle, reason)


class BlobBackend(Protocol):
    """Content-addressed bytes and their metadata sidecars."""

    name: str  # the root as a person would write it (a path, s3://bucket/prefix)
    layout: str  # LAYOUT_SIDECARS or LAYOUT_BARE
    #: How many blob reads are worth running at once (an object store's reads
    #: are requests: ``verify`` streams that many hashes ahead). 1: one at a time.
    parallel_reads: int = 1

    def stat_many(self, attachment_ids: list[str]) -> dict[str, BlobStat | None]:
        """The stat of many blobs; None for one absent or behind an unsafe
        shard (its delete says why). Default: one ``stat`` after another; a
        backend whose stats are requests sends them concurrently."""
        from lashctl.errors import UnsafePath

        out: dict[str, BlobStat | None] = {}
        for attachment_id in attachment_ids:
            try:
                out[attachment_id] = self.stat(attachment_id)
            except UnsafePath:
                out[attachment_id] = None
        return out

    def absent_shards(self, shards: set[str]) -> set[str] | None:
        """Of these shard names (first two hex digits), those where neither a
        blob nor a sidecar can exist, from one look; None where the backend
        cannot tell at that cost (default). list-uncommitted writes rows of
        such shards without looking for each blob."""
        return None

    def opened(self) -> ContextManager[object]:
        """Hold connections / directory descriptors for a batch of calls."""

    def check_root(self) -> None:
        """Refuse (UnsafePath) a root that is unsafe to use; an absent root is fine."""

    def check_layout(self) -> None:
        """Refuse (UnsafePath) an unsafe layout before a sweep touches anything."""

    def ensure_writable_layout(self) -> None:
        """Create what writes need (directories, nothing on an object store); refuse an unsafe layout."""

    def exists(self) -> bool:
        """Whether the root exists (a named root that does not is a usage error)."""

    def where(self, attachment_id: str, sidecar: bool = False) -> str:
        """How to show a blob (or its sidecar) to a person."""

    def stat(self, attachment_id: str, sidecar: bool = False) -> BlobStat | None:
        """The blob (or sidecar) object, None if absent; never follows a link."""

    def discard_pending(self) -> None:
        """Remove every staging file this process made that has not landed
        (a put stopped by an error or a signal): noted before each exists."""

    def recorded_layout(self) -> str | None:
        """The layout recorded when the store was made (``lashctl init``), None if none is."""

    def record_layout(self, layout: str) -> bool:
        """Record the store's layout (outside ``sha256/``, where lash never
        looks) unless one is recorded: True if this call recorded it, False if
        the same was already recorded, Refused if another is (two inits at once)."""

    def date_blob(self, attachment_id: str, mtime_ms: int) -> bool:
        """Set the blob's modification time (a migration keeps its source's, so
        that sweeps judge a copy's age as the original's); whether the backend
        could (an object store cannot: its objects are as new as their copy)."""

    def read_sidecar(self, attachment_id: str) -> "Metadata | None":
        """The sidecar, None if absent; Corrupt if it is not one."""

    def write_sidecar(self, meta: "Metadata", durable: bool = True) -> bool:
        """Write (replace) a sidecar atomically; whether anything changed.
        With ``durable=False`` a later ``sync`` makes it durable."""

    def stage(self, source: BinaryIO, source_name: str, progress: Progress | None = None) -> Staged:
        """Receive bytes durably where no reader sees them, hashing as they flow."""

    def open_staged(self, staged: Staged) -> BinaryIO:
        """Read staged bytes back (to read image dimensions)."""

    def discard(self, staged: Staged) -> None:
        """Drop staged bytes."""

    def install(self, staged: Staged) -> bool:
        """Make staged bytes visible under their id; True if they were already
        there intact (a dedup hit, which refreshes the object's modification
        time). Bytes already there that do not hash to the id are replaced."""

    def sync(self, attachment_ids: Iterable[str]) -> None:
        """Make the installs and deletes of these ids durable (one call per batch)."""

    def land(self, items: "list[tuple[Staged, Metadata | None]]") -> list[bool]:
        """Install a batch of staged blobs of distinct ids, each only after its
        sidecar (None: no sidecar is written), all durable on return; per item,
        what ``install`` returned. A crash leaves no blob without its sidecar."""

    def open(self, attachment_id: str) -> BinaryIO:
        """A stream of the blob's bytes; NotFound if absent, Corrupt if not a file."""

    def hash(self, attachment_id: str, progress: Progress | None = None) -> tuple[str, BlobStat]:
        """Re-hash a blob: (hex digest, the stat of exactly what was hashed)."""

    def iter_ids(self, prefix: str = "") -> Iterator[str]:
        """Ids of the blobs present, in id order (a sweep merges on it)."""

    def walk(self) -> Iterator[Found]:
        """Everything under the store that is not a well-formed blob or its
        sidecar beside it: strays, sidecars, staging litter. Sidecars whose blob
        exists are not listed."""

    def remove(self, found: Found) -> None:
        """Delete exactly what ``walk`` found (never a directory, never via a link)."""

    def delete_problem(self, attachment_id: str) -> str | None:
        """Why ``delete`` would fail (said by a dry run), or None."""

    def delete(self, attachment_id: str) -> int:
        """Delete a blob and its sidecar; the bytes freed (0 if absent)."""

    def delete_many(
        self, attachment_ids: list[str], known: "dict[str, BlobStat | None] | None" = None
    ) -> dict[str, int | str]:
        """Delete many blobs: per id the bytes freed or the reason it failed.
        ``known``: stats the caller just took, which spare the backend a look."""

    def quarantine(self, attachment_id: str, hashed: BlobStat, stamp: str) -> str | None:
        """Move a corrupt blob (and sidecar) aside if it is still ``hashed``;
        where it went, or None if it changed meanwhile."""


class ManifestView(Protocol):
    """Queries on a manifest's folded state (docs/store-format.md, "The manifest")."""

    #: Set by an inspection (``verify``) on a database's view: a row that is
    #: not valid is skipped and named in ``malformed`` instead of raising.
    tolerant: bool = False
    #: What a tolerant read skipped (Corrupt per line or row), once read.
    malformed: Sequence = ()
    #: A torn final line seen (a crashed append to a log); False for a database.
    torn_tail: bool = False
    #: The lines of a log (``stats`` shows what compaction would leave); None for a database.
    log_lines: int | None = None

    def rows_for_keys(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], Row]:
        """The rows for (session_id, attachment_id) keys that exist."""

    def rows_for_id(self, attachment_id: str) -> list[Row]:
        """Every row of one id, by session."""

    def ids_with_prefix(self, prefix: str) -> list[str]:
        """Ids with a row whose id starts with ``prefix``, sorted."""

    def uncommitted(self, cutoff_ms: int | None, session: str | None) -> Iterator[Row]:
        """Uncommitted rows with intent at or before the cutoff, oldest first (streamed)."""

    def aged(self, cutoff_ms: int) -> Iterator[list[Row]]:
        """Reclaim candidates in id order: for each id with an uncommitted row
        at or before the cutoff, every row of that id (streamed)."""

    def rows_by_id(self, prefix: str = "") -> Iterator[list[Row]]:
        """Every row grouped by id, in id order (streamed; sweeps merge on it)."""

    def row_count(self) -> int:
        """How many rows there are."""

    def keep_reason(self, row: Row) -> str | None:
        """Why an aged uncommitted row must be kept although no session
        committed it (its owner is not proven dead), or None."""

    def rows_for_ids(self, attachment_ids: list[str]) -> dict[str, list[Row]]:
        """The rows of many ids (every id a key). Default: ``rows_for_id``
        each; a database answers in one query."""
        return {i: self.rows_for_id(i) for i in attachment_ids}

    def confirm(self, attachment_ids: Iterable[str]) -> dict[str, list[Row]]:
        """The rows of a sweep's candidates from the manifest's source of
        truth. Default: the view is the truth (a thousand ids per query); a
        view answering from a cache reads them from its log instead."""
        ids = list(attachment_ids)
        out: dict[str, list[Row]] = {}
        for start in range(0, len(ids), 1000):
            out.update(self.rows_for_ids(ids[start : start + 1000]))
        return out

    def check_sweep_clock(self) -> None:
        """Refuse (exit 4) a sweep whose ages this machine's clock cannot
        judge (a shared database whose server says the clock runs ahead).
        The sweep lock checks it; a dry run asks here, so that it is refused
        as the real run would be. Default: nothing to compare with."""

    def check_ids(self) -> None:
        """Refuse (Corrupt) before a destructive command acts when the
        manifest holds rows its id queries cannot see (a table's row with an
        invalid id). Default: a manifest that cannot hold such rows."""

    def uncommitted_chunks(self, cutoff_ms: int | None, session: str | None) -> Iterator[list[tuple]] | None:
        """``uncommitted`` as raw rows ``(id, session, uri, intent_at)``, in
        chunks as the manifest's database selects them (a listing on a pipe
        renders them with ``lashctl.listing.rendered_uncommitted``); None
        (default) where it cannot: the caller renders ``uncommitted``."""
        return None

    def rendered_row(self, values: tuple) -> Row | None:
        """The uncommitted ``Row`` of a raw row of ``uncommitted_chunks``
        ``(id, session, uri, intent_at)``; None for one a tolerant view
        skipped (and named in ``malformed``)."""
        attachment_id, session_id, uri, intent_at = values
        return Row(session_id, attachment_id, uri, intent_at)


class ManifestWriter(ManifestView, Protocol):
    def append(self, events: list[Event]) -> None:
        """Apply events durably, in order (the fold decides what each does)."""


class ManifestBackend(Protocol):
    name: str  # as a person would write it (a path, a URL without the password)
    kind: str  # JSONL, POSTGRES or LASH_SQLITE: what the commands tell people it is
    #: The file of a manifest kept in one (a log); None for a database.
    path: "Path | None" = None
    #: Whether a sweep's lock stops every writer (a log's flock). A manifest
    #: whose writers run beside a sweep (a database lash writes to) is
    #: re-read by the sweep before and after each delete.
    blocks_writers: bool = True

    def identity(self) -> str:
        """What tells two manifests apart (a real path, a normalised URL):
        a migration refuses to copy a manifest onto itself."""

    def check_readable(self) -> None:
        """Refuse at once what would hang a read (a FIFO where a file should
        be). Default: nothing can."""

    def locked(self) -> ContextManager[object]:
        """The writers' lock alone, without reading the manifest (``verify
        --fix`` keeps writers off a log it cannot read while blobs move).
        Default: nothing to hold (a database that cannot be read is only reported)."""
        return nullcontext()

    def inspecting(self) -> ContextManager[ManifestView]:
        """A view for a read-only inspection (``show``, ``ls``, ``stats``).
        Default: ``reading()``. A log folds past its malformed lines (each
        named in ``malformed``) rather than stopping the inspection."""
        return self.reading()

    def exists(self) -> bool:
        """Whether the manifest exists (a named one that does not is a usage error)."""

    def check_writable(self) -> None:
        """Refuse (Corrupt/UnsafePath) a manifest a writer must not touch."""

    def reading(self, tolerant: bool = False) -> ContextManager[ManifestView]:
        """A consistent view for a read-only command; takes no writer lock.
        ``tolerant``: rows (lines) that are not valid are skipped and named
        in the view's ``malformed`` rather than stopping the read."""

    def writing(self) -> ContextManager[ManifestWriter]:
        """The writer lock held (flock, a transaction): view and append."""

    def sweeping(self) -> ContextManager[ManifestWriter]:
        """The lock a sweep holds: one sweep at a time, writers never blocked
        for longer than one statement where the backend can arrange it."""

    def litter(self) -> list[Found]:
        """What an interrupted maintenance of the manifest left behind (area "staging")."""

    def remove_litter(self, found: Found) -> None:
        """Delete one item ``litter`` found."""


def uncommitted_where(
    cutoff_ms: int | None, session: str | None, *, suffix: str = "", mark: str = "?"
) -> tuple[str, tuple]:
    """The WHERE clause (and its parameters) of uncommitted rows at or before
    a cutoff, of a session, for a table whose time columns are
    ``committed_at<suffix>`` and ``intent_at<suffix>``, with ``mark`` the
    driver's placeholder."""
    conds: list[str] = [f"committed_at{suffix} IS NULL"]
    params: list[object] = []
    if cutoff_ms is not None:
        conds.append(f"intent_at{suffix} <= {mark}")
        params.append(cutoff_ms)
    if session is not None:
        conds.append(f"session_id = {mark}")
        params.append(session)
    return " AND ".join(conds), tuple(params)


def land_in_order(blobs: BlobBackend, items: "list[tuple[Staged, Metadata | None]]") -> list[bool]:
    """``land`` one request at a time: every sidecar, then every blob, then
    one ``sync`` of the ids whose entries changed."""
    changed: set[str] = set()
    for staged, meta in items:
        if meta is not None and blobs.write_sidecar(meta, durable=False):
            changed.add(staged.attachment_id)
    landed = []
    for staged, _meta in items:
        deduplicated = blobs.install(staged)
        if not deduplicated:
            changed.add(staged.attachment_id)
        landed.append(deduplicated)
    blobs.sync(changed)
    return landed
