"""list-uncommitted's row, declared once, and its fast rendering on a pipe.

``uncommitted_row`` is the row's shape: its fields (``render.Field``) give
the table, the TSV cells and the JSON object. ``rendered_uncommitted``
writes a row with neither bytes nor sidecar (most of a big listing) from a
template of those same fields, a chunk at a time, over the raw rows a
manifest's database selects; every other row is left to the fields. The
template is tested against the fields' own output
(tests/unit/test_listing_render.py).
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator

from lashctl.render import Col, Field
from lashctl.timefmt import age_text, in_future, iso_ms


def uncommitted_row(now: int, terminal: bool = False) -> tuple[Field, ...]:
    """One uncommitted row (a transfer.UncommittedRow), with its age at
    ``now``; a ``terminal`` table marks an intent time in the future."""
    age = (
        (lambda r: _age_shown(now, r.row.intent_at_epoch_ms))
        if terminal
        else (lambda r: age_text(now - r.row.intent_at_epoch_ms))
    )
    return (
        Field("id", lambda r: r.row.attachment_id, Col("id", "id")),
        Field("session_id", lambda r: r.row.session_id, Col("session")),
        Field("canonical_uri", lambda r: r.row.canonical_uri),
        Field("intent_at_epoch_ms", lambda r: r.row.intent_at_epoch_ms),
        Field("intent_at", lambda r: iso_ms(r.row.intent_at_epoch_ms), Col("intent at", "fixed", drop=7)),
        Field("age_ms", lambda r: now - r.row.intent_at_epoch_ms, Col("age", "fixed", drop=2), cell=age),
        Field("byte_len", lambda r: r.byte_len, Col("size", "bytes", drop=4)),
        Field("media_type", lambda r: r.media_type, Col("media type", drop=6, min_width=10)),
        Field("label", lambda r: r.label, Col("label", drop=5)),
        Field(
            "bytes_present",
            lambda r: r.bytes_present,
            Col("bytes", "fixed", drop=3),
            cell=lambda r: "present" if r.bytes_present else "missing",
        ),
    )


def _age_shown(now: int, intent_at: int) -> str:
    """The age a person reads: an intent time in the future says so."""
    if in_future(intent_at, now):
        return f"in {age_text(intent_at - now)} (future)"
    return age_text(now - intent_at)


def rendered_uncommitted(
    chunks: Iterable[list[tuple]], form: str, now: int, absent: Callable[[set[str]], set[str] | None]
) -> Iterator[list]:
    """list-uncommitted's rows on a pipe, a chunk at a time, for manifests
    whose database selects them in order (``ManifestView.uncommitted_chunks``):
    takes chunks of ``(id, session, uri, intent_at)`` and yields, for each
    chunk, a list with one item per row in order: the text the fields of
    ``uncommitted_row`` write for the row (``form`` "json": its compact object, keys in its
    order; "tsv": its line without the newline; ``now``: the time ages count
    from), or the row itself where the caller must render it.

    A row is written here only where the template is exact (a valid id, a
    non-empty session and, for JSON, URI of printable ASCII; no backslash
    in a TSV session; an intent time from 1970 to ``now`` plus
    ``timefmt.FUTURE_SKEW_MS``) and its shard is among
    those ``absent`` returns when given the shards the chunk meets (once
    per chunk: neither bytes nor sidecar can be there); where ``absent``
    returns None every row of the chunk is the caller's. Whole chunks are checked at once: row
    by row only where one of them fails."""
    from lashctl.ids import is_valid_id
    from lashctl.timefmt import FUTURE_SKEW_MS, MAX_EPOCH_MS, age_text, iso_clock

    # A row from a clock that runs ahead is the caller's: list-uncommitted counts it.
    latest = min(MAX_EPOCH_MS, now + FUTURE_SKEW_MS)
    tsv = form == "tsv"
    clock = iso_clock()
    gone: set[str] = set()  # this chunk's shards where neither bytes nor sidecar can be

    if tsv:

        def written(rows: Iterable[tuple]) -> list[str]:
            return [f"{aid}\t{sid}\t{clock(at)}\t{age_text(now - at)}\t-\t-\t-\tmissing" for aid, sid, _, at in rows]
    else:

        def written(rows: Iterable[tuple]) -> list[str]:
            return [
                f'{{"id":"{aid}","session_id":"{sid}","canonical_uri":"{uri}","intent_at_epoch_ms":{at},'
                f'"intent_at":"{clock(at)}","age_ms":{now - at},"byte_len":null,"media_type":null,'
                '"label":null,"bytes_present":false}'
                for aid, sid, uri, at in rows
            ]

    def one(row: tuple) -> str | tuple:
        attachment_id, session_id, uri, intent_at = row
        probe = attachment_id + session_id if tsv else attachment_id + session_id + uri
        if not (
            0 <= intent_at <= latest
            and session_id
            and probe.isascii()
            and probe.isprintable()
            and is_valid_id(attachment_id)
            and attachment_id[:2] in gone
        ):
            return row
        if tsv:
            return row if "\\" in session_id else written((row,))[0]
        if '"' in probe or "\\" in probe:
            import json

            return json.dumps(
                {
                    "id": attachment_id,
                    "session_id": session_id,
                    "canonical_uri": uri,
                    "intent_at_epoch_ms": intent_at,
                    "intent_at": clock(intent_at),
                    "age_ms": now - intent_at,
                    "byte_len": None,
                    "media_type": None,
                    "label": None,
                    "bytes_present": False,
                },
                separators=(",", ":"),
            )
        return written((row,))[0]

    for chunk in chunks:
        if not chunk:
            continue
        met = {row[0][:2] for row in chunk}
        known = absent(met)  # asked again for each chunk: a put may create a shard meanwhile
        if known is None:  # the blob backend cannot tell: every row is the caller's
            yield chunk
            continue
        gone = known
        if met <= gone and _plain_chunk(chunk, tsv, latest):
            yield written(chunk)
        else:
            yield [one(row) for row in chunk]


_HEX_BYTES = b"0123456789abcdef"


def _plain_chunk(chunk: list[tuple], tsv: bool, max_ms: int) -> bool:
    """Whether every row of the chunk fits ``rendered_uncommitted``'s plain
    template: ids of 64 lowercase hex digits, non-empty sessions, session
    (and, for JSON, URI) text of printable ASCII without backslash or
    (JSON) double quote, intent times from 0 to ``max_ms``."""
    ids = [row[0] for row in chunk]
    sessions = [row[1] for row in chunk]
    times = [row[3] for row in chunk]
    text = "".join(sessions) if tsv else "".join(sessions) + "".join([row[2] for row in chunk])
    return (
        all(sessions)
        and set(map(len, ids)) == {64}
        and not "".join(ids).encode("utf-8", "replace").translate(None, _HEX_BYTES)
        and text.isascii()
        and text.isprintable()
        and "\\" not in text
        and (tsv or '"' not in text)
        and 0 <= min(times)
        and max(times) <= max_ms
    )
