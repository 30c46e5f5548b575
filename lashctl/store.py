"""BlobStore: the content-addressed half of a lash attachment store.

Layout (compatible with lash-core's FileAttachmentStore)::

    <root>/sha256/<id[0:2]>/<id>        blob bytes, never modified once written
    <root>/sha256/<id[0:2]>/<id>.json   metadata sidecar
    <root>/tmp/                          lashctl's staging area

Every path is derived from a validated id (``lashctl.ids.is_valid_id``), never
from text read out of the manifest. Writes are crash-atomic: stage in the same
file system, fsync, rename into place, fsync the directory.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Iterator

from lashctl.errors import Corrupt, NotFound, StoreIOError
from lashctl.ids import is_valid_id

CHUNK = 1024 * 1024
HEAD_BYTES = 64 * 1024  # kept from the start of a staged blob for sniffing
STAGING_SUFFIX = ".part"
LASH_STAGING_SUFFIX = ".tmp"  # lash-core stages a write in a sibling <final>.tmp
SIDECAR_SUFFIX = ".json"


@dataclass
class StagedBlob:
    """Bytes written to a staging file, not yet at their final path.

    The staging file is fsynced only when it is about to be renamed into
    place (``BlobStore.install``): a duplicate that is dropped never pays
    for an fsync.
    """

    path: Path
    attachment_id: str
    byte_len: int
    head: bytes


class NotARegularFile(OSError):
    """A FIFO, device, socket or directory where a file was expected."""


def open_regular(path: Path | str) -> int:
    """Open a regular file for reading without following a final symlink.

    O_NONBLOCK keeps a FIFO planted at the path from hanging the open;
    anything but a regular file is refused (NotARegularFile, errno EINVAL).
    A symlink gives OSError with errno ELOOP.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise NotARegularFile(errno.EINVAL, "not a regular file", str(path))
    os.set_blocking(fd, True)
    return fd


def unique_suffix(nbytes: int = 6) -> str:
    """Random hex for staging names (os.urandom: no import of ``secrets`` at start-up)."""
    return os.urandom(nbytes).hex()


def _fsync_path(path: Path, flags: int = 0) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    _fsync_path(path, os.O_DIRECTORY)


def write_file_atomic(path: Path, data: bytes, staging_dir: Path, sync_dir: bool = True) -> None:
    """Write ``data`` to ``path`` crash-atomically (stage, fsync, rename, fsync dir)."""
    tmp = staging_dir / f".{path.name}.{unique_suffix()}{STAGING_SUFFIX}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        _unlink_quietly(tmp)
        raise StoreIOError.wrap("write", path, exc) from exc
    if sync_dir:
        fsync_dir(path.parent)


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _read_into(source: BinaryIO, buffer: bytearray, source_name: str) -> int:
    try:
        readinto = getattr(source, "readinto", None)
        if readinto is not None:
            return readinto(buffer) or 0
        data = source.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)
    except OSError as exc:
        raise StoreIOError.wrap("read", source_name, exc) from exc


def _write_all(fd: int, chunk: memoryview, path: Path) -> None:
    try:
        while chunk:
            chunk = chunk[os.write(fd, chunk):]
    except OSError as exc:
        raise StoreIOError.wrap("write", path, exc) from exc


class _ChunkWriter:
    """Writes chunks to a staging file on a thread while the caller hashes.

    A fixed pool of buffers bounds memory: the caller waits for a free
    buffer when the writer falls behind.
    """

    DEPTH = 4

    def __init__(self, fd: int, path: Path) -> None:
        import queue
        import threading

        self._fd, self._path = fd, path
        self._free: "queue.Queue[bytearray]" = queue.Queue()
        self._full: "queue.Queue[tuple[bytearray, int] | None]" = queue.Queue()
        for _ in range(self.DEPTH - 1):
            self._free.put(bytearray(CHUNK))
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="lashctl-stage-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (item := self._full.get()) is not None:
            buffer, n = item
            if self._error is None:
                try:
                    _write_all(self._fd, memoryview(buffer)[:n], self._path)
                except BaseException as exc:  # handed to the caller in finish()
                    self._error = exc
            self._free.put(buffer)

    def submit(self, buffer: bytearray, n: int) -> None:
        if self._error is not None:
            self.finish()  # raises the writer's error now, not at the end of a long input
        self._full.put((buffer, n))

    def free_buffer(self) -> bytearray:
        return self._free.get()

    def finish(self) -> None:
        self._full.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error

    def abandon(self) -> None:
        self._full.put(None)
        self._thread.join()


class BlobStore:
    """Paths, staging, atomic installs, streaming reads and deletes of blobs."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.objects = self.root / "sha256"
        self.tmp = self.root / "tmp"

    # -- paths ---------------------------------------------------------------
    def shard_dir(self, attachment_id: str) -> Path:
        self._check(attachment_id)
        return self.objects / attachment_id[:2]

    def blob_path(self, attachment_id: str) -> Path:
        return self.shard_dir(attachment_id) / attachment_id

    def sidecar_path(self, attachment_id: str) -> Path:
        return self.shard_dir(attachment_id) / (attachment_id + SIDECAR_SUFFIX)

    def checked_shard(self, attachment_id: str) -> Path:
        """The shard directory, refusing one that is a symlink or not a directory.

        Paths below a planted symlink would lead outside the store: nothing
        is read, written or removed through one.
        """
        shard = self.shard_dir(attachment_id)
        st = self._lstat(shard)
        if st is not None and not stat.S_ISDIR(st.st_mode):
            what = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a directory"
            raise Corrupt(f"shard directory {shard} is {what}: refusing to use it")
        return shard

    def shard_is_real(self, attachment_id: str) -> bool:
        st = self._lstat(self.shard_dir(attachment_id))
        return st is not None and stat.S_ISDIR(st.st_mode)

    def read_sidecar(self, attachment_id: str):
        """The blob's sidecar metadata, or None if there is none (Corrupt if bad)."""
        from lashctl import sidecar

        self.checked_shard(attachment_id)
        return sidecar.read(self.sidecar_path(attachment_id))

    def write_sidecar(self, meta, sync_dir: bool = True) -> bool:
        """Write a sidecar atomically beside its blob, unless it already says
        exactly this (no write, no fsync). True if it was written."""
        self.checked_shard(meta.attachment_id)
        path = self.sidecar_path(meta.attachment_id)
        data = meta.encode()
        try:
            with os.fdopen(open_regular(path), "rb") as handle:
                if handle.read(len(data) + 1) == data:
                    return False
        except OSError:
            pass  # absent or unreadable: write it
        write_file_atomic(path, data, self.tmp, sync_dir=sync_dir)
        return True

    @staticmethod
    def _check(attachment_id: str) -> None:
        # Last line of defence: a path is only ever built from a valid id.
        if not is_valid_id(attachment_id):
            raise ValueError(f"not a valid attachment id: {attachment_id!r}")

    # -- writing -------------------------------------------------------------
    def ensure_writable_layout(self) -> None:
        """Create ``sha256/`` and ``tmp/`` (and the root) if missing."""
        for directory in (self.objects, self.tmp):
            try:
                directory.mkdir(parents=True, exist_ok=True)
            except FileExistsError as exc:
                raise StoreIOError(f"cannot create {directory}: a file is in the way") from exc
            except OSError as exc:
                raise StoreIOError.wrap("create", directory, exc) from exc

    def stage(
        self, source: BinaryIO, source_name: str, progress: Callable[[int], None] | None = None
    ) -> StagedBlob:
        """Stream ``source`` into ``tmp/`` while hashing; return its id (not yet fsynced).

        Memory stays flat: bytes pass through in CHUNK-sized pieces.
        """
        path = self.tmp / f"put-{unique_suffix(8)}{STAGING_SUFFIX}"
        digest = hashlib.sha256()
        byte_len = 0
        head = b""
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except OSError as exc:
            raise StoreIOError.wrap("create staging file", path, exc) from exc
        writer: _ChunkWriter | None = None
        try:
            buffer = bytearray(CHUNK)
            while True:
                n = _read_into(source, buffer, source_name)
                if not n:
                    break
                chunk = memoryview(buffer)[:n]
                if len(head) < HEAD_BYTES:
                    head += bytes(chunk[: HEAD_BYTES - len(head)])
                if writer is None and byte_len:
                    # A second chunk: the input is big enough for writing to
                    # overlap hashing (both release the GIL).
                    writer = _ChunkWriter(fd, path)
                if writer is None:
                    digest.update(chunk)
                    _write_all(fd, chunk, path)
                else:
                    writer.submit(buffer, n)
                    digest.update(chunk)  # the writer only reads the buffer too
                    buffer = writer.free_buffer()
                byte_len += n
                if progress is not None:
                    progress(n)
            if writer is not None:
                writer, pending = None, writer
                pending.finish()
        except BaseException:
            if writer is not None:
                writer.abandon()
            os.close(fd)
            _unlink_quietly(path)
            raise
        os.close(fd)
        return StagedBlob(path=path, attachment_id=digest.hexdigest(), byte_len=byte_len, head=head)

    def discard(self, staged: StagedBlob) -> None:
        _unlink_quietly(staged.path)

    def install(self, staged: StagedBlob) -> bool:
        """Rename a staged blob into place. Returns True when it was already there.

        An existing blob of the right size is kept (its mtime refreshed, so a
        grace-period sweep sees it as recent) and the staged copy dropped; a
        wrong-size one is replaced. The caller fsyncs the shard directory.
        """
        final = self.blob_path(staged.attachment_id)
        shard = self.checked_shard(staged.attachment_id)
        try:
            if not shard.is_dir():
                shard.mkdir(exist_ok=True)
                fsync_dir(self.objects)
            existing = self._lstat(final)
            if (
                existing is not None
                and stat.S_ISREG(existing.st_mode)
                and existing.st_size == staged.byte_len
            ):
                os.utime(final)
                _unlink_quietly(staged.path)
                return True
            _fsync_path(staged.path)  # the bytes are durable before the name is
            os.replace(staged.path, final)
        except OSError as exc:
            raise StoreIOError.wrap("install blob at", final, exc) from exc
        return False

    # -- reading -------------------------------------------------------------
    @staticmethod
    def _lstat(path: Path) -> os.stat_result | None:
        try:
            return os.lstat(path)
        except FileNotFoundError:
            return None
        except NotADirectoryError:
            return None

    def blob_stat(self, attachment_id: str) -> os.stat_result | None:
        """The blob's lstat if a regular file is at its path, else None."""
        if not self.shard_is_real(attachment_id):
            return None
        st = self._lstat(self.blob_path(attachment_id))
        if st is None or not stat.S_ISREG(st.st_mode):
            return None
        return st

    def has_blob(self, attachment_id: str) -> bool:
        return self.blob_stat(attachment_id) is not None

    def open_blob(self, attachment_id: str) -> BinaryIO:
        """Open a blob for reading, refusing to follow a symlink at its path."""
        path = self.blob_path(attachment_id)
        self.checked_shard(attachment_id)
        try:
            fd = open_regular(path)
        except FileNotFoundError as exc:
            raise NotFound(f"no blob {attachment_id} in store {self.root}") from exc
        except NotARegularFile as exc:
            raise Corrupt(f"{path} is not a regular file") from exc
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise Corrupt(f"{path} is a symlink, not a blob: refusing to follow it") from exc
            raise StoreIOError.wrap("open", path, exc) from exc
        return os.fdopen(fd, "rb", buffering=0)

    def iter_ids(self, prefix: str = "") -> Iterator[str]:
        """Ids of the blobs present (regular files with valid names) under ``sha256/``.

        With a prefix of 2 or more characters only one shard directory is read.
        """
        if len(prefix) >= 2:
            shard = self.objects / prefix[:2]
            st = self._lstat(shard)
            shards: Iterable[Path] = [shard] if st is not None and stat.S_ISDIR(st.st_mode) else []
        else:
            try:
                # A symlinked shard directory is never followed (verify reports it).
                shards = sorted(
                    Path(e.path) for e in os.scandir(self.objects)
                    if len(e.name) == 2 and e.is_dir(follow_symlinks=False)
                )
            except FileNotFoundError:
                return
            except OSError as exc:
                raise StoreIOError.wrap("list", self.objects, exc) from exc
        for shard in shards:
            try:
                entries = list(os.scandir(shard))
            except (FileNotFoundError, NotADirectoryError):
                continue
            except OSError as exc:
                raise StoreIOError.wrap("list", shard, exc) from exc
            for entry in entries:
                name = entry.name
                if (
                    name.startswith(prefix)
                    and name[:2] == shard.name
                    and is_valid_id(name)
                    and entry.is_file(follow_symlinks=False)
                ):
                    yield name

    # -- deleting ------------------------------------------------------------
    def delete(self, attachment_id: str) -> int:
        """Remove the blob and its sidecar; absent is success. Returns bytes freed.

        A symlink at the blob path is removed as a link: its target is never
        touched. The caller fsyncs the shard directory (``fsync_shards``).
        """
        shard = self.shard_dir(attachment_id)
        shard_st = self._lstat(shard)
        if shard_st is None:
            return 0
        if not stat.S_ISDIR(shard_st.st_mode):
            self.checked_shard(attachment_id)  # raises, naming what is in the way
        blob = os.path.join(shard, attachment_id)
        st = self._lstat(blob)
        freed = st.st_size if st is not None and stat.S_ISREG(st.st_mode) else 0
        for path in (blob, blob + SIDECAR_SUFFIX):
            try:
                os.unlink(path)
            except FileNotFoundError:
                continue
            except IsADirectoryError as exc:
                raise StoreIOError(f"cannot delete {path}: it is a directory, not a blob") from exc
            except OSError as exc:
                raise StoreIOError.wrap("delete", path, exc) from exc
        return freed

    def fsync_shards(self, attachment_ids: Iterable[str]) -> None:
        for shard in sorted({self.shard_dir(i) for i in attachment_ids}):
            try:
                fsync_dir(shard)
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise StoreIOError.wrap("sync", shard, exc) from exc
