"""Attachment ids: validation and parsing of what users type.

An id is the lowercase hex SHA-256 of a blob's bytes (64 chars of
``[0-9a-f]``). On input lashctl accepts a full id, ``sha256:<id>``, or a hex
prefix of at least 4 characters; upper case is folded. Parsing never touches
the file system: only a value that passes here may become part of a path.
"""

from __future__ import annotations

import re

from lashctl.errors import UsageError
from lashctl.record import FrozenRecord

ID_LEN = 64
MIN_PREFIX = 4
URI_SCHEME = "sha256:"
# Tables on a terminal end a shortened id with this (lashctl.render).
SHORT_ID_MARK = "\u2026"

_FULL_ID = re.compile(r"[0-9a-f]{64}")
_HEX = re.compile(r"[0-9a-f]+")


def is_valid_id(value: object) -> bool:
    """True for exactly 64 lowercase hex characters."""
    return isinstance(value, str) and _FULL_ID.fullmatch(value) is not None


def is_utf8_text(value: str) -> bool:
    """False for strings JSON can carry but UTF-8 cannot (lone surrogates)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def canonical_uri(attachment_id: str) -> str:
    return URI_SCHEME + attachment_id


class IdQuery(FrozenRecord):
    """A parsed id argument: a full id, or a prefix still to be resolved.
    ``text`` is what the user typed, for messages; ``hex`` its lower-cased
    hex digits, 4 to 64 of them."""

    text: str
    hex: str
    __slots__ = ("text", "hex")

    def __init__(self, text: str, hex: str) -> None:
        self._set(text, hex)

    @property
    def is_full(self) -> bool:
        return len(self.hex) == ID_LEN


def parse_id(text: str) -> IdQuery:
    """Parse one id argument, or raise UsageError (exit 2) naming it."""
    value = text.strip().lower()
    if value.endswith(SHORT_ID_MARK):
        # A shortened id copied out of a table: the prefix it shows.
        value = value[: -len(SHORT_ID_MARK)]
    if value.startswith(URI_SCHEME):
        value = value[len(URI_SCHEME) :]
    shown = _shown(text)
    if not value or _HEX.fullmatch(value) is None:
        raise UsageError(
            f"invalid id {shown}: expected a sha256 hex id, sha256:<id>, "
            f"or a hex prefix of at least {MIN_PREFIX} characters"
        )
    if len(value) > ID_LEN:
        raise UsageError(f"invalid id {shown}: longer than {ID_LEN} hex characters")
    if len(value) < MIN_PREFIX:
        raise UsageError(f"id prefix {shown} is too short: give at least {MIN_PREFIX} hex characters")
    return IdQuery(text=text, hex=value)


def _shown(text: str) -> str:
    """Quote user input for a one-line message, escaping control characters."""
    clipped = text if len(text) <= 80 else text[:77] + "..."
    return repr(clipped)
