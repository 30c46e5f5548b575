"""``lashctl migrate`` end to end, against real servers (moto S3, PostgreSQL): no mocks.

Each case builds a source store with the installed ``lashctl`` (puts, commits,
a forced delete that leaves rows without bytes, an unmanaged blob), migrates
it, and compares what the destination holds with what the source holds,
read back through the backends: ids, bytes, sidecars, rows. The source is
snapshotted (every file's bytes, mode and mtime) before and after: migrate
never changes it.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import png_bytes, sha
from reliability_helpers import base_env, find_lashctl, one_line_error, run

from lashctl.core import Store
from lashctl.errors import EXIT_PARTIAL, EXIT_USAGE

pytestmark = pytest.mark.e2e


def lashctl(*args, env: dict | None = None) -> subprocess.CompletedProcess:
    return run([str(a) for a in args], env=env if env is not None else base_env(), timeout=180)


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, result.stderr.decode()
    return result


def migrate_json(src: list, dest: list, *extra) -> tuple[int, dict, str]:
    result = lashctl(*src, "--json", "migrate", *dest, *extra)
    stderr = result.stderr.decode()
    assert "Traceback" not in stderr, stderr
    return result.returncode, json.loads(result.stdout), stderr


def build_source(root: Path, tmp: Path, n: int = 6) -> dict:
    """A store with committed and uncommitted rows in two sessions, a PNG (a
    sidecar with dimensions), rows whose bytes were deleted, an unmanaged blob."""
    inputs = tmp / "inputs"
    inputs.mkdir()
    paths = []
    for i in range(n):
        p = inputs / f"file-{i}.txt"
        p.write_bytes(f"attachment {i}\n".encode() * (i + 1))
        paths.append(p)
    png = inputs / "pic.png"
    png.write_bytes(png_bytes(3, 2))
    ok(lashctl("--store", root, "put", "-s", "alpha", *paths, png))
    ok(lashctl("--store", root, "put", "-s", "beta", paths[0], paths[1]))
    ids = [sha(p.read_bytes()) for p in paths]
    ok(lashctl("--store", root, "commit", "-s", "alpha", ids[0], ids[2], sha(png.read_bytes())))
    ok(lashctl("--store", root, "commit", "-s", "beta", ids[1]))
    gone = inputs / "gone.txt"
    gone.write_bytes(b"these bytes will be deleted\n")
    ok(lashctl("--store", root, "put", "-s", "alpha", gone))
    ok(lashctl("--store", root, "commit", "-s", "alpha", sha(gone.read_bytes())))
    ok(lashctl("--store", root, "delete", "--force", sha(gone.read_bytes())))
    store = Store(root)
    with store.blobs.opened():
        staged = store.blobs.stage(io.BytesIO(b"unmanaged: no row names me\n"), "planted")
        store.blobs.install(staged)
        store.blobs.sync([staged.attachment_id])
    return {"ids": ids, "png": sha(png.read_bytes()), "gone": sha(gone.read_bytes()), "unmanaged": staged.attachment_id}


def snapshot(root: Path) -> dict:
    out = {}
    for path in sorted(Path(root).rglob("*")):
        st = path.lstat()
        data = path.read_bytes() if path.is_file() and not path.is_symlink() else None
        out[str(path.relative_to(root))] = (
            st.st_mode,
            st.st_mtime_ns,
            st.st_size,
            sha(data) if data is not None else None,
        )
    return out


def contents(root, manifest=None) -> dict:
    """What a store holds, read through the backends: blobs, sidecars, rows."""
    store = Store(root, manifest)
    with store.blobs.opened():
        ids = list(store.blobs.iter_ids())
        blobs = {}
        sidecars = {}
        for i in ids:
            with store.blobs.open(i) as handle:
                blobs[i] = handle.read()
            meta = store.blobs.read_sidecar(i)
            sidecars[i] = meta.encode() if meta is not None else None
    with store.manifest.reading() as view:
        rows = {
            r.key: (r.canonical_uri, r.intent_at_epoch_ms, r.committed_at_epoch_ms)
            for group in view.rows_by_id()
            for r in group
        }
    return {"ids": ids, "blobs": blobs, "sidecars": sidecars, "rows": rows}


def all_verified(root, manifest=None) -> None:
    store = Store(root, manifest)
    with store.blobs.opened():
        for i in store.blobs.iter_ids():
            assert store.blobs.hash(i)[0] == i


def assert_rows_have_bytes(dest_root, dest_manifest, source: dict) -> None:
    """The safety property: every row at the destination whose id has bytes at
    the source has those bytes, verified, at the destination."""
    store = Store(dest_root, dest_manifest)
    with store.manifest.reading() as view, store.blobs.opened():
        for group in view.rows_by_id():
            i = group[0].attachment_id
            if i in source["blobs"]:
                assert store.blobs.hash(i)[0] == i, f"a row for {i} but not its bytes"


# -- directory + JSON-lines -> directory + JSON-lines --------------------------------------
def test_directory_to_directory(tmp_path):
    src, dest = tmp_path / "src", tmp_path / "dest"
    made = build_source(src, tmp_path)
    before = snapshot(src)
    source = contents(src)

    code, doc, stderr = migrate_json(["--store", src], ["--to-store", dest])
    assert code == 0, stderr
    copied = contents(dest)
    assert copied == source
    assert len(source["ids"]) == len(made["ids"]) + 2  # the PNG and the unmanaged blob
    assert doc["blobs_copied"] == len(source["ids"]) and doc["blobs_skipped"] == doc["blobs_failed"] == 0
    assert doc["bytes_copied"] == sum(len(b) for b in source["blobs"].values())
    assert doc["rows_copied"] == len(source["rows"]) and doc["rows_skipped"] == 0
    assert doc["sidecars_copied"] == len(source["ids"]) - 1  # the planted blob has none
    assert doc["rows_without_bytes"] == 1 and doc["failures"] == []
    assert [n["id"] for n in doc["notes"]] == [made["gone"]]
    assert copied["rows"][("alpha", made["gone"])][2] is not None  # copied as it is: committed
    assert snapshot(src) == before

    # A rerun copies nothing: every blob verified and skipped, every row identical.
    code, doc, stderr = migrate_json(["--store", src], ["--to-store", dest])
    assert code == 0, stderr
    assert doc["blobs_copied"] == 0 and doc["blobs_skipped"] == len(source["ids"])
    assert doc["rows_copied"] == 0 and doc["rows_skipped"] == len(source["rows"])
    assert doc["sidecars_copied"] == 0
    assert contents(dest) == source
    assert snapshot(src) == before


def test_human_output_and_explicit_manifests(tmp_path):
    src, dest = tmp_path / "src", tmp_path / "dest"
    made = build_source(src, tmp_path, n=3)
    moved = tmp_path / "elsewhere" / "m.jsonl"
    result = ok(lashctl("--store", src, "migrate", "--to-store", dest, "--to-manifest", moved))
    err = result.stderr.decode()
    assert f"{src} -> {dest}: copied 5 blob(s)" in err
    assert "1 without bytes at the source" in err
    # One record per note on a pipe: the id whose bytes the source lacks.
    assert result.stdout.decode().split("\t")[0] == made["gone"]
    assert contents(dest, moved) == contents(src)
    assert not (dest / "manifest.jsonl").exists()


# -- directory + JSON-lines -> S3 + PostgreSQL -> directory + JSON-lines -------------------
def test_round_trip_through_s3_and_postgres(tmp_path, s3_bucket, pg_url):
    src, back = tmp_path / "src", tmp_path / "back"
    build_source(src, tmp_path)
    before = snapshot(src)
    source = contents(src)
    ok(lashctl("--manifest", pg_url, "manifest", "init"))
    remote = f"s3://{s3_bucket}/team/lash"

    code, doc, stderr = migrate_json(["--store", src], ["--to-store", remote, "--to-manifest", pg_url])
    assert code == 0, stderr
    assert doc["blobs_copied"] == len(source["ids"]) and doc["rows_copied"] == len(source["rows"])
    assert contents(remote, pg_url) == source
    assert snapshot(src) == before

    # And back: the same ids, the same bytes and sidecars, the same rows.
    code, doc, stderr = migrate_json(["--store", remote, "--manifest", pg_url], ["--to-store", back])
    assert code == 0, stderr
    assert contents(back) == source
    all_verified(back)

    # Reruns in both directions copy nothing.
    code, doc, _ = migrate_json(["--store", src], ["--to-store", remote, "--to-manifest", pg_url])
    assert code == 0 and doc["blobs_copied"] == doc["rows_copied"] == 0
    assert doc["blobs_skipped"] == len(source["ids"]) and doc["rows_skipped"] == len(source["rows"])


def test_s3_destination_needs_a_manifest_and_a_table(tmp_path, s3_bucket, pg_url):
    src = tmp_path / "src"
    build_source(src, tmp_path, n=3)
    result = lashctl("--store", src, "migrate", "--to-store", f"s3://{s3_bucket}")
    assert result.returncode == EXIT_USAGE and "--to-manifest" in one_line_error(result.stderr)
    # No table yet: refused before any byte moves.
    result = lashctl("--store", src, "migrate", "--to-store", f"s3://{s3_bucket}", "--to-manifest", pg_url)
    assert result.returncode == EXIT_USAGE and "manifest init" in one_line_error(result.stderr)
    assert list(Store(f"s3://{s3_bucket}", tmp_path / "x.jsonl").blobs.iter_ids()) == []


# -- a corrupt source blob -----------------------------------------------------------------
def test_corrupt_source_blob_is_reported_and_not_copied(tmp_path):
    src, dest = tmp_path / "src", tmp_path / "dest"
    made = build_source(src, tmp_path)
    bad = made["ids"][2]  # committed by alpha
    path = src / "sha256" / bad[:2] / bad
    os.chmod(path, 0o644)
    path.write_bytes(b"rotten bytes")
    before = snapshot(src)

    code, doc, stderr = migrate_json(["--store", src], ["--to-store", dest])
    assert code == EXIT_PARTIAL, stderr
    assert doc["blobs_failed"] == 1
    assert [(f["id"], f["what"]) for f in doc["failures"]] == [(bad, "blob"), (bad, "rows")]
    assert "hashes to" in doc["failures"][0]["error"]
    assert doc["rows_held"] == 1
    copied = contents(dest)
    assert bad not in copied["ids"]
    assert all(key[1] != bad for key in copied["rows"])  # its row is held back
    source = contents(src)
    assert copied["ids"] == [i for i in source["ids"] if i != bad]
    assert copied["rows"] == {k: v for k, v in source["rows"].items() if k[1] != bad}
    assert not list((dest / "tmp").iterdir())  # the staged copy was discarded
    assert snapshot(src) == before
    assert "lashctl: error: migrate finished with 2 failure(s)" in stderr


# -- dry run ---------------------------------------------------------------------------------
def test_dry_run_writes_nothing(tmp_path):
    src, dest = tmp_path / "src", tmp_path / "dest"
    build_source(src, tmp_path)
    source = contents(src)
    before = snapshot(src)
    code, doc, stderr = migrate_json(["--store", src], ["--to-store", dest], "--dry-run")
    assert code == 0, stderr
    assert doc["dry_run"] is True
    assert doc["blobs_copied"] == len(source["ids"])
    assert doc["bytes_copied"] == sum(len(b) for b in source["blobs"].values())
    assert doc["rows_copied"] == len(source["rows"])
    assert not dest.exists()
    assert snapshot(src) == before

    # Against a destination that has part of it: counts what is missing, changes nothing.
    ok(lashctl("--store", src, "migrate", "--to-store", dest))
    first = source["ids"][0]
    (dest / "sha256" / first[:2] / first).unlink()
    with open(dest / "manifest.jsonl", "rb") as handle:
        kept = handle.read()
    lines = kept.splitlines(keepends=True)
    (dest / "manifest.jsonl").write_bytes(b"".join(lines[:3]))  # header and the first row's events
    dest_before = snapshot(dest)
    code, doc, stderr = migrate_json(["--store", src], ["--to-store", dest], "-n")
    assert code == 0, stderr
    assert doc["blobs_copied"] == 1 and doc["blobs_skipped"] == len(source["ids"]) - 1
    assert doc["bytes_copied"] == len(source["blobs"][first])
    assert 0 < doc["rows_copied"] < len(source["rows"])
    assert doc["rows_copied"] + doc["rows_skipped"] == len(source["rows"])
    assert snapshot(dest) == dest_before
    assert "dry run: " in stderr and "would copy 1 blob(s)" in stderr


def test_dry_run_to_s3_and_postgres_writes_nothing(tmp_path, s3_bucket, pg_url):
    src = tmp_path / "src"
    build_source(src, tmp_path, n=3)
    Store(f"s3://{s3_bucket}", pg_url).manifest.init()
    code, doc, stderr = migrate_json(
        ["--store", src], ["--to-store", f"s3://{s3_bucket}", "--to-manifest", pg_url], "--dry-run"
    )
    assert code == 0, stderr
    assert doc["blobs_copied"] == 5 and doc["rows_copied"] == len(contents(src)["rows"])
    assert contents(f"s3://{s3_bucket}", pg_url) == {"ids": [], "blobs": {}, "sidecars": {}, "rows": {}}


# -- refusals --------------------------------------------------------------------------------
def test_refuses_the_same_store_or_the_same_manifest(tmp_path):
    src = tmp_path / "src"
    build_source(src, tmp_path, n=3)
    before = snapshot(src)
    (tmp_path / "alias").symlink_to(src)
    (tmp_path / "x").mkdir()
    for dest in ([src], [f"{src}/."], [tmp_path / "x" / ".." / "src"]):
        result = lashctl("--store", src, "migrate", "--to-store", *dest)
        assert result.returncode == EXIT_USAGE
        assert "is the source store" in one_line_error(result.stderr)
    result = lashctl(
        "--store",
        src,
        "migrate",
        "--to-store",
        tmp_path / "other",
        "--to-manifest",
        tmp_path / "alias" / "manifest.jsonl",
    )
    assert result.returncode == EXIT_USAGE
    assert "is the source's manifest" in one_line_error(result.stderr)
    assert not (tmp_path / "other").exists()
    assert snapshot(src) == before


def test_refuses_a_destination_inside_the_source_or_around_it(tmp_path):
    src = tmp_path / "src"
    build_source(src, tmp_path, n=3)
    before = snapshot(src)
    shard = next((src / "sha256").iterdir())
    for dest in (shard, src / "tmp" / "copy", src / "sub"):
        result = lashctl("--store", src, "migrate", "--to-store", dest)
        assert result.returncode == EXIT_USAGE, dest
        assert "inside the source store" in one_line_error(result.stderr)
    result = lashctl("--store", src, "migrate", "--to-store", tmp_path)
    assert result.returncode == EXIT_USAGE
    assert "contains the source store" in one_line_error(result.stderr)
    assert snapshot(src) == before


def test_refuses_the_same_postgres_manifest(tmp_path, pg_url):
    src = tmp_path / "src"
    Store(src, pg_url).manifest.init()
    (tmp_path / "f").write_bytes(b"one")
    ok(lashctl("--store", src, "--manifest", pg_url, "put", "-s", "a", tmp_path / "f"))
    result = lashctl(
        "--store", src, "--manifest", pg_url, "migrate", "--to-store", tmp_path / "d", "--to-manifest", pg_url
    )
    assert result.returncode == EXIT_USAGE
    assert "is the source's manifest" in one_line_error(result.stderr)


# -- resuming after a kill -------------------------------------------------------------------
def many_blobs(root: Path, tmp: Path, n: int, size: int) -> None:
    inputs = tmp / "many"
    inputs.mkdir()
    paths = []
    for i in range(n):
        p = inputs / f"b{i:04d}"
        p.write_bytes(i.to_bytes(4, "big") * (size // 4))
        paths.append(p)
    ok(lashctl("--store", root, "put", "-s", "bulk", *paths))
    ok(lashctl("--store", root, "commit", "-s", "bulk", *[sha(p.read_bytes()) for p in paths[::2]]))


def test_sigkill_part_way_then_rerun_completes(tmp_path):
    src, dest = tmp_path / "src", tmp_path / "dest"
    many_blobs(src, tmp_path, 300, 64 * 1024)
    source = contents(src)
    before = snapshot(src)
    proc = subprocess.Popen(
        [find_lashctl(), "--store", str(src), "migrate", "--to-store", str(dest)],
        env=base_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if len(list(dest.glob("sha256/*/*"))) >= 60:  # blobs and sidecars: about 30 blobs in
                break
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the migration finished before it could be killed"
    # Killed part-way: whatever rows landed have their bytes, verified.
    assert_rows_have_bytes(dest, None, source)
    partial = contents(dest)
    assert 0 < len(partial["ids"]) < len(source["ids"])

    code, doc, stderr = migrate_json(["--store", src], ["--to-store", dest])
    assert code == 0, stderr
    assert doc["blobs_skipped"] > 0 and doc["blobs_copied"] > 0
    assert doc["blobs_skipped"] + doc["blobs_copied"] == len(source["ids"])
    assert doc["rows_skipped"] + doc["rows_copied"] == len(source["rows"])
    assert contents(dest) == source
    all_verified(dest)
    assert snapshot(src) == before


class Dying:
    """A blob backend that dies (as a kill would) after ``n`` installs."""

    def __init__(self, inner, n: int) -> None:
        self._inner, self._left = inner, n

    def install(self, staged):
        if self._left == 0:
            raise KeyboardInterrupt("killed")
        self._left -= 1
        return self._inner.install(staged)

    def __getattr__(self, name):
        return getattr(self._inner, name)


def test_interrupted_in_process_then_rerun_into_s3_and_postgres(tmp_path, s3_bucket, pg_url):
    from lashctl import migrate

    src = tmp_path / "src"
    many_blobs(src, tmp_path, 40, 1024)
    source = contents(src)
    remote = f"s3://{s3_bucket}/p"
    dest = Store(remote, pg_url)
    dest.manifest.init()
    dest.blobs = Dying(dest.blobs, 25)
    with pytest.raises(KeyboardInterrupt):
        migrate.migrate(Store(src), dest, row_batch=7)
    assert_rows_have_bytes(remote, pg_url, source)
    partial = contents(remote, pg_url)
    assert len(partial["ids"]) == 25
    assert 0 < len(partial["rows"]) <= 25  # rows only of blobs already verified there

    report = migrate.migrate(Store(src), Store(remote, pg_url), row_batch=7)
    assert report.failures == []
    assert (report.blobs_skipped, report.blobs_copied) == (25, 15)
    assert report.rows_skipped == len(partial["rows"])
    assert report.rows_copied == len(source["rows"]) - len(partial["rows"])
    assert contents(remote, pg_url) == source
