"""A throwaway PostgreSQL server for the backend tests.

Started from the binaries on the machine (``pg_config --bindir``): ``initdb``
in a temporary directory, then ``pg_ctl start`` listening on a unix socket in
that directory and on 127.0.0.1 at a free port. The socket is trusted; TCP
asks for a scram-sha-256 password (so a wrong one can be tested). ``initdb``
refuses to run as root: as root the server runs as the ``postgres`` user.

If the binaries are missing the tests that need the server are skipped, unless
``LASHCTL_REQUIRE_SERVERS=1`` (CI), which makes that a failure.
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest

ENV_REQUIRE = "LASHCTL_REQUIRE_SERVERS"
SUPERUSER = "postgres"
PASSWORD_USER, PASSWORD = "lashctl_pw", "s3cret-pw"


@dataclass(frozen=True)
class PgServer:
    socket_dir: Path
    port: int

    def url(self, dbname: str = "postgres") -> str:
        """A URL over the unix socket, as the superuser (trusted)."""
        return f"postgresql://{SUPERUSER}@/{dbname}?host={quote(str(self.socket_dir), safe='')}&port={self.port}"

    def tcp_url(self, dbname: str = "postgres", user: str = PASSWORD_USER, password: str = PASSWORD) -> str:
        """A URL over TCP with a password (scram-sha-256)."""
        return f"postgresql://{user}:{quote(password, safe='')}@127.0.0.1:{self.port}/{dbname}"


def unavailable(reason: str) -> None:
    """Skip, or fail when the servers are required."""
    if os.environ.get(ENV_REQUIRE) == "1":
        pytest.fail(f"{reason} (and {ENV_REQUIRE}=1)")
    pytest.skip(reason)


def _bindir() -> Path | None:
    pg_config = shutil.which("pg_config")
    if pg_config is None:
        return None
    try:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    bindir = Path(out.stdout.strip())
    return bindir if (bindir / "initdb").exists() and (bindir / "pg_ctl").exists() else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_server_user(argv: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", SUPERUSER, "--", *argv]
    return argv


def start() -> tuple[PgServer, callable]:
    """Start a server; returns it and a function that stops it and removes its files."""
    bindir = _bindir()
    if bindir is None:
        unavailable("PostgreSQL server binaries not found (pg_config --bindir)")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        unavailable("running as root and runuser is missing: initdb cannot run")
    root = Path(tempfile.mkdtemp(prefix="lashpg"))  # short: a socket path is limited to ~100 bytes
    data, log = root / "data", root / "server.log"
    if os.geteuid() == 0:
        shutil.chown(root, SUPERUSER, SUPERUSER)
    pwfile = root / "pw"
    pwfile.write_text("unused-superuser-pw\n")
    if os.geteuid() == 0:
        shutil.chown(pwfile, SUPERUSER, SUPERUSER)
    run = dict(stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)
    proc = subprocess.run(
        _as_server_user(
            [
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                SUPERUSER,
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                f"--pwfile={pwfile}",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            ]
        ),
        **run,
    )
    if proc.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"initdb failed: {proc.stderr.decode(errors='replace').strip()[-500:]}")
    port = _free_port()
    options = (
        f"-k {root} -c listen_addresses=127.0.0.1 -p {port} -c fsync=off"
        " -c synchronous_commit=off -c full_page_writes=off -c max_connections=50"
    )
    # The server inherits pg_ctl's stdout: it must go to the log file (-l), never a pipe.
    proc = subprocess.run(
        _as_server_user(
            [
                str(bindir / "pg_ctl"),
                "-D",
                str(data),
                "-l",
                str(log),
                "-w",
                "-t",
                "60",
                "-o",
                options,
                "start",
            ]
        ),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=120,
    )
    server = PgServer(root, port)

    stopped = []

    def stop() -> None:
        if stopped:
            return
        stopped.append(True)
        subprocess.run(
            _as_server_user([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=60,
        )
        shutil.rmtree(root, ignore_errors=True)

    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-800:] if log.exists() else ""
        stop()
        pytest.fail(f"pg_ctl start failed: {tail}")
    atexit.register(stop)  # also when the session ends without its teardown
    _bootstrap(server)
    return server, stop


def _bootstrap(server: PgServer) -> None:
    import psycopg

    deadline = time.monotonic() + 30
    while True:
        try:
            conn = psycopg.connect(server.url(), autocommit=True)
            break
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    with conn:
        conn.execute(f"CREATE ROLE {PASSWORD_USER} LOGIN SUPERUSER PASSWORD '{PASSWORD}'")


def fresh_database(server: PgServer, name: str) -> str:
    """Create an empty database ``name`` (dropping any old one); its socket URL."""
    import psycopg

    with psycopg.connect(server.url(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
    return server.url(name)
