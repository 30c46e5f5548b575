"""Where the manifest state cache lives, whether it may be used, and the
journal of lashctl's own writes to a manifest.

The cache (``lashctl.backends.manifests.jsonl.cache``) is derived data in the user's cache directory.
Its paths are predictable, so it is used only inside directories nobody else
can write: ``<cache root>`` and ``<cache root>/index`` must be real
directories (not symlinks) owned by the effective user and not writable by
group or others. Inside them, a cache file must be a regular file owned by
the user (a symlink, FIFO or someone else's file is never opened). Anything
else makes ``Unusable``, and the caller folds the log in memory instead.

The append journal (``index/<key>.appends``) lets a cache tell lashctl's own
appends from any other change to the manifest. Every write lashctl makes to
a manifest records, under the manifest lock, the file's stat before and
after it — (dev, ino, size, mtime_ns, ctime_ns) — as one line. A cache that
last saw stat S may read only the bytes appended since S when a chain of
journalled appends leads from S to the current stat; any other change
(including one that puts the mtime back: ctime cannot be set) breaks the
chain and the cache is rebuilt from the log. Losing the journal only costs a
rebuild, so it is never fsynced.

This module is imported by ``put`` (through ``Manifest.append``): it must stay
cheap and must not import sqlite3.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from pathlib import Path

from lashctl.fsutil import make_dirs

ENV_CACHE_DIR = "LASHCTL_CACHE_DIR"
JOURNAL_SUFFIX = ".appends"
PATH_SUFFIX = ".path"  # which manifest a cache belongs to, so caches of deleted stores can go
PRUNE_CHECKS = 8  # caches of other manifests looked at per open: bounded work
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")
APPEND = "A"  # bytes added at the end (a torn tail may have been cut first)
REWRITE = "R"  # the file replaced (compaction): a cache must fold it again
MAX_JOURNAL_BYTES = 8 * 1024 * 1024  # a longer journal is not read: rebuild instead

_OPEN_FLAGS = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC

StatKey = tuple[int, int, int, int, int]


class Unusable(Exception):
    """The cache may not be used here; the message says why (for ``-v``)."""


def stat_key(st: os.stat_result) -> StatKey:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


# -- paths ---------------------------------------------------------------------------
def cache_root() -> Path:
    root = os.environ.get(ENV_CACHE_DIR)
    if not root:
        import platformdirs

        root = platformdirs.user_cache_dir("lashctl")
    return Path(root)


def cache_key(manifest_path: Path) -> str:
    """The cache is keyed by the manifest's real path (and checked against its inode)."""
    return hashlib.sha256(os.fsencode(os.path.realpath(manifest_path))).hexdigest()[:32]


def index_path(manifest_path: Path) -> Path:
    return cache_root() / "index" / f"{cache_key(manifest_path)}.idx"


def journal_path(index_file: Path) -> Path:
    return index_file.with_suffix(JOURNAL_SUFFIX)


# -- checks --------------------------------------------------------------------------
def _check_dir(path: Path) -> None:
    try:
        st = os.lstat(path)
    except OSError as exc:
        raise Unusable(f"cache directory {path}: {exc.strerror or exc}") from exc
    if stat.S_ISLNK(st.st_mode):
        raise Unusable(f"cache directory {path} is a symlink")
    if not stat.S_ISDIR(st.st_mode):
        raise Unusable(f"cache directory {path} is not a directory")
    if st.st_uid != os.geteuid():
        raise Unusable(f"cache directory {path} is owned by uid {st.st_uid}, not by you")
    if st.st_mode & 0o022:
        raise Unusable(f"cache directory {path} is writable by others (mode {stat.S_IMODE(st.st_mode):o})")


def _refuse_foreign_tree(path: Path) -> None:
    """Make no directory in another user's tree: root whose HOME is still a
    user's (``su`` without ``-``, ``sudo -E``) folds in memory instead of
    leaving a root-owned ``~/.cache`` there."""
    existing = path
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent
    owner = os.lstat(existing).st_uid
    if owner != os.geteuid() and os.geteuid() == 0:
        raise Unusable(f"cache directory {path} would be made in a tree owned by uid {owner}, not by you")


def _mkdir_private(path: Path) -> None:
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise Unusable(f"cannot create cache directory {path}: {exc.strerror or exc}") from exc


def private_index_dir(index_file: Path) -> None:
    """Create (0700) and check the cache root and its ``index/``; raise Unusable."""
    directory = index_file.parent
    root = directory.parent
    if not os.path.lexists(root):
        _refuse_foreign_tree(root.parent)
        try:
            make_dirs(root.parent)
        except OSError as exc:
            raise Unusable(f"cannot create cache directory {root}: {exc.strerror or exc}") from exc
        _mkdir_private(root)
    _check_dir(root)
    _mkdir_private(directory)
    _check_dir(directory)


def check_file(path: Path) -> bool:
    """Whether ``path`` exists; raise Unusable unless absent or a regular file of ours."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise Unusable(f"cache file {path}: {exc.strerror or exc}") from exc
    if not stat.S_ISREG(st.st_mode):
        raise Unusable(f"cache file {path} is not a regular file")
    if st.st_uid != os.geteuid():
        raise Unusable(f"cache file {path} is owned by uid {st.st_uid}, not by you")
    return True


def prepare_files(index_file: Path) -> None:
    """Check every file SQLite and the journal use; create the database file
    and the journal ourselves, so that nothing is created through a link."""
    for suffix in SQLITE_SIDE_FILES:
        check_file(Path(str(index_file) + suffix))
    for path in (index_file, journal_path(index_file)):
        if check_file(path):
            continue
        try:
            os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | _OPEN_FLAGS, 0o600))
        except FileExistsError:
            check_file(path)  # another process created it first
        except OSError as exc:
            raise Unusable(f"cannot create cache file {path}: {exc.strerror or exc}") from exc


def remember_manifest(index_file: Path, manifest_path: Path) -> None:
    """Write ``<key>.path`` (once): the manifest this cache folds."""
    path = Path(str(index_file.with_suffix("")) + PATH_SUFFIX)
    if check_file(path):
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _OPEN_FLAGS, 0o600)
    except FileExistsError:
        return
    except OSError as exc:
        raise Unusable(f"cannot create cache file {path}: {exc.strerror or exc}") from exc
    try:
        os.write(fd, os.fsencode(manifest_path))
    finally:
        os.close(fd)


def prune(index_file: Path) -> None:
    """Drop the caches of a few other manifests that no longer exist (deleted stores).

    Looks at no more than PRUNE_CHECKS other caches per call, starting at a
    random one, so a cache directory full of old entries empties over a few
    commands without slowing any of them down. Never fails the command.
    """
    directory = index_file.parent
    own = index_file.with_suffix("").name
    try:
        names = sorted(n for n in os.listdir(directory) if n.endswith(PATH_SUFFIX) and not n.startswith(own))
    except OSError:
        return
    if not names:
        return
    start = int.from_bytes(os.urandom(2), "big") % len(names)
    for name in (names[start:] + names[:start])[:PRUNE_CHECKS]:
        key = name[: -len(PATH_SUFFIX)]
        try:
            fd = _open_own(directory / name, os.O_RDONLY)
            with os.fdopen(fd, "rb") as handle:
                manifest = os.fsdecode(handle.read(4096))
        except OSError:
            continue
        if not manifest or os.path.lexists(manifest):
            continue
        for suffix in (".idx", *(".idx" + s for s in SQLITE_SIDE_FILES), JOURNAL_SUFFIX, PATH_SUFFIX):
            try:
                os.unlink(directory / (key + suffix))
            except OSError:
                pass


def _open_own(path: Path, flags: int) -> int:
    """Open an existing regular file of ours without following a link; OSError otherwise."""
    fd = os.open(path, flags | _OPEN_FLAGS)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
        os.close(fd)
        raise OSError(errno.EPERM, "not a regular file of ours", str(path))
    return fd


# -- the journal of lashctl's own writes ------------------------------------------------
def stat_or_none(path: Path) -> os.stat_result | None:
    try:
        return os.stat(path)
    except OSError:
        return None


def record_own_write(
    manifest_path: Path, before: os.stat_result | None, after: os.stat_result | None, kind: str = APPEND
) -> None:
    """Journal one write lashctl made to the manifest (call under the manifest lock).

    ``after`` None: stat the path now. Never fails the write it describes.
    Writes only into an existing journal: a manifest nobody cached needs none,
    and ``put`` creates nothing in the cache directory.
    """
    if after is None:
        after = stat_or_none(manifest_path)
        if after is None:
            return
    try:
        index_file = index_path(manifest_path)
        _check_dir(index_file.parent.parent)
        _check_dir(index_file.parent)
        fd = _open_own(journal_path(index_file), os.O_WRONLY | os.O_APPEND)
    except (OSError, Unusable, ValueError):
        return
    try:
        fields = (stat_key(before) if before is not None else (0,) * 5) + stat_key(after)
        os.write(fd, f"{kind} {' '.join(map(str, fields))}\n".encode("ascii"))
    except OSError:
        pass
    finally:
        os.close(fd)


def own_writes_lead(index_file: Path, start: StatKey, end: StatKey) -> bool:
    """Do journalled appends by lashctl lead the manifest from stat ``start`` to ``end``?"""
    if start == end:
        return True
    try:
        fd = _open_own(journal_path(index_file), os.O_RDONLY)
    except OSError:
        return False
    try:
        size = os.fstat(fd).st_size
        if size > MAX_JOURNAL_BYTES:
            return False
        data = os.pread(fd, size, 0)
    except OSError:
        return False
    finally:
        os.close(fd)
    position = start
    for line in data.split(b"\n"):
        parts = line.split()
        if len(parts) != 11:
            continue  # a line cut by a crash, or not ours
        try:
            numbers = tuple(int(p) for p in parts[1:])
        except ValueError:
            continue
        if numbers[:5] != position:
            continue
        if parts[0] != APPEND.encode():
            return False  # rewritten: only a fold from byte 0 is right
        position = numbers[5:]  # type: ignore[assignment]
        if position == end:
            return True
    return False


def clear_journal(index_file: Path) -> None:
    """Empty the journal (after a refresh that saw the manifest as it is, under its lock)."""
    try:
        fd = _open_own(journal_path(index_file), os.O_WRONLY)
    except OSError:
        return
    try:
        if os.fstat(fd).st_size:
            os.ftruncate(fd, 0)
    except OSError:
        pass
    finally:
        os.close(fd)
