"""CLI tests through Typer's CliRunner against ``lashctl.cli.app`` (the README's store format-§5).

Each test drives the commands as an operator would and asserts what a user
notices: exact stdout, exit codes, stderr messages, and the files on disk.
"""

from __future__ import annotations

import json
import os
import re
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from conftest import blob_path, land_at_intents, png_bytes, sha, sidecar_path

HEX64 = re.compile(r"[0-9a-f]{64}")
HEADER = {"op": "header", "format": "lashctl-manifest", "version": 1}
MINUTE = 60_000
HOUR = 3_600_000
DAY = 86_400_000


# -- helpers --------------------------------------------------------------------


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def blob_files(store: Path) -> list[Path]:
    """Every file under sha256/ that is not a sidecar."""
    root = store / "sha256"
    if not root.exists():
        return []
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.name.endswith(".json"))


def files_under(directory: Path) -> list[Path]:
    if not directory.exists():
        return []
    return sorted(p for p in directory.rglob("*") if p.is_file())


def manifest_file(store: Path) -> Path:
    return store / "manifest.jsonl"


def read_events(store: Path) -> list[dict]:
    return [json.loads(line) for line in manifest_file(store).read_text("utf-8").splitlines()]


def intent(attachment_id: str, session: str, at: int) -> dict:
    return {
        "op": "intent",
        "attachment_id": attachment_id,
        "session_id": session,
        "canonical_uri": "sha256:" + attachment_id,
        "intent_at_epoch_ms": at,
    }


def commit_ev(attachment_id: str, session: str, at: int) -> dict:
    return {"op": "commit", "attachment_id": attachment_id, "session_id": session, "committed_at_epoch_ms": at}


def forget(attachment_id: str, session: str) -> dict:
    return {"op": "forget", "attachment_id": attachment_id, "session_id": session}


def event_line(event: dict) -> str:
    return json.dumps(event, separators=(",", ":"))


def write_manifest(store: Path, events: list[dict], header: bool = True) -> None:
    store.mkdir(parents=True, exist_ok=True)
    lines = ([HEADER] if header else []) + events
    manifest_file(store).write_text("".join(event_line(e) + "\n" for e in lines), "utf-8")
    land_at_intents(store, events)


def snapshot(root: Path) -> dict[str, object]:
    """Every directory and file under ``root``: a file as (bytes, mtime_ns)."""
    result: dict[str, object] = {}
    if not root.exists():
        return result
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_dir():
            result[rel] = "dir"
        else:
            st = path.stat()
            result[rel] = (path.read_bytes(), st.st_mtime_ns)
    return result


def error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("lashctl: error:")]


def assert_error(result, code: int, *needles: str) -> None:
    """Exit ``code``, exactly one error line on stderr, no traceback, needles in stderr."""
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert len(error_lines(result)) == 1, result.stderr
    for needle in needles:
        assert needle in result.stderr, (needle, result.stderr)


def assert_ok(result) -> None:
    assert result.exit_code == 0, (result.exit_code, result.stdout, result.stderr, result.exception)


def ids_out(result) -> list[str]:
    lines = result.stdout.splitlines()
    for line in lines:
        assert HEX64.fullmatch(line), repr(line)
    return lines


def write_inputs(directory: Path, contents: dict[str, bytes]) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, data in contents.items():
        path = directory / name
        path.write_bytes(data)
        paths.append(path)
    return paths


@pytest.fixture
def put_blobs(cli, tmp_path):
    """Store contents through ``put`` but record the intents in a scratch manifest,
    so the store's own manifest holds only what the test writes by hand."""

    def run(contents: dict[str, bytes]) -> list[str]:
        paths = write_inputs(tmp_path / "blob-inputs", contents)
        scratch = tmp_path / "scratch-manifest.jsonl"
        result = cli("--manifest", str(scratch), "put", "-s", "setup", *map(str, paths))
        assert_ok(result)
        return ids_out(result)

    return run


# -- 1. lash-core conformance -----------------------------------------------------
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
    assert meta == {"id": sha(data), "media_type": {"kind": "image", "type": "png"},
                    "byte_len": len(data), "width": 3, "height": 2}

    other = b"GIF-less bytes that claim to be jpeg"
    result = cli("put", "-s", "s", "--media-type", " Image/JPG ", "--label", "cam", "--width", "640",
                 "--height", "480", "-", input=other)
    assert_ok(result)
    meta = json.loads(sidecar_path(store, sha(other)).read_text("utf-8"))
    assert meta == {"id": sha(other), "media_type": {"kind": "image", "type": "jpeg"},
                    "byte_len": len(other), "width": 640, "height": 480, "label": "cam"}

    bad = cli("put", "-s", "s", "--media-type", "text/plain; charset=utf-8", "-", input=b"x")
    assert_error(bad, 2, "--media-type")
    assert not blob_path(store, sha(b"x")).exists()


def test_sniffed_content_beats_the_file_name(cli, store, tmp_path):
    data = png_bytes(9, 4)
    (source,) = write_inputs(tmp_path / "in", {"misnamed.txt": data})
    assert_ok(cli("put", "-s", "s", str(source)))
    meta = json.loads(sidecar_path(store, sha(data)).read_text("utf-8"))
    assert meta == {"id": sha(data), "media_type": {"kind": "image", "type": "png"}, "byte_len": len(data),
                    "width": 9, "height": 4, "label": "misnamed.txt"}


def test_get_round_trips_bytes(cli, store, tmp_path):
    data = bytes(range(256)) * 50
    (source,) = write_inputs(tmp_path / "in", {"blob.bin": data})
    attachment_id = ids_out(cli("put", "-s", "s", str(source)))[0]
    result = cli("get", attachment_id)
    assert_ok(result)
    assert result.stdout_bytes == data
    result = cli("get", "-o", "-", attachment_id)
    assert_ok(result)
    assert result.stdout_bytes == data


def test_identical_bytes_give_one_id_and_one_blob(cli, store, tmp_path):
    a, b, c = write_inputs(tmp_path / "in", {"a.txt": b"same bytes\n", "b.txt": b"same bytes\n",
                                              "c.txt": b"other bytes\n"})
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
    assert blob_files(store) == sorted([blob_path(store, sha(b"same bytes\n")),
                                        blob_path(store, sha(b"other bytes\n"))])
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


def test_get_unknown_full_id_exits_3(cli, store, tmp_path):
    assert_ok(cli("put", "-s", "s", "-", input=b"something"))
    unknown = sha(b"never stored")
    result = cli("get", unknown)
    assert_error(result, 3, unknown)
    assert result.stdout == ""


def test_delete_removes_bytes_and_sidecar_and_repeats_with_exit_0(cli, store, put_blobs):
    (attachment_id,) = put_blobs({"doomed.txt": b"delete me"})
    assert blob_path(store, attachment_id).exists()
    assert sidecar_path(store, attachment_id).exists()

    result = cli("delete", attachment_id)
    assert_ok(result)
    assert not blob_path(store, attachment_id).exists()
    assert not sidecar_path(store, attachment_id).exists()
    assert blob_files(store) == []

    again = cli("delete", attachment_id)
    assert_ok(again)
    again_json = cli("delete", "--json", attachment_id)
    assert_ok(again_json)
    assert json.loads(again_json.stdout)["items"][0]["existed"] is False


def test_delete_force_twice_when_rows_reference_it(cli, store, tmp_path):
    attachment_id = ids_out(cli("put", "-s", "s", "-", input=b"forced"))[0]
    assert_ok(cli("delete", "--force", attachment_id))
    assert not blob_path(store, attachment_id).exists()
    assert not sidecar_path(store, attachment_id).exists()
    assert_ok(cli("delete", "--force", attachment_id))


# -- 2. shared content --------------------------------------------------------------
def test_reclaim_keeps_bytes_a_committed_row_of_another_session_needs(cli, store, put_blobs):
    (x,) = put_blobs({"x.png": png_bytes(2, 2)})
    now = now_ms()
    write_manifest(store, [
        intent(x, "session-A", now - 3 * DAY),  # A recorded an intent and crashed
        intent(x, "session-B", now - 2 * DAY),
        commit_ev(x, "session-B", now - 2 * DAY + 1000),
    ])
    before_lines = manifest_file(store).read_text("utf-8").splitlines()

    result = cli("reclaim", "--older-than", "1h", "--json")
    assert_ok(result)
    report = json.loads(result.stdout)
    assert report["blobs_reclaimed"] == 0
    assert report["bytes_freed"] == 0
    assert report["rows_released"] == 1
    assert report["failures"] == 0
    assert [(i["id"], i["action"], i["sessions"]) for i in report["items"]] == [(x, "release", ["session-A"])]

    assert blob_path(store, x).read_bytes() == png_bytes(2, 2)
    assert sidecar_path(store, x).exists()
    after_lines = manifest_file(store).read_text("utf-8").splitlines()
    assert after_lines[: len(before_lines)] == before_lines
    assert [json.loads(line) for line in after_lines[len(before_lines):]] == [forget(x, "session-A")]

    # B's row remains: deleting X is refused naming session-B, and a second sweep does nothing.
    assert_error(cli("delete", x), 4, "session-B")
    again = cli("reclaim", "--older-than", "1h", "--json")
    assert_ok(again)
    assert json.loads(again.stdout)["items"] == []
    assert blob_path(store, x).exists()


def test_reclaim_keeps_bytes_while_another_session_has_a_recent_intent(cli, store, put_blobs):
    (x,) = put_blobs({"x.bin": b"shared upload"})
    now = now_ms()
    write_manifest(store, [intent(x, "A", now - 2 * DAY), intent(x, "B", now - 5 * MINUTE)])
    result = cli("reclaim", "--older-than", "1h", "--json")
    assert_ok(result)
    items = json.loads(result.stdout)["items"]
    assert [(i["id"], i["action"], i["sessions"]) for i in items] == [(x, "release", ["A"])]
    assert blob_path(store, x).exists()
    assert read_events(store)[-1] == forget(x, "A")


def test_reclaim_deletes_bytes_when_no_row_is_live(cli, store, put_blobs):
    data = b"orphaned upload"
    (x,) = put_blobs({"x.bin": data})
    now = now_ms()
    write_manifest(store, [intent(x, "A", now - 3 * DAY), intent(x, "B", now - 2 * DAY)])
    result = cli("reclaim", "--older-than", "1h", "--json")
    assert_ok(result)
    report = json.loads(result.stdout)
    assert report["blobs_reclaimed"] == 1
    assert report["bytes_freed"] == len(data)
    assert report["rows_released"] == 0
    assert [(i["id"], i["action"], i["sessions"]) for i in report["items"]] == [(x, "reclaim", ["A", "B"])]
    assert not blob_path(store, x).exists()
    assert not sidecar_path(store, x).exists()
    assert read_events(store)[-2:] == [forget(x, "A"), forget(x, "B")]
    listed = cli("list-uncommitted", "--json")
    assert_ok(listed)
    assert json.loads(listed.stdout) == []


# -- 3. write-ahead ordering ------------------------------------------------------------
@pytest.mark.parametrize("failure", ["store-io-error", "os-error"])
def test_put_lands_no_blob_when_the_intent_cannot_be_recorded(cli, store, tmp_path, monkeypatch, failure):
    from lashctl.errors import StoreIOError
    from lashctl.backends.manifests.jsonl.log import Manifest

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


# -- 4. reclaim: dry run, grace guard, failed deletes -------------------------------------
def _reclaim_fixture(cli, store, put_blobs) -> dict[str, str]:
    orphan, shared, recent, fresh, kept = put_blobs({
        "orphan.bin": b"orphan bytes",
        "shared.bin": b"shared bytes",
        "recent.bin": b"recently re-uploaded",
        "fresh.bin": b"fresh upload",
        "kept.bin": b"committed long ago",
    })
    missing = sha(b"bytes that never landed")
    now = now_ms()
    write_manifest(store, [
        intent(orphan, "A", now - 3 * DAY),
        intent(shared, "A", now - 3 * DAY),
        intent(shared, "B", now - 2 * DAY),
        commit_ev(shared, "B", now - 2 * DAY),
        intent(recent, "A", now - 2 * DAY),
        intent(recent, "C", now - 10 * MINUTE),
        intent(missing, "A", now - 1 * DAY),
        intent(fresh, "A", now - 5 * MINUTE),
        intent(kept, "K", now - 9 * DAY),
        commit_ev(kept, "K", now - 9 * DAY),
    ])
    return {"orphan": orphan, "shared": shared, "recent": recent, "missing": missing,
            "fresh": fresh, "kept": kept}


@pytest.mark.parametrize("dry_run", [False, True])
def test_reclaim_progress_bar_is_given_the_plan_size_before_it_advances(cli, store, put_blobs, monkeypatch, dry_run):
    from lashctl import render

    x, y, z = put_blobs({"x": b"x bytes", "y": b"y bytes", "z": b"z bytes"})
    now = now_ms()
    write_manifest(store, [intent(x, "A", now - 2 * DAY), intent(y, "A", now - 2 * DAY),
                           intent(z, "A", now - 2 * DAY), intent(z, "B", now - 2 * DAY)])
    seen = []

    class RecordingBar(render.ProgressBar):
        def set_total(self, total):
            seen.append(("total", total))

        def advance(self, amount=1):
            seen.append(("advance", amount))

    monkeypatch.setattr(render.UI, "progress", lambda self, description, total, unit="bytes": RecordingBar())
    assert_ok(cli("reclaim", "--older-than", "1h", *(["-n"] if dry_run else [])))
    assert seen == [("total", 3)] + [("advance", 1)] * 3


def test_reclaim_dry_run_reports_exactly_what_the_real_run_does(cli, store, put_blobs):
    ids = _reclaim_fixture(cli, store, put_blobs)
    before = snapshot(store)
    lines_before = manifest_file(store).read_text("utf-8").splitlines()

    dry = cli("reclaim", "--older-than", "1h", "--dry-run", "--json")
    assert_ok(dry)
    assert snapshot(store) == before  # a dry run changes no file
    planned = json.loads(dry.stdout)
    assert planned["dry_run"] is True

    expected_actions = {
        (ids["orphan"], "reclaim", ("A",)),
        (ids["shared"], "release", ("A",)),
        (ids["recent"], "release", ("A",)),
        (ids["missing"], "reclaim", ("A",)),
    }
    assert {(i["id"], i["action"], tuple(i["sessions"])) for i in planned["items"]} == expected_actions

    real = cli("reclaim", "--older-than", "1h", "--json")
    assert_ok(real)
    done = json.loads(real.stdout)
    assert done["dry_run"] is False
    assert done["items"] == planned["items"]
    for key in ("scanned_intents", "blobs_reclaimed", "bytes_freed", "rows_released", "failures"):
        assert done[key] == planned[key], key
    assert done["blobs_reclaimed"] == 2
    assert done["bytes_freed"] == len(b"orphan bytes")
    assert done["rows_released"] == 2

    # The real run acted on exactly that set.
    assert not blob_path(store, ids["orphan"]).exists()
    assert not sidecar_path(store, ids["orphan"]).exists()
    for name in ("shared", "recent", "fresh", "kept"):
        assert blob_path(store, ids[name]).exists(), name
        assert sidecar_path(store, ids[name]).exists(), name
    lines_after = manifest_file(store).read_text("utf-8").splitlines()
    assert lines_after[: len(lines_before)] == lines_before
    appended = [json.loads(line) for line in lines_after[len(lines_before):]]
    assert sorted(map(event_line, appended)) == sorted(
        event_line(forget(i, s)) for i, _action, sessions in expected_actions for s in sessions
    )


def test_reclaim_dry_run_with_force_and_zero_grace_matches_the_real_run(cli, store, tmp_path):
    a, b = write_inputs(tmp_path / "in", {"a.bin": b"uncommitted", "b.bin": b"committed"})
    ids = ids_out(cli("put", "-s", "s", str(a), str(b)))
    assert_ok(cli("commit", "-s", "s", ids[1]))
    time.sleep(0.01)
    before = snapshot(store)
    dry = cli("reclaim", "--force", "--older-than", "0s", "--dry-run", "--json")
    assert_ok(dry)
    assert snapshot(store) == before
    planned = json.loads(dry.stdout)["items"]
    assert [(i["id"], i["action"], i["sessions"]) for i in planned] == [(ids[0], "reclaim", ["s"])]

    real = cli("reclaim", "--force", "--older-than", "0s", "--json")
    assert_ok(real)
    assert json.loads(real.stdout)["items"] == planned
    assert not blob_path(store, ids[0]).exists()
    assert blob_path(store, ids[1]).exists()


@pytest.mark.parametrize("cutoff", [["--older-than", "30s"], ["--older-than", "0s"], ["--before", "now"]])
def test_reclaim_refuses_a_short_grace_period_without_force(cli, store, tmp_path, cutoff):
    attachment_id = ids_out(cli("put", "-s", "s", "-", input=b"in flight"))[0]
    if cutoff[-1] == "now":
        cutoff = ["--before", str(now_ms())]
    before = snapshot(store)
    result = cli("reclaim", *cutoff)
    assert_error(result, 4, "--force")
    assert result.stdout == ""
    assert snapshot(store) == before
    assert blob_path(store, attachment_id).exists()


def test_reclaim_failed_delete_gives_exit_5_keeps_rows_and_goes_on(cli, store, put_blobs, monkeypatch):
    first, broken, last = put_blobs({"1.bin": b"one", "2.bin": b"two", "3.bin": b"three"})
    now = now_ms()
    write_manifest(store, [
        intent(first, "A", now - 3 * DAY),
        intent(broken, "A", now - 2 * DAY),
        intent(broken, "B", now - 2 * DAY),
        intent(last, "A", now - 1 * DAY),
    ])
    from lashctl.errors import StoreIOError
    from lashctl.backends.blobs.localfs import BlobStore

    original = BlobStore.delete

    def flaky_delete(self, attachment_id):
        if attachment_id == broken:
            raise StoreIOError(f"cannot delete {self.blob_path(attachment_id)}: Permission denied")
        return original(self, attachment_id)

    monkeypatch.setattr(BlobStore, "delete", flaky_delete)
    result = cli("reclaim", "--older-than", "1h", "--json")
    assert_error(result, 5, broken)
    report = json.loads(result.stdout)
    assert report["failures"] == 1
    assert report["blobs_reclaimed"] == 2
    assert {i["id"]: i["action"] for i in report["items"]} == {first: "reclaim", broken: "failed", last: "reclaim"}
    assert not blob_path(store, first).exists()
    assert not blob_path(store, last).exists()
    assert blob_path(store, broken).exists()

    listed = cli("list-uncommitted", "--json")
    assert_ok(listed)
    assert sorted((r["id"], r["session_id"]) for r in json.loads(listed.stdout)) == [(broken, "A"), (broken, "B")]

    monkeypatch.setattr(BlobStore, "delete", original)
    again = cli("reclaim", "--older-than", "1h", "--json")
    assert_ok(again)
    assert [(i["id"], i["action"]) for i in json.loads(again.stdout)["items"]] == [(broken, "reclaim")]
    assert blob_files(store) == []


# -- 5. commit ----------------------------------------------------------------------
def test_commit_reports_each_status_and_exit_3_for_no_intent(cli, store, tmp_path):
    sources = write_inputs(tmp_path / "in", {"a": b"aaa", "b": b"bbb", "c": b"ccc", "d": b"ddd"})
    a, b, c, d = ids_out(cli("put", "-s", "s1", *map(str, sources)))

    result = cli("commit", "-s", "s1", "--json", a)
    assert_ok(result)
    assert json.loads(result.stdout) == [{"id": a, "session_id": "s1", "status": "committed"}]

    result = cli("commit", "-s", "s1", a, b)
    assert_ok(result)
    assert result.stdout == f"{a}\ts1\talready_committed\n{b}\ts1\tcommitted\n"

    unknown = sha(b"no such upload")
    result = cli("--json", "commit", "-s", "s1", c, unknown)
    assert_error(result, 3, unknown)
    assert json.loads(result.stdout) == [
        {"id": c, "session_id": "s1", "status": "committed"},
        {"id": unknown, "session_id": "s1", "status": "no_intent"},
    ]
    # c was committed despite the exit 3.
    result = cli("commit", "-s", "s1", "--json", c)
    assert_ok(result)
    assert json.loads(result.stdout)[0]["status"] == "already_committed"

    # The row belongs to s1: s2 has no intent for it, and nothing is written.
    lines = manifest_file(store).read_bytes()
    result = cli("commit", "-s", "s2", a)
    assert_error(result, 3)
    assert result.stdout == f"{a}\ts2\tno_intent\n"
    assert manifest_file(store).read_bytes() == lines

    # From stdin, with the session from the environment.
    result = cli("commit", "-", input=f"{d}\n", env={"LASHCTL_SESSION": "s1"})
    assert_ok(result)
    assert result.stdout == f"{d}\ts1\tcommitted\n"

    # "already committed" still writes its commit event (a no-op in the fold): the
    # state cache is never trusted to skip one. "no intent" writes nothing.
    commits = [e for e in read_events(store) if e["op"] == "commit"]
    assert [(e["attachment_id"], e["session_id"]) for e in commits] == [
        (a, "s1"), (a, "s1"), (b, "s1"), (c, "s1"), (c, "s1"), (d, "s1")]
    listed = cli("list-uncommitted", "--json")
    assert_ok(listed)
    assert json.loads(listed.stdout) == []


def test_commit_reads_several_ids_from_stdin(cli, store, tmp_path):
    sources = write_inputs(tmp_path / "in", {"a": b"one", "b": b"two"})
    a, b = ids_out(cli("put", "-s", "S", *map(str, sources)))
    result = cli("commit", "-s", "S", "-", input=f"{a}\n{b}\n")
    assert_ok(result)
    assert result.stdout == f"{a}\tS\tcommitted\n{b}\tS\tcommitted\n"


def test_commit_requires_a_session(cli, store):
    result = cli("commit", sha(b"x"))
    assert_error(result, 2, "session")


def test_an_intent_for_a_committed_row_changes_nothing(cli, store, tmp_path):
    (source,) = write_inputs(tmp_path / "in", {"a": b"kept"})
    (a,) = ids_out(cli("put", "-s", "s", str(source)))
    assert_ok(cli("commit", "-s", "s", a))
    assert_ok(cli("put", "-s", "s", str(source)))  # a second intent for the committed row
    listed = cli("list-uncommitted", "--json")
    assert_ok(listed)
    assert json.loads(listed.stdout) == []
    result = cli("reclaim", "--force", "--older-than", "0s", "--json")
    assert_ok(result)
    assert json.loads(result.stdout)["items"] == []
    assert blob_path(store, a).exists()


# -- 6. malformed manifests ----------------------------------------------------------
def _corrupt_store(store: Path, put_blobs, bad_line: str) -> tuple[str, str]:
    x, y = put_blobs({"x": b"x bytes", "y": b"y bytes"})
    now = now_ms()
    store.mkdir(parents=True, exist_ok=True)
    (store / "manifest.jsonl.lock").touch()
    manifest_file(store).write_text(
        event_line(HEADER) + "\n"
        + event_line(intent(x, "A", now - 3 * DAY)) + "\n"
        + bad_line + "\n"
        + event_line(intent(y, "A", now - 3 * DAY)) + "\n",
        "utf-8",
    )
    return x, y


CORRUPT_LINES = {
    "malformed-json": '{"op":"intent","attachment_id":',
    "unknown-op": json.dumps({"op": "frobnicate", "attachment_id": "a" * 64, "session_id": "A"}),
}


@pytest.mark.parametrize("bad", sorted(CORRUPT_LINES))
@pytest.mark.parametrize("command", [
    ["list-uncommitted"],
    ["reclaim", "--force", "--older-than", "0s"],
    ["reclaim", "--older-than", "1h", "--dry-run"],
    ["commit", "-s", "A", "X"],
    ["delete", "X"],
    ["delete", "--force", "X"],
])
def test_a_corrupt_line_stops_every_command_that_needs_state(cli, store, put_blobs, bad, command):
    x, _y = _corrupt_store(store, put_blobs, CORRUPT_LINES[bad])
    command = [x if arg == "X" else arg for arg in command]
    before = snapshot(store)
    result = cli(*command)
    assert_error(result, 65, "manifest.jsonl:3")
    if command != ["list-uncommitted"]:  # read-only inspection lists what it could read
        assert result.stdout == ""
    assert snapshot(store) == before


def test_unknown_header_version_is_corruption(cli, store, put_blobs):
    (x,) = put_blobs({"x": b"x"})
    manifest_file(store).write_text(
        json.dumps({"op": "header", "format": "lashctl-manifest", "version": 2}) + "\n"
        + event_line(intent(x, "A", now_ms() - 3 * DAY)) + "\n", "utf-8")
    (store / "manifest.jsonl.lock").touch()
    before = snapshot(store)
    result = cli("list-uncommitted")
    assert_error(result, 65, "manifest.jsonl:1")
    result = cli("reclaim", "--older-than", "1h")
    assert_error(result, 65, "manifest.jsonl:1")
    assert snapshot(store) == before


def test_a_manifest_without_header_is_read_as_version_1(cli, store, put_blobs):
    (x,) = put_blobs({"x": b"hand made"})
    at = now_ms() - DAY
    write_manifest(store, [intent(x, "hand", at)], header=False)
    result = cli("list-uncommitted", "--json")
    assert_ok(result)
    assert [(r["id"], r["session_id"], r["intent_at_epoch_ms"]) for r in json.loads(result.stdout)] == [(x, "hand", at)]


@pytest.mark.parametrize("writer", ["put", "commit"])
def test_a_torn_final_line_is_ignored_with_a_warning_and_truncated_by_the_next_writer(cli, store, put_blobs, writer):
    (x,) = put_blobs({"x": b"x"})
    at = now_ms() - DAY
    good = event_line(HEADER) + "\n" + event_line(intent(x, "A", at)) + "\n"
    # A long event cut short by a crash: longer than what the next writer appends.
    torn = event_line(intent(sha(b"torn"), "S" * 900, at))[:700]
    store.mkdir(parents=True, exist_ok=True)
    manifest_file(store).write_text(good + torn, "utf-8")

    result = cli("list-uncommitted", "--json")
    assert_ok(result)
    assert "warning" in result.stderr
    assert "manifest.jsonl:3" in result.stderr
    assert [r["id"] for r in json.loads(result.stdout)] == [x]

    if writer == "put":
        result = cli("put", "-s", "B", "-", input=b"after the crash")
    else:
        result = cli("commit", "-s", "A", x)
    assert_ok(result)
    text = manifest_file(store).read_text("utf-8")
    assert text.startswith(good)
    assert text.endswith("\n")
    lines = text.splitlines()
    assert len(lines) == 3
    added = json.loads(lines[2])
    if writer == "put":
        assert added["op"] == "intent"
        assert added["attachment_id"] == sha(b"after the crash")
    else:
        assert {k: v for k, v in added.items() if k != "committed_at_epoch_ms"} == {
            "op": "commit", "attachment_id": x, "session_id": "A"}
    assert "SSSS" not in text

    result = cli("list-uncommitted")
    assert_ok(result)
    assert "warning" not in result.stderr


def test_a_complete_final_event_without_newline_is_read_and_kept(cli, store, put_blobs):
    (x,) = put_blobs({"x": b"x"})
    at = now_ms() - DAY
    text = event_line(HEADER) + "\n" + event_line(intent(x, "hand-edit", at))  # no final newline
    store.mkdir(parents=True, exist_ok=True)
    manifest_file(store).write_text(text, "utf-8")
    result = cli("list-uncommitted", "--json")
    assert_ok(result)
    assert [(r["id"], r["session_id"]) for r in json.loads(result.stdout)] == [(x, "hand-edit")]

    assert_ok(cli("put", "-s", "B", "-", input=b"appended"))
    lines = manifest_file(store).read_text("utf-8").splitlines()
    assert lines[:2] == text.split("\n")
    assert len(lines) == 3
    assert json.loads(lines[2])["attachment_id"] == sha(b"appended")
    assert manifest_file(store).read_text("utf-8").endswith("\n")


# -- 7. ids ---------------------------------------------------------------------------
def colliding_inputs(prefix_len: int = 4) -> tuple[bytes, bytes]:
    """Two small inputs whose sha256 ids share their first ``prefix_len`` hex chars."""
    seen: dict[str, bytes] = {}
    for n in range(200_000):
        data = f"collide-{n}".encode()
        key = sha(data)[:prefix_len]
        if key in seen:
            return seen[key], data
        seen[key] = data
    raise AssertionError("no collision found")


BAD_IDS = ["../../etc/passwd", "zz", "abc", "sha256:abc", "g" * 64, "a" * 65, "", "abcd/../..", "12 34"]


@pytest.mark.parametrize("bad", BAD_IDS)
@pytest.mark.parametrize("command", [["get"], ["get", "-o", "OUT"], ["delete"], ["delete", "--force"],
                                     ["commit", "-s", "s"]])
def test_malformed_ids_are_usage_errors_that_touch_nothing(cli, store, tmp_path, bad, command):
    assert_ok(cli("put", "-s", "s", "-", input=b"present"))
    out = tmp_path / "out.bin"
    command = [str(out) if arg == "OUT" else arg for arg in command]
    before = snapshot(tmp_path)
    result = cli(*command, bad)
    assert_error(result, 2)
    assert result.stdout == ""
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("command", [["get"], ["delete"], ["commit", "-s", "s"]])
def test_malformed_ids_never_create_the_store(cli, store, command):
    result = cli(*command, "../../etc/passwd")
    assert_error(result, 2)
    assert not store.exists()


@pytest.mark.parametrize("command", [["get"], ["get", "-o", "OUT"], ["delete"], ["delete", "--force"],
                                     ["delete", "--dry-run", "--force"], ["commit", "-s", "s"]])
def test_an_ambiguous_prefix_is_a_usage_error_that_touches_nothing(cli, store, tmp_path, command):
    one, two = colliding_inputs(4)
    id_one, id_two = sha(one), sha(two)
    sources = write_inputs(tmp_path / "in", {"one": one, "two": two})
    assert ids_out(cli("put", "-s", "s", *map(str, sources))) == [id_one, id_two]
    out = tmp_path / "out.bin"
    command = [str(out) if arg == "OUT" else arg for arg in command]
    before = snapshot(tmp_path)
    result = cli(*command, id_one[:4])
    assert_error(result, 2, "ambiguous")
    assert result.stdout == ""
    assert snapshot(tmp_path) == before

    # A longer prefix that tells them apart resolves.
    n = next(i for i in range(64) if id_one[i] != id_two[i]) + 1
    result = cli("get", id_two[: max(n, 4)])
    assert_ok(result)
    assert result.stdout_bytes == two


def test_an_ambiguous_prefix_among_blobs_written_by_hand(cli, store, tmp_path):
    fake_one, fake_two = "abcd" + "0" * 60, "abcd" + "1" * 60
    shard = store / "sha256" / "ab"
    shard.mkdir(parents=True)
    (shard / fake_one).write_bytes(b"1")
    (shard / fake_two).write_bytes(b"2")
    before = snapshot(store)
    for command in (["get"], ["delete", "--force"], ["commit", "-s", "s"]):
        result = cli(*command, "ABCD")
        assert_error(result, 2, "ambiguous")
        assert snapshot(store) == before
    result = cli("get", "abcd0")
    # resolves to fake_one; its bytes do not hash to its name
    assert_error(result, 65, fake_one)


def test_a_well_formed_prefix_that_matches_nothing_is_not_found(cli, store):
    attachment_id = ids_out(cli("put", "-s", "s", "-", input=b"present"))[0]
    other = "0123" if not attachment_id.startswith("0123") else "4567"
    result = cli("get", other)
    assert_error(result, 3, other)
    assert result.stdout == ""


def test_lash_core_staging_litter_is_not_a_blob(cli, store):
    litter = sha(b"half written by lash-core")
    shard = store / "sha256" / litter[:2]
    shard.mkdir(parents=True)
    (shard / (litter + ".tmp")).write_bytes(b"half written")
    result = cli("get", litter[:8])
    assert_error(result, 3)
    result = cli("get", litter)
    assert_error(result, 3)


def test_upper_case_and_uri_ids_are_accepted(cli, store, tmp_path):
    data = b"case folded"
    attachment_id = ids_out(cli("put", "-s", "s", "-", input=data))[0]
    for text in (attachment_id.upper(), "sha256:" + attachment_id, "SHA256:" + attachment_id.upper(),
                 attachment_id[:6].upper(), "sha256:" + attachment_id[:5]):
        result = cli("get", text)
        assert_ok(result)
        assert result.stdout_bytes == data
    result = cli("commit", "-s", "s", "--json", "sha256:" + attachment_id.upper())
    assert_ok(result)
    assert json.loads(result.stdout) == [{"id": attachment_id, "session_id": "s", "status": "committed"}]
    result = cli("delete", "--force", attachment_id[:8].upper())
    assert_ok(result)
    assert not blob_path(store, attachment_id).exists()


# -- delete -------------------------------------------------------------------------
def test_delete_refuses_live_content_naming_the_sessions(cli, store, tmp_path):
    data = b"referenced"
    attachment_id = ids_out(cli("put", "-s", "alice", "-", input=data))[0]
    assert_ok(cli("put", "-s", "bob", "-", input=data))
    assert_ok(cli("commit", "-s", "bob", attachment_id))
    before = snapshot(store)

    result = cli("delete", attachment_id)
    assert_error(result, 4, "alice", "bob", attachment_id)
    assert result.stdout == ""
    assert snapshot(store) == before

    result = cli("delete", "--dry-run", "--force", "--json", attachment_id)
    assert_ok(result)
    document = json.loads(result.stdout)
    assert document["dry_run"] is True and document["blobs_deleted"] == 1
    assert document["items"] == [{"id": attachment_id, "existed": True, "byte_len": len(data),
                                  "sessions": ["alice", "bob"]}]
    assert snapshot(store) == before

    result = cli("delete", "--force", attachment_id)
    assert_ok(result)
    assert not blob_path(store, attachment_id).exists()
    assert not sidecar_path(store, attachment_id).exists()


def test_delete_dry_run_deletes_nothing(cli, store, put_blobs):
    (attachment_id,) = put_blobs({"x": b"unreferenced"})
    before = snapshot(store)
    result = cli("delete", "--dry-run", attachment_id)
    assert_ok(result)
    assert snapshot(store) == before
    assert blob_path(store, attachment_id).exists()
    assert attachment_id in result.stdout


# -- list-uncommitted -----------------------------------------------------------------
def iso(epoch_ms: int) -> str:
    moment = datetime.fromtimestamp(epoch_ms / 1000, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{epoch_ms % 1000:03d}Z"


@pytest.fixture
def listed_rows(cli, store, put_blobs):
    a, b = put_blobs({"a.png": png_bytes(5, 6), "b.txt": b"bee"})
    c = sha(b"never landed")
    d = sha(b"committed")
    e = sha(b"forgotten")
    now = now_ms()
    times = {"a": now - 3 * DAY, "b": now - 2 * HOUR, "c": now - 10 * MINUTE}
    write_manifest(store, [
        intent(c, "s1", times["c"]),
        intent(c, "s1", now - 4 * DAY),  # an older refresh: the later time wins
        intent(b, "s2", times["b"]),
        intent(d, "s1", now - 5 * DAY),
        commit_ev(d, "s1", now - 5 * DAY),
        intent(e, "s2", now - 6 * HOUR),
        forget(e, "s2"),
        intent(a, "s1", times["a"]),
    ])
    return {"a": a, "b": b, "c": c, "times": times}


def listing(cli, *args) -> list[str]:
    result = cli("list-uncommitted", "--json", *args)
    assert_ok(result)
    return [row["id"] for row in json.loads(result.stdout)]


def test_list_uncommitted_all_rows_oldest_first(cli, store, listed_rows):
    a, b, c, times = listed_rows["a"], listed_rows["b"], listed_rows["c"], listed_rows["times"]
    result = cli("list-uncommitted", "--json")
    assert_ok(result)
    rows = json.loads(result.stdout)
    assert [(r["id"], r["session_id"], r["intent_at_epoch_ms"]) for r in rows] == [
        (a, "s1", times["a"]), (b, "s2", times["b"]), (c, "s1", times["c"]),
    ]
    by_id = {r["id"]: r for r in rows}
    assert by_id[a]["byte_len"] == len(png_bytes(5, 6))
    assert by_id[a]["media_type"] == "image/png"
    assert by_id[a]["label"] == "a.png"
    assert by_id[a]["bytes_present"] is True
    assert by_id[b]["media_type"] == "text/plain"
    assert by_id[c]["bytes_present"] is False
    assert by_id[c]["byte_len"] is None

    plain = cli("list-uncommitted")
    assert_ok(plain)
    lines = plain.stdout.splitlines()
    assert [line.split("\t")[0] for line in lines] == [a, b, c]
    assert [line.split("\t")[1] for line in lines] == ["s1", "s2", "s1"]
    assert "\x1b[" not in plain.stdout


def test_list_uncommitted_cutoffs_and_session_filter(cli, store, listed_rows):
    a, b, c, times = listed_rows["a"], listed_rows["b"], listed_rows["c"], listed_rows["times"]
    assert listing(cli, "--older-than", "1h") == [a, b]
    assert listing(cli, "--older-than", "1d") == [a]
    assert listing(cli, "--older-than", "7d") == []
    assert listing(cli, "--older-than", "0s") == [a, b, c]
    assert listing(cli, "--before", iso(now_ms() - HOUR)) == [a, b]
    assert listing(cli, "--before", str(now_ms() - DAY)) == [a]
    assert listing(cli, "--before", str(times["b"])) == [a, b]  # at or before
    assert listing(cli, "--before", str(times["b"] - 1)) == [a]
    assert listing(cli, "--session", "s1") == [a, c]
    assert listing(cli, "--session", "s2", "--older-than", "1h") == [b]
    assert listing(cli, "--session", "nobody") == []

    assert_error(cli("list-uncommitted", "--older-than", "1h", "--before", "0"), 2)
    assert_error(cli("list-uncommitted", "--older-than", "soon"), 2, "soon")
    assert_error(cli("list-uncommitted", "--before", "yesterday"), 2, "yesterday")


def test_list_uncommitted_reads_every_lash_sidecar_form(cli, store, put_blobs):
    (x,) = put_blobs({"x.bin": b"later lash form"})
    sidecar_path(store, x).write_text(json.dumps({
        "id": x, "media_type": "image/png", "byte_len": 15, "label": "shot",
        "type_metadata": {"type": "image", "width": 3, "height": 4}, "future_key": [1, 2],
    }), "utf-8")
    write_manifest(store, [intent(x, "s", now_ms() - DAY)])
    result = cli("list-uncommitted", "--json")
    assert_ok(result)
    (row,) = json.loads(result.stdout)
    assert (row["media_type"], row["label"], row["byte_len"]) == ("image/png", "shot", 15)
    result = cli("get", x)
    assert_ok(result)
    assert result.stdout_bytes == b"later lash form"


@pytest.mark.parametrize("json_flag", [True, False], ids=["json", "tsv"])
def test_list_uncommitted_on_a_pipe_prints_what_the_row_by_row_rendering_prints(
        cli, store, put_blobs, monkeypatch, json_flag):
    """Rows without bytes are written by the state cache's SQLite: byte for
    byte what rendering each row in Python prints, for every kind of text."""
    import lashctl.commands.list_uncommitted as command
    from lashctl.backends.manifests.jsonl.cache import ManifestIndex

    (present,) = put_blobs({"here.txt": b"bytes here"})
    now = now_ms()
    monkeypatch.setattr(command, "now_ms", lambda: now)
    sessions = ["plain", 'quote"s', "back\\slash", "tab\there", "caf\u00e9", "\u2028sep", "bidi\u202e",
                "emoji \U0001f600", "del\x7f", "c1\x85", "ctl\x1b[31m", "new\nline", "~ !#$%&'()*+,-./:;<=>?@[]^_`{|}"]
    events = []
    for i, session in enumerate(sessions):
        events.append(intent(sha(b"gone %d" % i), session, now - i * 7_777_777 - i))
    # ages of every shape: days and hours, hours and minutes, seconds, a future intent (clock skew)
    for i, at in enumerate([now - 86_400_000, now - 90_061_001, now - 3_600_000, now - 3_660_000, now - 60_000,
                            now - 61_999, now - 999, now, now + 1, now + 2_500, 0, 253_402_300_799_999]):
        events.append(intent(sha(b"age %d" % i), "ages", at))
    odd = sha(b"own uri")
    events.append({**intent(odd, "uris", now - 5), "canonical_uri": "s3://b/k \u00e9\"\\"})
    events.append({**intent(sha(b"own uri 2"), "uris", now - 6), "canonical_uri": "x-lash:1"})
    events.append(intent(present, "with-bytes", now - 123_456))
    write_manifest(store, events)

    args = ["list-uncommitted"] + (["--json"] if json_flag else [])
    written_by_sqlite = []
    real = ManifestIndex.uncommitted_rendered

    def spy(self, *a):
        rows = real(self, *a)
        if rows is None:
            return None

        def watched():
            for chunk in rows:
                written_by_sqlite.extend(chunk)
                yield chunk

        return watched()

    monkeypatch.setattr(ManifestIndex, "uncommitted_rendered", spy)
    fast = cli(*args)
    assert_ok(fast)
    # Most rows came written (printable ASCII, no bytes); the others came as rows.
    texts = {}  # per session, its oldest row: written (the text) or left to the command (None)
    for item in written_by_sqlite:
        if type(item) is str:
            texts.setdefault(json.loads(item)["session_id"] if json_flag else item.split("\t")[1], item)
        else:
            texts.setdefault(item[1], None)
    # Intents from a clock ahead (past now + 5m) are the command's: it counts them.
    assert [type(i) for i in written_by_sqlite if type(i) is not str and i[1] == "ages"] == [tuple]
    assert texts["plain"] is not None and texts["ages"] is not None
    assert texts["with-bytes"] is None  # its bytes are there: rendered by the command
    assert texts["caf\u00e9"] is None and texts["new\nline"] is None and texts["del\x7f"] is None
    assert (texts["back\\slash"] is None) == (not json_flag)
    monkeypatch.undo()
    monkeypatch.setattr(command, "now_ms", lambda: now)
    monkeypatch.setattr(ManifestIndex, "uncommitted_rendered", lambda self, *a: None)
    slow = cli(*args)
    assert_ok(slow)
    assert fast.stdout_bytes == slow.stdout_bytes
    assert fast.stderr == slow.stderr
    lines = slow.stdout.splitlines()
    assert len(json.loads(slow.stdout) if json_flag else lines) == len(events)
    for extra in (["--older-than", "1h"], ["-s", "caf\u00e9"], ["-s", "plain"], ["--before", "@1"]):
        monkeypatch.undo()
        monkeypatch.setattr(command, "now_ms", lambda: now)
        fast = cli(*args, *extra)
        monkeypatch.setattr(ManifestIndex, "uncommitted_rendered", lambda self, *a: None)
        slow = cli(*args, *extra)
        assert_ok(fast)
        assert (fast.stdout_bytes, fast.stderr) == (slow.stdout_bytes, slow.stderr), extra


@pytest.mark.parametrize("rows_before_failure", [0, 1, 5_000])
def test_a_json_listing_that_fails_is_never_a_whole_document_of_rows(cli, store, monkeypatch, rows_before_failure):
    """A listing whose source fails (a server lost) before anything reached
    stdout prints the one error object README promises; once rows were
    written, the array is left open, so no parser takes the rows for a
    complete listing. Either way: one line on stderr, the failure's exit code."""
    from lashctl.backends.manifests.jsonl.cache import ManifestIndex
    from lashctl.errors import Unavailable

    now = int(time.time() * 1000)
    write_manifest(store, [intent(sha(b"row %d" % i), "s", now - 1_000_000 + i) for i in range(6_000)])
    real = ManifestIndex.uncommitted_rendered

    def failing(self, *a):
        rows = real(self, *a)

        def cut():
            seen = 0
            for chunk in rows:
                if seen + len(chunk) > rows_before_failure:
                    raise Unavailable("the database went away")
                seen += len(chunk)
                yield chunk

        return cut()

    monkeypatch.setattr(ManifestIndex, "uncommitted_rendered", failing)
    result = cli("--json", "list-uncommitted")
    assert result.exit_code == Unavailable.exit_code
    assert result.stderr.strip().count("\n") == 0 and "the database went away" in result.stderr
    if rows_before_failure < 2_000:  # nothing written yet: the error object alone
        document = json.loads(result.stdout)
        assert document["error"].endswith("the database went away") and document["exit_code"] == result.exit_code
    else:
        assert result.stdout.startswith("[{")
        with pytest.raises(json.JSONDecodeError):
            json.loads(result.stdout)


# -- get -------------------------------------------------------------------------------
def test_get_to_a_path_writes_the_file_atomically(cli, store, tmp_path):
    data = os.urandom(3 * 1024 * 1024 + 7)  # more than one read chunk
    attachment_id = ids_out(cli("put", "-s", "s", "-", input=data))[0]
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    target = out_dir / "copy.bin"
    target.write_bytes(b"old content")
    result = cli("get", attachment_id, "-o", str(target))
    assert_ok(result)
    assert result.stdout == ""
    assert target.read_bytes() == data
    assert [p.name for p in out_dir.iterdir()] == ["copy.bin"]

    result = cli("get", "--json", attachment_id, "-o", str(out_dir / "j.bin"))
    assert_ok(result)
    assert json.loads(result.stdout) == {"id": attachment_id, "path": str(out_dir / "j.bin"), "byte_len": len(data)}


def test_get_of_a_corrupted_blob_exits_65_and_leaves_no_output(cli, store, tmp_path):
    data = b"precious bytes that will rot"
    attachment_id = ids_out(cli("put", "-s", "s", "-", input=data))[0]
    path = blob_path(store, attachment_id)
    rotten = bytearray(path.read_bytes())
    rotten[5] ^= 0x01
    path.write_bytes(bytes(rotten))

    out_dir = tmp_path / "out"
    out_dir.mkdir()
    result = cli("get", attachment_id, "-o", str(out_dir / "copy.bin"))
    assert_error(result, 65, attachment_id)
    assert list(out_dir.iterdir()) == []

    result = cli("get", attachment_id, "-o", "-")
    assert_error(result, 65)


def test_get_with_a_missing_sidecar_warns_and_still_outputs_the_bytes(cli, store):
    data = b"bytes without metadata"
    attachment_id = ids_out(cli("put", "-s", "s", "-", input=data))[0]
    sidecar = sidecar_path(store, attachment_id)
    sidecar.unlink()
    result = cli("get", attachment_id)
    assert_ok(result)
    assert result.stdout_bytes == data
    assert str(sidecar) in result.stderr
    assert "warning" in result.stderr


def test_get_with_an_undecodable_sidecar_is_corruption(cli, store):
    attachment_id = ids_out(cli("put", "-s", "s", "-", input=b"meta rot"))[0]
    sidecar_path(store, attachment_id).write_text("{not json", "utf-8")
    result = cli("get", attachment_id)
    assert_error(result, 65, str(sidecar_path(store, attachment_id)))
    assert result.stdout == ""


# -- output forms ---------------------------------------------------------------------
def test_json_before_and_after_the_command(cli, store, tmp_path):
    (source,) = write_inputs(tmp_path / "in", {"note.txt": b"hello\n"})
    for args in (["--json", "put", "-s", "s", str(source)], ["put", "-s", "s", "--json", str(source)]):
        result = cli(*args)
        assert_ok(result)
        records = json.loads(result.stdout)
        assert len(records) == 1
        record = records[0]
        assert record["id"] == sha(b"hello\n")
        assert record["path"] == str(source)
        assert record["byte_len"] == 6
        assert record["media_type"] == "text/plain"
        assert record["label"] == "note.txt"
        assert isinstance(record["deduplicated"], bool)
    for args in (["--json", "list-uncommitted"], ["list-uncommitted", "--json"]):
        result = cli(*args)
        assert_ok(result)
        assert [r["id"] for r in json.loads(result.stdout)] == [sha(b"hello\n")]
    for args in (["--json", "reclaim", "--dry-run"], ["reclaim", "--dry-run", "--json"]):
        result = cli(*args)
        assert_ok(result)
        assert json.loads(result.stdout)["items"] == []


def test_quiet_keeps_stdout_and_silences_stderr(cli, store):
    result = cli("-q", "put", "-s", "s", "-", input=b"quiet")
    assert_ok(result)
    assert result.stdout == sha(b"quiet") + "\n"
    assert result.stderr == ""


def test_put_requires_a_session_and_inputs(cli, store, tmp_path):
    assert_error(cli("put", "-", input=b"x"), 2, "session")
    assert_error(cli("put", "-s", "s"), 2)
    assert_error(cli("put", "-s", "s", str(tmp_path / "missing.bin")), 2, "missing.bin")
    assert files_under(store / "sha256") == []


# -- text from other writers, shown to people --------------------------------------
HOSTILE_LABEL = "red\x1b[31m\u202eevil\nforged"
ESCAPED_LABEL = "red\\x1b[31m\\u202eevil\\nforged"
RAW_CONTROLS = ("\x1b", "\u202e", "\x9b", "\u2028")


def assert_no_raw_controls(text: str) -> None:
    for char in RAW_CONTROLS:
        assert char not in text, (char, text)


def test_a_hostile_label_is_escaped_in_show_ls_and_list_uncommitted(cli, store):
    result = cli("put", "-s", "s", "--label", HOSTILE_LABEL, "-", input=b"labelled")
    assert_ok(result)
    attachment_id = ids_out(result)[0]

    shown = cli("show", attachment_id)
    assert_ok(shown)
    assert_no_raw_controls(shown.stdout)
    assert f"label:      {ESCAPED_LABEL}\n" in shown.stdout

    for command in (["ls"], ["list-uncommitted"]):
        listed = cli(*command)
        assert_ok(listed)
        assert_no_raw_controls(listed.stdout)
        lines = listed.stdout.splitlines()
        assert len(lines) == 1, listed.stdout  # one record per line
        assert ESCAPED_LABEL in lines[0].split("\t")

    # Machine output stays exact.
    document = json.loads(cli("--json", "ls").stdout)
    assert document[0]["label"] == HOSTILE_LABEL


def test_a_session_id_with_a_newline_cannot_forge_a_verdict_line_in_show(cli, store, put_blobs):
    (x,) = put_blobs({"x": b"x bytes"})
    forged = "evil\nverdict:    kept because session admin committed it"
    write_manifest(store, [intent(x, forged, now_ms() - 3 * DAY)])
    result = cli("show", x)
    assert_ok(result)
    verdicts = [line for line in result.stdout.splitlines() if line.startswith("verdict:")]
    assert len(verdicts) == 1, result.stdout
    assert verdicts[0].startswith("verdict:    orphan"), result.stdout
    assert "evil\\nverdict:" in result.stdout
    assert json.loads(cli("--json", "show", x).stdout)["rows"][0]["session_id"] == forged


def test_delete_refusal_shows_a_hostile_session_escaped_on_one_line(cli, store, put_blobs):
    (x,) = put_blobs({"x": b"x bytes"})
    write_manifest(store, [intent(x, "s\x1b]0;pwned\x07\nlashctl: ok", now_ms())])
    result = cli("delete", x)
    assert_error(result, 4, "s\\x1b]0;pwned\\x07\\nlashctl: ok")
    assert result.stderr.count("\n") == 1, result.stderr
    assert_no_raw_controls(result.stderr)
    assert blob_path(store, x).exists()


def test_reclaim_and_list_uncommitted_show_hostile_sessions_escaped(cli, store, put_blobs):
    x, y = put_blobs({"x": b"x bytes", "y": b"y bytes"})
    old = now_ms() - 3 * DAY
    write_manifest(store, [intent(x, "a\u202eb", old), intent(y, "c\td\u2028e", old)])
    listed = cli("list-uncommitted")
    assert_ok(listed)
    assert_no_raw_controls(listed.stdout)
    assert [line.split("\t")[1] for line in listed.stdout.splitlines()] == ["a\\u202eb", "c\\td\\u2028e"]
    swept = cli("reclaim", "--dry-run")
    assert_ok(swept)
    assert_no_raw_controls(swept.stdout)
    assert sorted(line.split("\t")[3] for line in swept.stdout.splitlines()) == ["a\\u202eb", "c\\td\\u2028e"]


def test_error_messages_show_control_characters_escaped_on_one_line(cli, store, tmp_path):
    missing = str(tmp_path / "no\x1b[2Jsuch\nlashctl: error: forged")
    result = cli("put", "-s", "s", missing)
    assert_error(result, 2, "no\\x1b[2Jsuch\\nlashctl: error: forged")
    assert result.stderr.count("\n") == 1, result.stderr
    assert_no_raw_controls(result.stderr)
    # Input quoted in a usage error is escaped once, as typed.
    result = cli("reclaim", "--older-than", "\x1b[2J")
    assert_error(result, 2, "--older-than '\\x1b[2J' is not a duration")


def test_summaries_and_warnings_show_control_characters_escaped(capsys):
    from lashctl.render import UI

    ui = UI()
    ui.info("info \x1b[31m\u202e")
    ui.warn("warn \x9b\u2028")
    UI.error("error \x00\n")
    ui.line("line \x1b\\")
    out, err = capsys.readouterr()
    assert err == (
        "info \\x1b[31m\\u202e\n"
        "lashctl: warning: warn \\x9b\\u2028\n"
        "lashctl: error: error \\x00\\n\n"
    )
    assert out == "line \\x1b\\\\\n"


def test_manifest_log_stays_exact_json(cli, store, put_blobs):
    (x,) = put_blobs({"x": b"x bytes"})
    session = "a\u202eb\u2028c\x9bd"
    write_manifest(store, [intent(x, session, now_ms())])
    result = cli("manifest", "log", "--op", "intent")
    assert_ok(result)
    assert json.loads(result.stdout)["session_id"] == session


@pytest.mark.parametrize("session", ["a\u009bb", "a\x85b", "a\u202eb", "a\u2066b", "a\u200fb", "a\u2028b", "a\u2029b"],
                         ids=lambda s: f"U+{ord(s[1]):04X}")
def test_a_session_with_c1_bidi_or_separator_characters_is_a_usage_error(cli, store, session):
    result = cli("put", "-s", session, "-", input=b"x")
    assert_error(result, 2, "--session")
    assert result.stderr.count("\n") == 1, result.stderr
    assert_no_raw_controls(result.stderr)
    assert files_under(store / "sha256") == []
    assert_error(cli("put", "-", input=b"x", env={"LASHCTL_SESSION": session}), 2, "--session")
    assert_error(cli("commit", "-s", session, sha(b"x")), 2, "--session")
    assert not manifest_file(store).exists()


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_or_infinity_in_a_manifest_line_is_corruption(cli, store, put_blobs, constant):
    (x,) = put_blobs({"x": b"x bytes"})
    bad = event_line(intent(x, "A", now_ms()))[:-1] + f',"extra":{constant}}}'
    _corrupt_store(store, put_blobs, bad)
    for command in (["manifest", "log"], ["list-uncommitted"], ["show", x]):
        result = cli(*command)
        assert_error(result, 65, "manifest.jsonl:3", constant)
        assert "extra" not in result.stdout  # manifest log stops at the line, like any malformed one


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "Infinity", "-1", "-0.5"])
def test_a_non_finite_or_negative_lock_timeout_is_a_usage_error(cli, store, value):
    for result in (
        cli("--lock-timeout", value, "put", "-s", "s", "-", input=b"x"),
        cli("put", "-s", "s", "-", input=b"x", env={"LASHCTL_LOCK_TIMEOUT": value}),
    ):
        assert_error(result, 2, "--lock-timeout")
        assert result.stderr.count("\n") == 1, result.stderr
    assert files_under(store / "sha256") == []


def test_unusable_cache_directory_is_noted_once_only_with_verbose(cli, store, tmp_path):
    cache = Path(os.environ["LASHCTL_CACHE_DIR"])
    os.chmod(cache, 0o777)  # others could plant files there: the cache is not used
    sources = write_inputs(tmp_path / "in", {"a": b"note me", "b": b"and me"})
    a, b = ids_out(cli("put", "-s", "s1", *map(str, sources)))
    quiet = cli("commit", "-s", "s1", a[:8])  # a prefix: two lookups open the cache
    assert_ok(quiet)
    assert "note" not in quiet.stderr
    loud = cli("-v", "commit", "-s", "s1", b[:8])
    assert_ok(loud)
    notes = [line for line in loud.stderr.splitlines() if line.startswith("lashctl: note:")]
    assert len(notes) == 1 and "writable by others" in notes[0], loud.stderr
    assert not (cache / "index").exists()
    assert store.joinpath("manifest.jsonl").read_text().count('"op":"commit"') == 2


# -- every record whole: its --json item, its line on a pipe, its table ------------------
# Each listing command's record is pinned here in all three forms, so that the
# declaration behind them can change without the output changing.
OLD_MS = 1_700_000_000_000  # 2023-11-14T22:13:20.000Z, a blob's pinned modification time


class _Terminal:
    """A stream that says it is a terminal and is otherwise the stream."""

    def __init__(self, stream) -> None:
        self._stream = stream

    def isatty(self) -> bool:
        return True

    def __getattr__(self, name):
        return getattr(self._stream, name)


def drawn(cli, monkeypatch, *args):
    """Run ``args`` with stdout a terminal; the result and each table handed to Rich,
    as its columns (name, kind, drop, min_width, base) and raw rows."""
    import sys

    from lashctl import render

    tables = []

    class TerminalStdout:
        def __getattr__(self, name):
            value = getattr(sys, name)
            return _Terminal(value) if name == "stdout" else value

    def capture(cols, rows, title, full_ids):
        tables.append(([(c.name, c.kind, c.drop, c.min_width, c.base) for c in cols], [list(r) for r in rows]))

    with monkeypatch.context() as patch:
        patch.setattr(render, "sys", TerminalStdout())
        patch.setattr(render, "_print_table", capture)
        result = cli(*args)
    return result, tables


def tsv(result) -> list[list[str]]:
    return [line.split("\t") for line in result.stdout.splitlines()]


def pin_mtime(store: Path, attachment_id: str, epoch_ms: int = OLD_MS) -> None:
    os.utime(blob_path(store, attachment_id), ns=(epoch_ms * 1_000_000, epoch_ms * 1_000_000))


RUN_FIELDS = ["lashctl_version", "store", "manifest", "started_at", "finished_at"]


def test_reclaim_record_whole(cli, store, put_blobs, monkeypatch):
    orphan, shared, broken = put_blobs({"o.bin": b"orphan bytes", "s.bin": b"shared", "b.bin": b"broken!"})
    missing = sha(b"never landed")
    now = now_ms()
    write_manifest(store, [
        intent(orphan, "A", now - 3 * DAY), intent(orphan, "B", now - 3 * DAY),
        intent(shared, "A", now - 2 * DAY), intent(shared, "B", now - 2 * DAY), commit_ev(shared, "B", now - 2 * DAY),
        intent(broken, "A", now - 2 * DAY),
        intent(missing, "A", now - DAY),
    ])
    from lashctl.backends.blobs.localfs import BlobStore
    from lashctl.errors import StoreIOError

    original = BlobStore.delete

    def flaky_delete(self, attachment_id):
        if attachment_id == broken:
            raise StoreIOError("cannot delete it: Permission denied")
        return original(self, attachment_id)

    monkeypatch.setattr(BlobStore, "delete", flaky_delete)
    expected = {
        orphan: {"id": orphan, "action": "reclaim", "sessions": ["A", "B"], "byte_len": 12, "bytes_present": True,
                 "reason": "orphan: no live row", "error": None},
        shared: {"id": shared, "action": "release", "sessions": ["A"], "byte_len": 6, "bytes_present": True,
                 "reason": "kept: session B committed it", "error": None},
        broken: {"id": broken, "action": "reclaim", "sessions": ["A"], "byte_len": 7, "bytes_present": True,
                 "reason": "orphan: no live row", "error": None},
        missing: {"id": missing, "action": "reclaim", "sessions": ["A"], "byte_len": 0, "bytes_present": False,
                  "reason": "orphan: no live row; bytes already gone", "error": None},
    }
    dry = cli("reclaim", "-n", "--older-than", "1h", "--json")
    assert_ok(dry)
    document = json.loads(dry.stdout)
    assert list(document) == RUN_FIELDS + ["dry_run", "cutoff_epoch_ms", "cutoff", "scanned_intents",
                                           "blobs_reclaimed", "bytes_freed", "rows_released", "failures", "items"]
    order = [i["id"] for i in document["items"]]
    assert document["items"] == [expected[i] for i in order] and sorted(order) == sorted(expected)
    assert dry.stderr.startswith("dry run: would reclaim 3 blob(s), 19 B; released 1 row(s); scanned ")

    piped = cli("reclaim", "-n", "--older-than", "1h")
    assert tsv(piped) == [[i, e["action"], str(e["byte_len"]) if e["action"] == "reclaim" else "-",
                           ", ".join(e["sessions"]), e["reason"]] for i, e in ((i, expected[i]) for i in order)]

    result, tables = drawn(cli, monkeypatch, "reclaim", "--older-than", "1h")
    assert result.exit_code == 5, result.stderr
    expected[broken].update(action="failed", error="cannot delete it: Permission denied")
    ((columns, rows),) = tables
    assert columns == [("id", "id", 0, 8, None), ("action", "fixed", 0, 8, None), ("size", "bytes", 2, 8, None),
                       ("sessions", "text", 3, 8, None), ("reason", "text", 4, 12, None)]
    assert rows == [[i, e["action"], e["byte_len"] if e["action"] == "reclaim" else None, ", ".join(e["sessions"]),
                     e["error"] or e["reason"]] for i, e in ((i, expected[i]) for i in order)]
    assert "lashctl: error: sweep finished with 1 failure(s); rows kept for the next sweep: " + broken in result.stderr


def test_gc_record_whole(cli, store, put_blobs, monkeypatch):
    kept, loose, broken = put_blobs({"k.bin": b"kept", "l.bin": b"loose bytes", "b.bin": b"broken"})
    for attachment_id in (kept, loose, broken):
        pin_mtime(store, attachment_id)
    write_manifest(store, [intent(kept, "A", now_ms() - DAY)])
    litter = store / "tmp" / "put-abandoned.tmp"
    litter.parent.mkdir(parents=True, exist_ok=True)
    litter.write_bytes(b"half")
    os.utime(litter, ns=(OLD_MS * 1_000_000,) * 2)
    from lashctl.backends.blobs.localfs import BlobStore
    from lashctl.errors import StoreIOError

    original = BlobStore.delete

    def flaky_delete(self, attachment_id):
        if attachment_id == broken:
            raise StoreIOError("cannot delete it: Permission denied")
        return original(self, attachment_id)

    monkeypatch.setattr(BlobStore, "delete", flaky_delete)
    dry = cli("gc", "-n", "--json")
    assert_ok(dry)
    document = json.loads(dry.stdout)
    assert list(document) == RUN_FIELDS + ["dry_run", "cutoff_epoch_ms", "cutoff", "blobs_scanned", "blobs_deleted",
                                           "litter_deleted", "bytes_freed", "failures", "items"]
    blobs = sorted([(loose, 11), (broken, 6)])
    expected = [{"path": str(blob_path(store, i)), "id": i, "kind": "blob", "action": "delete", "byte_len": n,
                 "reason": "unreferenced: no manifest row", "error": None} for i, n in blobs]
    expected.append({"path": str(litter), "id": None, "kind": "staging", "action": "delete", "byte_len": 4,
                     "reason": document["items"][-1]["reason"], "error": None})
    assert document["items"] == expected
    assert (document["blobs_scanned"], document["blobs_deleted"], document["litter_deleted"]) == (3, 2, 1)

    piped = cli("gc", "-n")
    assert tsv(piped) == [[e["path"], e["kind"], e["action"], str(e["byte_len"]), e["reason"]] for e in expected]

    result, tables = drawn(cli, monkeypatch, "gc")
    assert result.exit_code == 5, result.stderr
    ((columns, rows),) = tables
    assert columns == [("path", "path", 0, 20, str(store)), ("kind", "fixed", 0, 8, None),
                       ("action", "fixed", 0, 8, None), ("size", "bytes", 2, 8, None), ("reason", "text", 1, 12, None)]
    failed = {str(blob_path(store, broken)): "cannot delete it: Permission denied"}
    assert rows == [[e["path"], e["kind"], "failed" if e["path"] in failed else "delete", e["byte_len"],
                     failed.get(e["path"], e["reason"])] for e in expected]
    assert "lashctl: error: gc finished with 1 failure(s): " + str(blob_path(store, broken)) in result.stderr


def test_delete_record_whole(cli, store, put_blobs, monkeypatch):
    (present,) = put_blobs({"p.bin": b"present"})
    absent = sha(b"absent")
    write_manifest(store, [intent(present, "s2", now_ms()), intent(present, "s1", now_ms())])
    dry = cli("delete", "-n", "--force", "--json", present, absent)
    assert_ok(dry)
    document = json.loads(dry.stdout)
    assert list(document) == RUN_FIELDS + ["dry_run", "blobs_deleted", "bytes_freed", "items"]
    assert (document["dry_run"], document["blobs_deleted"], document["bytes_freed"]) == (True, 1, 7)
    assert document["items"] == [
        {"id": present, "existed": True, "byte_len": 7, "sessions": ["s1", "s2"]},
        {"id": absent, "existed": False, "byte_len": 0, "sessions": []},
    ]
    piped = cli("delete", "-n", "--force", present, absent)
    assert tsv(piped) == [[present, "would delete", "7", "s1, s2"], [absent, "absent", "-", "-"]]
    assert piped.stderr == "would delete 1 blob(s), 7 B\n"
    result, tables = drawn(cli, monkeypatch, "delete", "--force", present, absent)
    assert_ok(result)
    assert tables == [(
        [("id", "id", 0, 8, None), ("action", "fixed", 0, 8, None), ("size", "bytes", 2, 8, None),
         ("referenced by", "text", 1, 8, None)],
        [[present, "deleted", 7, "s1, s2"], [absent, "absent", None, None]],
    )]
    assert result.stderr == "deleted 1 blob(s), 7 B\n"


def test_commit_record_whole(cli, store, tmp_path, monkeypatch):
    a, b = ids_out(cli("put", "-s", "s1", "-", input=b"aaa")) + ids_out(cli("put", "-s", "s1", "-", input=b"bbb"))
    nobody = sha(b"nobody")
    assert_ok(cli("commit", "-s", "s1", b))
    result = cli("commit", "-s", "s1", "--json", a, b, nobody)
    assert result.exit_code == 3
    assert json.loads(result.stdout) == [
        {"id": a, "session_id": "s1", "status": "committed"},
        {"id": b, "session_id": "s1", "status": "already_committed"},
        {"id": nobody, "session_id": "s1", "status": "no_intent"},
    ]
    piped = cli("commit", "-s", "s1", a, b)
    assert_ok(piped)
    assert tsv(piped) == [[a, "s1", "already_committed"], [b, "s1", "already_committed"]]
    assert piped.stderr == "committed 0 row(s) for session s1\n"
    result, tables = drawn(cli, monkeypatch, "commit", "-s", "s1", nobody)
    assert result.exit_code == 3
    assert tables == [([("id", "id", 0, 8, None), ("session", "text", 0, 8, None), ("status", "fixed", 0, 8, None)],
                       [[nobody, "s1", "no_intent"]])]


def test_ls_record_whole(cli, store, tmp_path, monkeypatch):
    (png,) = ids_out(cli("put", "-s", "s1", "-s", "s1", str(write_inputs(tmp_path / "in", {"p.png": png_bytes(2, 3)})[0])))
    (raw,) = ids_out(cli("put", "-s", "s2", "-", input=b"raw"))
    assert_ok(cli("commit", "-s", "s1", png))
    pin_mtime(store, png)
    pin_mtime(store, raw, OLD_MS + 1)
    result = cli("ls", "--json")
    assert_ok(result)
    expected = sorted([
        {"id": png, "byte_len": len(png_bytes(2, 3)), "media_type": "image/png", "label": "p.png",
         "state": "committed", "sessions": ["s1"], "mtime_epoch_ms": OLD_MS, "mtime": "2023-11-14T22:13:20.000Z"},
        {"id": raw, "byte_len": 3, "media_type": "application/octet-stream", "label": None,
         "state": "uncommitted", "sessions": ["s2"], "mtime_epoch_ms": OLD_MS + 1, "mtime": "2023-11-14T22:13:20.001Z"},
    ], key=lambda e: e["id"])
    assert json.loads(result.stdout) == expected
    piped = cli("ls")
    assert tsv(piped) == [[e["id"], str(e["byte_len"]), e["media_type"], e["label"] or "-", e["state"], e["mtime"]]
                          for e in expected]
    result, tables = drawn(cli, monkeypatch, "ls")
    assert_ok(result)
    assert tables == [(
        [("id", "id", 0, 8, None), ("size", "bytes", 0, 8, None), ("media type", "text", 2, 10, None),
         ("label", "text", 1, 8, None), ("state", "fixed", 0, 8, None), ("modified", "fixed", 3, 8, None)],
        [[e["id"], e["byte_len"], e["media_type"], e["label"], e["state"], e["mtime"]] for e in expected],
    )]
    assert result.stderr == f"2 blob(s), {len(png_bytes(2, 3)) + 3} B\n"


def test_list_uncommitted_record_whole(cli, store, put_blobs, monkeypatch):
    (a,) = put_blobs({"a.png": png_bytes(5, 6)})
    gone = sha(b"gone")
    now = now_ms()
    write_manifest(store, [intent(a, "s1", now - 3 * DAY), intent(gone, "s2", now - 2 * HOUR - 5 * MINUTE)])
    result = cli("list-uncommitted", "--json")
    assert_ok(result)
    items = json.loads(result.stdout)
    ages = [item.pop("age_ms") for item in items]
    assert 3 * DAY <= ages[0] < 3 * DAY + MINUTE and 125 * MINUTE <= ages[1] < 126 * MINUTE
    expected = [
        {"id": a, "session_id": "s1", "canonical_uri": "sha256:" + a, "intent_at_epoch_ms": now - 3 * DAY,
         "intent_at": iso(now - 3 * DAY), "byte_len": len(png_bytes(5, 6)), "media_type": "image/png",
         "label": "a.png", "bytes_present": True},
        {"id": gone, "session_id": "s2", "canonical_uri": "sha256:" + gone,
         "intent_at_epoch_ms": now - 125 * MINUTE, "intent_at": iso(now - 125 * MINUTE), "byte_len": None,
         "media_type": None, "label": None, "bytes_present": False},
    ]
    assert items == expected
    piped = cli("list-uncommitted")
    assert tsv(piped) == [
        [a, "s1", iso(now - 3 * DAY), "3d", str(len(png_bytes(5, 6))), "image/png", "a.png", "present"],
        [gone, "s2", iso(now - 125 * MINUTE), "2h5m", "-", "-", "-", "missing"],
    ]
    assert piped.stderr == "2 uncommitted row(s)\n"
    result, tables = drawn(cli, monkeypatch, "list-uncommitted", "--older-than", "1h")
    assert_ok(result)
    assert tables == [(
        [("id", "id", 0, 8, None), ("session", "text", 0, 8, None), ("intent at", "fixed", 7, 8, None),
         ("age", "fixed", 2, 8, None), ("size", "bytes", 4, 8, None), ("media type", "text", 6, 10, None),
         ("label", "text", 5, 8, None), ("bytes", "fixed", 3, 8, None)],
        [[a, "s1", iso(now - 3 * DAY), "3d", len(png_bytes(5, 6)), "image/png", "a.png", "present"],
         [gone, "s2", iso(now - 125 * MINUTE), "2h5m", None, None, None, "missing"]],
    )]
    assert result.stderr.startswith("2 uncommitted row(s) with intent at or before ")


@pytest.mark.parametrize("command", ["verify", "stats", "gc"])
def test_a_file_a_writer_removes_during_the_scan_is_not_an_error(cli, store, put_blobs, monkeypatch, command):
    """verify and stats take no lock: a put's staging file or a sweep's
    sidecar that vanishes between the directory listing and its stat is
    simply gone, not an I/O error."""
    from lashctl.backends.blobs.localfs import BlobStore

    (orphan,) = put_blobs({"o.bin": b"orphan sidecar"})
    blob_path(store, orphan).unlink()  # its sidecar is left: an orphan the scan stats
    (store / "tmp").mkdir(exist_ok=True)
    (store / "tmp" / "put-1.part").write_bytes(b"staging")
    doomed = [store / "tmp" / "put-1.part", sidecar_path(store, orphan)]
    real = BlobStore._scan

    def scan_then_lose(fd, where):
        entries = real(fd, where)
        for path in doomed:
            if path.parent == Path(where) and path.exists():
                path.unlink()  # a writer beside the scan
        return entries

    monkeypatch.setattr(BlobStore, "_scan", staticmethod(scan_then_lose))
    result = cli(command, *(["--dry-run"] if command == "gc" else []))
    assert result.exit_code in (0, 4), result.stderr  # gc may refuse an empty manifest; never exit 1
    assert "No such file" not in result.stderr and "Traceback" not in result.stderr


def test_verify_names_an_orphan_sidecars_id(cli, store, put_blobs):
    (orphan,) = put_blobs({"o.bin": b"orphan sidecar"})
    blob_path(store, orphan).unlink()
    document = json.loads(cli("verify", "--json").stdout)
    assert [(f["kind"], f["id"]) for f in document["findings"]] == [("orphan-sidecar-file", orphan)]


def test_verify_record_whole(cli, store, put_blobs, monkeypatch):
    good, bare = put_blobs({"g.bin": b"good", "b.bin": b"bare"})
    sidecar_path(store, bare).unlink()
    stray = store / "sha256" / "zz"
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_bytes(b"stray")
    write_manifest(store, [intent(good, "s", now_ms()), commit_ev(good, "s", now_ms()),
                           intent(bare, "s", now_ms())])
    result = cli("verify", "--json")
    assert result.exit_code in (0, 65)
    document = json.loads(result.stdout)
    assert list(document) == RUN_FIELDS + ["fix", "clean", "blobs_checked", "bytes_checked", "errors", "warnings",
                                           "repairs", "findings"]
    findings = document["findings"]
    assert findings and all(sorted(f) == ["id", "kind", "message", "path", "repair", "severity"] for f in findings)
    assert {(f["path"], f["id"]) for f in findings} >= {(str(sidecar_path(store, bare)), bare)}
    piped = cli("verify")
    assert tsv(piped) == [[f["severity"], f["kind"], f["path"] or "-", f["message"], f["repair"] or "-"]
                          for f in findings]
    result, tables = drawn(cli, monkeypatch, "verify", "--fix")
    assert tables and tables[0][0] == [
        ("severity", "fixed", 0, 8, None), ("kind", "fixed", 0, 8, None), ("path", "path", 0, 20, str(store)),
        ("problem", "text", 1, 16, None), ("repair", "text", 2, 8, None)]
    repaired = [row for row in tables[0][1] if row[4] is not None]
    assert repaired and all(f"repaired {row[2]}: {row[4]}" in result.stderr for row in repaired)
    assert [row[:4] for row in tables[0][1]] == [[f["severity"], f["kind"], f["path"], f["message"]]
                                                 for f in findings]


def test_put_record_whole(cli, store, tmp_path, monkeypatch):
    png, text = write_inputs(tmp_path / "in", {"p.png": png_bytes(4, 5), "t.txt": b"text"})
    result = cli("put", "-s", "s", "--json", str(png), str(text), "-", input=b"text")
    assert_ok(result)
    p, t = sha(png_bytes(4, 5)), sha(b"text")
    assert json.loads(result.stdout) == [
        {"id": p, "path": str(png), "byte_len": len(png_bytes(4, 5)), "media_type": "image/png", "label": "p.png",
         "width": 4, "height": 5, "deduplicated": False},
        {"id": t, "path": str(text), "byte_len": 4, "media_type": "text/plain", "label": "t.txt",
         "width": None, "height": None, "deduplicated": False},
        {"id": t, "path": "-", "byte_len": 4, "media_type": "application/octet-stream", "label": None,
         "width": None, "height": None, "deduplicated": True},
    ]
    result, tables = drawn(cli, monkeypatch, "put", "-s", "s", str(png), str(text))
    assert_ok(result)
    assert tables == [] and result.stdout == f"{p}\n{t}\n"
    assert result.stderr == f"stored 2 blob(s), {len(png_bytes(4, 5)) + 4} B (2 already present) for session s\n"


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
        "id": p, "blob_path": str(blob_path(store, p)), "sidecar_path": str(sidecar_path(store, p)),
        "bytes_present": True, "byte_len": size, "size_on_disk": document["size_on_disk"],
        "mtime_epoch_ms": OLD_MS, "mtime": "2023-11-14T22:13:20.000Z", "metadata": meta,
        "media_type": "image/png", "sidecar_problem": None,
        "rows": [
            {"session_id": "s1", "canonical_uri": "sha256:" + p, "intent_at_epoch_ms": now - 2 * DAY,
             "intent_at": iso(now - 2 * DAY), "committed_at_epoch_ms": None, "committed_at": None},
            {"session_id": "s2", "canonical_uri": "sha256:" + p, "intent_at_epoch_ms": now - DAY,
             "intent_at": iso(now - DAY), "committed_at_epoch_ms": now - HOUR, "committed_at": iso(now - HOUR)},
        ],
        "verdict": {"state": "kept", "reason": f"kept because session s2 committed it at {iso(now - HOUR)}"},
    }
    assert list(document) == ["id", "blob_path", "sidecar_path", "bytes_present", "byte_len", "size_on_disk",
                              "mtime_epoch_ms", "mtime", "metadata", "media_type", "sidecar_problem", "rows", "verdict"]
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


def test_stats_record_whole(cli, store, put_blobs, monkeypatch):
    kept, orphan, loose = put_blobs({"k.bin": b"kept", "o.bin": b"orphan", "l.bin": b"loose!!"})
    now = now_ms()
    write_manifest(store, [intent(kept, "s", now - 2 * DAY), commit_ev(kept, "s", now - DAY),
                           intent(orphan, "s", now - 2 * DAY), intent(sha(b"gone"), "s", now - 2 * DAY)])
    result = cli("stats", "--json")
    assert_ok(result)
    document = json.loads(result.stdout)
    assert document == {
        "blobs": 3, "blob_bytes": 17,
        "blobs_by_state": {"committed": 1, "uncommitted": 1, "unmanaged": 1},
        "bytes_by_state": {"committed": 4, "uncommitted": 6, "unmanaged": 7},
        "rows_committed": 1, "rows_uncommitted": 2, "committed_rows_missing_bytes": 0,
        "uncommitted_rows_missing_bytes": 1, "orphans_reclaimable": 1, "orphan_bytes_reclaimable": 6,
        "unmanaged_blobs": 1, "unmanaged_bytes": 7, "staging_files": 0, "staging_bytes": 0, "stray_files": 0,
        "orphan_sidecars": 0, "manifest_lines": document["manifest_lines"],
        "manifest_lines_after_compaction": document["manifest_lines_after_compaction"], "manifest_torn_tail": False,
    }
    assert list(document) == [
        "blobs", "blob_bytes", "blobs_by_state", "bytes_by_state", "rows_committed", "rows_uncommitted",
        "committed_rows_missing_bytes", "uncommitted_rows_missing_bytes", "orphans_reclaimable",
        "orphan_bytes_reclaimable", "unmanaged_blobs", "unmanaged_bytes", "staging_files", "staging_bytes",
        "stray_files", "orphan_sidecars", "manifest_lines", "manifest_lines_after_compaction", "manifest_torn_tail"]
    lines, compacted = str(document["manifest_lines"]), str(document["manifest_lines_after_compaction"])
    rows = [
        ["blobs", "3", "17"], ["  committed", "1", "4"], ["  uncommitted", "1", "6"], ["  unmanaged", "1", "7"],
        ["rows committed", "1", "-"], ["rows uncommitted", "2", "-"], ["committed rows missing bytes", "0", "-"],
        ["uncommitted rows missing bytes", "1", "-"], ["orphans reclaimable now (24h grace)", "1", "6"],
        ["staging litter", "0", "0"], ["stray files", "0", "-"], ["sidecars without a blob", "0", "-"],
        ["manifest lines", lines, "-"], ["  after compaction", compacted, "-"],
    ]
    piped = cli("stats")
    assert tsv(piped) == rows
    result, tables = drawn(cli, monkeypatch, "stats")
    assert_ok(result)
    assert tables == [([("what", "text", 0, 8, None), ("count", "count", 0, 8, None), ("bytes", "bytes", 0, 8, None)],
                       [[w, int(c), None if b == "-" else int(b)] for w, c, b in rows])]


def test_delete_of_several_ids_deletes_nothing_when_one_shard_is_unsafe(cli, store, tmp_path):
    ids = []
    for n in range(40):  # ids in at least two shards
        (tmp_path / f"f{n}").write_bytes(f"unreferenced {n}".encode())
        ids.append(sha(f"unreferenced {n}".encode()))
        if len({i[:2] for i in ids}) >= 2:
            break
    first, last = sorted(ids)[0], sorted(ids)[-1]
    for n in range(len(ids)):
        assert cli("put", "-s", "s", str(tmp_path / f"f{n}")).exit_code == 0
    (store / "manifest.jsonl").write_text('{"op":"header","format":"lashctl-manifest","version":1}\n')
    shard = store / "sha256" / last[:2]
    outside = tmp_path / "outside"
    shard.rename(outside)
    shard.symlink_to(outside)
    result = cli("delete", first, last)
    assert result.exit_code == 65
    assert blob_path(store, first).is_file()  # nothing was deleted
    assert (outside / last).is_file()


@pytest.mark.parametrize("limit, stats", [(3, 6), (2, 0)])  # under the bound: a look before and after the rows
def test_verify_rechecks_a_bounded_number_of_passing_findings(cli, store, monkeypatch, limit, stats):
    """Rows whose bytes are missing are checked once more (a sweep beside
    verify) only up to a bound: a store of a million such rows is not a
    race, and is reported as seen without a million more requests."""
    from lashctl import inspect
    from lashctl.backends.blobs.localfs import BlobStore

    now = now_ms()
    lost = [sha(b"lost %d" % n) for n in range(3)]
    write_manifest(store, [e for i in lost for e in (intent(i, "s", now - 5), commit_ev(i, "s", now - 4))])
    calls = []
    real = BlobStore.stat

    def counted(self, attachment_id, sidecar=False):
        calls.append(attachment_id)
        return real(self, attachment_id, sidecar)

    monkeypatch.setattr(BlobStore, "stat", counted)
    monkeypatch.setattr(inspect, "_SETTLE_LIMIT", limit)
    document = json.loads(cli("--json", "verify").stdout)
    assert sorted((f["kind"], f["id"]) for f in document["findings"]) == sorted(
        ("committed-bytes-missing", i) for i in lost)
    assert len([c for c in calls if c in lost]) == stats


def test_verify_keeps_its_report_when_a_shard_it_rechecks_is_unsafe(cli, store, put_blobs, tmp_path):
    """A committed blob whose shard directory became a symlink: the report
    names the stray shard and the missing bytes; the final re-check, which
    may not look through the link, keeps what it cannot check."""
    (kept,) = put_blobs({"k.bin": b"kept and committed"})
    now = now_ms()
    write_manifest(store, [intent(kept, "s", now - 5), commit_ev(kept, "s", now - 4)])
    shard = store / "sha256" / kept[:2]
    outside = tmp_path / "outside"
    shard.rename(outside)
    shard.symlink_to(outside)
    result = cli("--json", "verify")
    assert result.exit_code == 65, result.stderr
    kinds = {(f["kind"], f["id"]) for f in json.loads(result.stdout)["findings"]}
    assert ("committed-bytes-missing", kept) in kinds and ("stray-file", None) in kinds


@pytest.mark.parametrize("new_shard", [False, True], ids=["shard there", "new shard"])
def test_verify_recheck_sees_bytes_a_put_lands_while_it_reads_the_manifest(cli, store, put_blobs, monkeypatch,
                                                                            new_shard):
    """A put writes its intent, then its bytes; a commit follows. When they
    land while verify's re-check reads the manifest, the store is looked at
    once more after that read: no committed-bytes-missing for bytes that are
    there, even in a shard directory that did not exist before."""
    import shutil

    from lashctl.backends.manifests.jsonl.manifest import JsonlManifest

    (late,) = put_blobs({"late.bin": b"landing late"})
    blob = blob_path(store, late)
    held = blob.read_bytes()
    held_sidecar = sidecar_path(store, late).read_bytes()
    blob.unlink()  # a put in flight: its sidecar is there, its bytes not yet
    if new_shard:
        shutil.rmtree(blob.parent)  # nothing of it yet: its shard is new
    now = now_ms()
    write_manifest(store, [intent(late, "s", now - 5)])
    real = JsonlManifest.reading
    calls = []

    def reading(self, *a, **k):
        calls.append(1)
        if len(calls) == 2:  # the re-check's fresh read: the put lands, and is committed
            blob.parent.mkdir(exist_ok=True)
            sidecar_path(store, late).write_bytes(held_sidecar)
            blob.write_bytes(held)
            with open(store / "manifest.jsonl", "a") as log:
                log.write(json.dumps(commit_ev(late, "s", now - 1)) + "\n")
        return real(self, *a, **k)

    monkeypatch.setattr(JsonlManifest, "reading", reading)
    result = cli("--json", "verify")
    assert len(calls) == 2
    assert result.exit_code == 0, result.stdout
    assert json.loads(result.stdout)["errors"] == 0


@pytest.mark.parametrize("args", [["list-uncommitted"], ["--json", "list-uncommitted"], ["ls"],
                                  ["manifest", "log"]], ids=["list-uncommitted", "json", "ls", "manifest log"])
def test_a_session_filter_that_is_not_utf8_is_a_usage_error(cli, put_blobs, args):
    """A session filter from argv bytes that are not UTF-8 (Python hands them
    over as lone surrogates) can match no row: one line and exit 2, as for
    commit's --session, never an unexpected error."""
    put_blobs({"a.txt": b"a"})
    result = cli(*args, "-s", "caf\udcff")
    assert result.exit_code == 2, (result.exit_code, result.stderr)
    assert result.stderr.count("\n") == 1 and "not valid UTF-8" in result.stderr
    assert "unexpected" not in result.stderr


def test_ctrl_c_while_the_tool_is_still_loading_is_one_line_and_exit_130(monkeypatch, capsys):
    """The console script's entry point loads the command-line app inside its
    own guard: an interrupt during those imports (a slow disk, a TAB pressed
    twice) says the same one line as during a command, never a traceback."""
    import sys

    import lashctl

    class Interrupting:
        @staticmethod
        def find_spec(name, path=None, target=None):
            if name == "lashctl.cli":
                raise KeyboardInterrupt
            return None

    monkeypatch.delitem(sys.modules, "lashctl.cli", raising=False)
    monkeypatch.setattr(sys, "meta_path", [Interrupting(), *sys.meta_path])
    with pytest.raises(SystemExit) as info:
        lashctl.main()
    assert info.value.code == 130
    err = capsys.readouterr().err
    assert err == "lashctl: interrupted; nothing half-written was left\n"


def test_the_console_script_enters_through_the_guard():
    import tomllib
    from pathlib import Path

    project = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    assert project["project"]["scripts"]["lashctl"] == "lashctl:main"


def test_ctrl_c_after_loading_but_before_the_command_runs_is_one_line_and_exit_130(monkeypatch, capsys):
    """Building the command line and parsing it (where --help and --version
    answer) are guarded too: one line, exit 130, never a traceback or silence."""
    import sys

    import lashctl
    import lashctl.cli
    from typer.core import TyperGroup

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(TyperGroup, "make_context", interrupted)
    monkeypatch.setattr(sys, "argv", ["lashctl", "--help"])
    with pytest.raises(SystemExit) as info:
        lashctl.main()
    assert info.value.code == 130
    assert capsys.readouterr().err == "lashctl: interrupted; nothing half-written was left\n"
    monkeypatch.undo()
    monkeypatch.setattr(lashctl.cli, "main", interrupted)
    with pytest.raises(SystemExit) as info:
        lashctl.main()
    assert info.value.code == 130
    assert capsys.readouterr().err == "lashctl: interrupted; nothing half-written was left\n"


@pytest.mark.parametrize("url", ["postgresql://\udcff", "postgresql://u:p\udcff@localhost/db"])
def test_a_manifest_url_that_is_not_utf8_is_a_usage_error(cli, url):
    result = cli("--manifest", url, "ls")
    assert result.exit_code == 2, (result.exit_code, result.stderr)
    assert result.stderr.count("\n") == 1 and "not valid UTF-8" in result.stderr
    assert "\udcff" not in result.stderr and "unexpected" not in result.stderr


@pytest.mark.parametrize("url", [
    "postgresql://postgres:s3crETpw@[::1/db",             # libpq quotes the URI it cannot parse
    "postgresql://postgres:s3cr%zzETpw@/db",              # ... or the token
    "postgresql://postgres@/db?password=s3crETpw%ZZ",
    "postgresql://postgres:s3cr%FFETpw@/db?host=/tmp&port=1",  # percent-decodes to bytes that are not UTF-8
    "postgresql://postgres@/db?host=/tmp&password=s3crETpw%FF",
    "postgresql+psycopg://postgres:s3crETpw@/db",          # a scheme lashctl does not know
    "mysql://root:s3crETpw@localhost/db",
    'postgresql://u:s3crETpw@[::1]"/db',                  # quotes in the URL itself
    'postgresql://u:s3"crETpw%zz@h/db',
])
def test_a_bad_manifest_url_is_a_usage_error_that_never_shows_its_password(cli, store, url):
    """README: a password is never shown. A URL libpq cannot parse, one whose
    percent-decoded bytes are not UTF-8 and one of an unknown scheme are each
    one line, exit 2, with the password nowhere on stderr or stdout."""
    (store / "sha256").mkdir(parents=True)
    for args in (["--manifest", url, "ls"], ["--json", "--manifest", url, "list-uncommitted"]):
        result = cli(*args)
        assert result.exit_code == 2, (result.exit_code, result.stderr)
        assert result.stderr.count("\n") == 1 and "error: unexpected" not in result.stderr, result.stderr
        assert "s3crETpw" not in result.stderr and "s3crETpw" not in result.stdout
        assert "s3cr%" not in result.stderr


def test_ctrl_c_while_completing_is_one_line_and_exit_130(monkeypatch, capsys):
    """Completion parses the command line outside Typer's own error handling:
    an interrupt there is still the one line and exit 130."""
    import sys

    import lashctl
    from typer.core import TyperGroup

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(TyperGroup, "make_context", interrupted)
    monkeypatch.setattr(sys, "argv", ["lashctl"])
    monkeypatch.setenv("_LASHCTL_COMPLETE", "complete_bash")
    monkeypatch.setenv("COMP_WORDS", "lashctl l")
    monkeypatch.setenv("COMP_CWORD", "1")
    with pytest.raises(SystemExit) as info:
        lashctl.main()
    assert info.value.code == 130
    assert capsys.readouterr().err == "lashctl: interrupted; nothing half-written was left\n"


def test_an_s3_store_url_with_a_password_in_it_is_never_shown_whole(cli, tmp_path):
    for manifest in (["--manifest", str(tmp_path / "m.jsonl")], []):
        result = cli("--json", "--store", "s3://u:s3crETpw@bucket/p", *manifest, "ls")
        assert result.exit_code == 2, result.stderr
        assert "s3crETpw" not in result.stderr and "s3crETpw" not in result.stdout
