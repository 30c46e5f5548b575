"""End to end: the operator-tooling commands (show, ls, stats, verify, gc,
manifest check/log/compact) through the installed ``lashctl`` in a subprocess,
on stores built with ``lashctl put``/``commit`` and then damaged by hand.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from conftest import LASHCTL_ENV, blob_path, png_bytes, sha, sidecar_path
from reliability_helpers import find_lashctl

pytestmark = pytest.mark.e2e

LASHCTL = find_lashctl()
HEX64 = re.compile(r"[0-9a-f]{64}")
ANSI = re.compile(rb"\x1b[\[\]()]")
HOUR = 3_600_000
DAY = 24 * HOUR


# -- helpers ---------------------------------------------------------------------------
def env(**extra: str) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if k not in LASHCTL_ENV}
    # Tempt Rich into colour and wrapping: output to a pipe must stay plain.
    e.update({"COLUMNS": "30", "TERM": "xterm-256color", "FORCE_COLOR": "1"})
    e.update(extra)
    return e


def run(store: Path, *args: str, input: bytes = b"", environ: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(LASHCTL), "--store", str(store), *args],
        input=input,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=environ or env(),
        timeout=60,
    )


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, (proc.returncode, proc.stdout[:3000], proc.stderr.decode())
    assert b"Traceback" not in proc.stderr
    return proc


def fails(proc: subprocess.CompletedProcess, code: int) -> subprocess.CompletedProcess:
    assert proc.returncode == code, (proc.returncode, proc.stdout[:3000], proc.stderr.decode())
    assert b"Traceback" not in proc.stderr
    return proc


def as_json(proc: subprocess.CompletedProcess):
    return json.loads(proc.stdout)


blob = blob_path


side = sidecar_path


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def put(store: Path, inputs: Path, session: str, files: dict[str, bytes]) -> list[str]:
    """``lashctl put -s SESSION FILE...``; returns the ids printed, checked against the content."""
    paths = []
    for name, data in files.items():
        (inputs / name).write_bytes(data)
        paths.append(str(inputs / name))
    proc = ok(run(store, "put", "-s", session, *paths))
    ids = proc.stdout.decode().split()
    assert ids == [sha(d) for d in files.values()]
    return ids


def commit(store: Path, session: str, *ids: str) -> None:
    ok(run(store, "commit", "-s", session, *ids))


def event(op: str, attachment_id: str, session: str, at: int | None = None) -> dict:
    if op == "intent":
        return {
            "op": "intent",
            "attachment_id": attachment_id,
            "session_id": session,
            "canonical_uri": "sha256:" + attachment_id,
            "intent_at_epoch_ms": at,
        }
    if op == "commit":
        return {"op": "commit", "attachment_id": attachment_id, "session_id": session, "committed_at_epoch_ms": at}
    return {"op": "forget", "attachment_id": attachment_id, "session_id": session}


def append_lines(manifest: Path, *events: dict) -> None:
    """Hand-written manifest lines, as an operator with an editor would add them."""
    existing = manifest.read_bytes() if manifest.exists() else b""
    assert existing == b"" or existing.endswith(b"\n")
    with open(manifest, "ab") as handle:
        if not existing:
            handle.write(b'{"op":"header","format":"lashctl-manifest","version":1}\n')
        for e in events:
            handle.write(json.dumps(e, separators=(",", ":")).encode() + b"\n")


def sidecar_bytes(attachment_id: str, media_type: str, byte_len: int, label: str | None = None) -> bytes:
    obj = {"id": attachment_id, "media_type": media_type, "byte_len": byte_len}
    if label is not None:
        obj["label"] = label
    return json.dumps(obj, indent=2).encode()


def plant(root: Path, data: bytes, media_type: str = "text/plain", label: str | None = None) -> str:
    """Bytes and a valid sidecar written by hand under the right path, with no row."""
    attachment_id = sha(data)
    blob(root, attachment_id).parent.mkdir(parents=True, exist_ok=True)
    blob(root, attachment_id).write_bytes(data)
    side(root, attachment_id).write_bytes(sidecar_bytes(attachment_id, media_type, len(data), label))
    return attachment_id


def age(path: Path, ms: int) -> None:
    t = (now_ms() - ms) / 1000
    os.utime(path, (t, t), follow_symlinks=False)


def tree(root: Path) -> dict[str, tuple]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            if os.path.islink(p):
                out[str(p)] = ("link", os.readlink(p))
            elif p.is_dir():
                out[str(p)] = ("dir",)
            else:
                st = os.lstat(p)
                out[str(p)] = ("file", st.st_size, sha(p.read_bytes()), st.st_mtime_ns)
    return out


def commit_time(manifest: Path, attachment_id: str, session: str) -> int:
    for line in manifest.read_bytes().splitlines():
        e = json.loads(line)
        if e["op"] == "commit" and e["attachment_id"] == attachment_id and e["session_id"] == session:
            return e["committed_at_epoch_ms"]
    raise AssertionError("no commit line")


def no_ansi(data: bytes) -> None:
    assert not ANSI.search(data), data[:500]
    assert b"\r" not in data, data[:500]


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    d = tmp_path / "inputs"
    d.mkdir()
    return d


# -- a store with every kind of damage -------------------------------------------------
def build_damaged(root: Path, inputs: Path) -> dict:
    corrupt_data = b"this blob will have a byte flipped"
    nosidecar_png = png_bytes(7, 11)
    good, corrupt, nosidecar, undecodable, mismatch, lost_committed = put(
        root,
        inputs,
        "alpha",
        {
            "good.png": png_bytes(5, 3),
            "corrupt.bin": corrupt_data,
            "pixel.png": nosidecar_png,
            "undecodable.txt": b"this sidecar will not decode",
            "mismatch.txt": b"this sidecar will lie about byte_len",
            "lost.txt": b"committed, then lost by hand",
        },
    )
    commit(root, "alpha", good, corrupt, nosidecar, undecodable, mismatch, lost_committed)
    [lost_uncommitted] = put(root, inputs, "beta", {"interrupted.txt": b"an interrupted put"})

    damaged = bytearray(corrupt_data)
    damaged[3] ^= 0x01
    blob(root, corrupt).write_bytes(bytes(damaged))
    side(root, nosidecar).unlink()
    side(root, undecodable).write_bytes(b"{ this is not json")
    meta = json.loads(side(root, mismatch).read_text())
    meta["byte_len"] += 1
    side(root, mismatch).write_text(json.dumps(meta, indent=2))
    blob(root, lost_committed).unlink()  # its sidecar stays: an orphan sidecar whose id has a row
    blob(root, lost_uncommitted).unlink()
    side(root, lost_uncommitted).unlink()
    unmanaged = plant(root, b"written by hand, no intent", "text/plain", "hand.txt")
    orphan_sidecar = sha(b"only the sidecar of this remains")
    side(root, orphan_sidecar).parent.mkdir(parents=True, exist_ok=True)
    side(root, orphan_sidecar).write_bytes(sidecar_bytes(orphan_sidecar, "text/plain", 32, "gone.txt"))
    tmp_litter = root / "tmp" / "put-0123456789abcdef.part"
    tmp_litter.write_bytes(b"partial")
    lash_tmp = blob(root, good).with_name(good + ".tmp")
    lash_tmp.write_bytes(b"lash")
    bad_name = blob(root, good).parent / "notes.txt"
    bad_name.write_bytes(b"not a blob")
    wrong_data = b"a blob in the wrong shard"
    wrong_id = sha(wrong_data)
    wrong_prefix = root / "sha256" / ("00" if wrong_id[:2] != "00" else "01") / wrong_id
    wrong_prefix.parent.mkdir(parents=True, exist_ok=True)
    wrong_prefix.write_bytes(wrong_data)
    link_id = sha(b"a symlink named like a blob")
    symlink = blob(root, link_id)
    symlink.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(blob(root, good), symlink)
    return dict(
        good=good,
        corrupt=corrupt,
        corrupt_bytes=bytes(damaged),
        nosidecar=nosidecar,
        nosidecar_png=nosidecar_png,
        undecodable=undecodable,
        mismatch=mismatch,
        lost_committed=lost_committed,
        lost_uncommitted=lost_uncommitted,
        unmanaged=unmanaged,
        orphan_sidecar=orphan_sidecar,
        tmp_litter=tmp_litter,
        lash_tmp=lash_tmp,
        bad_name=bad_name,
        wrong_prefix=wrong_prefix,
        symlink=symlink,
    )


def expected(root: Path, d: dict) -> list[tuple]:
    return sorted(
        [
            ("hash-mismatch", "error", str(blob(root, d["corrupt"]))),
            ("sidecar-missing", "error", str(side(root, d["nosidecar"]))),
            ("sidecar-undecodable", "error", str(side(root, d["undecodable"]))),
            ("sidecar-mismatch", "error", str(side(root, d["mismatch"]))),
            ("staging-litter", "warning", str(d["tmp_litter"])),
            ("staging-litter", "warning", str(d["lash_tmp"])),
            ("stray-file", "error", str(d["bad_name"])),
            ("stray-file", "error", str(d["wrong_prefix"])),
            ("stray-file", "error", str(d["symlink"])),
            ("committed-bytes-missing", "error", str(blob(root, d["lost_committed"]))),
            ("uncommitted-bytes-missing", "warning", str(blob(root, d["lost_uncommitted"]))),
            ("unmanaged", "warning", str(blob(root, d["unmanaged"]))),
            ("orphan-sidecar-file", "warning", str(side(root, d["lost_committed"]))),
            ("orphan-sidecar-file", "warning", str(side(root, d["orphan_sidecar"]))),
        ]
    )


def found(doc: dict) -> list[tuple]:
    return sorted((f["kind"], f["severity"], f["path"]) for f in doc["findings"])


@pytest.fixture
def damaged(store: Path, inputs: Path) -> dict:
    return build_damaged(store, inputs)


# -- verify ----------------------------------------------------------------------------
def test_verify_json_reports_every_kind_and_exits_65(store, damaged):
    before = tree(store)
    proc = fails(run(store, "--json", "verify"), 65)
    doc = as_json(proc)
    assert found(doc) == expected(store, damaged)
    assert doc["clean"] is False
    assert doc["errors"] == 8
    assert doc["warnings"] == 6
    assert doc["repairs"] == 0
    assert doc["blobs_checked"] == 6
    by_kind = {f["kind"]: f for f in doc["findings"]}
    assert by_kind["hash-mismatch"]["id"] == damaged["corrupt"]
    assert by_kind["committed-bytes-missing"]["id"] == damaged["lost_committed"]
    assert by_kind["unmanaged"]["id"] == damaged["unmanaged"]
    assert "lashctl: error:" in proc.stderr.decode()
    assert tree(store) == before  # verify without --fix changes nothing


def test_verify_human_output_is_one_finding_per_line_when_piped(store, damaged):
    proc = fails(run(store, "verify"), 65)
    no_ansi(proc.stdout)
    lines = proc.stdout.decode().splitlines()
    assert len(lines) == 14
    rows = sorted((f[1], f[0], f[2]) for f in (line.split("\t") for line in lines))
    assert rows == expected(store, damaged)
    errors = [line for line in proc.stderr.decode().splitlines() if line.startswith("lashctl: error:")]
    assert len(errors) == 1 and "8 error(s)" in errors[0]


def test_verify_fix_repairs_safely_and_never_deletes_bytes(store, damaged):
    d = damaged
    proc = fails(run(store, "--json", "verify", "--fix", "--grace", "0s", "--force"), 65)  # unrepairable errors remain
    doc = as_json(proc)
    repaired = sorted((f["kind"], f["path"]) for f in doc["findings"] if f["repair"])
    assert repaired == sorted(
        [
            ("staging-litter", str(d["tmp_litter"])),
            ("staging-litter", str(d["lash_tmp"])),
            ("sidecar-missing", str(side(store, d["nosidecar"]))),
            ("hash-mismatch", str(blob(store, d["corrupt"]))),
        ]
    )
    assert doc["repairs"] == 4
    assert doc["errors"] == 7  # the quarantined committed blob's row now lacks its bytes
    # each repair is printed on stderr
    stderr = proc.stderr.decode()
    for _kind, path in repaired:
        assert f"repaired {path}:" in stderr, stderr
    # staging litter removed
    assert not d["tmp_litter"].exists() and not d["lash_tmp"].exists()
    # the missing sidecar rebuilt from the content
    rebuilt = json.loads(side(store, d["nosidecar"]).read_text())
    assert rebuilt["id"] == d["nosidecar"]
    assert rebuilt["media_type"] == {"kind": "image", "type": "png"}
    assert rebuilt["byte_len"] == len(d["nosidecar_png"])
    assert (rebuilt["width"], rebuilt["height"]) == (7, 11)
    # the corrupt blob and its sidecar are in quarantine, bytes intact
    assert not os.path.lexists(blob(store, d["corrupt"]))
    assert not os.path.lexists(side(store, d["corrupt"]))
    q = sorted((store / "quarantine").iterdir())
    assert len(q) == 2, q
    qblob = next(p for p in q if not p.name.endswith(".json"))
    assert qblob.name.startswith(d["corrupt"] + ".")
    assert qblob.read_bytes() == d["corrupt_bytes"]
    assert json.loads(Path(str(qblob) + ".json").read_text())["id"] == d["corrupt"]
    # nothing that is not litter was deleted
    for key in ("good", "nosidecar", "undecodable", "mismatch", "unmanaged"):
        assert blob(store, d[key]).exists(), key
    for path in (
        d["bad_name"],
        d["wrong_prefix"],
        side(store, d["undecodable"]),
        side(store, d["mismatch"]),
        side(store, d["lost_committed"]),
        side(store, d["orphan_sidecar"]),
    ):
        assert path.exists(), path
    assert os.path.islink(d["symlink"])

    # a second verify no longer sees what was repaired; the quarantined committed blob is now data loss
    again = as_json(fails(run(store, "--json", "verify"), 65))
    kinds = [f["kind"] for f in again["findings"]]
    for kind in ("hash-mismatch", "sidecar-missing", "staging-litter"):
        assert kind not in kinds
    assert sorted(f["path"] for f in again["findings"] if f["kind"] == "committed-bytes-missing") == sorted(
        [str(blob(store, d["corrupt"])), str(blob(store, d["lost_committed"]))]
    )


def test_verify_fix_never_writes_outside_the_store_through_a_symlinked_shard(store, inputs, tmp_path):
    """A symlinked shard directory is a stray file; --fix must not write a sidecar through it."""
    put(store, inputs, "s", {"k.txt": b"keep the store non-empty"})
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    data = png_bytes(2, 3)
    (outside / sha(data)).write_bytes(data)
    shard = store / "sha256" / sha(data)[:2]
    os.symlink(outside, shard)
    doc = as_json(fails(run(store, "--json", "verify", "--fix", "--grace", "0s", "--force"), 65))
    assert ("stray-file", str(shard)) in [(f["kind"], f["path"]) for f in doc["findings"]]
    assert sorted(p.name for p in outside.iterdir()) == [sha(data)]
    ok(run(store, "gc", "--older-than", "1m", "--force"))
    assert (outside / sha(data)).read_bytes() == data


def test_verify_fix_with_the_default_grace_keeps_fresh_litter(store, damaged):
    d = damaged
    doc = as_json(fails(run(store, "--json", "verify", "--fix"), 65))
    assert d["tmp_litter"].exists() and d["lash_tmp"].exists()
    litter = [f for f in doc["findings"] if f["kind"] == "staging-litter"]
    assert len(litter) == 2 and all(f["repair"] is None for f in litter)


def test_verify_clean_store(store, inputs):
    ids = put(store, inputs, "s", {"a.png": png_bytes(3, 3), "b.txt": b"bee"})
    commit(store, "s", ids[0])
    proc = ok(run(store, "--json", "verify"))
    doc = as_json(proc)
    assert doc["clean"] is True
    assert doc["findings"] == []
    assert (doc["blobs_checked"], doc["errors"], doc["warnings"]) == (2, 0, 0)
    assert doc["bytes_checked"] == len(png_bytes(3, 3)) + 3
    human = ok(run(store, "verify"))
    assert human.stdout == b""


def test_verify_with_only_warnings_exits_0(store, inputs):
    ids = put(store, inputs, "s", {"a.txt": b"fine", "gone.txt": b"interrupted"})
    blob(store, ids[1]).unlink()
    side(store, ids[1]).unlink()
    plant(store, b"nobody wrote an intent")
    (store / "tmp" / "put-aaaa.part").write_bytes(b"xx")
    orphan = sha(b"sidecar only")
    side(store, orphan).parent.mkdir(parents=True, exist_ok=True)
    side(store, orphan).write_bytes(sidecar_bytes(orphan, "text/plain", 12))
    doc = as_json(ok(run(store, "--json", "verify")))
    assert doc["clean"] is True
    assert doc["errors"] == 0
    assert sorted(f["kind"] for f in doc["findings"]) == [
        "orphan-sidecar-file",
        "staging-litter",
        "uncommitted-bytes-missing",
        "unmanaged",
    ]
    assert {f["severity"] for f in doc["findings"]} == {"warning"}


def test_verify_with_a_corrupt_manifest_line_still_checks_blobs(store, damaged):
    manifest = store / "manifest.jsonl"
    lines = manifest.read_bytes().splitlines(keepends=True)
    lines.insert(3, b'{"op":"intent","attachment_id":"nothex"}\n')
    manifest.write_bytes(b"".join(lines))
    proc = fails(run(store, "--json", "verify"), 65)
    doc = as_json(proc)
    corrupt = [f for f in doc["findings"] if f["kind"] == "manifest-corrupt"]
    assert len(corrupt) == 1
    assert corrupt[0]["severity"] == "error"
    assert corrupt[0]["path"] == str(manifest)
    assert f"{manifest}:4:" in corrupt[0]["message"]
    kinds = {f["kind"] for f in doc["findings"]}
    assert {
        "hash-mismatch",
        "sidecar-missing",
        "sidecar-undecodable",
        "sidecar-mismatch",
        "stray-file",
        "staging-litter",
        "orphan-sidecar-file",
    } <= kinds
    assert doc["blobs_checked"] == 6


# -- show --------------------------------------------------------------------------------
@pytest.fixture
def verdicts(store: Path, inputs: Path) -> dict:
    now = now_ms()
    manifest = store / "manifest.jsonl"
    ids = {}
    [ids["committed"]] = put(store, inputs, "alpha", {"four.png": png_bytes(4, 6)})
    commit(store, "alpha", ids["committed"])
    [ids["fresh"]] = put(store, inputs, "fresh", {"fresh.txt": b"fresh upload"})
    [ids["shared"], ids["lost"]] = put(
        store, inputs, "beta", {"shared.txt": b"shared content", "lost.txt": b"committed and lost"}
    )
    commit(store, "beta", ids["shared"], ids["lost"])
    blob(store, ids["lost"]).unlink()
    [ids["lost_uncommitted"]] = put(store, inputs, "delta", {"lu.txt": b"uncommitted and lost"})
    blob(store, ids["lost_uncommitted"]).unlink()
    ids["orphan"] = plant(store, b"an old orphan", "text/plain", "old.txt")
    landed = (now - 2 * DAY) / 1000  # its bytes landed with its intent
    os.utime(blob(store, ids["orphan"]), (landed, landed))
    ids["unmanaged"] = plant(store, b"nobody's", "text/plain", "n.txt")
    append_lines(
        manifest,
        event("intent", ids["orphan"], "ghost", now - 2 * DAY),
        event("intent", ids["shared"], "crashed", now - 3 * DAY),
    )
    return ids


def show_verdict(store: Path, attachment: str) -> str:
    proc = ok(run(store, "show", attachment))
    no_ansi(proc.stdout)
    [line] = [line for line in proc.stdout.decode().splitlines() if line.startswith("verdict:")]
    return line[len("verdict:") :].strip()


def test_show_verdicts(store, verdicts):
    ids = verdicts
    manifest = store / "manifest.jsonl"
    at = commit_time(manifest, ids["committed"], "alpha")
    assert show_verdict(store, ids["committed"]) == f"kept because session alpha committed it at {iso(at)}"
    assert show_verdict(store, ids["fresh"]).startswith(
        "kept for now: session fresh's intent is within the 24h grace period"
    )
    assert show_verdict(store, ids["orphan"]) == "orphan: would be reclaimed by a sweep with the default grace (24h)"
    shared_at = commit_time(manifest, ids["shared"], "beta")
    assert show_verdict(store, ids["shared"]) == f"kept because session beta committed it at {iso(shared_at)}"
    assert show_verdict(store, ids["unmanaged"]).startswith("unmanaged: no manifest row")
    assert show_verdict(store, ids["lost"]) == (
        "missing bytes: session beta committed it, but the blob is gone (data loss)"
    )
    lost_uncommitted = show_verdict(store, ids["lost_uncommitted"])
    assert lost_uncommitted.startswith("missing bytes") and "data loss" not in lost_uncommitted


def test_show_human_output_names_paths_and_rows(store, verdicts):
    ids = verdicts
    proc = ok(run(store, "show", ids["shared"][:6]))
    text = proc.stdout.decode()
    assert f"id:         {ids['shared']}\n" in text
    assert str(blob(store, ids["shared"])) in text
    assert str(side(store, ids["shared"])) in text
    assert "session crashed: intent" in text and "uncommitted" in text
    assert "session beta: intent" in text and "committed" in text
    missing = ok(run(store, "show", ids["lost"])).stdout.decode()
    assert f"{blob(store, ids['lost'])} (MISSING)" in missing


def test_show_json(store, verdicts):
    ids = verdicts
    manifest = store / "manifest.jsonl"
    doc = as_json(ok(run(store, "--json", "show", "sha256:" + ids["shared"])))
    path = blob(store, ids["shared"])
    st = os.stat(path)
    assert doc["id"] == ids["shared"]
    assert doc["blob_path"] == str(path)
    assert doc["sidecar_path"] == str(side(store, ids["shared"]))
    assert doc["bytes_present"] is True
    assert doc["byte_len"] == len(b"shared content")
    assert doc["size_on_disk"] == st.st_blocks * 512
    assert doc["mtime_epoch_ms"] == st.st_mtime_ns // 1_000_000
    assert doc["media_type"] == "text/plain"
    assert doc["metadata"]["label"] == "shared.txt"
    assert doc["verdict"]["state"] == "kept"
    rows = {r["session_id"]: r for r in doc["rows"]}
    assert set(rows) == {"beta", "crashed"}
    assert rows["crashed"]["committed_at_epoch_ms"] is None and rows["crashed"]["committed_at"] is None
    assert rows["crashed"]["intent_at"] == iso(rows["crashed"]["intent_at_epoch_ms"])
    assert rows["crashed"]["age_ms"] >= 3 * DAY
    at = commit_time(manifest, ids["shared"], "beta")
    assert rows["beta"]["committed_at_epoch_ms"] == at
    assert rows["beta"]["committed_at"] == iso(at)
    assert rows["beta"]["canonical_uri"] == "sha256:" + ids["shared"]

    orphan = as_json(ok(run(store, "show", "--json", ids["orphan"])))
    assert orphan["verdict"] == {
        "state": "orphan",
        "reason": "orphan: would be reclaimed by a sweep with the default grace (24h)",
    }
    lost = as_json(ok(run(store, "--json", "show", ids["lost"])))
    assert (lost["bytes_present"], lost["byte_len"], lost["size_on_disk"]) == (False, None, None)
    assert lost["verdict"]["state"] == "missing"


def test_show_unknown_and_malformed_ids(store, verdicts):
    fails(run(store, "show", sha(b"never stored")), 3)
    unused = next(p for p in ("0000", "1111", "2222", "3333") if not any(i.startswith(p) for i in verdicts.values()))
    fails(run(store, "show", unused), 3)
    fails(run(store, "show", "xyz!"), 2)
    fails(run(store, "show", "ab"), 2)
    # an upper-case prefix resolves
    doc = as_json(ok(run(store, "--json", "show", verdicts["orphan"][:7].upper())))
    assert doc["id"] == verdicts["orphan"]


# -- ls ----------------------------------------------------------------------------------
@pytest.fixture
def listing(store: Path, inputs: Path) -> dict:
    now = now_ms()
    ids = {}
    ids["png"], ids["txt"] = put(store, inputs, "alpha", {"p.png": png_bytes(9, 9), "t.txt": b"some text here"})
    commit(store, "alpha", ids["png"])
    [ids["gif"]] = put(store, inputs, "beta", {"g.gif": b"GIF89a" + b"\x01\x00\x01\x00" + b"\x00" * 20})
    ids["jpeg"] = plant(store, b"\xff\xd8\xff\xe0 not really a jpeg", "image/jpeg", "j.jpg")
    ids["pdf"] = plant(store, b"%PDF-1.4 tiny", "application/pdf", "doc.pdf")
    append_lines(store / "manifest.jsonl", event("intent", ids["pdf"], "beta", now - 2 * DAY))
    ids["lost"] = sha(b"row without bytes")
    append_lines(store / "manifest.jsonl", event("intent", ids["lost"], "alpha", now))
    return ids


def ls_json(store: Path, *args: str) -> list[dict]:
    return as_json(ok(run(store, "--json", "ls", *args)))


def test_ls_lists_every_blob_with_its_state(store, listing):
    ids = listing
    entries = {e["id"]: e for e in ls_json(store)}
    assert {k: entries[v]["state"] for k, v in ids.items() if v in entries} == {
        "png": "committed",
        "txt": "uncommitted",
        "gif": "uncommitted",
        "jpeg": "unmanaged",
        "pdf": "uncommitted",
    }
    assert ids["lost"] not in entries
    png = entries[ids["png"]]
    assert (png["byte_len"], png["media_type"], png["label"], png["sessions"]) == (
        len(png_bytes(9, 9)),
        "image/png",
        "p.png",
        ["alpha"],
    )
    assert png["mtime_epoch_ms"] == os.stat(blob(store, ids["png"])).st_mtime_ns // 1_000_000
    assert png["mtime"] == iso(png["mtime_epoch_ms"])
    assert entries[ids["pdf"]]["sessions"] == ["beta"]
    assert entries[ids["jpeg"]]["sessions"] == []
    # the default order is by id
    assert [e["id"] for e in ls_json(store)] == sorted(entries)


def test_ls_filters(store, listing):
    ids = listing

    def listed(*args):
        return sorted(e["id"] for e in ls_json(store, *args))

    assert listed("--state", "committed") == [ids["png"]]
    assert listed("--state", "uncommitted") == sorted([ids["txt"], ids["gif"], ids["pdf"]])
    assert listed("--state", "unmanaged") == [ids["jpeg"]]
    assert listed("--session", "alpha") == sorted([ids["png"], ids["txt"]])
    assert listed("--session", "beta") == sorted([ids["gif"], ids["pdf"]])
    assert listed("--session", "nobody") == []
    assert listed("--media-type", "image/*") == sorted([ids["png"], ids["gif"], ids["jpeg"]])
    assert listed("--media-type", "image/png") == [ids["png"]]
    assert listed("--media-type", "application/pdf") == [ids["pdf"]]
    assert listed("--media-type", "text/plain") == [ids["txt"]]
    assert listed("--state", "uncommitted", "--session", "beta", "--media-type", "image/*") == [ids["gif"]]
    fails(run(store, "ls", "--state", "bogus"), 2)


def test_ls_media_type_filter_normalises_like_every_mime_input(store, listing):
    """the README's store format: MIME types are lower-cased and trimmed, and image/jpg normalises to image/jpeg."""
    assert [e["id"] for e in ls_json(store, "--media-type", " Image/PNG ")] == [listing["png"]]
    assert [e["id"] for e in ls_json(store, "--media-type", "image/jpg")] == [listing["jpeg"]]


def test_ls_sort_size_reverse(store, listing):
    entries = ls_json(store, "--sort", "size", "--reverse")
    sizes = [e["byte_len"] for e in entries]
    assert sizes == sorted(sizes, reverse=True)
    assert [e["id"] for e in entries] == [
        e["id"] for e in sorted(ls_json(store), key=lambda e: (e["byte_len"], e["id"]), reverse=True)
    ]
    ascending = [e["byte_len"] for e in ls_json(store, "--sort", "size")]
    assert ascending == sorted(ascending)


def test_ls_piped_has_full_ids_and_no_ansi(store, listing):
    proc = ok(run(store, "ls"))
    no_ansi(proc.stdout)
    lines = proc.stdout.decode().splitlines()
    assert len(lines) == 5
    records = [line.split("\t") for line in lines]
    assert all(len(r) == 6 for r in records)
    assert all(HEX64.fullmatch(r[0]) for r in records)
    assert {r[0]: r[4] for r in records}[listing["jpeg"]] == "unmanaged"
    assert "5 blob(s)" in proc.stderr.decode()


# -- stats -------------------------------------------------------------------------------
def build_known(store: Path, inputs: Path) -> dict:
    now = now_ms()
    manifest = store / "manifest.jsonl"
    data = {
        "committed": b"committed by alpha",
        "uncommitted": png_bytes(2, 2),
        "orphan": b"an aged orphan",
        "shared": b"aged intent plus commit",
        "unmanaged": b"nobody",
        "lost_committed": b"lost after commit",
        "lost_uncommitted": b"never landed",
    }
    ids = {k: sha(v) for k, v in data.items()}
    put(store, inputs, "alpha", {"c.txt": data["committed"]})  # lines 1-2
    put(store, inputs, "beta", {"u.png": data["uncommitted"]})  # 3
    put(store, inputs, "gamma", {"s.txt": data["shared"], "lc.txt": data["lost_committed"]})  # 4-5
    commit(store, "alpha", ids["committed"])  # 6
    commit(store, "gamma", ids["shared"], ids["lost_committed"])  # 7-8
    put(store, inputs, "epsilon", {"lu.txt": data["lost_uncommitted"]})  # 9
    plant(store, data["orphan"], "text/plain", "o.txt")
    plant(store, data["unmanaged"], "text/plain", "n.txt")
    landed = (now - 2 * DAY) / 1000  # the orphan's bytes landed with its intent
    os.utime(blob(store, ids["orphan"]), (landed, landed))
    extra = sha(b"forgotten")
    append_lines(
        manifest,
        event("intent", ids["orphan"], "ghost", now - 2 * DAY),  # 10
        event("intent", ids["shared"], "ghost2", now - 3 * DAY),  # 11
        event("intent", ids["uncommitted"], "beta", now),  # 12 (a refresh)
        event("intent", extra, "zeta", now),  # 13
        event("forget", extra, "zeta"),
    )  # 14
    for key in ("lost_committed", "lost_uncommitted"):
        blob(store, ids[key]).unlink()
        side(store, ids[key]).unlink()
    (store / "tmp" / "put-feedface.part").write_bytes(b"12345")
    blob(store, ids["committed"]).with_name(ids["committed"] + ".tmp").write_bytes(b"abc")
    return {"ids": ids, "sizes": {k: len(v) for k, v in data.items()}}


def test_stats_exact_counts(store, inputs):
    k = build_known(store, inputs)
    z = k["sizes"]
    assert len((store / "manifest.jsonl").read_bytes().splitlines()) == 14
    doc = as_json(ok(run(store, "--json", "stats")))
    assert [series["by"] for series in doc.pop("series")] == ["day", "session"]
    assert doc == {
        "blobs": 5,
        "blob_bytes": z["committed"] + z["uncommitted"] + z["orphan"] + z["shared"] + z["unmanaged"],
        "blobs_by_state": {"committed": 2, "uncommitted": 2, "unmanaged": 1},
        "bytes_by_state": {
            "committed": z["committed"] + z["shared"],
            "uncommitted": z["uncommitted"] + z["orphan"],
            "unmanaged": z["unmanaged"],
        },
        "rows_committed": 3,
        "rows_uncommitted": 4,
        "committed_rows_missing_bytes": 1,
        "uncommitted_rows_missing_bytes": 1,
        "orphans_reclaimable": 1,
        "orphan_bytes_reclaimable": z["orphan"],
        "unmanaged_blobs": 1,
        "unmanaged_bytes": z["unmanaged"],
        "staging_files": 2,
        "staging_bytes": 8,
        "stray_files": 0,
        "orphan_sidecars": 0,
        "manifest_lines": 14,
        "manifest_lines_after_compaction": 11,
        "manifest_torn_tail": False,
    }
    # the orphan count is what a real default sweep then reclaims
    dry = as_json(ok(run(store, "--json", "reclaim", "--dry-run")))
    assert dry["blobs_reclaimed"] == 1 and dry["bytes_freed"] == z["orphan"]
    # and the line count after compaction is what compaction leaves
    compacted = as_json(ok(run(store, "--json", "manifest", "compact")))
    assert (compacted["lines_before"], compacted["lines_after"]) == (14, 11)
    assert len((store / "manifest.jsonl").read_bytes().splitlines()) == 11


def test_stats_human_output_piped(store, inputs):
    build_known(store, inputs)
    proc = ok(run(store, "stats"))
    no_ansi(proc.stdout)
    rows = {line.split("\t")[0]: line.split("\t")[1:] for line in proc.stdout.decode().splitlines()}
    assert rows["blobs"][0] == "5"
    assert rows["rows committed"][0] == "3"
    assert rows["rows uncommitted"][0] == "4"
    assert rows["committed rows missing bytes"][0] == "1"
    assert rows["orphans reclaimable now (24h grace)"] == ["1", "14"]  # exact bytes on a pipe
    assert rows["staging litter"] == ["2", "8"]
    assert rows["manifest lines"][0] == "14"
    assert rows["  after compaction"][0] == "11"


# -- gc ----------------------------------------------------------------------------------
def build_gc(store: Path, inputs: Path) -> dict:
    now = now_ms()
    g = {}
    [g["referenced"], g["lost"]] = put(
        store, inputs, "s", {"ref.txt": b"old but an uncommitted row names it", "lost.txt": b"committed, bytes lost"}
    )
    commit(store, "s", g["lost"])
    blob(store, g["lost"]).unlink()
    g["kept_sidecar"] = side(store, g["lost"])
    g["old_unreferenced"] = plant(store, b"old and unreferenced", "text/plain", "old.txt")
    g["fresh_unreferenced"] = plant(store, b"fresh and unreferenced")
    g["aged_row"] = plant(store, b"old with an aged row")
    append_lines(store / "manifest.jsonl", event("intent", g["aged_row"], "ghost", now - 5 * DAY))
    nobody = sha(b"nothing but a sidecar")
    g["dropped_sidecar"] = side(store, nobody)
    g["dropped_sidecar"].parent.mkdir(parents=True, exist_ok=True)
    g["dropped_sidecar"].write_bytes(sidecar_bytes(nobody, "text/plain", 21))
    g["old_litter"] = store / "tmp" / "put-0000.part"
    g["old_litter"].write_bytes(b"old litter")
    g["old_lash_tmp"] = blob(store, g["referenced"]).with_name(g["referenced"] + ".tmp")
    g["old_lash_tmp"].write_bytes(b"lash")
    g["fresh_litter"] = store / "tmp" / "put-1111.part"
    g["fresh_litter"].write_bytes(b"in flight")
    g["stray"] = blob(store, g["referenced"]).parent / "README"
    g["stray"].write_bytes(b"stray")
    for path in (
        blob(store, g["old_unreferenced"]),
        side(store, g["old_unreferenced"]),
        blob(store, g["referenced"]),
        blob(store, g["aged_row"]),
        g["kept_sidecar"],
        g["dropped_sidecar"],
        g["old_litter"],
        g["old_lash_tmp"],
        g["stray"],
    ):
        age(path, 2 * DAY)
    return g


def test_gc_dry_run_then_real_run(store, inputs):
    g = build_gc(store, inputs)
    expected_items = sorted(
        [
            ("blob", str(blob(store, g["old_unreferenced"]))),
            ("staging", str(g["old_litter"])),
            ("staging", str(g["old_lash_tmp"])),
            ("orphan-sidecar", str(g["dropped_sidecar"])),
        ]
    )
    before = tree(store)
    dry = as_json(ok(run(store, "--json", "gc", "--dry-run")))
    assert tree(store) == before
    assert dry["dry_run"] is True
    assert sorted((i["kind"], i["path"]) for i in dry["items"]) == expected_items
    assert all(i["action"] == "delete" for i in dry["items"])

    real_proc = ok(run(store, "--json", "gc"))
    real = as_json(real_proc)
    assert real["dry_run"] is False
    assert [(i["kind"], i["path"], i["byte_len"]) for i in real["items"]] == [
        (i["kind"], i["path"], i["byte_len"]) for i in dry["items"]
    ]
    assert real["bytes_freed"] == dry["bytes_freed"]
    assert (real["blobs_deleted"], real["litter_deleted"], real["failures"]) == (1, 3, 0)
    assert real["blobs_scanned"] == 4
    [blob_item] = [i for i in real["items"] if i["kind"] == "blob"]
    assert blob_item["id"] == g["old_unreferenced"]
    assert blob_item["byte_len"] == len(b"old and unreferenced")

    for gone in (
        blob(store, g["old_unreferenced"]),
        side(store, g["old_unreferenced"]),
        g["old_litter"],
        g["old_lash_tmp"],
        g["dropped_sidecar"],
    ):
        assert not os.path.lexists(gone), gone
    for kept in (
        blob(store, g["fresh_unreferenced"]),
        blob(store, g["referenced"]),
        side(store, g["referenced"]),
        blob(store, g["aged_row"]),
        g["kept_sidecar"],
        g["fresh_litter"],
        g["stray"],
    ):
        assert kept.exists(), kept
    # a second run finds nothing more
    assert as_json(ok(run(store, "--json", "gc")))["items"] == []


def test_gc_human_output_and_summary(store, inputs):
    g = build_gc(store, inputs)
    proc = ok(run(store, "gc", "--dry-run"))
    no_ansi(proc.stdout)
    paths = sorted(line.split("\t")[0] for line in proc.stdout.decode().splitlines())
    assert paths == sorted(
        [
            str(blob(store, g["old_unreferenced"])),
            str(g["old_litter"]),
            str(g["old_lash_tmp"]),
            str(g["dropped_sidecar"]),
        ]
    )
    assert "would delete 4 file(s)" in proc.stderr.decode()


def test_gc_one_minute_guard(store, inputs):
    g = build_gc(store, inputs)
    age(blob(store, g["fresh_unreferenced"]), 40_000)
    before = tree(store)
    proc = fails(run(store, "gc", "--older-than", "30s"), 4)
    assert "--force" in proc.stderr.decode()
    assert tree(store) == before
    fails(run(store, "gc", "--before", str(now_ms())), 4)
    assert tree(store) == before
    forced = as_json(ok(run(store, "--json", "gc", "--older-than", "30s", "--force")))
    assert str(blob(store, g["fresh_unreferenced"])) in [i["path"] for i in forced["items"]]
    assert not blob(store, g["fresh_unreferenced"]).exists()
    assert g["fresh_litter"].exists()  # written just now: younger than 30s


def test_gc_refuses_on_a_corrupt_manifest(store, inputs):
    build_gc(store, inputs)
    with open(store / "manifest.jsonl", "ab") as handle:
        handle.write(b"garbage\n")
    before = tree(store)
    fails(run(store, "gc"), 65)
    assert tree(store) == before


def test_gc_help_warns_that_it_assumes_every_writer_records_intents_here(store):
    plain = env(COLUMNS="200", TERM="dumb")
    del plain["FORCE_COLOR"]
    proc = ok(run(store, "gc", "--help", environ=plain))
    text = " ".join(re.sub(r"[│╭╮╰╯─]", " ", proc.stdout.decode()).split()).lower()
    assert "assumes every writer of this store records intents in this manifest" in text


# -- manifest check ----------------------------------------------------------------------
def test_manifest_check_on_a_valid_manifest(store, inputs):
    build_known(store, inputs)
    doc = as_json(ok(run(store, "--json", "manifest", "check")))
    assert doc["valid"] is True
    assert doc["events"] == {"header": 1, "intent": 9, "commit": 3, "forget": 1}
    assert doc["lines"] == 14
    assert (doc["rows"], doc["rows_committed"], doc["rows_uncommitted"]) == (7, 3, 4)
    assert doc["lines_after_compaction"] == 11
    assert doc["torn_tail"] is False
    assert doc["has_header"] is True
    assert doc["problems"] == []
    human = ok(run(store, "manifest", "check"))
    no_ansi(human.stdout)
    assert "lashctl: error" not in human.stderr.decode()


def test_manifest_check_lists_every_malformed_line_and_exits_65(store, inputs):
    [a] = put(store, inputs, "s", {"a.txt": b"a"})
    manifest = store / "manifest.jsonl"
    with open(manifest, "ab") as handle:
        handle.write(b"{not json\n")  # line 3
        handle.write(json.dumps(event("intent", a, "t", 5)).encode() + b"\n")  # line 4
        handle.write(b'{"op":"bogus","attachment_id":"' + a.encode() + b'"}\n')  # line 5
        handle.write(json.dumps(event("commit", a, "t", 6)).encode() + b"\n")  # line 6
    proc = fails(run(store, "manifest", "check"), 65)
    stderr = proc.stderr.decode()
    assert f"{manifest}:3:" in stderr
    assert f"{manifest}:5:" in stderr
    doc = as_json(fails(run(store, "--json", "manifest", "check"), 65))
    assert doc["valid"] is False
    assert len(doc["problems"]) == 2
    assert f"{manifest}:3:" in doc["problems"][0] and f"{manifest}:5:" in doc["problems"][1]
    assert doc["events"] == {"header": 1, "intent": 2, "commit": 1, "forget": 0}
    assert (doc["rows"], doc["rows_committed"]) == (2, 1)


def test_manifest_check_flags_a_torn_tail(store, inputs):
    put(store, inputs, "s", {"a.txt": b"a"})
    with open(store / "manifest.jsonl", "ab") as handle:
        handle.write(b'{"op":"commit","attachment_id":"ab')
    proc = ok(run(store, "--json", "manifest", "check"))
    doc = as_json(proc)
    assert doc["torn_tail"] is True
    assert doc["valid"] is True
    assert doc["lines"] == 2
    assert "torn" in proc.stderr.decode()


# -- manifest log ------------------------------------------------------------------------
T0 = 1_764_150_000_000


@pytest.fixture
def log_store(store: Path) -> dict:
    a, b = sha(b"log a"), sha(b"log b")
    events = [
        event("intent", a, "s-1", T0),
        event("intent", b, "s-2", T0 + 1000),
        event("commit", a, "s-1", T0 + 2000),
        event("intent", a, "s-2", T0 + 3000),
        event("forget", a, "s-2"),
        event("commit", b, "s-2", T0 + 5000),
    ]
    store.mkdir(parents=True)
    append_lines(store / "manifest.jsonl", *events)
    lines = (store / "manifest.jsonl").read_text().splitlines()
    return {"a": a, "b": b, "lines": lines}


def log(store: Path, *args: str) -> list[str]:
    proc = ok(run(store, "manifest", "log", *args))
    no_ansi(proc.stdout)
    return proc.stdout.decode().splitlines()


def test_manifest_log_prints_raw_lines_and_filters(store, log_store):
    # On a pipe the events alone, ready for jq (a terminal numbers them).
    lines = log_store["lines"]
    a, b = log_store["a"], log_store["b"]
    assert log(store) == lines
    assert log(store, "--id", a[:6]) == [lines[1], lines[3], lines[4], lines[5]]
    assert log(store, "--id", "sha256:" + b) == [lines[2], lines[6]]
    assert log(store, "--session", "s-2") == [lines[2], lines[4], lines[5], lines[6]]
    assert log(store, "--op", "commit") == [lines[3], lines[6]]
    assert log(store, "--op", "header") == [lines[0]]
    assert log(store, "--since", str(T0 + 1000), "--until", str(T0 + 3000)) == [lines[2], lines[3], lines[4]]
    assert log(store, "--since", iso(T0 + 2500)) == [lines[4], lines[6]]
    assert log(store, "--until", iso(T0 + 1000)) == [lines[1], lines[2]]
    assert log(store, "--session", "s-2", "--op", "intent", "--id", a[:4]) == [lines[4]]
    fails(run(store, "manifest", "log", "--op", "bogus"), 2)


def test_manifest_log_json(store, log_store):
    lines, a = log_store["lines"], log_store["a"]
    doc = as_json(ok(run(store, "--json", "manifest", "log", "--id", a[:8])))
    assert [d["line"] for d in doc] == [2, 4, 5, 6]
    assert [d["event"] for d in doc] == [json.loads(lines[i - 1]) for i in (2, 4, 5, 6)]
    assert as_json(ok(run(store, "manifest", "log", "--json", "--session", "nobody"))) == []


# -- manifest compact --------------------------------------------------------------------
def folded_views(store: Path) -> tuple:
    uncommitted = as_json(ok(run(store, "--json", "list-uncommitted")))
    listing = ls_json(store)
    check = as_json(ok(run(store, "--json", "manifest", "check")))
    return (
        sorted((r["id"], r["session_id"], r["intent_at_epoch_ms"], r["bytes_present"]) for r in uncommitted),
        sorted((e["id"], e["state"], tuple(e["sessions"])) for e in listing),
        (check["rows"], check["rows_committed"]),
    )


def test_manifest_compact_keeps_the_fold(store, inputs):
    build_known(store, inputs)
    manifest = store / "manifest.jsonl"
    before_views = folded_views(store)
    before_bytes = manifest.read_bytes()

    dry = as_json(ok(run(store, "--json", "manifest", "compact", "--dry-run")))
    assert (dry["dry_run"], dry["lines_before"], dry["lines_after"], dry["rows"]) == (True, 14, 11, 7)
    assert manifest.read_bytes() == before_bytes

    proc = ok(run(store, "manifest", "compact"))
    assert "14 -> 11" in proc.stderr.decode()
    lines = manifest.read_bytes().splitlines()
    assert len(lines) == 11
    assert json.loads(lines[0]) == {"op": "header", "format": "lashctl-manifest", "version": 1}
    assert manifest.read_bytes().endswith(b"\n")
    assert folded_views(store) == before_views
    # compaction again changes nothing
    again = as_json(ok(run(store, "--json", "manifest", "compact")))
    assert (again["lines_before"], again["lines_after"]) == (11, 11)
    assert folded_views(store) == before_views
    assert sorted(p.name for p in store.iterdir() if p.is_file()) == ["manifest.jsonl", "manifest.jsonl.lock"]


def test_manifest_compact_refuses_a_corrupt_manifest(store, inputs):
    put(store, inputs, "s", {"a.txt": b"a"})
    manifest = store / "manifest.jsonl"
    with open(manifest, "ab") as handle:
        handle.write(b"{broken\n")
    before = manifest.read_bytes()
    proc = fails(run(store, "manifest", "compact"), 65)
    assert f"{manifest}:3" in proc.stderr.decode()
    assert manifest.read_bytes() == before


# -- progress ----------------------------------------------------------------------------
def test_no_progress_bar_when_stderr_is_not_a_terminal(store, inputs):
    paths = []
    for n in range(30):
        p = inputs / f"f{n:02}.bin"
        p.write_bytes(os.urandom(2048) + bytes([n]))
        paths.append(str(p))
    procs = [ok(run(store, "put", "-s", "s", *paths))]
    assert len(procs[0].stdout.decode().split()) == 30
    procs.append(ok(run(store, "verify")))
    procs.append(ok(run(store, "gc")))
    procs.append(ok(run(store, "reclaim")))
    procs.append(ok(run(store, "reclaim", "--before", str(now_ms() + 1000), "--force")))  # sweeps all 30
    assert not any(blob(store, sha(Path(p).read_bytes())).exists() for p in paths)
    for proc in procs:
        no_ansi(proc.stderr)
        for ch in ("━", "█", "▏", "⠋"):
            assert ch not in proc.stderr.decode(), proc.stderr.decode()
