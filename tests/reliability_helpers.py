"""Shared helpers for the reliability and security suites.

(test_crash, test_concurrency, test_hostile, test_model, test_fuzz)

Everything here reads the store and the manifest *independently* of lashctl's
own reader where that matters (a tolerant JSON-lines parser and a reference
fold of the README's manifest rules), so that a bug in lashctl's reader cannot hide a bug in
its writers.

``LASHCTL_LONG_TESTS=1`` turns on the long variants (more trials, longer
runs, more hypothesis examples); ``scaled(short, long)`` picks the number.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import blob_path, land_at_intents, sha, sidecar_path  # noqa: F401  (re-exported)

LONG = os.environ.get("LASHCTL_LONG_TESTS", "").strip() not in ("", "0", "false", "no")

# Environment variables that would leak an operator's settings into a test.
LASHCTL_ENV = (
    "LASHCTL_STORE",
    "LASHCTL_MANIFEST",
    "LASHCTL_SESSION",
    "LASHCTL_LOCK_TIMEOUT",
    "LASHCTL_DEBUG",
    "LASHCTL_PROCESS_REGISTRY",
)

HEX64 = re.compile(r"[0-9a-f]{64}")
MAX_EPOCH_MS = 253_402_300_799_999
EXIT_CODES = {0, 1, 2, 3, 4, 5, 65, 75}


def scaled(short: int, long: int) -> int:
    return long if LONG else short


def report(line: str) -> None:
    """A summary line for the person running the suite (shown with -s or in the log)."""
    sys.__stderr__.write(f"\n[reliability] {line}\n")
    sys.__stderr__.flush()
    log = os.environ.get("LASHCTL_RELIABILITY_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")


def fast_tmpdir(prefix: str) -> Path:
    """A scratch directory, on tmpfs when there is one (fsync is cheap there)."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix=prefix, dir=base))


# -- the installed console script ------------------------------------------------
def find_lashctl() -> str:
    # Another build of the command (e.g. an older one, to see a new test fail on it).
    if os.environ.get("LASHCTL_TEST_BIN"):
        return os.environ["LASHCTL_TEST_BIN"]
    beside = Path(sys.executable).parent / "lashctl"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("lashctl")
    if found is None:
        pytest.skip("the lashctl console script is not installed")
    return found


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in LASHCTL_ENV}
    env.update({"COLUMNS": "80", "NO_COLOR": "1"})
    env.update(extra)
    return env


def run(
    args: list, input: bytes | None = None, timeout: float = 60, env: dict | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [find_lashctl(), *[os.fsencode(a) if isinstance(a, (str, bytes)) else str(a) for a in args]],
        input=input if input is not None else b"",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env if env is not None else base_env(),
        cwd=cwd,
        timeout=timeout,
    )


def file_sha(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def one_line_error(stderr: bytes) -> str:
    """The error line of a failed run; asserts it is one clean line, no traceback."""
    text = stderr.decode("utf-8", "replace")
    assert "Traceback" not in text, text
    errors = [l for l in text.splitlines() if l.startswith("lashctl: error:")]
    assert len(errors) == 1, f"expected exactly one error line on stderr, got: {text!r}"
    assert "unexpected" not in errors[0], f"an expected failure leaked through the bug funnel: {errors[0]!r}"
    return errors[0]


# -- reading the manifest independently -------------------------------------------
@dataclass
class RawLog:
    events: list[dict]
    torn_tail: bool
    lines: list[bytes]  # complete lines (without their newline)


def read_log(path: Path, strict: bool = False) -> RawLog:
    """Parse a manifest: JSON per line, a torn unterminated final line tolerated.

    With ``strict`` every line must end in a newline and parse.
    """
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return RawLog([], False, [])
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    parts = data.split(b"\n")
    tail = parts.pop()  # b"" when the file ends with a newline
    events, lines = [], []
    for number, raw in enumerate(parts, 1):
        body = raw[:-1] if raw.endswith(b"\r") else raw
        if not body.strip():
            continue
        try:
            events.append(json.loads(body.decode("utf-8")))
        except Exception as exc:
            raise AssertionError(f"{path}:{number}: a complete line does not parse: {body[:200]!r}") from exc
        lines.append(body)
    torn = False
    if tail.strip():
        try:
            events.append(json.loads(tail.decode("utf-8")))
            lines.append(tail)
            if strict:
                raise AssertionError(f"{path}: final line lacks its newline")
        except (UnicodeDecodeError, json.JSONDecodeError):
            if strict:
                raise AssertionError(f"{path}: torn final line {tail[:200]!r}")
            torn = True
    return RawLog(events, torn, lines)


def fold(events: list[dict]) -> dict[tuple[str, str], dict]:
    """The reference fold of the README's manifest rules: (session, id) -> row."""
    rows: dict[tuple[str, str], dict] = {}
    for event in events:
        op = event.get("op")
        if op == "header":
            continue
        key = (event["session_id"], event["attachment_id"])
        row = rows.get(key)
        if op == "intent":
            if row is None:
                rows[key] = {
                    "canonical_uri": event["canonical_uri"],
                    "intent_at_epoch_ms": event["intent_at_epoch_ms"],
                    "committed_at_epoch_ms": None,
                }
            elif row["committed_at_epoch_ms"] is None:
                row["intent_at_epoch_ms"] = max(row["intent_at_epoch_ms"], event["intent_at_epoch_ms"])
        elif op == "commit":
            if row is not None and row["committed_at_epoch_ms"] is None:
                row["committed_at_epoch_ms"] = event["committed_at_epoch_ms"]
        elif op == "forget":
            rows.pop(key, None)
        else:
            raise AssertionError(f"unknown op in manifest: {event!r}")
    return rows


def fold_file(path: Path) -> dict[tuple[str, str], dict]:
    return fold(read_log(path).events)


def keys_and_commits(rows: dict) -> dict:
    """A fold without intent times (a re-put refreshes them legitimately)."""
    return {k: v["committed_at_epoch_ms"] is not None for k, v in rows.items()}


def state_rows(state) -> dict[tuple[str, str], dict]:
    """lashctl's ManifestState in the reference fold's shape."""
    return {
        k: {
            "canonical_uri": r.canonical_uri,
            "intent_at_epoch_ms": r.intent_at_epoch_ms,
            "committed_at_epoch_ms": r.committed_at_epoch_ms,
        }
        for k, r in state.rows.items()
    }


# -- the blob side -----------------------------------------------------------------
def blob_files(root: Path) -> dict[str, Path]:
    """Every entry at a blob path ``sha256/xx/<64 hex>`` (sidecars and litter excluded)."""
    out: dict[str, Path] = {}
    objects = Path(root) / "sha256"
    if not objects.is_dir():
        return out
    for shard in objects.iterdir():
        if not shard.is_dir() or len(shard.name) != 2:
            continue
        for entry in shard.iterdir():
            if HEX64.fullmatch(entry.name) and entry.name[:2] == shard.name:
                out[entry.name] = entry
    return out


def blob_inodes(root: Path) -> dict[str, tuple[int, int]]:
    return {i: (p.lstat().st_ino, p.lstat().st_size) for i, p in blob_files(root).items()}


def staging_litter(root: Path) -> list[Path]:
    tmp = Path(root) / "tmp"
    return sorted(tmp.iterdir()) if tmp.is_dir() else []


def check_store(root: Path, manifest: Path | None = None, *, unreferenced_ok: bool = False) -> dict:
    """The invariants a crash or a race must never break. Returns the fold.

    - every file at a blob path is a regular file hashing to its name;
    - every blob present has a row in the manifest (write-ahead), unless
      ``unreferenced_ok`` (a sweep forgets rows before it deletes bytes, so
      one that dies between the two leaves bytes without rows, for gc);
    - every committed row's blob is present.
    """
    root = Path(root)
    manifest = manifest or root / "manifest.jsonl"
    rows = fold_file(manifest)
    ids_with_rows = {aid for (_s, aid) in rows}
    for attachment_id, path in blob_files(root).items():
        st = path.lstat()
        assert path.is_file() and not path.is_symlink(), f"{path} is not a regular file"
        assert file_sha(path) == attachment_id, f"{path} does not hash to its name (torn or foreign bytes)"
        assert unreferenced_ok or attachment_id in ids_with_rows, (
            f"blob {attachment_id} ({st.st_size} bytes) is present with no manifest row: "
            "bytes landed before their intent was durable"
        )
    for (session, attachment_id), row in rows.items():
        if row["committed_at_epoch_ms"] is not None:
            path = blob_path(root, attachment_id)
            assert path.is_file(), f"committed blob {attachment_id} (session {session}) is missing"
    return rows


def snapshot_tree(path: Path) -> dict[str, tuple]:
    """Every entry under ``path``: type, size, content hash (files), link target."""
    out = {}
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return out
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            if p.is_symlink():
                out[str(p)] = ("link", os.readlink(p))
            elif p.is_dir():
                out[str(p)] = ("dir",)
            elif p.is_file():
                out[str(p)] = ("file", st.st_size, file_sha(p))
            else:
                out[str(p)] = ("other", st.st_mode)
    return out


def write_manifest(path: Path, events: list[dict], header: bool = True) -> None:
    lines = []
    if header:
        lines.append({"op": "header", "format": "lashctl-manifest", "version": 1})
    lines.extend(events)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(b"".join(json.dumps(e, separators=(",", ":")).encode() + b"\n" for e in lines))
    land_at_intents(Path(path).parent, events)


def intent(attachment_id: str, session: str, at: int, uri: str | None = None) -> dict:
    return {
        "op": "intent",
        "attachment_id": attachment_id,
        "session_id": session,
        "canonical_uri": uri if uri is not None else "sha256:" + attachment_id,
        "intent_at_epoch_ms": at,
    }


def commit(attachment_id: str, session: str, at: int) -> dict:
    return {"op": "commit", "attachment_id": attachment_id, "session_id": session, "committed_at_epoch_ms": at}


def plant_blob(root: Path, data: bytes) -> str:
    """Write a blob (and no sidecar) directly, as lash-core would leave one."""
    attachment_id = sha(data)
    path = blob_path(root, attachment_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return attachment_id


@pytest.fixture
def shm_path():
    """Like ``tmp_path`` but on tmpfs when available: fsync-heavy loops stay fast.

    (A SIGKILL is a process crash, not a power cut: tmpfs keeps the semantics
    these suites test.)
    """
    path = fast_tmpdir("lashctl-rel-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def shm_module_path():
    path = fast_tmpdir("lashctl-relmod-")
    yield path
    shutil.rmtree(path, ignore_errors=True)
