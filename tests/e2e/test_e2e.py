"""End to end: the installed ``lashctl`` console script in a subprocess, on real temp dirs.

These are the checks a shell script or a cron job would notice: exact stdout
through a pipe, exit codes, one-line errors without tracebacks, and the files
left on disk.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import LASHCTL_ENV, blob_path, png_bytes, sha
from reliability_helpers import find_lashctl

pytestmark = pytest.mark.e2e

HEX64 = re.compile(r"[0-9a-f]{64}")
DAY = 86_400_000


LASHCTL = find_lashctl()


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in LASHCTL_ENV}
    # Tempt Rich into colour and wrapping: stdout to a pipe must stay plain.
    env.update({"COLUMNS": "30", "TERM": "xterm-256color", "FORCE_COLOR": "1"})
    env.update(extra)
    return env


def run(
    *args: str,
    input: bytes | None = None,
    env: dict | None = None,
    cwd: Path | None = None,
    program: list[str] | None = None,
) -> subprocess.CompletedProcess:
    return subprocess.run(
        (program or [LASHCTL]) + list(args),
        input=input if input is not None else b"",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env if env is not None else base_env(),
        cwd=cwd,
        timeout=60,
    )


def files_under(directory: Path) -> list[Path]:
    if not directory.exists():
        return []
    return sorted(p for p in directory.rglob("*") if p.is_file())


def id_lines(stdout: bytes) -> list[str]:
    text = stdout.decode("ascii")
    assert text.endswith("\n") or text == ""
    lines = text.splitlines()
    for line in lines:
        assert HEX64.fullmatch(line), repr(line)
    return lines


def assert_ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, (proc.returncode, proc.stdout[:2000], proc.stderr.decode())
    assert b"Traceback" not in proc.stderr


def assert_error(proc: subprocess.CompletedProcess, code: int, *needles: str) -> None:
    stderr = proc.stderr.decode()
    assert proc.returncode == code, (proc.returncode, proc.stdout[:2000], stderr)
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("lashctl: error:")]
    assert len(errors) == 1, stderr
    for needle in needles:
        assert needle in stderr, (needle, stderr)


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    directory = tmp_path / "inputs"
    directory.mkdir()
    return directory


# -- the basics ----------------------------------------------------------------------
def test_version():
    from importlib.metadata import version

    proc = run("--version")
    assert_ok(proc)
    assert proc.stdout == f"lashctl {version('lashctl')}\n".encode()


def test_python_m_lashctl_help_names_the_program_lashctl():
    env = base_env(COLUMNS="100")
    del env["FORCE_COLOR"]
    proc = run("--help", program=[sys.executable, "-m", "lashctl"], env=env)
    assert_ok(proc)
    text = proc.stdout.decode()
    assert re.search(r"Usage: lashctl \[OPTIONS\] COMMAND", text), text
    assert "__main__" not in text
    assert "python -m" not in text


def test_what_one_process_writes_a_new_process_reads(store, inputs, tmp_path):
    png = png_bytes(7, 11)
    (inputs / "pixel.png").write_bytes(png)
    proc = run("--store", str(store), "put", "-s", "s-1", str(inputs / "pixel.png"))
    assert_ok(proc)
    png_id = sha(png)
    assert proc.stdout == (png_id + "\n").encode()
    assert b"stored" in proc.stderr  # the summary goes to stderr, not stdout

    sidecar = (store / "sha256" / png_id[:2] / (png_id + ".json")).read_text("utf-8")
    expected = {
        "id": png_id,
        "media_type": {"kind": "image", "type": "png"},
        "byte_len": len(png),
        "width": 7,
        "height": 11,
        "label": "pixel.png",
    }
    assert sidecar.rstrip("\n") == json.dumps(expected, indent=2)

    piped = run("--store", str(store), "get", png_id)
    assert_ok(piped)
    assert piped.stdout == png
    dashed = run("--store", str(store), "get", png_id, "-o", "-")
    assert_ok(dashed)
    assert dashed.stdout == png
    target = tmp_path / "copy.png"
    to_file = run("--store", str(store), "get", png_id[:10], "-o", str(target))
    assert_ok(to_file)
    assert to_file.stdout == b""
    assert target.read_bytes() == png

    listed = run("--store", str(store), "list-uncommitted", "--json")
    assert_ok(listed)
    rows = json.loads(listed.stdout)
    assert [(r["id"], r["session_id"], r["bytes_present"]) for r in rows] == [(png_id, "s-1", True)]

    unknown = run("--store", str(store), "get", sha(b"not there"))
    assert_error(unknown, 3)

    assert_ok(run("--store", str(store), "delete", "--force", png_id))
    assert not blob_path(store, png_id).exists()
    assert_ok(run("--store", str(store), "delete", "--force", png_id))
    assert_error(run("--store", str(store), "get", png_id), 3)


def test_a_large_file_streams_through_put_and_get(store, inputs):
    data = os.urandom(5 * 1024 * 1024 + 3)
    (inputs / "big.bin").write_bytes(data)
    proc = run("--store", str(store), "put", "-s", "s", str(inputs / "big.bin"))
    assert_ok(proc)
    assert id_lines(proc.stdout) == [sha(data)]
    out = run("--store", str(store), "get", sha(data))
    assert_ok(out)
    assert out.stdout == data


# -- put: inputs and batches ---------------------------------------------------------
def test_put_prints_one_id_per_input_in_input_order(store, inputs):
    contents = {"a.txt": b"alpha\n", "b.bin": b"\x00bravo", "c.png": png_bytes(1, 1)}
    for name, data in contents.items():
        (inputs / name).write_bytes(data)
    stdin_data = b"from standard input"
    proc = run(
        "--store",
        str(store),
        "put",
        "-s",
        "s",
        str(inputs / "c.png"),
        "-",
        str(inputs / "a.txt"),
        str(inputs / "c.png"),
        input=stdin_data,
    )
    assert_ok(proc)
    assert id_lines(proc.stdout) == [
        sha(contents["c.png"]),
        sha(stdin_data),
        sha(contents["a.txt"]),
        sha(contents["c.png"]),
    ]
    for data in (contents["c.png"], stdin_data, contents["a.txt"]):
        assert blob_path(store, sha(data)).read_bytes() == data
    assert files_under(store / "tmp") == []


def test_put_files_from_a_list_and_from_nul_separated_stdin(store, inputs, tmp_path):
    names = ["one.txt", "two words.txt", "three.txt"]
    for i, name in enumerate(names):
        (inputs / name).write_bytes(f"content {i}\n".encode())
    listing = tmp_path / "list.txt"
    order = [names[2], names[0], names[1]]
    listing.write_text("".join(str(inputs / n) + "\n" for n in order), "utf-8")
    proc = run("--store", str(store), "put", "-s", "s", "--files-from", str(listing))
    assert_ok(proc)
    assert id_lines(proc.stdout) == [sha(f"content {names.index(n)}\n".encode()) for n in order]

    odd = "line\nbreak.txt"  # only a NUL-separated list can carry this name
    (inputs / odd).write_bytes(b"odd name")
    nul_list = b"\0".join(str(inputs / n).encode() for n in (odd, names[1], odd)) + b"\0"
    proc = run("--store", str(store), "put", "-s", "s", "--files-from", "-", "-0", input=nul_list)
    assert_ok(proc)
    assert id_lines(proc.stdout) == [sha(b"odd name"), sha(b"content 1\n"), sha(b"odd name")]

    labels = {}
    for i in (sha(b"odd name"), sha(b"content 1\n")):
        sidecar = json.loads((store / "sha256" / i[:2] / (i + ".json")).read_text("utf-8"))
        labels[i] = sidecar.get("label")
    assert labels == {sha(b"odd name"): odd, sha(b"content 1\n"): "two words.txt"}


def test_json_output_parses_before_and_after_the_command(store, inputs):
    (inputs / "note.txt").write_bytes(b"note\n")
    for args in (["--json", "put", "-s", "s"], ["put", "--json", "-s", "s"]):
        proc = run("--store", str(store), *args, str(inputs / "note.txt"))
        assert_ok(proc)
        (record,) = json.loads(proc.stdout)
        assert record["id"] == sha(b"note\n")
        assert record["path"] == str(inputs / "note.txt")
        assert record["byte_len"] == 5
        assert record["label"] == "note.txt"
    for args in (["--json", "list-uncommitted"], ["list-uncommitted", "--json"]):
        proc = run("--store", str(store), *args)
        assert_ok(proc)
        assert [r["id"] for r in json.loads(proc.stdout)] == [sha(b"note\n")]
    for args in (["--json", "commit", "-s", "s"], ["commit", "-s", "s", "--json"]):
        proc = run("--store", str(store), *args, sha(b"note\n"))
        assert_ok(proc)
        assert json.loads(proc.stdout)[0]["id"] == sha(b"note\n")
    for args in (["--json", "reclaim", "--dry-run"], ["reclaim", "--dry-run", "--json"]):
        proc = run("--store", str(store), *args)
        assert_ok(proc)
        report = json.loads(proc.stdout)
        assert report["dry_run"] is True and report["items"] == []


def test_piped_output_has_no_escape_codes_and_whole_ids(store, inputs):
    for i in range(3):
        (inputs / f"f{i}.txt").write_bytes(f"file {i}".encode())
    paths = [str(inputs / f"f{i}.txt") for i in range(3)]
    put = run("--store", str(store), "put", "-s", "a-rather-long-session-name", *paths)
    assert_ok(put)
    ids = id_lines(put.stdout)
    assert ids == [sha(f"file {i}".encode()) for i in range(3)]

    commit = run("--store", str(store), "commit", "-s", "a-rather-long-session-name", ids[0])
    assert_ok(commit)
    listed = run("--store", str(store), "list-uncommitted")
    assert_ok(listed)
    dry = run("--store", str(store), "reclaim", "--dry-run", "--force", "--older-than", "0s")
    assert_ok(dry)
    for proc, expected_ids in ((commit, ids[:1]), (listed, ids[1:]), (dry, ids[1:])):
        text = proc.stdout.decode()
        assert "\x1b[" not in text
        lines = text.splitlines()
        assert len(lines) == len(expected_ids), text
        first = [line.split("\t")[0] for line in lines]
        assert first == expected_ids or sorted(first) == sorted(expected_ids), text
        for field in first:
            assert HEX64.fullmatch(field)
    assert commit.stdout == f"{ids[0]}\ta-rather-long-session-name\tcommitted\n".encode()


def test_environment_variables_select_store_manifest_and_session(tmp_path, inputs):
    store = tmp_path / "env-store"
    manifest = tmp_path / "elsewhere" / "lash.jsonl"
    (inputs / "x").write_bytes(b"via env")
    env = base_env(LASHCTL_STORE=str(store), LASHCTL_SESSION="env-session", LASHCTL_MANIFEST=str(manifest))
    proc = run("put", str(inputs / "x"), env=env)
    assert_ok(proc)
    assert id_lines(proc.stdout) == [sha(b"via env")]
    assert blob_path(store, sha(b"via env")).exists()
    assert not (store / "manifest.jsonl").exists()
    events = [json.loads(line) for line in manifest.read_text("utf-8").splitlines()]
    assert events[-1]["session_id"] == "env-session"
    assert (Path(str(manifest) + ".lock")).exists()


# -- the write-ahead rule and the lock -------------------------------------------------
def test_lock_timeout_exits_75_and_lands_no_blob(store, inputs):
    data = b"waiting for the lock"
    (inputs / "w.bin").write_bytes(data)
    assert_ok(run("--store", str(store), "put", "-s", "s", "-", input=b"existing"))
    store.mkdir(parents=True, exist_ok=True)
    lock_path = store / "manifest.jsonl.lock"
    manifest_before = (store / "manifest.jsonl").read_bytes()
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        started = time.monotonic()
        proc = run("--store", str(store), "--lock-timeout", "0.2", "put", "-s", "s", str(inputs / "w.bin"))
        elapsed = time.monotonic() - started
        assert_error(proc, 75, "manifest.jsonl.lock")
        assert proc.stdout == b""
        assert elapsed < 10
        assert not blob_path(store, sha(data)).exists()
        assert files_under(store / "tmp") == []
        assert (store / "manifest.jsonl").read_bytes() == manifest_before

        env = base_env(LASHCTL_LOCK_TIMEOUT="0.1")
        for args in (
            ["commit", "-s", "s", sha(b"existing")],
            ["reclaim", "--force", "--older-than", "0s"],
            ["delete", "--force", sha(b"existing")],
        ):
            proc = run("--store", str(store), *args, env=env)
            assert_error(proc, 75)
        assert blob_path(store, sha(b"existing")).exists()

        # Readers and dry runs take no lock.
        assert_ok(run("--store", str(store), "list-uncommitted", env=env))
        assert_ok(run("--store", str(store), "get", sha(b"existing"), env=env))
        dry = run("--store", str(store), "reclaim", "--dry-run", "--force", "--older-than", "0s", "--json", env=env)
        assert_ok(dry)
        assert [i["id"] for i in json.loads(dry.stdout)["items"]] == [sha(b"existing")]
    finally:
        os.close(fd)
    assert (store / "manifest.jsonl").read_bytes() == manifest_before


def test_an_intent_is_stamped_when_it_is_written_not_before_the_lock_wait(store, inputs):
    # An intent stamped before a long wait for the lock would start its grace
    # period early: a sweep could take it for older than it is.
    (inputs / "late.bin").write_bytes(b"stamped after the wait")
    store.mkdir(parents=True)
    fd = os.open(store / "manifest.jsonl.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        proc = subprocess.Popen(
            [LASHCTL, "--store", str(store), "put", "-s", "s", str(inputs / "late.bin")],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=base_env(),
        )
        deadline = time.monotonic() + 30
        while not files_under(store / "tmp") and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)  # staged: the put is at (or a moment from) the lock
        time.sleep(2.0)
        released_ms = time.time_ns() // 1_000_000
        fcntl.flock(fd, fcntl.LOCK_UN)
        out, err = proc.communicate(timeout=60)
    finally:
        os.close(fd)
    assert proc.returncode == 0, err.decode()
    events = [json.loads(line) for line in (store / "manifest.jsonl").read_text("utf-8").splitlines()]
    (stamped,) = [e["intent_at_epoch_ms"] for e in events if e["op"] == "intent"]
    assert stamped >= released_ms, f"intent stamped {released_ms - stamped} ms before the lock was free"


def test_put_lands_no_blob_when_the_manifest_cannot_be_appended(store, inputs, tmp_path):
    data = b"no intent, no blob"
    (inputs / "x.bin").write_bytes(data)
    manifest_dir = tmp_path / "manifest-is-a-directory"
    manifest_dir.mkdir()
    proc = run("--store", str(store), "--manifest", str(manifest_dir), "put", "-s", "s", str(inputs / "x.bin"))
    assert_error(proc, 65, str(manifest_dir))  # not a regular file: not a manifest
    assert len(proc.stderr.decode().splitlines()) == 1
    assert proc.stdout == b""
    assert files_under(store / "sha256") == []
    assert files_under(store / "tmp") == []


# -- reclaim from cron --------------------------------------------------------------------
def test_reclaim_sweeps_aged_orphans_and_keeps_committed_content(store, inputs):
    for name in ("orphan", "committed", "shared"):
        (inputs / name).write_bytes(name.encode())
    ids = id_lines(
        run(
            "--store", str(store), "put", "-s", "A", *(str(inputs / n) for n in ("orphan", "committed", "shared"))
        ).stdout
    )
    orphan, committed, shared = ids
    assert_ok(run("--store", str(store), "put", "-s", "B", str(inputs / "shared")))
    assert_ok(run("--store", str(store), "commit", "-s", "A", committed))
    assert_ok(run("--store", str(store), "commit", "-s", "B", shared))

    # Age every intent by two days, as if the sessions had crashed long ago.
    manifest = store / "manifest.jsonl"
    events = [json.loads(line) for line in manifest.read_text("utf-8").splitlines()]
    for event in events:
        for key in ("intent_at_epoch_ms", "committed_at_epoch_ms"):
            if key in event:
                event[key] -= 2 * DAY
    manifest.write_text("".join(json.dumps(e, separators=(",", ":")) + "\n" for e in events), "utf-8")
    then = time.time() - 2 * DAY / 1000  # and their bytes with them
    for path in (store / "sha256").rglob("*"):
        if path.is_file():
            os.utime(path, (then, then))

    proc = run("--store", str(store), "reclaim")  # the default 24h grace period
    assert_ok(proc)
    lines = proc.stdout.decode().splitlines()
    assert {tuple(line.split("\t")[:2]) for line in lines} == {(orphan, "reclaim"), (shared, "release")}
    assert not blob_path(store, orphan).exists()
    assert blob_path(store, committed).exists()
    assert blob_path(store, shared).exists()
    tail = [json.loads(line) for line in manifest.read_text("utf-8").splitlines()][len(events) :]
    assert sorted((e["op"], e["attachment_id"], e["session_id"]) for e in tail) == sorted(
        [("forget", orphan, "A"), ("forget", shared, "A")]
    )

    assert_error(run("--store", str(store), "reclaim", "--older-than", "30s"), 4)


# -- errors: one line, the right code, never a traceback -------------------------------------
def test_errors_are_one_line_with_their_exit_code(store, inputs):
    attachment_id = id_lines(run("--store", str(store), "put", "-s", "s", "-", input=b"x").stdout)[0]
    cases = [
        (["get", "../../etc/passwd"], 2),
        (["get", "zz"], 2),
        (["delete", "abc"], 2),
        (["commit", "-s", "s", "sha256:abc"], 2),
        (["get", "--no-such-option", attachment_id], 2),
        (["no-such-command"], 2),
        (["list-uncommitted", "--older-than", "soon"], 2),
        (["get", sha(b"absent")], 3),
        (["commit", "-s", "other", attachment_id], 3),
        (["delete", attachment_id], 4),
        (["reclaim", "--older-than", "30s"], 4),
    ]
    for args, code in cases:
        proc = run("--store", str(store), *args)
        assert_error(proc, code)

    manifest = store / "manifest.jsonl"
    manifest.write_bytes(manifest.read_bytes() + b"{not json}\n" + manifest.read_bytes().splitlines(True)[1])
    for args in (["list-uncommitted"], ["reclaim", "--force", "--older-than", "0s"], ["delete", attachment_id]):
        assert_error(run("--store", str(store), *args), 65, "manifest.jsonl:3")
    assert blob_path(store, attachment_id).exists()


@pytest.mark.parametrize("args", [["--help"], ["list-uncommitted"], ["get", "ID"], ["put", "-s", "s", "-"]])
def test_a_closed_stdout_never_gives_a_traceback(store, args):
    attachment_id = id_lines(run("--store", str(store), "put", "-s", "s", "-", input=b"y" * 200_000).stdout)[0]
    args = [attachment_id if a == "ID" else a for a in args]
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before lashctl writes
    try:
        proc = subprocess.run(
            [LASHCTL, "--store", str(store), *args],
            input=b"z",
            stdout=write_end,
            stderr=subprocess.PIPE,
            env=base_env(),
            timeout=60,
        )
    finally:
        os.close(write_end)
    assert b"Traceback" not in proc.stderr, proc.stderr.decode()
    assert len(proc.stderr.decode().splitlines()) <= 2, proc.stderr.decode()


def test_get_refuses_to_write_binary_to_a_terminal(store):
    import pty

    data = b"\x00\x01binary\xff" * 10
    attachment_id = id_lines(run("--store", str(store), "put", "-s", "s", "-", input=data).stdout)[0]
    leader, follower = pty.openpty()
    try:
        proc = subprocess.run(
            [LASHCTL, "--store", str(store), "get", attachment_id],
            stdin=subprocess.DEVNULL,
            stdout=follower,
            stderr=subprocess.PIPE,
            env=base_env(),
            timeout=60,
        )
        os.close(follower)
        follower = -1
        shown = b""
        try:
            while chunk := os.read(leader, 4096):
                shown += chunk
        except OSError:
            pass  # EIO: the terminal's other end is closed
    finally:
        if follower >= 0:
            os.close(follower)
        os.close(leader)
    assert proc.returncode != 0
    assert b"Traceback" not in proc.stderr
    assert b"binary" not in shown
    assert b"-o" in proc.stderr
