"""``put``: what lands on disk (blob, lash-core sidecar, intent), sniffing, dedup, write-ahead order."""

from __future__ import annotations

import json
import os
import time

import pytest
from conftest import blob_path, png_bytes, sha, sidecar_path

from .helpers import (
    HEADER,
    assert_error,
    assert_ok,
    blob_files,
    drawn,
    files_under,
    ids_out,
    manifest_file,
    now_ms,
    read_events,
    write_inputs,
)


def test_put_png_writes_lash_core_sidecar_exactly(cli, store, tmp_path):
    data = png_bytes(7, 11)
    (source,) = write_inputs(tmp_path / "in", {"pixel.png": data})
    before = now_ms()
    result = cli("put", "-s", "s-1", str(source))
    after = now_ms()
    assert_ok(result)
    attachment_id = sha(data)
    assert result.stdout == attachment_id + "\n"

    assert blob_path(store, attachment_id).read_bytes() == data
    text = sidecar_path(store, attachment_id).read_text("utf-8")
    expected = {
        "id": attachment_id,
        "media_type": {"kind": "image", "type": "png"},
        "byte_len": len(data),
        "width": 7,
        "height": 11,
        "label": "pixel.png",
    }
    parsed = json.loads(text)
    assert parsed == expected
    assert list(parsed) == ["id", "media_type", "byte_len", "width", "height", "label"]
    # Pretty-printed with a 2-space indent, exactly as serde_json::to_vec_pretty.
    assert text.rstrip("\n") == json.dumps(expected, indent=2)

    events = read_events(store)
    assert events[0] == HEADER
    assert len(events) == 2
    written = events[1]
    assert list(written) == ["op", "attachment_id", "session_id", "canonical_uri", "intent_at_epoch_ms"]
    assert written["op"] == "intent"
    assert written["attachment_id"] == attachment_id
    assert written["session_id"] == "s-1"
    assert written["canonical_uri"] == "sha256:" + attachment_id
    assert before <= written["intent_at_epoch_ms"] <= after
    assert manifest_file(store).read_bytes().endswith(b"\n")


def test_put_non_image_writes_mime_string_and_stdin_has_no_label(cli, store, tmp_path):
    pdf = b"%PDF-1.4\n% not really a pdf, but named like one\n"
    (source,) = write_inputs(tmp_path / "in", {"report.pdf": pdf})
    result = cli("put", "-s", "s-1", str(source))
    assert_ok(result)
    pdf_id = sha(pdf)
    assert result.stdout == pdf_id + "\n"
    text = sidecar_path(store, pdf_id).read_text("utf-8")
    expected = {"id": pdf_id, "media_type": "application/pdf", "byte_len": len(pdf), "label": "report.pdf"}
    assert json.loads(text) == expected
    assert list(json.loads(text)) == ["id", "media_type", "byte_len", "label"]
    assert text.rstrip("\n") == json.dumps(expected, indent=2)

    raw = b"\x00\x01\x02 plain bytes from stdin"
    result = cli("put", "-s", "s-1", "-", input=raw)
    assert_ok(result)
    raw_id = sha(raw)
    assert result.stdout == raw_id + "\n"
    expected = {"id": raw_id, "media_type": "application/octet-stream", "byte_len": len(raw)}
    text = sidecar_path(store, raw_id).read_text("utf-8")
    assert json.loads(text) == expected
    assert text.rstrip("\n") == json.dumps(expected, indent=2)


def test_put_png_from_stdin_is_sniffed_and_options_override(cli, store, tmp_path):
    data = png_bytes(3, 2)
    result = cli("put", "-s", "s", "-", input=data)
    assert_ok(result)
    meta = json.loads(sidecar_path(store, sha(data)).read_text("utf-8"))
    assert meta == {
        "id": sha(data),
        "media_type": {"kind": "image", "type": "png"},
        "byte_len": len(data),
        "width": 3,
        "height": 2,
    }

    other = b"GIF-less bytes that claim to be jpeg"
    result = cli(
        "put",
        "-s",
        "s",
        "--media-type",
        " Image/JPG ",
        "--label",
        "cam",
        "--width",
        "640",
        "--height",
        "480",
        "-",
        input=other,
    )
    assert_ok(result)
    meta = json.loads(sidecar_path(store, sha(other)).read_text("utf-8"))
    assert meta == {
        "id": sha(other),
        "media_type": {"kind": "image", "type": "jpeg"},
        "byte_len": len(other),
        "width": 640,
        "height": 480,
        "label": "cam",
    }

    bad = cli("put", "-s", "s", "--media-type", "text/plain; charset=utf-8", "-", input=b"x")
    assert_error(bad, 2, "--media-type")
    assert not blob_path(store, sha(b"x")).exists()


def test_sniffed_content_beats_the_file_name(cli, store, tmp_path):
    data = png_bytes(9, 4)
    (source,) = write_inputs(tmp_path / "in", {"misnamed.txt": data})
    assert_ok(cli("put", "-s", "s", str(source)))
    meta = json.loads(sidecar_path(store, sha(data)).read_text("utf-8"))
    assert meta == {
        "id": sha(data),
        "media_type": {"kind": "image", "type": "png"},
        "byte_len": len(data),
        "width": 9,
        "height": 4,
        "label": "misnamed.txt",
    }


def test_identical_bytes_give_one_id_and_one_blob(cli, store, tmp_path):
    a, b, c = write_inputs(
        tmp_path / "in", {"a.txt": b"same bytes\n", "b.txt": b"same bytes\n", "c.txt": b"other bytes\n"}
    )
    result = cli("put", "-s", "s1", str(a), str(b))
    assert_ok(result)
    same = sha(b"same bytes\n")
    assert result.stdout == f"{same}\n{same}\n"
    result = cli("put", "-s", "s2", str(b))
    assert_ok(result)
    assert result.stdout == sha(b"same bytes\n") + "\n"
    assert blob_files(store) == [blob_path(store, sha(b"same bytes\n"))]

    result = cli("put", "-s", "s1", str(c))
    assert_ok(result)
    assert result.stdout == sha(b"other bytes\n") + "\n"
    assert sha(b"other bytes\n") != sha(b"same bytes\n")
    assert blob_files(store) == sorted(
        [blob_path(store, sha(b"same bytes\n")), blob_path(store, sha(b"other bytes\n"))]
    )
    assert files_under(store / "tmp") == []


def test_put_again_refreshes_mtime_and_rewrites_a_wrong_size_blob(cli, store, tmp_path):
    data = b"keep me fresh"
    (source,) = write_inputs(tmp_path / "in", {"f.bin": data})
    attachment_id = ids_out(cli("put", "-s", "s", str(source)))[0]
    path = blob_path(store, attachment_id)
    old = time.time() - 10 * 86400
    os.utime(path, (old, old))
    assert_ok(cli("put", "-s", "s", str(source)))
    assert path.stat().st_mtime > old + 86400
    assert path.read_bytes() == data

    path.write_bytes(b"torn")  # a wrong-size blob left by something else
    result = cli("--json", "put", "-s", "s", str(source))
    assert_ok(result)
    assert json.loads(result.stdout)[0]["deduplicated"] is False
    assert path.read_bytes() == data


@pytest.mark.parametrize("failure", ["store-io-error", "os-error"])
def test_put_lands_no_blob_when_the_intent_cannot_be_recorded(cli, store, tmp_path, monkeypatch, failure):
    from lashctl.backends.manifests.jsonl.log import Manifest
    from lashctl.errors import StoreIOError

    def failing_append(self, events):
        if failure == "os-error":
            raise OSError(28, "No space left on device", str(self.path))
        raise StoreIOError(f"cannot append to {self.path}: No space left on device")

    monkeypatch.setattr(Manifest, "append", failing_append)
    sources = write_inputs(tmp_path / "in", {"a.bin": b"first", "b.png": png_bytes(4, 4)})
    result = cli("put", "-s", "s", *map(str, sources))
    assert_error(result, 1, "No space left on device")
    assert result.stderr.count("\n") == 1  # one line
    assert result.stdout == ""
    assert files_under(store / "sha256") == []
    assert files_under(store / "tmp") == []


def test_a_batch_put_takes_the_lock_once_and_appends_once(cli, store, tmp_path, monkeypatch):
    from lashctl.backends.manifests.jsonl.log import Manifest

    calls = {"locked": 0, "append": 0, "events": 0}
    original_locked, original_append = Manifest.locked, Manifest.append

    def counting_locked(self, *args, **kwargs):
        calls["locked"] += 1
        return original_locked(self, *args, **kwargs)

    def counting_append(self, events, *args, **kwargs):
        calls["append"] += 1
        calls["events"] += len(events)
        return original_append(self, events, *args, **kwargs)

    monkeypatch.setattr(Manifest, "locked", counting_locked)
    monkeypatch.setattr(Manifest, "append", counting_append)
    sources = write_inputs(tmp_path / "in", {f"{i}.bin": f"file {i}".encode() for i in range(5)})
    result = cli("put", "-s", "s", *map(str, sources))
    assert_ok(result)
    assert ids_out(result) == [sha(f"file {i}".encode()) for i in range(5)]
    assert calls == {"locked": 1, "append": 1, "events": 5}
    assert len(read_events(store)) == 6


def test_put_stdin_cannot_be_both_an_input_and_the_path_list(cli, store):
    result = cli("put", "-s", "s", "--files-from", "-", "-", input=b"x")
    assert_error(result, 2)
    assert files_under(store / "sha256") == []


def test_put_requires_a_session_and_inputs(cli, store, tmp_path):
    assert_error(cli("put", "-", input=b"x"), 2, "session")
    assert_error(cli("put", "-s", "s"), 2)
    assert_error(cli("put", "-s", "s", str(tmp_path / "missing.bin")), 2, "missing.bin")
    assert files_under(store / "sha256") == []


def test_put_record_whole(cli, store, tmp_path, monkeypatch):
    png, text = write_inputs(tmp_path / "in", {"p.png": png_bytes(4, 5), "t.txt": b"text"})
    result = cli("put", "-s", "s", "--json", str(png), str(text), "-", input=b"text")
    assert_ok(result)
    p, t = sha(png_bytes(4, 5)), sha(b"text")
    assert json.loads(result.stdout) == [
        {
            "id": p,
            "path": str(png),
            "byte_len": len(png_bytes(4, 5)),
            "media_type": "image/png",
            "label": "p.png",
            "width": 4,
            "height": 5,
            "deduplicated": False,
        },
        {
            "id": t,
            "path": str(text),
            "byte_len": 4,
            "media_type": "text/plain",
            "label": "t.txt",
            "width": None,
            "height": None,
            "deduplicated": False,
        },
        {
            "id": t,
            "path": "-",
            "byte_len": 4,
            "media_type": "application/octet-stream",
            "label": None,
            "width": None,
            "height": None,
            "deduplicated": True,
        },
    ]
    result, tables = drawn(cli, monkeypatch, "put", "-s", "s", str(png), str(text))
    assert_ok(result)
    assert tables == [] and result.stdout == f"{p}\n{t}\n"
    assert result.stderr == f"stored 2 blob(s), {len(png_bytes(4, 5)) + 4} B for session s: 0 new, 2 already present\n"


def test_puts_summary_counts_new_and_present_blobs_apart(cli, tmp_path):
    (old,) = write_inputs(tmp_path / "old", {"old.txt": b"old"})
    assert_ok(cli("put", "-s", "s", str(old)))
    new, again = write_inputs(tmp_path / "in", {"new.txt": b"new bytes", "old.txt": b"old"})
    result = cli("put", "-s", "s", str(new), str(again), "-", input=b"new bytes")
    assert_ok(result)
    # The second copy of new.txt's bytes (stdin) found them already present.
    assert result.stderr == "stored 3 blob(s), 21 B for session s: 1 new, 2 already present\n"
