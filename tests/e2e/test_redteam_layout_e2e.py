"""Layout records, layout detection, migrate and forget under hostile or
unlucky conditions (README, "Two layouts", migrate, init, forget)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from pairings import KILLED, LASHCTL, Lashctl

pytestmark = pytest.mark.e2e

DAY = 86_400


def sidecars(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "sha256").rglob("*.json"))


def blob_path(root: Path, attachment_id: str) -> Path:
    return root / "sha256" / attachment_id[:2] / attachment_id


def lash_blob(root: Path, data: bytes) -> str:
    """A blob as lash writes it today: bytes, no sidecar."""
    attachment_id = hashlib.sha256(data).hexdigest()
    blob_path(root, attachment_id).parent.mkdir(parents=True, exist_ok=True)
    blob_path(root, attachment_id).write_bytes(data)
    return attachment_id


def error_line(done) -> str:
    lines = done.stderr.decode(errors="replace").splitlines()
    assert len(lines) == 1 and lines[0].startswith("lashctl: error: "), lines
    return lines[0]


# -- F2: a copy is dated old only once its rows are at the destination ----------------
def test_a_copy_killed_before_its_rows_stays_dated_now(tmp_path):
    src = Lashctl(tmp_path, str(tmp_path / "src"), [])
    [attachment_id] = src.put("s", b"an old blob\n")
    old = time.time() - 2 * DAY
    os.utime(blob_path(tmp_path / "src", attachment_id), (old, old))
    dest = Lashctl(tmp_path, str(tmp_path / "dest"), [])
    dest.ok("init")
    dest.put("d", b"the destination's own\n")  # its manifest exists: gc sweeps there
    killed = src("migrate", "--to-store", dest.store, fault="migrate.copied")
    assert killed.returncode == KILLED
    copy = blob_path(tmp_path / "dest", attachment_id)
    assert copy.exists()
    # No row references it yet: dated now, a gc of the destination spares it.
    assert copy.stat().st_mtime > time.time() - 3600
    dest.ok("gc", "--older-than", "1h")
    assert copy.exists()


def test_a_complete_copy_is_dated_as_the_source(tmp_path):
    src = Lashctl(tmp_path, str(tmp_path / "src"), [])
    [attachment_id] = src.put("s", b"an old blob\n")
    old = int(time.time() - 2 * DAY)
    os.utime(blob_path(tmp_path / "src", attachment_id), (old, old))
    dest = Lashctl(tmp_path, str(tmp_path / "dest"), [])
    dest.ok("init")
    report = json.loads(src.ok("--json", "migrate", "--to-store", dest.store).stdout)
    assert report["copies_undated"] == 0 and report["copies_sweepable_after"] is None
    assert int(blob_path(tmp_path / "dest", attachment_id).stat().st_mtime) == old


# -- F3: --to-layout against a destination that records another ------------------------
def test_migrate_to_layout_against_another_record_is_refused(tmp_path):
    src = Lashctl(tmp_path, str(tmp_path / "src"), [])
    src.put("s", b"one\n")
    dest = Lashctl(tmp_path, str(tmp_path / "dest"), [])
    dest.ok("init", "--layout", "bare")
    done = src("migrate", "--to-store", dest.store, "--to-layout", "sidecars")
    assert done.returncode == 4
    assert "records layout bare" in error_line(done)
    assert not (tmp_path / "dest" / "sha256").exists() or not list((tmp_path / "dest" / "sha256").rglob("*"))
    assert (tmp_path / "dest" / "lashctl-layout").read_text() == "bare\n"


# -- F4: empty destinations --------------------------------------------------------------
@pytest.mark.parametrize("option", ["--to-store", "--to-manifest"])
@pytest.mark.parametrize("value", ["", "  "])
def test_an_empty_destination_is_a_usage_error(tmp_path, option, value):
    src = Lashctl(tmp_path, str(tmp_path / "src"), [])
    src.put("s", b"one\n")
    args = ["--to-store", str(tmp_path / "dest")] if option == "--to-manifest" else []
    done = src("migrate", *args, option, value)
    assert done.returncode == 2
    assert error_line(done) == f"lashctl: error: {option} is empty: name a directory, file or URL"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["src"] + [p.name for p in tmp_path.glob("in-*")])


# -- F5: naming the default manifest changes nothing -----------------------------------
@pytest.mark.parametrize("how", ["option", "relative", "environment"])
def test_naming_the_default_manifest_keeps_the_layout(tmp_path, how):
    root = tmp_path / "store"
    run = Lashctl(tmp_path, str(root), [])
    [attachment_id] = run.put("s", b"one blob\n")
    (blob_path(root, attachment_id).parent / f"{attachment_id}.json").unlink()
    assert run("verify").returncode == 65  # lashctl's store: a lost sidecar is damage
    if how == "environment":
        env = {k: v for k, v in os.environ.items() if not k.startswith("LASHCTL_")}
        env["LASHCTL_MANIFEST"] = str(root / "manifest.jsonl")
        done = subprocess.run(
            [LASHCTL, "--store", str(root), "verify"],
            check=False,
            capture_output=True,
            env=env,
            timeout=120,
            cwd=tmp_path,
        )
    else:
        named = "store/manifest.jsonl" if how == "relative" else str(root / "manifest.jsonl")
        done = run("verify", manifest=["--manifest", named])
    assert done.returncode == 65, done.stderr


# -- F6: a store whose manifest is kept elsewhere, mixed -> bare -------------------------
def test_lash_blobs_beside_one_lashctl_put_get_no_sidecars(tmp_path):
    root = tmp_path / "store"
    run = Lashctl(tmp_path, str(root), ["--manifest", str(tmp_path / "elsewhere.jsonl")])
    [mine] = run.put("s", b"put by lashctl first\n")
    assert sidecars(root) == [f"{mine}.json"]
    for n in range(3):
        lash_blob(root, f"written by lash {n}\n".encode())
    run.ok("verify", "--fix")
    assert sidecars(root) == [f"{mine}.json"]


# -- F7: a hostile lashctl-layout ------------------------------------------------------
@pytest.mark.parametrize("kind", ["symlink", "fifo", "directory"])
def test_a_layout_record_that_is_not_a_file_is_unsafe(tmp_path, kind):
    root = tmp_path / "store"
    run = Lashctl(tmp_path, str(root), [])
    run.put("s", b"one\n")
    record = root / "lashctl-layout"
    if kind == "symlink":
        (tmp_path / "elsewhere").write_text("bare\n")
        record.symlink_to(tmp_path / "elsewhere")
    elif kind == "fifo":
        os.mkfifo(record)
    else:
        record.mkdir()
    done = run("init")
    assert done.returncode == 65
    assert "lashctl-layout" in error_line(done)


@pytest.mark.parametrize("content", [b"bare\n" + b" " * 70 + b"junk\n", b"bare\njunk\n", b"sidecars" * 1000])
def test_a_layout_record_with_more_than_a_layout_is_corrupt(tmp_path, content):
    root = tmp_path / "store"
    run = Lashctl(tmp_path, str(root), [])
    run.put("s", b"one\n")
    (root / "lashctl-layout").write_bytes(content)
    done = run("init")
    assert done.returncode == 65
    assert "does not name a layout" in error_line(done)


@pytest.mark.parametrize("content", [b"bare", b"bare\n", b" bare \r\n\n"])
def test_a_layout_record_with_whitespace_is_read(tmp_path, content):
    root = tmp_path / "store"
    run = Lashctl(tmp_path, str(root), [])
    run.put("s", b"one\n")
    (root / "lashctl-layout").write_bytes(content)
    assert json.loads(run.ok("--json", "init").stdout)["layout"] == "bare"


# -- F8: an oversized record on S3 is refused before it is read ------------------------
def test_an_oversized_layout_record_on_s3_is_corrupt(tmp_path, s3_bucket):
    import servers

    run = Lashctl(tmp_path, f"s3://{s3_bucket}/lash", ["--manifest", str(tmp_path / "m.jsonl")])
    run.put("s", b"one\n")
    client = servers.s3_client(os.environ["AWS_ENDPOINT_URL"])
    client.put_object(Bucket=s3_bucket, Key="lash/lashctl-layout", Body=b"bare\n" + b" " * 8000)
    done = run("init")
    assert done.returncode == 65
    assert "lashctl-layout" in error_line(done)


# -- F9: forget --json names the ids without a row -------------------------------------
def test_forget_json_names_the_missing_ids(tmp_path):
    run = Lashctl(tmp_path, str(tmp_path / "store"), [])
    [kept] = run.put("s", b"one\n")
    absent = hashlib.sha256(b"never put\n").hexdigest()
    done = run("--json", "forget", "-s", "s", kept, absent)
    assert done.returncode == 3
    document = json.loads(done.stdout.decode().splitlines()[0])
    assert document["missing"] == [absent]
    assert document["rows_forgotten"] == 1


# -- F10: recording a layout is exclusive ----------------------------------------------
def test_init_of_another_layout_after_a_record_refuses(tmp_path):
    run = Lashctl(tmp_path, str(tmp_path / "store"), [])
    run.ok("init", "--layout", "bare")
    done = run("init", "--layout", "sidecars")
    assert done.returncode == 4
    assert (tmp_path / "store" / "lashctl-layout").read_text() == "bare\n"


def test_a_record_written_meanwhile_is_not_overwritten(tmp_path):
    """Two inits at once: the one that records second sees the first's record."""
    from lashctl.backends import open_blobs
    from lashctl.errors import Refused

    first, second = open_blobs(tmp_path / "store"), open_blobs(tmp_path / "store")
    assert first.record_layout("bare") is True
    with pytest.raises(Refused, match="records layout bare"):
        second.record_layout("sidecars")
    assert second.record_layout("bare") is False
    assert (tmp_path / "store" / "lashctl-layout").read_text() == "bare\n"


def test_a_record_written_meanwhile_on_s3_is_not_overwritten(s3_bucket):
    from lashctl.backends import open_blobs
    from lashctl.errors import Refused

    first, second = open_blobs(f"s3://{s3_bucket}/lash"), open_blobs(f"s3://{s3_bucket}/lash")
    assert first.record_layout("bare") is True
    with pytest.raises(Refused, match="records layout bare"):
        second.record_layout("sidecars")
    assert second.recorded_layout() == "bare"
