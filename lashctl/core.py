"""The store facade: a blob backend and a manifest backend, id resolution and
the rules every command shares (sessions, grace periods, "lock unless dry run").

The core (this module, ``transfer``, ``sweep``, ``inspect``) returns plain
dataclasses for the CLI to render; it never imports typer or rich, and it
reaches bytes and rows only through ``lashctl.backends.base``.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator

from lashctl.errors import NotFound, Refused, UsageError
from lashctl.fold import Row
from lashctl.ids import IdQuery, is_utf8_text
from lashctl.text import has_control
from lashctl.timefmt import parse_duration

if TYPE_CHECKING:
    from lashctl.backends.base import ManifestWriter

MIN_GRACE_MS = 60_000
DEFAULT_GRACE = "24h"
MAX_SESSION_LEN = 1024


def _stderr_warn(message: str) -> None:
    from lashctl.text import escape_text, say

    say(f"lashctl: warning: {escape_text(message)}")


class Store:
    """A lash attachment store: ``blobs`` (a BlobBackend) and ``manifest`` (a ManifestBackend).

    ``root`` is a directory or ``s3://BUCKET/PREFIX``; ``manifest`` a file (by
    default ``<root>/manifest.jsonl``) or a ``postgresql://`` URL;
    ``process_registry`` the table of lash's process registry in that
    database (``backends.process_registry``), None to keep process-owned intents.
    """

    audit = None  # the run's audit.AuditLog, set by a destructive command (None: not audited)

    def __init__(
        self,
        root,
        manifest_path=None,
        lock_timeout: float = 30.0,
        warn=None,
        note=None,
        layout: str | None = None,
        process_registry: str | None = None,
        writes: bool = False,
    ) -> None:
        self.note = _once(note) if note is not None else None
        self._warn = warn if warn is not None else _stderr_warn
        from lashctl.backends import open_blobs, open_manifest

        self.blobs = open_blobs(root)
        self.root = root
        self._layout = layout  # None: recorded or detected on first use (README, "Two layouts")
        self._given_layout = layout
        # A command that writes (put, a sweep, verify --fix) may not name a
        # layout other than the one the store records; an inspection may ask
        # "as if" (verify --layout sidecars on a bare store lists what lacks one).
        self._given_checked = not writes
        # A manifest in the root (the default) makes the store lashctl's own;
        # one kept elsewhere (lash's database, a named file) may serve lash's store.
        self._own_manifest = owns_manifest(root, manifest_path)
        self.manifest = open_manifest(
            manifest_path,
            self.blobs,
            lock_timeout=lock_timeout,
            warn=self._warn,
            note=self.note,
            process_registry=process_registry,
        )

    def warn(self, message: str) -> None:
        self._warn(message)

    @property
    def layout(self) -> str:
        """``sidecars`` (lash-core 0.1.0-alpha.85 and lashctl write a sidecar
        beside every blob) or ``bare`` (later lash releases keep none)."""
        if self._layout is None:
            self._layout = self.blobs.recorded_layout() or detect_layout(self.blobs, own=self._own_manifest)
        elif self._given_layout is not None and not self._given_checked:
            # Named (--layout, LASHCTL_LAYOUT) against the store's record by a writer: refused, not obeyed.
            recorded = self.blobs.recorded_layout()
            if recorded is not None and recorded != self._given_layout:
                raise Refused(
                    f"store {self.blobs.name} records layout {recorded}: refusing to work on it as "
                    f"{self._given_layout} (drop --layout / LASHCTL_LAYOUT, or migrate --to-layout)"
                )
            self._given_checked = True
        return self._layout

    @property
    def layout_given(self) -> bool:
        """Whether the layout was named (``--layout``) rather than recorded or derived."""
        return self._given_layout is not None

    def index(self):
        """The JSON-lines manifest's state cache, refreshed (tests and completion)."""
        return self.manifest.index()

    @contextmanager
    def exclusive(self, *, dry_run: bool, sweep: bool = True) -> Iterator[ManifestWriter]:
        """The manifest view a destructive command works on: under the sweep
        (or writer) lock, or, for a dry run, a snapshot taken without one.
        The blob backend stays open for the whole block."""
        if dry_run:
            context = self.manifest.reading()
        else:
            context = self.manifest.sweeping() if sweep else self.manifest.writing()
        with context as view, self.blobs.opened():
            if dry_run and sweep:
                view.check_sweep_clock()  # refused as the real run would be
            yield view


def owns_manifest(root, manifest_path) -> bool:
    """Whether the manifest is the store's own: ``manifest.jsonl`` in a local
    store's root, by default or named (compared as real paths)."""
    if manifest_path is None:
        return True
    from lashctl.backends import MANIFEST_NAME, is_lash_sqlite, is_url

    given, where = str(manifest_path), str(root)
    if is_url(given) or is_lash_sqlite(given) or is_url(where):
        return False
    return os.path.realpath(given) == os.path.realpath(os.path.join(where, MANIFEST_NAME))


LAYOUT_PROBE = 8  # blobs looked at to tell a bare store from one with sidecars


def detect_layout(blobs, own: bool = False) -> str:
    """The layout of a store that records none, from its first blobs (in id
    order). Where the manifest is kept elsewhere (lash's store: lashctl must
    add no sidecar to it), any of them without a sidecar makes it bare: a
    blob lashctl put there beside lash's does not make it a store of sidecars.
    Where the store keeps its own manifest in its root (``own``: lashctl's
    store, where blobs without a sidecar are more likely damage to repair),
    it is bare only when eight of them all have none. Anything else, an
    empty store included, keeps sidecars."""
    from itertools import islice

    from lashctl.backends.base import LAYOUT_BARE, LAYOUT_SIDECARS

    with blobs.opened():
        probe = list(islice(blobs.iter_ids(), LAYOUT_PROBE))
        lacking = (blobs.stat(i, sidecar=True) is None for i in probe)
        if own and len(probe) >= LAYOUT_PROBE and all(lacking):
            return LAYOUT_BARE
        if not own and any(lacking):
            return LAYOUT_BARE
    return LAYOUT_SIDECARS


def _once(say):
    said: set[str] = set()

    def once(message: str) -> None:
        if message not in said:
            said.add(message)
            say(message)

    return once


def validate_session(session: str | None) -> str:
    if session is None or not session.strip():
        raise UsageError("a session is required: pass --session/-s or set LASHCTL_SESSION")
    if len(session) > MAX_SESSION_LEN:
        raise UsageError(f"--session is longer than {MAX_SESSION_LEN} characters")
    invisible = _format_character(session)
    if invisible is not None:
        # A byte-order mark or a zero-width space would make it another
        # session that looks the same as one on every screen.
        raise UsageError(f"--session contains an invisible format character (U+{ord(invisible):04X})")
    # The class the escaper shows escaped: such a session id could not be
    # shown to a person as it is.
    if has_control(session):
        raise UsageError(f"--session '{session}' contains control, bidi or line separator characters")
    if not is_utf8_text(session):
        raise UsageError(f"--session '{session}' is not valid UTF-8")
    return session


def _format_character(text: str) -> str | None:
    """The first character of Unicode category Cf (format: zero-width, BOM,
    bidi) in ``text``, or None."""
    if text.isprintable():  # no Cf character is printable: the common case, decided in C
        return None
    import unicodedata

    return next((char for char in text if unicodedata.category(char) == "Cf"), None)


def session_filter(session: str | None) -> str | None:
    """A ``--session`` filter as given (any text a row may hold), refused
    (UsageError) where argv was not UTF-8: no row could match it."""
    if session is not None and not is_utf8_text(session):
        raise UsageError(f"--session '{session}' is not valid UTF-8")
    return session


def default_grace_ms() -> int:
    return parse_duration(DEFAULT_GRACE)


def check_grace(cutoff: int, now: int, *, force: bool, option: str = "cutoff") -> None:
    if cutoff > now - MIN_GRACE_MS and not force:
        what = "a cutoff less than 1 minute in the past" if option == "cutoff" else f"{option} under 1 minute"
        raise Refused(f"refusing {what}: puts in flight could be swept (use --force if no writer is running)")


# -- ids -----------------------------------------------------------------------
def resolve_id(store: Store, query: IdQuery, view=None) -> str:
    """Resolve a full id or unique prefix against blobs and manifest rows.

    A full id resolves to itself without touching anything. ``view`` is a
    ManifestView (or None to match blobs only).
    """
    if query.is_full:
        return query.hex
    matches = set(store.blobs.iter_ids(query.hex))
    if view is not None:
        matches.update(view.ids_with_prefix(query.hex))
    if not matches:
        raise NotFound(f"no blob or manifest row matches id prefix {query.hex!r}")
    if len(matches) > 1:
        shown = ", ".join(sorted(matches)[:5]) + (", ..." if len(matches) > 5 else "")
        raise UsageError(f"id prefix {query.hex!r} is ambiguous: it matches {len(matches)} ids ({shown})")
    return matches.pop()


def resolve_ids(store: Store, queries: list[IdQuery], view) -> list[str]:
    return [resolve_id(store, q, view) for q in queries]


def precheck_prefixes(store: Store, queries: list[IdQuery]) -> None:
    """Reject ambiguous prefixes before a command takes the lock or creates anything.

    Resolution is repeated under the lock; this pass only makes a usage error
    leave the store exactly as it was.
    """
    prefixes = [q for q in queries if not q.is_full]
    if not prefixes:
        return
    with store.manifest.reading() as view, store.blobs.opened():
        for query in prefixes:
            try:
                resolve_id(store, query, view)
            except NotFound:
                pass


# -- merging the two id-ordered streams ----------------------------------------
def by_id(store: Store, view) -> Iterator[tuple[str, bool, list[Row]]]:
    """Every id that has bytes or rows, in id order: ``(id, bytes present, rows)``.

    A merge of the blob listing and the manifest's rows, both read in id
    order: memory stays flat however large the store. (Written out rather
    than ``heapq.merge``: it runs once per row of the manifest.)
    """
    blobs = iter(store.blobs.iter_ids())
    blob = next(blobs, None)
    for group in view.rows_by_id() if view is not None else ():
        attachment_id = group[0].attachment_id
        while blob is not None and blob < attachment_id:
            yield blob, True, []
            blob = _next_other(blobs, blob)
        if blob == attachment_id:
            blob = _next_other(blobs, blob)
            yield attachment_id, True, group
        else:
            yield attachment_id, False, group
    while blob is not None:
        yield blob, True, []
        blob = _next_other(blobs, blob)


def _next_other(ids: Iterator[str], current: str) -> str | None:
    """The next id of a sorted listing after ``current`` (a repeat is one id)."""
    following = next(ids, None)
    while following == current:
        following = next(ids, None)
    return following
