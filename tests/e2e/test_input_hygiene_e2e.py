"""Input hygiene, end to end: lists read from files and standard input, the
manifest every writer checks, what counts as a store, usage errors under
--json, and intents stamped by a clock that runs ahead."""

from __future__ import annotations

import json

import pytest

from conftest import sha
from reliability_helpers import base_env, one_line_error, run

pytestmark = pytest.mark.e2e

BOM = b"\xef\xbb\xbf"


def _ok(result) -> None:
    assert result.returncode == 0, (result.returncode, result.stdout[:2000], result.stderr.decode())
    assert b"Traceback" not in result.stderr


# -- lists: a byte-order mark, and "-" inside a list ------------------------------------
@pytest.mark.parametrize("null", [False, True])
@pytest.mark.parametrize("from_stdin", [False, True])
def test_a_bom_at_the_start_of_a_files_from_list_is_ignored(tmp_path, null, from_stdin):
    (tmp_path / "a.txt").write_bytes(b"alpha")
    (tmp_path / "b.txt").write_bytes(b"bravo")
    sep = b"\0" if null else b"\n"
    listing = BOM + bytes(tmp_path / "a.txt") + sep + bytes(tmp_path / "b.txt") + sep
    args = ["--store", tmp_path / "store", "put", "-s", "s"] + (["-0"] if null else [])
    if from_stdin:
        result = run([*args, "--files-from", "-"], input=listing)
    else:
        (tmp_path / "list").write_bytes(listing)
        result = run([*args, "--files-from", tmp_path / "list"])
    _ok(result)
    assert result.stdout.decode().split() == [sha(b"alpha"), sha(b"bravo")]


def test_a_bom_at_the_start_of_commit_stdin_is_ignored(tmp_path):
    store = tmp_path / "store"
    (tmp_path / "a.txt").write_bytes(b"alpha")
    (tmp_path / "b.txt").write_bytes(b"bravo")
    put = run(["--store", store, "put", "-s", "s", tmp_path / "a.txt", tmp_path / "b.txt"])
    _ok(put)
    result = run(["--store", store, "--json", "commit", "-s", "s", "-"], input=BOM + put.stdout)
    _ok(result)
    assert [(r["id"], r["status"]) for r in json.loads(result.stdout)] == [
        (sha(b"alpha"), "committed"),
        (sha(b"bravo"), "committed"),
    ]


def test_a_bom_inside_a_list_is_still_part_of_a_path(tmp_path):
    """Only the first bytes of the list are a byte-order mark; anywhere else it is a name's."""
    (tmp_path / "a.txt").write_bytes(b"alpha")
    listing = bytes(tmp_path / "a.txt") + b"\n" + BOM + bytes(tmp_path / "a.txt") + b"\n"
    (tmp_path / "list").write_bytes(listing)
    result = run(["--store", tmp_path / "store", "put", "-s", "s", "--files-from", tmp_path / "list"])
    assert result.returncode == 2
    assert "cannot read input" in one_line_error(result.stderr)


@pytest.mark.parametrize("null", [False, True])
def test_a_dash_in_a_files_from_list_is_a_file_named_dash(tmp_path, null):
    (tmp_path / "-").write_bytes(b"a file named dash")
    sep = b"\0" if null else b"\n"
    (tmp_path / "list").write_bytes(b"-" + sep)
    result = run(
        [
            "--store",
            tmp_path / "store",
            "--json",
            "put",
            "-s",
            "s",
            "--files-from",
            tmp_path / "list",
            *(["-0"] if null else []),
        ],
        input=b"standard input",
        cwd=tmp_path,
    )
    _ok(result)
    [stored] = json.loads(result.stdout)
    assert stored["id"] == sha(b"a file named dash")
    assert stored["label"] == "-"


def test_a_dash_in_a_list_that_names_no_file_is_a_missing_input(tmp_path):
    (tmp_path / "list").write_bytes(b"-\n")
    result = run(
        ["--store", tmp_path / "store", "put", "-s", "s", "--files-from", tmp_path / "list"],
        input=b"standard input",
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "cannot read input ./-" in one_line_error(result.stderr)
    assert not (tmp_path / "store").exists()


def test_a_dash_in_a_list_read_from_stdin_is_a_file_too(tmp_path):
    (tmp_path / "-").write_bytes(b"a file named dash")
    result = run(["--store", tmp_path / "store", "put", "-s", "s", "--files-from", "-"], input=b"-\n", cwd=tmp_path)
    _ok(result)
    assert result.stdout.decode().split() == [sha(b"a file named dash")]


# -- a corrupt manifest stops every writer -------------------------------------------------
def _store_with_a_bad_line(tmp_path, *, warm_cache: bool):
    """A store of 11 puts whose manifest's line 12 (the last) ends in a stray comma."""
    store = tmp_path / "store"
    for n in range(11):
        (tmp_path / f"in{n}").write_bytes(b"input %d" % n)
    _ok(run(["--store", store, "put", "-s", "s", *[tmp_path / f"in{n}" for n in range(11)]]))
    if warm_cache:
        _ok(run(["--store", store, "list-uncommitted"]))  # the state cache holds every line
    manifest = store / "manifest.jsonl"
    lines = manifest.read_bytes().splitlines(keepends=True)
    assert len(lines) == 12
    lines[11] = lines[11].rstrip(b"\n") + b",\n"
    manifest.write_bytes(b"".join(lines))
    return store, manifest


def _blobs(store) -> list:
    return sorted(p.name for p in (store / "sha256").rglob("*") if p.is_file())


@pytest.mark.parametrize("warm_cache", [False, True])
def test_put_refuses_a_manifest_with_a_malformed_line_and_lands_nothing(tmp_path, warm_cache):
    store, manifest = _store_with_a_bad_line(tmp_path, warm_cache=warm_cache)
    before, blobs = manifest.read_bytes(), _blobs(store)
    (tmp_path / "new").write_bytes(b"a new input")
    result = run(["--store", store, "put", "-s", "s", tmp_path / "new"])
    assert result.returncode == 65, result.stderr
    assert f"{manifest}:12" in one_line_error(result.stderr)
    assert result.stdout == b""
    assert manifest.read_bytes() == before
    assert _blobs(store) == blobs
    assert list((store / "tmp").iterdir()) == []


def test_a_malformed_line_appended_after_the_cache_was_built_stops_put(tmp_path):
    store = tmp_path / "store"
    (tmp_path / "a").write_bytes(b"a")
    _ok(run(["--store", store, "put", "-s", "s", tmp_path / "a"]))
    _ok(run(["--store", store, "put", "-s", "s", tmp_path / "a"]))  # the cache now covers both lines
    manifest = store / "manifest.jsonl"
    with open(manifest, "ab") as handle:
        handle.write(b'{"op":"intent"},\n')
    before = manifest.read_bytes()
    (tmp_path / "b").write_bytes(b"b")
    result = run(["--store", store, "put", "-s", "s", tmp_path / "b"])
    assert result.returncode == 65, result.stderr
    assert f"{manifest}:4" in one_line_error(result.stderr)
    assert manifest.read_bytes() == before


@pytest.mark.parametrize(
    "command",
    [
        ["commit", "-s", "s", sha(b"input 0")],
        ["delete", "--force", sha(b"input 0")],
        ["reclaim", "--older-than", "0s", "--force"],
        ["gc", "--older-than", "0s", "--force"],
        ["verify", "--fix"],
        ["manifest", "compact"],
    ],
)
def test_every_writer_refuses_a_manifest_with_a_malformed_line(tmp_path, command):
    store, manifest = _store_with_a_bad_line(tmp_path, warm_cache=True)
    before, blobs = manifest.read_bytes(), _blobs(store)
    result = run(["--store", store, *command])
    assert result.returncode == 65, (command, result.stderr)
    assert f"{manifest}:12" in result.stderr.decode()
    assert manifest.read_bytes() == before
    assert _blobs(store) == blobs


# -- usage errors under --json ---------------------------------------------------------------
FAILURE_KEYS = ["error", "exit_code", "lashctl_version", "store", "manifest", "started_at", "finished_at"]


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--json", "reclaim", "--dryrun"], "No such option: --dryrun"),
        (["reclaim", "--dryrun", "--json"], "No such option: --dryrun"),
        (["--json", "--lock-timeout", "-1", "reclaim"], "--lock-timeout"),
        (["reclaim", "--json", "--lock-timeout", "-1"], "--lock-timeout"),
        (["--json", "get"], "Missing argument 'ID'"),
        (["--json", "ls", "--sort", "bogus"], "bogus"),
        (["--json", "manifest", "log", "--bogus"], "No such option: --bogus"),
        (["--json", "frobnicate"], "No such command 'frobnicate'"),
        (["--json"], "Missing command"),
    ],
)
def test_a_usage_error_under_json_prints_the_failure_object(tmp_path, args, needle):
    result = run(["--store", tmp_path / "store", *args])
    assert result.returncode == 2, result.stderr
    line = one_line_error(result.stderr)
    assert needle in line
    document = json.loads(result.stdout)
    assert list(document) == FAILURE_KEYS
    assert document["exit_code"] == 2
    assert needle in document["error"] and f"lashctl: error: {document['error']}" == line
    assert document["store"] == str(tmp_path / "store")
    assert not (tmp_path / "store").exists()


def test_a_usage_error_under_json_has_the_shape_of_any_other_failure(tmp_path):
    other = run(["--json", "--store", tmp_path / "missing", "reclaim"])
    assert other.returncode == 2
    usage = run(["--json", "--store", tmp_path / "missing", "reclaim", "--dryrun"])
    assert list(json.loads(usage.stdout)) == list(json.loads(other.stdout)) == FAILURE_KEYS


@pytest.mark.parametrize(
    "args",
    [
        ["put", "-s", "s", "--bogus", "--", "--json"],  # after --: a file named --json
        ["put", "-s", "s", "--label", "--json", "--bogus"],  # a label, not the option
        ["reclaim", "--dryrun"],
    ],
)
def test_a_usage_error_without_json_prints_nothing_on_stdout(tmp_path, args):
    result = run(["--store", tmp_path / "store", *args])
    assert result.returncode == 2, result.stderr
    one_line_error(result.stderr)
    assert result.stdout == b""


# -- what is a store ----------------------------------------------------------------------
ID = sha(b"anything")
READERS_AND_WRITERS = [
    ["reclaim", "--older-than", "1h"],
    ["reclaim", "--dry-run"],
    ["gc"],
    ["verify"],
    ["verify", "--fix"],
    ["ls"],
    ["stats"],
    ["list-uncommitted"],
    ["show", ID],
    ["get", ID],
    ["delete", ID],
    ["commit", "-s", "s", ID],
    ["manifest", "check"],
    ["manifest", "log"],
    ["manifest", "compact"],
]


def _tree(directory) -> list:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


@pytest.mark.parametrize("command", READERS_AND_WRITERS + [["migrate", "--to-store", "DEST"]])
@pytest.mark.parametrize("contents", ["empty", "unrelated"])
def test_a_directory_that_is_not_a_store_is_a_usage_error_and_nothing_is_created(tmp_path, command, contents):
    root = tmp_path / "x"
    root.mkdir()
    if contents == "unrelated":
        (root / "notes.txt").write_text("not a store")
    command = [str(tmp_path / "dest") if a == "DEST" else a for a in command]
    before = _tree(tmp_path)
    for args, env in ((["--store", root], {}), ([], {"LASHCTL_STORE": str(root)})):
        result = run([*args, *command], env={**base_env(), **env})
        assert result.returncode == 2, (command, result.stderr)
        assert one_line_error(result.stderr) == f"lashctl: error: not a lashctl store: {root}"
        assert _tree(tmp_path) == before


@pytest.mark.parametrize("command", READERS_AND_WRITERS + [["put", "-s", "s", "IN"]])
def test_a_store_that_is_a_regular_file_is_a_usage_error(tmp_path, command):
    root = tmp_path / "afile"
    root.write_bytes(b"not a directory")
    (tmp_path / "in").write_bytes(b"input")
    command = [str(tmp_path / "in") if a == "IN" else a for a in command]
    result = run(["--store", root, *command])
    assert result.returncode == 2, (command, result.stderr)
    assert one_line_error(result.stderr) == f"lashctl: error: not a lashctl store: {root} (a regular file)"
    assert root.read_bytes() == b"not a directory"


def test_the_path_in_not_a_store_is_escaped(tmp_path):
    root = tmp_path / "x\x1b[31mred\nlashctl: forged"
    root.mkdir()
    result = run(["--store", root, "ls"])
    assert result.returncode == 2
    assert one_line_error(result.stderr) == (
        f"lashctl: error: not a lashctl store: {tmp_path}/x\\x1b[31mred\\nlashctl: forged"
    )


@pytest.mark.parametrize("marker", ["sha256", "manifest.jsonl"])
def test_a_directory_holding_sha256_or_the_manifest_is_a_store(tmp_path, marker):
    root = tmp_path / "store"
    root.mkdir()
    if marker == "sha256":
        (root / "sha256").mkdir()
    else:
        (root / "manifest.jsonl").write_bytes(b'{"op":"header","format":"lashctl-manifest","version":1}\n')
    for command in (["reclaim", "--older-than", "1h"], ["ls"], ["verify"]):
        _ok(run(["--store", root, *command]))


def test_a_manifest_kept_elsewhere_does_not_make_a_directory_a_store(tmp_path):
    real = tmp_path / "real"
    (tmp_path / "in").write_bytes(b"input")
    manifest = tmp_path / "m.jsonl"
    _ok(run(["--store", real, "--manifest", manifest, "put", "-s", "s", tmp_path / "in"]))
    typo = tmp_path / "typo"
    typo.mkdir()
    result = run(["--store", typo, "--manifest", manifest, "reclaim", "--older-than", "0s", "--force"])
    assert result.returncode == 2
    assert one_line_error(result.stderr) == f"lashctl: error: not a lashctl store: {typo}"
    inside = typo / "custom.jsonl"
    inside.write_bytes(manifest.read_bytes())
    _ok(run(["--store", typo, "--manifest", inside, "ls"]))  # the manifest named lies in the root


def test_put_makes_a_store_of_an_empty_directory(tmp_path):
    root = tmp_path / "x"
    root.mkdir()
    (tmp_path / "in").write_bytes(b"input")
    _ok(run(["--store", root, "put", "-s", "s", tmp_path / "in"]))
    _ok(run(["--store", root, "reclaim", "--older-than", "1h"]))


def _fresh_home(tmp_path) -> dict:
    home = tmp_path / "home"
    home.mkdir()
    return {**base_env(), "HOME": str(home), "XDG_DATA_HOME": str(home / "data")}


@pytest.mark.parametrize(
    "command",
    [
        ["reclaim", "--dry-run"],
        ["reclaim"],
        ["gc"],
        ["verify", "--fix"],
        ["delete", ID],
        ["commit", "-s", "s", ID],
        ["manifest", "compact"],
        ["ls"],
    ],
)
def test_the_default_store_before_first_use_is_empty_and_nothing_is_created(tmp_path, command):
    env = _fresh_home(tmp_path)
    result = run(command, env=env)
    assert result.returncode == (3 if command[0] == "commit" else 0), result.stderr
    assert _tree(tmp_path / "home") == []
    default = tmp_path / "home" / "data" / "lashctl"
    stderr = result.stderr.decode()
    if command[0] in ("reclaim", "gc", "verify", "delete"):
        assert f"lashctl: using the default store {default} (nothing stored there yet)\n" in stderr
    else:
        assert "using the default store" not in stderr


def test_the_default_store_is_named_by_every_sweep(tmp_path):
    env = _fresh_home(tmp_path)
    (tmp_path / "in").write_bytes(b"input")
    _ok(run(["put", "-s", "s", tmp_path / "in"], env=env))
    default = tmp_path / "home" / "data" / "lashctl"
    for command in (["reclaim"], ["reclaim", "-n"], ["gc"], ["verify", "--fix"], ["delete", "-n", "--force", ID]):
        result = run(command, env=env)
        _ok(result)
        assert result.stderr.decode().startswith(f"lashctl: using the default store {default}\n"), command
        assert run(["-q", *command], env=env).stderr == b""
    named = run(["--store", default, "reclaim"], env=env)
    assert "using the default store" not in named.stderr.decode()


def test_a_manifest_named_with_the_default_store_absent_is_not_a_store(tmp_path):
    env = _fresh_home(tmp_path)
    manifest = tmp_path / "m.jsonl"
    manifest.write_bytes(b'{"op":"header","format":"lashctl-manifest","version":1}\n')
    result = run(["--manifest", manifest, "reclaim"], env=env)
    assert result.returncode == 2
    default = tmp_path / "home" / "data" / "lashctl"
    assert one_line_error(result.stderr) == f"lashctl: error: not a lashctl store: {default}"
    assert _tree(tmp_path / "home") == []


# -- intents from a clock that runs ahead -------------------------------------------------
YEAR_MS = 365 * 86_400_000


def _store_with_a_future_intent(tmp_path):
    """A put of "early" (now) and, by another writer whose clock is ten years
    ahead, an intent of "early" by session "ahead"."""
    import time

    store = tmp_path / "store"
    (tmp_path / "early").write_bytes(b"early")
    _ok(run(["--store", store, "put", "-s", "now", tmp_path / "early"]))
    at = int(time.time() * 1000) + 10 * YEAR_MS + 30 * 60_000  # shown as 3650d for a while
    line = {
        "op": "intent",
        "attachment_id": sha(b"early"),
        "session_id": "ahead",
        "canonical_uri": "sha256:" + sha(b"early"),
        "intent_at_epoch_ms": at,
    }
    with open(store / "manifest.jsonl", "a") as handle:
        handle.write(json.dumps(line, separators=(",", ":")) + "\n")
    return store, at


def _iso(ms: int) -> str:
    from lashctl.timefmt import iso_ms

    return iso_ms(ms)


def test_show_says_an_intent_in_the_future_keeps_the_blob_until_then(tmp_path):
    store, at = _store_with_a_future_intent(tmp_path)
    result = run(["--store", store, "show", sha(b"early")])
    _ok(result)
    lines = result.stdout.decode().splitlines()
    verdict = next(line for line in lines if line.startswith("verdict:"))
    assert verdict == (
        f"verdict:    kept: session ahead's intent time {_iso(at)} is in the future (a clock "
        f"ahead?): no sweep reclaims it before {_iso(at + 86_400_000)}"
    )
    row = next(line for line in lines if "session ahead:" in line)
    assert f"intent {_iso(at)} (3650d in the future), uncommitted" in row
    document = json.loads(run(["--store", store, "--json", "show", sha(b"early")]).stdout)
    assert document["verdict"] == {"state": "kept", "reason": verdict.removeprefix("verdict:").strip()}


def test_verify_warns_of_an_intent_in_the_future(tmp_path):
    store, at = _store_with_a_future_intent(tmp_path)
    result = run(["--store", store, "--json", "verify"])
    _ok(result)  # a warning: exit 0
    document = json.loads(result.stdout)
    [finding] = document["findings"]
    assert finding["kind"] == "intent-in-future" and finding["severity"] == "warning"
    assert finding["id"] == sha(b"early")
    assert f"session ahead's intent time {_iso(at)} is 3650d ahead of this clock" in finding["message"]
    assert document["warnings"] == 1 and document["clean"] is True
    tsv = run(["--store", store, "verify"])
    _ok(tsv)
    assert tsv.stdout.decode().split("\t")[:2] == ["warning", "intent-in-future"]


def test_a_clock_a_few_seconds_ahead_is_no_finding(tmp_path):
    import time

    store = tmp_path / "store"
    (tmp_path / "a").write_bytes(b"a")
    _ok(run(["--store", store, "put", "-s", "s", tmp_path / "a"]))
    line = {
        "op": "intent",
        "attachment_id": sha(b"a"),
        "session_id": "t",
        "canonical_uri": "sha256:" + sha(b"a"),
        "intent_at_epoch_ms": int(time.time() * 1000) + 60_000,
    }
    with open(store / "manifest.jsonl", "a") as handle:
        handle.write(json.dumps(line) + "\n")
    verified = run(["--store", store, "verify"])
    _ok(verified)
    assert verified.stdout == b""
    listed = run(["--store", store, "list-uncommitted"])
    _ok(listed)
    assert b"future" not in listed.stderr


@pytest.mark.parametrize("form", ["tsv", "json"])
def test_list_uncommitted_warns_of_future_intents_and_keeps_its_output(tmp_path, form):
    store, at = _store_with_a_future_intent(tmp_path)
    args = ["--store", store, *(["--json"] if form == "json" else []), "list-uncommitted"]
    result = run(args)
    _ok(result)
    assert (
        b"lashctl: warning: 1 uncommitted row(s) have an intent time more than 5m in the future "
        b"(a clock ahead?): no sweep reclaims them before that time\n"
    ) in result.stderr
    if form == "json":
        rows = json.loads(result.stdout)
        assert [list(r) for r in rows] == [
            [
                "id",
                "session_id",
                "canonical_uri",
                "intent_at_epoch_ms",
                "intent_at",
                "age_ms",
                "byte_len",
                "media_type",
                "label",
                "bytes_present",
            ]
        ] * 2
        assert rows[1]["session_id"] == "ahead" and rows[1]["age_ms"] < -9 * YEAR_MS
    else:
        assert [line.split("\t")[1] for line in result.stdout.decode().splitlines()] == ["now", "ahead"]
    assert run(["-q", *args]).stderr == b""


def test_list_uncommitted_marks_a_future_intent_on_a_terminal(tmp_path):
    from test_e2e_text import on_terminal

    store, at = _store_with_a_future_intent(tmp_path)
    code, shown, stderr = on_terminal("--store", str(store), "list-uncommitted")
    assert code == 0, stderr
    [row] = [line for line in shown.decode().splitlines() if "ahead" in line]
    assert "in 3650d (future)" in row
    assert b"1 uncommitted row(s) have an intent time more than 5m in the future" in stderr


@pytest.mark.parametrize("form", ["tsv", "json"])
def test_a_future_intent_among_rows_without_bytes_is_counted_on_a_pipe(tmp_path, form):
    """Rows whose bytes are absent are written from a template, chunk by
    chunk; a row from a clock ahead is left to the command, which counts it."""
    import time

    store = tmp_path / "store"
    (store / "sha256").mkdir(parents=True)
    now = int(time.time() * 1000)
    ids = [sha(b"row %d" % i) for i in range(2500)]
    times = [now - 3_600_000 - i for i in range(2500)]
    times[1234] = now + 10 * YEAR_MS + 30 * 60_000
    lines = [{"op": "header", "format": "lashctl-manifest", "version": 1}] + [
        {
            "op": "intent",
            "attachment_id": i,
            "session_id": "s",
            "canonical_uri": "sha256:" + i,
            "intent_at_epoch_ms": at,
        }
        for i, at in zip(ids, times)
    ]
    (store / "manifest.jsonl").write_text("".join(json.dumps(e) + "\n" for e in lines))
    result = run(["--store", store, *(["--json"] if form == "json" else []), "list-uncommitted"])
    _ok(result)
    assert b"warning: 1 uncommitted row(s) have an intent time more than 5m in the future" in result.stderr
    if form == "json":
        rows = json.loads(result.stdout)
        assert [r["id"] for r in rows][-1] == ids[1234] and rows[-1]["age_ms"] < -9 * YEAR_MS
    else:
        out = result.stdout.decode().splitlines()
        assert len(out) == 2500
        assert out[-1].split("\t")[:4] == [ids[1234], "s", _iso(times[1234]), "-3650d"]
