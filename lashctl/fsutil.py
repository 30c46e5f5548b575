"""File-system primitives that never follow a symlink and never block on a FIFO.

Everything lashctl opens, creates, renames or unlinks inside a store goes
through a directory descriptor opened here (``O_DIRECTORY | O_NOFOLLOW``) and a
name that is a single path component: a symlink planted anywhere in the store
is refused, never followed (README, "Guarantees" and "Threat model").
"""

from __future__ import annotations

import errno
import os
import stat
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from lashctl.errors import StoreIOError, UnsafePath

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
STAGING_SUFFIX = ".part"
STANDARD_OUTPUT = "standard output"  # what output_to calls a destination that is fd 1's file
STANDARD_ERROR = "standard error"
_STANDARD_STREAMS = ((1, STANDARD_OUTPUT), (2, STANDARD_ERROR))
NAME_MAX = 255  # bytes in one path component (Linux, every common file system)
_RANDOM_BYTES = 6  # the staging name's random part: 12 hex digits


class NotARegularFile(OSError):
    """A FIFO, device, socket or directory where a file was expected."""


def describe_mode(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symlink"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def open_regular(path: Path | str, dir_fd: int | None = None, flags: int = READ_FLAGS) -> int:
    """Open a regular file without following a final symlink.

    O_NONBLOCK keeps a FIFO planted at the path from hanging the open;
    anything but a regular file is refused (NotARegularFile, errno EINVAL).
    A symlink gives OSError with errno ELOOP.
    """
    fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644, dir_fd=dir_fd)
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise NotARegularFile(errno.EINVAL, describe_mode(mode), str(path))
    os.set_blocking(fd, True)
    return fd


def open_or_create(path: Path | str, flags: int = os.O_RDWR) -> int:
    """``open_regular`` of ``path``, creating it if missing; a file it
    creates is given its place's owner (``fit_in``)."""
    while True:
        try:
            return open_regular(path, flags=flags)
        except FileNotFoundError:
            pass
        try:
            fd = open_regular(path, flags=flags | os.O_CREAT | os.O_EXCL)
        except FileExistsError:
            continue  # a racing creator won: open what it made
        try:
            fit_in(fd, Path(path).parent)
        except BaseException:
            os.close(fd)
            raise
        return fd


def open_dir(
    name: Path | str,
    where: Path | str,
    dir_fd: int | None = None,
    owners: frozenset[int] | None = None,
) -> int | None:
    """Open a directory without following a symlink at ``name``; None if absent.

    ``where`` is the path shown in messages. A symlink, a non-directory, or a
    directory owned by a user not in ``owners`` is refused (UnsafePath).
    """
    try:
        fd = os.open(name, DIR_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            try:
                mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
            except OSError:
                mode = 0
            raise UnsafePath(f"{where} is {describe_mode(mode)}, not a directory: refusing to use it") from exc
        raise StoreIOError.wrap("open", where, exc) from exc
    if owners is not None:
        uid = os.fstat(fd).st_uid
        if uid not in owners:
            os.close(fd)
            raise UnsafePath(f"{where} is owned by uid {uid}, not by the store's owner: refusing to use it")
    return fd


def make_dir(name: str, where: Path | str, dir_fd: int, owners: frozenset[int] | None = None, mode: int = 0o755) -> int:
    """Open the directory ``name`` under ``dir_fd``, creating it if missing
    (given its place's owner, ``fit_in``; then the parent is fsynced)."""
    fd = open_dir(name, where, dir_fd, owners)
    if fd is not None:
        return fd
    try:
        os.mkdir(name, mode, dir_fd=dir_fd)
        created = True
    except FileExistsError:
        created = False  # a racing creator won, or something else is in the way: open_dir says which
    except OSError as exc:
        raise StoreIOError.wrap("create", where, exc) from exc
    if created:
        _fit_new_dir(name, where, dir_fd)
    fd = open_dir(name, where, dir_fd, owners)
    if fd is None:
        raise StoreIOError(f"cannot create {where}: it vanished while being created")
    if created:
        os.fsync(dir_fd)
    return fd


def _fit_new_dir(name: str | Path, where: Path | str, dir_fd: int | None) -> None:
    try:
        fd = os.open(name, DIR_FLAGS, dir_fd=dir_fd)
    except OSError:
        return  # gone or swapped already: whoever opens it next checks what is there
    try:
        fit_in(fd, dir_fd if dir_fd is not None else Path(name).parent)
    except OSError as exc:
        raise StoreIOError.wrap("set the owner of", where, exc) from exc
    finally:
        os.close(fd)


def make_dirs(path: Path | str, mode: int = 0o755) -> None:
    """``os.makedirs(path, mode, exist_ok=True)``, each directory it creates
    (parents too) made with ``mode`` (the umask may narrow it, never widen
    it) and given its place's owner (``fit_in``)."""
    path = Path(path)
    missing = []
    while not os.path.lexists(path) and path != path.parent:
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, mode)
        except FileExistsError:
            continue  # a racing creator, or not a directory: the caller's open says which
        _fit_new_dir(directory, directory, None)


def fit_in(
    fd: int, directory: int | Path | str, replaced: os.stat_result | None = None, widest: int | None = None
) -> None:
    """Give what lashctl has just created (``fd``, a file or directory about
    to appear in ``directory``, a descriptor or path) the owner, group and
    mode its place calls for. The one rule for every file and directory
    lashctl writes (README, "Threat model"):

    - one that replaces ``replaced`` (a compacted manifest, a re-put blob, a
      rewritten sidecar, ``get -o`` onto a file) keeps that file's mode, and
      its owner and group where the process may (as root; otherwise the group
      when the process belongs to it);
    - a new one, run as root, takes the owner and group of ``directory``:
      root operating another user's store leaves nothing that user cannot
      rewrite. Its mode is no wider than ``widest`` when given (a new
      sidecar is no wider than its blob).
    """
    if replaced is not None:
        _chown(fd, replaced.st_uid, replaced.st_gid)
        os.fchmod(fd, stat.S_IMODE(replaced.st_mode))  # after the chown, which clears set-id bits
        return
    if os.geteuid() == 0:
        place = os.stat(directory)
        _chown(fd, place.st_uid, place.st_gid)
    if widest is not None:
        mode = stat.S_IMODE(os.fstat(fd).st_mode)
        if mode & ~widest:
            os.fchmod(fd, mode & widest)


def _chown(fd: int, uid: int, gid: int) -> None:
    st = os.fstat(fd)
    if (st.st_uid, st.st_gid) == (uid, gid):
        return
    if os.geteuid() == 0:
        os.fchown(fd, uid, gid)
    elif st.st_gid != gid:
        try:
            os.fchown(fd, -1, gid)
        except PermissionError:
            pass  # not a member of that group: the process's own group stays


def replaced_file(name: str, dir_fd: int) -> os.stat_result | None:
    """The stat of the private regular file (one hard link) at ``name`` under
    ``dir_fd`` that a rename onto it would replace; None for anything else
    (absent, a symlink, a hard link shared with another path), which the new
    file does not take after."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return None
    return st if stat.S_ISREG(st.st_mode) and st.st_nlink == 1 else None


def shared_file_mode(name: str, dir_fd: int) -> int | None:
    """The mode of a regular file at ``name`` that ``replaced_file`` does not
    take after (it has other hard links): what replaces it is no wider."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return None
    return stat.S_IMODE(st.st_mode) if stat.S_ISREG(st.st_mode) and st.st_nlink > 1 else None


def open_lock_file(path: Path | str) -> int:
    """Open (creating it) a lock file: a regular file, never through a symlink."""
    try:
        return open_or_create(path)
    except NotARegularFile as exc:
        raise UnsafePath(f"lock file {path} is {exc.strerror}: refusing to use it") from exc
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafePath(f"lock file {path} is a symlink: refusing to use it") from exc
        raise StoreIOError.wrap("open lock file", path, exc) from exc


LOCK_POLL_S = 0.02  # how often a waiting writer tries the lock again
LOCK_WAIT_TOLD_S = 1.0  # a wait for a lock longer than this is said on stderr


def flock_within(
    fd: int, path: Path | str, timeout: float, *, action: str, holder: str, warn: Callable[[str], None] | None = None
) -> None:
    """Take an exclusive ``flock`` on ``fd``, waiting at most ``timeout``
    seconds (LockTimeout: "could not ACTION within Ns: HOLDER holds it"). A
    wait longer than a second is said through ``warn``: a silent wait looks
    like a hang (a cron sweep, a slow disk)."""
    import fcntl
    import time

    from lashctl.errors import LockTimeout

    started = time.monotonic()
    deadline, told = started + max(timeout, 0.0), False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                raise StoreIOError.wrap("lock", path, exc) from exc
        if not told and warn is not None and timeout > 1 and time.monotonic() - started >= LOCK_WAIT_TOLD_S:
            warn(f"waiting for the lock on {path} ({holder} holds it; up to {timeout:g}s, --lock-timeout)")
            told = True
        if time.monotonic() >= deadline:
            raise LockTimeout(f"could not {action} within {timeout:g}s: {holder} holds it; retry later")
        time.sleep(LOCK_POLL_S)


def unique_suffix(nbytes: int = _RANDOM_BYTES) -> str:
    """Random hex for staging names (os.urandom: no import of ``secrets`` at start-up)."""
    return os.urandom(nbytes).hex()


def staging_prefix(name: str) -> str:
    """``.<name>.``, where ``name`` is cut (on a UTF-8 character boundary)
    so that ``<prefix><12 hex>.part`` fits NAME_MAX whatever its length:
    how a staging file beside ``name`` begins, and what a search for the
    litter it leaves matches."""
    return f".{cut_name(name, NAME_MAX - len(b'..') - 2 * _RANDOM_BYTES - len(STAGING_SUFFIX))}."


def cut_name(name: str, room: int) -> str:
    """``name`` cut to at most ``room`` bytes, on a UTF-8 character boundary:
    the part of a file name kept in a name built from it (a staging file, a
    saved torn tail) so that the whole fits NAME_MAX."""
    raw = os.fsencode(name)
    if len(raw) <= room:
        return name
    cut = room
    while cut and raw[cut] & 0xC0 == 0x80:  # a UTF-8 continuation byte: mid-character
        cut -= 1
    return os.fsdecode(raw[:cut])


def staging_name(name: str) -> str:
    """A fresh staging name for a file to be renamed to ``name``: ``.<name, cut>.<12 hex>.part``."""
    return f"{staging_prefix(name)}{unique_suffix()}{STAGING_SUFFIX}"


def fsync_dir(path: Path | str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


_SYNC_FILE_RANGE_WRITE = 2  # <linux/fs.h>: start writeback of the range, do not wait
_sync_file_range: Callable[[int, int, int, int], int] | None | bool = False  # False: not looked up yet


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing ``length`` bytes of ``fd`` from
    ``offset`` to disk now, without waiting (Linux ``sync_file_range`` with
    ``SYNC_FILE_RANGE_WRITE``; nothing elsewhere). This makes no promise of
    durability, which only the ``fsync`` before a rename gives: it lets the
    disk work while the rest of a big file is still being hashed and
    written, so that the ``fsync`` finds little left to write instead of
    all of it. Errors are ignored: the ``fsync`` reports them."""
    global _sync_file_range
    if _sync_file_range is False:
        _sync_file_range = _lookup_sync_file_range()
    if _sync_file_range is not None:
        _sync_file_range(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


def _lookup_sync_file_range() -> Callable[[int, int, int, int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        function = ctypes.CDLL(None, use_errno=True).sync_file_range  # released the GIL while it runs
        function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
        function.restype = ctypes.c_int
        return function
    except (ImportError, OSError, AttributeError):
        return None


class Pump:
    """Moves a stream through a fixed ring of buffers while the caller's
    thread, iterating, sees each chunk (to hash it): a thread writes each
    chunk to ``write_fd`` as the caller hashes it, and with ``read_ahead``
    also reads the next one meanwhile, so a big file costs about the hash
    alone (hashing, reading and writing all release the GIL). The caller
    sees exactly the bytes written, in order; memory is ``DEPTH`` buffers
    whatever the size.

    ``first`` bytes are in ``first_buffer`` already (the caller read them):
    they are written and seen first. ``read`` fills a buffer and says how
    many bytes (0 at the end). With ``read_ahead`` it runs on the thread:
    only for a source whose reads cannot block for ever (a regular file), for
    a thread stuck reading a pipe would hold it (and its lock) past the end of
    the command; otherwise the caller's thread reads. Writes go to a
    duplicate of ``write_fd`` that the thread closes (a thread left behind by
    ``abandon`` never writes to a descriptor number since reused).
    ``writeback``: start the disk writing each few MiB as it goes
    (``start_writeback``; for a regular file that is fsynced at the end).
    ``write_error`` turns an OSError of a write into the error to raise.

    Iterate, then ``finish()`` (raises the thread's error, if any); on any
    exception, ``abandon(wait)``: ``wait`` unless a write may block for ever
    (into a pipe whose reader stopped reading).
    """

    DEPTH = 4
    WRITEBACK_STEP = 8 << 20  # bytes written between two requests to start their writeback

    def __init__(
        self,
        read: Callable[[bytearray], int],
        write_fd: int,
        chunk: int,
        first: int,
        first_buffer: bytearray,
        *,
        read_ahead: bool = True,
        offset: int = 0,
        writeback: bool = False,
        write_error: Callable[[OSError], BaseException] | None = None,
    ) -> None:
        import queue
        import threading

        self._read, self._read_ahead = read, read_ahead
        self._write_error = write_error
        # Writeback is asked for on a thread of its own: the request waits
        # while the device's queue is full, and the writes must not.
        self._writeback: "queue.SimpleQueue[tuple[int, int] | None] | None" = None
        self._writeback_thread: threading.Thread | None = None
        if writeback:
            self._writeback = queue.SimpleQueue()
            self._writeback_thread = threading.Thread(
                target=self._start_writeback, args=(os.dup(write_fd),), name="lashctl-writeback", daemon=True
            )
            self._writeback_thread.start()
        self._written = self._flushed = offset
        # read_ahead: the thread reads, sends each chunk to the caller, writes it,
        # and takes back a buffer the caller has hashed. Otherwise the caller
        # reads, sends each chunk to the thread and takes back one it wrote.
        self._sent: "queue.SimpleQueue[tuple[bytearray, int] | None]" = queue.SimpleQueue()
        self._free: "queue.SimpleQueue[bytearray]" = queue.SimpleQueue()
        for _ in range(self.DEPTH - 1):
            self._free.put(bytearray(chunk))
        self._stop = False
        self._error: BaseException | None = None
        self._first = (first_buffer, first)
        self._fd = os.dup(write_fd)
        self._thread = threading.Thread(
            target=self._read_and_write if read_ahead else self._write_sent, name="lashctl-pump", daemon=True
        )
        self._thread.start()

    def _write(self, buffer: bytearray, n: int) -> None:
        try:
            write_all(self._fd, memoryview(buffer)[:n])
        except OSError as exc:
            if self._write_error is None:
                raise
            raise self._write_error(exc) from exc
        self._written += n
        if self._writeback is not None and self._written - self._flushed >= self.WRITEBACK_STEP:
            self._writeback.put((self._flushed, self._written - self._flushed))
            self._flushed = self._written

    def _start_writeback(self, fd: int) -> None:
        try:
            assert self._writeback is not None
            while (item := self._writeback.get()) is not None:
                start_writeback(fd, *item)
        finally:
            os.close(fd)

    def _read_and_write(self) -> None:
        buffer, n = self._first
        try:
            while n and not self._stop:
                self._sent.put((buffer, n))  # the caller hashes it while it is written
                self._write(buffer, n)
                buffer = self._free.get()  # one the caller has hashed (and this thread wrote)
                if self._stop:
                    break
                n = self._read(buffer)
        except BaseException as exc:  # noqa: BLE001 - raised on the caller's thread
            self._error = exc
        finally:
            os.close(self._fd)
            self._sent.put(None)

    def _write_sent(self) -> None:
        try:
            while (item := self._sent.get()) is not None:
                if self._error is None and not self._stop:
                    try:
                        self._write(*item)
                    except BaseException as exc:  # noqa: BLE001 - raised on the caller's thread
                        self._error = exc
                self._free.put(item[0])  # written (or dropped after an error): the caller may refill it
        finally:
            os.close(self._fd)

    def __iter__(self) -> Iterator[memoryview]:
        if self._read_ahead:
            while (item := self._sent.get()) is not None:
                buffer, n = item
                yield memoryview(buffer)[:n]
                self._free.put(buffer)
            self._sent.put(None)  # seen again by a second iteration
        else:
            buffer, n = self._first
            while n:
                self._sent.put((buffer, n))
                yield memoryview(buffer)[:n]
                buffer = self._free.get()
                if self._error is not None:
                    break  # the writer failed: say so now, not at the end of a long input
                n = self._read(buffer)
            self._sent.put(None)
            self._thread.join()
        if self._error is not None:
            raise self._error

    def finish(self) -> None:
        self._thread.join()
        if self._writeback is not None and self._writeback_thread is not None:
            self._writeback.put(None)
            self._writeback_thread.join()
        if self._error is not None:
            raise self._error

    def abandon(self, wait: bool) -> None:
        self._stop = True
        if self._writeback is not None:
            self._writeback.put(None)  # what it was asked to start, the fsync or the unlink ends
        if self._read_ahead:
            self._free.put(bytearray(0))  # wakes a thread waiting for a buffer
        else:
            self._sent.put(None)
        if wait:
            self._thread.join()


TOGETHER = 16  # threads that issue the fsyncs of a batch at once


def all_together(jobs: list[Callable[[], None]], threads: int = TOGETHER) -> None:
    """Run ``jobs`` (fsyncs, which release the GIL) on up to ``threads``
    threads at once and wait for every one started; the first error is
    raised (no job starts after it). Issued together, the fsyncs of a batch
    of files cost about one: the disk's cache is flushed for all of them at
    once, where one after the other each waits for a flush of its own."""
    if len(jobs) <= 1:
        for job in jobs:
            job()
        return
    import threading

    pending = iter(jobs)
    lock = threading.Lock()
    errors: list[BaseException] = []

    def work() -> None:
        while True:
            with lock:
                job = None if errors else next(pending, None)
            if job is None:
                return
            try:
                job()
            except BaseException as exc:  # noqa: BLE001 - raised on the caller's thread
                with lock:
                    errors.append(exc)
                return

    workers = [threading.Thread(target=work, name="lashctl-fsync", daemon=True) for _ in range(min(threads, len(jobs)))]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    if errors:
        raise errors[0]


def unlink_quietly(name: str | Path, dir_fd: int | None = None) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except OSError:
        pass


def install_bytes(
    data: bytes, stage_dir_fd: int, dest_dir_fd: int, name: str, shown: Path | str, widest: int | None = None
) -> None:
    """Stage ``data`` as ``staging_name(name)`` under ``stage_dir_fd``, fsync it,
    and rename it to ``name`` under ``dest_dir_fd`` (same file system). It
    takes the owner and mode ``fit_in`` gives (after the file it replaces, or
    its new place; no wider than ``widest``).

    A failure or an interrupt (Ctrl-C, SIGTERM, SIGHUP) removes the staging
    file; a crash leaves at most it.
    """
    staging = staging_name(name)
    try:
        fd = os.open(
            staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=stage_dir_fd
        )
        try:
            fit_in(fd, dest_dir_fd, replaced_file(name, dest_dir_fd), widest)
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(staging, name, src_dir_fd=stage_dir_fd, dst_dir_fd=dest_dir_fd)
    except OSError as exc:
        unlink_quietly(staging, stage_dir_fd)
        raise StoreIOError.wrap("write", shown, exc) from exc
    except KeyboardInterrupt:
        unlink_quietly(staging, stage_dir_fd)
        raise


def write_file_atomic(path: Path, data: bytes, sync_dir: bool = True, widest: int | None = None) -> None:
    """Write ``data`` to ``path`` crash-atomically: stage beside it, fsync, rename, fsync the directory.
    The file is given the owner and mode ``install_bytes`` gives (no wider than ``widest``)."""
    path = Path(path)
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        install_bytes(data, dir_fd, dir_fd, path.name, path, widest)
        if sync_dir:
            os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


@contextmanager
def output_to(dest: Path | str) -> Iterator[tuple[BinaryIO, str | None]]:
    """Where ``get -o`` writes: yields the handle to write to, and what the
    destination is when it is a stream (``"a FIFO"``; ``STANDARD_OUTPUT`` or
    ``STANDARD_ERROR`` when it is the file, pipe or terminal that this
    process's fd 1 or 2 already writes to), else None.

    The destination is named by the user, so a symlink there is followed (as
    ``cp`` and ``cat > PATH`` do), unless it dangles: that is refused, as
    ``cp`` refuses it, rather than creating a file wherever it points. A regular file, or a new path, is replaced
    whole: written beside it under ``staging_name``, fsynced and renamed into
    place only when the block succeeds (removed otherwise), keeping the mode
    (and, as root, the owner) of the file it replaces (``fit_in``). Anything
    else (a FIFO, a device, a terminal) is opened and written into as
    ``cat > PATH`` would: nothing is staged, renamed or removed there. A
    directory is a usage error.
    """
    dest = Path(dest)
    stream = _open_stream(dest)
    if stream is not None:
        fd, kind = stream
        with _stream_errors(dest), open(fd, "wb", closefd=True) as handle:
            yield handle, kind
        return
    with atomic_output(dest) as handle:
        yield handle, None


def _open_stream(dest: Path) -> tuple[int, str] | None:
    """A descriptor to write into, and what it is, when ``dest`` (through any
    symlink) is not a regular file to replace: a FIFO (the open waits for its
    reader, as for ``cat``), a device, or the very file this command's
    standard output or error already writes to (``-o /dev/stdout >> log``
    appends there). None for a regular file or nothing; UsageError for a
    directory."""
    from lashctl.errors import UsageError

    try:
        st = os.stat(dest)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StoreIOError.wrap("write to", dest, exc) from exc
    if stat.S_ISDIR(st.st_mode):
        raise UsageError(f"-o {dest} is a directory; give a file path")
    if stat.S_ISREG(st.st_mode):
        for std, name in _STANDARD_STREAMS:
            if _is_file_of(std, st):
                return os.dup(std), name
        return None
    try:
        fd = os.open(dest, os.O_WRONLY | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None  # gone: a new file is made the staged way
    except OSError as exc:
        raise StoreIOError.wrap("open", dest, exc) from exc
    opened = os.fstat(fd)
    if stat.S_ISREG(opened.st_mode):  # a regular file took its place meanwhile: replace that
        os.close(fd)
        return None
    for std, name in _STANDARD_STREAMS:  # /dev/stdout on a pipe or a terminal
        if _is_file_of(std, opened):
            return fd, name
    return fd, describe_mode(opened.st_mode)


def _is_file_of(fd: int, st: os.stat_result) -> bool:
    try:
        mine = os.fstat(fd)
    except OSError:
        return False
    return (mine.st_dev, mine.st_ino) == (st.st_dev, st.st_ino)


@contextmanager
def _stream_errors(dest: Path) -> Iterator[None]:
    try:
        yield
    except OSError as exc:  # a reader that went away (EPIPE), a full device
        raise StoreIOError.wrap("write to", dest, exc) from exc


@contextmanager
def atomic_output(dest: Path | str) -> Iterator[BinaryIO]:
    """A file that appears at ``dest`` (through a symlink there: at the file
    it names) only whole: written beside it, fsynced, renamed into place;
    removed if the block fails. It keeps the mode (and, as root, the owner)
    of the file it replaces (``fit_in``). A symlink that names nothing is
    refused (UsageError): no file is created through one."""
    from lashctl.errors import UsageError

    named = Path(dest)
    dest = Path(os.path.realpath(dest))  # the link stays; the file it names is replaced
    try:
        replaced = os.stat(dest)
    except FileNotFoundError:
        replaced = None
        if os.path.islink(named):
            # A link another user planted (in /tmp) would have the new file
            # made wherever it points; cp refuses the same way.
            raise UsageError(f"-o {named}: not writing through dangling symlink") from None
    except OSError as exc:
        raise StoreIOError.wrap("write to", dest, exc) from exc
    if replaced is not None and stat.S_ISDIR(replaced.st_mode):
        raise UsageError(f"-o {dest} is a directory; give a file path")
    if replaced is not None and not os.access(dest, os.W_OK):
        # The rename would replace a file this user may not write (cp and cat refuse it too).
        raise StoreIOError.wrap("write to", dest, PermissionError(errno.EACCES, os.strerror(errno.EACCES)))
    tmp = dest.parent / staging_name(dest.name)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        raise StoreIOError.wrap("create", tmp, exc) from exc
    try:
        with open(fd, "wb") as handle:
            fit_in(fd, dest.parent, replaced)
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, dest)
    except BaseException as exc:
        unlink_quietly(tmp)
        if isinstance(exc, OSError):
            raise StoreIOError.wrap("write", dest, exc) from exc
        raise


def read_into(source: BinaryIO, buffer: bytearray, source_name: str) -> int:
    """Read the next chunk of ``source`` into ``buffer``; how many bytes (0 at the end)."""
    try:
        readinto = getattr(source, "readinto", None)
        if readinto is not None:
            return readinto(buffer) or 0
        data = source.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)
    except OSError as exc:
        raise StoreIOError.wrap("read", source_name, exc) from exc
