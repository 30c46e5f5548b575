"""The metadata sidecar (``<id>.json``): read every lash form, write the compatible one.

Written as lash-core 0.1.0-alpha.85 writes it (``serde_json::to_vec_pretty``:
2-space indent, no trailing newline), keys ``id, media_type, byte_len,
width?, height?, label?``. The five lash image types are written as the tagged
object ``{"kind": "image", "type": "png"}``; any other media type as its MIME
string, the form later lash releases use. Readers also accept width/height in
``"type_metadata": {"type": "image", "width": W, "height": H}``.
"""

from __future__ import annotations

import json
from pathlib import Path

from lashctl.errors import Corrupt, UsageError
from lashctl.ids import is_utf8_text, is_valid_id
from lashctl.text import loads_strict
from lashctl.media import LASH_IMAGE_TYPES, lash_image_type, normalize_mime
from lashctl.record import FrozenRecord

MAX_SIDECAR_BYTES = 1024 * 1024


class Metadata(FrozenRecord):
    """A sidecar's content; ``media_type`` is a normalised MIME string,
    whatever form it was stored in."""

    attachment_id: str
    media_type: str
    byte_len: int
    width: int | None
    height: int | None
    label: str | None
    __slots__ = ("attachment_id", "media_type", "byte_len", "width", "height", "label")

    def __init__(
        self,
        attachment_id: str,
        media_type: str,
        byte_len: int,
        width: int | None = None,
        height: int | None = None,
        label: str | None = None,
    ) -> None:
        self._set(attachment_id, media_type, byte_len, width, height, label)

    def to_json_dict(self) -> dict:
        """The sidecar object, keys in lash-core's order, absent optionals omitted."""
        image_type = lash_image_type(self.media_type)
        media: object = {"kind": "image", "type": image_type} if image_type else self.media_type
        out: dict = {"id": self.attachment_id, "media_type": media, "byte_len": self.byte_len}
        if self.width is not None:
            out["width"] = self.width
        if self.height is not None:
            out["height"] = self.height
        if self.label is not None:
            out["label"] = self.label
        return out

    def encode(self) -> bytes:
        return json.dumps(self.to_json_dict(), indent=2, ensure_ascii=False).encode("utf-8")


def decode(data: bytes, where: Path | str) -> Metadata:
    """Parse a sidecar's bytes; raise Corrupt naming ``where`` if they are not one."""

    def bad(reason: str) -> Corrupt:
        return Corrupt(f"undecodable sidecar {where}: {reason}")

    try:
        obj = loads_strict(data.decode("utf-8-sig"))
    except ValueError as exc:  # bad UTF-8, bad JSON, NaN or Infinity, an integer too long
        raise bad(str(exc)) from exc
    except RecursionError as exc:
        raise bad("nested too deeply") from exc
    if not isinstance(obj, dict):
        raise bad("not a JSON object")
    attachment_id = obj.get("id")
    if not is_valid_id(attachment_id):
        raise bad("'id' is not a 64-character lowercase hex sha256")
    byte_len = obj.get("byte_len")
    if not _is_uint(byte_len):
        raise bad("'byte_len' is not a non-negative integer")
    media_type = _read_media_type(obj.get("media_type"), bad)
    width, height = obj.get("width"), obj.get("height")
    type_metadata = obj.get("type_metadata")
    if type_metadata is not None:
        if not isinstance(type_metadata, dict) or not isinstance(type_metadata.get("type"), str):
            raise bad("'type_metadata' is not a tagged object")
        if type_metadata.get("type") == "image":
            width = type_metadata.get("width", width)
            height = type_metadata.get("height", height)
    for name, value in (("width", width), ("height", height)):
        if value is not None and not _is_uint(value):
            raise bad(f"'{name}' is not a non-negative integer")
    label = obj.get("label")
    if label is not None and not isinstance(label, str):
        raise bad("'label' is not a string")
    if label is not None and not is_utf8_text(label):
        raise bad("'label' holds a lone surrogate, not text")
    return Metadata(attachment_id, media_type, byte_len, width, height, label)


def _read_media_type(value: object, bad) -> str:
    if isinstance(value, str):
        try:
            return normalize_mime(value, source="media_type")
        except UsageError as exc:
            raise bad(exc.message) from exc
    if isinstance(value, dict) and value.get("kind") == "image":
        image_type = value.get("type")
        if image_type in LASH_IMAGE_TYPES:
            return f"image/{image_type}"
        raise bad(f"unknown image type {image_type!r}")
    raise bad("'media_type' is neither a MIME string nor a lash tagged media type")


def _is_uint(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
