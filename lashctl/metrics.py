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

import errno
import os
import stat
import time
from pathlib import Path

from lashctl.errors import StoreIOError, UsageError
from lashctl.fsutil import NAME_MAX, describe_mode

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
        "(kept from the previous file when this run failed)."
    ),
    "lashctl_cutoff_timestamp_seconds": "The sweep's cutoff: bytes and intents older than this were swept.",
    "lashctl_deleted_blobs": "Blobs whose bytes the run deleted (a dry run: would delete).",
    "lashctl_freed_bytes": "Bytes of the blobs the run deleted (a dry run: would free).",
    "lashctl_failures": "Items the run failed to sweep (kept for the next run, or left for gc).",
    "lashctl_deleted_while_referenced_blobs": (
        "Blobs deleted while a live manifest row for them appeared: their content must be uploaded again."
    ),
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


MAX_BYTES = 1 << 20  # a previous file larger than this is not lashctl's: not read
SUFFIX = ".prom"  # the only files node_exporter's textfile collector reads


def start(value: str, command: str, store_root: object = None) -> "Run":
    """The run of ``command`` whose metrics go to ``value`` (the option's
    argument): checked now, before the command does anything, so that a
    sweep never runs unwatched because of a typo. ``store_root``: the store
    the command runs on (no metrics file inside a local one)."""
    from lashctl.backends import require_extra

    require_extra("prometheus_client", EXTRA, "--metrics-file")
    if not value.strip():
        raise UsageError("--metrics-file is empty: name a file (FILE.prom) or a directory")
    path = Path(value)
    if any(len(os.fsencode(part)) > NAME_MAX for part in path.parts):
        raise UsageError(f"--metrics-file {value}: a name in it is longer than {NAME_MAX} bytes")
    try:
        return _checked(value, path, command, store_root)
    except OSError as exc:  # (a path longer than PATH_MAX, a directory this user may not search)
        raise UsageError(f"--metrics-file {value}: {exc.strerror or exc}") from None


def _checked(value: str, path: Path, command: str, store_root: object) -> "Run":
    if value.endswith(("/", os.sep)) and not path.is_dir():
        raise UsageError(f"--metrics-file {value}: directory {path} does not exist")
    if path.is_dir():
        # A directory (a textfile collector's): one file per command, so that
        # LASHCTL_METRICS_FILE set once serves every command.
        path = path / f"lashctl_{command.replace('-', '_')}{SUFFIX}"
    elif not path.name.endswith(SUFFIX):
        # A typo in a directory's name would otherwise leave a file nothing reads.
        raise UsageError(
            f"--metrics-file {value}: not an existing directory, and node_exporter's "
            f"textfile collector reads only files named *{SUFFIX}"
        )
    if len(os.fsencode(path.name)) > NAME_MAX:  # lashctl_<command>.prom in a directory
        raise UsageError(f"--metrics-file {value}: the file name is longer than {NAME_MAX} bytes")
    folder = path.parent
    if not folder.is_dir():
        raise UsageError(f"--metrics-file {value}: directory {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"--metrics-file {value}: directory {folder} is not writable")
    _refuse_inside_store(value, folder, store_root)
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        mode = None
    if mode is not None and not stat.S_ISREG(mode):
        # Renamed over, a device node (/dev/null as root), a FIFO or a symlink
        # would be replaced by a regular file: never.
        raise UsageError(
            f"--metrics-file {value}: {path} is {describe_mode(mode)}, not a regular file: refusing to replace it"
        )
    return Run(path, command)


def _refuse_inside_store(value: str, folder: Path, store_root: object) -> None:
    """A metrics file inside a local store would be a stray file there (verify reports it)."""
    from lashctl.backends import is_url

    if store_root is None or is_url(str(store_root)):
        return
    root = os.path.realpath(str(store_root))
    where = os.path.realpath(folder)
    if where == root or where.startswith(root.rstrip(os.sep) + os.sep):
        raise UsageError(f"--metrics-file {value} is inside the store {store_root}: write it elsewhere")


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
        self.add(
            "lashctl_deleted_while_referenced_blobs",
            sum(1 for i in items if i.action == sweep.DELETED_WHILE_REFERENCED),
        )
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
        self.add(
            "lashctl_deleted_while_referenced_blobs",
            sum(1 for i in items if i.action == sweep.DELETED_WHILE_REFERENCED),
        )
        self.add("lashctl_gc_scanned_blobs", report.blobs_scanned)
        self.add(
            "lashctl_gc_deleted_litter_files", sum(1 for i in items if i.kind != "blob" and i.action == sweep.DELETE)
        )

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
        except KeyboardInterrupt as exc:
            # SIGTERM, SIGHUP or Ctrl-C while the file was written (signals
            # wait until it is whole): the run ends as any interrupted run,
            # 143, 129 or 130, not as click's "aborted".
            import typer

            from lashctl import interrupted
            from lashctl.text import say

            line, code = interrupted(exc)
            say(line)
            raise typer.Exit(code) from None
        except (OSError, StoreIOError, ValueError) as exc:
            from lashctl.render import UI

            cause = exc.__cause__ if isinstance(exc, StoreIOError) else exc
            reason = cause.strerror if isinstance(cause, OSError) and cause.strerror else str(cause)
            outcome = "succeeded" if exit_code == 0 else f"exited {exit_code}"
            UI.error(f"cannot write the metrics file {self.path}: {reason} ({self.command} itself {outcome})")
            if exit_code == 0:
                import typer

                raise typer.Exit(1) from None

    def write(self, state, exit_code: int) -> None:
        import signal

        from lashctl import __version__

        now = time.time()
        labels = {
            "command": self.command,
            "store": store_label(state.store_root),
            "manifest_kind": manifest_kind(state.manifest_path),
        }
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
        # Signals wait until the file is whole (and its staging file gone):
        # a SIGTERM now is raised once it is in place.
        if not hasattr(signal, "pthread_sigmask"):  # (Windows)
            self._install(samples, labels, exit_code, now)
            return
        signals = {getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP")}
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, signals)
        try:
            self._install(samples, labels, exit_code, now)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)

    def _install(self, samples: list, labels: dict[str, str], exit_code: int, now: float) -> None:
        """Stage the file beside its destination (``.<name>.<12 hex>.part``,
        which fits NAME_MAX whatever the name's length), fsync it and rename
        it over the destination, keeping the owner and mode of the file it
        replaces (fsutil.install_bytes). Whatever is at the destination that
        is not a regular file is left alone (OSError)."""
        from prometheus_client import CollectorRegistry, Gauge, generate_latest

        from lashctl.fsutil import install_bytes

        # The directory the user named, through any symlink; the file in it never is one.
        dir_fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            name = self.path.name
            if exit_code == 0 and not self.dry_run:
                samples.append((LAST_SUCCESS, {}, now))
            else:
                last = previous_success(name, labels, dir_fd)
                if last is not None:
                    samples.append((LAST_SUCCESS, {}, last))
            samples += self.samples
            registry = CollectorRegistry(auto_describe=True)
            gauges: dict[str, Gauge] = {}
            for metric, extra, value in samples:
                if metric not in gauges:
                    gauges[metric] = Gauge(metric, HELP[metric], [*LABELS, *extra], registry=registry)
                gauges[metric].labels(**labels, **extra).set(value)
            data = generate_latest(registry)
            try:
                mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
            except FileNotFoundError:
                mode = None
            if mode is not None and not stat.S_ISREG(mode):  # put there since the option was checked
                raise OSError(errno.EEXIST, f"it is {describe_mode(mode)}, not a regular file")
            install_bytes(data, dir_fd, dir_fd, name, self.path)
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def store_label(location) -> str:
    """The store as a label: a local path made absolute; a URL without its
    user part, query or fragment (never a password or a token)."""
    text = str(location)
    from lashctl.backends import is_url

    if not is_url(text):
        return _printable(os.path.abspath(text))
    scheme, _, rest = text.partition("://")
    rest = rest.split("?", 1)[0].split("#", 1)[0]
    authority, slash, path = rest.partition("/")
    return _printable(f"{scheme}://{authority.rpartition('@')[2]}{slash}{path}")


def _printable(text: str) -> str:
    """``text`` as UTF-8 can carry it: the bytes of a path that is not UTF-8
    (surrogate escapes) as backslash escapes (``\\xff``)."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def manifest_kind(location) -> str:
    """``jsonl``, ``postgresql`` or ``lash-sqlite``: the manifest's kind, not its address."""
    from lashctl.backends import is_lash_sqlite, is_postgres_url

    text = "" if location is None else str(location)
    if is_postgres_url(text):
        return "postgresql"
    if is_lash_sqlite(text):
        return "lash-sqlite"
    return "jsonl"


def previous_success(path: Path | str, labels: dict[str, str], dir_fd: int | None = None) -> float | None:
    """The last-success time the file at ``path`` (under ``dir_fd``) holds
    for these labels, if any. Only a regular file of at most MAX_BYTES is
    read, never through a symlink and never waiting (a FIFO, a device):
    anything else, or what does not parse, is no earlier success known."""
    from prometheus_client.parser import text_string_to_metric_families

    from lashctl.fsutil import open_regular

    try:
        fd = open_regular(path, dir_fd=dir_fd)
    except OSError:
        return None  # no file yet, or not a regular file
    try:
        with open(fd, "rb", closefd=True) as handle:
            data = handle.read(MAX_BYTES + 1)
    except OSError:
        return None
    if len(data) > MAX_BYTES:
        return None  # not a file lashctl wrote
    try:
        for family in text_string_to_metric_families(data.decode("utf-8")):
            for sample in family.samples:
                if sample.name == LAST_SUCCESS and all(sample.labels.get(k) == v for k, v in labels.items()):
                    return float(sample.value)
    except Exception:  # noqa: BLE001 - the parser's failures on text lashctl did not write vary
        pass
    return None
