"""Reading the manifest into the state cache: which stored state may be
extended (validation), folding the new lines (or the whole log) into it,
and the unterminated final line.

``LogSync.refresh`` does the SQLite half of ``ManifestIndex.refresh``; what
happens when the .idx cannot be used (the in-memory fold) is the caller's
business. See ``cache`` for the design.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

from lashctl.backends.blobs.localfs import NotARegularFile, open_regular
from lashctl.backends.manifests.jsonl import cache_store as store
from lashctl.backends.manifests.jsonl import cachedir
from lashctl.backends.manifests.jsonl.cache_store import INDEXES, SELECT_ROW, Meta, sha, stored_uri, to_row
from lashctl.backends.manifests.jsonl.log import ManifestState, Row, parse_line, parses, strip_bom
from lashctl.errors import Corrupt, StoreIOError
from lashctl.fold import Effect, Event

if TYPE_CHECKING:  # pragma: no cover
    from lashctl.backends.manifests.jsonl.log import Manifest

_CHUNK = 8 * 1024 * 1024  # bytes read at a time
_BATCH_LINES = 10_000  # lines folded in Python before they are written (bounds memory)
_BOM = b"\xef\xbb\xbf"


def _pread_exact(fd: int, length: int, offset: int) -> bytes:
    parts = []
    while length > 0:
        block = os.pread(fd, length, offset)
        if not block:
            break
        parts.append(block)
        length -= len(block)
        offset += len(block)
    return b"".join(parts)


class _Batch:
    """The net effect of a run of events on the stored rows (``fold.Effect``
    per key), written with one statement per key."""

    __slots__ = ("pending",)

    def __init__(self) -> None:
        self.pending: dict[tuple[str, str], Effect] = {}

    def __len__(self) -> int:
        return len(self.pending)

    def add(self, event: dict) -> None:
        if event["op"] == "header":
            return
        change = Event.from_json(event)
        key = change.key
        effect = self.pending.get(key)
        if effect is None:
            effect = self.pending[key] = Effect(*key)
        effect.add(change)

    def write(self, conn: sqlite3.Connection) -> None:
        deletes, replaces, merges, commits = [], [], [], []
        for (session, aid), effect in self.pending.items():
            row = effect.from_absent
            if effect.replaces:
                if row is None:
                    deletes.append((session, aid))
                else:
                    replaces.append(
                        (
                            session,
                            aid,
                            stored_uri(aid, row.canonical_uri),
                            row.intent_at_epoch_ms,
                            row.committed_at_epoch_ms,
                        )
                    )
            elif row is not None:
                merges.append(
                    (
                        session,
                        aid,
                        stored_uri(aid, row.canonical_uri),
                        row.intent_at_epoch_ms,
                        row.committed_at_epoch_ms,
                        effect.refreshed_intent,
                        effect.commit_at,
                    )
                )
            elif effect.commit_at is not None:
                commits.append((effect.commit_at, session, aid))
        if deletes:
            conn.executemany(store.SQL_DELETE, deletes)
        if replaces:
            conn.executemany(store.SQL_REPLACE, replaces)
        if merges:
            conn.executemany(store.SQL_MERGE, merges)
        if commits:
            conn.executemany(store.SQL_COMMIT, commits)
        self.pending.clear()


class _BadLine(Exception):
    """A malformed line met by ``_build``: where it is, and the Corrupt to raise."""

    def __init__(self, error: Corrupt, lines: list[bytes], index_in_block: int, lineno: int, data_offset: int) -> None:
        super().__init__(error.message)
        self.error, self.lines, self.index_in_block = error, lines, index_in_block
        self.lineno, self.data_offset = lineno, data_offset


def _first_line(block: bytes) -> tuple[int, bytes]:
    """Length and sha256 of the log's first line (with its newline), from its first block."""
    first = block[: block.find(b"\n")] if b"\n" in block else block
    return len(first) + 1, sha(first + b"\n")


def _fold_lines(block: bytes, lineno: int, data_offset: int, path: Path, fold: Callable[[list], None]) -> int:
    """Parse a block line by line with ``parse_line`` (which names a bad line
    exactly) and fold its events (``fast.fold_into``); return the line number
    of its last line."""
    from lashctl.backends.manifests.jsonl.fast import from_event

    lines = block.split(b"\n")
    slow = []
    for i, raw in enumerate(lines):
        lineno += 1
        if (raw and raw[0] == 123) or raw.strip():
            try:
                event = parse_line(raw, lineno, path)
            except Corrupt as exc:
                fold(slow)
                raise _BadLine(exc, lines, i, lineno, data_offset) from None
            slow.append(from_event(event))
    fold(slow)
    return lineno


def read_blocks(fd: int, pos: int, size: int, tail: list[bytes], path: Path) -> Iterator[tuple[int, bytes]]:
    """The file from ``pos`` to ``size`` as blocks of complete lines: per
    chunk read, ``(file offset, the lines without their last newline)``.
    The unterminated rest is left in ``tail``."""
    carry = b""  # an incomplete line carried into the next chunk
    while pos < size:
        try:
            chunk = os.pread(fd, min(_CHUNK, size - pos), pos)
        except OSError as exc:
            raise StoreIOError.wrap("read", path, exc) from exc
        if not chunk:
            break
        pos += len(chunk)
        data = carry + chunk if carry else chunk
        cut = data.rfind(b"\n")
        if cut < 0:
            carry = data
            continue
        carry = data[cut + 1 :]
        block = data[:cut]
        del data
        yield pos - len(carry) - cut - 1, block
    tail.append(carry)


class FastFold:
    """The whole log folded in memory from byte 0, the way a build reads it:
    blocks of lines in the form every writer of this format uses are decoded
    and validated in C (``fast.decode_block``), any other block is parsed
    line by line (``_fold_lines``, which names a bad line exactly), and both
    are folded by ``fast.fold_into`` into ``rows``.

    ``run`` raises ``_BadLine`` at a malformed line, having folded the lines
    before it; the attributes then describe those lines.
    """

    def __init__(self, path: Path) -> None:
        from lashctl.backends.manifests.jsonl.fast import fold_into

        self.path = path
        self.rows: dict = {}
        self._fold = fold_into(self.rows)
        self.lineno = 0  # complete lines read
        self.events = 0  # events among them (blank lines are none)
        self.done_offset = 0  # the end of the last complete line
        self.first_len, self.first_sha = 0, None
        self.last_line = b""
        self.tail: list[bytes] = []

    def run(self, fd: int, size: int) -> None:
        import gc

        from lashctl.backends.manifests.jsonl.fast import decode_block

        fold = self._fold
        gc_was_enabled = gc.isenabled()
        gc.disable()  # a million small containers, none of them cyclic: no collections while they grow
        try:
            for data_offset, block in read_blocks(fd, 0, size, self.tail, self.path):
                if self.lineno == 0:
                    self.first_len, self.first_sha = _first_line(block)
                count = block.count(b"\n") + 1
                # (a byte-order mark before line 1 is parse_line's business)
                events = None if self.lineno == 0 and block.startswith(_BOM) else decode_block(block, count)
                if events is not None:
                    fold(events)
                    self.lineno += count
                    self.events += count
                else:
                    before = self.lineno
                    try:
                        self.lineno = _fold_lines(block, before, data_offset, self.path, fold)
                    except _BadLine as bad:
                        good = bad.lines[: bad.index_in_block]
                        if good:
                            self.done_offset = bad.data_offset + sum(map(len, good)) + len(good)
                            self.last_line = good[-1]
                        self.events += sum(1 for raw in good if raw.strip())
                        self.lineno = bad.lineno - 1
                        raise
                    self.events += sum(1 for raw in block.split(b"\n") if raw.strip())
                self.done_offset = data_offset + len(block) + 1
                self.last_line = block[block.rfind(b"\n") + 1 :]
                del block
        finally:
            if gc_was_enabled:
                gc.enable()


class LogSync:
    """Keeps the .idx's rows the fold of the manifest's complete lines.

    After ``refresh``: ``conn`` is open, ``overlay`` holds the effect of a
    valid unterminated final line (at most one key; None: the row is gone),
    ``torn_tail`` says whether that line was torn, ``lines`` counts the
    complete lines and ``seen`` is the manifest stat the stored meta describes.
    """

    def __init__(self, manifest: "Manifest", path: Path, under_lock: bool, say_unusable: Callable[[str], None]) -> None:
        self.manifest = manifest
        self.path = path
        self.under_lock = under_lock
        self._say_unusable = say_unusable
        self.conn: sqlite3.Connection | None = None
        self.seen: cachedir.StatKey | None = None
        self.overlay: dict[tuple[str, str], Row | None] = {}
        self.torn_tail = False
        self.lines = 0

    def connection(self) -> sqlite3.Connection:
        if self.conn is None:
            self.conn = store.connect(self.path, self.manifest.path, self.under_lock, self._say_unusable)
        return self.conn

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except sqlite3.Error:
                pass
            self.conn = None

    def forget_tail(self) -> None:
        self.overlay = {}
        self.torn_tail = False

    # -- refresh ---------------------------------------------------------------------
    def refresh(self, fd: int) -> bool:
        """Bring the .idx up to date with the manifest open on ``fd``; False
        if the manifest was removed meanwhile (there is nothing to read).

        Raises sqlite3.DatabaseError when the .idx cannot be used, OSError
        when the manifest cannot be read, Corrupt for a bad line.
        """
        self.seen = None
        conn = self.connection()
        st = os.fstat(fd)
        meta = store.read_meta(conn)
        if self._reusable(meta, fd, st):
            assert meta is not None
            # Steady state: nothing to write unless a complete line follows the offset.
            self.lines = meta.lines
            tail = self._read_tail_if_no_newline(fd, meta.offset, st.st_size)
            if tail is not None:
                self._tail(conn, tail, meta.lines + 1)
                self.seen = meta.stat_key()
                return True
        conn.execute("BEGIN IMMEDIATE")
        try:
            return self._refresh_locked(conn)
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _reusable(self, meta: Meta | None, fd: int, st: os.stat_result) -> bool:
        """May the stored state be extended, or must it be rebuilt from byte 0?

        Only when the manifest is as the stored meta saw it, or lashctl's own
        journalled appends took it from there to here (lashctl.backends.manifests.jsonl.cachedir): any
        other change, however it looks, is folded again from byte 0.
        """
        if meta is None or meta.dev != str(st.st_dev) or meta.ino != str(st.st_ino):
            return False
        if not cachedir.own_writes_lead(self.path, meta.stat_key(), cachedir.stat_key(st)):
            return False
        # Kept as a second guard: cheap, and they catch an edit within the same clock tick.
        if st.st_size < meta.offset:
            return False  # truncated below what was consumed
        if st.st_size == meta.size and st.st_mtime_ns != meta.mtime_ns:
            return False  # rewritten in place
        if meta.offset == 0:
            return True
        if meta.first_sha != sha(_pread_exact(fd, meta.first_len, 0)):
            return False
        start = meta.offset - meta.last_len
        if start > 0:
            block = _pread_exact(fd, meta.last_len + 1, start - 1)
            return block[:1] == b"\n" and sha(block[1:]) == meta.last_sha
        return sha(_pread_exact(fd, meta.last_len, 0)) == meta.last_sha

    @staticmethod
    def _read_tail_if_no_newline(fd: int, offset: int, size: int) -> bytes | None:
        """The bytes after ``offset`` if they hold no newline (no complete line to consume)."""
        if size <= offset:
            return b""
        data = _pread_exact(fd, size - offset, offset) if size - offset <= _CHUNK else None
        if data is None or b"\n" in data:
            return None
        return data

    def _refresh_locked(self, conn: sqlite3.Connection) -> bool:
        """Inside BEGIN IMMEDIATE: catch up (or rebuild), commit, apply the tail."""
        # Reopen: another process may have indexed a newer inode (after a compaction)
        # than the descriptor this refresh started with.
        try:
            fd = open_regular(self.manifest.path)
        except FileNotFoundError:
            conn.execute("ROLLBACK")
            return False
        except NotARegularFile as exc:
            conn.execute("ROLLBACK")
            raise Corrupt(f"manifest {self.manifest.path} is {exc.strerror}, not a regular file") from exc
        try:
            st = os.fstat(fd)
            meta = store.read_meta(conn)
            if not self._reusable(meta, fd, st):
                meta = store.reset(conn, st)
            assert meta is not None
            bulk = st.st_size - meta.offset > max(meta.offset, 16 * 1024 * 1024)
            if bulk:  # index once at the end: much faster than keeping indexes during a big load
                for sql in store.DROP_INDEXES:
                    conn.execute(sql)
            error: Corrupt | None = None
            tail = b""
            consume = self._build if meta.offset == 0 else self._consume
            try:
                tail = consume(conn, fd, meta, st.st_size)
            except Corrupt as exc:
                error = exc  # keep what precedes the bad line; the next refresh stops there again
            for sql in INDEXES:
                conn.execute(sql)
            meta.size, meta.mtime_ns, meta.ctime_ns = st.st_size, st.st_mtime_ns, st.st_ctime_ns
            store.write_meta(conn, meta)
            conn.execute("COMMIT")
            self.seen = meta.stat_key()
            if error is not None:
                raise error
            self._tail(conn, tail, meta.lines + 1)
        finally:
            os.close(fd)
        return True

    # -- folding lines ---------------------------------------------------------------
    def _consume(self, conn: sqlite3.Connection, fd: int, meta: Meta, size: int) -> bytes:
        """Fold complete lines from ``meta.offset`` to ``size``; return the unterminated tail.

        Advances ``meta`` past each batch written, so on Corrupt it describes
        exactly the lines before the bad one.
        """
        path = self.manifest.path
        batch = _Batch()
        add, parse, limit = batch.add, parse_line, _BATCH_LINES
        lineno = meta.lines
        done_offset = meta.offset
        first_len, first_sha = meta.first_len, meta.first_sha
        last_line = b""
        tail: list[bytes] = []
        for data_offset, block in self._blocks(fd, meta.offset, size, tail):
            lines = block.split(b"\n")
            end = data_offset + len(block) + 1
            del block
            if lineno == 0:
                first_len, first_sha = len(lines[0]) + 1, sha(lines[0] + b"\n")
            base = lineno
            for raw in lines:
                lineno += 1
                if (raw and raw[0] == 123) or raw.strip():  # 123: "{", the usual first byte
                    try:
                        add(parse(raw, lineno, path))
                    except Corrupt:
                        batch.write(conn)
                        good = lines[: lineno - base - 1]
                        if good:
                            done_offset = data_offset + sum(map(len, good)) + len(good)
                            last_line = good[-1]
                        meta.advance(done_offset, lineno - 1, first_len, first_sha, last_line)
                        raise
                if lineno % limit == 0:
                    batch.write(conn)
            done_offset = end
            last_line = lines[-1]
            del lines
        batch.write(conn)
        meta.advance(done_offset, lineno, first_len, first_sha, last_line)
        return tail[0]

    def _build(self, conn: sqlite3.Connection, fd: int, meta: Meta, size: int) -> bytes:
        """``_consume`` from byte 0 into the empty table: the whole log folded in
        memory (``FastFold``), then written once, in primary-key order."""
        folded = FastFold(self.manifest.path)
        try:
            folded.run(fd, size)
        except _BadLine as bad:
            # Keep what precedes the bad line, as _consume does.
            store.write_folded(conn, folded.rows)
            meta.advance(folded.done_offset, folded.lineno, folded.first_len, folded.first_sha, folded.last_line)
            raise bad.error from None
        store.write_folded(conn, folded.rows)
        meta.advance(folded.done_offset, folded.lineno, folded.first_len, folded.first_sha, folded.last_line)
        return folded.tail[0]

    def _blocks(self, fd: int, pos: int, size: int, tail: list[bytes]) -> Iterator[tuple[int, bytes]]:
        return read_blocks(fd, pos, size, tail, self.manifest.path)

    def _tail(self, conn: sqlite3.Connection, raw: bytes, lineno: int) -> None:
        """A final line without "\\n", as ``iter_events`` treats it; never consumed."""
        self.overlay = {}
        self.lines = lineno - 1
        if not raw.strip():
            return
        if not parses(strip_bom(raw) if lineno == 1 else raw):
            self.torn_tail = True
            self.manifest.warn(
                f"{self.manifest.path}:{lineno}: ignoring a torn final line "
                "(an append interrupted by a crash); the next write repairs it"
            )
            return
        event = parse_line(raw, lineno, self.manifest.path)  # a valid event, or Corrupt
        if event["op"] == "header":
            return
        key = (event["session_id"], event["attachment_id"])
        found = conn.execute(SELECT_ROW + " WHERE session_id = ? AND attachment_id = ?", key).fetchone()
        state = ManifestState()
        if found is not None:
            state.rows[key] = to_row(*found)
        state.apply(event)
        self.overlay[key] = state.rows.get(key)

    # -- the append journal ----------------------------------------------------------
    def trim_journal(self) -> None:
        """Empty the append journal once the stored meta describes the manifest as it is.

        Only under the manifest lock: no lashctl append can be journalled between
        the check and the truncation, so no entry a later refresh needs is lost.
        """
        if not self.under_lock or self.seen is None:
            return
        current = cachedir.stat_or_none(self.manifest.path)
        if current is not None and cachedir.stat_key(current) == self.seen:
            cachedir.clear_journal(self.path)
