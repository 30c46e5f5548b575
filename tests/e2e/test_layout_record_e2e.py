"""A store's layout is recorded when it is made (``lashctl init``) and
otherwise derived conservatively: lashctl adds no sidecar to a store that
lash writes (README, "Two layouts")."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from conftest import png_bytes

from pairings import Lashctl

pytestmark = pytest.mark.e2e


def sidecars(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "sha256").rglob("*.json"))


def lash_blob(root: Path, data: bytes) -> str:
    """A blob as lash at its current HEAD writes it: bytes, no sidecar."""
    attachment_id = hashlib.sha256(data).hexdigest()
    shard = root / "sha256" / attachment_id[:2]
    shard.mkdir(parents=True, exist_ok=True)
    (shard / attachment_id).write_bytes(data)
    return attachment_id


def test_init_records_the_layout_and_put_follows_it(tmp_path):
    run = Lashctl(tmp_path, str(tmp_path / "store"), [])
    done = run.ok("init", "--layout", "bare")
    assert (tmp_path / "store" / "lashctl-layout").read_text() == "bare\n"
    assert "bare" in done.stderr.decode()
    run.put("s", b"no sidecar for me\n")
    assert sidecars(tmp_path / "store") == []
    assert run.ok("verify", "--fix").returncode == 0
    assert sidecars(tmp_path / "store") == []
    again = run("init", "--layout", "sidecars")
    assert again.returncode == 4 and b"records layout bare" in again.stderr


@pytest.mark.parametrize("how", ["option", "environment"])
def test_a_layout_named_against_the_record_is_refused(tmp_path, how):
    """A store records its layout (init): naming the other one, by --layout or
    LASHCTL_LAYOUT (a cron line's environment), is refused before anything
    is written, not silently obeyed."""
    run = Lashctl(tmp_path, str(tmp_path / "store"), [])
    run.ok("init", "--layout", "bare")
    run.put("s", b"bare bytes\n")
    for command in (["verify", "--fix"], ["put", "-s", "s", str(_file(tmp_path, "p.png", png_bytes(2, 2)))]):
        args = ["--layout", "sidecars", *command] if how == "option" else command
        env = {"LASHCTL_LAYOUT": "sidecars"} if how == "environment" else None
        done = run(*args, env=env)
        assert done.returncode == 4, (command, done.stderr)
        assert b"records layout bare" in done.stderr and b"sidecars" in done.stderr
    assert sidecars(tmp_path / "store") == []
    assert run.ok("--layout", "bare", "ls").returncode == 0  # the recorded one may be named


def test_a_small_store_lash_wrote_gets_no_sidecar(tmp_path):
    """lash keeps its manifest elsewhere (its database): a store whose one
    blob has no sidecar is lash's, and lashctl adds none to it."""
    root = tmp_path / "store"
    lash_blob(root, b"written by lash\n")
    run = Lashctl(tmp_path, str(root), ["--manifest", str(tmp_path / "elsewhere.jsonl")])
    run.put("s", b"put by lashctl\n")
    run.ok("verify", "--fix")
    assert sidecars(root) == []


def test_migrate_into_a_bare_destination_writes_no_sidecars(tmp_path):
    src = Lashctl(tmp_path, str(tmp_path / "src"), [])
    src.put("s", b"one\n", b"two\n")
    assert len(sidecars(tmp_path / "src")) == 2
    dest = Lashctl(tmp_path, str(tmp_path / "dest"), [])
    dest.ok("init", "--layout", "bare")
    src.ok("migrate", "--to-store", dest.store)
    assert sidecars(tmp_path / "dest") == []
    report = json.loads(dest.ok("--json", "verify").stdout)
    assert not [f for f in report["findings"] if f["kind"] == "sidecar-missing"]


def test_migrate_to_layout_names_it_and_records_it(tmp_path):
    src = Lashctl(tmp_path, str(tmp_path / "src"), [])
    src.put("s", b"one\n")
    src.ok("migrate", "--to-store", str(tmp_path / "dest"), "--to-layout", "bare")
    assert sidecars(tmp_path / "dest") == []
    assert (tmp_path / "dest" / "lashctl-layout").read_text() == "bare\n"
    src.ok("migrate", "--to-store", str(tmp_path / "same"))  # the source's layout by default
    assert len(sidecars(tmp_path / "same")) == 1
    assert (tmp_path / "same" / "lashctl-layout").read_text() == "sidecars\n"


def test_a_non_image_put_told_sidecars_warns(tmp_path):
    run = Lashctl(tmp_path, str(tmp_path / "store"), [])
    quiet = run.ok("put", "-s", "s", str(_file(tmp_path, "plain.txt", b"text\n")))
    assert b"warning" not in quiet.stderr  # the layout was not named: nothing to say
    done = run.ok("--layout", "sidecars", "put", "-s", "s", str(_file(tmp_path, "doc.txt", b"more text\n")))
    assert b"lash-core 0.1.0-alpha.85 cannot read the sidecar of a text/plain blob" in done.stderr
    assert len(sidecars(tmp_path / "store")) == 2  # stored all the same
    png = run.ok("--layout", "sidecars", "put", "-s", "s", str(_file(tmp_path, "p.png", png_bytes(2, 2))))
    assert b"warning" not in png.stderr


def test_a_sidecar_a_lashctl_store_lost_is_rebuilt(tmp_path):
    """A store lashctl made records its layout: one blob that lost its
    sidecar is damage to repair, not a store lash writes."""
    run = Lashctl(tmp_path, str(tmp_path / "store"), [])
    [attachment_id] = run.put("s", b"one blob\n")
    side = tmp_path / "store" / "sha256" / attachment_id[:2] / f"{attachment_id}.json"
    side.unlink()
    assert run("verify").returncode == 65
    run.ok("verify", "--fix")
    assert side.exists()


def _file(where: Path, name: str, data: bytes) -> Path:
    (where / name).write_bytes(data)
    return where / name


def test_an_s3_store_records_its_layout_too(tmp_path, s3_bucket):
    run = Lashctl(tmp_path, f"s3://{s3_bucket}/lash", ["--manifest", str(tmp_path / "m.jsonl")])
    run.ok("init", "--layout", "bare")
    [attachment_id] = run.put("s", b"bytes without a sidecar\n")
    told = json.loads(run("--json", "--layout", "sidecars", "verify").stdout)
    assert [(f["kind"], f["id"]) for f in told["findings"]] == [("sidecar-missing", attachment_id)]
    assert run("init", "--layout", "sidecars").returncode == 4
