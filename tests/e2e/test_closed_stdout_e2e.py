"""A standard output whose reader has gone (``| head`` that exited, a closed
pipe) is an I/O error: exit 1 and one line on stderr saying so (README,
"Exit codes"), whatever the command and its format."""

from __future__ import annotations

import os
import subprocess

import pytest

from reliability_helpers import base_env, find_lashctl

pytestmark = pytest.mark.e2e


def _run_into_a_closed_pipe(args: list[str], cwd) -> subprocess.CompletedProcess:
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first write
    try:
        return subprocess.run(
            [find_lashctl(), *args],
            stdin=subprocess.DEVNULL,
            stdout=write_end,
            stderr=subprocess.PIPE,
            env=base_env(),
            cwd=cwd,
            timeout=60,
        )
    finally:
        os.close(write_end)


@pytest.fixture
def store(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"a\n")
    done = subprocess.run(
        [find_lashctl(), "--store", "s", "put", "-s", "x", "a.txt"],
        capture_output=True,
        env=base_env(),
        cwd=tmp_path,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return tmp_path


@pytest.mark.parametrize(
    "args",
    [
        ["list-uncommitted"],
        ["--json", "list-uncommitted"],
        ["ls"],
        ["--json", "ls"],
        ["manifest", "log"],
        ["stats"],
        ["--json", "stats"],
        ["--json", "verify"],
    ],
)
def test_a_reader_gone_is_exit_1_with_one_line(store, args):
    done = _run_into_a_closed_pipe(["--store", "s", *args], store)
    assert done.returncode == 1, (args, done.returncode, done.stderr)
    lines = done.stderr.decode().splitlines()
    assert [line for line in lines if "standard output" in line] and lines[-1].startswith("lashctl: error:"), lines
    assert "Traceback" not in done.stderr.decode() and "Exception ignored" not in done.stderr.decode()
