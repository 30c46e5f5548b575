"""Process runner, statistics and result rows for the lashctl benchmarks.

Every timed command runs as a child process of a small launcher (see
``LAUNCHER``): ``time.perf_counter`` is read around its fork + exec + ``os.wait4``,
and ``wait4`` also yields the command's own ``ru_maxrss`` (peak resident set
size, KiB on Linux). stdout/stderr go to files (never pipes).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable, Mapping, Sequence


class HarnessError(Exception):
    """The harness could not measure (a command failed, a tool is broken)."""


@dataclass
class Run:
    seconds: float
    maxrss_kib: int
    returncode: int
    stdout: bytes
    stderr: bytes
    cpu_seconds: float = 0.0  # the command's user + system CPU time (wait4), which load distorts less


# The launcher: a small, fresh Python (-I -S: no site, ~8 MiB) that forks and
# execs the measured command, times it and reports the child's rusage. Going
# through it matters for memory: Linux carries a process's peak RSS across
# fork+exec (the new program's ru_maxrss starts at the forking process's
# high-water mark), so a child forked straight from this harness, grown by
# the data it generated, would report the harness's peak, not its own.
LAUNCHER = r"""
import os, sys, time
result, argv = sys.argv[1], sys.argv[2:]
start = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(argv[0], argv)
    except OSError as exc:
        os.write(2, ("bench launcher: cannot run %s: %s\n" % (argv[0], exc)).encode())
    os._exit(127)
_pid, status, usage = os.wait4(pid, 0)
elapsed = time.perf_counter() - start
with open(result, "w") as out:
    out.write("%r %d %d %r" % (elapsed, usage.ru_maxrss, os.waitstatus_to_exitcode(status),
                               usage.ru_utime + usage.ru_stime))
"""


def run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    stdin_path: str | None = None,
    stdout_path: str | None = None,
    keep_output: bool = True,
    check: bool = True,
    expect_codes: Iterable[int] = (0,),
) -> Run:
    """Run ``argv`` once; return wall time, the child's peak RSS and its output.

    The time is ``perf_counter`` around fork+exec+wait4 of the command inside
    the launcher (its own start-up is not counted); the RSS is the command's
    ``ru_maxrss`` from ``wait4``, floored at the launcher's ~8 MiB.
    ``stdout_path`` sends stdout to that file (``os.devnull`` for /dev/null);
    otherwise stdout goes to a temp file that is read back when
    ``keep_output``. stderr always goes to a temp file.
    """
    stdin = open(stdin_path, "rb") if stdin_path else subprocess.DEVNULL
    if stdout_path is not None:
        out = open(stdout_path, "wb")
    else:
        out = tempfile.TemporaryFile()
    err = tempfile.TemporaryFile()
    fd, result_path = tempfile.mkstemp(prefix="bench-run-", suffix=".txt")
    os.close(fd)
    try:
        proc = subprocess.run(
            [sys.executable, "-I", "-S", "-c", LAUNCHER, result_path, *argv],
            stdin=stdin,
            stdout=out,
            stderr=err,
            env=env,
            cwd=cwd,
        )
        with open(result_path) as handle:
            fields = handle.read().split()
        if proc.returncode != 0 or len(fields) != 4:
            err.seek(0)
            raise HarnessError(
                f"the launcher failed (exit {proc.returncode}) running {' '.join(argv)}: "
                + err.read().decode("utf-8", "replace")[-2000:]
            )
        elapsed, maxrss, code, cpu = float(fields[0]), int(fields[1]), int(fields[2]), float(fields[3])
        stdout = b""
        if stdout_path is None and keep_output:
            out.seek(0)
            stdout = out.read()
        err.seek(0)
        stderr = err.read()
    finally:
        if stdin is not subprocess.DEVNULL:
            stdin.close()
        out.close()
        err.close()
        os.unlink(result_path)
    if check and code not in tuple(expect_codes):
        raise HarnessError(
            f"command failed with exit {code}: {' '.join(argv)}\n" + stderr.decode("utf-8", "replace")[-2000:]
        )
    return Run(elapsed, maxrss, code, stdout, stderr, cpu)


@dataclass
class Series:
    """Repeated runs of one command."""

    label: str
    times: list[float] = field(default_factory=list)
    rss_kib: list[int] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    last: Run | None = None

    def add(self, r: Run) -> None:
        self.times.append(r.seconds)
        self.rss_kib.append(r.maxrss_kib)
        self.cpu.append(r.cpu_seconds)
        self.last = r

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def cpu_median(self) -> float:
        """Median user + system CPU time of the runs."""
        return statistics.median(self.cpu)

    @property
    def peak_rss_mib(self) -> float:
        return max(self.rss_kib) / 1024.0

    def spread(self) -> str:
        return f"min {min(self.times):.4f}s max {max(self.times):.4f}s n={len(self.times)}"


def interleave(
    reps: int,
    commands: Sequence[tuple[str, Callable[[], Run]]],
    setup: Callable[[str, int], None] | None = None,
    teardown: Callable[[str, int], None] | None = None,
    warmup: int = 0,
) -> dict[str, Series]:
    """Run each command ``reps`` times, A B A B ..., so drift hits all alike.

    The order within a round alternates (A B, then B A) for two commands, so
    neither always runs right after the other's setup.
    """
    series = {name: Series(name) for name, _ in commands}
    for i in range(warmup):
        for name, fn in commands:
            if setup:
                setup(name, -1 - i)
            fn()
            if teardown:
                teardown(name, -1 - i)
    for rep in range(reps):
        order = list(commands)
        if rep % 2 == 1:
            order.reverse()
        for name, fn in order:
            if setup:
                setup(name, rep)
            series[name].add(fn())
            if teardown:
                teardown(name, rep)
    return series


# -- results ---------------------------------------------------------------------
@dataclass
class Result:
    """One row of the report.

    ``kind`` is "ratio" (measured/baseline against a maximum ratio), "limit"
    (an absolute maximum, e.g. MiB of peak RSS) or "info" (no target).
    ``status`` is PASS, FAIL, INFO, SKIP or ERROR.
    """

    group: str
    benchmark: str
    kind: str
    measured: float | None = None
    baseline: float | None = None
    target: float | None = None
    unit: str = "s"
    status: str = "INFO"
    baseline_label: str = ""
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.measured is None or not self.baseline:
            return None
        return self.measured / self.baseline

    def judge(self) -> "Result":
        if self.status in ("SKIP", "ERROR"):
            return self
        if self.kind == "ratio" and self.target is not None and self.ratio is not None:
            self.status = "PASS" if self.ratio <= self.target else "FAIL"
        elif self.kind == "limit" and self.target is not None and self.measured is not None:
            self.status = "PASS" if self.measured <= self.target else "FAIL"
        else:
            self.status = "INFO"
        return self

    def to_json(self) -> dict:
        d = asdict(self)
        d["ratio"] = None if self.ratio is None else round(self.ratio, 4)
        return d


def fmt_value(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "s":
        if value < 1:
            return f"{value * 1000:.1f} ms"
        return f"{value:.2f} s"
    if unit == "MiB":
        return f"{value:.1f} MiB"
    return f"{value:g} {unit}"


def fmt_target(r: Result) -> str:
    if r.target is None:
        return "-"
    if r.kind == "ratio":
        return f"<= {r.target:g}x"
    return f"<= {r.target:g} {r.unit}"


def render_table(results: Sequence[Result]) -> str:
    header = ["benchmark", "measured", "baseline", "ratio", "target", "pass"]
    rows = []
    for r in results:
        baseline = fmt_value(r.baseline, r.unit)
        if r.baseline_label and r.baseline is not None:
            baseline = f"{baseline} ({r.baseline_label})"
        rows.append(
            [
                r.benchmark,
                fmt_value(r.measured, r.unit),
                baseline,
                "-" if r.ratio is None else f"{r.ratio:.2f}x",
                fmt_target(r),
                r.status,
            ]
        )
    return _grid(header, rows)


def _grid(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)] if rows else [len(h) for h in header]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()

    out = [line(header), line(["-" * w for w in widths])]
    out.extend(line(r) for r in rows)
    return "\n".join(out)


def render_grid(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    return _grid(header, rows)


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)
