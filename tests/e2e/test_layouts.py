"""The two blob layouts (README, "Two layouts"): lash-core 0.1.0-alpha.85
writes a sidecar beside every blob; later lash releases write none. A bare
store is read without calling its blobs broken, and lashctl never adds
sidecars to it unless told the store keeps them."""

import json
import os
import subprocess
from pathlib import Path

import pytest
from conftest import sha
from reliability_helpers import find_lashctl

pytestmark = pytest.mark.e2e

LASHCTL = find_lashctl()


def run(store: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([LASHCTL, "--store", str(store), *args], capture_output=True, text=True, timeout=60)


def bare_store(root: Path, n: int) -> list[str]:
    """A store as a later lash release writes it: blobs, no sidecars, a manifest."""
    ids = []
    lines = ['{"op":"header","format":"lashctl-manifest","version":1}']
    for i in range(n):
        data = f"blob number {i}".encode()
        aid = sha(data)
        shard = root / "sha256" / aid[:2]
        shard.mkdir(parents=True, exist_ok=True)
        (shard / aid).write_bytes(data)
        lines.append(
            json.dumps(
                {
                    "op": "intent",
                    "attachment_id": aid,
                    "session_id": "s",
                    "canonical_uri": "sha256:" + aid,
                    "intent_at_epoch_ms": 1_700_000_000_000,
                }
            )
        )
        lines.append(
            json.dumps(
                {"op": "commit", "attachment_id": aid, "session_id": "s", "committed_at_epoch_ms": 1_700_000_000_001}
            )
        )
        ids.append(aid)
    (root / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    return sorted(ids)


def sidecars(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "sha256").rglob("*.json"))


def test_a_bare_store_is_detected_and_verified_clean(tmp_path: Path) -> None:
    root = tmp_path / "store"
    ids = bare_store(root, 10)
    done = run(root, "--json", "verify")
    assert done.returncode == 0, done.stderr
    kinds = {f["kind"] for f in json.loads(done.stdout)["findings"]}
    assert "sidecar-missing" not in kinds
    fixed = run(root, "verify", "--fix")
    assert fixed.returncode == 0, fixed.stderr
    assert sidecars(root) == []  # --fix adds no sidecars to a bare store
    got = run(root, "--json", "show", ids[0])
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout)["sidecar_problem"] is None


def test_put_into_a_bare_store_writes_no_sidecar(tmp_path: Path) -> None:
    root = tmp_path / "store"
    bare_store(root, 10)
    (tmp_path / "new.txt").write_bytes(b"fresh bytes")
    done = run(root, "put", "-s", "s2", str(tmp_path / "new.txt"))
    assert done.returncode == 0, done.stderr
    assert sidecars(root) == []
    out = subprocess.run([LASHCTL, "--store", str(root), "get", sha(b"fresh bytes")], capture_output=True, timeout=60)
    assert out.returncode == 0 and out.stdout == b"fresh bytes"


def test_a_small_bare_store_needs_the_option(tmp_path: Path) -> None:
    root = tmp_path / "store"
    bare_store(root, 3)
    # Three blobs without sidecars in a store that keeps its own manifest could
    # as well be a damaged lashctl store: auto keeps sidecars.
    assert run(root, "verify").returncode == 65
    done = run(root, "--layout", "bare", "verify", "--fix")
    assert done.returncode == 0, done.stderr
    assert sidecars(root) == []


def test_layout_sidecars_reports_every_missing_sidecar(tmp_path: Path) -> None:
    root = tmp_path / "store"
    bare_store(root, 10)
    done = run(root, "--json", "--layout", "sidecars", "verify")
    assert done.returncode == 65
    kinds = [f["kind"] for f in json.loads(done.stdout)["findings"]]
    assert kinds.count("sidecar-missing") == 10


def test_layout_option_rejects_unknown_values(tmp_path: Path) -> None:
    done = run(tmp_path, "--layout", "flat", "ls")
    assert done.returncode == 2
    assert "--layout" in done.stderr and "Traceback" not in done.stderr
    assert os.listdir(tmp_path) == []
