"""``list-uncommitted``: order, cutoffs, session filter, the fast path against row-by-row rendering."""

from __future__ import annotations

import json
import time

import pytest
from conftest import png_bytes, sha, sidecar_path

from .helpers import (
    DAY,
    HOUR,
    MINUTE,
    assert_error,
    assert_ok,
    commit_ev,
    drawn,
    forget,
    intent,
    iso,
    now_ms,
    tsv,
    write_manifest,
)


@pytest.fixture
def listed_rows(cli, store, put_blobs):
    a, b = put_blobs({"a.png": png_bytes(5, 6), "b.txt": b"bee"})
    c = sha(b"never landed")
    d = sha(b"committed")
    e = sha(b"forgotten")
    now = now_ms()
    times = {"a": now - 3 * DAY, "b": now - 2 * HOUR, "c": now - 10 * MINUTE}
    write_manifest(
        store,
        [
            intent(c, "s1", times["c"]),
            intent(c, "s1", now - 4 * DAY),  # an older refresh: the later time wins
            intent(b, "s2", times["b"]),
            intent(d, "s1", now - 5 * DAY),
            commit_ev(d, "s1", now - 5 * DAY),
            intent(e, "s2", now - 6 * HOUR),
            forget(e, "s2"),
            intent(a, "s1", times["a"]),
        ],
    )
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
        (a, "s1", times["a"]),
        (b, "s2", times["b"]),
        (c, "s1", times["c"]),
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
    sidecar_path(store, x).write_text(
        json.dumps(
            {
                "id": x,
                "media_type": "image/png",
                "byte_len": 15,
                "label": "shot",
                "type_metadata": {"type": "image", "width": 3, "height": 4},
                "future_key": [1, 2],
            }
        ),
        "utf-8",
    )
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
    cli, store, put_blobs, monkeypatch, json_flag
):
    """Rows without bytes are written by the state cache's SQLite: byte for
    byte what rendering each row in Python prints, for every kind of text."""
    import lashctl.commands.list_uncommitted as command
    from lashctl.backends.manifests.jsonl.cache import ManifestIndex

    (present,) = put_blobs({"here.txt": b"bytes here"})
    now = now_ms()
    monkeypatch.setattr(command, "now_ms", lambda: now)
    sessions = [
        "plain",
        'quote"s',
        "back\\slash",
        "tab\there",
        "caf\u00e9",
        "\u2028sep",
        "bidi\u202e",
        "emoji \U0001f600",
        "del\x7f",
        "c1\x85",
        "ctl\x1b[31m",
        "new\nline",
        "~ !#$%&'()*+,-./:;<=>?@[]^_`{|}",
    ]
    events = []
    for i, session in enumerate(sessions):
        events.append(intent(sha(b"gone %d" % i), session, now - i * 7_777_777 - i))
    # ages of every shape: days and hours, hours and minutes, seconds, a future intent (clock skew)
    for i, at in enumerate(
        [
            now - 86_400_000,
            now - 90_061_001,
            now - 3_600_000,
            now - 3_660_000,
            now - 60_000,
            now - 61_999,
            now - 999,
            now,
            now + 1,
            now + 2_500,
            0,
            253_402_300_799_999,
        ]
    ):
        events.append(intent(sha(b"age %d" % i), "ages", at))
    odd = sha(b"own uri")
    events.append({**intent(odd, "uris", now - 5), "canonical_uri": 's3://b/k \u00e9"\\'})
    events.append({**intent(sha(b"own uri 2"), "uris", now - 6), "canonical_uri": "x-lash:1"})
    events.append(intent(present, "with-bytes", now - 123_456))
    write_manifest(store, events)

    args = ["list-uncommitted"] + (["--json"] if json_flag else [])
    written_by_sqlite = []
    import lashctl.listing as listing

    real = listing.rendered_uncommitted  # over the cache's raw rows (ManifestIndex.uncommitted_chunks)

    def spy(*a):
        for chunk in real(*a):
            written_by_sqlite.extend(chunk)
            yield chunk

    monkeypatch.setattr(listing, "rendered_uncommitted", spy)
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
    monkeypatch.setattr(ManifestIndex, "uncommitted_chunks", lambda self, *a: None)
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
        monkeypatch.setattr(ManifestIndex, "uncommitted_chunks", lambda self, *a: None)
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
    real = ManifestIndex.uncommitted_chunks

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

    monkeypatch.setattr(ManifestIndex, "uncommitted_chunks", failing)
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
        {
            "id": a,
            "session_id": "s1",
            "canonical_uri": "sha256:" + a,
            "intent_at_epoch_ms": now - 3 * DAY,
            "intent_at": iso(now - 3 * DAY),
            "byte_len": len(png_bytes(5, 6)),
            "media_type": "image/png",
            "label": "a.png",
            "bytes_present": True,
        },
        {
            "id": gone,
            "session_id": "s2",
            "canonical_uri": "sha256:" + gone,
            "intent_at_epoch_ms": now - 125 * MINUTE,
            "intent_at": iso(now - 125 * MINUTE),
            "byte_len": None,
            "media_type": None,
            "label": None,
            "bytes_present": False,
        },
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
    assert tables == [
        (
            [
                ("id", "id", 0, 8, None),
                ("session", "text", 0, 8, None),
                ("intent at", "fixed", 7, 8, None),
                ("age", "fixed", 2, 8, None),
                ("size", "bytes", 4, 8, None),
                ("media type", "text", 6, 10, None),
                ("label", "text", 5, 8, None),
                ("bytes", "fixed", 3, 8, None),
            ],
            [
                [a, "s1", iso(now - 3 * DAY), "3d", len(png_bytes(5, 6)), "image/png", "a.png", "present"],
                [gone, "s2", iso(now - 125 * MINUTE), "2h5m", None, None, None, "missing"],
            ],
        )
    ]
    assert result.stderr.startswith("2 uncommitted row(s) with intent at or before ")
