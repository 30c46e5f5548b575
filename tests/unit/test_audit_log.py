"""lashctl.audit in-process: what -q may not hide."""

from __future__ import annotations

from types import SimpleNamespace

from lashctl import audit
from lashctl.render import UI


def test_a_run_on_an_s3_store_warns_it_is_not_audited_unless_quiet(capsys):
    """The note is a warning: shown, and hidden by -q like every warning (a
    quiet scheduled sweep's stderr stays empty unless something fails)."""
    for quiet in (False, True):
        state = SimpleNamespace(store_root="s3://bucket/lash", manifest_path=None, ui=UI(quiet=quiet))
        store = SimpleNamespace(audit=None)
        assert audit.start(state, store, "reclaim", None) is None
        err = capsys.readouterr().err
        if quiet:
            assert err == ""
        else:
            assert "lashctl: warning: reclaim on s3://bucket/lash is not audited" in err and "--audit-log" in err
