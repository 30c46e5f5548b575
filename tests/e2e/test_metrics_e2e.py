"""End to end: the metrics files the installed ``lashctl`` writes, read by the
real Prometheus tools: ``promtool check metrics`` on every file, ``promtool
check rules`` and ``promtool test rules`` on contrib/prometheus, and a
node_exporter whose textfile collector serves them after a real sweep.

Without ``promtool`` or ``prometheus-node-exporter`` (Debian packages
``prometheus`` and ``prometheus-node-exporter``) these tests skip, unless
``LASHCTL_REQUIRE_SERVERS=1`` (CI) makes that a failure.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import LASHCTL_ENV, blob_path, land_at_intents, sha
from reliability_helpers import find_lashctl

pytestmark = pytest.mark.e2e

LASHCTL = find_lashctl()
RULES = Path(__file__).resolve().parents[2] / "contrib" / "prometheus"
REQUIRE_ENV = "LASHCTL_REQUIRE_SERVERS"
DAY = 86_400_000


def tool(*names: str) -> str:
    """The path of the first of ``names`` on PATH; skip (or fail on CI) without one."""
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    reason = f"{names[0]} is not installed (apt-get install prometheus prometheus-node-exporter)"
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason}; {REQUIRE_ENV}=1 requires it", pytrace=False)
    pytest.skip(reason)


def env(**extra: str) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if k not in LASHCTL_ENV and k != "LASHCTL_METRICS_FILE"}
    e.update(extra)
    return e


def run(store: Path, *args: str, input: bytes = b"", environ: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(LASHCTL), "--store", str(store), *args], input=input, capture_output=True, env=environ or env(), timeout=60
    )


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, (proc.returncode, proc.stdout[:2000], proc.stderr.decode())
    return proc


def promtool_check_metrics(path: Path) -> None:
    text = path.read_bytes()
    proc = subprocess.run([tool("promtool"), "check", "metrics"], input=text, capture_output=True, timeout=60)
    # promtool prints its lint findings (a counter without _total, a unit
    # it does not know...) and exits 3 for them; a parse error exits 1.
    assert proc.returncode == 0 and not proc.stdout.strip() and not proc.stderr.strip(), (
        proc.returncode,
        proc.stdout.decode(),
        proc.stderr.decode(),
        text.decode(),
    )


@pytest.fixture(scope="module")
def aged(tmp_path_factory) -> Path:
    """Two aged orphans, a committed blob, and an aged intent on it from another session."""
    root = tmp_path_factory.mktemp("aged") / "store"
    for data, session in ((b"orphan one", "s1"), (b"orphan two", "s1"), (b"committed", "s1"), (b"committed", "s2")):
        ok(run(root, "put", "-s", session, "-", input=data))
    ok(run(root, "commit", "-s", "s2", sha(b"committed")))
    manifest = root / "manifest.jsonl"
    events = [json.loads(line) for line in manifest.read_text("utf-8").splitlines()]
    then = int(time.time() * 1000) - 2 * DAY
    for event in events:
        if event.get("op") == "intent":
            event["intent_at_epoch_ms"] = then
    manifest.write_text("".join(json.dumps(e) + "\n" for e in events), "utf-8")
    land_at_intents(root, events)
    return root


@pytest.fixture
def store(aged: Path, tmp_path: Path) -> Path:
    """A copy of the aged store of one's own (modification times kept)."""
    return Path(shutil.copytree(aged, tmp_path / "store", symlinks=True))


# -- promtool check metrics: every file lashctl writes ----------------------------------
def _damage(store: Path) -> None:
    path = blob_path(store, sha(b"committed"))
    os.chmod(path, 0o644)
    path.write_bytes(b"not what it was")


SCENARIOS = {
    # name: (setup, args, exit code)
    "reclaim": (None, ["reclaim"], 0),
    "reclaim-dry-run": (None, ["reclaim", "--dry-run"], 0),
    "reclaim-usage-error": (None, ["reclaim", "--older-than", "soon"], 2),
    "reclaim-refused": (None, ["reclaim", "--older-than", "1s"], 4),
    "gc": (None, ["gc"], 0),
    "verify": (None, ["verify"], 0),
    "verify-errors": (_damage, ["verify"], 65),
    "stats": (None, ["stats"], 0),
    "delete": (None, ["delete", "--force", sha(b"committed")], 0),
    "delete-refused": (None, ["delete", sha(b"committed")], 4),
}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_promtool_accepts_every_file_lashctl_writes(store, tmp_path, scenario):
    tool("promtool")
    setup, args, code = SCENARIOS[scenario]
    if setup is not None:
        setup(store)
    out = tmp_path / f"{scenario}.prom"
    proc = run(store, *args, "--metrics-file", str(out))
    assert proc.returncode == code, proc.stderr.decode()
    text = out.read_text("utf-8")
    assert f'lashctl_run_exit_code{{command="{args[0]}"' in text
    promtool_check_metrics(out)


def test_promtool_accepts_the_file_of_a_sweep_stopped_waiting_for_the_lock(store, tmp_path):
    tool("promtool")
    lock = os.open(store / "manifest.jsonl.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        timed_out = tmp_path / "locked.prom"
        proc = run(store, "--lock-timeout", "0.2", "reclaim", "--metrics-file", str(timed_out))
        assert proc.returncode == 75, proc.stderr.decode()

        stopped = tmp_path / "stopped.prom"
        waiting = subprocess.Popen(
            [str(LASHCTL), "--store", str(store), "reclaim", "--metrics-file", str(stopped)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env(),
        )
        deadline = time.monotonic() + 30
        while b"waiting for the lock" not in (line := waiting.stderr.readline()) and time.monotonic() < deadline:
            assert line, "the sweep ended before it waited for the lock"
        waiting.send_signal(signal.SIGTERM)
        assert waiting.wait(timeout=30) == 143
        waiting.stderr.close()
    finally:
        os.close(lock)
    for path, code in ((timed_out, 75), (stopped, 143)):
        assert (
            f'lashctl_run_exit_code{{command="reclaim",manifest_kind="jsonl",store="{store}"}} {code}.0'
            in path.read_text("utf-8")
        )
        promtool_check_metrics(path)
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix != "" and p.name != "store") == [
        "locked.prom",
        "stopped.prom",
    ]  # no staging file left beside them


# -- the alert rules -------------------------------------------------------------------
def test_promtool_checks_the_rules():
    proc = subprocess.run(
        [tool("promtool"), "check", "rules", str(RULES / "lashctl.rules.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: 6 rules found" in proc.stdout


def test_promtool_runs_the_rules_unit_tests():
    proc = subprocess.run(
        [tool("promtool"), "test", "rules", "lashctl.rules.test.yml"],
        cwd=RULES,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_every_alert_has_a_unit_test():
    import re

    rules = re.findall(r"^\s*- alert: (\w+)$", (RULES / "lashctl.rules.yml").read_text("utf-8"), re.M)
    tested = set(re.findall(r"^\s*alertname: (\w+)$", (RULES / "lashctl.rules.test.yml").read_text("utf-8"), re.M))
    assert rules and set(rules) == tested


# -- node_exporter serves them ---------------------------------------------------------
def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _scrape(url: str, deadline: float) -> str:
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.read().decode("utf-8")
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_node_exporter_serves_the_metrics_of_a_real_sweep(store, tmp_path):
    exporter = tool("prometheus-node-exporter", "node_exporter")
    textfiles = tmp_path / "textfile"
    textfiles.mkdir()
    # Every command writes into the collector's directory (a file each): node
    # exporter must merge them without a conflict of help or type.
    ok(run(store, "stats", environ=env(LASHCTL_METRICS_FILE=str(textfiles))))
    ok(run(store, "verify", environ=env(LASHCTL_METRICS_FILE=str(textfiles))))
    ok(run(store, "reclaim", "--metrics-file", str(textfiles / "reclaim.prom")))
    ok(run(store, "gc", "--dry-run", environ=env(LASHCTL_METRICS_FILE=str(textfiles))))

    port = _free_port()
    log = (tmp_path / "node_exporter.log").open("wb")
    server = subprocess.Popen(
        [
            exporter,
            f"--web.listen-address=127.0.0.1:{port}",
            "--collector.disable-defaults",
            "--collector.textfile",
            f"--collector.textfile.directory={textfiles}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        text = _scrape(f"http://127.0.0.1:{port}/metrics", time.monotonic() + 30)
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
    labels = f'command="reclaim",manifest_kind="jsonl",store="{store}"'
    assert f"lashctl_deleted_blobs{{{labels}}} 2" in text, text
    assert f"lashctl_freed_bytes{{{labels}}} {len(b'orphan one') + len(b'orphan two')}" in text
    assert f"lashctl_reclaim_released_rows{{{labels}}} 1" in text
    assert f"lashctl_run_success{{{labels}}} 1" in text
    assert f'lashctl_store_reclaimable_bytes{{command="stats",manifest_kind="jsonl",store="{store}"}} 20' in text
    assert f'lashctl_verify_errors{{command="verify",manifest_kind="jsonl",store="{store}"}} 0' in text
    assert f'lashctl_run_dry_run{{command="gc",manifest_kind="jsonl",store="{store}"}} 1' in text
    assert "node_textfile_scrape_error 0" in text, (tmp_path / "node_exporter.log").read_text()
    assert "# HELP lashctl_run_success 1 if the run exited 0, else 0." in text


# -- what the installed tool refuses, and what it never fails on -----------------------
def test_the_installed_tool_never_replaces_what_is_not_a_regular_file(store, tmp_path):
    fifo = tmp_path / "fifo.prom"
    os.mkfifo(fifo)
    link = tmp_path / "link.prom"
    link.symlink_to(tmp_path / "target.prom")
    for path, what in ((fifo, "a FIFO"), (link, "a symlink")):
        proc = run(store, "reclaim", "--dry-run", "--metrics-file", str(path))
        assert proc.returncode == 2, proc.stderr.decode()
        assert proc.stderr.decode().splitlines() == [
            f"lashctl: error: --metrics-file {path}: {path} is {what}, not a regular file: refusing to replace it"
        ]
    assert fifo.is_fifo() and link.is_symlink() and not (tmp_path / "target.prom").exists()


def test_the_installed_tool_writes_the_file_of_a_store_whose_path_is_not_utf8(tmp_path):
    root = Path(os.fsdecode(bytes(tmp_path) + b"/st\xffore"))
    ok(run(root, "put", "-s", "s1", "-", input=b"gone"))
    ok(run(root, "commit", "-s", "s1", sha(b"gone")))
    out = tmp_path / "delete.prom"
    proc = run(root, "delete", "--force", sha(b"gone"), "--metrics-file", str(out))
    assert proc.returncode == 0 and b"Traceback" not in proc.stderr, proc.stderr.decode()
    text = out.read_text("utf-8")
    assert f'store="{tmp_path}/st\\\\xffore"' in text
    assert (
        f'lashctl_deleted_blobs{{command="delete",manifest_kind="jsonl",store="{tmp_path}/st\\\\xffore"}} 1.0' in text
    )
    promtool_check_metrics(out)
