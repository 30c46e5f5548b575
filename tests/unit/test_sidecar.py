"""Sidecar schema (the README's store format) and media types: write lash's form, read every form."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lashctl.backends.blobs.localfs import read_sidecar_file
from lashctl import media, sidecar
from lashctl.errors import Corrupt, UsageError
from lashctl.sidecar import Metadata

ID = "0123456789abcdef" * 4


# -- encode ----------------------------------------------------------------------
def test_encode_png_byte_exact():
    meta = Metadata(ID, "image/png", 5, 7, 11, "pixel")
    assert (
        meta.encode()
        == (
            "{\n"
            f'  "id": "{ID}",\n'
            '  "media_type": {\n'
            '    "kind": "image",\n'
            '    "type": "png"\n'
            "  },\n"
            '  "byte_len": 5,\n'
            '  "width": 7,\n'
            '  "height": 11,\n'
            '  "label": "pixel"\n'
            "}"
        ).encode()
    )


def test_encode_pdf_uses_mime_string_and_omits_absent():
    meta = Metadata(ID, "application/pdf", 1234)
    assert (
        meta.encode() == (f'{{\n  "id": "{ID}",\n  "media_type": "application/pdf",\n  "byte_len": 1234\n}}').encode()
    )


def test_encode_pdf_with_label_only():
    meta = Metadata(ID, "application/pdf", 0, label="report.pdf")
    assert (
        meta.encode()
        == (
            f'{{\n  "id": "{ID}",\n  "media_type": "application/pdf",\n  "byte_len": 0,\n  "label": "report.pdf"\n}}'
        ).encode()
    )


@pytest.mark.parametrize("kind", ["png", "jpeg", "gif", "webp", "bmp"])
def test_encode_five_lash_image_types_tagged(kind):
    obj = json.loads(Metadata(ID, f"image/{kind}", 1).encode())
    assert obj["media_type"] == {"kind": "image", "type": kind}


@pytest.mark.parametrize("mime", ["image/tiff", "image/svg+xml", "text/plain", "application/octet-stream"])
def test_encode_other_types_as_mime_string(mime):
    assert json.loads(Metadata(ID, mime, 1).encode())["media_type"] == mime


def test_encode_non_ascii_label_as_utf8():
    data = Metadata(ID, "text/plain", 1, label="café.txt").encode()
    assert '"label": "café.txt"'.encode("utf-8") in data


def test_encode_decode_roundtrip():
    meta = Metadata(ID, "image/webp", 99, 3, 4, "x.webp")
    assert sidecar.decode(meta.encode(), "x") == meta


# -- decode ----------------------------------------------------------------------
def test_decode_tagged_form():
    data = json.dumps(
        {
            "id": ID,
            "media_type": {"kind": "image", "type": "gif"},
            "byte_len": 5,
            "width": 7,
            "height": 11,
            "label": "pixel",
        }
    ).encode()
    assert sidecar.decode(data, "p") == Metadata(ID, "image/gif", 5, 7, 11, "pixel")


def test_decode_mime_string_form():
    data = json.dumps({"id": ID, "media_type": "Application/PDF ", "byte_len": 3}).encode()
    assert sidecar.decode(data, "p") == Metadata(ID, "application/pdf", 3)


def test_decode_type_metadata_form():
    data = json.dumps(
        {
            "id": ID,
            "media_type": "image/png",
            "byte_len": 5,
            "type_metadata": {"type": "image", "width": 640, "height": 480},
            "label": "shot",
        }
    ).encode()
    assert sidecar.decode(data, "p") == Metadata(ID, "image/png", 5, 640, 480, "shot")


def test_decode_tolerates_unknown_keys():
    data = json.dumps(
        {
            "id": ID,
            "media_type": "text/plain",
            "byte_len": 2,
            "created_at": "2026-01-01",
            "extra": {"nested": [1, 2]},
            "type_metadata": {"type": "text", "encoding": "utf-8"},
        }
    ).encode()
    assert sidecar.decode(data, "p") == Metadata(ID, "text/plain", 2)


def test_decode_image_jpg_normalised():
    data = json.dumps({"id": ID, "media_type": "image/jpg", "byte_len": 2}).encode()
    meta = sidecar.decode(data, "p")
    assert meta.media_type == "image/jpeg"
    # and it is written back in lash's tagged form
    assert json.loads(meta.encode())["media_type"] == {"kind": "image", "type": "jpeg"}


def test_decode_with_bom():
    data = b"\xef\xbb\xbf" + json.dumps({"id": ID, "media_type": "text/plain", "byte_len": 2}).encode()
    assert sidecar.decode(data, "p").byte_len == 2


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"not json", id="non-json"),
        pytest.param(b"\xff\xfe", id="non-utf8"),
        pytest.param(b"[1, 2]", id="array"),
        pytest.param(b'"a string"', id="string"),
        pytest.param(json.dumps({"id": "abc", "media_type": "text/plain", "byte_len": 1}).encode(), id="short-id"),
        pytest.param(json.dumps({"id": ID.upper(), "media_type": "text/plain", "byte_len": 1}).encode(), id="upper-id"),
        pytest.param(json.dumps({"media_type": "text/plain", "byte_len": 1}).encode(), id="no-id"),
        pytest.param(json.dumps({"id": ID, "media_type": "text/plain", "byte_len": -1}).encode(), id="negative-len"),
        pytest.param(json.dumps({"id": ID, "media_type": "text/plain", "byte_len": "1"}).encode(), id="string-len"),
        pytest.param(json.dumps({"id": ID, "media_type": "text/plain", "byte_len": True}).encode(), id="bool-len"),
        pytest.param(json.dumps({"id": ID, "media_type": "text/plain"}).encode(), id="no-len"),
        pytest.param(
            json.dumps({"id": ID, "media_type": {"kind": "image", "type": "tiff"}, "byte_len": 1}).encode(),
            id="unknown-image-type",
        ),
        pytest.param(
            json.dumps({"id": ID, "media_type": {"kind": "video", "type": "mp4"}, "byte_len": 1}).encode(),
            id="unknown-kind",
        ),
        pytest.param(
            json.dumps({"id": ID, "media_type": "text/plain; charset=utf-8", "byte_len": 1}).encode(), id="mime-params"
        ),
        pytest.param(json.dumps({"id": ID, "media_type": "textplain", "byte_len": 1}).encode(), id="mime-no-slash"),
        pytest.param(json.dumps({"id": ID, "media_type": 5, "byte_len": 1}).encode(), id="mime-number"),
        pytest.param(json.dumps({"id": ID, "byte_len": 1}).encode(), id="no-media-type"),
        pytest.param(
            json.dumps({"id": ID, "media_type": "image/png", "byte_len": 1, "width": -3}).encode(), id="negative-width"
        ),
        pytest.param(
            json.dumps({"id": ID, "media_type": "image/png", "byte_len": 1, "label": 7}).encode(), id="label-number"
        ),
        pytest.param(
            json.dumps(
                {
                    "id": ID,
                    "media_type": "image/png",
                    "byte_len": 1,
                    "type_metadata": {"type": "image", "width": "wide"},
                }
            ).encode(),
            id="type-metadata-bad-width",
        ),
        # Python's json reads these; JSON has no such values.
        pytest.param(b'{"id": "' + ID.encode() + b'", "media_type": "text/plain", "byte_len": 1, "x": NaN}', id="nan"),
        pytest.param(
            b'{"id": "' + ID.encode() + b'", "media_type": "text/plain", "byte_len": 1, "x": Infinity}', id="infinity"
        ),
        pytest.param(
            b'{"id": "' + ID.encode() + b'", "media_type": "text/plain", "byte_len": 1, "x": [-Infinity]}',
            id="minus-infinity",
        ),
    ],
)
def test_decode_rejects(data):
    where = Path("/store/sha256/01/" + ID + ".json")
    with pytest.raises(Corrupt) as info:
        sidecar.decode(data, where)
    assert str(where) in info.value.message
    assert info.value.exit_code == 65


def test_read_missing_is_none(tmp_path):
    assert read_sidecar_file(tmp_path / "absent.json") is None


def test_read_file(tmp_path):
    path = tmp_path / (ID + ".json")
    path.write_bytes(Metadata(ID, "image/png", 5, 7, 11, "pixel").encode())
    assert read_sidecar_file(path) == Metadata(ID, "image/png", 5, 7, 11, "pixel")


def test_read_corrupt_names_path(tmp_path):
    path = tmp_path / (ID + ".json")
    path.write_bytes(b"{truncated")
    with pytest.raises(Corrupt, match=str(path)):
        read_sidecar_file(path)


def test_read_refuses_symlink(tmp_path):
    target = tmp_path / "real.json"
    target.write_bytes(Metadata(ID, "image/png", 5).encode())
    link = tmp_path / (ID + ".json")
    link.symlink_to(target)
    with pytest.raises(Corrupt, match=str(link)):
        read_sidecar_file(link)


# -- media -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, expected",
    [
        ("image/png", "image/png"),
        ("  Image/PNG \n", "image/png"),
        ("APPLICATION/PDF", "application/pdf"),
        ("image/jpg", "image/jpeg"),
        ("IMAGE/JPG", "image/jpeg"),
        ("application/vnd.api+json", "application/vnd.api+json"),
    ],
)
def test_normalize_mime(text, expected):
    assert media.normalize_mime(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "text/plain; charset=utf-8",
        "text/plain;",
        "textplain",
        "text/",
        "/plain",
        "text/pl ain",
        "a/b/c",
        "",
        "image/png\x00",
        "tëxt/plain",
    ],
)
def test_normalize_mime_rejects(text):
    with pytest.raises(UsageError) as info:
        media.normalize_mime(text)
    assert info.value.exit_code == 2
    assert "--media-type" in info.value.message


@pytest.mark.parametrize(
    "head, expected",
    [
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 24, "image/png"),
        (b"\xff\xd8\xff\xe0" + b"\x00" * 24, "image/jpeg"),
        (b"GIF87a" + b"\x00" * 24, "image/gif"),
        (b"GIF89a" + b"\x00" * 24, "image/gif"),
        (b"RIFF\x24\x00\x00\x00WEBPVP8 " + b"\x00" * 24, "image/webp"),
        (b"BM" + b"\x00" * 40, "image/bmp"),
        (b"%PDF-1.7\n" + b"\x00" * 24, None),
        (b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 24, None),
        (b"\x89PNG", None),
        (b"", None),
    ],
)
def test_sniff(head, expected):
    assert media.sniff(head) == expected


def test_guess_from_name():
    assert media.guess_from_name("report.pdf") == "application/pdf"
    assert media.guess_from_name("dir/REPORT.PDF") == "application/pdf"
    assert media.guess_from_name("no-extension") is None
    assert media.guess_from_name("archive.tar.gz") is None  # an encoding, not a type


def test_lash_image_type():
    assert media.lash_image_type("image/png") == "png"
    assert media.lash_image_type("image/tiff") is None
    assert media.lash_image_type("application/png") is None
