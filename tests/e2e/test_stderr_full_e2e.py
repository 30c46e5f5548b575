"""A standard error that cannot take a line (a cron log on a full disk)
loses the line, never the exit code."""

from __future__ import annotations

import os
import subprocess

import pytest

from reliability_helpers import base_env, find_lashctl

pytestmark = pytest.mark.e2e


def _run(args: list[str], cwd) -> int:
    with open("/dev/full", "w") as full:
        return subprocess.run(
            [find_lashctl(), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=full,
            env=base_env(),
            cwd=cwd,
            timeout=60,
        ).returncode


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_exit_codes_survive_a_full_standard_error(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"a\n")
    assert _run(["--store", "s", "put", "-s", "x", "a.txt"], tmp_path) == 0
    assert _run(["--store", "s", "ls"], tmp_path) == 0
    assert _run(["--store", "s", "get", "0" * 64], tmp_path) == 3
    assert _run(["--store", "s", "--bogus"], tmp_path) == 2
    (tmp_path / "s" / "manifest.jsonl").write_bytes(b"{not json\n")
    assert _run(["--store", "s", "ls"], tmp_path) == 65
