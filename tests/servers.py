"""Real servers for the backend tests: started as subprocesses, stopped at the end.

Each server runs on 127.0.0.1 on a free port and writes its output to a log
file in the test session's temporary directory (never to a pipe nobody
reads). When the server's package is not installed the fixture skips with one
line, unless ``LASHCTL_REQUIRE_SERVERS=1`` (CI) makes that a failure.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

REQUIRE_ENV = "LASHCTL_REQUIRE_SERVERS"

# Credentials moto accepts (it checks none unless told to); never real ones.
S3_TEST_KEY_ID = "lashctl-test-key"
S3_TEST_SECRET = "lashctl-test-secret"
S3_TEST_REGION = "us-east-1"

# Variables that would point a test at an operator's real account.
AWS_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_TOKEN",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ALLOW_HTTP",
    "AWS_PROFILE",
    "AWS_BUCKET",
    "AWS_BUCKET_NAME",
    "AWS_SKIP_SIGNATURE",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
)


def need(module: str, what: str) -> None:
    """Skip (or fail under LASHCTL_REQUIRE_SERVERS=1) when ``module`` is missing."""
    if importlib.util.find_spec(module) is not None:
        return
    reason = f"{what} needs the Python package {module!r} (pip install 'lashctl[test]')"
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason}; {REQUIRE_ENV}=1 requires it", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            response.read()
        return True
    except urllib.error.HTTPError:
        return True  # it answered, even if with an error status
    except OSError:
        return False


LOGS: dict[str, Path] = {}  # endpoint URL -> the server's log (one access line per request)
_REQUEST = re.compile(r'"(?:\x1b\[[0-9;]*m)?([A-Z]+) /([^ /?"]+)([^ "]*) HTTP/[0-9.]+(?:\x1b\[[0-9;]*m)?" (\d{3})')


def requests_to(endpoint: str, bucket: str) -> list[tuple[str, str, int]]:
    """(method, path after the bucket, status) of each request the moto server at
    ``endpoint`` has logged for ``bucket`` so far, in order: what a command sent."""
    # The server writes a request's line just after sending its answer: wait
    # until the log has stopped growing for a moment.
    size, deadline = -1, time.monotonic() + 5
    while (now := LOGS[endpoint].stat().st_size) != size and time.monotonic() < deadline:
        size = now
        time.sleep(0.2)
    found = []
    for line in LOGS[endpoint].read_text(errors="replace").splitlines():
        match = _REQUEST.search(line)
        if match and match.group(2) == bucket:
            found.append((match.group(1), match.group(3), int(match.group(4))))
    return found


@contextlib.contextmanager
def moto_server(log_dir: Path, env: dict[str, str] | None = None, timeout: float = 30.0) -> Iterator[str]:
    """Run ``moto.server`` on a free port; yield its endpoint URL; stop it at the end.

    ``env`` adds variables to the server's environment (for instance
    ``INITIAL_NO_AUTH_ACTION_COUNT=0``, which makes moto check credentials).
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = log_dir / f"moto-{port}.log"
    LOGS[url] = log_path
    server_env = {k: v for k, v in os.environ.items() if k not in AWS_ENV}
    server_env.update(env or {})
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=server_env,
        )
    try:
        deadline = time.monotonic() + timeout
        while not _answers(url + "/moto-api/"):
            if proc.poll() is not None:
                raise RuntimeError(f"moto server exited with {proc.returncode}; see {log_path}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"moto server did not answer within {timeout:.0f}s; see {log_path}")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def s3_env(monkeypatch: pytest.MonkeyPatch, endpoint: str) -> None:
    """Point obstore (and boto3) at ``endpoint`` with test credentials, the AWS way."""
    for name in AWS_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", S3_TEST_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3_TEST_SECRET)
    monkeypatch.setenv("AWS_REGION", S3_TEST_REGION)
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_ALLOW_HTTP", "true")
    # boto3 must never read an operator's ~/.aws files in a test.
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)


def s3_client(endpoint: str):
    """A boto3 client for test set-up only (creating buckets, planting objects)."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=S3_TEST_REGION,
        aws_access_key_id=S3_TEST_KEY_ID,
        aws_secret_access_key=S3_TEST_SECRET,
    )


_bucket_counter = 0


def new_bucket(endpoint: str, stem: str = "lashctl-test") -> str:
    """Create a fresh, empty bucket and return its name."""
    global _bucket_counter
    _bucket_counter += 1
    name = f"{stem}-{os.getpid()}-{_bucket_counter}"
    s3_client(endpoint).create_bucket(Bucket=name)
    return name
