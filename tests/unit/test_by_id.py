"""``core.by_id``: the merge of the blob listing and the rows by id."""

from __future__ import annotations

import random
from heapq import merge

from lashctl.core import by_id
from lashctl.fold import Row


def _reference(blob_ids, groups):
    """The merge as ``heapq.merge`` gives it, grouped by id."""
    current, present, found = None, False, []
    items = merge(
        ((i, True, None) for i in blob_ids), ((g[0].attachment_id, False, g) for g in groups), key=lambda t: t[0]
    )
    for attachment_id, is_blob, group in items:
        if attachment_id != current:
            if current is not None:
                yield current, present, found
            current, present, found = attachment_id, False, []
        if is_blob:
            present = True
        else:
            found = group
    if current is not None:
        yield current, present, found


class _Blobs:
    def __init__(self, ids):
        self.ids = ids

    def iter_ids(self):
        return iter(self.ids)


class _Store:
    def __init__(self, ids):
        self.blobs = _Blobs(ids)


class _View:
    def __init__(self, groups):
        self.groups = groups

    def rows_by_id(self):
        return iter(self.groups)


def test_by_id_is_the_merge_of_blobs_and_rows() -> None:
    rng = random.Random(5)
    for _ in range(300):
        universe = sorted({f"{rng.randrange(40):064x}" for _ in range(rng.randrange(30))})
        blob_ids = sorted(i for i in universe if rng.random() < 0.5 for _ in range(rng.choice((1, 1, 1, 2))))
        groups = [
            [Row(f"s{n}", i, "sha256:" + i, 1, None) for n in range(rng.randrange(1, 3))]
            for i in universe
            if rng.random() < 0.6
        ]
        expected = list(_reference(blob_ids, groups))
        assert list(by_id(_Store(blob_ids), _View(groups))) == expected
        assert list(by_id(_Store(blob_ids), None)) == list(_reference(blob_ids, []))
