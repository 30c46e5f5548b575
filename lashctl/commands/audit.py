"""``lashctl audit``: what the destructive commands deleted, forgot or quarantined."""

from typing import Annotated, Optional

import typer

from lashctl.commands import AuditLogReadOption, JsonFlag, app_state
from lashctl.render import Col, Field

EPILOG = """Examples:

    lashctl audit --since 7d
    lashctl audit --id 5f5d584c5857 --json
    lashctl audit --audit-log /var/log/lashctl/audit.jsonl.1

Exit codes: 0 listed (also when nothing matches, or no log exists yet); 2 usage error (not a lashctl store; an s3:// store without --audit-log; a named log that is not a regular file); 1 the log cannot be read."""


def _fields(unfinished: set[int]) -> tuple[Field, ...]:
    from lashctl.audit import KEYS  # one line of the audit log as written (docs/audit.md): --json gives it whole

    cols = {
        "time": Col("time", "fixed"),
        "action": Col("action", "fixed"),
        "id": Col("id", "id"),
        "bytes": Col("size", "bytes", drop=2),
        "command": Col("command", "fixed", drop=3),
        "reason": Col("reason", drop=1, min_width=12),
    }
    cells = {
        "action": lambda pair: pair[1].get("action") + (" (no outcome)" if pair[0] in unfinished else ""),
        "id": lambda pair: pair[1].get("id") or pair[1].get("path"),
        "reason": lambda pair: pair[1].get("error") or pair[1].get("reason"),
    }
    return tuple(Field(key, lambda pair, key=key: pair[1].get(key), cols.get(key), cell=cells.get(key)) for key in KEYS)


def audit(
    ctx: typer.Context,
    since: Annotated[
        Optional[str],
        typer.Option(
            "--since",
            metavar="DURATION|TIMESTAMP",
            help="Only lines from then on: an age (7d, 24h) or a time (ISO-8601, @EPOCH_SECONDS).",
        ),
    ] = None,
    attachment: Annotated[
        Optional[str], typer.Option("--id", metavar="ID", help="Only lines about this id (or unique prefix).")
    ] = None,
    audit_log: AuditLogReadOption = None,
    all_stores: Annotated[
        bool, typer.Option("--all-stores", help="Every store's lines of a shared log, not only this store's.")
    ] = False,
    json_flag: JsonFlag = False,
) -> None:
    """List the audit log: every item reclaim, gc, delete, forget and verify --fix deleted, forgot or quarantined.

    One line per step: "deleting" (written, and synced, before the change)
    then its outcome, "deleted" (or forgotten, quarantined, kept, failed). A
    "deleting" line with no outcome (shown as "no outcome") is a run that
    stopped there: look at the store. --json gives the lines as they are
    written (docs/audit.md). A log several stores share shows this store's
    lines (--all-stores: every store's).
    """
    from lashctl import audit as log
    from lashctl.errors import UsageError
    from lashctl.ids import parse_id
    from lashctl.timefmt import now_ms, parse_duration, parse_timestamp

    state = app_state(ctx, json_flag)
    wanted = parse_id(attachment).hex if attachment is not None else None
    start = None
    if since is not None:
        try:
            start = now_ms() - parse_duration(since, "--since")
        except UsageError:
            try:
                start = parse_timestamp(since, "--since")
            except UsageError:
                raise UsageError(
                    f"--since '{since}' is neither an age (7d, 24h) nor a time (ISO-8601, @EPOCH_SECONDS)"
                ) from None
    if audit_log == log.STDERR:
        raise UsageError("--audit-log - names standard error, which cannot be read: name the file")
    if not audit_log:
        audit_log = None  # (an empty LASHCTL_AUDIT_LOG: the store's own)
    path = log.read_location(audit_log, state.store_root)
    if path is None:
        raise UsageError(
            f"store {state.store_root} keeps no audit log (an s3:// store has no local root): "
            f"name the file its sweeps wrote with --audit-log or {log.ENV_AUDIT_LOG}"
        )
    from lashctl.backends import is_url

    if not is_url(str(state.store_root)):
        state.store()  # a local root must be a store (exit 2, as for every reader); an s3:// one is not contacted
    lines = [
        line
        for line in log.read(
            path,
            warn=state.ui.warn,
            wanted=wanted,
            named=audit_log is not None,
            store=None if all_stores else state.store_root,
        )
        if (wanted is None or str(line.get("id") or "").startswith(wanted))
        and (start is None or (isinstance(line.get("time_epoch_ms"), int) and line["time_epoch_ms"] >= start))
    ]
    unfinished = log.unfinished(lines)
    state.ui.listing(_fields(unfinished), list(enumerate(lines)))
    if not path.exists():
        state.ui.info(f"no audit log at {path} yet: nothing has been deleted there")
    else:
        state.ui.info(
            f"{len(lines)} line(s) from {path}"
            + (f"; {len(unfinished)} with no outcome (look at the store)" if unfinished else "")
        )
