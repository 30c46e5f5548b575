"""The audit log (docs/audit.md): every destructive command, on every backend
pairing, writes a line before and after each item it deletes, forgets or
quarantines; a dry run writes none; a crash between two steps leaves a log
that agrees with the store; no credential reaches it; ``show`` of an id
that is gone and ``lashctl audit`` read it back."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from pairings import KILLED, Lashctl, lashctl  # noqa: F401  (lashctl: a fixture)

pytestmark = pytest.mark.e2e


def where(lashctl: Lashctl) -> tuple[Path, list[str]]:
    """The log a run writes, and the options that name it: a local store's
    own (none needed), else a file named with --audit-log."""
    if lashctl.store.startswith("s3://"):
        path = lashctl.tmp_path / "audit.jsonl"
        return path, ["--audit-log", str(path)]
    return Path(lashctl.store) / "audit.jsonl", []


def lines(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def steps(path: Path, command: str | None = None) -> list[tuple[str, str]]:
    return [(line["action"], line["id"]) for line in lines(path) if command in (None, line["command"])]


def aged() -> None:
    time.sleep(1.1)  # --older-than 0s then finds every intent and object written so far


def with_password(lashctl: Lashctl, request) -> str | None:
    """For a PostgreSQL pairing: the manifest named by a URL with a password
    (the password user over TCP), so that the log can be searched for it."""
    if not lashctl.manifest or not lashctl.manifest[-1].startswith("postgresql://"):
        return None
    pg_server = request.getfixturevalue("pg_server")
    dbname = urlsplit(lashctl.manifest[-1]).path.lstrip("/")
    lashctl.manifest = ["--manifest", pg_server.tcp_url(dbname=dbname)]
    return "s3cret-pw"


def test_every_destructive_command_writes_its_lines_and_dry_runs_none(lashctl, request):
    log, named = where(lashctl)
    password = with_password(lashctl, request)
    a, b = lashctl.put("s-orphan", b"orphan a\n", b"orphan b\n")
    [shared] = lashctl.put("s-orphan", b"shared\n")
    lashctl.put("s-live", b"shared\n")
    lashctl.ok("commit", "-s", "s-live", shared)
    [doomed] = lashctl.put("s-doomed", b"deleted by name\n")
    lashctl.ok("commit", "-s", "s-doomed", doomed)
    aged()

    # Dry runs write nothing.
    for args in (["reclaim", "-n", "--force", "--older-than", "0s"], ["gc", "-n", "--force", "--older-than", "0s"],
                 ["delete", "-n", "--force", doomed], ["forget", "-n", "-s", "s-live"]):
        lashctl.ok(*args, *named)
    assert not log.exists() or log.read_text() == ""

    lashctl.ok("reclaim", "--force", "--older-than", "0s", *named)
    assert sorted(steps(log, "reclaim")) == sorted([
        ("deleting", a), ("deleted", a), ("deleting", b), ("deleted", b), ("forgetting", shared), ("forgotten", shared)])
    by_id = {(line["action"], line["id"]): line for line in lines(log)}
    assert by_id[("deleted", a)]["bytes"] == len(b"orphan a\n")
    assert by_id[("deleted", a)]["sessions"] == ["s-orphan"]
    assert by_id[("forgotten", shared)]["sessions"] == ["s-orphan"]
    assert "kept: session s-live committed it" in by_id[("forgotten", shared)]["reason"]

    lashctl.ok("forget", "-s", "s-live", shared, *named)
    assert steps(log, "forget") == [("forgetting", shared), ("forgotten", shared)]
    aged()
    lashctl.ok("gc", "--force", "--older-than", "0s", *named)
    assert steps(log, "gc") == [("deleting", shared), ("deleted", shared)]
    lashctl.ok("delete", "--force", doomed, *named)
    assert steps(log, "delete") == [("deleting", doomed), ("deleted", doomed)]
    assert "committed rows of session(s) s-doomed kept" in lines(log)[-1]["reason"]

    for line in lines(log):
        assert line["pid"] > 0 and line["user"] and line["host"] and line["lashctl_version"]
        assert line["args"][line["args"].index(line["command"]) - 1] != "-n"
        assert line["time_epoch_ms"] > 0 and line["time"].endswith("Z")
    text = log.read_text()
    for secret in filter(None, [password, os.environ.get("AWS_SECRET_ACCESS_KEY")]):
        assert secret not in text
    if password:
        assert lines(log)[0]["manifest"].startswith("postgresql://lashctl_pw@")
        assert "--manifest" in lines(log)[0]["args"]

    # What happened to a blob that is gone.
    gone = lashctl("--json", "show", a, *(["--audit-log", str(log)] if named else []))
    assert gone.returncode == 3, gone.stderr
    document = json.loads(gone.stdout)
    assert document["id"] == a and [h["action"] for h in document["history"]] == ["deleting", "deleted"]
    assert "deleted at" in document["error"] and "reclaim" in document["error"]
    human = lashctl("show", a, *named[:0], *(["--audit-log", str(log)] if named else []))
    assert human.returncode == 3
    assert b"deleted (9 B) by `lashctl" in human.stdout and b"orphan: no live row" in human.stdout
    listed = json.loads(lashctl.ok("--json", "audit", "--id", a[:12], *named).stdout)
    assert [line["action"] for line in listed] == ["deleting", "deleted"]


def test_an_s3_store_without_a_named_log_says_it_is_not_audited(lashctl):
    if not lashctl.store.startswith("s3://"):
        pytest.skip("a local store has a root to keep its log in")
    [orphan] = lashctl.put("s", b"unaudited orphan\n")
    aged()
    done = lashctl.ok("reclaim", "--force", "--older-than", "0s")
    assert b"is not audited" in done.stderr and b"--audit-log" in done.stderr
    assert not lashctl.present(orphan)
    assert not list(lashctl.tmp_path.glob("**/audit.jsonl"))


@pytest.mark.parametrize("point", ["reclaim.forgotten", "reclaim.deleted", "delete.forgotten", "delete.deleted"])
def test_a_crash_mid_sweep_leaves_a_log_that_agrees_with_the_store(lashctl, point):
    log, named = where(lashctl)
    ids = lashctl.put("s", b"crash one\n", b"crash two\n", b"crash three\n")
    aged()
    if point.startswith("reclaim"):
        killed = lashctl("reclaim", "--force", "--older-than", "0s", *named, fault=point)
    else:
        killed = lashctl("delete", "--force", *ids, *named, fault=point)
    assert killed.returncode == KILLED, killed.stderr.decode(errors="replace")
    seen = steps(log)
    for attachment_id in ids:
        there = lashctl.present(attachment_id)
        # Never a claim of a deletion that did not happen; never a deletion without its line first.
        if ("deleted", attachment_id) in seen:
            assert not there
        if not there:
            assert ("deleting", attachment_id) in seen
    assert all(("deleting", i) in seen for i in ids)
    if point.endswith("forgotten"):
        assert not any(action == "deleted" for action, _i in seen)
    # The next sweep finishes the job, and its lines follow.
    lashctl.ok("gc", "--force", "--older-than", "0s", *named)
    assert not any(lashctl.present(i) for i in ids)


def test_the_log_is_no_stray_and_never_followed_through_a_symlink(tmp_path):
    run = Lashctl(tmp_path, str(tmp_path / "store"), [])
    [orphan] = run.put("s", b"to be reclaimed\n")
    aged()
    run.ok("reclaim", "--force", "--older-than", "0s")
    log = tmp_path / "store" / "audit.jsonl"
    assert len(lines(log)) == 2
    old = time.time() - 7 * 86400
    os.utime(log, (old, old))
    verify = json.loads(run.ok("--json", "verify").stdout)
    assert not any("audit" in (f["path"] or "") for f in verify["findings"])
    run.ok("gc", "--force", "--older-than", "0s")
    assert log.exists() and len(lines(log)) == 2

    [second] = run.put("s", b"another orphan\n")
    aged()
    elsewhere = tmp_path / "elsewhere.jsonl"
    elsewhere.write_text("")
    log.unlink()
    log.symlink_to(elsewhere)
    refused = run("reclaim", "--force", "--older-than", "0s")
    assert refused.returncode != 0 and b"symlink" in refused.stderr
    assert elsewhere.read_text() == ""
    assert run.present(second)  # nothing deleted without its line
    assert not run.present(orphan)


def test_the_log_goes_to_stderr_with_a_dash_and_a_named_dir_must_exist(tmp_path):
    run = Lashctl(tmp_path, str(tmp_path / "store"), [])
    [orphan] = run.put("s", b"logged to stderr\n")
    aged()
    bad = run("reclaim", "--force", "--older-than", "0s", "--audit-log", str(tmp_path / "no" / "such.jsonl"))
    assert bad.returncode == 2 and run.present(orphan)
    done = run.ok("--json", "reclaim", "--force", "--older-than", "0s", "--audit-log", "-")
    json.loads(done.stdout)  # stdout is still the report alone
    logged = [json.loads(line) for line in done.stderr.decode().splitlines() if line.startswith("{")]
    assert [(line["action"], line["id"]) for line in logged] == [("deleting", orphan), ("deleted", orphan)]
    assert not (tmp_path / "store" / "audit.jsonl").exists()


def test_verify_fix_logs_its_quarantine_and_litter(tmp_path):
    run = Lashctl(tmp_path, str(tmp_path / "store"), [])
    [corrupt] = run.put("s", b"will be corrupted\n")
    blob = tmp_path / "store" / "sha256" / corrupt[:2] / corrupt
    blob.chmod(0o644)
    blob.write_bytes(b"not what the name says\n")
    litter = tmp_path / "store" / "tmp" / "left.part"
    litter.write_bytes(b"litter")
    old = time.time() - 3 * 86400
    os.utime(litter, (old, old))
    run("verify", "--fix")
    got = lines(tmp_path / "store" / "audit.jsonl")
    assert [(line["action"], line["id"]) for line in got] == [
        ("quarantining", corrupt), ("quarantined", corrupt), ("deleting", None), ("deleted", None)]
    assert got[1]["moved_to"].startswith(str(tmp_path / "store" / "quarantine"))
    assert got[1]["sessions"] == ["s"]
    assert got[3]["path"] == str(litter)
    run("verify", "--fix")  # nothing left to repair: no more lines
    assert len(lines(tmp_path / "store" / "audit.jsonl")) == 4
