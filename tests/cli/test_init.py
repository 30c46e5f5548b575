"""``init``: makes a store and records its layout; another layout is refused (exit 4)."""

from __future__ import annotations

import json

from .helpers import assert_error, assert_ok


def test_init_records_the_layout_once_and_refuses_another(cli, store):
    made = cli("--json", "init", "--layout", "bare")
    assert_ok(made)
    assert (json.loads(made.stdout)["layout"], json.loads(made.stdout)["recorded"]) == ("bare", True)
    assert (store / "sha256").is_dir()
    assert (store / "lashctl-layout").exists()

    again = cli("--json", "init", "--layout", "bare")
    assert_ok(again)
    assert json.loads(again.stdout)["recorded"] is False
    assert "already records it" in again.stderr

    other = cli("init", "--layout", "sidecars")
    assert_error(other, 4, "records layout bare")
