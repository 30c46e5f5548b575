"""``--metrics-file``: a run's metrics for Prometheus, in the text exposition
format that node_exporter's textfile collector reads (docs/metrics.md).

Imported only when the option is given: the ``prometheus_client`` library
(the ``metrics`` extra) is loaded here and nowhere else. A command records
what its report says (``Run.reclaim``, ``Run.gc``...); the CLI funnel writes
the file once the run has ended, whatever its exit code (a usage error, a
lock timeout, a server failure, Ctrl-C), so that a failed sweep shows as one.
The file is staged beside its destination and renamed over it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from lashctl.errors import UsageError

# Every metric lashctl writes, with its help text. The text must stay the same
# from file to file and command to command: node_exporter refuses to merge
# two files that give one metric different help.
HELP = {
    "lashctl_build_info": "The lashctl version that wrote this file (always 1).",
    "lashctl_run_start_timestamp_seconds": "When the run started, in seconds since the epoch.",
    "lashctl_run_duration_seconds": "How long the run took, in seconds.",
    "lashctl_run_exit_code": "The run's exit code (0 success; see lashctl --help).",
    "lashctl_run_success": "1 if the run exited 0, else 0.",
    "lashctl_run_dry_run": "1 if the run was a dry run (nothing changed), else 0.",
    "lashctl_last_success_timestamp_seconds": (
        "When a run of this command on this store last succeeded, a dry run not counting "
        "(kept from the previous file when this run failed)."),
    "lashctl_cutoff_timestamp_seconds": "The sweep's cutoff: bytes and intents older than this were swept.",
    "lashctl_deleted_blobs": "Blobs whose bytes the run deleted (a dry run: would delete).",
    "lashctl_freed_bytes": "Bytes of the blobs the run deleted (a dry run: would free).",
    "lashctl_failures": "Items the run failed to sweep (kept for the next run, or left for gc).",
    "lashctl_deleted_while_referenced_blobs": (
        "Blobs deleted while a live manifest row for them appeared: their content must be uploaded again."),
    "lashctl_reclaim_scanned_intents": "Uncommitted intents at or before the cutoff that reclaim examined.",
    "lashctl_reclaim_released_rows": "Aged intent rows released (forgotten) while their blob stays referenced.",
    "lashctl_reclaim_spared_blobs": "Blobs spared because their bytes were written after the cutoff.",
    "lashctl_reclaim_owner_kept_intents": "Aged intents kept because their lash owner is not proven dead.",
    "lashctl_gc_scanned_blobs": "Blobs gc examined.",
    "lashctl_gc_deleted_litter_files": "Staging litter and orphan sidecars gc deleted (a dry run: would delete).",
    "lashctl_verify_checked_blobs": "Blobs verify re-hashed.",
    "lashctl_verify_checked_bytes": "Bytes verify re-hashed.",
    "lashctl_verify_findings": "Problems verify found, by kind and severity (repaired ones included).",
    "lashctl_verify_errors": "Errors verify found that remain (not repaired by --fix).",
    "lashctl_verify_warnings": "Warnings verify found.",
    "lashctl_verify_repairs": "Repairs verify --fix made.",
    "lashctl_store_blobs": "Blobs in the store.",
    "lashctl_store_bytes": "Bytes of the blobs in the store.",
    "lashctl_store_state_blobs": "Blobs in the store by reference state.",
    "lashctl_store_state_bytes": "Bytes of the blobs in the store by reference state.",
    "lashctl_store_reclaimable_blobs": "Orphaned blobs a reclaim with the default grace (24h) would delete now.",
    "lashctl_store_reclaimable_bytes": "Bytes a reclaim with the default grace (24h) would free now.",
    "lashctl_store_committed_rows": "Committed manifest rows.",
    "lashctl_store_uncommitted_rows": "Uncommitted manifest rows (intents).",
    "lashctl_store_staging_files": "Staging files (uploads in flight, or litter of interrupted ones).",
    "lashctl_store_staging_bytes": "Bytes of staging files.",
    "lashctl_store_manifest_lines": "Lines of a JSON-lines manifest.",
}

LABELS = ("command", "store", "manifest_kind")  # on every sample
LAST_SUCCESS = "lashctl_last_success_timestamp_seconds"
EXTRA = "metrics"  # pip install 'lashctl[metrics]'


def start(value: str, command: str) -> "Run":
    """The run of ``command`` whose metrics go to ``value`` (the option's
    argument): checked now, before the command does anything, so that a
    sweep never runs unwatched because of a typo."""
    from lashctl.backends import require_extra

    require_extra("prometheus_client", EXTRA, "--metrics-file")
    if not value.strip():
        raise UsageError("--metrics-file is empty: name a file (FILE.prom) or a directory")
    path = Path(value)
    if value.endswith(("/", os.sep)) and not path.is_dir():
        raise UsageError(f"--metrics-file {value}: directory {path} does not exist")
    if path.is_dir():
        # A directory (a textfile collector's): one file per command, so that
        # LASHCTL_METRICS_FILE set once serves every command.
        path = path / f"lashctl_{command.replace('-', '_')}.prom"
    folder = path.parent
    if not folder.is_dir():
        raise UsageError(f"--metrics-file {value}: directory {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"--metrics-file {value}: directory {folder} is not writable")
    return Run(path, command)


class Run:
    """What one run will write: the samples its command recorded."""

    def __init__(self, path: Path, command: str) -> None:
        self.path = path
        self.command = command
        self.samples: list[tuple[str, dict[str, str], float]] = []
        self.recorded = False  # a command records its report; --help records nothing and writes no file
        self.dry_run: bool | None = None  # None: the command has no --dry-run

    def add(self, name: str, value: float, **labels: str) -> None:
        self.samples.append((name, labels, float(value)))

    # -- what each command's report says -------------------------------------
    def reclaim(self, report) -> None:
        from lashctl import sweep

        self._sweep(report.cutoff_epoch_ms, report.dry_run)
        items = report.items
        self.add("lashctl_deleted_blobs", report.blobs_reclaimed)
        self.add("lashctl_freed_bytes", report.bytes_freed)
        self.add("lashctl_failures", len(report.failures))
        self.add("lashctl_deleted_while_referenced_blobs",
                 sum(1 for i in items if i.action == sweep.DELETED_WHILE_REFERENCED))
        self.add("lashctl_reclaim_scanned_intents", report.scanned_intents)
        self.add("lashctl_reclaim_released_rows", report.rows_released)
        self.add("lashctl_reclaim_spared_blobs", sum(1 for i in items if i.action == sweep.SPARED))
        self.add("lashctl_reclaim_owner_kept_intents", report.kept_for_owners)

    def gc(self, report) -> None:
        from lashctl import sweep

        self._sweep(report.cutoff_epoch_ms, report.dry_run)
        items = report.items
        self.add("lashctl_deleted_blobs", sum(1 for i in items if i.kind == "blob" and i.action == sweep.DELETE))
        self.add("lashctl_freed_bytes", report.bytes_freed)
        self.add("lashctl_failures", len(report.failures))
        self.add("lashctl_deleted_while_referenced_blobs",
                 sum(1 for i in items if i.action == sweep.DELETED_WHILE_REFERENCED))
        self.add("lashctl_gc_scanned_blobs", report.blobs_scanned)
        self.add("lashctl_gc_deleted_litter_files",
                 sum(1 for i in items if i.kind != "blob" and i.action == sweep.DELETE))

    def delete(self, results, dry_run: bool) -> None:
        self.recorded, self.dry_run = True, dry_run
        self.add("lashctl_deleted_blobs", sum(1 for r in results if r.existed))
        self.add("lashctl_freed_bytes", sum(r.byte_len for r in results))
        self.add("lashctl_deleted_while_referenced_blobs", sum(1 for r in results if r.error is not None))

    def verify(self, report) -> None:
        from lashctl import inspect

        self.recorded = True
        found: dict[tuple[str, str], int] = {}
        for f in report.findings:
            found[(f.kind, f.severity)] = found.get((f.kind, f.severity), 0) + 1
        for (kind, severity), count in sorted(found.items()):
            self.add("lashctl_verify_findings", count, kind=kind, severity=severity)
        self.add("lashctl_verify_checked_blobs", report.blobs_checked)
        self.add("lashctl_verify_checked_bytes", report.bytes_checked)
        self.add("lashctl_verify_errors", len(report.errors))
        self.add("lashctl_verify_warnings", sum(1 for f in report.findings if f.severity == inspect.WARNING))
        self.add("lashctl_verify_repairs", len(report.repairs))

    def stats(self, s) -> None:
        self.recorded = True
        self.add("lashctl_store_blobs", s.blobs)
        self.add("lashctl_store_bytes", s.blob_bytes)
        for state, count in s.blobs_by_state.items():
            self.add("lashctl_store_state_blobs", count, state=state)
        for state, size in s.bytes_by_state.items():
            self.add("lashctl_store_state_bytes", size, state=state)
        self.add("lashctl_store_reclaimable_blobs", s.orphans_reclaimable)
        self.add("lashctl_store_reclaimable_bytes", s.orphan_bytes_reclaimable)
        self.add("lashctl_store_committed_rows", s.rows_committed)
        self.add("lashctl_store_uncommitted_rows", s.rows_uncommitted)
        self.add("lashctl_store_staging_files", s.staging_files)
        self.add("lashctl_store_staging_bytes", s.staging_bytes)
        if s.manifest_lines is not None:  # a database has rows, not lines
            self.add("lashctl_store_manifest_lines", s.manifest_lines)

    def _sweep(self, cutoff_ms: int, dry_run: bool) -> None:
        self.recorded, self.dry_run = True, dry_run
        self.add("lashctl_cutoff_timestamp_seconds", cutoff_ms / 1000)

    # -- the file ------------------------------------------------------------------
    def finish(self, state, exit_code: int) -> None:
        """Write the file for a run that ended with ``exit_code``. A run that
        exited 0 and recorded nothing (``--help``) writes none. A file that
        cannot be written is one line on stderr; a run that would have
        exited 0 then exits 1 (``typer.Exit``): its watcher would see nothing."""
        if exit_code == 0 and not self.recorded:
            return
        try:
            self.write(state, exit_code)
        except OSError as exc:
            from lashctl.render import UI

            outcome = "succeeded" if exit_code == 0 else f"exited {exit_code}"
            UI.error(f"cannot write the metrics file {self.path}: {exc.strerror or exc} "
                     f"({self.command} itself {outcome})")
            if exit_code == 0:
                import typer

                raise typer.Exit(1) from None

    def write(self, state, exit_code: int) -> None:
        import signal

        from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

        from lashctl import __version__

        now = time.time()
        labels = {"command": self.command, "store": store_label(state.store_root),
                  "manifest_kind": manifest_kind(state.manifest_path)}
        started = state.started_ms / 1000
        samples = [
            ("lashctl_build_info", {"version": __version__}, 1.0),
            ("lashctl_run_start_timestamp_seconds", {}, started),
            ("lashctl_run_duration_seconds", {}, max(0.0, now - started)),
            ("lashctl_run_exit_code", {}, float(exit_code)),
            ("lashctl_run_success", {}, float(exit_code == 0)),
        ]
        if self.dry_run is not None:
            samples.append(("lashctl_run_dry_run", {}, float(self.dry_run)))
        if exit_code == 0 and not self.dry_run:
            samples.append((LAST_SUCCESS, {}, now))
        else:
            last = previous_success(self.path, labels)
            if last is not None:
                samples.append((LAST_SUCCESS, {}, last))
        samples += self.samples

        registry = CollectorRegistry(auto_describe=True)
        gauges: dict[str, Gauge] = {}
        for name, extra, value in samples:
            if name not in gauges:
                gauges[name] = Gauge(name, HELP[name], [*LABELS, *extra], registry=registry)
            gauges[name].labels(**labels, **extra).set(value)
        # Staged as PATH.<pid>.<thread> in the same directory, then renamed: a
        # signal now would leave the staging file behind, so it waits.
        if not hasattr(signal, "pthread_sigmask"):  # (Windows)
            write_to_textfile(str(self.path), registry)
            return
        signals = {getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP")}
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, signals)
        try:
            write_to_textfile(str(self.path), registry)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def store_label(location) -> str:
    """The store as a label: a local path made absolute; a URL without its
    user part, query or fragment (never a password or a token)."""
    text = str(location)
    from lashctl.backends import is_url

    if not is_url(text):
        return os.path.abspath(text)
    scheme, _, rest = text.partition("://")
    rest = rest.split("?", 1)[0].split("#", 1)[0]
    authority, slash, path = rest.partition("/")
    return f"{scheme}://{authority.rpartition('@')[2]}{slash}{path}"


def manifest_kind(location) -> str:
    """``jsonl``, ``postgresql`` or ``lash-sqlite``: the manifest's kind, not its address."""
    from lashctl.backends import is_lash_sqlite, is_postgres_url

    text = "" if location is None else str(location)
    if is_postgres_url(text):
        return "postgresql"
    if is_lash_sqlite(text):
        return "lash-sqlite"
    return "jsonl"


def previous_success(path: Path, labels: dict[str, str]) -> float | None:
    """The last-success time the file at ``path`` holds for these labels, if any."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        text = path.read_text(encoding="utf-8")
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == LAST_SUCCESS and all(sample.labels.get(k) == v for k, v in labels.items()):
                    return float(sample.value)
    except (OSError, ValueError, UnicodeDecodeError):
        pass  # no file yet, or not one lashctl wrote: no earlier success known
    return None
