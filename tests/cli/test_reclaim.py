"""``reclaim``: shared content, dry runs that match the real run, the grace guard, failed deletes."""

from __future__ import annotations

import json
import time

import pytest
from conftest import blob_path, png_bytes, sha, sidecar_path

from .helpers import (
    DAY,
    MINUTE,
    RUN_FIELDS,
    assert_error,
    assert_ok,
    blob_files,
    commit_ev,
    drawn,
    event_line,
    forget,
    ids_out,
    intent,
    manifest_file,
    now_ms,
    read_events,
    snapshot,
    tsv,
    write_inputs,
    write_manifest,
)


def test_reclaim_keeps_bytes_a_committed_row_of_another_session_needs(cli, store, put_blobs):
    (x,) = put_blobs({"x.png": png_bytes(2, 2)})
    now = now_ms()
    write_manifest(
        store,
        [
            intent(x, "session-A", now - 3 * DAY),  # A recorded an intent and crashed
            intent(x, "session-B", now - 2 * DAY),
            commit_ev(x, "session-B", now - 2 * DAY + 1000),
        ],
    )
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
    assert [json.loads(line) for line in after_lines[len(before_lines) :]] == [forget(x, "session-A")]

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


def _reclaim_fixture(cli, store, put_blobs) -> dict[str, str]:
    orphan, shared, recent, fresh, kept = put_blobs(
        {
            "orphan.bin": b"orphan bytes",
            "shared.bin": b"shared bytes",
            "recent.bin": b"recently re-uploaded",
            "fresh.bin": b"fresh upload",
            "kept.bin": b"committed long ago",
        }
    )
    missing = sha(b"bytes that never landed")
    now = now_ms()
    write_manifest(
        store,
        [
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
        ],
    )
    return {"orphan": orphan, "shared": shared, "recent": recent, "missing": missing, "fresh": fresh, "kept": kept}


@pytest.mark.parametrize("dry_run", [False, True])
def test_reclaim_progress_bar_is_given_the_plan_size_before_it_advances(cli, store, put_blobs, monkeypatch, dry_run):
    from lashctl import render

    x, y, z = put_blobs({"x": b"x bytes", "y": b"y bytes", "z": b"z bytes"})
    now = now_ms()
    write_manifest(
        store,
        [
            intent(x, "A", now - 2 * DAY),
            intent(y, "A", now - 2 * DAY),
            intent(z, "A", now - 2 * DAY),
            intent(z, "B", now - 2 * DAY),
        ],
    )
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
    appended = [json.loads(line) for line in lines_after[len(lines_before) :]]
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
    write_manifest(
        store,
        [
            intent(first, "A", now - 3 * DAY),
            intent(broken, "A", now - 2 * DAY),
            intent(broken, "B", now - 2 * DAY),
            intent(last, "A", now - 1 * DAY),
        ],
    )
    from lashctl.backends.blobs.localfs import BlobStore
    from lashctl.errors import StoreIOError

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


def test_reclaim_record_whole(cli, store, put_blobs, monkeypatch):
    orphan, shared, broken = put_blobs({"o.bin": b"orphan bytes", "s.bin": b"shared", "b.bin": b"broken!"})
    missing = sha(b"never landed")
    now = now_ms()
    write_manifest(
        store,
        [
            intent(orphan, "A", now - 3 * DAY),
            intent(orphan, "B", now - 3 * DAY),
            intent(shared, "A", now - 2 * DAY),
            intent(shared, "B", now - 2 * DAY),
            commit_ev(shared, "B", now - 2 * DAY),
            intent(broken, "A", now - 2 * DAY),
            intent(missing, "A", now - DAY),
        ],
    )
    from lashctl.backends.blobs.localfs import BlobStore
    from lashctl.errors import StoreIOError

    original = BlobStore.delete

    def flaky_delete(self, attachment_id):
        if attachment_id == broken:
            raise StoreIOError("cannot delete it: Permission denied")
        return original(self, attachment_id)

    monkeypatch.setattr(BlobStore, "delete", flaky_delete)
    expected = {
        orphan: {
            "id": orphan,
            "action": "reclaim",
            "sessions": ["A", "B"],
            "byte_len": 12,
            "bytes_present": True,
            "reason": "orphan: no live row",
            "error": None,
        },
        shared: {
            "id": shared,
            "action": "release",
            "sessions": ["A"],
            "byte_len": 6,
            "bytes_present": True,
            "reason": "kept: session B committed it",
            "error": None,
        },
        broken: {
            "id": broken,
            "action": "reclaim",
            "sessions": ["A"],
            "byte_len": 7,
            "bytes_present": True,
            "reason": "orphan: no live row",
            "error": None,
        },
        missing: {
            "id": missing,
            "action": "reclaim",
            "sessions": ["A"],
            "byte_len": 0,
            "bytes_present": False,
            "reason": "orphan: no live row; bytes already gone",
            "error": None,
        },
    }
    dry = cli("reclaim", "-n", "--older-than", "1h", "--json")
    assert_ok(dry)
    document = json.loads(dry.stdout)
    assert list(document) == RUN_FIELDS + [
        "dry_run",
        "cutoff_epoch_ms",
        "cutoff",
        "scanned_intents",
        "blobs_reclaimed",
        "bytes_freed",
        "rows_released",
        "failures",
        "items",
    ]
    order = [i["id"] for i in document["items"]]
    assert document["items"] == [expected[i] for i in order] and sorted(order) == sorted(expected)
    assert dry.stderr.startswith("dry run: would reclaim 3 blob(s), 19 B; would release 1 row(s); scanned ")

    piped = cli("reclaim", "-n", "--older-than", "1h")
    assert tsv(piped) == [
        [i, e["action"], str(e["byte_len"]) if e["action"] == "reclaim" else "-", ", ".join(e["sessions"]), e["reason"]]
        for i, e in ((i, expected[i]) for i in order)
    ]

    result, tables = drawn(cli, monkeypatch, "reclaim", "--older-than", "1h")
    assert result.exit_code == 5, result.stderr
    expected[broken].update(action="failed", error="cannot delete it: Permission denied")
    ((columns, rows),) = tables
    assert columns == [
        ("id", "id", 0, 8, None),
        ("action", "fixed", 0, 8, None),
        ("size", "bytes", 2, 8, None),
        ("sessions", "text", 3, 8, None),
        ("reason", "text", 4, 12, None),
    ]
    assert rows == [
        [
            i,
            e["action"],
            e["byte_len"] if e["action"] == "reclaim" else None,
            ", ".join(e["sessions"]),
            e["error"] or e["reason"],
        ]
        for i, e in ((i, expected[i]) for i in order)
    ]
    assert "lashctl: error: sweep finished with 1 failure(s); rows kept for the next sweep: " + broken in result.stderr
