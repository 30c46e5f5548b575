"""End to end: contrib/systemd's service and timer for the nightly sweep.

``systemd-analyze verify`` (Debian's ``systemd`` package) checks both units,
on a copy of the service whose ``ExecStart`` names the lashctl under test
(verify requires the program to exist); ``--man=no --generators=no`` let it
run where systemd is not PID 1 (a container). Without ``systemd-analyze``
that test skips, unless ``LASHCTL_REQUIRE_SERVERS=1`` (CI) makes it a
failure. The service's own command line then runs, with its environment,
against a real store.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import LASHCTL_ENV
from reliability_helpers import find_lashctl

pytestmark = pytest.mark.e2e

LASHCTL = find_lashctl()
UNITS = Path(__file__).resolve().parents[2] / "contrib" / "systemd"
SERVICE = UNITS / "lashctl-reclaim.service"
TIMER = UNITS / "lashctl-reclaim.timer"
REQUIRE_ENV = "LASHCTL_REQUIRE_SERVERS"


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found:
        return found
    reason = "systemd-analyze is not installed (apt-get install systemd)"
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason}; {REQUIRE_ENV}=1 requires it", pytrace=False)
    pytest.skip(reason)


def settings(unit: Path) -> dict[str, list[str]]:
    """Every ``Key=value`` of a unit file, by key, in order (keys may repeat)."""
    found: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        found.setdefault(key.strip(), []).append(value.strip())
    return found


def exec_start(unit: Path) -> list[str]:
    (line,) = settings(unit)["ExecStart"]
    return shlex.split(line)


def verify(tmp_path: Path, service_text: str) -> subprocess.CompletedProcess:
    (tmp_path / SERVICE.name).write_text(service_text)
    shutil.copy(TIMER, tmp_path / TIMER.name)
    return subprocess.run(
        [
            systemd_analyze(),
            "verify",
            "--man=no",
            "--generators=no",
            str(tmp_path / SERVICE.name),
            str(tmp_path / TIMER.name),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )


def test_systemd_analyze_verifies_the_service_and_timer(tmp_path):
    program = exec_start(SERVICE)[0]
    assert program == "/usr/local/bin/lashctl", program  # as README's cron line
    text = SERVICE.read_text().replace(f"ExecStart={program} ", f"ExecStart={LASHCTL} ")
    done = verify(tmp_path, text)
    # verify exits 0 for an unknown key or a bad value ("ignoring"): any
    # output at all is a finding.
    assert done.returncode == 0 and not done.stdout.strip() and not done.stderr.strip(), (
        done.returncode,
        done.stdout,
        done.stderr,
    )


def test_systemd_analyze_would_catch_a_broken_unit(tmp_path):
    """The check above is not vacuous: a misspelt value is reported."""
    text = SERVICE.read_text().replace("IOSchedulingClass=idle", "IOSchedulingClass=idel")
    text = text.replace("ExecStart=/usr/local/bin/lashctl ", f"ExecStart={LASHCTL} ")
    done = verify(tmp_path, text)
    assert "IO scheduling class" in done.stdout + done.stderr, (done.stdout, done.stderr)


def test_the_service_runs_in_the_background_and_sandboxed():
    unit = settings(SERVICE)
    for key, value in {
        "Type": "oneshot",
        "Nice": "10",
        "IOSchedulingClass": "idle",
        "ProtectSystem": "strict",
        "PrivateTmp": "yes",
        "NoNewPrivileges": "yes",
        "User": "lash",
    }.items():
        assert unit.get(key) == [value], (key, unit.get(key))
    assert "TimeoutStopSec" in unit
    assert "143" in unit["SuccessExitStatus"][0]  # SIGTERM's orderly stop is not a failure
    environment = dict(v.split("=", 1) for v in unit["Environment"])
    writable = unit["ReadWritePaths"][0].split()
    # The store and the metrics directory are the only places it writes
    # (the cache has a CacheDirectory of its own).
    assert environment["LASHCTL_STORE"] in writable and environment["LASHCTL_METRICS_FILE"] in writable
    assert environment["LASHCTL_CACHE_DIR"] == "%C/lashctl" and unit["CacheDirectory"] == ["lashctl"]
    assert exec_start(SERVICE)[1:] == ["--quiet", "--json", "reclaim", "--older-than", "24h"]
    timer = settings(TIMER)
    assert timer["Persistent"] == ["true"] and timer["OnCalendar"], timer
    assert timer["WantedBy"] == ["timers.target"]


def test_the_services_command_sweeps_a_store_and_writes_its_metrics(tmp_path):
    """ExecStart with the unit's environment, the store and metrics directory
    moved under tmp_path: exit 0, a JSON report, a metrics file."""
    pytest.importorskip("prometheus_client")
    unit = settings(SERVICE)
    store, metrics, cache = tmp_path / "store", tmp_path / "metrics", tmp_path / "cache"
    metrics.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in LASHCTL_ENV and not k.startswith("LASHCTL_")}
    env.update(dict(v.split("=", 1) for v in unit["Environment"]))
    env.update(LASHCTL_STORE=str(store), LASHCTL_METRICS_FILE=str(metrics), LASHCTL_CACHE_DIR=str(cache))
    put = subprocess.run(
        [LASHCTL, "put", "-s", "s1", "-"], input=b"an orphan", env=env, capture_output=True, timeout=60
    )
    assert put.returncode == 0, put.stderr
    argv = [LASHCTL, *exec_start(SERVICE)[1:]]
    done = subprocess.run(argv, env=env, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["dry_run"] is False and report["scanned_intents"] == 0  # a fresh upload is spared
    assert (metrics / "lashctl_reclaim.prom").read_text().count("lashctl_run_success 1") == 1


def test_readmes_cron_line_and_unit_excerpt_are_the_service():
    """README shows the cron line and an excerpt of the service side by side:
    every excerpt line is in the unit, and the cron line runs the same command
    with the same store and metrics directory."""
    readme = (UNITS.parents[1] / "README.md").read_text()
    (excerpt,) = re.findall(r"^```ini\n(.*?)^```", readme, re.MULTILINE | re.DOTALL)
    unit_lines = {line.strip() for line in SERVICE.read_text().splitlines()}
    for line in excerpt.splitlines():
        if line and not line.startswith("#"):
            assert line in unit_lines, line
    (cron,) = re.findall(r"^\d+ \d+ \* \* \*  (.*lashctl-reclaim\.jsonl.*)$", readme, re.MULTILINE)
    words = shlex.split(cron)
    program = words.index("/usr/local/bin/lashctl")
    environment = dict(w.split("=", 1) for w in words[:program])
    unit_environment = dict(v.split("=", 1) for v in settings(SERVICE)["Environment"])
    for name in ("LASHCTL_STORE", "LASHCTL_METRICS_FILE"):
        assert environment[name] == unit_environment[name], name
    assert words[program : program + 6] == exec_start(SERVICE)
