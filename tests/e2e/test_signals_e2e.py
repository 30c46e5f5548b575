"""What a job runner's signals leave behind: SIGTERM and SIGHUP end a command
the way Ctrl-C does (staging removed, locks released, one line on stderr), with
exit 128 + the signal's number (143, 129; 130 for SIGINT)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reliability_helpers import base_env, find_lashctl, read_log, run

pytestmark = pytest.mark.e2e

SIGNALS = [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGHUP, 129, "SIGHUP"), (signal.SIGINT, 130, None)]
SIGNAL_IDS = ["TERM", "HUP", "INT"]

# Runs lashctl's console entry point with one function wrapped so that, once
# the original has run, the process notes it (a marker file) and waits: a
# slow disk or a long copy, caught in the act without a timing guess.
STALL = """
import importlib, os, sys, time
marker, target = sys.argv[1], sys.argv[2]
module_name, _, attr = target.rpartition(".")
owner = importlib.import_module(module_name)
original = getattr(owner, attr)

def stalled(*args, **kwargs):
    result = original(*args, **kwargs)
    open(marker, "w").close()
    while True:
        time.sleep(1)

setattr(owner, attr, stalled)
sys.argv = ["lashctl", *sys.argv[3:]]
from lashctl import main
main()
"""


def _wait_for(predicate, what: str, proc: subprocess.Popen, limit: float = 60) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"lashctl ended before {what}: exit {proc.returncode}, {err!r}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"lashctl never reached {what}")
        time.sleep(0.05)


def _stalled(tmp_path: Path, target: str, args: list) -> tuple[subprocess.Popen, Path]:
    marker = tmp_path / "stalled"
    proc = subprocess.Popen(
        [sys.executable, "-c", STALL, str(marker), target, *map(str, args)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=base_env(),
    )
    _wait_for(marker.exists, f"the stall in {target}", proc)
    return proc, marker


def _assert_ended(proc: subprocess.Popen, code: int, name: str | None, tail: str) -> bytes:
    out, err = proc.communicate(timeout=60)
    text = err.decode()
    assert proc.returncode == code, text
    assert "Traceback" not in text
    word = f"interrupted by {name}" if name else "interrupted"
    assert text.splitlines()[-1] == f"lashctl: {word}{tail}", text
    return out


def _put(store: Path, data: bytes, *extra: str) -> str:
    result = run(["--store", store, *extra, "put", "-s", "s", "-"], input=data)
    assert result.returncode == 0, result.stderr
    return result.stdout.decode().strip()


@pytest.mark.parametrize("signum, code, name", SIGNALS, ids=SIGNAL_IDS)
def test_a_signal_during_a_streaming_put_leaves_no_staging_and_no_lock(tmp_path, signum, code, name):
    store = tmp_path / "store"
    _put(store, b"already stored")
    manifest = (store / "manifest.jsonl").read_bytes()
    proc = subprocess.Popen(
        [find_lashctl(), "--store", str(store), "put", "-s", "s", "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=base_env(),
    )
    proc.stdin.write(os.urandom(3 * 1024 * 1024))  # more than one chunk: the writer thread runs too
    proc.stdin.flush()

    def staged() -> bool:
        return any(p.stat().st_size > 0 for p in (store / "tmp").glob("put-*.part"))

    _wait_for(staged, "a staged copy", proc)
    proc.send_signal(signum)
    out = _assert_ended(
        proc,
        code,
        name,
        ": 0 of 1 input stored and recorded; staged copies of the rest were "
        "removed, and reclaim sweeps anything else they left",
    )
    proc.stdin.close()
    assert out == b""
    assert list((store / "tmp").iterdir()) == []
    assert (store / "manifest.jsonl").read_bytes() == manifest
    # Nothing holds the lock: a writer that will not wait gets it at once.
    _put(store, b"after", "--lock-timeout", "0")


@pytest.mark.parametrize("signum, code, name", SIGNALS, ids=SIGNAL_IDS)
def test_a_signal_during_get_to_a_file_leaves_no_staging_file(tmp_path, signum, code, name):
    store = tmp_path / "store"
    attachment_id = _put(store, os.urandom(3 * 1024 * 1024))
    out = tmp_path / "out"
    out.mkdir()
    (out / "copy").write_bytes(b"what was there")
    proc, _ = _stalled(
        tmp_path, "lashctl.transfer.copy_verified", ["--store", store, "get", attachment_id, "-o", out / "copy"]
    )
    assert any(p.name.endswith(".part") for p in out.iterdir())  # caught with its staging file in place
    proc.send_signal(signum)
    _assert_ended(proc, code, name, "; nothing half-written was left")
    assert sorted(p.name for p in out.iterdir()) == ["copy"]
    assert (out / "copy").read_bytes() == b"what was there"


@pytest.mark.parametrize("signum, code, name", SIGNALS[:2], ids=SIGNAL_IDS[:2])
def test_a_signal_during_compaction_leaves_the_manifest_and_no_staging(tmp_path, signum, code, name):
    store = tmp_path / "store"
    _put(store, b"one")
    _put(store, b"one")
    manifest = (store / "manifest.jsonl").read_bytes()
    proc, _ = _stalled(tmp_path, "lashctl.fsutil.write_all", ["--store", store, "manifest", "compact"])
    assert any(p.name.endswith(".part") for p in store.iterdir())
    proc.send_signal(signum)
    _assert_ended(proc, code, name, "; nothing half-written was left")
    assert (store / "manifest.jsonl").read_bytes() == manifest
    assert not [p.name for p in store.iterdir() if p.name.endswith(".part")]
    assert run(["--store", store, "--lock-timeout", "0", "manifest", "compact"]).returncode == 0


def test_a_hangup_ignored_by_the_caller_stays_ignored(tmp_path):
    """Started under ``nohup`` (SIGHUP ignored), a put is not ended by a hangup."""
    store = tmp_path / "store"
    proc = subprocess.Popen(
        [find_lashctl(), "--store", str(store), "put", "-s", "s", "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=base_env(),
        preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN),
    )
    proc.stdin.write(b"x" * 4096)
    proc.stdin.flush()
    _wait_for(lambda: any((store / "tmp").glob("put-*.part")), "a staged copy", proc)
    proc.send_signal(signal.SIGHUP)
    proc.stdin.write(b"y")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert len(out.split()) == 1
    assert read_log(store / "manifest.jsonl", strict=True).events[-1]["op"] == "intent"


@pytest.mark.parametrize("signum, code, name", SIGNALS, ids=SIGNAL_IDS)
def test_a_signal_during_a_put_to_s3_leaves_no_local_spool(tmp_path, s3_bucket, signum, code, name):
    import servers

    servers.need("obstore", "the S3 signal test")
    spool_parent = tmp_path / "tmpdir"
    spool_parent.mkdir()
    env = base_env(TMPDIR=str(spool_parent))
    args = ["--store", f"s3://{s3_bucket}/lash", "--manifest", str(tmp_path / "manifest.jsonl")]
    assert run([*args, "put", "-s", "s", "-"], input=b"first", env=env).returncode == 0
    proc = subprocess.Popen(
        [find_lashctl(), *args, "put", "-s", "s", "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    proc.stdin.write(os.urandom(2 * 1024 * 1024))
    proc.stdin.flush()
    spool = spool_parent / f"lashctl-s3-staging-{os.getuid()}"

    def spooled() -> bool:
        return any(p.stat().st_size > 0 for p in spool.glob("*.part"))

    _wait_for(spooled, "a spooled copy", proc)
    proc.send_signal(signum)
    _assert_ended(
        proc,
        code,
        name,
        ": 0 of 1 input stored and recorded; staged copies of the rest were "
        "removed, and reclaim sweeps anything else they left",
    )
    proc.stdin.close()
    assert list(spool.iterdir()) == []
