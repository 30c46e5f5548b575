"""The audit log (docs/audit.md): every destructive command, on every backend
pairing, writes a line before and after each item it deletes, forgets or
quarantines; a dry run writes none; a crash between two steps leaves a log
that agrees with the store; no credential reaches it; ``show`` of an id
that is gone and ``lashctl audit`` read it back."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from pairings import KILLED, LASHCTL, Lashctl, lashctl  # noqa: F401  (lashctl: a fixture)

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
    for args in (
        ["reclaim", "-n", "--force", "--older-than", "0s"],
        ["gc", "-n", "--force", "--older-than", "0s"],
        ["delete", "-n", "--force", doomed],
        ["forget", "-n", "-s", "s-live"],
    ):
        lashctl.ok(*args, *named)
    assert not log.exists() or log.read_text() == ""

    lashctl.ok("reclaim", "--force", "--older-than", "0s", *named)
    assert sorted(steps(log, "reclaim")) == sorted(
        [
            ("deleting", a),
            ("deleted", a),
            ("deleting", b),
            ("deleted", b),
            ("forgetting", shared),
            ("forgotten", shared),
        ]
    )
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
        ("quarantining", corrupt),
        ("quarantined", corrupt),
        ("deleting", None),
        ("deleted", None),
    ]
    assert got[1]["moved_to"].startswith(str(tmp_path / "store" / "quarantine"))
    assert got[1]["sessions"] == ["s"]
    assert got[3]["path"] == str(litter)
    run("verify", "--fix")  # nothing left to repair: no more lines
    assert len(lines(tmp_path / "store" / "audit.jsonl")) == 4


# -- reading a log that is not what it should be ---------------------------------
def quick(run: Lashctl, *args: str) -> subprocess.CompletedProcess:
    """A run that must end promptly (a FIFO must never hang it)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LASHCTL_")}
    env.update(COLUMNS="80", NO_COLOR="1")
    return subprocess.run(
        [LASHCTL, "--store", run.store, *args], capture_output=True, env=env, timeout=20, cwd=run.tmp_path
    )


def one_line(run: Lashctl, **fields) -> str:
    """An audit line as the store's own runs write it."""
    line = {
        "time": "2025-03-01T02:00:07.412Z",
        "time_epoch_ms": 1740794407412,
        "action": "deleted",
        "id": "5f" * 32,
        "path": None,
        "bytes": 3,
        "sessions": ["s"],
        "reason": "orphan: no live row",
        "error": None,
        "moved_to": None,
        "command": "reclaim",
        "args": ["reclaim"],
        "run": "0" * 12,
        "pid": 1,
        "user": "lash",
        "host": "h",
        "store": run.store,
        "manifest": f"{run.store}/manifest.jsonl",
        "lashctl_version": "0.2.0",
    }
    return json.dumps({**line, **fields}) + "\n"


def test_a_log_that_is_a_fifo_or_a_device_is_refused_and_never_hangs(tmp_path):
    run = Lashctl(tmp_path, str(tmp_path / "store"), [])
    run.put("s", b"a store\n")
    fifo = tmp_path / "a.fifo"
    os.mkfifo(fifo)
    gone = "ab" * 32
    for target in (fifo, Path("/dev/zero"), tmp_path):
        for args in (["audit", "--audit-log", str(target)], ["show", gone, "--audit-log", str(target)]):
            done = quick(run, *args)
            assert done.returncode == 2, (args, done.returncode, done.stderr)
            assert b"not a regular file" in done.stderr and b"Traceback" not in done.stderr, done.stderr
    # The store's own log, a FIFO: never opened through it either.
    os.mkfifo(tmp_path / "store" / "audit.jsonl")
    for args in (["audit"], ["show", gone]):
        done = quick(run, *args)
        assert done.returncode == 1 and b"not a regular file" in done.stderr, (args, done.stderr)


def test_a_line_too_long_is_skipped_without_reading_it_whole(tmp_path):
    run = Lashctl(tmp_path, str(tmp_path / "store"), [])
    run.put("s", b"a store\n")
    log = tmp_path / "big.jsonl"
    first, last = one_line(run, id="aa" * 32), one_line(run, id="bb" * 32)
    with open(log, "wb") as out:
        out.write(first.encode())
        out.truncate(len(first) + 300 * 1024 * 1024)  # a 300 MiB line of NULs (sparse), no newline yet
        out.seek(0, os.SEEK_END)
        out.write(b"\n" + last.encode())
    env = {k: v for k, v in os.environ.items() if not k.startswith("LASHCTL_")}
    with open(tmp_path / "out", "wb") as out, open(tmp_path / "err", "wb") as err:
        child = subprocess.Popen(
            [LASHCTL, "--store", run.store, "--json", "audit", "--audit-log", str(log)],
            stdout=out,
            stderr=err,
            env=env,
            cwd=tmp_path,
        )
        _pid, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    err = (tmp_path / "err").read_bytes()
    assert child.returncode == 0, err
    assert [line["id"] for line in json.loads((tmp_path / "out").read_bytes())] == ["aa" * 32, "bb" * 32]
    assert f"{log}:2: a line longer than 1 MiB: skipped".encode() in err, err
    assert usage.ru_maxrss < 200 * 1024, usage.ru_maxrss  # KiB: never the line whole


def test_a_line_with_missing_keys_is_skipped_with_a_warning(tmp_path):
    run = Lashctl(tmp_path, str(tmp_path / "store"), [])
    run.put("s", b"a store\n")
    log = tmp_path / "g.jsonl"
    gone = "cd" * 32
    log.write_text(
        '{"a":1}\n'
        + one_line(run, id=gone)
        + json.dumps({"id": gone, "action": None})
        + "\n"
        + one_line(run, id=gone, time_epoch_ms="yesterday")
        + "[1]\n"
    )
    done = run("audit", "--audit-log", str(log))
    assert done.returncode == 0 and b"Traceback" not in done.stderr, done.stderr
    for n in (1, 3, 4, 5):
        assert f"{log}:{n}: ".encode() in done.stderr, (n, done.stderr)
    assert b"1 line(s)" in done.stderr
    shown = run("show", gone, "--audit-log", str(log))
    assert shown.returncode == 3 and b"None" not in shown.stdout + shown.stderr, (shown.stdout, shown.stderr)
    assert b"deleted (3 B) by `lashctl reclaim`" in shown.stdout


def test_a_path_that_is_not_utf8_is_logged_as_valid_json(tmp_path):
    run = Lashctl(tmp_path, str(tmp_path / "store"), [])
    run.put("s", b"a store\n")
    litter = os.path.join(os.fsencode(tmp_path / "store" / "tmp"), b"lit\xff\x9b")
    with open(litter, "wb") as out:
        out.write(b"litter")
    old = time.time() - 3 * 86400
    os.utime(litter, (old, old))
    run.ok("-q", "gc", "--force")
    log = tmp_path / "store" / "audit.jsonl"
    text = log.read_bytes().decode("utf-8")  # valid UTF-8
    got = [json.loads(line) for line in text.splitlines()]
    assert [line["action"] for line in got] == ["deleting", "deleted"]
    assert os.fsencode(got[1]["path"]) == litter  # exact
    if shutil.which("jq"):
        assert subprocess.run(["jq", "-e", ".path", str(log)], capture_output=True).returncode == 0
    listed = run.ok("audit")
    assert b"skipped" not in listed.stderr and b"2 line(s)" in listed.stderr, listed.stderr
    assert b"lit\\xff\\x9b" in listed.stdout and b"\xff" not in listed.stdout and b"\x9b" not in listed.stdout
    as_json = json.loads(run.ok("--json", "audit").stdout)
    assert os.fsencode(as_json[1]["path"]) == litter


def test_audit_on_a_path_that_is_not_a_store_is_a_usage_error(tmp_path):
    run = Lashctl(tmp_path, str(tmp_path / "typo"), [])
    done = run("audit")
    assert done.returncode == 2 and b"nothing has been deleted" not in done.stderr, done.stderr
    (tmp_path / "empty").mkdir()
    done = Lashctl(tmp_path, str(tmp_path / "empty"), [])("audit")
    assert done.returncode == 2 and b"not a lashctl store" in done.stderr, done.stderr
    store = Lashctl(tmp_path, str(tmp_path / "store"), [])
    store.put("s", b"a store\n")
    done = store.ok("audit")
    assert b"no audit log" in done.stderr


def unwritable(tmp_path: Path) -> Path:
    """A log path this user cannot append to: in a read-only directory, or
    (root) a sysfs file that takes no writes."""
    if os.geteuid() != 0:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        return ro / "audit.jsonl"
    probe = "/sys/kernel/uevent_seqnum"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_APPEND | os.O_NONBLOCK))
    except PermissionError:
        return Path(probe)
    except OSError:
        pass
    pytest.skip("no file this (root) user cannot append to")


def test_a_named_log_that_cannot_be_appended_to_stops_every_run_up_front(tmp_path):
    run = Lashctl(tmp_path, str(tmp_path / "store"), [])
    [orphan] = run.put("s", b"kept: the log cannot be written\n")
    aged()
    log = unwritable(tmp_path)
    fifo = tmp_path / "log.fifo"
    os.mkfifo(fifo)
    for target in (log, fifo):
        for args in (
            ["reclaim", "-n", "--force", "--older-than", "0s"],
            ["gc", "-n", "--force", "--older-than", "0s"],
            ["reclaim", "--force", "--older-than", "1d"],
            ["reclaim", "--force", "--older-than", "0s"],
            ["verify", "--fix"],
            ["delete", "--force", orphan],
        ):
            done = quick(run, *args, "--audit-log", str(target))
            assert done.returncode == 2, (target, args, done.returncode, done.stderr)
            assert str(target).encode() in done.stderr and b"Traceback" not in done.stderr, done.stderr
    assert run.present(orphan)


def test_a_shared_log_shows_each_store_its_own_lines(tmp_path):
    log = tmp_path / "shared.jsonl"
    one, two = Lashctl(tmp_path, str(tmp_path / "one"), []), Lashctl(tmp_path, str(tmp_path / "two"), [])
    [a] = one.put("s", b"the same bytes\n")
    [b] = two.put("s", b"the same bytes\n")
    assert a == b
    one.ok("delete", "--force", a, "--audit-log", str(log))
    assert two.present(b)
    mine = json.loads(two.ok("--json", "audit", "--audit-log", str(log)).stdout)
    assert mine == []
    every = json.loads(two.ok("--json", "audit", "--all-stores", "--audit-log", str(log)).stdout)
    assert [line["action"] for line in every] == ["deleting", "deleted"]
    theirs = json.loads(one.ok("--json", "audit", "--audit-log", str(log)).stdout)
    assert [line["store"] for line in theirs] == [str(tmp_path / "one")] * 2
    two.ok("delete", "--force", b, "--audit-log", str(log))
    shown = two("--json", "show", b, "--audit-log", str(log))
    assert shown.returncode == 3
    assert [h["store"] for h in json.loads(shown.stdout)["history"]] == [str(tmp_path / "two")] * 2
    # The same store by another spelling of its path is still the same store.
    again = Lashctl(tmp_path, "two", [])
    assert len(json.loads(again.ok("--json", "audit", "--audit-log", str(log)).stdout)) == 2


def test_the_systemd_unit_can_write_the_log_docs_tell_an_s3_store_to_name():
    root = Path(__file__).resolve().parents[2]
    unit = (root / "contrib" / "systemd" / "lashctl-reclaim.service").read_text()
    docs = (root / "docs" / "audit.md").read_text()
    assert "LASHCTL_AUDIT_LOG=/var/log/lashctl/audit.jsonl" in docs
    # ProtectSystem=strict: /var/log/lashctl is writable only as the unit's LogsDirectory.
    assert "\nLogsDirectory=lashctl\n" in unit and "ProtectSystem=strict" in unit
    assert "# Environment=LASHCTL_AUDIT_LOG=/var/log/lashctl/audit.jsonl\n" in unit


def test_a_run_that_changes_nothing_leaves_no_log_behind(tmp_path):
    """A sweep with nothing to do, a refused delete, a named log's check:
    the store's files are as they were, and a named log is not created
    until a line is written."""
    run = Lashctl(tmp_path, str(tmp_path / "store"), [])
    [attachment_id] = run.put("s", b"live bytes\n")
    store = tmp_path / "store"
    before = sorted(p.name for p in store.iterdir())
    run.ok("reclaim")
    run.ok("gc")
    assert run("delete", attachment_id).returncode == 4  # referenced: refused
    assert sorted(p.name for p in store.iterdir()) == before
    named = tmp_path / "logs" / "audit.jsonl"
    named.parent.mkdir()
    run.ok("reclaim", "--audit-log", str(named))
    assert not named.exists()
