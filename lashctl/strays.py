"""What a store holds that is not a blob or its sidecar: strays, orphan
sidecars and staging litter, as ``verify`` reports them and ``gc`` removes them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from lashctl.backends.base import FILE, SYMLINK, Found
from lashctl.core import Store
from lashctl.ids import is_valid_id

SIDECAR_SUFFIX = ".json"
LASH_STAGING_SUFFIX = ".tmp"  # lash-core stages a write in a sibling <final>.tmp


@dataclass
class StrayFile:
    path: str
    kind: str  # staging | stray | orphan-sidecar
    byte_len: int
    mtime_ms: int
    reason: str
    found: Found | None = None  # where it was found, for removal
    in_manifest: bool = False  # litter beside the manifest, not in the blob store
    attachment_id: str | None = None  # an orphan sidecar's id

    @property
    def entry(self):  # the local backend's directory entry (tests)
        return self.found.handle if self.found is not None else None


def classify(found: Found) -> tuple[str, str]:
    """``(kind, reason)`` of something a blob listing found that is not a blob."""
    st, name = found.stat, found.name
    if found.area == "staging":
        return "staging", found.reason or "staging litter"
    shard_name, slash, base_name = name.partition("/")
    if not slash:
        return "stray", "not a shard directory"
    base = base_name[: -len(SIDECAR_SUFFIX)] if base_name.endswith(SIDECAR_SUFFIX) else base_name
    shard_ok = len(shard_name) == 2 and all(c in "0123456789abcdef" for c in shard_name)
    if base_name.endswith(LASH_STAGING_SUFFIX) or ".staging." in base_name:
        return "staging", "lash-core staging litter"
    if not shard_ok or not is_valid_id(base):
        return "stray", "name is not a blob id"
    if base[:2] != shard_name:
        return "stray", "in the wrong prefix directory"
    if st.kind == SYMLINK:
        return "stray", "a symlink, not a file"
    if st.kind != FILE:
        return "stray", "not a regular file"
    if base_name.endswith(SIDECAR_SUFFIX):
        return "orphan-sidecar", "a sidecar with no blob"
    return "stray", "not a blob"


def scan_strays(store: Store) -> Iterator[StrayFile]:
    """What the blob store holds that is not a blob or its sidecar, and the
    litter an interrupted manifest maintenance left."""
    for found in store.blobs.walk():
        kind, reason = classify(found)
        size = found.stat.size if found.stat.is_file else 0
        base = found.name.rpartition("/")[2]
        yield StrayFile(
            found.where,
            kind,
            size,
            found.stat.mtime_ms,
            reason,
            found,
            attachment_id=base[: -len(SIDECAR_SUFFIX)] if kind == "orphan-sidecar" else None,
        )
    for found in store.manifest.litter():
        yield StrayFile(
            found.where,
            "staging",
            found.stat.size,
            found.stat.mtime_ms,
            "left by an interrupted manifest compaction",
            found,
            in_manifest=True,
        )


def remove_stray(store: Store, stray: StrayFile) -> None:
    """Delete a stray where it was found: never through a symlink, never a directory."""
    if stray.in_manifest:
        store.manifest.remove_litter(stray.found)
    elif stray.found is not None:
        store.blobs.remove(stray.found)
