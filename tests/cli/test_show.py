"""``show``: its record in every output form."""

from __future__ import annotations

import json

from conftest import blob_path, png_bytes, sidecar_path

from .helpers import DAY, HOUR, MINUTE, OLD_MS, assert_ok, commit_ev, intent, iso, now_ms, pin_mtime, write_manifest


def test_show_record_whole(cli, store, put_blobs, monkeypatch):
    (p,) = put_blobs({"p.png": png_bytes(4, 5)})
    pin_mtime(store, p)
    now = now_ms()
    write_manifest(store, [intent(p, "s1", now - 2 * DAY), intent(p, "s2", now - DAY), commit_ev(p, "s2", now - HOUR)])
    result = cli("show", "--json", p[:8])
    assert_ok(result)
    document = json.loads(result.stdout)
    ages = [row.pop("age_ms") for row in document["rows"]]
    assert 2 * DAY <= ages[0] < 2 * DAY + MINUTE and DAY <= ages[1] < DAY + MINUTE
    size = len(png_bytes(4, 5))
    meta = json.loads(sidecar_path(store, p).read_text("utf-8"))
    assert document == {
        "id": p,
        "blob_path": str(blob_path(store, p)),
        "sidecar_path": str(sidecar_path(store, p)),
        "bytes_present": True,
        "byte_len": size,
        "size_on_disk": document["size_on_disk"],
        "mtime_epoch_ms": OLD_MS,
        "mtime": "2023-11-14T22:13:20.000Z",
        "metadata": meta,
        "media_type": "image/png",
        "sidecar_problem": None,
        "rows": [
            {
                "session_id": "s1",
                "canonical_uri": "sha256:" + p,
                "intent_at_epoch_ms": now - 2 * DAY,
                "intent_at": iso(now - 2 * DAY),
                "committed_at_epoch_ms": None,
                "committed_at": None,
            },
            {
                "session_id": "s2",
                "canonical_uri": "sha256:" + p,
                "intent_at_epoch_ms": now - DAY,
                "intent_at": iso(now - DAY),
                "committed_at_epoch_ms": now - HOUR,
                "committed_at": iso(now - HOUR),
            },
        ],
        "verdict": {"state": "kept", "reason": f"kept because session s2 committed it at {iso(now - HOUR)}"},
    }
    assert list(document) == [
        "id",
        "blob_path",
        "sidecar_path",
        "bytes_present",
        "byte_len",
        "size_on_disk",
        "mtime_epoch_ms",
        "mtime",
        "metadata",
        "media_type",
        "sidecar_problem",
        "rows",
        "verdict",
    ]
    from lashctl.render import human_bytes

    plain = cli("show", p)
    assert_ok(plain)
    assert plain.stdout.splitlines() == [
        f"id:         {p}",
        f"blob:       {blob_path(store, p)} (present, {size} B, {human_bytes(document['size_on_disk'])} on disk, "
        "modified 2023-11-14T22:13:20.000Z)",
        f"sidecar:    {sidecar_path(store, p)}",
        "media type: image/png",
        f"byte_len:   {size}",
        "dimensions: 4x5",
        "label:      p.png",
        f"verdict:    kept because session s2 committed it at {iso(now - HOUR)}",
        "rows:       2",
        f"  session s1: intent {iso(now - 2 * DAY)} (2d ago), uncommitted",
        f"  session s2: intent {iso(now - DAY)} (1d ago), committed {iso(now - HOUR)}",
    ]
