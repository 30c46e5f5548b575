"""S3Blobs against a real S3 server (moto in server mode): no mocks.

The ``s3_bucket`` fixture (tests/conftest.py, tests/servers.py) creates a
fresh bucket per test and points AWS_* at the server; boto3 is used only to
plant and inspect objects behind the backend's back.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tempfile
import threading
import time
import tracemalloc

import pytest
import servers

from lashctl.backends.base import LAYOUT_SIDECARS, BlobBackend, BlobStat
from lashctl.errors import (
    EXIT_DENIED,
    EXIT_NOT_FOUND,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    Corrupt,
    Denied,
    NotFound,
    Unavailable,
    UsageError,
)
from lashctl.sidecar import Metadata
from conftest import sha


def _mod():
    servers.need("obstore", "the S3 backend tests")
    from lashctl.backends.blobs import s3 as module

    return module


@pytest.fixture
def client(s3_server):
    return servers.s3_client(s3_server)


@pytest.fixture
def backend(s3_bucket):
    return _mod().S3Blobs(f"s3://{s3_bucket}/team/lash/")


def put_blob(b, data: bytes) -> str:
    staged = b.stage(io.BytesIO(data), "test")
    b.install(staged)
    return staged.attachment_id


def keys(client, bucket: str) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def body(client, bucket: str, key: str) -> bytes:
    return client.get_object(Bucket=bucket, Key=key)["Body"].read()


# -- URLs and keys ------------------------------------------------------------------------
def test_url_normalised_and_keys_exactly_as_lash_writes_them(s3_bucket, client):
    m = _mod()
    assert m.parse_s3_url("s3://b//a///c/") == ("b", "a/c")
    assert m.parse_s3_url("s3://b") == ("b", "")
    assert m.parse_s3_url("s3://b/") == ("b", "")
    for bad in ("s3://", "s3:///x", "s3://b/a/../c", "s3://bad bucket/x"):
        with pytest.raises(UsageError) as info:
            m.parse_s3_url(bad)
        assert info.value.exit_code == EXIT_USAGE

    deep = m.S3Blobs(f"s3://{s3_bucket}//one/two//")
    flat = m.S3Blobs(f"s3://{s3_bucket}")
    assert deep.name == f"s3://{s3_bucket}/one/two" and flat.name == f"s3://{s3_bucket}"
    assert deep.layout == LAYOUT_SIDECARS
    data = b"hello lash"
    i = put_blob(deep, data)
    put_blob(flat, data)
    deep.write_sidecar(Metadata(i, "text/plain", len(data), label="h.txt"))
    assert sorted(keys(client, s3_bucket)) == sorted(
        [
            f"one/two/sha256/{i[:2]}/{i}",
            f"one/two/sha256/{i[:2]}/{i}.json",
            f"sha256/{i[:2]}/{i}",
        ]
    )
    assert deep.where(i) == f"s3://{s3_bucket}/one/two/sha256/{i[:2]}/{i}"
    assert deep.where(i, sidecar=True) == f"s3://{s3_bucket}/one/two/sha256/{i[:2]}/{i}.json"
    with pytest.raises(ValueError):
        deep.where("../../etc")


def test_satisfies_the_protocol(backend):
    protocol_methods = [n for n in vars(BlobBackend) if not n.startswith("_") and callable(getattr(BlobBackend, n))]
    for name in protocol_methods:
        assert callable(getattr(backend, name)), name


def test_opened_nests(backend):
    with backend.opened() as outer:
        with backend.opened() as inner:
            assert inner is outer is backend
            backend.check_root()
        assert backend.exists()


# -- stage, install, dedup ------------------------------------------------------------------
def test_stage_hashes_into_a_private_temp_file(backend):
    data = os.urandom(3 * 1024 * 1024 + 17)
    seen: list[int] = []
    staged = backend.stage(io.BytesIO(data), "upload.bin", progress=seen.append)
    try:
        assert staged.attachment_id == sha(data) and staged.byte_len == len(data)
        assert staged.head == data[: 64 * 1024]
        assert seen == [1024 * 1024] * 3 + [17]
        path = staged.handle
        assert os.path.dirname(path) == os.path.join(tempfile.gettempdir(), f"lashctl-s3-staging-{os.getuid()}")
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        with backend.open_staged(staged) as handle:
            assert handle.read() == data
        assert backend.stat(staged.attachment_id) is None  # nothing visible yet
    finally:
        backend.discard(staged)
    assert not os.path.exists(path)
    backend.discard(staged)  # twice is fine


def test_install_dedup_refreshes_last_modified(backend, s3_bucket, client):
    data = b"same bytes twice"
    first = backend.stage(io.BytesIO(data), "a")
    assert backend.install(first) is False
    assert not os.path.exists(first.handle)
    i = first.attachment_id
    before = backend.stat(i)
    assert before == BlobStat(size=len(data), mtime_ms=before.mtime_ms, token=before.token)
    assert before.is_file and isinstance(before.token, str)
    time.sleep(1.1)  # LastModified has one-second resolution
    second = backend.stage(io.BytesIO(data), "b")
    assert backend.install(second) is True
    after = backend.stat(i)
    assert after.mtime_ms >= before.mtime_ms + 1000
    assert body(client, s3_bucket, backend.where(i).split("/", 3)[3]) == data


def test_install_heals_rotten_bytes(backend, s3_bucket, client):
    data = b"the real bytes"
    i = sha(data)
    key = backend.where(i).split("/", 3)[3]
    client.put_object(Bucket=s3_bucket, Key=key, Body=b"rotten bytes!!")  # same size
    assert backend.install(backend.stage(io.BytesIO(data), "x")) is True
    assert body(client, s3_bucket, key) == data
    client.put_object(Bucket=s3_bucket, Key=key, Body=b"short")  # another size: not a dedup hit
    assert backend.install(backend.stage(io.BytesIO(data), "x")) is False
    assert body(client, s3_bucket, key) == data


# -- reading -------------------------------------------------------------------------------
def test_open_streams_the_object(backend):
    data = os.urandom(2 * 1024 * 1024 + 5)
    i = put_blob(backend, data)
    with backend.open(i) as stream:
        assert stream.read(3) == data[:3]
        buf = bytearray(10)
        assert stream.readinto(buf) == 10 and bytes(buf) == data[3:13]
        rest = stream.read()
        assert rest == data[13:]
        assert stream.read(1) == b""
    assert stream.closed
    with backend.open(i) as stream:
        assert stream.read() == data
    with pytest.raises(NotFound) as info:
        backend.open(sha(b"absent"))
    assert info.value.exit_code == EXIT_NOT_FOUND and sha(b"absent") in info.value.message


def test_stat_of_blob_and_sidecar(backend):
    i = put_blob(backend, b"abc")
    assert backend.stat(i).size == 3
    assert backend.stat(i, sidecar=True) is None
    backend.write_sidecar(Metadata(i, "text/plain", 3))
    assert backend.stat(i, sidecar=True).size == len(Metadata(i, "text/plain", 3).encode())
    assert backend.stat(sha(b"nope")) is None


def test_sidecar_round_trip(backend, s3_bucket, client):
    i = put_blob(backend, b"\x89PNG fake")
    meta = Metadata(i, "image/png", 9, width=7, height=11, label="pixel.png")
    assert backend.read_sidecar(i) is None
    assert backend.write_sidecar(meta) is True
    assert backend.write_sidecar(meta, durable=False) is False  # already exactly this
    key = backend.where(i, sidecar=True).split("/", 3)[3]
    assert body(client, s3_bucket, key) == meta.encode()
    assert backend.read_sidecar(i) == meta
    client.put_object(Bucket=s3_bucket, Key=key, Body=b"{not json")
    with pytest.raises(Corrupt) as info:
        backend.read_sidecar(i)
    assert backend.where(i, sidecar=True) in info.value.message
    assert backend.write_sidecar(meta) is True and backend.read_sidecar(i) == meta


# -- hash and quarantine ---------------------------------------------------------------------
def test_hash_mismatch_then_quarantine(backend, s3_bucket, client):
    good = b"what the id says"
    i = sha(good)
    key = backend.where(i).split("/", 3)[3]
    client.put_object(Bucket=s3_bucket, Key=key, Body=b"bit rot happened")
    backend.write_sidecar(Metadata(i, "text/plain", len(good)))
    seen: list[int] = []
    digest, hashed = backend.hash(i, progress=seen.append)
    assert digest == sha(b"bit rot happened") != i
    assert sum(seen) == hashed.size == 16
    assert hashed.token == client.head_object(Bucket=s3_bucket, Key=key)["ETag"]

    where = backend.quarantine(i, hashed, "20240101T000000Z")
    qkey = f"team/lash/quarantine/20240101T000000Z-{i}"
    assert where == f"s3://{s3_bucket}/{qkey}"
    assert body(client, s3_bucket, qkey) == b"bit rot happened"
    assert body(client, s3_bucket, qkey + ".json") == Metadata(i, "text/plain", len(good)).encode()
    assert backend.stat(i) is None and backend.stat(i, sidecar=True) is None
    assert list(backend.walk()) == []  # quarantined objects are not strays
    with pytest.raises(NotFound):
        backend.hash(i)


def test_quarantine_refuses_an_object_that_changed(backend, s3_bucket, client):
    i = sha(b"original")
    key = backend.where(i).split("/", 3)[3]
    client.put_object(Bucket=s3_bucket, Key=key, Body=b"rotten-1")
    _, hashed = backend.hash(i)
    backend.install(backend.stage(io.BytesIO(b"original"), "re-put"))  # healed meanwhile
    assert backend.quarantine(i, hashed, "stamp") is None
    assert body(client, s3_bucket, key) == b"original"
    assert not [k for k in keys(client, s3_bucket) if "/quarantine/" in k]
    gone = sha(b"gone")
    assert backend.quarantine(gone, hashed, "stamp") is None


# -- listings -------------------------------------------------------------------------------
def test_iter_ids_in_id_order_and_by_prefix(backend, s3_bucket, client):
    ids = sorted(put_blob(backend, f"blob {n}".encode()) for n in range(40))
    for i in ids[:5]:
        backend.write_sidecar(Metadata(i, "text/plain", 6))
    stray_id = sha(b"stray")
    for stray in (
        f"sha256/{ids[0][:2]}/not-an-id",
        f"sha256/zz/{stray_id}",
        f"sha256/{stray_id}",
        f"sha256/{ids[1][:2]}/{ids[1]}.tmp",
        f"sha256/{ids[2][:2]}/{ids[2].upper()}",
    ):
        client.put_object(Bucket=s3_bucket, Key=f"team/lash/{stray}", Body=b"x")
    client.put_object(Bucket=s3_bucket, Key=f"team/lash/quarantine/s-{stray_id}", Body=b"x")
    client.put_object(Bucket=s3_bucket, Key=f"elsewhere/sha256/{stray_id[:2]}/{stray_id}", Body=b"x")

    assert list(backend.iter_ids()) == ids
    target = ids[17]
    for prefix in (target[:1], target[:2], target[:3], target[:5], target):
        assert list(backend.iter_ids(prefix)) == [i for i in ids if i.startswith(prefix)], prefix
    assert list(backend.iter_ids("ffff" if not any(i.startswith("ffff") for i in ids) else "0000")) == []


def test_iter_ids_streams_pages(backend, s3_bucket, monkeypatch):
    m = _mod()
    monkeypatch.setattr(m, "LIST_PAGE", 3)
    ids = sorted(put_blob(backend, f"page {n}".encode()) for n in range(10))
    assert list(backend.iter_ids()) == ids


def test_walk_finds_strays_and_orphan_sidecars(backend, s3_bucket, client):
    kept = put_blob(backend, b"kept")
    backend.write_sidecar(Metadata(kept, "text/plain", 4))
    orphan = sha(b"orphan")
    wrong_shard = sha(b"wrong shard")
    plain = put_blob(backend, b"no sidecar")
    strays = {
        f"{orphan[:2]}/{orphan}.json": b"{}",
        f"{kept[:2]}/{kept}-x": b"sorts between a blob and its sidecar",
        f"{kept[:2]}/{kept}.tmp": b"lash-core staging",
        f"{('00' if wrong_shard[:2] != '00' else '11')}/{wrong_shard}": b"wrong shard",
        f"{plain[:2]}/junk": b"junk",
        "README": b"top level",
        f"{plain[:2]}/deeper/{plain}": b"nested",
    }
    for name, data in strays.items():
        client.put_object(Bucket=s3_bucket, Key=f"team/lash/sha256/{name}", Body=data)
    client.put_object(Bucket=s3_bucket, Key=f"team/lash/quarantine/x-{orphan}", Body=b"q")

    found = list(backend.walk())
    assert sorted(f.name for f in found) == sorted(strays)
    for f in found:
        assert f.area == "blobs"
        assert f.where == f"s3://{s3_bucket}/team/lash/sha256/{f.name}"
        assert f.stat.size == len(strays[f.name]) and f.stat.is_file
    for f in found:
        backend.remove(f)
    assert list(backend.walk()) == []
    assert list(backend.iter_ids()) == sorted([kept, plain])
    assert backend.read_sidecar(kept) is not None
    with pytest.raises(ValueError):
        backend.remove(type(found[0])("blobs", "x", "x", found[0].stat, handle="team/lash/quarantine/x"))


# -- deleting -------------------------------------------------------------------------------
def test_delete(backend):
    i = put_blob(backend, b"12345")
    backend.write_sidecar(Metadata(i, "text/plain", 5))
    assert backend.delete_problem(i) is None
    assert backend.delete(i) == 5
    assert backend.stat(i) is None and backend.stat(i, sidecar=True) is None
    assert backend.delete(i) == 0
    backend.sync([i])


def test_delete_many_in_batches(backend, monkeypatch):
    m = _mod()
    monkeypatch.setattr(m, "DELETE_BATCH", 4)  # two ids per DeleteObjects request
    calls: list[int] = []
    import obstore

    real_delete = obstore.delete

    def counting_delete(store, paths):
        calls.append(len(paths) if isinstance(paths, list) else 1)
        return real_delete(store, paths)

    monkeypatch.setattr(obstore, "delete", counting_delete)
    data = [f"many {n}".encode() * (n + 1) for n in range(5)]
    ids = [put_blob(backend, d) for d in data]
    for i in ids[:2]:
        backend.write_sidecar(Metadata(i, "text/plain", 1))
    absent = sha(b"never stored")
    result = backend.delete_many(ids + [absent])
    assert result == {**{i: len(d) for i, d in zip(ids, data)}, absent: 0}
    assert list(backend.iter_ids()) == []
    assert list(backend.walk()) == []
    assert calls == [4, 4, 4]  # six ids, two per batch, blob + sidecar keys


def test_map_bounded_keeps_order_and_bounds_concurrency():
    m = _mod()
    active, peak = 0, 0
    lock = threading.Lock()

    def work(n: int) -> int:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        time.sleep(0.01 * (n % 3))
        with lock:
            active -= 1
        return n * n

    assert list(m.map_bounded(work, range(50), limit=4)) == [n * n for n in range(50)]
    assert peak <= 4


# -- errors ---------------------------------------------------------------------------------
def test_missing_bucket_is_a_usage_error(s3_bucket):
    b = _mod().S3Blobs("s3://no-such-bucket-lashctl/x")
    with pytest.raises(UsageError) as info:
        b.check_root()
    assert info.value.exit_code == EXIT_USAGE
    assert info.value.message == "bucket no-such-bucket-lashctl does not exist"
    assert b.exists() is False
    with pytest.raises(UsageError):
        list(b.iter_ids())
    with pytest.raises(UsageError):
        b.install(b.stage(io.BytesIO(b"x"), "x"))


def test_unreachable_endpoint_is_unavailable(s3_bucket, monkeypatch):
    port = servers.free_port()  # nothing listens there
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    b = _mod().S3Blobs(f"s3://{s3_bucket}/p", max_retries=0)
    for call in (b.check_root, lambda: b.stat(sha(b"x")), lambda: list(b.walk())):
        with pytest.raises(Unavailable) as info:
            call()
        assert info.value.exit_code == EXIT_UNAVAILABLE
        assert f"127.0.0.1:{port}" in info.value.message and "\n" not in info.value.message


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):
    """A second moto that checks credentials (it knows none, so every key is refused)."""
    servers.need("moto", "the S3 backend tests")
    with servers.moto_server(tmp_path_factory.mktemp("moto-auth"), env={"INITIAL_NO_AUTH_ACTION_COUNT": "0"}) as url:
        yield url


def test_refused_credentials_are_denied(auth_server, monkeypatch):
    servers.s3_env(monkeypatch, auth_server)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "super-secret-value")
    b = _mod().S3Blobs("s3://some-bucket/p")
    for call in (
        b.check_root,
        lambda: b.stat(sha(b"x")),
        lambda: b.install(b.stage(io.BytesIO(b"x"), "x")),
        lambda: b.open(sha(b"x")),
    ):
        with pytest.raises(Denied) as info:
            call()
        assert info.value.exit_code == EXIT_DENIED
        assert "super-secret-value" not in info.value.message and "\n" not in info.value.message


# -- a big object ---------------------------------------------------------------------------
class _Generated(io.RawIOBase):
    """``size`` deterministic bytes made on the fly (never held whole)."""

    def __init__(self, size: int) -> None:
        self.left = size
        self.block = hashlib.sha256(b"seed").digest() * 2048  # 64 KiB

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = min(len(buffer), self.left, len(self.block))
        buffer[:n] = self.block[:n]
        self.left -= n
        return n


def test_big_object_multipart_with_flat_memory(backend, s3_bucket, client):
    size = 20 * 1024 * 1024 + 3
    expected = hashlib.sha256()
    src = _Generated(size)
    while chunk := src.read(1 << 20):
        expected.update(chunk)

    tracemalloc.start()
    try:
        staged = backend.stage(_Generated(size), "big.bin")
        _, stage_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        assert backend.install(staged) is False
        digest, hashed = backend.hash(staged.attachment_id)
        _, hash_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert staged.attachment_id == digest == expected.hexdigest()
    assert hashed.size == size
    # Python-side memory stays at a few chunks whatever the size.
    assert stage_peak < 4 * 1024 * 1024 and hash_peak < 8 * 1024 * 1024, (stage_peak, hash_peak)
    # A multipart upload's ETag ends in -<number of parts> (8 MiB parts: 3).
    etag = client.head_object(Bucket=s3_bucket, Key=backend.where(digest).split("/", 3)[3])["ETag"]
    assert etag.strip('"').endswith("-3") and etag == hashed.token
    read = hashlib.sha256()
    with backend.open(digest) as stream:
        while chunk := stream.read(1 << 20):
            read.update(chunk)
    assert read.hexdigest() == digest


_RSS_SCRIPT = r"""
import io, os, resource, sys
from lashctl.backends.blobs import s3
s3.PART_SIZE, s3.PART_CONCURRENCY = 5 * 1024 * 1024, 2

class Generated(io.RawIOBase):
    def __init__(self, n):
        self.left, self.block = n, os.urandom(1 << 20)
    def readable(self):
        return True
    def readinto(self, buf):
        n = min(len(buf), self.left, len(self.block))
        buf[:n] = self.block[:n]
        self.left -= n
        return n

def status_mib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) // 1024

b = s3.S3Blobs(sys.argv[1])
b.check_root()
size = int(sys.argv[2])
staged = b.stage(Generated(size), "big")
before = status_mib("VmRSS")  # now; VmHWM is the peak since start
b.install(staged)
digest, hashed = b.hash(staged.attachment_id)
assert digest == staged.attachment_id and hashed.size == size
print(status_mib("VmHWM") - before)
"""


def test_big_upload_and_hash_keep_resident_memory_flat(s3_bucket, tmp_path):
    """Resident memory (obstore's buffers included) grows by the parts in
    flight, not by the object's size (Linux: /proc/self/status)."""
    if not os.path.exists("/proc/self/status"):
        pytest.skip("needs /proc/self/status")
    import subprocess
    import sys

    size = 48 * 1024 * 1024
    script = tmp_path / "rss.py"
    script.write_text(_RSS_SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), f"s3://{s3_bucket}/rss", str(size)],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    grown_mib = int(done.stdout.split()[-1])
    assert grown_mib < 28, f"resident memory grew by {grown_mib} MiB for a 48 MiB object"


def test_missing_server_package_skips_or_fails(monkeypatch):
    monkeypatch.delenv(servers.REQUIRE_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception):
        servers.need("no_such_module_for_lashctl", "this test")
    monkeypatch.setenv(servers.REQUIRE_ENV, "1")
    with pytest.raises(pytest.fail.Exception):
        servers.need("no_such_module_for_lashctl", "this test")


def test_a_folder_marker_beside_a_blob_is_skipped_not_an_outage(backend, s3_bucket, client):
    a = put_blob(backend, b"marked blob")
    b = put_blob(backend, b"another blob")
    client.put_object(Bucket=s3_bucket, Key=f"team/lash/sha256/{a[:2]}/{a}/", Body=b"")
    assert list(backend.iter_ids()) == sorted([a, b])
    assert all(f.name != f"{a[:2]}/{a}" for f in backend.walk())


def test_a_key_the_library_refuses_is_corrupt_data_not_an_outage(backend, s3_bucket, client):
    put_blob(backend, b"a blob")
    client.put_object(Bucket=s3_bucket, Key="team/lash/sha256/58/weird\ttab", Body=b"x")
    from lashctl.errors import Corrupt

    with pytest.raises(Corrupt) as info:
        list(backend.walk())
    assert info.value.exit_code == 65
    assert "rename or delete" in info.value.message


# -- landing a batch -------------------------------------------------------------------------
def _staged_batch(backend, n: int, stem: bytes):
    items = []
    for k in range(n):
        data = stem + b" %d" % k
        staged = backend.stage(io.BytesIO(data), f"f{k}")
        items.append((staged, Metadata(staged.attachment_id, "text/plain", len(data), label=f"f{k}")))
    return items


def test_land_sends_each_sidecar_then_its_blob_and_no_head_for_new_ids(backend, s3_server, s3_bucket):
    items = _staged_batch(backend, 24, b"land")
    before = len(servers.requests_to(s3_server, s3_bucket))
    assert backend.land(items) == [False] * 24
    sent = servers.requests_to(s3_server, s3_bucket)[before:]
    assert sorted(method for method, _, _ in sent) == ["PUT"] * 48  # one request per object
    order = [path for _, path, _ in sent]
    for staged, meta in items:
        blob = "/" + backend.where(staged.attachment_id).split("/", 3)[3]
        assert order.index(blob + ".json") < order.index(blob)
        assert backend.read_sidecar(staged.attachment_id) == meta
    assert not any(os.path.exists(staged.handle) for staged, _ in items)


def test_land_reports_dedup_hits_and_refreshes_them(backend, s3_server, s3_bucket, client):
    first = _staged_batch(backend, 5, b"again")
    backend.land(first[:3])
    stamps = {s.attachment_id: backend.stat(s.attachment_id).mtime_ms for s, _ in first[:3]}
    time.sleep(1.1)  # LastModified has one-second resolution
    again = _staged_batch(backend, 5, b"again")
    assert backend.land(again) == [True, True, True, False, False]
    for i, before in stamps.items():
        assert backend.stat(i).mtime_ms >= before + 1000
    # bare layout: no sidecar at all
    bare = _staged_batch(backend, 2, b"bare")
    assert backend.land([(s, None) for s, _ in bare]) == [False, False]
    assert all(backend.stat(s.attachment_id, sidecar=True) is None for s, _ in bare)


def test_stat_many_of_a_big_batch_lists_instead_of_heads(backend, s3_server, s3_bucket, client, monkeypatch):
    monkeypatch.setattr(_mod(), "LIST_PAGE", 10)  # small pages: the listing must page and jump
    key = lambda i, suffix="": backend.where(i).split("/", 3)[3] + suffix
    # ids clustered in two shards, as the orphans of a busy hour are not (but
    # a sweep of many is): planted behind the backend's back
    stored = [f"ab{n:062x}" for n in range(0, 240, 2)] + [f"cd{n:062x}" for n in range(30)]
    for n, i in enumerate(stored):
        client.put_object(Bucket=s3_bucket, Key=key(i), Body=b"x" * (n + 1))
        if n % 3 == 0:
            client.put_object(Bucket=s3_bucket, Key=key(i, ".json"), Body=b"{}")
    absent = [f"ab{n:062x}" for n in range(1, 80, 2)] + [f"ef{n:062x}" for n in range(3)]
    wanted = stored[:120:7] + absent + stored[5:9] + stored[-10:] + [stored[-1]]
    before = len(servers.requests_to(s3_server, s3_bucket))
    stats = backend.stat_many(wanted)
    sent = servers.requests_to(s3_server, s3_bucket)[before:]
    methods = [method for method, _, _ in sent]
    assert methods.count("HEAD") == 3  # the lone shard's three ids
    assert len(sent) < len(set(wanted)) // 3
    assert stats == {i: backend.stat(i) for i in wanted}
    assert all(stats[i] is not None and stats[i].size == stored.index(i) + 1 for i in set(wanted) - set(absent))
    assert all(stats[i] is None for i in absent)


def test_delete_many_after_listed_stats_asks_only_for_sidecars_that_exist(backend, s3_bucket, client, monkeypatch):
    import obstore

    key = lambda i, suffix="": backend.where(i).split("/", 3)[3] + suffix
    ids = [f"ab{n:062x}" for n in range(300)]
    for n, i in enumerate(ids):
        client.put_object(Bucket=s3_bucket, Key=key(i), Body=b"y" * n)
        if n % 3 == 0:
            client.put_object(Bucket=s3_bucket, Key=key(i, ".json"), Body=b"{}")
    orphan_sidecar = f"ab{1000:062x}"  # a sidecar whose blob is gone
    client.put_object(Bucket=s3_bucket, Key=key(orphan_sidecar, ".json"), Body=b"{}")
    sent: list[list[str]] = []
    real_delete = obstore.delete

    def counting_delete(store, paths):
        sent.append(list(paths) if isinstance(paths, list) else [paths])
        return real_delete(store, paths)

    monkeypatch.setattr(obstore, "delete", counting_delete)
    wanted = ids + [orphan_sidecar]
    stats = backend.stat_many(wanted)
    assert stats[orphan_sidecar] is None
    result = backend.delete_many(wanted, known=stats)
    assert result == {**{i: n for n, i in enumerate(ids)}, orphan_sidecar: 0}
    assert len(sent) == 1  # 301 blob keys, 101 sidecars: one request
    assert sorted(sent[0]) == sorted(
        [key(i) for i in wanted] + [key(i, ".json") for i in ids[::3]] + [key(orphan_sidecar, ".json")]
    )
    assert list(backend.iter_ids()) == [] and list(backend.walk()) == []
    # without known stats every sidecar key is asked for, as before
    sent.clear()
    again = [put_blob(backend, b"again %d" % n) for n in range(3)]
    backend.delete_many(again)
    assert sorted(sent[0]) == sorted([key(i) for i in again] + [key(i, ".json") for i in again])


def test_verify_hashes_objects_of_an_s3_store_several_at_once(s3_bucket, client, tmp_path, monkeypatch):
    """verify re-hashes an object store's blobs with bounded parallel requests;
    what it reports is the same as one at a time."""
    import threading as th

    from lashctl.core import Store
    from lashctl.inspect import verify

    m = _mod()
    store = Store(f"s3://{s3_bucket}/v", tmp_path / "manifest.jsonl", 5)
    ids = []
    for n in range(24):
        data = b"verify me %d" % n
        ids.append(put_blob(store.blobs, data))
        store.blobs.write_sidecar(Metadata(ids[-1], "text/plain", len(data)))
    rotten = ids[5]
    client.put_object(Bucket=s3_bucket, Key=store.blobs.where(rotten).split("/", 3)[3], Body=b"rotten bytes")
    lock, state = th.Lock(), {"now": 0, "max": 0}
    real_hash = m.S3Blobs.hash

    def watched(self, attachment_id, progress=None):
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        try:
            time.sleep(0.05)  # long enough for the others to start
            return real_hash(self, attachment_id, progress)
        finally:
            with lock:
                state["now"] -= 1

    monkeypatch.setattr(m.S3Blobs, "hash", watched)
    report = verify(store, int(time.time() * 1000))
    assert 1 < state["max"] <= m.S3Blobs.parallel_reads
    assert report.blobs_checked == 24
    mismatches = [f for f in report.findings if f.kind == "hash-mismatch"]
    assert [f.attachment_id for f in mismatches] == [rotten]
    monkeypatch.setattr(m.S3Blobs, "parallel_reads", 1)
    state["max"] = 0
    again = verify(store, int(time.time() * 1000))
    assert state["max"] == 1
    assert [(f.kind, f.attachment_id, f.message) for f in again.findings] == [
        (f.kind, f.attachment_id, f.message) for f in report.findings
    ]


def test_stat_many_listing_gets_past_many_odd_keys_and_folder_markers(backend, s3_bucket, client, monkeypatch):
    """Keys that sort among the candidates' (``<id>-x``, ``<id[:-1]>0-x``, a
    folder marker ``<id>/`` the library hands back as ``<id>``) never stop
    the listing nor pass for a blob: the answers are what a HEAD says."""
    monkeypatch.setattr(_mod(), "LIST_PAGE", 10)
    key = lambda i, suffix="": backend.where(i).split("/", 3)[3] + suffix
    ids = [f"cd{n:061x}1" for n in range(8)]
    for n, i in enumerate(ids):
        client.put_object(Bucket=s3_bucket, Key=key(i), Body=b"z" * (n + 1))
    for k in range(25):  # more than a page of odd keys in two gaps
        client.put_object(Bucket=s3_bucket, Key=key(ids[2], f"-{k:05d}"), Body=b"junk")
        client.put_object(Bucket=s3_bucket, Key=key(ids[5][:-1] + "0", f"-{k:05d}"), Body=b"junk")
    marker = f"cd{99:061x}1"  # only a folder marker, no blob
    client.put_object(Bucket=s3_bucket, Key=key(marker, "/"), Body=b"")
    wanted = ids + [marker]
    done: dict = {}
    worker = threading.Thread(target=lambda: done.update(stats=backend.stat_many(wanted)), daemon=True)
    worker.start()
    worker.join(30)
    assert not worker.is_alive(), "stat_many did not finish"
    assert done["stats"] == {i: backend.stat(i) for i in wanted}
    assert done["stats"][marker] is None
    assert [done["stats"][i].size for i in ids] == list(range(1, 9))


def test_staging_files_of_a_killed_put_are_removed_by_the_next_one(backend, tmp_path, monkeypatch):
    """An S3 put stages in a private directory, files named by their process:
    the next put removes those of processes that are gone (a SIGKILLed put),
    never those of one still running."""
    import subprocess
    import sys as _sys

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    _mod()
    from lashctl.backends.blobs import spool as m

    monkeypatch.setattr(m, "_STAGING_SWEPT", False)
    staging = m.staging_dir()
    assert staging.parent == tmp_path and stat.S_IMODE(staging.stat().st_mode) == 0o700
    gone = subprocess.run(
        [_sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    ).stdout.strip()
    dead = staging / f"{gone}-abcdef.part"
    alive = staging / f"{os.getpid()}-123456.part"
    other = staging / "notes.txt"
    impossible = staging / "99999999999999999999-x.part"  # no process has such a pid
    foreign_digits = staging / "\u0661\u0662\u0663-x.part"  # not ASCII digits: not a name lashctl gives
    for path in (dead, alive, other, impossible, foreign_digits):
        path.write_bytes(b"left over")
    monkeypatch.setattr(m, "_STAGING_SWEPT", False)  # a new process: its first stage sweeps
    staged = backend.stage(io.BytesIO(b"new bytes"), "new")
    assert staged.handle.startswith(str(staging)) and f"/{os.getpid()}-" in staged.handle
    assert not dead.exists() and not impossible.exists()
    assert alive.exists() and other.exists() and foreign_digits.exists()
    backend.discard(staged)


def test_a_folder_marker_alone_is_neither_a_blob_nor_a_sidecar(backend, s3_bucket, client):
    """A folder marker ``<id>/`` or ``<id>.json/`` with no object of its own
    (the library lists it without its slash) is no blob for iter_ids and no
    orphan sidecar for walk: gc would "delete" a key that is not there, on
    every run, and verify would call a blob it listed unreadable."""
    real = put_blob(backend, b"a real blob")
    ghost = sha(b"only a marker")
    for key in (f"team/lash/sha256/{ghost[:2]}/{ghost}/", f"team/lash/sha256/{ghost[:2]}/{ghost}.json/"):
        client.put_object(Bucket=s3_bucket, Key=key, Body=b"")
    assert list(backend.iter_ids()) == [real]
    assert [f.name for f in backend.walk()] == []


def test_verify_keeps_a_folder_marker_with_content_unreadable(s3_bucket, client, tmp_path):
    """A key ``<id>/`` with content is listed as ``<id>`` but cannot be read:
    verify reports it as unreadable (README, "Beyond one machine"), and its
    final re-check of passing findings (the key is still listed) keeps it."""
    from lashctl import inspect
    from lashctl.core import Store
    from lashctl.timefmt import now_ms

    store = Store(f"s3://{s3_bucket}/team/lash", tmp_path / "manifest.jsonl", layout="bare")
    real = put_blob(store.blobs, b"a real blob")
    ghost = sha(b"a marker with content")
    client.put_object(Bucket=s3_bucket, Key=f"team/lash/sha256/{ghost[:2]}/{ghost}/", Body=b"not these bytes")
    with store.blobs.opened():
        report = inspect.verify(store, now_ms())
    assert [(f.kind, f.attachment_id) for f in report.findings if f.severity == inspect.ERROR] == [
        ("unreadable", ghost)
    ], report.findings
    assert real not in {f.attachment_id for f in report.findings if f.severity == inspect.ERROR}
