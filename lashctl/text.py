"""Text that other writers chose (labels, session ids, file names), made safe to show.

One character class, shared by the session check (such characters are
refused in a session id) and by the escaper every human output goes through
(such characters from elsewhere are shown, never obeyed): C0 and DEL, C1,
the bidi embeddings, overrides, isolates and marks, and the line and
paragraph separators. Any of these could move the cursor, recolour or retitle
a terminal, reorder what a person reads, or start a line that looks like
lashctl's own.
"""

from __future__ import annotations

import re

_CONTROL_RANGES = (
    r"\x00-\x1f\x7f"  # C0 and DEL
    r"\x80-\x9f"  # C1 (U+009B is a one-character CSI on some terminals)
    r"\u061c\u200e\u200f"  # bidi marks
    r"\u202a-\u202e"  # bidi embeddings and overrides
    r"\u2066-\u2069"  # bidi isolates
    r"\u2028\u2029"  # line and paragraph separators
    r"\u00ad\u180e\u200b-\u200d\u2060-\u2064\ufeff\ufff9-\ufffb"  # invisible format characters
)
# The backslash is escaped too, so that a label spelling "\x1b" cannot pass
# for an escaped control character. So are lone surrogates: the bytes 0x80-0xff
# of a name that is not UTF-8 arrive as U+DC80-U+DCFF, and written out raw
# 0x80-0x9f are C1 controls (0x9b a CSI) to a terminal.
_ESCAPED_CLASS = f"[\\\\{_CONTROL_RANGES}\\ud800-\\udfff]"
_SHORT = {"\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"}
# Every character of the class is unprintable (str.isprintable), so printable
# text, the common case, is decided in C and the patterns are compiled only
# for text that needs them (a compile costs about a millisecond at start-up).


def has_control(text: str) -> bool:
    """True if ``text`` holds a character no person should see raw."""
    return not text.isprintable() and re.search(f"[{_CONTROL_RANGES}]", text) is not None


def escape_text(text: str) -> str:
    """``text`` with every control character (and the backslash) as a visible escape.

    ``\\n``, ``\\t``, ``\\r``, ``\\\\``; ``\\xNN`` below U+0100 and for a byte
    that was not UTF-8 (a lone surrogate U+DC80-U+DCFF); ``\\uNNNN`` above.
    Text without such characters comes back unchanged.
    """
    if text.isprintable() and "\\" not in text:
        return text  # the common case, decided in C: every character escaped is unprintable
    return re.sub(_ESCAPED_CLASS, _escape_one, text)


def _escape_one(match: re.Match[str]) -> str:
    char = match.group()
    short = _SHORT.get(char)
    if short is not None:
        return short
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape): shown as that byte
        code -= 0xDC00
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def loads_strict(text: str) -> object:
    """``json.loads`` without Python's extensions: NaN and +-Infinity raise ValueError.

    They are not JSON; a line holding one is malformed, not re-emitted by
    ``manifest log`` to readers that would refuse it.
    """
    import json  # not at start-up: completion and most commands never parse JSON here

    return json.loads(text, parse_constant=_reject_constant)


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not a JSON value")


def say(line: str) -> None:
    """One line for people on stderr. A stderr that cannot take it (a full
    disk under a cron log, a closed pipe) loses the line, never the exit
    code: the data and the exit code are what scripts read."""
    import sys

    try:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):
        import os

        try:  # what is left in the buffer would fail again at exit
            sys.stderr = open(os.devnull, "w")
        except OSError:
            pass
