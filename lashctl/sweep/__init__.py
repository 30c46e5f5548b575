"""The commands that delete: ``delete``, ``reclaim`` and ``gc``.

Each holds the manifest's sweep lock (a dry run reads a snapshot without it),
derives every object name from a validated id, works in id order, and
records a failed delete as a failed item rather than stopping: the report
says what was done and the command exits 5 if anything failed.
"""

from __future__ import annotations

from lashctl.sweep.delete import DeleteResult, Deletion, ForgetItem, delete, delete_blob, forget  # noqa: F401
from lashctl.sweep.gc import GcItem, GcReport, gc  # noqa: F401
from lashctl.sweep.reclaim import ORPHAN, ORPHAN_GONE, ReclaimItem, ReclaimReport, reclaim  # noqa: F401
from lashctl.sweep.rules import (  # noqa: F401
    DELETE,
    DELETED_WHILE_REFERENCED,
    FAILED,
    LEFT_FOR_GC,
    RECLAIM,
    RELEASE,
    SPARED,
    SPARED_REASON,
    SWEEP_BATCH,
    Candidate,
    Plan,
    aged_rows,
    forget_intents,
    live_reason,
    plan_reclaim,
)
