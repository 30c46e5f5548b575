"""Model-based tests: random operation sequences against a reference model of the README's manifest rules.

The core API (``lashctl.ops``) is driven by hypothesis with a controllable
clock (``lashctl.transfer.now_ms`` patched; the clock may even go backwards) and
explicit reclaim cutoffs. A small reference model holds the rows keyed by
(session, id) and the set of blobs that must exist. After every step:

- lashctl's fold (``Manifest.read_state``), an independent fold of the raw
  file (``reliability_helpers.fold``) and the model agree;
- the blobs on disk are exactly the model's (reclaim never deletes a blob
  that has a live row, and deletes every orphan it should);
- every committed row's blob is present and hashes to its id;
- ``compact`` never changes the fold: fold(compact(log)) == fold(log).

A second property checks fold and compaction on arbitrary event logs written
straight to the manifest (intents after commits, double commits, forgets of
absent rows, times going backwards).
"""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from lashctl import core, sweep, transfer
from lashctl.ids import parse_id
from lashctl.backends.manifests.jsonl.log import Manifest, encode_events
from backend_helpers import forget_event
from reliability_helpers import (
    LONG,
    blob_path,
    fast_tmpdir,
    file_sha,
    fold,
    read_log,
    report,
    scaled,
    sha,
    shm_path,  # noqa: F401 (fixture)
    state_rows,
)

CONTENTS = [b"", b"a", b"bb", b"\x89PNG\r\n\x1a\n not really a png", b"shared content" * 100, b"z" * 5000]
IDS = [sha(c) for c in CONTENTS]
UNKNOWN = sha(b"never put")
SESSIONS = ["s1", "s2", "s3"]
TIMES = st.integers(min_value=0, max_value=2_000_000)
COUNTS = {"steps": 0, "machines": 0, "logs": 0}

MODEL_SETTINGS = settings(
    max_examples=scaled(250, 3000),
    stateful_step_count=scaled(50, 100),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


class StoreModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = fast_tmpdir("lashctl-model-")
        self.root = self.dir / "store"
        self.warnings: list[str] = []
        self.store = core.Store(self.root, warn=self.warnings.append)
        self.clock = 1_000_000
        self._real_now = transfer.now_ms
        transfer.now_ms = lambda: self.clock
        self.rows: dict[tuple[str, str], list] = {}  # key -> [uri, intent_at, committed_at]
        self.blobs: set[str] = set()
        COUNTS["machines"] += 1

    def teardown(self) -> None:
        transfer.now_ms = self._real_now
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- rules ---------------------------------------------------------------------
    @rule(t=TIMES)
    def set_clock(self, t: int) -> None:
        self.clock = t

    @rule(session=st.sampled_from(SESSIONS), picks=st.lists(st.integers(0, len(CONTENTS) - 1), min_size=1, max_size=4))
    def put(self, session: str, picks: list[int]) -> None:
        COUNTS["steps"] += 1
        sources = [
            transfer.PutSource(name=f"input-{i}.bin", opener=(lambda b=CONTENTS[i]: io.BytesIO(b)), label=None)
            for i in picks
        ]
        results = list(transfer.put(self.store, sources, transfer.PutOptions(session)))
        for i in picks:  # bytes as old as can be: the model's clock alone decides (freshness: test_sweep_steps)
            for path in (self.store.blobs.blob_path(IDS[i]), self.store.blobs.sidecar_path(IDS[i])):
                if path.exists():
                    os.utime(path, (0, 0))
        assert [r.attachment_id for r in results] == [IDS[i] for i in picks]
        assert [r.byte_len for r in results] == [len(CONTENTS[i]) for i in picks]
        for i in picks:
            key = (session, IDS[i])
            row = self.rows.get(key)
            if row is None:
                self.rows[key] = ["sha256:" + IDS[i], self.clock, None]
            elif row[2] is None:
                row[1] = max(row[1], self.clock)
            self.blobs.add(IDS[i])

    @rule(session=st.sampled_from(SESSIONS), picks=st.lists(st.integers(0, len(CONTENTS)), min_size=1, max_size=4))
    def commit(self, session: str, picks: list[int]) -> None:
        COUNTS["steps"] += 1
        ids = [IDS[i] if i < len(CONTENTS) else UNKNOWN for i in picks]
        results = transfer.commit(self.store, session, [parse_id(i) for i in ids])
        expected = []
        for attachment_id in ids:
            row = self.rows.get((session, attachment_id))
            if row is None:
                expected.append(transfer.NO_INTENT)
            elif row[2] is not None:
                expected.append(transfer.ALREADY_COMMITTED)
            else:
                row[2] = self.clock
                expected.append(transfer.COMMITTED)
        assert [r.status for r in results] == expected
        assert [r.attachment_id for r in results] == ids

    @precondition(lambda self: self.rows)
    @rule(data=st.data())
    def forget(self, data) -> None:
        COUNTS["steps"] += 1
        key = data.draw(st.sampled_from(sorted(self.rows)))
        with self.store.manifest.locked():
            self.store.manifest.log.append([forget_event(key[1], key[0])])
        del self.rows[key]

    @rule(session=st.sampled_from(SESSIONS), i=st.integers(0, len(CONTENTS) - 1))
    def forget_absent(self, session: str, i: int) -> None:
        """A forget for a key with no row is a no-op."""
        if (session, IDS[i]) in self.rows:
            return
        with self.store.manifest.locked():
            self.store.manifest.log.append([forget_event(IDS[i], session)])

    @rule(cutoff=st.one_of(TIMES, st.just(-1)), dry_run=st.booleans())
    def reclaim(self, cutoff: int, dry_run: bool) -> None:
        COUNTS["steps"] += 1
        report_ = sweep.reclaim(self.store, cutoff, dry_run=dry_run)
        aged: dict[str, list[str]] = {}
        for (session, attachment_id), (_uri, at, committed) in self.rows.items():
            if committed is None and at <= cutoff:
                aged.setdefault(attachment_id, []).append(session)
        expected = {}
        for attachment_id, sessions in aged.items():
            live = any(r[2] is not None or r[1] > cutoff for (s, i), r in self.rows.items() if i == attachment_id)
            expected[attachment_id] = ("release" if live else "reclaim", sorted(sessions))
        got = {i.attachment_id: (i.action, sorted(i.sessions)) for i in report_.items}
        assert got == expected, f"cutoff {cutoff}: reclaim acted on {got}, the model says {expected}"
        assert report_.scanned_intents == sum(1 for r in self.rows.values() if r[2] is None and r[1] <= cutoff)
        if dry_run:
            return
        for attachment_id, (action, sessions) in expected.items():
            for session in sessions:
                del self.rows[(session, attachment_id)]
            if action == "reclaim":
                self.blobs.discard(attachment_id)
        # Live content survived the sweep.
        for (_s, attachment_id), row in self.rows.items():
            if row[2] is not None or row[1] > cutoff:
                assert blob_path(self.root, attachment_id).is_file(), "reclaim deleted a blob with a live row"

    @rule()
    def compact(self) -> None:
        COUNTS["steps"] += 1
        with self.store.manifest.locked():
            before = self.store.manifest.read_state()
            written = self.store.manifest.compact(before)
        after = self.store.manifest.read_state()
        assert state_rows(after) == state_rows(before), "compaction changed the fold"
        committed = sum(r.committed for r in before.rows.values())
        assert written == 1 + len(before.rows) + committed
        log = read_log(self.store.manifest.path, strict=True)
        assert log.events[0] == {"op": "header", "format": "lashctl-manifest", "version": 1}

    # -- invariants ----------------------------------------------------------------
    @invariant()
    def folds_agree(self) -> None:
        model = {
            k: {"canonical_uri": v[0], "intent_at_epoch_ms": v[1], "committed_at_epoch_ms": v[2]}
            for k, v in self.rows.items()
        }
        assert state_rows(self.store.manifest.read_state()) == model, "lashctl's fold differs from the model"
        assert fold(read_log(self.store.manifest.path, strict=True).events) == model, (
            "the raw log folds (by the README's manifest rules) to something else than the model"
        )

    @invariant()
    def blobs_match(self) -> None:
        on_disk = set(self.store.blobs.iter_ids())
        assert on_disk == self.blobs, f"blobs on disk {sorted(on_disk)} != model {sorted(self.blobs)}"
        for (_s, attachment_id), row in self.rows.items():
            if row[2] is not None:
                assert file_sha(blob_path(self.root, attachment_id)) == attachment_id, "a committed blob is missing"

    @invariant()
    def no_warnings(self) -> None:
        assert not self.warnings, self.warnings


TestStoreModel = StoreModel.TestCase
TestStoreModel.settings = MODEL_SETTINGS


# -- fold and compaction on arbitrary logs ----------------------------------------------------------
EVENT = st.one_of(
    st.builds(
        lambda i, s, t: {
            "op": "intent",
            "attachment_id": IDS[i],
            "session_id": s,
            "canonical_uri": "sha256:" + IDS[i],
            "intent_at_epoch_ms": t,
        },
        st.integers(0, 2),
        st.sampled_from(SESSIONS[:2]),
        st.integers(0, 50),
    ),
    st.builds(
        lambda i, s, t: {"op": "commit", "attachment_id": IDS[i], "session_id": s, "committed_at_epoch_ms": t},
        st.integers(0, 2),
        st.sampled_from(SESSIONS[:2]),
        st.integers(0, 50),
    ),
    st.builds(
        lambda i, s: {"op": "forget", "attachment_id": IDS[i], "session_id": s},
        st.integers(0, 2),
        st.sampled_from(SESSIONS[:2]),
    ),
    st.builds(
        lambda i, s, u, t: {
            "op": "intent",
            "attachment_id": IDS[i],
            "session_id": s,
            "canonical_uri": u,
            "intent_at_epoch_ms": t,
        },
        st.integers(0, 2),
        st.sampled_from(SESSIONS[:2]),
        st.text(max_size=8),
        st.integers(0, 50),
    ),
)


@settings(
    max_examples=scaled(1000, 20000),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(events=st.lists(EVENT, max_size=40), header=st.booleans(), newline_at_end=st.booleans())
def test_fold_and_compaction_of_arbitrary_logs(shm_path: Path, events, header: bool, newline_at_end: bool) -> None:
    COUNTS["logs"] += 1
    path = shm_path / f"m{COUNTS['logs']}.jsonl"
    raw = encode_events(([{"op": "header", "format": "lashctl-manifest", "version": 1}] if header else []) + events)
    if not newline_at_end and raw:
        raw = raw[:-1]  # a complete final event lacking only its newline
    path.write_bytes(raw)
    warnings: list[str] = []
    manifest = Manifest(path, warn=warnings.append)
    state = manifest.read_state()
    assert state_rows(state) == fold(events), "lashctl's fold is not the README's manifest rules's"
    with manifest.locked():
        manifest.compact(state)
        # An append after compaction lands on a clean line boundary.
        manifest.append([forget_event(IDS[3], "nobody")])
    again = manifest.read_state()
    assert state_rows(again) == fold(events), "fold(compact(log)) != fold(log)"
    assert fold(read_log(path, strict=True).events) == fold(events)
    assert not warnings, warnings
    path.unlink()


def test_model_counts_report() -> None:
    """Runs last in this file: how much the model tests exercised (and that
    they exercised something: a state machine that never stepped proves nothing)."""
    if not COUNTS["machines"]:
        pytest.skip("the model tests were not run (deselected)")
    assert COUNTS["steps"] >= COUNTS["machines"], COUNTS
    report(
        f"model: {COUNTS['machines']} state machines, {COUNTS['steps']} operations; "
        f"{COUNTS['logs']} arbitrary logs folded and compacted (long={LONG})"
    )
