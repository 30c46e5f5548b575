"""The backend contract itself (lashctl.backends.base): every backend
subclasses its interface, so a capability it does not override has the
interface's default, and every capability answers what the plain queries
answer. A new backend that passes this file cannot be silently serial or
silently missing a capability: nothing above the backends asks whether one
is there."""

from __future__ import annotations

import hashlib
import io
import os

import pytest

from lashctl.backends.base import JSONL, LASH_SQLITE, POSTGRES, BlobBackend, ManifestBackend, ManifestView
from lashctl.fold import Event

SESSIONS = ("s1", "s2")


def put(blobs, data: bytes) -> str:
    staged = blobs.stage(io.BytesIO(data), "test")
    blobs.install(staged)
    blobs.sync([staged.attachment_id])
    return staged.attachment_id


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- blob backends -------------------------------------------------------------------
def test_a_blob_backend_subclasses_the_interface(blobs):
    assert BlobBackend in type(blobs).__mro__
    assert isinstance(blobs.parallel_reads, int) and blobs.parallel_reads >= 1


def test_stat_many_answers_what_stat_answers(blobs):
    present = [put(blobs, f"blob {n}\n".encode()) for n in range(7)]
    absent = [sha(f"never stored {n}".encode()) for n in range(3)]
    wanted = sorted(present + absent)
    many = blobs.stat_many(wanted)
    assert sorted(many) == wanted
    for attachment_id in wanted:
        one = blobs.stat(attachment_id)
        got = many[attachment_id]
        if one is None:
            assert got is None, attachment_id
        else:
            assert got is not None and (got.size, got.kind) == (one.size, one.kind), attachment_id


def test_absent_shards_never_names_a_shard_that_holds_a_blob(blobs):
    held = put(blobs, b"a blob in its shard\n")
    shards = {held[:2], "00", "ff", "7a"}
    absent = blobs.absent_shards(shards)
    if absent is None:  # the default: this backend cannot tell at that cost
        return
    assert absent <= shards
    assert held[:2] not in absent
    assert absent == {s for s in shards if s != held[:2]} - _shards_with_blobs(blobs, shards)


def _shards_with_blobs(blobs, shards: set[str]) -> set[str]:
    return {s for s in shards if any(True for _ in blobs.iter_ids(s))}


def test_the_defaults_are_the_interfaces_own():
    """A backend that overrides nothing gets a serial stat_many built on stat."""

    class Minimal(BlobBackend):
        def __init__(self) -> None:
            self.asked: list[str] = []

        def stat(self, attachment_id, sidecar=False):
            self.asked.append(attachment_id)
            return None

    backend = Minimal()
    assert backend.parallel_reads == 1
    assert backend.stat_many(["a" * 64, "b" * 64]) == {"a" * 64: None, "b" * 64: None}
    assert backend.asked == ["a" * 64, "b" * 64]
    assert backend.absent_shards({"aa"}) is None


# -- manifest backends ---------------------------------------------------------------
def _seed(manifest) -> list[str]:
    ids = [sha(f"row {n}".encode()) for n in range(5)]
    with manifest.writing() as w:
        w.append([Event.intent(i, s, 1000 + n) for n, i in enumerate(ids) for s in SESSIONS])
        w.append([Event.commit(ids[0], "s1", 2000)])
    return ids


def test_a_manifest_backend_subclasses_the_interface(manifest, manifest_kind):
    assert ManifestBackend in type(manifest).__mro__
    assert manifest.kind == {"jsonl": JSONL, "postgres": POSTGRES, "lash-sqlite": LASH_SQLITE}[manifest_kind]
    assert manifest.blocks_writers is (manifest_kind == "jsonl")
    assert (manifest.path is not None) is (manifest_kind == "jsonl")
    manifest.check_readable()
    with manifest.locked():
        pass


def test_identity_is_stable_and_tells_manifests_apart(manifest, manifest_kind, request, tmp_path):
    from conformance.conftest import make_manifest

    assert manifest.identity() == manifest.identity()
    if manifest_kind == "postgres":
        return  # one server per run: another database is another test's
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    other = make_manifest(manifest_kind, request, other_dir)
    assert other.identity() != manifest.identity()


@pytest.mark.parametrize("how", ["reading", "writing", "sweeping", "inspecting"])
def test_every_view_answers_the_capabilities_as_its_plain_queries(manifest, how):
    ids = _seed(manifest)
    with getattr(manifest, how)() as view:
        assert ManifestView in type(view).__mro__
        many = view.rows_for_ids(ids)
        assert many == {i: view.rows_for_id(i) for i in ids}
        assert view.confirm(ids) == many
        view.check_ids()
        assert list(view.malformed) == []
        assert view.torn_tail is False
        assert view.log_lines is None or view.log_lines >= len(ids) * len(SESSIONS)
        chunks = view.uncommitted_chunks(None, None)
        if chunks is not None:
            rows = [view.rendered_row(row) for chunk in chunks for row in chunk]
            assert rows == list(view.uncommitted(None, None))


def test_a_view_that_overrides_nothing_is_still_complete():
    class Minimal(ManifestView):
        def rows_for_id(self, attachment_id):
            return [attachment_id]

    view = Minimal()
    assert view.rows_for_ids(["a", "b"]) == {"a": ["a"], "b": ["b"]}
    assert view.confirm(iter(["a"])) == {"a": ["a"]}
    assert view.uncommitted_chunks(None, None) is None
    assert (view.tolerant, list(view.malformed), view.torn_tail, view.log_lines) == (False, [], False, None)
    view.check_ids()


def test_nothing_above_the_backends_asks_for_a_capability():
    """The seam is the interface: no getattr/hasattr probe of a store, a
    manifest or a view, and no import of a backend module, outside backends/."""
    import re

    import lashctl

    root = os.path.dirname(lashctl.__file__)
    probe = re.compile(r"\b(getattr|hasattr)\((store|view|blobs|manifest|store\.blobs|store\.manifest|self\.view)\b")
    backend_import = re.compile(r"lashctl\.backends\.(blobs|manifests)\b")
    found = []
    for folder, _dirs, files in os.walk(root):
        if os.path.join(root, "backends") in folder:
            continue
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                text = open(path, encoding="utf-8").read()
                for pattern in (probe, backend_import):
                    found += [f"{os.path.relpath(path, root)}: {m.group(0)}" for m in pattern.finditer(text)]
    assert not found, found
