"""Hostile and broken input: nothing outside the store is touched, nothing committed lost.

Each case runs the installed ``lashctl`` (or, for fault injection, the Typer
app in-process) against a store planted with the hostile thing next to a
committed blob A and an aged orphan B, with sentinels outside the store (a
regular file, a FIFO, a directory). Every case checks:

- the documented exit code (the README's exit codes);
- on failure, exactly one clear error line on stderr, no traceback, and not
  the "unexpected <Exception>" funnel that marks a bug;
- the sentinels outside the store are exactly as they were (a FIFO would hang
  whoever opens it: a run that times out has opened something it must not);
- committed content is intact, and a refused or failed destructive command
  deleted nothing.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
from pathlib import Path

import pytest

from reliability_helpers import (
    blob_files,
    blob_path,
    commit,
    file_sha,
    fold_file,
    intent,
    one_line_error,
    plant_blob,
    report,
    run,
    sha,
    shm_path,  # noqa: F401 (fixture)
    sidecar_path,
    snapshot_tree,
    staging_litter,
    write_manifest,
)

pytestmark = pytest.mark.e2e

OLD = 1_700_000_000_000  # 2023: aged for any cutoff
SECRET = b"TOP SECRET SENTINEL: must never be read, printed or removed by lashctl\n"
CASES = {"runs": 0}


@pytest.fixture(scope="module", autouse=True)
def _count_cases():
    yield
    report(f"hostile: {CASES['runs']} hostile lashctl runs checked")


class World:
    """A store (A committed by s1, B an aged orphan of s2) and sentinels outside it."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.store = base / "store"
        self.manifest = self.store / "manifest.jsonl"
        self.outside = base / "outside"
        self.outside.mkdir()
        self.secret = self.outside / "secret.txt"
        self.secret.write_bytes(SECRET)
        self.fifo = self.outside / "fifo"
        os.mkfifo(self.fifo)
        (self.outside / "dir").mkdir()
        (self.outside / "dir" / "inner.txt").write_bytes(b"inner")
        self.a_data, self.b_data = b"committed content A\n", b"orphan content B\n"
        self.a = plant_blob(self.store, self.a_data)
        self.b = plant_blob(self.store, self.b_data)
        from lashctl.sidecar import Metadata

        for attachment_id, data in ((self.a, self.a_data), (self.b, self.b_data)):
            sidecar_path(self.store, attachment_id).write_bytes(
                Metadata(attachment_id, "text/plain", len(data), label="label-" + attachment_id[:6]).encode()
            )
        self.events = [intent(self.a, "s1", OLD), commit(self.a, "s1", OLD + 1), intent(self.b, "s2", OLD)]
        write_manifest(self.manifest, self.events)
        self.outside_before = snapshot_tree(self.outside)

    def cli(self, *args, input: bytes | None = None, timeout: float = 20, store: Path | None = None):
        CASES["runs"] += 1
        try:
            return run(["--store", str(store or self.store), *args], input=input, timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(
                f"lashctl {' '.join(map(str, args))[:200]} hung for {timeout}s "
                "(it opened something that blocks: a FIFO it must never touch?)"
            )

    def state(self) -> dict:
        """The store as a snapshot, minus the lock file (taking the lock may create it)."""
        return {k: v for k, v in snapshot_tree(self.store).items() if not k.endswith("manifest.jsonl.lock")}

    def assert_outside_untouched(self) -> None:
        assert snapshot_tree(self.outside) == self.outside_before, "something outside the store changed"
        assert self.secret.read_bytes() == SECRET

    def assert_a_intact(self) -> None:
        path = blob_path(self.store, self.a)
        assert path.is_file() and not path.is_symlink() and file_sha(path) == self.a, "committed blob A lost"

    def assert_b_present(self) -> None:
        assert file_sha(blob_path(self.store, self.b)) == self.b, "orphan B deleted by a refused/failed command"


@pytest.fixture
def world(shm_path: Path) -> World:
    w = World(shm_path)
    yield w
    w.assert_outside_untouched()


def no_secret(result) -> None:
    assert b"TOP SECRET" not in result.stdout and b"TOP SECRET" not in result.stderr, (
        "a file outside the store was read"
    )


# -- ids ------------------------------------------------------------------------------
BAD_IDS = [
    "..",
    "../..",
    "../" + "a" * 64,
    "/etc/passwd",
    "ab/cd",
    "abcd/",
    "a" * 64 + "/..",
    "sha256/ab/" + "a" * 64,
    "~",
    "ab*",
    "abcd%2f..",
    "ab\x01cd",
    "ab\x1bcd",
    "abc\x7fd",
    "ab\tcd",
    "abcd\u200b",
    "\u0660\u0661\u0662\u0663\u0664",  # Arabic-Indic digits
    "\uff11\uff12\uff13\uff14",  # fullwidth digits
    "\uff41\uff42\uff43\uff44",  # fullwidth a-d
    "abc",
    "",
    "sha256:",
    "sha256:..",
    "sha256:../" + "a" * 61,
    "0xabcd",
    "g" * 64,
    "abcd" * 17,
    "a" * 5000,
    "f" * 100_000,
]


@pytest.mark.parametrize("command", ["get", "delete", "commit"])
def test_hostile_ids_are_usage_errors_and_touch_nothing(world: World, command: str) -> None:
    """Every bad id in-process (fast), every sixth also through the installed script."""
    from typer.testing import CliRunner

    from lashctl.cli import app

    runner = CliRunner()
    missing = world.base / "never-created"
    before = world.state()
    for n, bad in enumerate(BAD_IDS):
        args = {
            "get": ["get", "-o", "-", bad],
            "delete": ["delete", "--force", bad],
            "commit": ["commit", "-s", "s1", bad],
        }[command]
        for store in (missing, world.store):
            CASES["runs"] += 1
            result = runner.invoke(app, ["--store", str(store), *args])
            assert result.exit_code == 2, (command, bad[:80], result.exit_code, result.stderr[:300])
            assert len(one_line_error(result.stderr.encode())) < 400, "the error line echoes a huge argument"
            assert result.stdout == ""
        if n % 6 == 0:
            result = world.cli(*args, store=missing)
            assert result.returncode == 2, (command, bad[:80], result.returncode, result.stderr[:300])
            assert len(one_line_error(result.stderr)) < 400
            assert result.stdout == b""
        assert not missing.exists(), f"{command} {bad[:40]!r} created the store before validating the id"
    # ids through stdin too
    result = world.cli("commit", "-s", "s1", "-", input=b"../etc/passwd\n" + world.a.encode() + b"\n")
    assert result.returncode == 2
    one_line_error(result.stderr)
    assert world.state() == before


def test_ambiguous_prefix_is_a_usage_error(world: World) -> None:
    ids = ["abcd" + "0" * 60, "abcd" + "1" * 60]
    write_manifest(world.manifest, world.events + [intent(i, "s3", OLD) for i in ids])
    for args in (["get", "-o", "-", "abcd"], ["commit", "-s", "s3", "ABCD"], ["delete", "--force", "sha256:abcd"]):
        result = world.cli(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert "ambiguous" in one_line_error(result.stderr)
    world.assert_a_intact()
    world.assert_b_present()


# -- manifest rows: invalid ids, hostile URIs ------------------------------------------------
BAD_ATTACHMENT_IDS = [
    "/etc/passwd",
    "../x",
    "../../outside/secret.txt",
    "../../" + "a" * 64,
    "A" * 64,
    "a" * 63,
    "a" * 65,
    "a" * 64 + "\n",
    "",
    None,
    12345,
]

DESTRUCTIVE_AND_READERS = [
    ("list-uncommitted",),
    ("reclaim", "--force", "--older-than", "0s"),
    ("reclaim",),
    ("reclaim", "--dry-run"),
    ("commit", "-s", "s2", "B"),
    ("delete", "--force", "B"),
    ("get", "-o", "-", "Bprefix"),
]


def _args(world: World, args: tuple) -> list[str]:
    return [world.b if a == "B" else world.b[:10] if a == "Bprefix" else a for a in args]


@pytest.mark.parametrize("bad", BAD_ATTACHMENT_IDS, ids=repr)
def test_rows_with_invalid_attachment_ids_are_corrupt_and_nothing_is_deleted(world: World, bad) -> None:
    row = intent("0" * 64, "s9", OLD)
    row["attachment_id"] = bad
    write_manifest(world.manifest, world.events + [row, intent(world.b, "s3", OLD)])
    before = world.state()
    for args in DESTRUCTIVE_AND_READERS:
        result = world.cli(*_args(world, args))
        assert result.returncode == 65, (args, result.returncode, result.stderr)
        line = one_line_error(result.stderr)
        assert "manifest.jsonl:5" in line, f"the error does not name the line: {line}"
        assert world.state() == before, f"{args[0]} changed the store on a corrupt manifest"


HOSTILE_URIS = [
    "file:///etc/passwd",
    "../../x",
    "../../outside/secret.txt",
    "sha256:../../outside/secret.txt",
    "",
    "sha256:",
    "\u0000",
    "sha256:" + "0" * 64,
]


def test_hostile_canonical_uris_are_never_followed(world: World) -> None:
    """Rows of orphan C whose URI points outside the store or at committed blob A."""
    uris = HOSTILE_URIS + [
        str(world.secret),
        "file://" + str(world.secret),
        str(world.fifo),
        "file://" + str(world.fifo),
        str(world.outside / "dir"),
        "sha256:" + world.a,
    ]
    orphans = []
    events = list(world.events)
    for n, uri in enumerate(uris):
        c = plant_blob(world.store, f"orphan C{n}".encode())
        orphans.append(c)
        events.append(intent(c, f"s{n}", OLD, uri=uri))
    write_manifest(world.manifest, events)
    result = world.cli("--json", "list-uncommitted", timeout=10)
    assert result.returncode == 0, result.stderr
    no_secret(result)
    listed = {r["id"]: r for r in json.loads(result.stdout)}
    assert set(orphans) <= set(listed)
    assert {listed[c]["canonical_uri"] for c in orphans} == set(uris)  # reported, not resolved
    result = world.cli("reclaim", "--dry-run", "--force", "--older-than", "0s", timeout=10)
    assert result.returncode == 0, result.stderr
    result = world.cli("delete", "--force", orphans[0], timeout=10)
    assert result.returncode == 0, result.stderr
    result = world.cli("--json", "reclaim", "--force", "--older-than", "0s", timeout=10)
    assert result.returncode == 0, result.stderr
    no_secret(result)
    world.assert_outside_untouched()
    world.assert_a_intact()
    assert not (set(orphans) | {world.b}) & set(blob_files(world.store))
    for c in orphans:
        result = world.cli("get", "-o", "-", c, timeout=10)
        assert result.returncode == 3
        no_secret(result)


# -- malformed manifest lines -----------------------------------------------------------------
def _line(**fields) -> bytes:
    base = {
        "op": "intent",
        "attachment_id": "e" * 64,
        "session_id": "s9",
        "canonical_uri": "sha256:" + "e" * 64,
        "intent_at_epoch_ms": OLD,
    }
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not ...}).encode()


CORRUPT_LINES = {
    "attachment_id int": _line(attachment_id=5),
    "session null": _line(session_id=None),
    "session empty": _line(session_id=""),
    "session number": _line(session_id=7),
    "time as string": _line(intent_at_epoch_ms=str(OLD)),
    "time float": _line(intent_at_epoch_ms=OLD + 0.5),
    "time float exponent": b'{"op":"intent","attachment_id":"'
    + b"e" * 64
    + b'","session_id":"s9","canonical_uri":"x","intent_at_epoch_ms":1.7e12}',
    "time bool": _line(intent_at_epoch_ms=True),
    "time negative": _line(intent_at_epoch_ms=-1),
    "time past year 9999": _line(intent_at_epoch_ms=10**20),
    "time NaN": _line(intent_at_epoch_ms=float("nan")),
    "time Infinity": b'{"op":"intent","attachment_id":"'
    + b"e" * 64
    + b'","session_id":"s9","canonical_uri":"x","intent_at_epoch_ms":Infinity}',
    "time with 5000 digits": b'{"op":"intent","attachment_id":"'
    + b"e" * 64
    + b'","session_id":"s9","canonical_uri":"x","intent_at_epoch_ms":'
    + b"9" * 5000
    + b"}",
    "time missing": _line(intent_at_epoch_ms=...),
    "uri missing": _line(canonical_uri=...),
    "uri number": _line(canonical_uri=1),
    "commit time null": json.dumps(
        {"op": "commit", "attachment_id": "e" * 64, "session_id": "s9", "committed_at_epoch_ms": None}
    ).encode(),
    "forget without session": json.dumps({"op": "forget", "attachment_id": "e" * 64}).encode(),
    "unknown op": _line(op="purge"),
    "op upper case": _line(op="INTENT"),
    "op missing": _line(op=...),
    "op number": _line(op=3),
    "version 2 header": b'{"op":"header","format":"lashctl-manifest","version":2}',
    "version string header": b'{"op":"header","format":"lashctl-manifest","version":"1"}',
    "version true header": b'{"op":"header","format":"lashctl-manifest","version":true}',
    "other format header": b'{"op":"header","format":"other","version":1}',
    "array": b"[1,2,3]",
    "string": b'"intent"',
    "null": b"null",
    "garbage": b"hello world",
    "truncated object mid-file": b'{"op":"intent","attachment_id":"' + b"e" * 30,
    "two objects on a line": _line() + _line(),
    "invalid utf-8": b'{"op":"intent","attachment_id":"'
    + b"e" * 64
    + b'","session_id":"s\xff\xfe","canonical_uri":"x","intent_at_epoch_ms":1}',
    "NUL byte": _line()[:-1] + b"\x00}",
    "deeply nested": b"[" * 200_000 + b"]" * 200_000,
    "3 MB garbage": b"{" + b"x" * (3 << 20),
}


# Every command on a few representative lines; the sweep and a reader on all of them.
ALL_COMMANDS_ON = {
    "unknown op",
    "version 2 header",
    "time with 5000 digits",
    "invalid utf-8",
    "garbage",
    "time negative",
}


@pytest.mark.parametrize("name", list(CORRUPT_LINES))
def test_malformed_lines_stop_every_command_with_65_naming_the_line(world: World, name: str) -> None:
    raw = world.manifest.read_bytes()
    world.manifest.write_bytes(
        raw + CORRUPT_LINES[name] + b"\n" + _line(attachment_id=world.b, session_id="s4") + b"\n"
    )
    before = world.state()
    commands = DESTRUCTIVE_AND_READERS if name in ALL_COMMANDS_ON else DESTRUCTIVE_AND_READERS[:2]
    for args in commands:
        result = world.cli(*_args(world, args), timeout=30)
        assert result.returncode == 65, (name, args, result.returncode, result.stderr[:500])
        line = one_line_error(result.stderr)
        assert "manifest.jsonl:5" in line, f"{name}: the error does not name line 5: {line[:300]}"
        assert len(result.stderr) < 2000, "the error line dumps the bad line"
        assert world.state() == before, f"{args[0]} changed the store on a corrupt manifest"
    world.assert_b_present()


TORN_TAILS = {
    "half an intent": _line()[:40],
    "3 MB garbage tail": b'{"op":"intent","session_id":"' + b"x" * (3 << 20),
    "invalid utf-8 tail": b'{"op":"intent","session_id":"\xff',
    "tail with a 5000-digit number": b'{"op":"intent","intent_at_epoch_ms":' + b"9" * 5000,
}


@pytest.mark.parametrize("name", list(TORN_TAILS))
def test_torn_tails_warn_and_are_repaired(world: World, name: str) -> None:
    world.manifest.write_bytes(world.manifest.read_bytes() + TORN_TAILS[name])
    result = world.cli("--json", "list-uncommitted", timeout=30)
    assert result.returncode == 0, (name, result.returncode, result.stderr[:300])
    assert "torn" in result.stderr.decode() and "Traceback" not in result.stderr.decode()
    assert [r["id"] for r in json.loads(result.stdout)] == [world.b]
    result = world.cli("commit", "-s", "s2", world.b, timeout=30)
    assert result.returncode == 0, result.stderr[:300]
    rows = fold_file(world.manifest)
    assert rows[("s2", world.b)]["committed_at_epoch_ms"] is not None
    result = world.cli("--json", "list-uncommitted")
    assert result.returncode == 0 and json.loads(result.stdout) == [] and b"torn" not in result.stderr


ACCEPTED = {
    "CRLF endings": lambda raw: raw.replace(b"\n", b"\r\n"),
    "BOM": lambda raw: b"\xef\xbb\xbf" + raw,
    "BOM and CRLF, no final newline": lambda raw: b"\xef\xbb\xbf" + raw.replace(b"\n", b"\r\n")[:-2],
    "blank lines": lambda raw: raw.replace(b"\n", b"\n\n  \n"),
    "no header": lambda raw: raw.split(b"\n", 1)[1],
    "final line without newline": lambda raw: raw[:-1],
    "3 MB session id": lambda raw: raw + _line(attachment_id="f" * 64, session_id="s" * (3 << 20)) + b"\n",
    "unknown extra keys": lambda raw: (
        raw + json.dumps({**json.loads(_line(attachment_id="f" * 64)), "x-extra": [1]}).encode() + b"\n"
    ),
}


@pytest.mark.parametrize("name", list(ACCEPTED))
def test_hand_edited_but_valid_manifests_are_read_and_appended_to(world: World, name: str) -> None:
    world.manifest.write_bytes(ACCEPTED[name](world.manifest.read_bytes()))
    result = world.cli("--json", "list-uncommitted", timeout=60)
    assert result.returncode == 0, (name, result.stderr[:300])
    assert world.b in {r["id"] for r in json.loads(result.stdout)}
    assert "Traceback" not in result.stderr.decode()
    result = world.cli("commit", "-s", "s2", world.b, timeout=60)
    assert result.returncode == 0, (name, result.stderr[:300])
    result = world.cli("--json", "list-uncommitted", timeout=60)
    assert result.returncode == 0
    assert world.b not in {r["id"] for r in json.loads(result.stdout)}
    result = world.cli("reclaim", "--force", "--older-than", "0s", timeout=60)
    assert result.returncode == 0
    world.assert_a_intact()
    world.assert_b_present()  # committed now


@pytest.mark.parametrize("where", ["start", "middle"])
def test_duplicate_headers_are_harmless_or_refused_cleanly(world: World, where: str) -> None:
    header = b'{"op":"header","format":"lashctl-manifest","version":1}\n'
    raw = world.manifest.read_bytes()
    world.manifest.write_bytes(
        header + raw if where == "start" else raw + header + _line(attachment_id=world.b, session_id="s5") + b"\n"
    )
    for args in (("list-uncommitted",), ("reclaim", "--force", "--older-than", "0s")):
        result = world.cli(*args)
        assert result.returncode in (0, 65), result.stderr
        if result.returncode:
            one_line_error(result.stderr)
    world.assert_a_intact()


@pytest.mark.parametrize(
    "args",
    [
        ("reclaim", "--force", "--older-than", "0s"),
        ("reclaim", "--dry-run"),
        ("list-uncommitted",),
        ("--json", "list-uncommitted"),
    ],
    ids=" ".join,
)
def test_lone_surrogate_in_a_session_id(world: World, args) -> None:
    """Valid JSON (``"\\ud800"``) that is not Unicode text: lash's serde_json rejects it.

    lashctl must either refuse the manifest (65, naming the line) or handle the
    row; it must not sweep blobs and then fail, nor crash with an unexpected error.
    """
    c = plant_blob(world.store, b"orphan C, referenced by a surrogate session")
    raw = world.manifest.read_bytes()
    world.manifest.write_bytes(raw + _line(attachment_id=c, session_id="x\ud800") + b"\n")
    assert b'"x\\ud800"' in world.manifest.read_bytes()
    before = world.state()
    result = world.cli(*args)
    if result.returncode not in (0, 65):
        assert world.state() == before, (
            f"{args}: deleted blobs, then failed with {result.returncode}: {result.stderr!r}"
        )
    assert result.returncode in (0, 65), (args, result.returncode, result.stderr)
    if result.returncode:
        one_line_error(result.stderr)
    world.assert_a_intact()


# -- sidecars ---------------------------------------------------------------------------------
def _sidecar_json(world: World, **override) -> bytes:
    doc = {"id": world.a, "media_type": "text/plain", "byte_len": len(world.a_data), "label": "A"}
    doc.update(override)
    return json.dumps(doc).encode()


SIDECAR_CASES = {
    "other id": (lambda w: _sidecar_json(w, id=w.b), {65}),
    "wrong byte_len": (lambda w: _sidecar_json(w, byte_len=999_999), {0, 65}),
    "negative byte_len": (lambda w: _sidecar_json(w, byte_len=-1), {65}),
    "not JSON": (lambda w: b"not json {", {65}),
    "JSON array": (lambda w: b"[]", {65}),
    "invalid utf-8": (lambda w: b'{"id":"\xff"}', {65}),
    "bad media type": (lambda w: _sidecar_json(w, media_type="text/plain; charset=utf-8"), {65}),
    "unknown tagged image": (lambda w: _sidecar_json(w, media_type={"kind": "image", "type": "tiff"}), {65}),
    "5000-digit byte_len": (
        lambda w: b'{"id":"' + w.a.encode() + b'","media_type":"text/plain","byte_len":' + b"9" * 5000 + b"}",
        {65},
    ),
    "deeply nested": (lambda w: b"[" * 100_000 + b"]" * 100_000, {65}),
    "over 1 MiB": (lambda w: _sidecar_json(w, label="x" * (1 << 20)), {65}),
    "empty": (lambda w: b"", {65}),
}


@pytest.mark.parametrize("name", list(SIDECAR_CASES))
def test_lying_and_undecodable_sidecars(world: World, name: str) -> None:
    make, codes = SIDECAR_CASES[name]
    # On A (committed: get) and on B (uncommitted: list-uncommitted describes it).
    for attachment_id in (world.a, world.b):
        doc = (
            make(world).replace(world.a.encode(), attachment_id.encode())
            if name != "other id"
            else _sidecar_json(world, id=world.b if attachment_id == world.a else world.a)
        )
        sidecar_path(world.store, attachment_id).write_bytes(doc)
    result = world.cli("get", "-o", "-", world.a)
    assert result.returncode in codes, (name, result.returncode, result.stderr[:300])
    if result.returncode == 0:
        assert result.stdout == world.a_data
    else:
        assert result.stdout == b"", f"{name}: get printed bytes and then failed"
        assert "sidecar" in one_line_error(result.stderr)
    result = world.cli("--json", "list-uncommitted")
    assert result.returncode == 0, (name, result.returncode, result.stderr[:300])
    assert "Traceback" not in result.stderr.decode()
    assert [r["id"] for r in json.loads(result.stdout)] == [world.b]
    result = world.cli("reclaim", "--force", "--older-than", "0s")
    assert result.returncode == 0, (name, result.stderr[:300])
    assert not sidecar_path(world.store, world.b).exists()
    world.assert_a_intact()


def test_sidecar_that_is_a_directory(world: World) -> None:
    side = sidecar_path(world.store, world.b)
    side.unlink()
    side.mkdir()
    (side / "inner").write_bytes(b"x")
    result = world.cli("get", "-o", "-", world.b)
    assert result.returncode == 65 and result.stdout == b""
    one_line_error(result.stderr)
    assert world.cli("list-uncommitted").returncode == 0
    result = world.cli("reclaim", "--force", "--older-than", "0s")
    assert result.returncode in (0, 5), result.stderr
    if result.returncode:
        one_line_error(result.stderr)
        # A failed item keeps its rows while its bytes are there; bytes gone
        # take their rows with them (no commit may stamp a row for them).
        kept = ("s2", world.b) in fold_file(world.manifest)
        assert kept == blob_path(world.store, world.b).is_file(), "a failed sweep item's rows and bytes disagree"
    result = world.cli("delete", "--force", world.b)
    assert result.returncode in (0, 1)
    if result.returncode:
        one_line_error(result.stderr)
    world.assert_a_intact()


@pytest.mark.parametrize("command", ["get", "list-uncommitted", "delete"])
def test_fifo_at_a_sidecar_path_does_not_hang(world: World, command: str) -> None:
    """A FIFO where B's sidecar should be: whoever opens it for reading blocks forever."""
    side = sidecar_path(world.store, world.b)
    side.unlink()
    os.mkfifo(side)
    args = {
        "get": ("get", "-o", "-", world.b),
        "list-uncommitted": ("--json", "list-uncommitted"),
        "delete": ("delete", "--force", world.b),
    }[command]
    result = world.cli(*args, timeout=3)
    assert result.returncode in (0, 65), (args, result.stderr)
    if result.returncode:
        one_line_error(result.stderr)
    world.assert_a_intact()


def test_sidecar_symlink_to_an_outside_file_is_never_followed(world: World) -> None:
    """The outside file is a *valid* sidecar for A with a telling label."""
    side = sidecar_path(world.store, world.a)
    side.unlink()
    decoy = world.outside / "decoy.json"
    decoy.write_bytes(_sidecar_json(world, label="TOP SECRET label"))
    world.outside_before = snapshot_tree(world.outside)
    side.symlink_to(decoy)
    result = world.cli("get", "-o", "-", world.a)
    assert result.returncode in (0, 65)
    assert result.stdout in (world.a_data, b"")
    no_secret(result)
    write_manifest(world.manifest, world.events + [intent(world.a, "s7", OLD)])
    result = world.cli("--json", "list-uncommitted")
    assert result.returncode == 0
    no_secret(result)
    result = world.cli("delete", "--force", world.a)
    assert result.returncode == 0, result.stderr
    assert not side.is_symlink() and not side.exists()
    world.assert_outside_untouched()


@pytest.mark.parametrize("target", ["secret", "fifo"])
def test_put_never_reads_or_writes_through_a_planted_sidecar_symlink(world: World, target: str) -> None:
    data = b"new content whose sidecar path was planted"
    new_id = sha(data)
    src = world.base / "input.txt"
    src.write_bytes(data)
    side = sidecar_path(world.store, new_id)
    side.parent.mkdir(parents=True, exist_ok=True)
    side.symlink_to(world.secret if target == "secret" else world.fifo)
    result = world.cli("put", "-s", "s8", str(src), timeout=3)
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().split() == [new_id]
    assert file_sha(blob_path(world.store, new_id)) == new_id
    world.assert_outside_untouched()


# -- symlinks and odd files at blob paths -------------------------------------------------------
def test_blob_symlink_to_an_outside_file(world: World) -> None:
    """``sha256/xx/<id>`` is a link to an outside file that even hashes to <id>."""
    planted = sha(SECRET)
    link = blob_path(world.store, planted)
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(world.secret)
    for args in (("get", "-o", "-", planted), ("get", planted, "-o", str(world.base / "copy"))):
        result = world.cli(*args)
        assert result.returncode == 65, (args, result.returncode, result.stderr)
        assert result.stdout == b""
        no_secret(result)
        one_line_error(result.stderr)
        assert not (world.base / "copy").exists()
    result = world.cli("--json", "list-uncommitted")
    assert result.returncode == 0
    no_secret(result)
    result = world.cli("delete", planted)
    assert result.returncode == 0, result.stderr
    assert not link.is_symlink() and not link.exists()
    world.assert_outside_untouched()

    # Again, reached by reclaim through an orphan row.
    link.symlink_to(world.secret)
    write_manifest(world.manifest, world.events + [intent(planted, "s6", OLD)])
    result = world.cli("get", "-o", "-", planted[:8])
    assert result.returncode == 65 and result.stdout == b""
    result = world.cli("reclaim", "--force", "--older-than", "0s")
    assert result.returncode == 0, result.stderr
    assert not link.is_symlink()
    world.assert_outside_untouched()

    # And replaced by a real blob when the same bytes are put.
    link.symlink_to(world.secret)
    src = world.base / "same-bytes"
    src.write_bytes(SECRET)
    result = world.cli("put", "-s", "s6", str(src))
    assert result.returncode == 0, result.stderr
    assert not link.is_symlink() and file_sha(link) == planted
    result = world.cli("get", "-o", "-", planted)
    assert result.returncode == 0 and result.stdout == SECRET
    world.assert_outside_untouched()
    world.assert_a_intact()


def test_shard_directory_symlinked_outside_the_store(world: World) -> None:
    """``sha256/xx`` is a link to an outside directory holding a valid blob and sidecar."""
    data = b"content that lives outside the store"
    planted = sha(data)
    outside_shard = world.outside / "shard"
    outside_shard.mkdir()
    (outside_shard / planted).write_bytes(data)
    (outside_shard / (planted + ".json")).write_bytes(
        json.dumps(
            {"id": planted, "media_type": "text/plain", "byte_len": len(data), "label": "TOP SECRET label"}
        ).encode()
    )
    world.outside_before = snapshot_tree(world.outside)
    shard = world.store / "sha256" / planted[:2]
    assert not shard.exists()
    shard.symlink_to(outside_shard)
    write_manifest(world.manifest, world.events + [intent(planted, "s6", OLD)])
    result = world.cli("get", "-o", "-", planted)
    assert result.returncode in (3, 65) and result.stdout == b"", "get read a blob through a symlinked shard"
    one_line_error(result.stderr)
    result = world.cli("--json", "list-uncommitted")
    assert result.returncode == 0
    no_secret(result)
    src = world.base / "same.txt"
    src.write_bytes(data)
    for args in (
        ("delete", "--force", planted),
        ("reclaim", "--force", "--older-than", "0s"),
        ("put", "-s", "s6", str(src)),
    ):
        result = world.cli(*args)
        assert result.returncode in (0, 1, 5, 65), (args, result.returncode, result.stderr)
        if result.returncode:
            one_line_error(result.stderr)
        world.assert_outside_untouched()
    world.assert_a_intact()


def test_blob_symlink_to_an_outside_directory(world: World) -> None:
    planted = "ab" + "c" * 62
    link = blob_path(world.store, planted)
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(world.outside / "dir")
    write_manifest(world.manifest, world.events + [intent(planted, "s6", OLD)])
    result = world.cli("get", "-o", "-", planted)
    assert result.returncode in (3, 65)
    one_line_error(result.stderr)
    result = world.cli("reclaim", "--force", "--older-than", "0s")
    assert result.returncode == 0, result.stderr
    assert not link.is_symlink()
    world.assert_outside_untouched()


def test_directory_or_fifo_at_a_blob_path(world: World) -> None:
    d = "d" * 64
    blob_path(world.store, d).parent.mkdir(parents=True, exist_ok=True)
    blob_path(world.store, d).mkdir()
    f = "0f" + "0" * 62
    blob_path(world.store, f).parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(blob_path(world.store, f))
    write_manifest(world.manifest, world.events + [intent(d, "s6", OLD), intent(f, "s6", OLD)])
    for attachment_id in (d, f):
        result = world.cli("get", "-o", "-", attachment_id, timeout=5)
        assert result.returncode in (3, 65), result.stderr
        one_line_error(result.stderr)
    result = world.cli("--json", "reclaim", "--force", "--older-than", "0s", timeout=5)
    assert result.returncode in (0, 5), result.stderr
    if result.returncode == 5:
        one_line_error(result.stderr)
        failed = {i["id"] for i in json.loads(result.stdout)["items"] if i["action"] == "failed"}
        rows = fold_file(world.manifest)
        assert all(("s6", i) in rows for i in failed), "a failed item's rows were forgotten"
    world.assert_a_intact()


# -- missing, read-only and full stores ------------------------------------------------------
def test_missing_store(world: World) -> None:
    """A store named with --store that does not exist: a usage error naming it, nothing created."""
    gone = world.base / "no-such-store"
    for args in (
        ["get", "-o", "-", world.a],
        ["--json", "list-uncommitted"],
        ["list-uncommitted"],
        ["reclaim", "--dry-run"],
        ["reclaim"],
        ["commit", "-s", "s1", world.a],
    ):
        result = world.cli(*args, store=gone)
        assert result.returncode == 2, args
        assert str(gone) in one_line_error(result.stderr)
        assert not gone.exists(), f"{args} created the store"


@pytest.fixture
def read_only_world(world: World):
    """The store behind a read-only bind mount (root ignores permission bits)."""
    mount = world.base / "ro-store"
    mount.mkdir()
    if subprocess.run(["mount", "--bind", str(world.store), str(mount)], capture_output=True).returncode:
        pytest.skip("cannot bind-mount (needs root)")
    try:
        if subprocess.run(["mount", "-o", "remount,bind,ro", str(mount)], capture_output=True).returncode:
            pytest.skip("cannot remount read-only")
        yield world, mount
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


def test_read_only_store(read_only_world) -> None:
    world, mount = read_only_world
    src = world.base / "new.txt"
    src.write_bytes(b"cannot land")
    before = world.state()
    for args, codes in (
        (("put", "-s", "s1", str(src)), {1}),
        (("commit", "-s", "s2", world.b), {1}),
        (("reclaim", "--force", "--older-than", "0s"), {1, 5}),
        (("delete", "--force", world.b), {1}),
    ):
        result = world.cli(*args, store=mount)
        assert result.returncode in codes, (args, result.returncode, result.stderr)
        line = one_line_error(result.stderr)
        assert "read-only" in line.lower() or "Read-only" in line, line
    assert world.state() == before
    result = world.cli("get", "-o", "-", world.a, store=mount)
    assert result.returncode == 0 and result.stdout == world.a_data
    result = world.cli("--json", "list-uncommitted", store=mount)
    assert result.returncode == 0 and [r["id"] for r in json.loads(result.stdout)] == [world.b]


def test_read_only_store_simulated(shm_path: Path, monkeypatch) -> None:
    """Fault injection (in-process): every rename and every create fails with EROFS."""
    from typer.testing import CliRunner

    from lashctl.cli import app

    store = shm_path / "store"
    runner = CliRunner()
    src = shm_path / "in.txt"
    src.write_bytes(b"some bytes")
    ok = runner.invoke(app, ["--store", str(store), "put", "-s", "s", str(src)])
    assert ok.exit_code == 0
    before = snapshot_tree(store)
    real_open = os.open

    def erofs_open(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *args, **kwargs)

    def erofs_replace(src, dst, *args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(src))

    monkeypatch.setattr(os, "open", erofs_open)
    monkeypatch.setattr(os, "replace", erofs_replace)
    src2 = shm_path / "in2.txt"
    src2.write_bytes(b"other bytes")
    for args in (
        ["put", "-s", "s", str(src2)],
        ["commit", "-s", "s", sha(b"some bytes")],
        ["reclaim", "--force", "--older-than", "0s"],
    ):
        result = runner.invoke(app, ["--store", str(store), *args])
        CASES["runs"] += 1
        assert result.exit_code == 1, (args, result.exit_code, result.stderr)
        one_line_error(result.stderr.encode())
    monkeypatch.undo()
    assert snapshot_tree(store) == before


@pytest.fixture
def tiny_fs(shm_path: Path):
    mount = shm_path / "tiny"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs (needs root)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


def test_disk_full_mid_put(tiny_fs: Path, shm_path: Path) -> None:
    store = tiny_fs / "store"
    small = shm_path / "small.txt"
    small.write_bytes(b"committed before the disk filled")
    CASES["runs"] += 1
    result = run(["--store", str(store), "-q", "put", "-s", "s", str(small)])
    kept = result.stdout.decode().strip()
    assert run(["--store", str(store), "-q", "commit", "-s", "s", kept]).returncode == 0
    big = shm_path / "big.bin"
    big.write_bytes(os.urandom(4 << 20))
    result = run(["--store", str(store), "put", "-s", "s", str(small), str(big)])
    CASES["runs"] += 1
    assert result.returncode == 1, result.stderr
    line = one_line_error(result.stderr)
    assert "No space left" in line or "space" in line, line
    assert result.stdout == b""
    assert not blob_path(store, file_sha(big)).exists()
    assert staging_litter(store) == [], "a failed put left staging files"
    assert file_sha(blob_path(store, kept)) == kept
    rows = fold_file(store / "manifest.jsonl")
    assert rows[("s", kept)]["committed_at_epoch_ms"] is not None
    assert run(["--store", str(store), "list-uncommitted"]).returncode == 0


def test_disk_full_mid_manifest_append(tiny_fs: Path, shm_path: Path) -> None:
    store = tiny_fs / "store"
    srcs = []
    for i in range(60):
        path = shm_path / f"f{i}"
        path.write_bytes(f"file {i}".encode())
        srcs.append(str(path))
    (shm_path / "list").write_text("\n".join(srcs))
    result = run(["--store", str(store), "-q", "put", "-s", "s", "--files-from", str(shm_path / "list")])
    assert result.returncode == 0, result.stderr
    ids = result.stdout.decode().split()
    assert run(["--store", str(store), "-q", "commit", "-s", "s", *ids[:10]]).returncode == 0
    filler = tiny_fs / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    result = run(["--store", str(store), "commit", "-s", "s", *ids])
    CASES["runs"] += 1
    assert result.returncode in (0, 1), result.stderr
    if result.returncode:
        one_line_error(result.stderr)
    listing = run(["--store", str(store), "--json", "list-uncommitted"])
    assert listing.returncode == 0, listing.stderr
    rows = fold_file(store / "manifest.jsonl")
    assert all(rows[("s", i)]["committed_at_epoch_ms"] is not None for i in ids[:10])
    for i in ids:
        assert file_sha(blob_path(store, i)) == i
    filler.unlink()
    result = run(["--store", str(store), "-q", "commit", "-s", "s", *ids])
    assert result.returncode == 0, result.stderr
    rows = fold_file(store / "manifest.jsonl")
    assert all(r["committed_at_epoch_ms"] is not None for r in rows.values())


def test_disk_full_simulated(shm_path: Path, monkeypatch) -> None:
    """Fault injection: writes into tmp/ fail with ENOSPC after 1 MiB."""
    from typer.testing import CliRunner

    from lashctl.cli import app

    store = shm_path / "store"
    runner = CliRunner()
    keep = shm_path / "keep.txt"
    keep.write_bytes(b"kept")
    assert runner.invoke(app, ["--store", str(store), "put", "-s", "s", str(keep)]).exit_code == 0
    assert runner.invoke(app, ["--store", str(store), "commit", "-s", "s", sha(b"kept")]).exit_code == 0
    big = shm_path / "big.bin"
    big.write_bytes(os.urandom(4 << 20))
    real_write = os.write
    written = {"n": 0}

    def enospc_write(fd, data):
        target = os.readlink(f"/proc/self/fd/{fd}")
        if "/tmp/" in target and target.startswith(str(store)):
            if written["n"] > (1 << 20):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            written["n"] += len(data)
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", enospc_write)
    result = runner.invoke(app, ["--store", str(store), "put", "-s", "s", str(big)])
    monkeypatch.undo()
    CASES["runs"] += 1
    assert result.exit_code == 1, result.stderr
    one_line_error(result.stderr.encode())
    assert not blob_path(store, file_sha(big)).exists()
    assert staging_litter(store) == []
    assert file_sha(blob_path(store, sha(b"kept"))) == sha(b"kept")


# -- odd names, sessions and cutoffs -----------------------------------------------------------
def test_put_of_a_file_whose_name_is_not_utf8(world: World) -> None:
    """Latin-1 file names are common; the label defaults to the base name."""
    name = os.fsencode(world.base) + b"/caf\xe9.txt"
    with open(name, "wb") as handle:
        handle.write(b"latin-1 named file")
    data_id = sha(b"latin-1 named file")
    result = world.cli("put", "-s", "s1", name)
    assert result.returncode in (0, 2), result.stderr
    if result.returncode == 0:
        assert result.stdout.decode().split() == [data_id]
        from lashctl.backends.blobs.localfs import read_sidecar_file as read

        assert read(sidecar_path(world.store, data_id)).attachment_id == data_id
    else:
        one_line_error(result.stderr)
        assert ("s1", data_id) not in fold_file(world.manifest)


@pytest.mark.parametrize("session", [b"\xff", b"caf\xe9", "x" * 2000, "a\nb", "a\x1bb", " "])
def test_hostile_session_ids(world: World, session) -> None:
    src = world.base / "s.txt"
    src.write_bytes(b"session test")
    before = fold_file(world.manifest)
    for args, codes in ((("put", "-s", session, str(src)), {2}), (("commit", "-s", session, world.b), {2, 3})):
        result = world.cli(*args)
        assert result.returncode in codes, (args[0], session[:20], result.returncode, result.stderr)
        one_line_error(result.stderr)
    assert fold_file(world.manifest) == before


@pytest.mark.parametrize(
    "args",
    [
        ("reclaim", "--before", "0001-01-01T00:00:00+14:00"),
        ("reclaim", "--force", "--before", "99999999999999999999999"),
        ("reclaim", "--force", "--older-than", "9" * 30 + "d"),
        ("reclaim", "--older-than", "9" * 5000 + "s"),
        ("list-uncommitted", "--older-than", "9" * 30 + "d"),
        ("list-uncommitted", "--before", "99999999999999999999999"),
        ("reclaim", "--older-than", "-5m"),
        ("reclaim", "--before", "yesterday"),
        ("reclaim", "--older-than", "1h", "--before", "0"),
    ],
    ids=lambda a: " ".join(a)[:50],
)
def test_out_of_range_cutoffs_are_usage_errors(world: World, args) -> None:
    before = world.state()
    result = world.cli(*args)
    assert result.returncode in (0, 2), (result.returncode, result.stderr[:300])
    if result.returncode:
        one_line_error(result.stderr)
        assert world.state() == before, "a cutoff that was then rejected swept the store"
    world.assert_a_intact()
