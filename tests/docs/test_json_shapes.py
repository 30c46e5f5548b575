"""docs/json.md gives the JSON of every command's --json output: here the
installed lashctl runs each command on one scratch store, and its real
output must have exactly the documented shape (the same keys, values of the
documented types, each array's items too)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
from lash_sqlite_fixture import make_session_db
from reliability_helpers import find_lashctl
from typer.main import get_command

from lashctl.cli import app

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "json.md"

# Sections a scratch store cannot run, and why (not in the words .ci/run reads as a skipped backend test).
NOT_OFFLINE = {"manifest init": "needs a database server"}
# Arrays the scenario leaves empty, and why that is fine.
EMPTY_ARRAYS = {
    "forget.missing": "every id the scenario names has a row",
    "migrate.failures": "a clean copy has none",
    "migrate.notes": "a clean copy has none",
    "manifest check (lash-sqlite).problems": "the session database is sound",
}
TYPES = {
    "string": str,
    "integer": int,
    "number": (int, float),
    "boolean": bool,
    "null": type(None),
    "object": dict,
    "array": list,
}


def documented() -> dict[str, object]:
    """Section name -> the shape in its first ```json block."""
    text = DOC.read_text()
    shapes = {}
    for match in re.finditer(r"^## `([^`]+)`\n(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL):
        block = re.search(r"```json\n(.*?)\n```", match.group(2), re.DOTALL)
        assert block, f"docs/json.md: section {match.group(1)} has no json block"
        shapes[match.group(1)] = json.loads(block.group(1))
    return shapes


def check(shape, value, where: str, seen: set[str]) -> None:
    """Assert that value has the shape; record the arrays seen with items."""
    if isinstance(shape, str):
        allowed = tuple(TYPES[name] for name in shape.split("|"))
        ok = isinstance(value, allowed) and not (isinstance(value, bool) and bool not in allowed)
        assert ok, f"{where}: {value!r} is not {shape}"
    elif isinstance(shape, list):
        assert isinstance(value, list), f"{where}: {value!r} is not an array"
        if value:
            seen.add(where)
        for item in value:  # one of the documented item shapes
            errors = []
            for option in shape:
                try:
                    check(option, item, f"{where}[]", seen)
                    break
                except AssertionError as exc:
                    errors.append(str(exc))
            else:
                raise AssertionError(" / ".join(errors))
    else:
        assert isinstance(value, dict), f"{where}: {value!r} is not an object"
        assert set(value) == set(shape), (
            f"{where}: keys differ from docs/json.md: missing {sorted(set(shape) - set(value))}, "
            f"undocumented {sorted(set(value) - set(shape))}"
        )
        for key, sub in shape.items():
            check(sub, value[key], f"{where}.{key}", seen)


def array_paths(shape, where: str) -> set[str]:
    if isinstance(shape, list):
        return {where}.union(*(array_paths(option, f"{where}[]") for option in shape))
    if isinstance(shape, dict):
        return set().union(*(array_paths(sub, f"{where}.{key}") for key, sub in shape.items()))
    return set()


def every_command() -> list[str]:
    group = get_command(app)
    names = []
    for name in group.list_commands(None):
        command = group.get_command(None, name)
        if hasattr(command, "commands"):
            names.extend(f"{name} {sub}" for sub in sorted(command.commands))
        else:
            names.append(name)
    return names


def test_every_command_has_a_documented_shape():
    shapes = documented()
    missing = [name for name in every_command() if name not in shapes]
    assert not missing, f"docs/json.md has no section for {missing}"


@pytest.fixture(scope="module")
def outputs(tmp_path_factory) -> dict[str, object]:
    """Each documented section's real --json output, from one scratch store."""
    tmp = tmp_path_factory.mktemp("json")
    store = tmp / "store"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LASHCTL_")}
    env.update(
        HOME=str(tmp),
        LASHCTL_CACHE_DIR=str(tmp / "cache"),
        LASHCTL_STORE=str(store),
        XDG_DATA_HOME=str(tmp / "data"),
        COLUMNS="80",
        NO_COLOR="1",
    )
    exe = find_lashctl()

    def run(*argv: str, code: int = 0, manifest: object = None) -> object:
        extra = ["--manifest", str(manifest)] if manifest else []
        result = subprocess.run(
            [exe, "--json", *extra, *argv], capture_output=True, text=True, env=env, cwd=tmp, timeout=120
        )
        assert result.returncode == code, (argv, result.returncode, result.stderr)
        return json.loads(result.stdout)

    def data(name: str, content: bytes) -> str:
        (tmp / name).write_bytes(content)
        return name

    day_ago = time.time() - 3 * 86400
    got: dict[str, object] = {}
    got["put"] = run("put", "-s", "s1", data("a", b"first"), data("b", b"second"))
    first, second = (item["id"] for item in got["put"])
    got["init"] = run("init")
    got["commit"] = run("commit", "-s", "s1", first)
    run("put", "-s", "s2", data("c", b"third"))
    old = run("put", "-s", "old", data("d", b"an old orphan"))[0]["id"]
    # The 'old' session's intent and bytes are three days old: reclaim's candidate.
    manifest = store / "manifest.jsonl"
    lines = []
    for line in manifest.read_text().splitlines():
        event = json.loads(line)
        if event.get("session_id") == "old":
            event["intent_at_epoch_ms"] = int(day_ago * 1000)
        lines.append(json.dumps(event))
    manifest.write_text("\n".join(lines) + "\n")
    # A blob no row references and a staging file, both old: gc's and verify's findings.
    stray = b"unreferenced"
    stray_id = hashlib.sha256(stray).hexdigest()
    (store / "sha256" / stray_id[:2]).mkdir(exist_ok=True)
    (store / "sha256" / stray_id[:2] / stray_id).write_bytes(stray)
    (store / "tmp" / "left.part").write_bytes(b"litter")
    for path in [
        store / "sha256" / old[:2] / old,
        store / "sha256" / old[:2] / f"{old}.json",
        store / "sha256" / stray_id[:2] / stray_id,
        store / "tmp" / "left.part",
    ]:
        os.utime(path, (day_ago, day_ago))

    got["get"] = run("get", first, "-o", "out.bin")
    got["list-uncommitted"] = run("list-uncommitted")
    got["ls"] = run("ls")
    got["show"] = run("show", first)
    got["stats"] = run("stats")
    got["stats (by media type)"] = run("stats", "--by", "media-type")
    got["verify"] = run("verify", code=65)  # the stray blob has no sidecar: an error
    got["forget"] = run("forget", "-n", "-s", "s2")
    got["reclaim"] = run("reclaim", "-n")
    got["gc"] = run("gc", "-n")
    got["delete"] = run("delete", "-n", "--force", second)
    got["manifest check"] = run("manifest", "check")
    got["manifest log"] = run("manifest", "log")
    got["manifest compact"] = run("manifest", "compact", "-n")
    got["migrate"] = run("migrate", "--to-store", str(tmp / "copy"))
    # A malformed line, read where the manifest is copied with one more line.
    bad = tmp / "bad.jsonl"
    bad.write_text(manifest.read_text() + "not json\n")
    got["manifest check (malformed)"] = run("manifest", "check", code=65, manifest=bad)
    got["manifest log (malformed)"] = run("manifest", "log", code=65, manifest=bad)
    # lash's SQLite session databases: manifest check reads every one.
    sessions = tmp / "sessions"
    make_session_db(sessions, "s9")
    run("put", "-s", "s9", data("e", b"in a session database"), manifest=f"lash-sqlite:{sessions}")
    got["manifest check (lash-sqlite)"] = run("manifest", "check", manifest=f"lash-sqlite:{sessions}")
    # A real delete writes the audit log that audit and show (of the id now gone) read.
    run("delete", "--force", second)
    got["audit"] = run("audit")
    got["show (gone)"] = run("show", second, code=3)
    got["error"] = run("get", "0000", code=3)
    got["error (usage)"] = run("get", "--no-such-option", code=2)
    return got


def test_every_output_has_its_documented_shape(outputs):
    shapes = documented()
    seen: set[str] = set()
    ran = set()
    for run, value in outputs.items():
        # "manifest log (malformed)": another run of the section "manifest log".
        name = run if run in shapes else re.sub(r" \(.*\)$", "", run)
        assert name in shapes, f"docs/json.md has no section for {run}"
        check(shapes[name], value, name, seen)
        ran.add(name)
    for name in shapes:
        if name not in NOT_OFFLINE:
            assert name in ran, f"docs/json.md documents {name}, which this test never runs"
    unexercised = {p for name in ran for p in array_paths(shapes[name], name)} - seen - set(EMPTY_ARRAYS)
    assert not unexercised, f"arrays whose items were never checked: {sorted(unexercised)}"


@pytest.mark.parametrize("name", sorted(NOT_OFFLINE))
def test_sections_that_need_a_server(name):
    assert name in documented()
    pytest.skip(f"{name}: {NOT_OFFLINE[name]}; its shape is not checked here")
