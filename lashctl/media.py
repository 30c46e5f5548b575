"""Media types: validation, magic-byte sniffing, file-name guesses, image sizes."""

from __future__ import annotations

import re
from typing import BinaryIO

from lashctl.errors import UsageError

OCTET_STREAM = "application/octet-stream"
# The five image types lash-core 0.1.0-alpha.85 knows as a tagged enum.
LASH_IMAGE_TYPES = ("png", "jpeg", "gif", "webp", "bmp")

_TOKEN = r"[A-Za-z0-9!#$%&'*+.^_`|~-]+"
_MIME = re.compile(rf"({_TOKEN})/({_TOKEN})")
_ALIASES = {"image/jpg": "image/jpeg", "image/x-ms-bmp": "image/bmp", "image/x-bmp": "image/bmp"}


def normalize_mime(text: str, source: str = "--media-type") -> str:
    """Lower-case and trim a MIME type; raise UsageError unless it is type/subtype."""
    value = text.strip().lower()
    if ";" in value:
        raise UsageError(f"{source} '{text}': parameters (';...') are not allowed")
    if _MIME.fullmatch(value) is None:
        raise UsageError(f"{source} '{text}' is not a MIME type of the form type/subtype")
    return _ALIASES.get(value, value)


def sniff(head: bytes) -> str | None:
    """The image MIME type told by the content's magic bytes, for the five lash types."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if len(head) >= 26 and head[:2] == b"BM":
        return "image/bmp"
    return None


def guess_from_name(name: str) -> str | None:
    """The MIME type a file name's extension suggests, if any.

    Uses Python's built-in table only, not the host's /etc/mime.types: the
    same file gets the same type on every machine, and nothing is read at
    start-up.
    """
    import mimetypes  # its tables are built at import; init() (file reads) is never called

    base = name.rsplit("/", 1)[-1]
    dot = base.rfind(".")
    if dot <= 0:
        return None
    ext = base[dot:].lower()
    guessed = mimetypes.types_map.get(ext) or mimetypes.common_types.get(ext)
    if guessed is None:
        return None
    try:
        return normalize_mime(guessed, source="guessed media type")
    except UsageError:
        return None


def image_size(stream: BinaryIO) -> tuple[int, int] | None:
    """Width and height stored in an image's header (read from a seekable stream), or None."""
    import imagesize

    width, height = imagesize.get(stream, exif_rotation=False)
    if width is None or height is None or width <= 0 or height <= 0:
        return None
    return int(width), int(height)


def image_size_of(head: bytes, stream: BinaryIO | None = None) -> tuple[int, int] | None:
    """Width and height from the first bytes of an image; if the header lies
    further in (a JPEG's frame after large metadata), from the whole stream
    when it can seek."""
    import io

    size = image_size(io.BytesIO(head))
    if size is None and stream is not None and getattr(stream, "seekable", lambda: False)():
        stream.seek(0)
        size = image_size(stream)
    return size


def lash_image_type(mime: str) -> str | None:
    """``png`` for ``image/png`` etc. when lash-core has a tagged variant for it."""
    kind, _, subtype = mime.partition("/")
    if kind == "image" and subtype in LASH_IMAGE_TYPES:
        return subtype
    return None
