"""``lashctl forget -s SESSION [ID...]``: a session's rows go, never bytes
(README, "forget"), on every manifest backend."""

from __future__ import annotations

import json

import pytest

from pairings import Lashctl, lashctl  # noqa: F401  (lashctl: a fixture)

pytestmark = pytest.mark.e2e


def rows(run: Lashctl) -> set[tuple[str, str, bool]]:
    listed = json.loads(run.ok("--json", "ls").stdout)
    return {(s, b["id"]) for b in listed for s in b["sessions"]}


def test_forget_a_whole_session_keeps_every_byte(lashctl):
    gone = lashctl.put("abusive", b"first upload\n", b"second upload\n")
    shared = lashctl.put("abusive", b"shared upload\n")[0]
    lashctl.put("other", b"shared upload\n")
    lashctl.ok("commit", "-s", "abusive", gone[0])

    dry = json.loads(lashctl.ok("--json", "forget", "-s", "abusive", "--dry-run").stdout)
    assert dry["dry_run"] is True and dry["rows_forgotten"] == 3
    assert sorted((i["id"], i["state"]) for i in dry["items"]) == sorted(
        [(gone[0], "committed"), (gone[1], "uncommitted"), (shared, "uncommitted")]
    )
    assert lashctl.commits("abusive", [gone[1]]) == {gone[1]: "committed"}  # the dry run changed nothing

    done = json.loads(lashctl.ok("--json", "forget", "-s", "abusive").stdout)
    assert done["dry_run"] is False and done["rows_forgotten"] == 3
    assert lashctl.commits("abusive", gone + [shared]) == {i: "no_intent" for i in gone + [shared]}
    assert all(lashctl.present(i) for i in gone + [shared])  # bytes are for reclaim and gc
    assert lashctl.commits("other", [shared]) == {shared: "committed"}


def test_forget_named_ids_only(lashctl):
    a, b = lashctl.put("s", b"keep me\n", b"forget me\n")
    done = lashctl("forget", "-s", "s", b[:12])
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().split("\t")[0] == b
    assert lashctl.commits("s", [a, b]) == {a: "committed", b: "no_intent"}


def test_forget_an_id_the_session_has_no_row_for_is_exit_3(lashctl):
    [a] = lashctl.put("s", b"mine\n")
    done = lashctl("forget", "-s", "t", a)
    assert done.returncode == 3
    assert done.stderr.decode().splitlines()[-1] == f"lashctl: error: 1 id(s) have no row for session t: {a}"
    assert lashctl.commits("s", [a]) == {a: "committed"}


def test_forget_needs_a_session(tmp_path):
    run = Lashctl(tmp_path, str(tmp_path / "store"), [])
    run.put("s", b"x\n")
    done = run("forget")
    assert done.returncode == 2 and b"session is required" in done.stderr
