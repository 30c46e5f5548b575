"""What every blob backend must do (lashctl.backends.base.BlobBackend).

Written only against the protocol; the ``blob_harness`` fixture supplies the
few medium-specific helpers (rotting bytes, planting a stray object).
"""

from __future__ import annotations

import io
import time
from functools import lru_cache

import pytest

from lashctl.backends.base import FILE, BlobStat
from lashctl.errors import NotFound
from lashctl.sidecar import Metadata
from conftest import sha


def put(blobs, data: bytes) -> str:
    staged = blobs.stage(io.BytesIO(data), "test")
    assert staged.attachment_id == sha(data)
    assert staged.byte_len == len(data)
    blobs.install(staged)
    blobs.sync([staged.attachment_id])
    return staged.attachment_id


def read_all(stream) -> bytes:
    out = bytearray()
    with stream:
        while chunk := stream.read(65536):
            out += chunk
    return bytes(out)


@lru_cache(maxsize=1)
def clustered_payloads() -> list[bytes]:
    """Payloads whose ids share prefixes of 1, 2 and 4 characters, plus a few
    unrelated ones: prefix listings must cut inside one shard, not only
    between shards."""
    by4: dict[str, list[bytes]] = {}
    for i in range(200_000):
        data = b"conformance-%d" % i
        by4.setdefault(sha(data)[:4], []).append(data)
    pair = next(v for v in by4.values() if len(v) >= 2)[:2]  # same first 4 characters
    head = sha(pair[0])
    same_shard = next(v[0] for k, v in sorted(by4.items()) if k[:2] == head[:2] and k[:3] != head[:3])
    same_first = next(v[0] for k, v in sorted(by4.items()) if k[0] == head[0] and k[1] != head[1])
    others = [b"other-%d" % i for i in range(6)]
    return pair + [same_shard, same_first] + others


# -- stage, install, stat, open ----------------------------------------------------
def test_install_then_dedup_keeps_mtime_monotonic(blobs):
    data = b"hello conformance\n"
    staged = blobs.stage(io.BytesIO(data), "first")
    assert staged.attachment_id == sha(data)
    assert staged.byte_len == len(data)
    assert staged.head == data
    assert blobs.stat(staged.attachment_id) is None  # staged bytes are not visible yet
    assert blobs.install(staged) is False
    first = blobs.stat(sha(data))
    assert first is not None and first.size == len(data)

    time.sleep(0.05)
    again = blobs.stage(io.BytesIO(data), "second")
    assert blobs.install(again) is True
    second = blobs.stat(sha(data))
    assert second.size == len(data)
    assert second.mtime_ms >= first.mtime_ms
    assert read_all(blobs.open(sha(data))) == data
    assert list(blobs.iter_ids()) == [sha(data)]


def test_open_staged_and_discard(blobs):
    data = b"staged but never installed"
    staged = blobs.stage(io.BytesIO(data), "test")
    with blobs.open_staged(staged) as handle:
        assert handle.read() == data
    blobs.discard(staged)
    assert blobs.stat(sha(data)) is None
    assert list(blobs.iter_ids()) == []
    assert [f for f in blobs.walk()] == []  # no staging litter left behind


def test_stat_reports_size_and_kind_and_none_when_absent(blobs):
    data = b"x" * 1234
    attachment_id = put(blobs, data)
    st = blobs.stat(attachment_id)
    assert isinstance(st, BlobStat)
    assert st.size == 1234
    assert st.kind == FILE and st.is_file
    assert st.mtime_ms > 0
    assert blobs.stat(sha(b"absent")) is None
    assert blobs.stat(attachment_id, sidecar=True) is None  # no sidecar written


def test_open_streams_exactly_the_bytes(blobs):
    data = bytes(range(256)) * (10 * 1024) + b"tail"  # ~2.5 MiB: several chunks
    attachment_id = put(blobs, data)
    stream = blobs.open(attachment_id)
    first = stream.read(1000)
    assert first == data[:1000]
    assert first + read_all(stream) == data


def test_open_absent_is_not_found(blobs):
    with pytest.raises(NotFound):
        blobs.open(sha(b"absent"))


def test_empty_blob(blobs):
    attachment_id = put(blobs, b"")
    assert attachment_id == sha(b"")
    assert blobs.stat(attachment_id).size == 0
    assert read_all(blobs.open(attachment_id)) == b""
    assert blobs.hash(attachment_id)[0] == attachment_id


# -- hash, rot, quarantine ---------------------------------------------------------
def test_hash_gives_the_id_and_a_stat(blobs):
    data = b"hash me" * 1000
    attachment_id = put(blobs, data)
    seen: list[int] = []
    digest, st = blobs.hash(attachment_id, progress=seen.append)
    assert digest == attachment_id
    assert isinstance(st, BlobStat) and st.size == len(data) and st.is_file
    assert sum(seen) == len(data)


def test_rotten_blob_hashes_elsewhere_and_is_quarantined(blob_harness):
    blobs = blob_harness.backend
    data = b"precious bytes"
    attachment_id = put(blobs, data)
    keep = put(blobs, b"an unrelated blob")
    blobs.write_sidecar(Metadata(attachment_id, "text/plain", len(data), label="p.txt"))
    rotten = b"PRECIOUS bytes"  # same size, other bytes
    blob_harness.rot(attachment_id, rotten)

    digest, hashed = blobs.hash(attachment_id)
    assert digest == sha(rotten) != attachment_id
    assert hashed.size == len(rotten)

    where = blobs.quarantine(attachment_id, hashed, "20240101T000000Z")
    assert isinstance(where, str) and attachment_id in where
    assert blobs.stat(attachment_id) is None
    assert blobs.stat(attachment_id, sidecar=True) is None  # the sidecar went with it
    assert list(blobs.iter_ids()) == [keep]
    assert attachment_id not in list(blobs.iter_ids(attachment_id[:2]))
    assert [f for f in blobs.walk() if f.area == "blobs"] == []  # quarantine/ is not a stray
    assert blobs.quarantine(attachment_id, hashed, "20240101T000001Z") is None  # nothing left to move


def test_quarantine_with_a_stale_stat_leaves_the_blob(blob_harness):
    blobs = blob_harness.backend
    data = b"healed later"
    attachment_id = put(blobs, data)
    blob_harness.rot(attachment_id, b"HEALED LATER")
    digest, hashed = blobs.hash(attachment_id)
    assert digest != attachment_id

    put(blobs, data)  # a put heals it meanwhile
    assert blobs.hash(attachment_id)[0] == attachment_id
    assert blobs.quarantine(attachment_id, hashed, "20240101T000000Z") is None
    assert read_all(blobs.open(attachment_id)) == data
    assert list(blobs.iter_ids()) == [attachment_id]


def test_install_heals_rotten_bytes(blob_harness):
    blobs = blob_harness.backend
    data = b"0123456789"
    attachment_id = put(blobs, data)
    blob_harness.rot(attachment_id, b"9876543210")
    blobs.install(blobs.stage(io.BytesIO(data), "again"))
    assert read_all(blobs.open(attachment_id)) == data
    assert blobs.hash(attachment_id)[0] == attachment_id


# -- listing ---------------------------------------------------------------------
def test_iter_ids_in_id_order_with_prefixes(blobs):
    ids = sorted(put(blobs, data) for data in clustered_payloads())
    assert list(blobs.iter_ids()) == ids
    assert list(blobs.iter_ids("")) == ids
    head = ids[0]
    prefixes = {""}
    for attachment_id in ids:
        for n in (1, 2, 5, 64):
            prefixes.add(attachment_id[:n])
    # Prefixes that match nothing: inside a populated shard, between ids, past the end.
    prefixes |= {
        head[:4] + ("0" if head[4] != "0" else "1"),
        head[:63] + ("0" if head[63] != "0" else "1"),
        "ff" + "f" * 62 if "f" * 64 not in ids else "0" * 64,
    }
    for prefix in sorted(prefixes):
        expected = [i for i in ids if i.startswith(prefix)]
        assert list(blobs.iter_ids(prefix)) == expected, f"prefix {prefix!r}"
    shared4 = [i for i in ids if i[:4] == sha(clustered_payloads()[0])[:4]]
    assert len(shared4) >= 2
    assert list(blobs.iter_ids(shared4[0][:4])) == shared4


def test_iter_ids_on_an_empty_store(blobs):
    assert list(blobs.iter_ids()) == []
    assert list(blobs.iter_ids("ab")) == []
    assert list(blobs.iter_ids("a")) == []


# -- sidecars --------------------------------------------------------------------
def test_sidecar_round_trip(blobs):
    data = b"with a sidecar"
    attachment_id = put(blobs, data)
    assert blobs.read_sidecar(attachment_id) is None
    meta = Metadata(attachment_id, "text/plain", len(data), label="note.txt")
    assert blobs.write_sidecar(meta) is True
    assert blobs.read_sidecar(attachment_id) == meta
    assert blobs.stat(attachment_id, sidecar=True).size == len(meta.encode())
    assert blobs.write_sidecar(meta) is False  # unchanged: nothing written
    assert blobs.write_sidecar(meta, durable=False) is False
    relabelled = Metadata(attachment_id, "text/plain", len(data), label="renamed.txt")
    assert blobs.write_sidecar(relabelled, durable=False) is True
    blobs.sync([attachment_id])
    assert blobs.read_sidecar(attachment_id) == relabelled
    image = Metadata(attachment_id, "image/png", len(data), width=3, height=4)
    assert blobs.write_sidecar(image) is True
    assert blobs.read_sidecar(attachment_id) == image


# -- walk and remove ---------------------------------------------------------------
def test_walk_reports_strays_and_orphan_sidecars_only(blob_harness):
    blobs = blob_harness.backend
    kept = put(blobs, b"a blob with its sidecar")
    blobs.write_sidecar(Metadata(kept, "text/plain", 23))
    bare = put(blobs, b"a blob without a sidecar")
    orphan = sha(b"no blob for this sidecar")
    blobs.write_sidecar(Metadata(orphan, "text/plain", 1))
    wrong_shard = sha(b"in the wrong shard")
    shard = "00" if wrong_shard[:2] != "00" else "01"
    stray = f"{shard}/{wrong_shard}"
    blob_harness.plant(stray, b"misplaced")

    found = list(blobs.walk())
    names = sorted(f.name for f in found)
    assert names == sorted([stray, f"{orphan[:2]}/{orphan}.json"])
    assert all(f.area == "blobs" for f in found)
    by_name = {f.name: f for f in found}
    assert by_name[stray].stat.size == len(b"misplaced")
    assert wrong_shard in by_name[stray].where
    assert list(blobs.iter_ids()) == sorted([kept, bare])  # a stray is not a blob

    blobs.remove(by_name[stray])
    assert blob_harness.peek(stray) is None
    assert [f.name for f in blobs.walk()] == [f"{orphan[:2]}/{orphan}.json"]
    blobs.remove(by_name[f"{orphan[:2]}/{orphan}.json"])
    assert list(blobs.walk()) == []
    assert blobs.read_sidecar(orphan) is None
    # Removing what walk found touched nothing else.
    assert list(blobs.iter_ids()) == sorted([kept, bare])
    assert blobs.read_sidecar(kept) == Metadata(kept, "text/plain", 23)


def test_walk_reports_an_object_that_is_not_named_by_an_id(blob_harness):
    blobs = blob_harness.backend
    attachment_id = put(blobs, b"neighbour")
    junk = f"{attachment_id[:2]}/{attachment_id}.tmp"
    blob_harness.plant(junk, b"junk")
    assert [f.name for f in blobs.walk()] == [junk]
    assert list(blobs.iter_ids()) == [attachment_id]


# -- delete ----------------------------------------------------------------------
def test_delete_frees_the_bytes_and_the_sidecar(blobs):
    data = b"to be deleted" * 10
    attachment_id = put(blobs, data)
    blobs.write_sidecar(Metadata(attachment_id, "text/plain", len(data)))
    other = put(blobs, b"stays")
    assert blobs.delete_problem(attachment_id) is None
    assert blobs.delete(attachment_id) == len(data)
    assert blobs.stat(attachment_id) is None
    assert blobs.stat(attachment_id, sidecar=True) is None
    assert blobs.delete(attachment_id) == 0
    assert blobs.delete(sha(b"never there")) == 0
    assert list(blobs.iter_ids()) == [other]
    assert list(blobs.walk()) == []


def test_delete_many(blobs):
    payloads = [b"one", b"two two", b"three three three"]
    ids = [put(blobs, p) for p in payloads]
    for attachment_id, data in zip(ids, payloads):
        blobs.write_sidecar(Metadata(attachment_id, "text/plain", len(data)))
    keep = put(blobs, b"kept")
    absent = sha(b"absent")
    result = blobs.delete_many(ids[:2] + [absent])
    assert result == {ids[0]: 3, ids[1]: 7, absent: 0}
    assert sorted(blobs.iter_ids()) == sorted([ids[2], keep])
    assert blobs.stat(ids[0], sidecar=True) is None
    assert blobs.delete_many([]) == {}
    assert list(blobs.walk()) == []


# -- naming ----------------------------------------------------------------------
def test_where_names_the_object(blobs):
    attachment_id = sha(b"anything")
    where = blobs.where(attachment_id)
    assert where.startswith(blobs.name.rstrip("/"))
    assert where.endswith(f"{attachment_id[:2]}/{attachment_id}")
    assert blobs.where(attachment_id, sidecar=True) == where + ".json"


def test_a_bad_id_is_refused(blobs):
    for bad in ("../etc/passwd", "ab", "A" * 64, "g" * 64):
        with pytest.raises(ValueError):
            blobs.where(bad)
        with pytest.raises(ValueError):
            blobs.stat(bad)


def test_exists(blob_harness):
    assert blob_harness.backend.exists() is True
    assert blob_harness.missing().exists() is False
    assert blob_harness.backend.name
    with blob_harness.backend.opened():
        with blob_harness.backend.opened():  # nesting is allowed
            assert blob_harness.backend.exists() is True


def test_delete_many_with_the_stats_just_taken(blobs):
    data = b"known size " * 7
    staged = blobs.stage(io.BytesIO(data), "test")
    blobs.install(staged)
    attachment_id = staged.attachment_id
    assert blobs.delete_many([attachment_id], known={attachment_id: blobs.stat(attachment_id)}) == {
        attachment_id: len(data)
    }
    assert blobs.stat(attachment_id) is None
