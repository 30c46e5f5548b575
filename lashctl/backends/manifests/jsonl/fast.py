"""Manifest lines decoded and validated in C (msgspec), for building the state cache.

Imported only when ``cache`` builds a cache from byte 0: never on the
start-up path of a command. ``decode_block`` answers only where its result is
certainly the one ``log.parse_line`` gives, line by line, and None
otherwise: the caller then parses that block with ``parse_line``, which also
names a bad line exactly.
"""

import sys
from typing import Annotated, Callable, ClassVar, Literal, Union

import msgspec

from lashctl.ids import URI_SCHEME
from lashctl.timefmt import MAX_EPOCH_MS

_Epoch = Annotated[int, msgspec.Meta(ge=0, le=MAX_EPOCH_MS)]
# lashctl.ids.is_valid_id: 64 characters here, lowercase hex checked per block (_all_hex).
_Id = Annotated[str, msgspec.Meta(min_length=64, max_length=64)]
_Session = Annotated[str, msgspec.Meta(min_length=1)]


class Header(msgspec.Struct, tag_field="op", tag="header", kw_only=True):
    format: Literal["lashctl-manifest"]
    version: Literal[1]


# Read like an Event (attachment_id, session_id, at_ms, canonical_uri); the
# op is given by the type (KINDS). ``fold_into`` folds them.
class Intent(msgspec.Struct, tag_field="op", tag="intent", kw_only=True):
    attachment_id: _Id
    session_id: _Session
    canonical_uri: str
    at_ms: _Epoch = msgspec.field(name="intent_at_epoch_ms")


class Commit(msgspec.Struct, tag_field="op", tag="commit", kw_only=True):
    canonical_uri: ClassVar[None] = None
    attachment_id: _Id
    session_id: _Session
    at_ms: _Epoch = msgspec.field(name="committed_at_epoch_ms")


class Forget(msgspec.Struct, tag_field="op", tag="forget", kw_only=True):
    canonical_uri: ClassVar[None] = None
    attachment_id: _Id
    session_id: _Session
    # A forget line carries no time: any other key is ignored, as parse_line does.
    at_ms: ClassVar[None] = None


KINDS = {Intent: "intent", Commit: "commit", Forget: "forget", Header: "header"}
_DECODER = msgspec.json.Decoder(Union[Intent, Commit, Forget, Header])
_ERRORS = (msgspec.ValidationError, msgspec.DecodeError)


def decode_block(block: bytes, count: int) -> list | None:
    """The events of ``count`` lines (``block``, without its final newline),
    or None when the block must be parsed line by line instead.

    Taken only where the result is certainly ``parse_line``'s: UTF-8 text
    holding no ``\\u`` escape (so no surrogate, no escaped key), no array and
    one ``{`` per line (no nesting, which Python's parser limits and msgspec
    might not), no blank line, and every line a valid event in msgspec's
    strict reading (no bool or float for an integer, no NaN, a forget's
    cutoff, if any, an epoch time). Duplicate keys: both keep the last.
    """
    # (memchr for a backslash first: a two-byte search costs as much as the decoding)
    if (b"\\" in block and b"\\u" in block) or b"[" in block or block.count(b"{") != count:
        return None
    if not block.isascii():
        try:
            block.decode("utf-8")
        except UnicodeDecodeError:
            return None
    try:
        events = _DECODER.decode_lines(block)
    except _ERRORS:
        return None
    if len(events) != count or not _all_hex([e.attachment_id for e in events if type(e) is not Header]):
        return None
    return events


_HEX = b"0123456789abcdef"


def _all_hex(ids: list[str]) -> bool:
    """Every id lowercase hex (their lengths are checked by the decoder)."""
    try:
        joined = "".join(ids).encode("ascii")
    except UnicodeEncodeError:
        return False
    return not joined.translate(None, _HEX)


def from_event(event: dict) -> "Intent | Commit | Forget | None":
    """A line ``log.parse_line`` validated, as the type ``decode_block`` gives
    it (None for the header): the slow path of a build folds the same way."""
    op = event["op"]
    if op == "intent":
        return Intent(
            attachment_id=event["attachment_id"],
            session_id=event["session_id"],
            canonical_uri=event["canonical_uri"],
            at_ms=event["intent_at_epoch_ms"],
        )
    if op == "commit":
        return Commit(
            attachment_id=event["attachment_id"], session_id=event["session_id"], at_ms=event["committed_at_epoch_ms"]
        )
    if op == "forget":
        return Forget(attachment_id=event["attachment_id"], session_id=event["session_id"])
    return None


def fold_into(rows: dict) -> Callable[[list], None]:
    """The fold (``lashctl.fold.step``) of decoded events from nothing, fast:
    returns a function folding a run of events (``decode_block``'s, or
    ``from_event``'s; None and headers are skipped) into ``rows``, kept as
    ``{(attachment_id, session_id): [attachment_id, session_id, uri, intent_at_ms, committed_at_ms]}``
    where ``uri`` is None when it is the canonical one. Keyed in the state
    cache's primary-key order: ``sorted(rows)`` is the order of its b-tree
    (a tuple sort, in C); in insertion order they are the order of
    ``ManifestState.rows``. A JSON-lines forget carries no cutoff: it deletes.
    tests/unit/test_index.py checks this agrees with ``step``.
    """
    get, pop, intern = rows.get, rows.pop, sys.intern
    scheme = URI_SCHEME

    def apply(events: list) -> None:
        for event in events:
            kind = type(event)
            if kind is Intent:
                key = (event.attachment_id, event.session_id)
                row = get(key)
                if row is None:
                    aid, session, uri = key[0], intern(key[1]), event.canonical_uri
                    rows[aid, session] = [aid, session, None if uri == scheme + aid else uri, event.at_ms, None]
                elif row[4] is None and event.at_ms > row[3]:
                    row[3] = event.at_ms
            elif kind is Commit:
                row = get((event.attachment_id, event.session_id))
                if row is not None and row[4] is None:
                    row[4] = event.at_ms
            elif kind is Forget:
                pop((event.attachment_id, event.session_id), None)

    return apply
