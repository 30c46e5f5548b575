"""The manifest's fold, written once (README, "The manifest").

A manifest is a sequence of events; its state is one row per
(session_id, attachment_id) key, computed by ``step``:

- ``intent`` inserts an uncommitted row, or refreshes the intent time of an
  uncommitted row (the later time wins); a committed row is left unchanged;
- ``commit`` stamps an uncommitted row (the first commit wins) and never
  inserts one;
- ``forget`` deletes the row (a sweep's forget carries its cutoff and
  deletes only a row that is still an uncommitted intent from before it; the
  JSON-lines log, whose sweeps exclude every writer, records no cutoff).

The in-memory state, the JSON-lines state cache, the PostgreSQL statements and
the reference model in the tests all follow this one function.
"""

from __future__ import annotations

import sys

from lashctl.ids import canonical_uri
from lashctl.record import FrozenRecord, Record

INTENT, COMMIT, FORGET = "intent", "commit", "forget"
OPS = (INTENT, COMMIT, FORGET)
LOG_OPS = ("header", *OPS)  # what a JSON-lines manifest's line may be


class Row(Record):
    """One (session, attachment) reference and where it stands.

    ``owner_kind`` and ``owner_id`` are set on rows lash itself wrote to a
    PostgreSQL manifest: the turn or process that owns an uncommitted intent
    ("turn" | "process", its id)."""

    __slots__ = (
        "session_id",
        "attachment_id",
        "canonical_uri",
        "intent_at_epoch_ms",
        "committed_at_epoch_ms",
        "owner_kind",
        "owner_id",
    )

    def __init__(
        self,
        session_id: str,
        attachment_id: str,
        canonical_uri: str,
        intent_at_epoch_ms: int,
        committed_at_epoch_ms: int | None = None,
        owner_kind: str | None = None,
        owner_id: str | None = None,
    ) -> None:
        self.session_id = session_id
        self.attachment_id = attachment_id
        self.canonical_uri = canonical_uri
        self.intent_at_epoch_ms = intent_at_epoch_ms
        self.committed_at_epoch_ms = committed_at_epoch_ms
        self.owner_kind = owner_kind
        self.owner_id = owner_id

    @property
    def committed(self) -> bool:
        return self.committed_at_epoch_ms is not None

    @property
    def key(self) -> tuple[str, str]:
        return (self.session_id, self.attachment_id)


class Event(FrozenRecord):
    """One manifest event. ``at_ms`` is the intent or commit time (None for forget)."""

    op: str
    attachment_id: str
    session_id: str
    at_ms: int | None
    canonical_uri: str | None
    __slots__ = ("op", "attachment_id", "session_id", "at_ms", "canonical_uri")

    def __init__(
        self, op: str, attachment_id: str, session_id: str, at_ms: int | None = None, canonical_uri: str | None = None
    ) -> None:
        setattr_ = object.__setattr__
        setattr_(self, "op", op)
        setattr_(self, "attachment_id", attachment_id)
        setattr_(self, "session_id", session_id)
        setattr_(self, "at_ms", at_ms)
        setattr_(self, "canonical_uri", canonical_uri)

    @property
    def key(self) -> tuple[str, str]:
        return (self.session_id, self.attachment_id)

    @classmethod
    def intent(cls, attachment_id: str, session_id: str, at_ms: int) -> "Event":
        return cls(INTENT, attachment_id, session_id, at_ms, canonical_uri(attachment_id))

    @classmethod
    def commit(cls, attachment_id: str, session_id: str, at_ms: int) -> "Event":
        return cls(COMMIT, attachment_id, session_id, at_ms)

    @classmethod
    def forget(cls, attachment_id: str, session_id: str, until_ms: int | None = None) -> "Event":
        """Delete the row; with ``until_ms`` (a sweep's cutoff), only while it
        is still an uncommitted intent from at or before that time."""
        return cls(FORGET, attachment_id, session_id, until_ms)

    @classmethod
    def from_json(cls, obj: dict) -> "Event":
        """From a validated JSON-lines event object (not the header)."""
        op = obj["op"]
        # Only the time field of the line's own op is read: any other key is
        # ignored (a forget line carries no cutoff, whatever else it holds).
        at = obj["intent_at_epoch_ms"] if op == INTENT else obj["committed_at_epoch_ms"] if op == COMMIT else None
        return cls(op, obj["attachment_id"], obj["session_id"], at, obj.get("canonical_uri"))

    def to_json(self) -> dict:
        """The JSON-lines form, keys in the order the README gives."""
        out = {"op": self.op, "attachment_id": self.attachment_id, "session_id": self.session_id}
        if self.op == INTENT:
            out["canonical_uri"] = (
                self.canonical_uri if self.canonical_uri is not None else canonical_uri(self.attachment_id)
            )
            out["intent_at_epoch_ms"] = self.at_ms
        elif self.op == COMMIT:
            out["committed_at_epoch_ms"] = self.at_ms
        return out


def step(row: Row | None, event: Event) -> Row | None:
    """The row a key has after ``event``, given the row it had (None: none).

    Returns ``row`` itself, updated in place, when the row stays.
    """
    op = event.op
    if op == INTENT:
        if row is None:
            return Row(
                sys.intern(event.session_id),
                event.attachment_id,
                event.canonical_uri if event.canonical_uri is not None else canonical_uri(event.attachment_id),
                event.at_ms,
            )
        if row.committed_at_epoch_ms is None and event.at_ms > row.intent_at_epoch_ms:
            row.intent_at_epoch_ms = event.at_ms
        return row
    if op == COMMIT:
        if row is not None and row.committed_at_epoch_ms is None:
            row.committed_at_epoch_ms = event.at_ms
        return row
    # forget
    if (
        event.at_ms is not None
        and row is not None
        and (row.committed_at_epoch_ms is not None or row.intent_at_epoch_ms > event.at_ms)
    ):
        return row  # a guarded forget of a row that came back to life
    return None


class Effect:
    """The net effect of a run of events on one key whose stored row is not
    known (a batch written to a database with one statement per key).

    ``from_absent`` is what the events make of a missing row. Unless a forget
    was seen (then the stored row no longer matters), ``from_uncommitted`` is
    what they make of a stored *uncommitted* row, tracked as a placeholder row
    whose intent time is lower than any real one; a stored committed row is
    left as it is by every event but forget. Both are computed with ``step``.
    """

    __slots__ = ("from_absent", "from_uncommitted", "replaces")
    _NEVER = -(1 << 63)

    def __init__(self, session_id: str, attachment_id: str) -> None:
        self.from_absent: Row | None = None
        self.from_uncommitted: Row | None = Row(session_id, attachment_id, "", self._NEVER)
        self.replaces = False

    def add(self, event: Event) -> None:
        self.from_absent = step(self.from_absent, event)
        if not self.replaces:
            if event.op == FORGET:
                self.replaces, self.from_uncommitted = True, None
            else:
                self.from_uncommitted = step(self.from_uncommitted, event)

    @property
    def refreshed_intent(self) -> int | None:
        """The intent time to raise a stored uncommitted row to (None: no intent)."""
        at = self.from_uncommitted.intent_at_epoch_ms if self.from_uncommitted else self._NEVER
        return None if at == self._NEVER else at

    @property
    def commit_at(self) -> int | None:
        """The commit time to stamp on a stored uncommitted row (None: no commit)."""
        return self.from_uncommitted.committed_at_epoch_ms if self.from_uncommitted else None


def effect_runs(events) -> dict[tuple[str, str], list["Effect | int"]]:
    """A batch of events reduced per key, for a store that keeps the fold's
    state (a table): each key's run of Effects, where a guarded forget (a
    sweep's, with its cutoff: an int) ends a run, since what it deletes
    depends on the stored row, and what follows it starts a new run on
    whatever is left. ValueError for an op other than intent, commit, forget."""
    runs: dict[tuple[str, str], list[Effect | int]] = {}
    for event in events:
        if event.op not in OPS:
            raise ValueError(f"unknown manifest op {event.op!r}")
        run = runs.setdefault(event.key, [])
        if event.op == FORGET and event.at_ms is not None:
            run.append(event.at_ms)
            continue
        if not run or not isinstance(run[-1], Effect):
            run.append(Effect(event.session_id, event.attachment_id))
        run[-1].add(event)
    return runs


def fold(events, rows: dict[tuple[str, str], Row] | None = None) -> dict[tuple[str, str], Row]:
    """Fold events into ``rows`` (a new dict if None)."""
    rows = {} if rows is None else rows
    for event in events:
        key = event.key
        new = step(rows.get(key), event)
        if new is None:
            rows.pop(key, None)
        else:
            rows[key] = new
    return rows


def fold_rows(rows: dict, kinds: dict | None = None):
    """``fold`` for building a state from nothing, fast: returns a function
    that folds a run of events into ``rows``, kept as
    ``{(session_id, attachment_id): [attachment_id, session_id, canonical_uri, intent_at_ms, committed_at_ms]}``
    (a row's values in the order of a table keyed by id, then session: sorted, they are in key order).

    Each event is anything with ``Event``'s attributes (``op``,
    ``attachment_id``, ``session_id``, ``at_ms``, ``canonical_uri``), or of a
    type ``kinds`` maps to its op; ops other than intent, commit and forget
    (a header) are skipped. The same rules as ``step``, written out for lists
    (tests/test_index.py checks they agree).
    """
    get, pop, intern = rows.get, rows.pop, sys.intern
    op_of = (kinds or {}).get

    def apply(events) -> None:
        for event in events:
            op = op_of(type(event)) or event.op
            if op == INTENT:
                key = (event.session_id, event.attachment_id)
                row = get(key)
                if row is None:
                    uri = event.canonical_uri
                    session = intern(key[0])
                    rows[session, key[1]] = [
                        key[1],
                        session,
                        uri if uri is not None else canonical_uri(key[1]),
                        event.at_ms,
                        None,
                    ]
                elif row[4] is None and event.at_ms > row[3]:
                    row[3] = event.at_ms
            elif op == COMMIT:
                row = get((event.session_id, event.attachment_id))
                if row is not None and row[4] is None:
                    row[4] = event.at_ms
            elif op == FORGET:
                key = (event.session_id, event.attachment_id)
                until = event.at_ms
                if until is None:
                    pop(key, None)
                else:  # a guarded forget: only a row still an uncommitted intent from at or before it
                    row = get(key)
                    if row is not None and row[4] is None and row[3] <= until:
                        del rows[key]

    return apply


def compacted_lines(rows: int, committed: int) -> int:
    """Lines a compacted log of these rows holds: the header, an intent per
    row, a commit per committed row."""
    return 1 + rows + committed


def event_time(event: dict) -> int | None:
    """The time an event (a decoded line) carries: its intent's or commit's; None for others."""
    return event.get("intent_at_epoch_ms", event.get("committed_at_epoch_ms"))
