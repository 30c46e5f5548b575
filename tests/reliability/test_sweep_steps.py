"""The steps of each destructive command, and a crash in every gap between two.

README, "Guarantees", lists each destructive command's steps. Whatever the
gap a process dies in (a fault point kills it there with SIGKILL: see
``lashctl/faults.py``), no later ``commit`` may succeed for bytes that are
gone: a row's fate is made durable before its bytes are deleted, so a crash
leaves at worst bytes without rows, which ``gc`` removes.

Every test runs the installed command on every backend pairing.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from pairings import KILLED, Lashctl, lashctl  # noqa: F401  (lashctl: a fixture)

pytestmark = pytest.mark.e2e


def aged(lashctl: Lashctl) -> None:
    """Let a second pass: ``--older-than 0s`` then finds every intent and
    every object written so far at or before its cutoff."""
    time.sleep(1.1)


def assert_no_commit_stamps_lost_bytes(lashctl: Lashctl, session: str, ids: list[str]) -> None:
    statuses = lashctl.commits(session, ids)
    for attachment_id in ids:
        if statuses[attachment_id] != "no_intent":
            assert lashctl.present(attachment_id), (
                f"commit of {attachment_id} said {statuses[attachment_id]} but its bytes are gone"
            )


# -- reclaim ---------------------------------------------------------------------
@pytest.mark.parametrize("point", ["reclaim.forgotten", "reclaim.deleted"])
def test_a_reclaim_killed_between_two_steps_leaves_no_row_of_lost_bytes(lashctl, point):
    orphans = lashctl.put("s-orphan", b"orphan one\n", b"orphan two\n", b"orphan three\n")
    [kept] = lashctl.put("s-live", b"committed bytes\n")
    lashctl.ok("commit", "-s", "s-live", kept)
    aged(lashctl)
    killed = lashctl("reclaim", "--force", "--older-than", "0s", fault=point)
    assert killed.returncode == KILLED, killed.stderr.decode(errors="replace")

    assert lashctl.commits("s-orphan", orphans) == {i: "no_intent" for i in orphans}
    if point == "reclaim.forgotten":
        # The rows went first: the bytes are left without rows, for gc.
        assert all(lashctl.present(i) for i in orphans)
        rerun = lashctl.ok("--json", "reclaim", "--force", "--older-than", "0s")
        assert json.loads(rerun.stdout)["items"] == []
        lashctl.ok("gc", "--force", "--older-than", "0s")
    assert not any(lashctl.present(i) for i in orphans)
    assert lashctl.present(kept)
    assert lashctl.commits("s-live", [kept]) == {kept: "already_committed"}


def test_a_reclaim_that_cannot_forget_deletes_nothing(tmp_path, pg_url):
    """A read-only PostgreSQL (a replica): the forget fails before any delete,
    so exit 69's "nothing was lost, rerun" is true."""
    run = Lashctl(tmp_path, str(tmp_path / "store"), ["--manifest", pg_url])
    run.ok("manifest", "init")
    orphans = run.put("s", b"first orphan\n", b"second orphan\n")
    aged(run)
    sep = "&" if "?" in pg_url else "?"
    read_only = pg_url + sep + "options=-c%20default_transaction_read_only%3Don"
    done = run("reclaim", "--force", "--older-than", "0s", manifest=["--manifest", read_only])
    assert done.returncode == 69, done.stderr.decode(errors="replace")
    assert all(run.present(i) for i in orphans)
    assert_no_commit_stamps_lost_bytes(run, "s", orphans)


# -- clock behind ----------------------------------------------------------------
def test_reclaim_spares_bytes_written_within_the_grace_whatever_the_intent_time(lashctl, tmp_path):
    """A writer whose clock is days behind stamps an intent that looks aged:
    its bytes, just written, are spared and its row kept for the commit."""
    [attachment_id] = lashctl.put("s", b"bytes put just now\n")
    _age_intent(lashctl, attachment_id, "s", days=3)
    done = lashctl.ok("--json", "reclaim")
    items = json.loads(done.stdout)["items"]
    assert [(i["id"], i["action"]) for i in items] == [(attachment_id, "spared")]
    assert "written after the cutoff" in done.stderr.decode()
    assert lashctl.commits("s", [attachment_id]) == {attachment_id: "committed"}
    assert lashctl.present(attachment_id)


def _age_intent(lashctl: Lashctl, attachment_id: str, session: str, days: int) -> None:
    """Move one intent's time back, as a writer with a slow clock would have written it."""
    then = int(time.time() * 1000) - days * 86_400_000
    if lashctl.manifest and lashctl.manifest[1].startswith("postgres"):
        import psycopg

        with psycopg.connect(lashctl.manifest[1], autocommit=True) as conn:
            conn.execute(
                "UPDATE lash_attachment_manifest SET intent_at_ms = %s WHERE attachment_id = %s AND session_id = %s",
                (then, attachment_id, session),
            )
        return
    path = Path(lashctl.manifest[1]) if lashctl.manifest else Path(lashctl.store) / "manifest.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    out = []
    for line in lines:
        event = json.loads(line)
        if event.get("op") == "intent" and event.get("attachment_id") == attachment_id:
            event["intent_at_epoch_ms"] = then
            line = (json.dumps(event, separators=(",", ":")) + "\n").encode()
        out.append(line)
    path.write_bytes(b"".join(out))


# -- delete ----------------------------------------------------------------------
@pytest.mark.parametrize("point", [None, "delete.forgotten", "delete.deleted"])
def test_delete_force_forgets_the_intents_before_the_bytes(lashctl, point):
    [attachment_id] = lashctl.put("s", b"abusive bytes\n")
    done = lashctl("delete", "--force", attachment_id, fault=point)
    assert done.returncode == (KILLED if point else 0), done.stderr.decode(errors="replace")
    assert lashctl.commits("s", [attachment_id]) == {attachment_id: "no_intent"}
    if point != "delete.forgotten":
        assert not lashctl.present(attachment_id)


# -- verify --fix ----------------------------------------------------------------
@pytest.mark.parametrize("point", [None, "verify.forgotten"])
def test_verify_fix_forgets_the_intents_of_what_it_quarantines(tmp_path, point):
    run = Lashctl(tmp_path, str(tmp_path / "store"), [])
    [attachment_id] = run.put("s", b"bytes that will rot\n")
    path = tmp_path / "store" / "sha256" / attachment_id[:2] / attachment_id
    path.chmod(0o644)
    path.write_bytes(b"rotten\n")
    done = run("verify", "--fix", fault=point)
    assert done.returncode == (KILLED if point else 0), done.stderr.decode(errors="replace")
    assert run.commits("s", [attachment_id]) == {attachment_id: "no_intent"}
    if point:
        assert run("verify", "--fix").returncode == 0
    assert not path.exists()


# -- migrate ---------------------------------------------------------------------
@pytest.mark.parametrize("point", ["migrate.copied", "migrate.rows"])
def test_a_migration_killed_between_two_steps_leaves_no_row_without_bytes(tmp_path, point):
    """Bytes are copied and made durable before their rows: a migration that
    dies leaves at worst bytes without rows at the destination, and a rerun
    finishes the job."""
    src = Lashctl(tmp_path, str(tmp_path / "src"), [])
    ids = src.put("s", b"first attachment\n", b"second attachment\n")
    src.ok("commit", "-s", "s", ids[0])
    dest = Lashctl(tmp_path, str(tmp_path / "dest"), [])
    done = src("migrate", "--to-store", dest.store, fault=point)
    assert done.returncode == KILLED, done.stderr.decode(errors="replace")
    statuses = dest.commits("s", ids)
    for attachment_id, status in statuses.items():
        if status != "no_intent":
            assert dest.present(attachment_id), f"{attachment_id}: {status} at the destination without bytes"
    src.ok("migrate", "--to-store", dest.store)
    assert all(dest.present(i) for i in ids)
    after = dest.commits("s", ids)
    assert after[ids[0]] == "already_committed" and after[ids[1]] in ("committed", "already_committed")


def test_show_and_stats_agree_with_reclaim_on_bytes_written_after_the_cutoff(tmp_path):
    run = Lashctl(tmp_path, str(tmp_path / "store"), [])
    [attachment_id] = run.put("s", b"put by a writer whose clock is behind\n")
    _age_intent(run, attachment_id, "s", days=3)
    shown = json.loads(run.ok("--json", "show", attachment_id).stdout)
    assert shown["verdict"]["state"] == "kept", shown["verdict"]
    assert "within the 24h grace period" in shown["verdict"]["reason"]
    assert json.loads(run.ok("--json", "stats").stdout)["orphans_reclaimable"] == 0
    dry = json.loads(run.ok("--json", "reclaim", "--dry-run").stdout)
    assert dry["blobs_reclaimed"] == 0 and [i["action"] for i in dry["items"]] == ["spared"]
    piped = run.ok("reclaim", "--dry-run").stdout.decode().rstrip("\n").split("\t")
    assert piped[:4] == [attachment_id, "spared", "-", "-"]  # "-" for an empty field


def test_a_migration_to_a_directory_keeps_ages_and_to_s3_says_when_sweeps_can_reclaim(tmp_path, s3_bucket):
    """A copy is as old as its original where the destination allows it (a
    directory); an object store dates it now, and the report says until when
    the destination's sweeps spare the copies."""
    src = Lashctl(tmp_path, str(tmp_path / "src"), [])
    [orphan] = src.put("s", b"an old orphan\n")
    _age_intent(src, orphan, "s", days=3)
    old = time.time() - 3 * 86_400
    os.utime(tmp_path / "src" / "sha256" / orphan[:2] / orphan, (old, old))

    local = Lashctl(tmp_path, str(tmp_path / "copy"), [])
    src.ok("migrate", "--to-store", local.store)
    assert abs((tmp_path / "copy" / "sha256" / orphan[:2] / orphan).stat().st_mtime - old) < 1
    report = json.loads(src.ok("--json", "migrate", "--to-store", str(tmp_path / "copy2")).stdout)
    assert report["copies_undated"] == 0 and report["copies_sweepable_after"] is None
    assert [i["action"] for i in json.loads(local.ok("--json", "reclaim").stdout)["items"]] == ["reclaim"]

    remote = f"s3://{s3_bucket}/copy"
    done = src.ok("--json", "migrate", "--to-store", remote, "--to-manifest", str(tmp_path / "remote.jsonl"))
    report = json.loads(done.stdout)
    assert report["copies_undated"] == 1 and report["copies_sweepable_after"] is not None
    assert "spare them, orphans included, until" in done.stderr.decode()


# -- put: an interrupt anywhere leaves no staging file ---------------------------
@pytest.mark.parametrize("sig", ["TERM", "HUP", "INT"])
def test_a_put_interrupted_just_after_staging_leaves_no_staging_file(lashctl, sig, tmp_path):
    """The signal lands between a file's staging and the batch that would
    have known it: the staged copy goes all the same."""
    paths = []
    for n in range(3):
        (tmp_path / f"in{n}").write_bytes(f"input {n}\n".encode())
        paths.append(str(tmp_path / f"in{n}"))
    done = lashctl("put", "-s", "s", *paths, fault=f"put.staged:2/{sig}")
    assert done.returncode == 128 + getattr(signal, f"SIG{sig}"), done.stderr.decode(errors="replace")
    if lashctl.store.startswith("s3://"):
        import tempfile

        spool = Path(tempfile.gettempdir()) / f"lashctl-s3-staging-{os.getuid()}"
        left = list(spool.glob("*.part")) if spool.is_dir() else []
        assert not [p for p in left if p.stat().st_mtime > time.time() - 60], left  # none from this run
    else:
        tmp = Path(lashctl.store) / "tmp"
        assert not list(tmp.glob("*.part")) if tmp.is_dir() else True


def test_an_interrupt_under_json_prints_the_failure_object(lashctl):
    lashctl.put("s", b"an orphan\n")
    aged(lashctl)
    done = lashctl("--json", "reclaim", "--force", "--older-than", "0s", fault="reclaim.forgotten/TERM")
    assert done.returncode == 143, done.stderr
    document = json.loads(done.stdout)
    assert document["exit_code"] == 143 and "SIGTERM" in document["error"]
