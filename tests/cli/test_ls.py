"""``ls``: its record in every output form."""

from __future__ import annotations

import json

from conftest import png_bytes

from .helpers import OLD_MS, assert_ok, drawn, ids_out, pin_mtime, tsv, write_inputs


def test_ls_record_whole(cli, store, tmp_path, monkeypatch):
    (png,) = ids_out(
        cli("put", "-s", "s1", "-s", "s1", str(write_inputs(tmp_path / "in", {"p.png": png_bytes(2, 3)})[0]))
    )
    (raw,) = ids_out(cli("put", "-s", "s2", "-", input=b"raw"))
    assert_ok(cli("commit", "-s", "s1", png))
    pin_mtime(store, png)
    pin_mtime(store, raw, OLD_MS + 1)
    result = cli("ls", "--json")
    assert_ok(result)
    expected = sorted(
        [
            {
                "id": png,
                "byte_len": len(png_bytes(2, 3)),
                "media_type": "image/png",
                "label": "p.png",
                "state": "committed",
                "sessions": ["s1"],
                "mtime_epoch_ms": OLD_MS,
                "mtime": "2023-11-14T22:13:20.000Z",
            },
            {
                "id": raw,
                "byte_len": 3,
                "media_type": "application/octet-stream",
                "label": None,
                "state": "uncommitted",
                "sessions": ["s2"],
                "mtime_epoch_ms": OLD_MS + 1,
                "mtime": "2023-11-14T22:13:20.001Z",
            },
        ],
        key=lambda e: e["id"],
    )
    assert json.loads(result.stdout) == expected
    piped = cli("ls")
    assert tsv(piped) == [
        [e["id"], str(e["byte_len"]), e["media_type"], e["label"] or "-", e["state"], e["mtime"]] for e in expected
    ]
    result, tables = drawn(cli, monkeypatch, "ls")
    assert_ok(result)
    assert tables == [
        (
            [
                ("id", "id", 0, 8, None),
                ("size", "bytes", 0, 8, None),
                ("media type", "text", 2, 10, None),
                ("label", "text", 1, 8, None),
                ("state", "fixed", 0, 8, None),
                ("modified", "fixed", 3, 8, None),
            ],
            [[e["id"], e["byte_len"], e["media_type"], e["label"], e["state"], e["mtime"]] for e in expected],
        )
    ]
    assert result.stderr == f"2 blob(s), {len(png_bytes(2, 3)) + 3} B\n"
