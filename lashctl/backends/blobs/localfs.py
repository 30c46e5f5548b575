"""BlobStore: the content-addressed half of a lash attachment store.

Layout (README, "The store format"; compatible with lash-core's FileAttachmentStore)::

    <root>/sha256/<id[0:2]>/<id>        blob bytes, never modified once written
    <root>/sha256/<id[0:2]>/<id>.json   metadata sidecar
    <root>/tmp/                          lashctl's staging area
    <root>/quarantine/                   corrupt blobs moved aside by ``verify --fix``

Every path is derived from a validated id (``lashctl.ids.is_valid_id``), never
from text read out of the manifest. Every file is reached through descriptors
of directories opened with ``O_NOFOLLOW`` (``lashctl.fsutil``) and owned by the
store's owner: a symlink planted at the root, ``sha256/``, a shard, ``tmp/`` or
``quarantine/`` is refused, never followed. Writes are crash-atomic: stage in
``tmp/``, fsync, rename into place, fsync the directory.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import stat
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Iterator

from lashctl.backends.base import (
    DIRECTORY,
    FILE,
    LAYOUT_RECORD,
    LAYOUT_RECORD_LIMIT,
    LAYOUT_SIDECARS,
    OTHER,
    SYMLINK,
    BlobBackend,
    BlobStat,
    parse_layout_record,
    same_layout_record,
    Found,
)
from lashctl.errors import Corrupt, NotFound, StoreIOError, UnsafePath
from lashctl.fsutil import (  # noqa: F401 (re-exported for callers of the store)
    STAGING_SUFFIX,
    NotARegularFile,
    all_together,
    describe_mode,
    fit_in,
    fsync_dir,
    install_bytes,
    make_dir,
    make_dirs,
    open_dir,
    Pump,
    open_regular,
    read_into,
    replaced_file,
    shared_file_mode,
    staging_name,
    unique_suffix,
    unlink_quietly,
    write_all,
)
from lashctl.ids import is_valid_id
from lashctl.record import FrozenRecord, Record

CHUNK = 1024 * 1024
HEAD_BYTES = 64 * 1024  # kept from the start of a staged blob for sniffing
LASH_STAGING_SUFFIX = ".tmp"  # lash-core stages a write in a sibling <final>.tmp
SIDECAR_SUFFIX = ".json"

ROOT, OBJECTS, TMP, QUARANTINE = "", "sha256", "tmp", "quarantine"


class StagedBlob(Record):
    """Bytes written to a staging file in ``tmp/``, not yet at their final path.

    The staging file is fsynced only when it is about to be renamed into
    place (``BlobStore.install``): a duplicate that is dropped never pays
    for an fsync.
    """

    __slots__ = ("path", "name", "attachment_id", "byte_len", "head")

    def __init__(self, path: Path, name: str, attachment_id: str, byte_len: int, head: bytes) -> None:
        self.path = path  # for messages; the file is reached as ``name`` under tmp/
        self.name = name
        self.attachment_id = attachment_id
        self.byte_len = byte_len
        self.head = head


class FileIdentity(FrozenRecord):
    """What makes "the file that was hashed" the same file a moment later."""

    dev: int
    ino: int
    size: int
    mtime_ns: int
    __slots__ = ("dev", "ino", "size", "mtime_ns")

    def __init__(self, dev: int, ino: int, size: int, mtime_ns: int) -> None:
        self._set(dev, ino, size, mtime_ns)

    @classmethod
    def of(cls, st: os.stat_result) -> "FileIdentity":
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class Entry(Record):
    """A directory entry found by a walk of ``tmp/`` or ``sha256/`` (never followed)."""

    __slots__ = ("directory", "name", "st", "path")

    def __init__(self, directory: str, name: str, st: os.stat_result, path: Path) -> None:
        self.directory = directory  # "tmp", "sha256" or "sha256/<shard>"
        self.name = name
        self.st = st
        self.path = path


def _write_all(fd: int, chunk: memoryview, path: Path) -> None:
    try:
        write_all(fd, chunk)
    except OSError as exc:
        raise StoreIOError.wrap("write", path, exc) from exc


def _reads_may_block(source: BinaryIO) -> bool:
    """Can a read of ``source`` wait for ever (a pipe, a terminal, a socket)?"""
    try:
        fd = source.fileno()
    except (OSError, AttributeError, ValueError):  # io.UnsupportedOperation is both of the last two
        return False  # bytes in memory
    try:
        return not stat.S_ISREG(os.fstat(fd).st_mode)
    except OSError:
        return True


def _lstat_entry(entry: os.DirEntry) -> os.stat_result | None:
    """An entry's own stat; None when it is gone since the directory was
    listed (a writer beside a reader that holds no lock: a put's staging
    file renamed, a sweep's delete)."""
    try:
        return entry.stat(follow_symlinks=False)
    except FileNotFoundError:
        return None


class BlobStore(BlobBackend):
    """Staging, atomic installs, streaming reads, walks and deletes of blobs."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.objects = self.root / OBJECTS
        self.tmp = self.root / TMP
        self.quarantine_dir = self.root / QUARANTINE
        self._fds: dict[str, int | None] = {}
        self._depth = 0
        self._owners: frozenset[int] | None = None
        self._pending: set[str] = set()  # staging names, noted before each file exists

    # -- what the core knows of any blob backend (lashctl.backends.base) -----------
    layout = LAYOUT_SIDECARS

    @property
    def name(self) -> str:
        return str(self.root)

    def exists(self) -> bool:
        return os.path.lexists(self.root)

    def where(self, attachment_id: str, sidecar: bool = False) -> str:
        # str(blob_path(...)) without building Paths (a sweep's audit line per blob).
        self._shard_key(attachment_id)  # a valid id only
        return f"{self._objects_shown}/{attachment_id[:2]}/{attachment_id}{SIDECAR_SUFFIX if sidecar else ''}"

    @property
    def _objects_shown(self) -> str:
        shown = self.__dict__.get("_objects_str")
        if shown is None:
            shown = self.__dict__["_objects_str"] = str(self.objects)
        return shown

    def stat(self, attachment_id: str, sidecar: bool = False) -> BlobStat | None:
        """The entry at the blob's (or sidecar's) path, never followed; None if absent.
        UnsafePath for a shard that is a symlink or not a directory."""
        st = self.entry_stat(attachment_id, SIDECAR_SUFFIX if sidecar else "")
        return None if st is None else neutral_stat(st)

    def recorded_layout(self) -> str | None:
        with self.opened():
            root = self._dir(ROOT)
            if root is None:
                return None
            data = _read_layout_record(root, self.root / LAYOUT_RECORD)
        return None if data is None else parse_layout_record(data, str(self.root / LAYOUT_RECORD))

    def record_layout(self, layout: str) -> bool:
        with self.opened():
            root = self._dir(ROOT, create=True)
            assert root is not None
            made = _link_new(f"{layout}\n".encode(), root, LAYOUT_RECORD, self.root / LAYOUT_RECORD)
            os.fsync(root)
        return made or same_layout_record(self.recorded_layout(), layout, self.name)

    def date_blob(self, attachment_id: str, mtime_ms: int) -> bool:
        with self.opened():
            shard = self._dir(self._shard_key(attachment_id))
            if shard is None:
                return False
            ns = mtime_ms * 1_000_000
            os.utime(attachment_id, ns=(ns, ns), dir_fd=shard, follow_symlinks=False)
        return True

    def open(self, attachment_id: str) -> BinaryIO:
        return self.open_blob(attachment_id)

    def sync(self, attachment_ids) -> None:
        self.fsync_shards(attachment_ids)

    def land(self, items) -> list[bool]:
        """Sidecars, then blob renames, then one fsync per shard that changed.

        Every file of the batch (each sidecar, each blob not already there) is
        staged in ``tmp/`` first, then all are fsynced together
        (``all_together``: one flush of the disk's cache serves many), and only
        then renamed into place: as for one file at a time, no name appears
        before its bytes are durable, and no blob before its sidecar."""
        with self.opened():
            tmp = self._dir(TMP, create=True)
            assert tmp is not None
            sidecars: list[tuple[str, str, str]] = []  # (staging name, attachment id, final name)
            changed: set[str] = set()  # ids whose entries were renamed into their shard
            try:
                for staged, meta in items:
                    if meta is not None and (name := self._stage_sidecar(meta, tmp)) is not None:
                        sidecars.append((name, meta.attachment_id, meta.attachment_id + SIDECAR_SUFFIX))
                landed = [self._keep_existing(staged) for staged, _meta in items]
                fresh = [staged for (staged, _meta), kept in zip(items, landed) if not kept]
                all_together(
                    [self._syncer(name, tmp, self.sidecar_path(i)) for name, i, _ in sidecars]
                    + [self._syncer(s.name, tmp, self.blob_path(s.attachment_id), s.attachment_id) for s in fresh]
                )
                for name, attachment_id, final in sidecars:
                    shard = self._dir(self._shard_key(attachment_id))
                    try:
                        os.replace(name, final, src_dir_fd=tmp, dst_dir_fd=shard)
                    except OSError as exc:
                        raise StoreIOError.wrap("write", self.sidecar_path(attachment_id), exc) from exc
                    changed.add(attachment_id)
            finally:
                for name, attachment_id, _final in sidecars:
                    if attachment_id not in changed:
                        unlink_quietly(name, tmp)
            for staged in fresh:
                self._rename_into_place(staged, tmp)
                changed.add(staged.attachment_id)
            self.sync(changed)
        return landed

    def _stage_sidecar(self, meta, tmp: int) -> str | None:
        """The staging name in ``tmp/`` of the sidecar ``meta`` encodes, not
        yet fsynced; None when the sidecar there already says exactly this."""
        attachment_id = meta.attachment_id
        name = attachment_id + SIDECAR_SUFFIX
        data = meta.encode()
        shard = self._dir(self._shard_key(attachment_id), create=True)
        assert shard is not None
        if _says(shard, name, data):
            return None
        blob = replaced_file(attachment_id, shard)  # a new sidecar is no wider than its blob
        staging = staging_name(name)
        try:
            fd = os.open(
                staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=tmp
            )
            try:
                fit_in(fd, shard, replaced_file(name, shard), None if blob is None else stat.S_IMODE(blob.st_mode))
                write_all(fd, data)
            finally:
                os.close(fd)
        except OSError as exc:
            unlink_quietly(staging, tmp)
            raise StoreIOError.wrap("write", self.sidecar_path(attachment_id), exc) from exc
        except KeyboardInterrupt:
            unlink_quietly(staging, tmp)
            raise
        return staging

    def _syncer(self, name: str, tmp: int, shown: Path, blob_id: str | None = None) -> Callable[[], None]:
        """A job that fsyncs the staged file ``name`` (a blob's first given
        the owner and mode of its place, as ``install`` gives them)."""
        shard = None if blob_id is None else self._dir(self._shard_key(blob_id), create=True)

        def sync() -> None:
            try:
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=tmp)
                try:
                    if blob_id is not None and shard is not None:
                        fit_in(fd, shard, replaced_file(blob_id, shard), shared_file_mode(blob_id, shard))
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError as exc:
                raise StoreIOError.wrap("install blob at" if blob_id else "write", shown, exc) from exc

        return sync

    def _keep_existing(self, staged: StagedBlob) -> bool:
        """``install``'s first half: True (and the staged copy dropped) when
        the blob is already there, intact (its mtime is refreshed)."""
        attachment_id = staged.attachment_id
        tmp = self._dir(TMP)
        shard = self._dir(self._shard_key(attachment_id), create=True)
        assert shard is not None and tmp is not None
        with _locked_dir(shard):
            try:
                if self._intact(shard, attachment_id, staged.byte_len):
                    os.utime(attachment_id, dir_fd=shard, follow_symlinks=False)
                    unlink_quietly(staged.name, tmp)
                    return True
            except OSError as exc:
                raise StoreIOError.wrap("install blob at", self.blob_path(attachment_id), exc) from exc
        return False

    def _rename_into_place(self, staged: StagedBlob, tmp: int) -> None:
        """``install``'s second half, for bytes already fsynced."""
        attachment_id = staged.attachment_id
        shard = self._dir(self._shard_key(attachment_id), create=True)
        assert shard is not None
        with _locked_dir(shard):
            try:
                os.replace(staged.name, attachment_id, src_dir_fd=tmp, dst_dir_fd=shard)
            except OSError as exc:
                raise StoreIOError.wrap("install blob at", self.blob_path(attachment_id), exc) from exc

    def delete_many(self, attachment_ids: list[str], known: dict | None = None) -> dict[str, int | str]:
        """Delete each blob and its sidecar (``delete``), several at once;
        ``known`` (stats just taken) is not needed here: an unlink tells the
        size freed.

        An unlink can wait on the disk (on a file system mounted with
        ``discard``, each freed file waits for its discard to complete): the
        waits of unlinks issued together overlap. Every unlink has returned
        when this returns or raises; an interrupt (Ctrl-C, SIGTERM) stops the
        unlinks not yet issued, and the caller sees which bytes are still there.
        """
        out: dict[str, int | str] = {}
        with self.opened():
            shards: dict[str, int | None | str] = {}  # opened here, in this thread, once each
            for attachment_id in attachment_ids:
                key = self._shard_key(attachment_id)
                if key not in shards:
                    try:
                        shards[key] = self._dir(key)
                    except (StoreIOError, Corrupt) as exc:
                        shards[key] = exc.message

            def one(attachment_id: str) -> None:
                shard = shards[self._shard_key(attachment_id)]
                if isinstance(shard, str):
                    out[attachment_id] = shard
                    return
                try:
                    out[attachment_id] = 0 if shard is None else self.delete(attachment_id)
                except (StoreIOError, Corrupt) as exc:
                    out[attachment_id] = exc.message

            _together(one, attachment_ids, DELETERS)
        return out

    # -- directory descriptors ---------------------------------------------------
    @contextmanager
    def opened(self) -> Iterator["BlobStore"]:
        """Keep the directories this store opens open until the outermost exit.

        Batches (a put, a sweep, a walk) wrap themselves in this so that each
        directory is opened, and checked, once.
        """
        self._depth += 1
        try:
            yield self
        finally:
            self._depth -= 1
            if not self._depth:
                self._close_all()

    def _close_all(self) -> None:
        fds, self._fds = self._fds, {}
        for fd in fds.values():
            if fd is not None:
                os.close(fd)

    def __del__(self) -> None:  # a generator abandoned mid-walk
        try:
            self._close_all()
        except Exception:  # noqa: BLE001 - a finaliser must not raise
            pass

    def _where(self, key: str) -> Path:
        return self.root / key if key else self.root

    def _dir(self, key: str, create: bool = False) -> int | None:
        """The descriptor of ``<root>/<key>`` (None if absent and not created).

        Refuses (UnsafePath) a symlink, a non-directory or a foreign owner.
        """
        assert self._depth, "BlobStore directories are opened inside opened()"
        fd = self._fds.get(key)
        if fd is not None:
            return fd
        if key == ROOT:
            fd = self._open_root(create)
        else:
            parent_key, _, name = key.rpartition("/")
            parent = self._dir(parent_key, create)
            if parent is None:
                fd = None
            elif create:
                fd = make_dir(name, self._where(key), parent, self._owners)
            else:
                fd = open_dir(name, self._where(key), parent, self._owners)
        if fd is not None:  # an absent directory is asked again: a writer beside a reader may create it
            self._fds[key] = fd
        return fd

    def _open_root(self, create: bool) -> int | None:
        fd = open_dir(self.root, self.root)
        if fd is None and create:
            try:
                make_dirs(self.root)
            except FileExistsError:
                pass  # something that is not a directory: open_dir names it
            except OSError as exc:
                raise StoreIOError.wrap("create", self.root, exc) from exc
            fd = open_dir(self.root, self.root)
            if fd is None:
                raise StoreIOError(f"cannot create {self.root}: it vanished while being created")
        if fd is not None:
            uid, me = os.fstat(fd).st_uid, os.geteuid()
            if uid != me and me != 0:
                os.close(fd)
                raise UnsafePath(f"store root {self.root} is owned by uid {uid}, not by you: refusing to use it")
            self._owners = frozenset((uid, me))
        return fd

    @staticmethod
    def _shard_key(attachment_id: str) -> str:
        # Last line of defence: a path is only ever built from a valid id.
        if not is_valid_id(attachment_id):
            raise ValueError(f"not a valid attachment id: {attachment_id!r}")
        return f"{OBJECTS}/{attachment_id[:2]}"

    def check_root(self) -> None:
        """Refuse now (UnsafePath) a root that is a symlink or not ours; absent is fine."""
        with self.opened():
            self._dir(ROOT)

    def check_layout(self) -> None:
        """Refuse now (UnsafePath) a root, ``sha256/`` or ``tmp/`` that is a symlink or not ours."""
        with self.opened():
            for key in (ROOT, OBJECTS, TMP):
                self._dir(key)

    # -- paths (for messages and reports) ------------------------------------------
    def shard_dir(self, attachment_id: str) -> Path:
        return self.root / self._shard_key(attachment_id)

    def blob_path(self, attachment_id: str) -> Path:
        return self.shard_dir(attachment_id) / attachment_id

    def sidecar_path(self, attachment_id: str) -> Path:
        return self.shard_dir(attachment_id) / (attachment_id + SIDECAR_SUFFIX)

    def absent_shards(self, shards: set[str]) -> set[str]:
        """Of these shard names, those the objects directory has no entry
        for, from one listing of it: neither a blob nor a sidecar of an id
        there can exist. Empty where the directory cannot be read (nothing
        is known absent then); a root or ``sha256/`` that is a symlink or not
        ours stops the command (UnsafePath), as any path through it does."""
        with self.opened():
            try:
                objects = self._dir(OBJECTS)
                return set(shards) if objects is None else set(shards).difference(os.listdir(objects))
            except UnsafePath:
                raise
            except (StoreIOError, Corrupt, OSError):
                return set()

    # -- stat ------------------------------------------------------------------------
    def entry_stat(self, attachment_id: str, suffix: str = "") -> os.stat_result | None:
        """lstat of ``<id><suffix>`` in its shard; None if absent. UnsafePath for a bad shard."""
        with self.opened():
            shard = self._dir(self._shard_key(attachment_id))
            if shard is None:
                return None
            try:
                return os.stat(attachment_id + suffix, dir_fd=shard, follow_symlinks=False)
            except (FileNotFoundError, NotADirectoryError):
                return None
            except OSError as exc:
                raise StoreIOError.wrap(
                    "stat", self.blob_path(attachment_id).with_name(attachment_id + suffix), exc
                ) from exc

    def blob_stat(self, attachment_id: str) -> os.stat_result | None:
        """The blob's lstat if a regular file is at its path in a real shard, else None."""
        try:
            st = self.entry_stat(attachment_id)
        except UnsafePath:
            return None
        return st if st is not None and stat.S_ISREG(st.st_mode) else None

    # -- sidecars --------------------------------------------------------------------
    def read_sidecar(self, attachment_id: str):
        """The blob's sidecar metadata, or None if there is none (Corrupt if bad)."""

        path = self.sidecar_path(attachment_id)
        with self.opened():
            shard = self._dir(self._shard_key(attachment_id))
            if shard is None:
                return None
            return read_sidecar_file(path, dir_fd=shard, shown=path)

    def write_sidecar(self, meta, durable: bool = True) -> bool:
        """Write a sidecar atomically beside its blob, unless it already says
        exactly this (no write, no fsync). True if it was written."""
        attachment_id = meta.attachment_id
        name = attachment_id + SIDECAR_SUFFIX
        data = meta.encode()
        with self.opened():
            shard = self._dir(self._shard_key(attachment_id), create=True)
            assert shard is not None
            if _says(shard, name, data):
                return False
            blob = replaced_file(attachment_id, shard)  # a new sidecar is no wider than its blob
            self._install_bytes(
                data,
                shard,
                name,
                self.sidecar_path(attachment_id),
                widest=None if blob is None else stat.S_IMODE(blob.st_mode),
            )
            if durable:
                os.fsync(shard)
        return True

    def _install_bytes(self, data: bytes, dir_fd: int, name: str, shown: Path, widest: int | None = None) -> None:
        """Stage ``data`` in tmp/, fsync it, rename it to ``name`` under ``dir_fd``."""
        install_bytes(data, self._dir(TMP, create=True), dir_fd, name, shown, widest)

    # -- writing ---------------------------------------------------------------------
    def ensure_writable_layout(self) -> None:
        """Create the root, ``sha256/`` and ``tmp/`` if missing; refuse unsafe ones."""
        with self.opened():
            self._dir(OBJECTS, create=True)
            self._dir(TMP, create=True)

    def stage(self, source: BinaryIO, source_name: str, progress: Callable[[int], None] | None = None) -> StagedBlob:
        """Stream ``source`` into ``tmp/`` while hashing; return its id (not yet fsynced).

        Memory stays flat: bytes pass through in CHUNK-sized pieces.
        """
        name = f"put-{unique_suffix(8)}{STAGING_SUFFIX}"
        self._pending.add(name)  # before the file exists: an interrupt anywhere after leaves no litter
        path = self.tmp / name
        digest = hashlib.sha256()
        byte_len = 0
        head = b""
        with self.opened():
            tmp = self._dir(TMP, create=True)
            try:
                fd = os.open(
                    name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=tmp
                )
            except OSError as exc:
                raise StoreIOError.wrap("create staging file", path, exc) from exc
            pump: Pump | None = None
            try:
                fit_in(fd, tmp)
                buffer = bytearray(CHUNK)
                while n := read_into(source, buffer, source_name):
                    if byte_len:
                        # A second chunk: the input is big enough for a thread to
                        # write it (and read it, from a file) while this one hashes it.
                        pump = Pump(
                            lambda b: read_into(source, b, source_name),
                            fd,
                            CHUNK,
                            n,
                            buffer,
                            read_ahead=not _reads_may_block(source),
                            offset=byte_len,
                            writeback=True,
                            write_error=lambda exc: StoreIOError.wrap("write", path, exc),
                        )
                        chunks: Iterable[memoryview] = pump
                    else:
                        chunks = (memoryview(buffer)[:n],)
                    for chunk in chunks:
                        if len(head) < HEAD_BYTES:
                            head += bytes(chunk[: HEAD_BYTES - len(head)])
                        digest.update(chunk)
                        if pump is None:
                            _write_all(fd, chunk, path)
                        byte_len += len(chunk)
                        if progress is not None:
                            progress(len(chunk))
                    if pump is not None:
                        pump, running = None, pump
                        running.finish()
                        break
            except BaseException:
                if pump is not None:
                    pump.abandon(wait=True)  # its writes go to a file: they end
                os.close(fd)
                unlink_quietly(name, tmp)
                raise
            os.close(fd)
        return StagedBlob(path=path, name=name, attachment_id=digest.hexdigest(), byte_len=byte_len, head=head)

    def discard(self, staged: StagedBlob) -> None:
        with self.opened():
            tmp = self._dir(TMP)
            if tmp is not None:
                unlink_quietly(staged.name, tmp)

    def discard_pending(self) -> None:
        """Remove every staging file this process made that has not landed
        (a put stopped by an error or a signal, wherever it was)."""
        names, self._pending = self._pending, set()
        with self.opened():
            tmp = self._dir(TMP)
            if tmp is not None:
                for name in names:
                    unlink_quietly(name, tmp)  # a landed one was renamed away: nothing to do

    def open_staged(self, staged: StagedBlob) -> BinaryIO:
        """Read a staged blob back (image headers that lie past the kept head)."""
        with self.opened():
            tmp = self._dir(TMP)
            try:
                fd = open_regular(staged.name, dir_fd=tmp)
            except OSError as exc:
                raise StoreIOError.wrap("read", staged.path, exc) from exc
        return os.fdopen(fd, "rb")

    def install(self, staged: StagedBlob) -> bool:
        """Rename a staged blob into place. Returns True when it was already there.

        An existing blob is kept only when it is a private regular file that
        hashes to its name (its mtime is refreshed, so a grace-period sweep sees
        it as recent, and the staged copy is dropped); anything else at the path
        (rotten bytes of any size, a hard link, a symlink) is replaced, so a
        re-upload heals the store. The check and the rename hold the shard's
        lock, which ``quarantine`` takes too. The caller fsyncs the shard
        directory.
        """
        attachment_id = staged.attachment_id
        final = self.blob_path(attachment_id)
        with self.opened():
            tmp = self._dir(TMP)
            shard = self._dir(self._shard_key(attachment_id), create=True)
            assert shard is not None and tmp is not None
            with _locked_dir(shard):
                try:
                    if self._intact(shard, attachment_id, staged.byte_len):
                        os.utime(attachment_id, dir_fd=shard, follow_symlinks=False)
                        unlink_quietly(staged.name, tmp)
                        return True
                    fd = os.open(staged.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=tmp)
                    try:
                        fit_in(fd, shard, replaced_file(attachment_id, shard), shared_file_mode(attachment_id, shard))
                        os.fsync(fd)  # the bytes are durable before the name is
                    finally:
                        os.close(fd)
                    os.replace(staged.name, attachment_id, src_dir_fd=tmp, dst_dir_fd=shard)
                except OSError as exc:
                    raise StoreIOError.wrap("install blob at", final, exc) from exc
        return False

    @staticmethod
    def _intact(shard: int, attachment_id: str, size: int) -> bool:
        """Is the file at the blob path a private regular file holding exactly these bytes?"""
        try:
            fd = open_regular(attachment_id, dir_fd=shard)
        except OSError:
            return False  # absent, a symlink, a directory, a FIFO: replace it
        with os.fdopen(fd, "rb", buffering=0) as handle:
            st = os.fstat(fd)
            if st.st_size != size or st.st_nlink != 1:
                return False
            return _hash_stream(handle) == attachment_id

    # -- reading ---------------------------------------------------------------------
    def open_blob(self, attachment_id: str) -> BinaryIO:
        """Open a blob for reading, refusing to follow a symlink at its path."""
        path = self.blob_path(attachment_id)
        with self.opened():
            shard = self._dir(self._shard_key(attachment_id))
            if shard is None:
                raise NotFound(f"no blob {attachment_id} in store {self.root}")
            try:
                fd = open_regular(attachment_id, dir_fd=shard)
            except FileNotFoundError as exc:
                raise NotFound(f"no blob {attachment_id} in store {self.root}") from exc
            except NotARegularFile as exc:
                raise Corrupt(f"{path} is {exc.strerror}, not a blob") from exc
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise Corrupt(f"{path} is a symlink, not a blob: refusing to follow it") from exc
                raise StoreIOError.wrap("open", path, exc) from exc
        return os.fdopen(fd, "rb", buffering=0)

    def hash(self, attachment_id: str, progress: Callable[[int], None] | None = None) -> tuple[str, BlobStat]:
        """Re-hash a blob: its digest and the stat of the very file hashed."""
        with self.open_blob(attachment_id) as handle:
            st = os.fstat(handle.fileno())
            try:
                digest = _hash_stream(handle, progress)
            except OSError as exc:
                raise StoreIOError.wrap("read", self.blob_path(attachment_id), exc) from exc
        return digest, neutral_stat(st)

    def iter_ids(self, prefix: str = "") -> Iterator[str]:
        """Ids of the blobs present (regular files with valid names) under ``sha256/``, in id order.

        With a prefix of 2 or more characters only one shard directory is read.
        A shard directory that is a symlink is never followed (verify reports it).
        """
        with self.opened():
            objects = self._dir(OBJECTS)
            if objects is None:
                return
            if len(prefix) >= 2:
                shards = [prefix[:2]]
            else:
                shards = sorted(
                    e.name
                    for e in self._scan(objects, self.objects)
                    if len(e.name) == 2 and e.is_dir(follow_symlinks=False)
                )
            for shard_name in shards:
                try:
                    shard = self._dir(f"{OBJECTS}/{shard_name}")
                except UnsafePath:
                    continue
                if shard is None:
                    continue
                names = sorted(
                    e.name
                    for e in self._scan(shard, self.objects / shard_name)
                    if e.name.startswith(prefix)
                    and e.name[:2] == shard_name
                    and is_valid_id(e.name)
                    and e.is_file(follow_symlinks=False)
                )
                yield from names

    @staticmethod
    def _scan(fd: int, where: Path) -> list[os.DirEntry]:
        try:
            return list(os.scandir(fd))
        except OSError as exc:
            raise StoreIOError.wrap("list", where, exc) from exc

    def walk(self) -> Iterator[Found]:
        """Everything in ``tmp/`` and ``sha256/`` that is not a blob (a regular
        file named by a valid id in its own shard) or the sidecar of a blob
        beside it, in name order.

        Nothing is followed: symlinks are reported as what they are, and a
        shard directory that is a symlink is reported, not entered.
        """
        with self.opened():
            tmp = self._dir(TMP)
            if tmp is not None:
                for entry in sorted(self._scan(tmp, self.tmp), key=lambda e: e.name):
                    st = _lstat_entry(entry)
                    if st is not None:
                        yield self._found("staging", TMP, entry.name, st, "staging litter in tmp/")
            objects = self._dir(OBJECTS)
            if objects is None:
                return
            for entry in sorted(self._scan(objects, self.objects), key=lambda e: e.name):
                st = _lstat_entry(entry)
                if st is None:
                    continue
                if not stat.S_ISDIR(st.st_mode):
                    yield self._found("blobs", OBJECTS, entry.name, st)
                    continue
                sub = f"{OBJECTS}/{entry.name}"
                shard = self._dir(sub)
                if shard is None:
                    continue
                items = sorted(self._scan(shard, self._where(sub)), key=lambda e: e.name)
                names = {item.name for item in items}
                for item in items:
                    name = item.name
                    if is_valid_id(name) and name[:2] == entry.name and item.is_file(follow_symlinks=False):
                        continue  # a blob
                    base = name[: -len(SIDECAR_SUFFIX)] if name.endswith(SIDECAR_SUFFIX) else None
                    if (
                        base is not None
                        and base in names
                        and is_valid_id(base)
                        and base[:2] == entry.name
                        and item.is_file(follow_symlinks=False)
                    ):
                        continue  # the sidecar of an entry beside it
                    st = _lstat_entry(item)
                    if st is not None:
                        yield self._found("blobs", sub, name, st)

    def _found(self, area: str, directory: str, name: str, st: os.stat_result, reason: str | None = None) -> Found:
        relative = name if directory in (TMP, OBJECTS) else f"{directory.partition('/')[2]}/{name}"
        return Found(
            area,
            relative,
            str(self._where(directory) / name),
            neutral_stat(st),
            handle=Entry(directory, name, st, self._where(directory) / name),
            reason=reason,
        )

    def remove(self, found: Found) -> None:
        """Unlink what ``walk`` found (never a directory, never through a link)."""
        self.remove_entry(found.handle)

    def remove_entry(self, entry: Entry) -> None:
        with self.opened():
            fd = self._dir(entry.directory)
            if fd is None:
                return
            try:
                os.unlink(entry.name, dir_fd=fd)
            except FileNotFoundError:
                pass
            except IsADirectoryError as exc:
                raise StoreIOError(f"cannot delete {entry.path}: it is a directory") from exc
            except OSError as exc:
                raise StoreIOError.wrap("delete", entry.path, exc) from exc

    # -- deleting --------------------------------------------------------------------
    def delete_problem(self, attachment_id: str) -> str | None:
        """Why ``delete`` would fail for this id, or None: what a dry run reports."""
        try:
            st = self.entry_stat(attachment_id)
        except Corrupt as exc:  # UnsafePath: a shard that is a symlink or not a directory
            return exc.message
        except StoreIOError as exc:
            return exc.message
        if st is not None and stat.S_ISDIR(st.st_mode):
            return f"cannot delete {self.blob_path(attachment_id)}: it is a directory, not a blob"
        return None

    def delete(self, attachment_id: str) -> int:
        """Remove the blob and its sidecar; absent is success. Returns bytes freed.

        A symlink at the blob path is removed as a link: its target is never
        touched. The caller fsyncs the shard directory (``fsync_shards``).
        """
        if not self._depth:
            with self.opened():
                return self.delete(attachment_id)
        # Inside opened() (``delete_many`` calls this from its threads, its
        # shards opened already): the count of opened() is left alone.
        shard = self._dir(self._shard_key(attachment_id))
        return 0 if shard is None else self._unlink_blob(shard, attachment_id)

    def _unlink_blob(self, shard: int, attachment_id: str) -> int:
        """``delete`` in the shard directory ``shard`` (opened): bytes freed."""
        freed = 0
        for name in (attachment_id, attachment_id + SIDECAR_SUFFIX):
            try:
                if name == attachment_id:
                    st = os.stat(name, dir_fd=shard, follow_symlinks=False)
                    freed = st.st_size if stat.S_ISREG(st.st_mode) else 0
                os.unlink(name, dir_fd=shard)
            except FileNotFoundError:
                continue
            except IsADirectoryError as exc:
                raise StoreIOError(
                    f"cannot delete {self.shard_dir(attachment_id) / name}: it is a directory, not a blob"
                ) from exc
            except OSError as exc:
                raise StoreIOError.wrap("delete", self.shard_dir(attachment_id) / name, exc) from exc
        return freed

    def fsync_shards(self, attachment_ids) -> None:
        with self.opened():
            for key in sorted({self._shard_key(i) for i in attachment_ids}):
                try:
                    fd = self._dir(key)
                except UnsafePath:
                    continue
                if fd is None:
                    continue
                try:
                    os.fsync(fd)
                except OSError as exc:
                    raise StoreIOError.wrap("sync", self._where(key), exc) from exc

    # -- quarantine ------------------------------------------------------------------
    def quarantine(self, attachment_id: str, hashed: BlobStat, stamp: str) -> str | None:
        """Move the blob that was hashed (and its sidecar) to ``quarantine/``; never delete bytes.

        Holds the shard's lock (which ``install`` takes too) and moves the file
        only if it is still the one hashed: same device, inode, size and mtime.
        Returns the new path, or None when the file changed meanwhile (a put
        replaced it: it is left alone).
        """
        target = f"{attachment_id}.{stamp}.{unique_suffix(3)}"
        with self.opened():
            shard = self._dir(self._shard_key(attachment_id))
            if shard is None:
                return None
            quarantine = self._dir(QUARANTINE, create=True)
            with _locked_dir(shard):
                try:
                    st = os.stat(attachment_id, dir_fd=shard, follow_symlinks=False)
                except FileNotFoundError:
                    return None
                if not stat.S_ISREG(st.st_mode) or FileIdentity.of(st) != hashed.token:
                    return None
                try:
                    os.rename(attachment_id, target, src_dir_fd=shard, dst_dir_fd=quarantine)
                    try:
                        os.rename(
                            attachment_id + SIDECAR_SUFFIX,
                            target + SIDECAR_SUFFIX,
                            src_dir_fd=shard,
                            dst_dir_fd=quarantine,
                        )
                    except FileNotFoundError:
                        pass
                    os.fsync(quarantine)
                    os.fsync(shard)
                except OSError as exc:
                    raise StoreIOError.wrap("quarantine", self.blob_path(attachment_id), exc) from exc
        return str(self.quarantine_dir / target)


DELETERS = 16  # unlinks a sweep issues at once


def _together(work: Callable[[str], None], items: list[str], threads: int) -> None:
    """``work(item)`` for each item, on up to ``threads`` threads (unlinks,
    which release the GIL while they wait on the disk). Returns once every
    call started has returned. An exception raised here (Ctrl-C, SIGTERM)
    stops the calls not yet started, waits for those running, and is raised;
    an exception ``work`` raises stops the rest the same way."""
    if len(items) < 2 * threads:
        for item in items:
            work(item)
        return
    import threading

    pending = iter(items)
    lock = threading.Lock()
    stop = threading.Event()

    errors: list[BaseException] = []

    def run() -> None:
        while not stop.is_set():
            with lock:
                item = next(pending, None)
            if item is None:
                return
            try:
                work(item)
            except BaseException as exc:  # noqa: BLE001 - raised on the caller's thread
                errors.append(exc)
                stop.set()

    workers = [threading.Thread(target=run, name="lashctl-delete", daemon=True) for _ in range(threads)]
    try:
        # Started inside the guard: a signal between two starts still waits
        # for the workers already running (their unlinks are in flight).
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    except BaseException:
        stop.set()
        while any(worker.is_alive() for worker in workers):
            try:
                for worker in workers:
                    if worker.ident is not None:  # (one never started has nothing to wait for)
                        worker.join()
            except BaseException:  # noqa: BLE001 - a second signal: still wait, then raise the first
                continue
        raise
    if errors:
        raise errors[0]


def _says(shard: int, name: str, data: bytes) -> bool:
    """Whether the regular file ``name`` in ``shard`` holds exactly ``data``
    (a sidecar that need not be written again); False if absent or unreadable."""
    try:
        with os.fdopen(open_regular(name, dir_fd=shard), "rb") as handle:
            return handle.read(len(data) + 1) == data
    except OSError:
        return False


def neutral_stat(st: os.stat_result) -> BlobStat:
    mode = st.st_mode
    kind = FILE if stat.S_ISREG(mode) else SYMLINK if stat.S_ISLNK(mode) else DIRECTORY if stat.S_ISDIR(mode) else OTHER
    return BlobStat(
        st.st_size,
        st.st_mtime_ns // 1_000_000,
        kind,
        st.st_nlink,
        getattr(st, "st_blocks", 0) * 512,
        FileIdentity.of(st),
    )


@contextmanager
def _locked_dir(fd: int) -> Iterator[None]:
    """An exclusive flock on a directory: installs and quarantines of one shard exclude each other."""
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


def _hash_stream(handle: BinaryIO, progress: Callable[[int], None] | None = None) -> str:
    digest = hashlib.sha256()
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    while n := handle.readinto(buffer):
        digest.update(view[:n])
        if progress is not None:
            progress(n)
    return digest.hexdigest()


def _link_new(data: bytes, dir_fd: int, name: str, shown: Path) -> bool:
    """Write ``data`` to a staging file, fsync it and hard-link it as ``name``,
    which fails where ``name`` exists: False then (nothing written). Where the
    file system has no hard links, it is renamed there unless ``name`` exists
    (best effort: two writers at once may both succeed)."""
    staging = staging_name(name)
    try:
        fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=dir_fd)
        try:
            fit_in(fd, dir_fd)
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(staging, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
        except FileExistsError:
            return False
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
                raise
            try:
                os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                return False
            except FileNotFoundError:
                os.replace(staging, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        return True
    except OSError as exc:
        raise StoreIOError.wrap("write", shown, exc) from exc
    finally:
        unlink_quietly(staging, dir_fd)


def _read_layout_record(root: int, path: Path) -> bytes | None:
    """The record's bytes (one more than the limit at most), None if there is
    none; UnsafePath for anything but a regular file (never read through)."""
    try:
        fd = open_regular(LAYOUT_RECORD, dir_fd=root)
    except FileNotFoundError:
        return None
    except NotARegularFile as exc:
        raise UnsafePath(f"{path} is {exc.strerror}, not a layout record: refusing to read it") from exc
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EISDIR):
            raise UnsafePath(f"{path} is a symlink or a directory, not a layout record: refusing to read it") from exc
        raise StoreIOError.wrap("read", path, exc) from exc
    try:
        with os.fdopen(fd, "rb") as handle:
            return handle.read(LAYOUT_RECORD_LIMIT + 1)
    except OSError as exc:
        raise StoreIOError.wrap("read", path, exc) from exc


def read_sidecar_file(path: Path | str, dir_fd: int | None = None, shown: Path | None = None):
    """Read a sidecar (``path`` relative to ``dir_fd`` when given); None if there
    is none; Corrupt if it cannot be decoded. ``shown`` names it in messages."""
    from lashctl import sidecar

    path = shown if shown is not None else path
    try:
        # Never read through a symlink, never block on a FIFO planted here.
        fd = open_regular(path if dir_fd is None else path.name, dir_fd=dir_fd)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except NotARegularFile as exc:
        raise Corrupt(f"undecodable sidecar {path}: {exc.strerror}, not a regular file") from exc
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise Corrupt(f"undecodable sidecar {path}: it is a symlink") from exc
        raise StoreIOError.wrap("read", path, exc) from exc
    try:
        with os.fdopen(fd, "rb") as handle:
            data = handle.read(sidecar.MAX_SIDECAR_BYTES + 1)
    except OSError as exc:
        raise StoreIOError.wrap("read", path, exc) from exc
    if len(data) > sidecar.MAX_SIDECAR_BYTES:
        raise Corrupt(f"undecodable sidecar {path}: larger than {sidecar.MAX_SIDECAR_BYTES} bytes")
    return sidecar.decode(data, path)
