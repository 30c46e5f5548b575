"""The write-ahead manifest: a JSON-lines event log and the state it folds to.

Events (one JSON object per ``\\n``-terminated UTF-8 line)::

    {"op":"header","format":"lashctl-manifest","version":1}
    {"op":"intent","attachment_id":ID,"session_id":S,"canonical_uri":"sha256:ID","intent_at_epoch_ms":T}
    {"op":"commit","attachment_id":ID,"session_id":S,"committed_at_epoch_ms":T}
    {"op":"forget","attachment_id":ID,"session_id":S}

State is a set of rows keyed by ``(session_id, attachment_id)``. Writers append
under an exclusive ``flock`` on ``<manifest>.lock``, one ``write`` and one
``fsync`` per command. A final line without ``\\n`` that does not parse is a
torn append: readers skip it with a warning, the next writer truncates it.
"""

from __future__ import annotations

import errno
import fcntl
import json
import math
import os
import re
import stat
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator

from lashctl.backends.base import ManifestView
from lashctl.backends.manifests.jsonl import cachedir
from lashctl.errors import Corrupt, StoreIOError, UnsafePath
from lashctl.fsutil import (
    NAME_MAX,
    READ_FLAGS,
    STAGING_SUFFIX,
    NotARegularFile,
    cut_name,
    describe_mode,
    fit_in,
    flock_within,
    fsync_dir,
    make_dirs,
    open_lock_file,
    open_regular,
    staging_prefix,
    write_all,
    write_file_atomic,
)
from lashctl.fold import LOG_OPS, Event, Row, compacted_lines, step
from lashctl.ids import URI_SCHEME, is_utf8_text, is_valid_id
from lashctl.record import Record
from lashctl.text import escape_text, loads_strict, say
from lashctl.timefmt import MAX_EPOCH_MS  # a time past year 9999 is corruption, not a date

FORMAT = "lashctl-manifest"
VERSION = 1
HEADER = {"op": "header", "format": FORMAT, "version": VERSION}
OPS = LOG_OPS  # what a line's "op" may be
_TAIL_PROBE = 64 * 1024
_EVENT_START = b'{"op":'  # how every line lashctl writes begins
# The id of a line as lashctl and lash write it; a line where this does not
# match exactly once, or that holds any backslash (an escape could hide the
# real key), is parsed whole.
_ID_FIELD = re.compile(rb'"attachment_id"\s*:\s*"([0-9a-f]{64})"')

Warn = Callable[[str], None]


def _stderr_warn(message: str) -> None:
    say(f"lashctl: warning: {escape_text(message)}")


class ManifestState(Record):
    """The fold of a manifest's events, plus what reading it found."""

    __slots__ = ("rows", "lines", "torn_tail", "has_header", "malformed", "_by_id")

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], Row] = {}
        self.lines = 0  # events read (header included), torn tail excluded
        self.torn_tail = False
        self.has_header = False
        self.malformed: list[Corrupt] = []  # lines skipped by a tolerant read
        self._by_id: dict[str, list[Row]] | None = None

    def rows_for(self, attachment_id: str) -> list[Row]:
        if self._by_id is None:
            index: dict[str, list[Row]] = {}
            for row in self.rows.values():
                index.setdefault(row.attachment_id, []).append(row)
            self._by_id = index
        return self._by_id.get(attachment_id, [])

    def ids_with_prefix(self, prefix: str) -> list[str]:
        return sorted(i for i in self.attachment_ids() if i.startswith(prefix))

    def attachment_ids(self) -> Iterable[str]:
        self.rows_for("")  # builds the index
        assert self._by_id is not None
        return self._by_id.keys()

    def apply(self, event: "dict | Event") -> None:
        """Fold one validated event into the state (``lashctl.fold.step``)."""
        if isinstance(event, dict):
            if event["op"] == "header":
                self.has_header = True
                return
            event = Event.from_json(event)
        key = event.key
        before = self.rows.get(key)
        after = step(before, event)
        if after is None:
            if before is not None:
                del self.rows[key]
                self._by_id = None
        elif before is None:
            self.rows[key] = after
            self._by_id = None


class StateView(ManifestView):
    """The queries of ``ManifestView`` answered from an in-memory fold."""

    def __init__(self, state: ManifestState) -> None:
        self.state = state

    def rows_for_keys(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], Row]:
        rows = self.state.rows
        return {k: rows[k] for k in keys if k in rows}

    def rows_for_id(self, attachment_id: str) -> list[Row]:
        return sorted(self.state.rows_for(attachment_id), key=lambda r: r.session_id)

    def ids_with_prefix(self, prefix: str) -> list[str]:
        return self.state.ids_with_prefix(prefix)

    def uncommitted(self, cutoff_ms: int | None, session: str | None) -> Iterator[Row]:
        rows = [
            r
            for r in self.state.rows.values()
            if r.committed_at_epoch_ms is None
            and (cutoff_ms is None or r.intent_at_epoch_ms <= cutoff_ms)
            and (session is None or r.session_id == session)
        ]
        rows.sort(key=lambda r: (r.intent_at_epoch_ms, r.attachment_id, r.session_id))
        return iter(rows)

    def aged(self, cutoff_ms: int) -> Iterator[list[Row]]:
        ids = sorted({r.attachment_id for r in self.uncommitted(cutoff_ms, None)})
        return (self.rows_for_id(i) for i in ids)

    def rows_by_id(self, prefix: str = "") -> Iterator[list[Row]]:
        return (self.rows_for_id(i) for i in self.state.ids_with_prefix(prefix))

    def row_count(self) -> int:
        return len(self.state.rows)

    def keep_reason(self, row: Row) -> str | None:
        return None

    # What the log looked like (the JSON-lines backend only).
    @property
    def log_lines(self) -> int:
        return self.state.lines

    @property
    def torn_tail(self) -> bool:
        return self.state.torn_tail

    @property
    def malformed(self) -> list:
        return self.state.malformed


# -- events --------------------------------------------------------------------
def encode_events(events: Iterable["dict | Event"]) -> bytes:
    dumps = json.dumps
    return b"".join(
        dumps(e if isinstance(e, dict) else e.to_json(), separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        + b"\n"
        for e in events
    )


_CHUNK_ROWS = 32_768  # rows formatted per encode into the growing buffer


def encode_compacted(rows: Iterable[tuple]) -> tuple[bytearray, int]:
    """A compacted log: the header, then for each row ``(attachment_id,
    session_id, canonical_uri, intent_at_ms, committed_at_ms)`` (a None URI is
    the canonical one) its intent and, if committed, its commit. Byte for
    byte what ``encode_events`` writes for those events (strings escaped by
    the function ``json.dumps`` uses without ``ensure_ascii``; an id is hex),
    formatted directly. Returns the bytes and their line count."""
    from json.encoder import encode_basestring as quoted

    out = bytearray(encode_events([HEADER]))
    lines = 1
    chunk: list[str] = []
    add = chunk.append
    for aid, session, uri, intent_at, committed_at in rows:
        head = f'"attachment_id":"{aid}","session_id":{quoted(session)}'
        uri = quoted(uri) if uri is not None else f'"{URI_SCHEME}{aid}"'
        add(f'{{"op":"intent",{head},"canonical_uri":{uri},"intent_at_epoch_ms":{intent_at}}}\n')
        if committed_at is not None:
            add(f'{{"op":"commit",{head},"committed_at_epoch_ms":{committed_at}}}\n')
        if len(chunk) >= _CHUNK_ROWS:
            lines += len(chunk)
            out += "".join(chunk).encode("utf-8")
            chunk.clear()
    lines += len(chunk)
    out += "".join(chunk).encode("utf-8")
    return out, lines


def _is_epoch_ms(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_EPOCH_MS


def validate_event(obj: object) -> str | None:
    """Why ``obj`` is not a valid event, or None if it is one."""
    if not isinstance(obj, dict):
        return "not a JSON object"
    op = obj.get("op")
    if not isinstance(op, str):
        return 'no "op" field'
    if op not in OPS:
        return f"unknown op {op!r} (this lashctl knows {', '.join(OPS)})"
    if op == "header":
        if obj.get("format") != FORMAT:
            return f"header format is {obj.get('format')!r}, expected {FORMAT!r}"
        version = obj.get("version")
        if version != VERSION or isinstance(version, bool):
            return f"manifest version {version!r} is not supported (this lashctl reads version {VERSION})"
        return None
    if not is_valid_id(obj.get("attachment_id")):
        return '"attachment_id" is not a 64-character lowercase hex sha256'
    session = obj.get("session_id")
    if not isinstance(session, str) or not session:
        return '"session_id" is not a non-empty string'
    if not is_utf8_text(session):
        return '"session_id" holds a lone surrogate, not text'
    if op == "intent":
        if not isinstance(obj.get("canonical_uri"), str) or not is_utf8_text(obj["canonical_uri"]):
            return '"canonical_uri" is not a string'
        if not _is_epoch_ms(obj.get("intent_at_epoch_ms")):
            return '"intent_at_epoch_ms" is not an epoch time in milliseconds'
    elif op == "commit":
        if not _is_epoch_ms(obj.get("committed_at_epoch_ms")):
            return '"committed_at_epoch_ms" is not an epoch time in milliseconds'
    return None


def parse_line(raw: bytes, lineno: int, path: Path) -> dict:
    """Decode and validate one line (without its newline); Corrupt names the
    line and, for bad JSON, the column (invalid UTF-8: the byte) a hand fix
    starts from. The one place a malformed line's message is made: the fast
    decoder leaves every line it does not take to this function."""
    bom = 0
    if lineno == 1:
        stripped = strip_bom(raw)
        bom, raw = len(raw) - len(stripped), stripped
    if raw.endswith(b"\r"):
        raw = raw[:-1]  # CRLF from a hand edit
    try:
        obj = loads_strict(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise Corrupt(f"{path}:{lineno}: malformed manifest line: invalid UTF-8 at byte {bom + exc.start + 1}") from exc
    except json.JSONDecodeError as exc:
        # json's own messages may end in "at" ("Invalid control character at"): one "at" only.
        problem = exc.msg[:-3] if exc.msg.endswith(" at") else exc.msg
        raise Corrupt(f"{path}:{lineno}: malformed manifest line: {problem} at column {exc.colno}") from exc
    except ValueError as exc:  # e.g. an integer too long to convert
        raise Corrupt(f"{path}:{lineno}: malformed manifest line: {exc}") from exc
    except RecursionError as exc:
        raise Corrupt(f"{path}:{lineno}: malformed manifest line: nested too deeply") from exc
    problem = validate_event(obj)
    if problem is not None:
        raise Corrupt(f"{path}:{lineno}: {problem}")
    return obj


def strip_bom(raw: bytes) -> bytes:
    """Drop the UTF-8 byte-order mark some editors put at the start of a file."""
    return raw[3:] if raw.startswith(b"\xef\xbb\xbf") else raw


def parses(raw: bytes) -> bool:
    """Whether ``raw`` (one line, without its newline) is valid JSON: a torn line is not."""
    try:
        loads_strict(raw.decode("utf-8"))
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError too
        return False
    return True


_SCAN_CHUNK = 1024 * 1024  # bytes searched at a time by ``_lines_for`` (a longer line: more)
_FIND_IDS = 4  # up to this many ids, each is searched for as is (bytes.find)
_TRIE_IDS = 1024  # up to this many, one pattern of them all; beyond, every id key is matched


def _id_trie(ids: list[str]) -> str:
    """A regular expression matching exactly these ids, as a trie: at each
    character one branch per next character (sorted, distinct ids)."""
    if len(ids) == 1:
        return re.escape(ids[0])
    branches: dict[str, list[str]] = {}
    for i in ids:
        branches.setdefault(i[0], []).append(i[1:])
    alts = [re.escape(c) + _id_trie(rest) for c, rest in branches.items()]
    return alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"


def _line_finder(ids: set[str]) -> Callable[[bytes, int], Iterator[int]]:
    """A function giving, for ``data[:end]`` (complete lines), positions
    within every line there that may be an event of one of ``ids`` and has
    no backslash (the caller adds every line that has one).

    Why nothing is missed: in a line without a backslash no string holds an
    escape, so an event of id X spells its key ``"attachment_id"`` and X
    literally, with only JSON whitespace and a colon between them. Every
    position found is a candidate only: the caller parses the whole line."""
    wanted = sorted(ids)
    if len(wanted) <= _FIND_IDS:
        needles = [i.encode("ascii") for i in wanted]

        def find(data: bytes, end: int) -> Iterator[int]:
            for needle in needles:
                pos = data.find(needle, 0, end)
                while pos >= 0:
                    yield pos
                    pos = data.find(needle, pos + len(needle), end)

        return find
    if len(wanted) <= _TRIE_IDS:
        pattern = re.compile(rb'"attachment_id"\s*:\s*"(?:' + _id_trie(wanted).encode("ascii") + rb')"')
        return lambda data, end: (m.start() for m in pattern.finditer(data, 0, end))
    encoded = {i.encode("ascii") for i in wanted}
    findall, finditer = _ID_FIELD.findall, _ID_FIELD.finditer

    def matching(data: bytes, end: int) -> Iterator[int]:
        if encoded.isdisjoint(findall(data, 0, end)):
            return
        for m in finditer(data, 0, end):
            if m.group(1) in encoded:
                yield m.start()

    return matching


def _lines_for(fd: int, ids: set[str], path: Path) -> Iterator[tuple[int, bytes]]:
    """``(file offset, line without its newline)`` for each line of the log
    on ``fd`` that may be an event of one of ``ids``: every line holding a
    backslash, every line the finder (``_line_finder``) points into, and a
    valid unterminated final line as ``fold_ids`` always treated it (a torn
    one ends the log). Other lines are never split out, parsed or counted."""
    find = _line_finder(ids)
    pos = 0  # where the next read starts: always the start of a line
    want = _SCAN_CHUNK
    tail = b""
    while True:
        try:
            data = os.pread(fd, want, pos)
        except OSError as exc:
            raise StoreIOError.wrap("read", path, exc) from exc
        end = data.rfind(b"\n") + 1  # data[:end]: complete lines
        if not end:
            if len(data) < want:
                tail = data  # the end of the log: an unterminated line, or nothing
                break
            want *= 2  # a line longer than a read
            continue
        want = _SCAN_CHUNK
        starts = {data.rfind(b"\n", 0, at) + 1 for at in find(data, end)}
        at = data.find(b"\\", 0, end)
        while at >= 0:
            starts.add(data.rfind(b"\n", 0, at) + 1)
            at = data.find(b"\\", data.find(b"\n", at) + 1, end)
        for start in sorted(starts):
            raw = data[start : data.find(b"\n", start)]
            if raw.strip():
                yield pos + start, raw
        pos += end
    if not tail:
        return
    found = _ID_FIELD.findall(tail)
    if len(found) == 1 and found[0].decode("ascii") not in ids and b"\\" not in tail:
        return  # plainly another id's line
    if not parses(strip_bom(tail) if pos == 0 else tail):
        return  # a torn tail, as iter_events treats it
    yield pos, tail


def _lineno_at(fd: int, offset: int) -> int:
    """The line number of the line starting at byte ``offset`` (for a message)."""
    lines, pos = 1, 0
    while pos < offset:
        block = os.pread(fd, min(_SCAN_CHUNK, offset - pos), pos)
        if not block:
            break
        lines += block.count(b"\n")
        pos += len(block)
    return lines


class Manifest:
    """A manifest file and its lock: read the state, append events, compact.

    A manifest reached through a symlink (kept on another disk, say) is
    resolved once, here: the lock, the appends and compaction all work on the
    real file, so every route to one log shares one lock, and compaction
    replaces the file, never the link. Nothing is created through a symlink.
    """

    def __init__(self, path: Path, lock_timeout: float = 30.0, warn: Warn = _stderr_warn) -> None:
        if not math.isfinite(lock_timeout) or lock_timeout < 0:
            # NaN or inf would make the lock deadline unreachable: a wait for ever.
            raise ValueError(f"lock timeout {lock_timeout} is not a finite, non-negative number of seconds")
        self.given_path = Path(path)
        self.path = Path(os.path.realpath(path)) if os.path.islink(path) else self.given_path
        self.lock_path = Path(str(self.path) + ".lock")
        self.lock_timeout = lock_timeout
        self.warn = warn
        self._lock_fd: int | None = None

    # -- reading ---------------------------------------------------------------
    def fold_ids(self, ids: set[str]) -> dict[str, list[Row]]:
        """The rows of just these ids, folded from the log itself: one
        sequential read, memory for these ids only. What a sweep confirms its
        candidates with, whatever the state cache says.

        Only the lines that may be events of these ids are parsed
        (``_lines_for``): the rest of the log is searched, block by block,
        in C, never split into lines."""
        rows: dict[tuple[str, str], Row] = {}
        fd = self.open_for_reading()
        if fd is not None:
            try:
                for offset, raw in _lines_for(fd, ids, self.path):
                    try:
                        event = parse_line(raw, 1 if offset == 0 else 2, self.path)
                    except Corrupt:  # named by its line number, counted now
                        event = parse_line(raw, _lineno_at(fd, offset), self.path)
                    if event["op"] == "header" or event["attachment_id"] not in ids:
                        continue
                    change = Event.from_json(event)
                    after = step(rows.get(change.key), change)
                    if after is None:
                        rows.pop(change.key, None)
                    else:
                        rows[change.key] = after
            finally:
                os.close(fd)
        out: dict[str, list[Row]] = {i: [] for i in ids}
        for row in rows.values():
            out[row.attachment_id].append(row)
        for group in out.values():
            group.sort(key=lambda r: r.session_id)
        return out

    def iter_events(
        self,
        state: ManifestState | None = None,
        on_error: Callable[[Corrupt], None] | None = None,
    ) -> Iterator[tuple[int, dict]]:
        """Yield ``(line number, event)``; skip blank lines and a torn tail (warning).

        A malformed line raises Corrupt, or with ``on_error`` is reported to it
        and skipped (``manifest check`` lists every bad line).
        """
        fd = self.open_for_reading()
        if fd is None:
            return
        with os.fdopen(fd, "rb") as handle:
            lineno = 0
            for raw in handle:
                lineno += 1
                if raw.endswith(b"\n"):
                    raw = raw[:-1]
                elif raw.strip() and not parses(strip_bom(raw) if lineno == 1 else raw):
                    self.warn(
                        f"{self.path}:{lineno}: ignoring a torn final line "
                        "(an append interrupted by a crash); the next write repairs it"
                    )
                    if state is not None:
                        state.torn_tail = True
                    return
                if not raw.strip():
                    continue
                try:
                    event = parse_line(raw, lineno, self.path)
                except Corrupt as exc:
                    if on_error is None:
                        raise
                    exc.lineno, exc.raw = lineno, raw
                    on_error(exc)
                    continue
                yield lineno, event

    def read_state(self, tolerant: bool = False) -> ManifestState:
        """Fold the whole log. Raises Corrupt (exit 65) naming the first bad line.

        ``tolerant`` (read-only inspection) skips malformed lines instead and
        lists them in ``state.malformed``: the caller shows them and exits 65
        at the end. Destructive commands never fold tolerantly.
        """
        state = ManifestState()
        count = 0
        on_error = state.malformed.append if tolerant else None
        for _lineno, event in self.iter_events(state, on_error=on_error):
            state.apply(event)
            count += 1
        state.lines = count
        return state

    def open_for_reading(self) -> int | None:
        """A descriptor of the manifest, None if it does not exist.

        Never follows a symlink swapped in after the path was resolved, and
        never blocks on a FIFO: anything but a regular file is refused at once.
        """
        try:
            return self._open(READ_FLAGS, "read")
        except FileNotFoundError:
            return None

    def _open(self, flags: int, action: str) -> int:
        """Open the real manifest file: never through a symlink, never blocking on a FIFO."""
        try:
            return open_regular(self.path, flags=flags)
        except FileNotFoundError:
            raise
        except NotARegularFile as exc:
            raise Corrupt(f"manifest {self.path} is {exc.strerror}, not a regular file") from exc
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UnsafePath(f"manifest {self.path} became a symlink: refusing to follow it") from exc
            raise StoreIOError.wrap(action, self.path, exc) from exc

    def check_regular(self) -> bool:
        """Whether the manifest exists; Corrupt if something other than a regular file is there."""
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise StoreIOError.wrap("read", self.path, exc) from exc
        if not stat.S_ISREG(st.st_mode):
            raise Corrupt(f"manifest {self.path} is {describe_mode(st.st_mode)}, not a regular file")
        return True

    def check_writable(self) -> None:
        """Refuse, before any lock file exists, a manifest a writer must not touch.

        A dangling symlink (the file would be created wherever it points),
        anything that is not a regular file (a FIFO, /dev/null, a directory),
        or a file that does not read as a manifest (Corrupt, file untouched).
        """
        if not self.check_regular():
            if self.path != self.given_path:
                raise UnsafePath(
                    f"manifest {self.given_path} is a symlink to {self.path}, which does not exist: "
                    "refusing to create a file through a symlink"
                )
            return
        fd = self.open_for_reading()
        if fd is not None:
            try:
                st = os.fstat(fd)
                if st.st_nlink > 1:
                    # Another name for the same file may sit outside the store: never write through it.
                    raise UnsafePath(
                        f"manifest {self.path} has {st.st_nlink} hard links: refusing to write "
                        "through a file shared with another path (copy it instead)"
                    )
                size = st.st_size
                if size:
                    self._check_reads_as_manifest(fd, size)
            finally:
                os.close(fd)

    # -- locking ---------------------------------------------------------------
    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the exclusive writer lock; wait at most ``lock_timeout`` seconds."""
        if self._lock_fd is not None:
            yield  # re-entrant within one process
            return
        self.check_writable()
        self._ensure_parent()
        fd = open_lock_file(self.lock_path)
        try:
            flock_within(
                fd,
                self.lock_path,
                self.lock_timeout,
                action=f"lock {self.lock_path}",
                holder="another writer",
                warn=self.warn,
            )
            self._lock_fd = fd
            try:
                yield
            finally:
                self._lock_fd = None
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def _ensure_parent(self) -> None:
        try:
            make_dirs(self.path.parent)
        except OSError as exc:
            raise StoreIOError.wrap("create", self.path.parent, exc) from exc

    # -- writing ---------------------------------------------------------------
    def append(self, events: list[dict]) -> None:
        """Append events durably: one write, one fsync. Must hold the lock.

        Writes the header first when the manifest is new, and repairs a torn
        tail left by a crashed writer (truncates it) before appending.
        """
        if self._lock_fd is None:
            raise RuntimeError("Manifest.append called without holding the lock")
        if not events:
            return
        self.check_writable()
        fd = self._open(os.O_RDWR | os.O_CREAT, "open")
        created = False
        try:
            before = os.fstat(fd)
            size = before.st_size
            prefix = b""
            if size == 0:
                prefix = encode_events([HEADER])
                created = True
                fit_in(fd, self.path.parent)  # a new manifest: as root, owned like its directory
            else:
                self._check_reads_as_manifest(fd, size)
                size, prefix = self._repair_tail(fd, size)
            payload = prefix + encode_events(events)
            # At the end as it is when the write lands, not as it was read: a
            # program appending without the lock (echo >>) is never overwritten.
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_APPEND)
            write_all(fd, payload)
            os.fsync(fd)
            # Lets the state cache tell this append from an edit (lashctl.backends.manifests.jsonl.cachedir).
            cachedir.record_own_write(self.path, before, os.fstat(fd))
        except OSError as exc:
            raise StoreIOError.wrap("append to", self.path, exc) from exc
        finally:
            os.close(fd)
        if created:
            fsync_dir(self.path.parent)

    def _check_reads_as_manifest(self, fd: int, size: int) -> None:
        """Refuse (Corrupt, file untouched) to append to a file that is not a manifest.

        Its first line must be a header or a valid event; a file holding only
        an unterminated line may also be lashctl's own first append, torn by a
        crash (it starts the way every manifest lashctl creates starts).
        """
        head = os.pread(fd, min(size, _TAIL_PROBE), 0)
        *complete, tail = head.split(b"\n")
        first = next((line for line in complete if line.strip()), None)
        if first is not None:
            try:
                parse_line(first, 1, self.path)
                return
            except Corrupt as exc:
                raise Corrupt(f"{exc.message}: not a manifest, refusing to append to it") from exc
        if size <= _TAIL_PROBE:
            raw = strip_bom(tail).strip()
            if not raw or parses(raw) or raw.startswith(_EVENT_START) or _EVENT_START.startswith(raw):
                return  # empty, one complete event, or an append torn before its first newline
        raise Corrupt(f"{self.path}:1: not a manifest (no event at its start): refusing to append to it")

    def _repair_tail(self, fd: int, size: int) -> tuple[int, bytes]:
        """Where to append, and what to write first, given the file's tail."""
        os.lseek(fd, size - 1, os.SEEK_SET)
        if os.read(fd, 1) == b"\n":
            return size, b""
        # Find the start of the unterminated final line.
        start = size
        probe = min(size, _TAIL_PROBE)
        while True:
            os.lseek(fd, start - probe, os.SEEK_SET)
            block = os.read(fd, probe)
            cut = block.rfind(b"\n")
            if cut >= 0:
                line_start = start - probe + cut + 1
                break
            start -= probe
            if start == 0:
                line_start = 0
                break
            probe = min(start, _TAIL_PROBE)
        os.lseek(fd, line_start, os.SEEK_SET)
        tail = os.read(fd, size - line_start)
        if parses(strip_bom(tail) if line_start == 0 else tail):
            return size, b"\n"  # a complete event that only lacks its newline
        saved = self._save_torn(tail, os.fstat(fd))
        self.warn(
            f"{self.path}: truncating a torn final line left by an interrupted append "
            f"({len(tail)} bytes, saved to {saved})"
        )
        os.ftruncate(fd, line_start)
        return line_start, b"" if line_start else encode_events([HEADER])

    def _save_torn(self, tail: bytes, manifest: os.stat_result) -> Path:
        """Keep what a repair cuts, durably, beside the manifest and no wider
        than it (it may hold what the manifest does): ``<manifest>.torn-<UTC
        time>``, the manifest's name cut so that the whole fits NAME_MAX."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        name = cut_name(self.path.name, NAME_MAX - len(f".torn-{stamp}-{os.urandom(3).hex()}"))
        target = self.path.with_name(f"{name}.torn-{stamp}")
        while os.path.lexists(target):  # two repairs within a second
            target = self.path.with_name(f"{name}.torn-{stamp}-{os.urandom(3).hex()}")
        write_file_atomic(target, tail, widest=stat.S_IMODE(manifest.st_mode))
        return target

    def compact(self, state: ManifestState, written: Callable[[bytes, int], None] | None = None) -> int:
        """Rewrite the manifest as ``state`` atomically. Must hold the lock.

        Returns the number of lines written; ``written`` is told the bytes
        and the line count once they are the manifest (``cache.compact``
        stores the state as the new file's cache there).
        """
        if self._lock_fd is None:
            raise RuntimeError("Manifest.compact called without holding the lock")
        data, lines = encode_compacted(
            (row.attachment_id, row.session_id, row.canonical_uri, row.intent_at_epoch_ms, row.committed_at_epoch_ms)
            for row in state.rows.values()
        )
        return self.replace_log(data, lines, written)

    def replace_log(
        self, data: bytes | bytearray, lines: int, written: Callable[[bytes, int], None] | None = None
    ) -> int:
        """Make ``data`` (``lines`` lines, a compacted log) the manifest,
        atomically. Must hold the lock. ``written`` as for ``compact``."""
        if self._lock_fd is None:
            raise RuntimeError("Manifest.compact called without holding the lock")
        before = cachedir.stat_or_none(self.path)
        # Staged beside the real file (never the link): the rename must not
        # cross file systems, and a symlinked manifest stays a symlink.
        write_file_atomic(self.path, data)
        cachedir.record_own_write(self.path, before, None, cachedir.REWRITE)
        if written is not None:
            written(data, lines)
        return lines

    # -- litter ------------------------------------------------------------------
    def litter(self) -> list[tuple[str, os.stat_result]]:
        """Staging files a killed compaction left beside the manifest
        (``.<name>.<random>.part``, the name cut to fit: ``fsutil.staging_name``)."""
        parent = self.path.parent
        ours = re.compile(re.escape(staging_prefix(self.path.name)) + r"[0-9a-f]{12}" + re.escape(STAGING_SUFFIX))
        try:
            names = [n for n in os.listdir(parent) if ours.fullmatch(n)]
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as exc:
            raise StoreIOError.wrap("list", parent, exc) from exc
        found = []
        for name in sorted(names):
            try:
                st = os.lstat(parent / name)
            except FileNotFoundError:
                continue
            if stat.S_ISREG(st.st_mode):
                found.append((name, st))
        return found

    def remove_litter(self, name: str) -> None:
        if not (name.startswith(staging_prefix(self.path.name)) and name.endswith(STAGING_SUFFIX)) or "/" in name:
            raise ValueError(f"not compaction litter: {name!r}")
        try:
            os.unlink(self.path.parent / name)
        except FileNotFoundError:
            pass


class CheckReport(Record):
    """What ``manifest check`` found: counts, the torn tail, every malformed line."""

    __slots__ = (
        "path",
        "exists",
        "lines",
        "events_by_op",
        "rows",
        "rows_committed",
        "torn_tail",
        "has_header",
        "problems",
    )

    def __init__(self, path: Path, exists: bool) -> None:
        self.path = path
        self.exists = exists
        self.lines = 0
        self.events_by_op: dict[str, int] = dict.fromkeys(OPS, 0)
        self.rows = 0
        self.rows_committed = 0
        self.torn_tail = False
        self.has_header = False
        self.problems: list[str] = []

    @property
    def compacted_lines(self) -> int:
        return compacted_lines(self.rows, self.rows_committed)


def check(manifest: Manifest) -> CheckReport:
    """Validate every line (not stopping at the first bad one) and count events."""
    report = CheckReport(path=manifest.path, exists=manifest.path.exists())
    state = ManifestState()
    for _lineno, event in manifest.iter_events(state, on_error=lambda exc: report.problems.append(exc.message)):
        report.events_by_op[event["op"]] += 1
        state.apply(event)
    report.lines = sum(report.events_by_op.values()) + len(report.problems)
    report.torn_tail = state.torn_tail
    report.has_header = state.has_header
    report.rows = len(state.rows)
    report.rows_committed = sum(1 for r in state.rows.values() if r.committed)
    return report
