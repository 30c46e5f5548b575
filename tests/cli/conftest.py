"""Fixtures shared by the CLI tests."""

from __future__ import annotations

import pytest

from .helpers import assert_ok, ids_out, write_inputs


@pytest.fixture
def put_blobs(cli, tmp_path):
    """Store contents through ``put`` but record the intents in a scratch manifest,
    so the store's own manifest holds only what the test writes by hand."""

    def run(contents: dict[str, bytes]) -> list[str]:
        paths = write_inputs(tmp_path / "blob-inputs", contents)
        scratch = tmp_path / "scratch-manifest.jsonl"
        result = cli("--manifest", str(scratch), "put", "-s", "setup", *map(str, paths))
        assert_ok(result)
        return ids_out(result)

    return run
