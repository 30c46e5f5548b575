"""lashctl.audit in-process: what -q may not hide."""

from __future__ import annotations

from types import SimpleNamespace

from lashctl import audit
from lashctl.render import UI


def test_a_quiet_run_on_an_s3_store_still_says_it_is_not_audited(capsys):
    state = SimpleNamespace(store_root="s3://bucket/lash", manifest_path=None, ui=UI(quiet=True))
    store = SimpleNamespace(audit=None)
    assert audit.start(state, store, "reclaim", None) is None
    err = capsys.readouterr().err
    assert "lashctl: warning: reclaim on s3://bucket/lash is not audited" in err and "--audit-log" in err
