"""Fault points: named places between two steps of a destructive command.

The crash tests kill lashctl at each gap between two steps (docs: README,
"Guarantees", the steps of each destructive command) by naming the point in
``LASHCTL_FAULT``: ``NAME`` kills the process with SIGKILL the first time it
reaches the point, ``NAME:N`` the N-th time; ``NAME[:N]/SIG`` sends the
signal SIG (``TERM``, ``HUP``, ``INT``) instead, so that the tests see what
an interrupt there leaves. Unset (always, outside the tests), a point costs
one dictionary look-up.
"""

from __future__ import annotations

import os
import signal

ENV_FAULT = "LASHCTL_FAULT"
_hits: dict[str, int] = {}


def point(name: str) -> None:
    """Die here, as SIGKILL would, when the tests ask for it."""
    wanted = os.environ.get(ENV_FAULT)
    if not wanted:
        return
    wanted, _, sig = wanted.partition("/")
    target, _, nth = wanted.partition(":")
    if target != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] == (int(nth) if nth.isdigit() else 1):
        os.kill(os.getpid(), getattr(signal, f"SIG{sig}", signal.SIGKILL) if sig else signal.SIGKILL)
