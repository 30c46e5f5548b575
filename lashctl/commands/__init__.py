"""One module per command: parse, call the core (``transfer``, ``sweep``, ``inspect``, ``migrate``), render.

Shared here: the state the global options leave in ``ctx.obj`` and the
``--json`` option every command also accepts after its name.
"""

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

if TYPE_CHECKING:
    from lashctl.ids import IdQuery

from lashctl.record import Record
from lashctl.render import UI

ENV_STORE = "LASHCTL_STORE"
ENV_MANIFEST = "LASHCTL_MANIFEST"
ENV_SESSION = "LASHCTL_SESSION"
ENV_LOCK_TIMEOUT = "LASHCTL_LOCK_TIMEOUT"
ENV_DEBUG = "LASHCTL_DEBUG"
ENV_PROCESS_REGISTRY = "LASHCTL_PROCESS_REGISTRY"
ENV_METRICS_FILE = "LASHCTL_METRICS_FILE"
ENV_AUDIT_LOG = "LASHCTL_AUDIT_LOG"


def complete_id(ctx: typer.Context, incomplete: str) -> list[str]:
    """Shell completion of an id argument (loaded only when completing)."""
    from lashctl.completion import complete_id as from_store

    return from_store(ctx, incomplete)


JsonFlag = Annotated[bool, typer.Option("--json", help="Machine output: one JSON document on stdout.")]
SessionOption = Annotated[
    Optional[str],
    typer.Option("--session", "-s", envvar=ENV_SESSION, metavar="SESSION", help="Session id the rows belong to."),
]
OlderThanOption = Annotated[
    Optional[str],
    typer.Option("--older-than", metavar="DURATION", help="Cutoff as an age: 90s, 15m, 24h, 7d (units lower-case)."),
]
BeforeOption = Annotated[
    Optional[str],
    typer.Option(
        "--before", metavar="TIMESTAMP", help="Cutoff as ISO-8601 (UTC if no zone), @EPOCH_SECONDS or EPOCH_MSms."
    ),
]
DryRunFlag = Annotated[bool, typer.Option("--dry-run", "-n", help="Say what would happen; change nothing.")]


def _metrics_file(ctx: typer.Context, _param: object, value: Optional[str]) -> Optional[str]:
    """--metrics-file: checked (and lashctl.metrics imported) only when given."""
    state = ctx.find_object(AppState)
    if state is None or ctx.resilient_parsing:  # (completion: nothing runs)
        return value
    if value is None:
        import os

        from lashctl.errors import UsageError

        # Click takes an empty variable for an unset one: a crontab's
        # LASHCTL_METRICS_FILE= is a mistake, as LASHCTL_STORE= is.
        if os.environ.get(ENV_METRICS_FILE) == "":
            raise UsageError(f"{ENV_METRICS_FILE} is empty: name a FILE.prom or a directory, or unset it")
        return value
    from lashctl.metrics import start

    state.metrics = start(value, ctx.info_name or "lashctl", state.store_root)
    return value


# Eager: taken before the other options, so that a usage error in them is
# still a run the metrics file reports.
MetricsFileOption = Annotated[
    Optional[str],
    typer.Option(
        "--metrics-file",
        envvar=ENV_METRICS_FILE,
        metavar="PATH",
        is_eager=True,
        callback=_metrics_file,
        help="Write the run's metrics for Prometheus (node_exporter's textfile collector) to PATH, "
        "a .prom file or a directory, also when the run fails (needs the 'metrics' extra).",
    ),
]


def _audit_log(ctx: typer.Context, _param: object, value: Optional[str]) -> Optional[str]:
    """--audit-log: checked (and lashctl.audit imported) only when given."""
    if value is None or ctx.resilient_parsing:
        return value
    from lashctl.audit import check_given

    return check_given(value)


AuditLogOption = Annotated[
    Optional[str],
    typer.Option(
        "--audit-log",
        envvar=ENV_AUDIT_LOG,
        metavar="PATH|-",
        callback=_audit_log,
        help="Append a JSON line per item deleted, forgotten or quarantined to PATH (- for standard "
        "error) (default: <store>/audit.jsonl; an s3:// store: none).",
    ),
]
AuditLogReadOption = Annotated[
    Optional[str],
    typer.Option(
        "--audit-log",
        envvar=ENV_AUDIT_LOG,
        metavar="PATH",
        help="The audit log to read (default: <store>/audit.jsonl).",
    ),
]


class AppState(Record):
    """What the global options decided, kept in ``ctx.obj``."""

    __slots__ = (
        "store_root",
        "manifest_path",
        "lock_timeout",
        "ui",
        "store_named",
        "manifest_named",
        "inspection",
        "layout",
        "started_ms",
        "process_registry",
        "metrics",
    )

    def __init__(
        self,
        store_root: Path | str,
        manifest_path: Optional[Path | str],
        lock_timeout: float,
        ui: UI,
        store_named: bool = False,
        manifest_named: bool = False,
        inspection: object = None,
        layout: Optional[str] = None,
        started_ms: int | None = None,
        process_registry: Optional[str] = None,
        metrics: object = None,
    ) -> None:
        self.store_root = store_root  # a directory or an s3:// URL
        self.manifest_path = manifest_path  # a file or a postgresql:// URL
        self.lock_timeout = lock_timeout
        self.ui = ui
        self.store_named = store_named  # --store or LASHCTL_STORE, not the platform default
        self.manifest_named = manifest_named
        self.inspection = inspection  # the open view of an inspection command
        self.layout = layout  # --layout: auto (None), sidecars or bare
        self.started_ms = time.time_ns() // 1_000_000 if started_ms is None else started_ms
        self.process_registry = process_registry  # --process-registry: a table name, None when not given
        self.metrics = metrics  # --metrics-file: a lashctl.metrics.Run, written when the run ends

    def run_fields(self) -> dict:
        """What a log of a run needs beside its result: when, where, which lashctl."""
        from lashctl import __version__
        from lashctl.timefmt import iso_ms, now_ms

        from lashctl.backends import strip_password

        manifest = (
            strip_password(str(self.manifest_path))
            if self.manifest_path is not None
            else strip_password(f"{self.store_root}/manifest.jsonl")
        )
        return {
            "lashctl_version": __version__,
            "store": strip_password(str(self.store_root)),
            "manifest": str(manifest),
            "started_at": iso_ms(self.started_ms),
            "finished_at": iso_ms(now_ms()),
        }

    def store(self, create: bool = False, sweep: bool = False):
        """The store the options name. Unless ``create`` (put), a store root or
        manifest named explicitly must exist, and the root must hold a store
        (``backends.not_a_store``): a typo in a cron line is an error, not a
        clean sweep of an empty store (nothing is created). The default store
        before its first put reads as empty and is written nothing. A
        ``sweep`` names the default store it uses on stderr."""
        from lashctl.backends import ABSENT, EMPTY, not_a_store, unwritten
        from lashctl.core import Store
        from lashctl.errors import UsageError

        why = not_a_store(self.store_root, self.manifest_path)
        if why not in (None, ABSENT, EMPTY):
            raise UsageError(f"not a lashctl store: {self.store_root} ({why})")
        layout = None if self.layout in (None, "auto") else self.layout
        store = Store(
            self.store_root,
            self.manifest_path,
            self.lock_timeout,
            warn=self.ui.warn,
            note=self.ui.note,
            layout=layout,
            process_registry=self.process_registry,
            writes=create or sweep,
        )
        if not create:
            if self.store_named and not store.blobs.exists():
                raise UsageError(f"store {store.blobs.name} does not exist (check --store / {ENV_STORE})")
            if self.manifest_named and self.manifest_path is not None and not store.manifest.exists():
                from lashctl.backends import is_postgres_url

                if is_postgres_url(str(self.manifest_path)):
                    # The database answers but has no table: say which, and how to create it.
                    store.manifest.check_writable()
                raise UsageError(f"manifest {store.manifest.name} does not exist (check --manifest / {ENV_MANIFEST})")
            if why is not None:
                if self.store_named or self.manifest_named:
                    raise UsageError(f"not a lashctl store: {self.store_root}")
                store.manifest = unwritten(store.manifest)
        if sweep and not self.store_named:
            self.ui.info(
                f"lashctl: using the default store {self.store_root}"
                + (" (nothing stored there yet)" if why is not None else "")
            )
        return store


def app_state(ctx: typer.Context, json_flag: bool = False) -> AppState:
    """The run's state; called by every command as its work begins (after
    its own imports), which ends start-up's sparse garbage collection."""
    from lashctl import start_collecting

    start_collecting()
    state: AppState = ctx.find_object(AppState)
    if json_flag:
        state.ui.json = True
    return state


def parse_ids(texts: list[str]) -> list["IdQuery"]:
    from lashctl.ids import parse_id

    """Parse every id argument before anything touches the file system."""
    return [parse_id(t) for t in texts]


def read_stdin_words() -> list[str]:
    """The whitespace-separated words on standard input (``commit -``), a
    byte-order mark at its start ignored, as in every list lashctl reads."""
    import sys

    return strip_bom(sys.stdin.buffer.read()).decode("utf-8", "surrogateescape").split()


def strip_bom(data: bytes) -> bytes:
    """A list's bytes without the UTF-8 byte-order mark some editors and
    Windows tools put at its start."""
    return data[3:] if data.startswith(b"\xef\xbb\xbf") else data


def inspect_state(state: AppState, store):
    """A view of the manifest for a read-only command, open until
    ``end_inspection``: malformed lines of a JSON-lines manifest are skipped
    (and listed) rather than stopping the inspection."""
    from contextlib import ExitStack

    stack = ExitStack()
    view = stack.enter_context(store.manifest.inspecting())
    stack.enter_context(store.blobs.opened())
    state.inspection = stack
    return view


def end_inspection(state: AppState, store, view) -> None:
    """After the output: close the view; mark each malformed line on stderr, then exit 65."""
    if state.inspection is not None:
        state.inspection.close()
        state.inspection = None
    malformed = view if isinstance(view, list) else view.malformed
    if not malformed:
        return
    from lashctl.errors import describe_malformed, malformed_error

    for exc in malformed:
        state.ui.warn(describe_malformed(exc))
    path = store.manifest.path  # None: a database, made of rows
    raise malformed_error(malformed, str(path or store.manifest.name), "line" if path is not None else "row")
