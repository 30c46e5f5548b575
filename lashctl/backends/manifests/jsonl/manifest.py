"""The JSON-lines manifest as a ``ManifestBackend`` (README, "The manifest").

The log (``log.Manifest``) is the only source of truth; its state cache
(``cache.ManifestIndex``, SQLite in the user's cache directory) answers
the queries. A view is refreshed when it is opened (under the manifest lock
for writers and sweeps), so a query never answers from a stale cache, and the
cache is kept in lockstep by lashctl's own appends. When the cache cannot be
used the same queries are answered from an in-memory fold (``StateView``).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from itertools import groupby
from pathlib import Path
from typing import Callable, Iterator

from lashctl.backends.base import FILE, JSONL, BlobStat, Found, ManifestBackend, ManifestView, ManifestWriter
from lashctl.backends.manifests.jsonl.log import Manifest, ManifestState, StateView, Warn
from lashctl.fold import FORGET, Event, Row, step

STAGING = "staging"
_GUARD_CHUNK = 10_000  # guarded forgets decided per chunk of this many (distinct) keys


class CacheView(ManifestView):
    """The queries of ``ManifestView`` answered by the state cache."""

    def __init__(self, index, manifest: Manifest) -> None:
        self.index = index
        self.manifest = manifest
        self.malformed: list = []

    def rows_for_keys(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], Row]:
        return self.index.rows_for_keys(keys)

    def rows_for_id(self, attachment_id: str) -> list[Row]:
        return self.index.rows_for_id(attachment_id)

    def ids_with_prefix(self, prefix: str) -> list[str]:
        return self.index.ids_with_prefix(prefix)

    def uncommitted(self, cutoff_ms: int | None, session: str | None) -> Iterator[Row]:
        return self.index.uncommitted(cutoff_ms, session)

    def aged(self, cutoff_ms: int) -> Iterator[list[Row]]:
        return self.index.aged(cutoff_ms)

    def uncommitted_chunks(self, cutoff_ms: int | None, session: str | None) -> Iterator[list[tuple]] | None:
        """Raw rows ``(id, session, uri, intent_at)`` in chunks, from the
        cache's index (``ManifestIndex.uncommitted_chunks``); None where the
        cache cannot answer alone."""
        return self.index.uncommitted_chunks(cutoff_ms, session)

    def rows_by_id(self, prefix: str = "") -> Iterator[list[Row]]:
        return self.index.rows_by_id(prefix)

    def row_count(self) -> int:
        return self.index.row_count()

    def keep_reason(self, row: Row) -> str | None:
        return None

    def confirm(self, ids) -> dict[str, list[Row]]:
        """The rows of these ids as the log itself says (see ``confirm_rows``)."""
        return confirm_rows(self, self.manifest, ids)

    @property
    def log_lines(self) -> int:
        return self.index.log_lines()

    @property
    def torn_tail(self) -> bool:
        return self.index.torn_tail


class Writer(ManifestWriter):
    """A view with the manifest lock held: appends go to the log, then the cache.

    The view is opened on the first query or append (opening it validates
    the log: a writer never appends to a corrupt one). Under the lock the
    cache is never trusted to say "no such row": a key or prefix it does not
    know is looked up in the log. Every other query is the opened view's.
    """

    def __init__(self, manifest: "JsonlManifest") -> None:
        self._manifest = manifest
        self._view = None
        self._log: ManifestState | None = None
        self._stack = None

    def _opened(self):
        if self._view is None:
            from contextlib import ExitStack

            self._stack = ExitStack()
            self._view = self._stack.enter_context(self._manifest.reading())
        return self._view

    def close(self) -> None:
        if self._stack is not None:
            self._stack.close()
            self._stack, self._view = None, None

    def rows_for_id(self, attachment_id: str) -> list[Row]:
        return self._opened().rows_for_id(attachment_id)

    def rows_for_ids(self, attachment_ids: list[str]) -> dict[str, list[Row]]:
        return self._opened().rows_for_ids(attachment_ids)

    def uncommitted(self, cutoff_ms: int | None, session: str | None) -> Iterator[Row]:
        return self._opened().uncommitted(cutoff_ms, session)

    def aged(self, cutoff_ms: int) -> Iterator[list[Row]]:
        return self._opened().aged(cutoff_ms)

    def rows_by_id(self, prefix: str = "") -> Iterator[list[Row]]:
        return self._opened().rows_by_id(prefix)

    def row_count(self) -> int:
        return self._opened().row_count()

    def keep_reason(self, row: Row) -> str | None:
        return self._opened().keep_reason(row)

    def confirm(self, attachment_ids) -> dict[str, list[Row]]:
        return self._opened().confirm(attachment_ids)

    def uncommitted_chunks(self, cutoff_ms, session):
        return self._opened().uncommitted_chunks(cutoff_ms, session)

    def rendered_row(self, values: tuple) -> Row | None:
        return self._opened().rendered_row(values)

    @property
    def malformed(self):
        return self._opened().malformed

    @property
    def torn_tail(self) -> bool:
        return self._opened().torn_tail

    @property
    def log_lines(self) -> int | None:
        return self._opened().log_lines

    def _log_state(self) -> ManifestState:
        if self._log is None:
            self._log = self._manifest.log.read_state()
        return self._log

    def rows_for_keys(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], Row]:
        view = self._opened()
        found = view.rows_for_keys(keys)
        missing = [k for k in keys if k not in found]
        if missing and isinstance(view, CacheView):
            rows = self._log_state().rows
            found.update((k, rows[k]) for k in missing if k in rows)
        return found

    def ids_with_prefix(self, prefix: str) -> list[str]:
        view = self._opened()
        ids = view.ids_with_prefix(prefix)
        if not ids and isinstance(view, CacheView):
            ids = self._log_state().ids_with_prefix(prefix)
        return ids

    def append(self, events: list[Event]) -> None:
        events = self._resolve_guards(events)
        if not events:
            return
        # Writers never append to a corrupt log (Corrupt names the line). The
        # view validates it: the state cache reads only the bytes added since
        # it last did (any other change makes it read the log again).
        self._opened()
        self._manifest.log.append(events)
        self._log = None
        view = self._view
        if isinstance(view, CacheView):
            view.index.refresh()  # reads only the lines just appended
        elif view is not None:
            for event in events:
                view.state.apply(event)

    def _resolve_guards(self, events: list[Event]) -> list[Event]:
        """The log records no cutoff on a forget: decide each guarded forget
        here, under the lock, against the rows as they stand (``fold.step``),
        and record only those that delete."""
        if not any(e.op == FORGET and e.at_ms is not None for e in events):
            return events
        if len({e.key for e in events}) == len(events) and len(events) > _GUARD_CHUNK:
            # One event per key (a big sweep's forgets): no event depends on
            # another, so the rows are read a chunk at a time (flat memory).
            out = []
            for start in range(0, len(events), _GUARD_CHUNK):
                out.extend(self._resolve_guards(events[start : start + _GUARD_CHUNK]))
            return out
        rows = {k: r.replace() for k, r in self.rows_for_keys(list({e.key for e in events})).items()}
        out = []
        for event in events:
            after = step(rows.get(event.key), event)
            if event.op == FORGET and event.at_ms is not None:
                if after is not None:
                    continue  # the guard keeps the row: nothing to record
                event = Event.forget(event.attachment_id, event.session_id)
            if after is None:
                rows.pop(event.key, None)
            else:
                rows[event.key] = after
            out.append(event)
        return out


class JsonlManifest(ManifestBackend):
    """A JSON-lines manifest file, locked with ``flock`` (one machine only)."""

    kind = JSONL
    blocks_writers = True  # a sweep holds the one lock every writer takes

    def __init__(
        self,
        path: Path,
        lock_timeout: float = 30.0,
        warn: Warn | None = None,
        note: Callable[[str], None] | None = None,
    ) -> None:
        kwargs = {} if warn is None else {"warn": warn}
        self.log = Manifest(Path(path), lock_timeout=lock_timeout, **kwargs)
        self.note = note
        self.name = str(self.log.given_path)

    @property
    def path(self) -> Path:
        return self.log.path

    def warn(self, message: str) -> None:
        self.log.warn(message)

    def identity(self) -> str:
        return "file:" + os.path.realpath(self.log.given_path)

    def locked(self):
        """The log's flock (``Manifest.locked``)."""
        return self.log.locked()

    def inspecting(self):
        return self.reading(tolerant=True)

    def check_log(self):
        """Every line validated and counted (``manifest check``): a ``log.CheckReport``."""
        from lashctl.backends.manifests.jsonl.log import check

        return check(self.log)

    def iter_events(self, state=None, on_error=None):
        """The log's events with their line numbers (``Manifest.iter_events``)."""
        return self.log.iter_events(state, on_error=on_error)

    def exists(self) -> bool:
        return os.path.lexists(self.log.given_path)

    def check_writable(self) -> None:
        self.log.check_writable()

    def check_readable(self) -> None:
        """A FIFO or a device at the manifest's path: one line now, not a hang."""
        self.log.check_regular()

    def index(self):
        """The state cache, refreshed."""
        from lashctl.backends.manifests.jsonl.cache import ManifestIndex

        index = ManifestIndex(self.log, note=self.note)
        index.refresh()
        return index

    @contextmanager
    def reading(self, tolerant: bool = False) -> Iterator[CacheView | StateView]:
        """A view of the manifest as it is now. ``tolerant`` (inspection only):
        a manifest with malformed lines is folded in memory, skipping them
        (listed in ``view.malformed``), instead of stopping the command."""
        from lashctl.errors import Corrupt

        try:
            index = self.index()
        except Corrupt:
            if not tolerant:
                raise
            yield StateView(self.log.read_state(tolerant=True))
            return
        with index:
            yield CacheView(index, self.log) if not index.using_fallback else StateView(index._memory)

    @contextmanager
    def writing(self) -> Iterator[Writer]:
        with self.log.locked():
            writer = Writer(self)
            try:
                yield writer
            finally:
                writer.close()

    sweeping = writing

    def compact_log(self, *, dry_run: bool = False) -> tuple[int, int, int]:
        """Rewrite the log as its folded state under the lock (``manifest
        compact``): lines before, lines after, rows. A dry run only counts."""
        from lashctl.backends.manifests.jsonl.log import compacted_lines

        if dry_run:
            folded = self.log.read_state()
            committed = sum(1 for r in folded.rows.values() if r.committed)
            return folded.lines, compacted_lines(len(folded.rows), committed), len(folded.rows)
        from lashctl.backends.manifests.jsonl.compact import compact_log

        return compact_log(self.log)  # one read, one write, one insert into the cache

    def compact(self, state: ManifestState) -> int:
        """Rewrite the log as ``state`` (under its lock) and keep that state as its cache."""
        from lashctl.backends.manifests.jsonl.cache import compact

        return compact(self.log, state)

    def read_state(self, tolerant: bool = False) -> ManifestState:
        """The whole log folded in memory (``manifest compact`` and ``check`` need it)."""
        return self.log.read_state(tolerant=tolerant)

    # -- litter ------------------------------------------------------------------
    def litter(self) -> list[Found]:
        """Staging files a killed ``manifest compact`` left beside the manifest."""
        parent = self.log.path.parent
        return [
            Found(
                STAGING, name, str(parent / name), BlobStat(st.st_size, st.st_mtime_ns // 1_000_000, FILE), handle=name
            )
            for name, st in self.log.litter()
        ]

    def remove_litter(self, found: Found) -> None:
        self.log.remove_litter(found.handle)


class _NothingWritten(StateView):
    """A view of no rows that a writer may append nothing to."""

    def append(self, events) -> None:
        if events:
            raise RuntimeError("nothing may be written to a store that does not exist yet")


class Unwritten(JsonlManifest):
    """The JSON-lines manifest of the default store before anything was
    stored there, for a command that creates no store: its writers and
    sweeps see no rows, take no lock and write nothing, so neither a
    directory nor a lock file appears. Reads go to the manifest as it is."""

    def __init__(self, manifest: JsonlManifest) -> None:
        self.__dict__.update(manifest.__dict__)

    @contextmanager
    def writing(self) -> Iterator[ManifestWriter]:
        yield _NothingWritten(ManifestState())

    sweeping = writing

    def locked(self):
        from contextlib import nullcontext

        return nullcontext()

    def compact_log(self, *, dry_run: bool = False) -> tuple[int, int, int]:
        return super().compact_log(dry_run=True)


def confirm_rows(view, manifest: Manifest, ids) -> dict[str, list[Row]]:
    """A sweep never deletes on the cache's word alone: the rows of its
    candidates are folded from the log itself (one read, memory for these ids
    only). If the cache disagreed, it is dropped so that the next command
    rebuilds it, and the log's answer is used."""
    ids = set(ids)
    if not ids:
        return {}
    from_log = manifest.fold_ids(ids)
    if any(view.rows_for_id(i) != rows for i, rows in from_log.items()):
        manifest.warn(
            f"the state cache of {manifest.path} disagreed with the log; "
            "using the log (the cache is rebuilt on the next command)"
        )
        view.index.discard()
    return from_log


def group_by_id(rows: Iterator[Row]) -> Iterator[list[Row]]:
    """Rows ordered by id -> one list per id, each sorted by session."""
    for _aid, group in groupby(rows, key=lambda r: r.attachment_id):
        yield sorted(group, key=lambda r: r.session_id)
