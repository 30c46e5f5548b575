"""Staging names fit NAME_MAX (255 bytes) whatever the final name: a long name
is cut, on a UTF-8 character boundary, to leave room for the dot, the random
part and ``.part``; what gc and verify look for as litter is the same cut."""

from __future__ import annotations

import json
import os

import pytest

from reliability_helpers import run

pytestmark = pytest.mark.e2e

LONG_NAMES = ["x" * 240, "é" * 127, "x" + "€" * 84, "x" * 255]


def _put(store, data: bytes, *extra) -> str:
    result = run(["--store", store, *extra, "put", "-s", "s", "-"], input=data)
    assert result.returncode == 0, result.stderr
    return result.stdout.decode().strip()


@pytest.mark.parametrize("name", LONG_NAMES, ids=["ascii240", "e-acute127", "euro84", "ascii255"])
def test_get_to_a_name_as_long_as_the_file_system_allows(tmp_path, name):
    assert len(name.encode()) <= 255
    store = tmp_path / "store"
    attachment_id = _put(store, b"bytes")
    out = tmp_path / "out"
    out.mkdir()
    result = run(["--store", store, "get", attachment_id, "-o", out / name])
    assert result.returncode == 0, result.stderr
    assert (out / name).read_bytes() == b"bytes"
    assert [p.name for p in out.iterdir()] == [name]


@pytest.mark.parametrize("name", ["m" * 236 + ".jsonl", "x" + "é" * 118 + ".jsonl"], ids=["ascii", "utf8"])
def test_compaction_of_a_manifest_with_a_long_name(tmp_path, name):
    assert len(name.encode()) + len(".lock") <= 255
    manifest = tmp_path / "meta" / name
    where = ["--store", tmp_path / "store", "--manifest", manifest]
    _put(where[1], b"one", *where[2:])
    _put(where[1], b"one", *where[2:])
    result = run([*where, "--json", "manifest", "compact"])
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["lines_after"] == 2
    assert sorted(p.name for p in manifest.parent.iterdir()) == sorted([name, name + ".lock"])


@pytest.mark.parametrize(
    "name, kept",
    [
        ("m" * 236 + ".jsonl", "m" * 236),  # cut to 236 bytes
        ("x" + "é" * 118 + ".jsonl", "x" + "é" * 117),  # 236 bytes would split an é: cut at 235
        ("short.jsonl", "short.jsonl"),  # a name that fits is kept whole
    ],
)
def test_litter_of_a_killed_compaction_is_found_under_the_cut_name(tmp_path, name, kept):
    manifest = tmp_path / "meta" / name
    where = ["--store", tmp_path / "store", "--manifest", manifest]
    _put(where[1], b"one", *where[2:])
    litter = manifest.parent / f".{kept}.0123456789ab.part"
    assert len(litter.name.encode()) <= 255
    litter.write_bytes(b"half a manifest")
    old = 1_000_000_000
    os.utime(litter, (old, old))
    found = run([*where, "--json", "verify"])
    findings = json.loads(found.stdout)["findings"]
    assert [f["path"] for f in findings if f["kind"] == "staging-litter"] == [str(litter)], findings
    assert run([*where, "gc"]).returncode == 0
    assert not litter.exists()
