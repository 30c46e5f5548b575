"""The local spool of puts to an object store.

An object store has no rename: a blob's key is its id, the sha256 of its
bytes, known only once the last byte has arrived. So a put to S3 first
writes the bytes to a private local file while hashing them (``Spool.stage``),
and only ``S3Blobs.install`` uploads that file under its id.

The files live in ``<temp dir>/lashctl-s3-staging-<uid>`` (mode 0700, created
on first use), named ``<pid>-<random>.part`` (mode 0600). A process removes
its own files when a put fails or is interrupted (``Spool.discard_pending``);
a process killed with SIGKILL cannot, so the first spool of each process
removes the files of processes that no longer run.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
from pathlib import Path
from typing import BinaryIO

from lashctl.backends.base import Progress, Staged
from lashctl.errors import StoreIOError
from lashctl.fsutil import read_into

CHUNK = 1024 * 1024
HEAD_BYTES = 64 * 1024  # kept from the start of a staged blob for sniffing

_STAGING_SWEPT = False  # whether this process has cleared what dead ones left


class Spool:
    """The spool files of one backend: written, opened, discarded."""

    def __init__(self) -> None:
        self._pending: set[str] = set()  # spool paths, noted before each file exists

    def stage(self, source: BinaryIO, source_name: str, progress: Progress | None = None) -> Staged:
        """Stream ``source`` into a private temporary file while hashing it.

        Memory stays flat: the bytes pass through one 1 MiB buffer.
        """
        where = staging_dir()
        path = os.path.join(where, f"{os.getpid()}-{os.urandom(6).hex()}.part")
        self._pending.add(path)  # before the file exists: an interrupt anywhere after leaves no litter
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StoreIOError.wrap("create staging file in", where, exc) from exc
        digest = hashlib.sha256()
        byte_len = 0
        head = b""
        buffer = bytearray(CHUNK)
        view = memoryview(buffer)
        try:
            with open(fd, "wb", buffering=0, closefd=True) as out:
                while True:
                    n = read_into(source, buffer, source_name)
                    if not n:
                        break
                    chunk = view[:n]
                    if len(head) < HEAD_BYTES:
                        head += bytes(chunk[: HEAD_BYTES - len(head)])
                    digest.update(chunk)
                    try:
                        written = 0
                        while written < n:
                            written += out.write(chunk[written:])
                    except OSError as exc:
                        raise StoreIOError.wrap("write", path, exc) from exc
                    byte_len += n
                    if progress is not None:
                        progress(n)
        except BaseException:
            unlink_quietly(path)
            raise
        return Staged(attachment_id=digest.hexdigest(), byte_len=byte_len, head=head, handle=path)

    @staticmethod
    def open(staged: Staged) -> BinaryIO:
        try:
            return open(staged.handle, "rb")
        except OSError as exc:
            raise StoreIOError.wrap("read", staged.handle, exc) from exc

    @staticmethod
    def discard(staged: Staged) -> None:
        unlink_quietly(staged.handle)

    def discard_pending(self) -> None:
        """Remove every spool file this process made that has not been uploaded."""
        paths, self._pending = self._pending, set()
        for path in paths:
            unlink_quietly(path)


def staging_dir() -> Path:
    """The private directory (mode 0700) where puts to an object store stage
    their bytes: ``<temp dir>/lashctl-s3-staging-<uid>``, created on first use.

    Files are named ``<pid>-<random>.part``. The first call of a process
    removes the files of processes that no longer run (a put killed with
    SIGKILL cannot remove its own); a directory that is not ours, or not a
    directory, is refused (StoreIOError) rather than used.
    """
    global _STAGING_SWEPT
    where = Path(tempfile.gettempdir()) / f"lashctl-s3-staging-{os.getuid()}"
    try:
        os.mkdir(where, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise StoreIOError.wrap("create staging directory", where, exc) from exc
    try:
        st = os.lstat(where)
    except OSError as exc:
        raise StoreIOError.wrap("stat staging directory", where, exc) from exc
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or stat.S_IMODE(st.st_mode) & 0o077:
        raise StoreIOError(
            f"staging directory {where} is not a private directory of this user: "
            "refusing to stage there (remove it, or set TMPDIR)"
        )
    if not _STAGING_SWEPT:
        _STAGING_SWEPT = True
        _remove_dead_staging(where)
    return where


def _remove_dead_staging(where: Path) -> None:
    try:
        names = os.listdir(where)
    except OSError:
        return
    for name in names:
        pid, dash, _rest = name.partition("-")
        if not (dash and name.endswith(".part") and pid.isascii() and pid.isdigit()) or _process_alive(int(pid)):
            continue
        unlink_quietly(where / name)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # OverflowError: no pid is that large
        return False
    except OSError:
        return True  # it exists (another user's, say)
    return True


def unlink_quietly(path: object) -> None:
    try:
        os.unlink(path)  # type: ignore[arg-type]
    except OSError:
        pass
