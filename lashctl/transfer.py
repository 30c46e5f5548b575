"""Moving bytes and rows in and out: ``put``, ``get``, ``commit`` and ``list-uncommitted``.

Each returns plain dataclasses for the CLI to render; none imports typer or
rich. ``put`` keeps the write-ahead order (README, "Invariants"): the intent
is durable before the bytes are visible under their id.
"""

from __future__ import annotations

import hashlib
import os
import stat
import time
from itertools import islice
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Iterator, cast

from lashctl import faults, media, sidecar
from lashctl.backends import is_url
from lashctl.backends.base import LAYOUT_SIDECARS, Staged
from lashctl.core import Store, precheck_prefixes, resolve_id, validate_session
from lashctl.errors import Corrupt, LashctlError, NotFound, StoreIOError, UsageError
from lashctl.fold import Event, Row
from lashctl.fsutil import Pump, output_to
from lashctl.ids import IdQuery
from lashctl.record import Record
from lashctl.timefmt import MAX_EPOCH_MS, now_ms

CHUNK = 1024 * 1024
# A put batch shares one lock acquisition, one manifest fsync and one fsync
# per shard directory; batches bound the staging space held at once.
PUT_BATCH_FILES = 2048
PUT_BATCH_BYTES = 512 * 1024 * 1024


# -- put -----------------------------------------------------------------------
class PutSource(Record):
    """One input to ``put``: a file path, or ``-`` for standard input."""

    __slots__ = ("name", "opener", "label")

    def __init__(self, name: str, opener: Callable[[], BinaryIO], label: str | None) -> None:
        self.name = name
        self.opener = opener
        self.label = label

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


class PutOptions(Record):
    __slots__ = ("session", "media_type", "label", "width", "height")

    def __init__(
        self,
        session: str,
        media_type: str | None = None,
        label: str | None = None,
        width: int | None = None,
        height: int | None = None,
    ) -> None:
        self.session = session
        self.media_type = media_type
        self.label = label
        self.width = width
        self.height = height


class PutResult(Record):
    __slots__ = ("attachment_id", "path", "byte_len", "media_type", "label", "width", "height", "deduplicated")

    def __init__(
        self,
        attachment_id: str,
        path: str,
        byte_len: int,
        media_type: str,
        label: str | None,
        width: int | None,
        height: int | None,
        deduplicated: bool,
    ) -> None:
        self.attachment_id = attachment_id
        self.path = path
        self.byte_len = byte_len
        self.media_type = media_type
        self.label = label
        self.width = width
        self.height = height
        self.deduplicated = deduplicated


def clock_ms() -> int:
    """Now, as a manifest row may record it: a clock before 1970 or past
    9999 (a dead RTC battery, a faketime) is refused (exit 1), since every
    reader refuses the row it would stamp as corrupt."""
    now = now_ms()
    if not 0 <= now <= MAX_EPOCH_MS:
        raise LashctlError(
            f"the system clock reads {_clock_text(now)}, outside 1970-01-01..9999-12-31: "
            "refusing to stamp a manifest row with it"
        )
    return now


def _clock_text(now: int) -> str:
    try:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now // 1000))
    except (OverflowError, OSError, ValueError):
        return f"{now} ms from 1970"


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
    write, one fsync) -> write the sidecars -> rename each blob into place ->
    fsync the shard directories. A crash at any point leaves blobs only
    where an intent already records them.
    """
    validate_session(options.session)
    clock_ms()
    explicit_type = media.normalize_mime(options.media_type) if options.media_type is not None else None
    batch: list[tuple[PutSource, Staged]] = []
    batch_bytes = 0
    # A manifest no writer may append to stops the put before it makes the
    # directories of a new store (an object store has none to make).
    if not is_url(store.blobs.name) and not store.blobs.exists():
        store.manifest.check_writable()
    with store.blobs.opened():
        store.blobs.ensure_writable_layout()
        # Decided before any blob lands: detected later, a first batch of 8 or
        # more files would find its own blobs without sidecars and call an
        # empty store bare (writing no sidecar, then or ever after).
        _ = store.layout
        try:
            for source in sources:
                staged = _stage_source(store, source, progress)
                faults.point("put.staged")
                batch.append((source, staged))
                batch_bytes += staged.byte_len
                if len(batch) >= PUT_BATCH_FILES or batch_bytes >= PUT_BATCH_BYTES:
                    yield from _land_batch(store, batch, options, explicit_type)
                    batch, batch_bytes = [], 0
            if batch:
                yield from _land_batch(store, batch, options, explicit_type)
                batch = []
        except BaseException:
            # Whatever was staged and has not landed goes, even a file an
            # interrupt left between its creation and the batch that knew it.
            store.blobs.discard_pending()
            raise
        finally:
            for _source, staged in batch:
                store.blobs.discard(staged)


def _stage_source(store: Store, source: PutSource, progress: Callable[[int], None] | None) -> Staged:
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
    batch: list[tuple[PutSource, Staged]],
    options: PutOptions,
    explicit_type: str | None,
) -> Iterator[PutResult]:
    with store.manifest.writing() as manifest:
        # Stamped once the lock is held: time spent waiting for it must not
        # come out of the intent's grace period.
        at = clock_ms()
        manifest.append([Event.intent(s.attachment_id, options.session, at) for _, s in batch])
    metas = [_metadata_for(store, source, staged, options, explicit_type) for source, staged in batch]
    # Each blob lands after its sidecar: a put killed in between leaves a
    # sidecar without a blob (litter gc removes), never a blob without its
    # sidecar, which could make a new store look like one that keeps none.
    sidecars = store.layout == LAYOUT_SIDECARS
    # The same bytes twice in one batch land once, with the sidecar of the
    # last of them (as if they had been put one after the other).
    first: dict[str, int] = {}
    last_meta: dict[str, sidecar.Metadata] = {}
    for n, ((_source, staged), meta) in enumerate(zip(batch, metas)):
        first.setdefault(staged.attachment_id, n)
        last_meta[staged.attachment_id] = meta
    items = [(batch[n][1], last_meta[i] if sidecars else None) for i, n in first.items()]
    landed = dict(zip(first, store.blobs.land(items)))
    results: list[PutResult] = []
    for n, ((source, staged), meta) in enumerate(zip(batch, metas)):
        if first[staged.attachment_id] == n:
            deduplicated = landed[staged.attachment_id]
        else:
            store.blobs.discard(staged)  # the same bytes twice in one batch
            deduplicated = True
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
    yield from results


def _metadata_for(
    store: Store,
    source: PutSource,
    staged: Staged,
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
            size = media.image_size_of(staged.head, stream)
        if size is not None:
            width = size[0] if width is None else width
            height = size[1] if height is None else height
    label = utf8_label(options.label) if options.label is not None else source.label
    return sidecar.Metadata(staged.attachment_id, media_type, staged.byte_len, width, height, label)


# -- get -----------------------------------------------------------------------
class BlobInfo(Record):
    __slots__ = ("attachment_id", "path", "sidecar_path", "metadata", "byte_len")

    def __init__(
        self, attachment_id: str, path: str, sidecar_path: str, metadata: sidecar.Metadata | None, byte_len: int
    ) -> None:
        self.attachment_id = attachment_id
        self.path = path
        self.sidecar_path = sidecar_path
        self.metadata = metadata
        self.byte_len = byte_len


def blob_info(store: Store, attachment_id: str) -> BlobInfo:
    """Stat a blob and read its sidecar. NotFound if absent; Corrupt if the sidecar is bad.

    A missing sidecar is not an error: ``metadata`` is None (the bytes are there).
    """
    path = store.blobs.where(attachment_id)
    st = store.blobs.stat(attachment_id)  # UnsafePath for a shard that is a symlink
    if st is None:
        raise NotFound(f"no blob {attachment_id} in store {store.blobs.name}")
    if not st.is_file:
        what = "a symlink" if st.kind == "symlink" else "not a regular file"
        raise Corrupt(f"{path} is {what}, not a blob: refusing to follow it")
    side_path = store.blobs.where(attachment_id, sidecar=True)
    meta = store.blobs.read_sidecar(attachment_id)
    if meta is not None and meta.attachment_id != attachment_id:
        raise Corrupt(f"undecodable sidecar {side_path}: its id is {meta.attachment_id}")
    return BlobInfo(attachment_id, path, side_path, meta, st.size)


def copy_verified(store: Store, attachment_id: str, out: BinaryIO) -> int:
    """Stream a blob to ``out``, re-hashing as it flows. Corrupt on a mismatch.

    From a file to a descriptor, a thread reads and writes while this one
    hashes (``fsutil.Pump``): a big blob costs about its hash alone."""
    digest = hashlib.sha256()
    total = 0
    where = store.blobs.where(attachment_id)

    def read(buffer: bytearray) -> int:
        try:
            return handle.readinto(buffer) or 0
        except OSError as exc:
            raise StoreIOError.wrap("read", where, exc) from exc

    with store.blobs.open(attachment_id) as handle:
        buffer = bytearray(CHUNK)
        view = memoryview(buffer)
        while n := read(buffer):
            if total and (sink := _descriptor_of(out)) is not None and _descriptor_of(handle) is not None:
                out.flush()  # what ``out`` holds goes first; the thread writes past it
                regular = _is_regular_fd(sink)
                pump = Pump(read, sink, CHUNK, n, buffer, writeback=regular)
                try:
                    for chunk in pump:
                        digest.update(chunk)
                        total += len(chunk)
                    pump.finish()
                except BaseException:
                    pump.abandon(wait=regular)  # a pipe's reader may never read again
                    raise
                break
            digest.update(view[:n])
            out.write(view[:n])
            total += n
    if digest.hexdigest() != attachment_id:
        raise Corrupt(f"hash mismatch: {where} hashes to {digest.hexdigest()}, not its name")
    return total


def _descriptor_of(stream) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both of the last two
        return None


def _is_regular_fd(fd: int) -> bool:
    try:
        return stat.S_ISREG(os.fstat(fd).st_mode)
    except OSError:
        return False


def get_to_file(store: Store, attachment_id: str, dest: Path) -> tuple[int, str | None]:
    """Write a verified copy to ``dest`` (``fsutil.output_to``): a regular
    file is replaced via a staging file, so a failure leaves it as it was; a
    stream (a FIFO, a device) is written into, and a hash mismatch there
    says that what went out cannot be taken back. Returns the bytes written
    and what ``dest`` is when a stream (``fsutil.output_to``), else None."""
    with output_to(dest) as (handle, stream):
        try:
            return copy_verified(store, attachment_id, handle), stream
        except Corrupt as exc:
            if stream is None:
                raise
            raise Corrupt(
                f"{exc.message}; the bytes already written to {dest} ({stream}) cannot be taken back"
            ) from exc


# -- list-uncommitted ------------------------------------------------------------
class UncommittedRow(Record):
    __slots__ = ("row", "bytes_present", "byte_len", "media_type", "label")

    def __init__(
        self, row: Row, bytes_present: bool, byte_len: int | None, media_type: str | None, label: str | None
    ) -> None:
        self.row = row
        self.bytes_present = bytes_present
        self.byte_len = byte_len
        self.media_type = media_type
        self.label = label


def list_uncommitted(
    store: Store,
    cutoff: int | None = None,
    session: str | None = None,
    malformed: list[Corrupt] | None = None,
) -> list[UncommittedRow]:
    """Uncommitted rows with intent at or before ``cutoff`` (all if None), oldest first."""
    return list(iter_uncommitted(store, cutoff, session, malformed))


def iter_uncommitted(
    store: Store,
    cutoff: int | None = None,
    session: str | None = None,
    malformed: list[Corrupt] | None = None,
) -> Iterator[UncommittedRow]:
    """``list_uncommitted`` as a stream from the manifest's uncommitted index:
    memory does not grow with the manifest.

    With a ``malformed`` list, a JSON-lines manifest with malformed lines is
    folded in memory, skipping them (listed there), instead of stopping the listing.
    """
    tolerant = {"tolerant": True} if malformed is not None else {}
    with store.manifest.reading(**tolerant) as view, store.blobs.opened():
        for row in view.uncommitted(cutoff, session):
            yield _describe_row(store, row)
        if malformed is not None:  # known once every row was read (PostgreSQL finds them as it streams)
            malformed.extend(view.malformed)


def iter_uncommitted_rendered(
    store: Store,
    cutoff: int | None,
    session: str | None,
    malformed: list[Corrupt],
    now: int,
    form: str,
) -> Iterator[list[str | UncommittedRow | None]]:
    """``iter_uncommitted`` for a listing on a pipe, in chunks: a row
    without bytes or sidecar comes as the text the listing prints for it
    (``form`` "json" or "tsv", from the template of
    ``listing.rendered_uncommitted`` over the raw rows the manifest's
    database selects: the state cache's SQLite or PostgreSQL), any other
    row as an ``UncommittedRow`` for the caller to render, and a row a
    tolerant view skipped (and noted) as None. Where the manifest cannot
    select rows so (the in-memory fold) every row comes as an ``UncommittedRow``.
    """
    with store.manifest.reading(tolerant=True) as view, store.blobs.opened():
        yield from _rendered_rows(store, view, cutoff, session, now, form)
        malformed.extend(view.malformed)  # known once every row was read


def _rendered_rows(
    store: Store, view, cutoff: int | None, session: str | None, now: int, form: str
) -> Iterator[list[str | UncommittedRow | None]]:
    chunks = view.uncommitted_chunks(cutoff, session)
    if chunks is None:
        rows = view.uncommitted(cutoff, session)
        while chunk := [_describe_row(store, row) for row in islice(rows, 2000)]:
            yield cast("list[str | UncommittedRow | None]", chunk)
        return

    def described(values: Any) -> UncommittedRow | None:
        row = view.rendered_row(values)
        return None if row is None else _describe_row(store, row)

    from lashctl.listing import rendered_uncommitted

    # One template (and its clock) over the whole listing.
    for chunk in rendered_uncommitted(chunks, form, now, store.blobs.absent_shards):
        yield [item if isinstance(item, str) else described(item) for item in chunk]


def _describe_row(store: Store, row: Row) -> UncommittedRow:
    try:
        st = store.blobs.stat(row.attachment_id)
    except Corrupt:  # a shard that is a symlink: neither bytes nor sidecar
        store.blobs.check_layout()  # unless the root or sha256/ is one: that stops the command
        return UncommittedRow(row, False, None, None, None)
    present = st is not None and st.is_file
    meta = None
    if store.layout == LAYOUT_SIDECARS:  # a bare store keeps none: no failed open per row
        try:
            meta = store.blobs.read_sidecar(row.attachment_id)
        except LashctlError as exc:
            store.warn(exc.message)
    return UncommittedRow(
        row=row,
        bytes_present=present,
        byte_len=st.size if present else (meta.byte_len if meta else None),
        media_type=meta.media_type if meta else None,
        label=meta.label if meta else None,
    )


# -- commit --------------------------------------------------------------------
COMMITTED = "committed"
ALREADY_COMMITTED = "already_committed"
NO_INTENT = "no_intent"


class CommitResult(Record):
    __slots__ = ("attachment_id", "session_id", "status")

    def __init__(self, attachment_id: str, session_id: str, status: str) -> None:
        self.attachment_id = attachment_id
        self.session_id = session_id
        self.status = status


def commit(store: Store, session: str, queries: list[IdQuery]) -> list[CommitResult]:
    """Stamp the session's rows committed; report each id's status.

    A commit costs the same on a million-row manifest as on an empty one (the
    view answers from an index). The view is never trusted to skip a write,
    though: every row it knows gets a commit event (on a committed row the
    fold ignores it).
    """
    validate_session(session)
    clock_ms()
    precheck_prefixes(store, queries)
    with store.manifest.writing() as manifest, store.blobs.opened():
        at = clock_ms()
        resolved: list[str | None] = []
        for query in queries:
            try:
                resolved.append(resolve_id(store, query, manifest))
            except NotFound:
                resolved.append(None)
        rows = manifest.rows_for_keys([(session, i) for i in resolved if i is not None])
        results, events, done = [], [], set()
        for query, attachment_id in zip(queries, resolved):
            row = rows.get((session, attachment_id)) if attachment_id is not None else None
            if row is None or attachment_id is None:
                status = NO_INTENT
            elif attachment_id in done:
                status = ALREADY_COMMITTED
            else:
                events.append(Event.commit(attachment_id, session, at))
                done.add(attachment_id)
                status = ALREADY_COMMITTED if row.committed else COMMITTED
            results.append(CommitResult(attachment_id or query.hex, session, status))
        manifest.append(events)
    return results
