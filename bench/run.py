#!/usr/bin/env python3
"""lashctl benchmark suite: one entry point.

    python bench/run.py [--quick] [--json] [--workdir DIR] [--only GROUP,...]

Each target is a ratio to a baseline measured in the same run (medians of
several runs) or an absolute limit (peak RSS). Prints a table with the
columns benchmark, measured, baseline, ratio, target, pass (``--json``: the
same as one JSON document). Exits 0 whatever passes or fails: it is a report.
Exits 1 only when the harness could not measure (a command failed; the group
is reported as ERROR), 2 on a usage error. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cases import GROUPS, Config, Context, clean_env
from harness import HarnessError, Result, log, render_grid, render_table


def default_lashctl(python: str) -> list[str]:
    """The console script next to the interpreter, else ``python -m lashctl``."""
    script = Path(python).parent / "lashctl"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [python, "-m", "lashctl"]


def mount_of(path: Path) -> dict:
    """File system type, device and options of the mount holding ``path``."""
    best = {"mount": "", "fstype": "?", "device": "?", "options": ""}
    target = str(path.resolve())
    try:
        with open("/proc/mounts") as handle:
            for line in handle:
                dev, mnt, fstype, opts = line.split()[:4]
                mnt = mnt.replace("\\040", " ")
                inside = target == mnt or target.startswith(mnt.rstrip("/") + "/")
                if inside and len(mnt) >= len(best["mount"]):
                    best = {"mount": mnt, "fstype": fstype, "device": dev, "options": opts}
    except OSError:
        pass
    return best


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def tool_version(argv: list[str]) -> str | None:
    if not shutil.which(argv[0]):
        return None
    import subprocess

    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr).strip() else None


def machine_info(cfg: Config, env: dict) -> dict:
    import subprocess

    probe = subprocess.run(
        [cfg.python, "-c", "import sys, typer; print(sys.version.split()[0]); print(typer.__version__)"],
        capture_output=True,
        text=True,
        env=env,
    )
    if probe.returncode != 0:
        raise HarnessError(f"{cfg.python} cannot import typer: {probe.stderr.strip()}")
    py_version, typer_version = probe.stdout.split()
    lashctl_version = subprocess.run([*cfg.lashctl, "--version"], capture_output=True, text=True, env=env)
    if lashctl_version.returncode != 0:
        raise HarnessError(f"{' '.join(cfg.lashctl)} --version failed: {lashctl_version.stderr.strip()}")
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    return {
        "nproc": affinity,
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "kernel": platform.release(),
        "python": py_version,
        "python_executable": cfg.python,
        "typer": typer_version,
        "lashctl": lashctl_version.stdout.strip(),
        "lashctl_command": cfg.lashctl,
        "workdir": str(cfg.workdir),
        "workdir_fs": mount_of(cfg.workdir),
        "git": tool_version(["git", "--version"]),
        "sqlite3": tool_version(["sqlite3", "--version"]) or "MISSING",
        "find": shutil.which("find") or "MISSING",
    }


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smaller sizes and 3 runs each (2k files, 128 MiB, 100k rows, 10k orphans, 500 session dbs)",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    p.add_argument(
        "--workdir", type=Path, help="scratch directory (a temp dir is made inside it; default: the system temp dir)"
    )
    p.add_argument("--keep", action="store_true", help="keep the scratch data")
    p.add_argument(
        "--only", default=",".join(GROUPS), help=f"comma-separated groups to run (default: all): {', '.join(GROUPS)}"
    )
    p.add_argument("--reps", type=int, help="override the number of runs of every measurement")
    p.add_argument(
        "--python", default=sys.executable, help="interpreter with lashctl and typer installed (default: this one)"
    )
    p.add_argument(
        "--lashctl",
        help="command to run lashctl (default: the lashctl script next to --python, else 'PYTHON -m lashctl')",
    )
    p.add_argument(
        "--typer-compare",
        nargs="+",
        metavar="PYTHON",
        default=[],
        help="also time the bare Typer app under these interpreters (e.g. venvs with other typers)",
    )
    p.add_argument(
        "--no-pyc-cache",
        action="store_true",
        help="run Python children in the caller's environment as is (default: allow bytecode "
        "caching under the scratch dir even if PYTHONDONTWRITEBYTECODE is set)",
    )
    p.add_argument("--save", type=Path, help="also write the JSON report to this file")
    args = p.parse_args(argv)
    unknown = [g for g in args.only.split(",") if g and g not in GROUPS]
    if unknown:
        p.error(f"unknown group(s) {', '.join(unknown)}; choose from {', '.join(GROUPS)}")
    if args.reps is not None and args.reps < 1:
        p.error("--reps must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    base = args.workdir or Path(tempfile.gettempdir())
    base.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="lashctl-bench-", dir=base))
    python = args.python
    cfg = Config(
        quick=args.quick,
        python=python,
        lashctl=shlex.split(args.lashctl) if args.lashctl else default_lashctl(python),
        workdir=workdir,
        reps=args.reps,
        typer_compare=args.typer_compare,
    )
    env = clean_env(None if args.no_pyc_cache else workdir / "pycache")
    # lashctl's manifest state cache goes to the scratch dir, removed with it.
    env["LASHCTL_CACHE_DIR"] = str(workdir / "lashctl-cache")
    ctx = Context(cfg, env)
    started = time.time()
    errors = 0
    try:
        try:
            machine = machine_info(cfg, env)
        except HarnessError as exc:
            print(f"bench: error: {exc}", file=sys.stderr)
            return 1
        log(
            f"mode {'quick' if cfg.quick else 'full'}; workdir {workdir} ({machine['workdir_fs']['fstype']}); "
            f"lashctl = {' '.join(cfg.lashctl)}"
        )
        if machine["sqlite3"] == "MISSING":
            ctx.note("sqlite3 CLI is MISSING: the list-uncommitted baseline cannot be measured")
        for name in [g for g in args.only.split(",") if g]:
            t0 = time.time()
            try:
                GROUPS[name](ctx)
            except HarnessError as exc:
                errors += 1
                ctx.results.append(Result(name, f"{name}: harness error", "info", status="ERROR", note=str(exc)))
                ctx.note(f"{name}: ERROR: {exc}")
            except Exception as exc:  # noqa: BLE001 - a bug in the harness: report it and go on
                errors += 1
                traceback.print_exc()
                ctx.results.append(
                    Result(name, f"{name}: harness error", "info", status="ERROR", note=f"{type(exc).__name__}: {exc}")
                )
            log(f"{name}: done in {time.time() - t0:.0f}s")
    finally:
        if args.keep:
            log(f"scratch data kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    report = {
        "mode": "quick" if cfg.quick else "full",
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "elapsed_s": round(time.time() - started, 1),
        "machine": machine,
        "results": [r.to_json() for r in ctx.results],
        "manifest_growth": ctx.growth,
        "command_growth": ctx.growth_commands,
        "notes": ctx.notes,
        "details": ctx.details,
    }
    if args.save:
        args.save.write_text(json.dumps(report, indent=2) + "\n")
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(render_text(report, ctx))
    return 1 if errors else 0


def render_text(report: dict, ctx: Context) -> str:
    m = report["machine"]
    fs = m["workdir_fs"]
    lines = [
        f"lashctl benchmarks ({report['mode']} mode, {report['elapsed_s']:.0f}s) - {m['lashctl']}, "
        f"Python {m['python']}, typer {m['typer']}",
        f"machine: {m['nproc']} CPUs, {m['cpu_model']}, Linux {m['kernel']}; "
        f"workdir on {fs['fstype']} ({fs['device']} at {fs['mount']})",
        "",
        render_table(ctx.results),
    ]
    if ctx.growth:
        lines += [
            "",
            "manifest growth (medians):",
            render_grid(
                [
                    "rows",
                    "manifest",
                    "uncommitted",
                    "list-uncommitted",
                    "sqlite3",
                    "list RSS",
                    "put",
                    "put (empty)",
                    "commit",
                    f"commit ({1000:,} rows)",
                ],
                [
                    [
                        f"{g['rows']:,}",
                        f"{g['manifest_mib']} MiB",
                        f"{g['uncommitted_rows']:,}",
                        f"{g['list_uncommitted_s']:.3f} s",
                        "-" if g["sqlite3_s"] is None else f"{g['sqlite3_s']:.3f} s",
                        f"{g['list_uncommitted_rss_mib']:.0f} MiB",
                        f"{g['put_s'] * 1000:.1f} ms",
                        f"{g['put_empty_manifest_s'] * 1000:.1f} ms",
                        f"{g['commit_s']:.3f} s",
                        f"{g['commit_small_manifest_s'] * 1000:.1f} ms",
                    ]
                    for g in ctx.growth
                ],
            ),
        ]
    if ctx.growth_commands:
        from cases import GROWTH_COMMANDS

        lines += [
            "",
            "growth of the commands that no longer fold the whole log (median s / peak RSS MiB):",
            render_grid(
                ["rows", "manifest", *GROWTH_COMMANDS],
                [
                    [
                        f"{g['rows']:,}",
                        f"{g['manifest_mib']} MiB",
                        *(f"{g[c]['median_s']:.3f} s / {g[c]['peak_rss_mib']:.0f}" for c in GROWTH_COMMANDS),
                    ]
                    for g in ctx.growth_commands
                ],
            ),
        ]
    if ctx.notes:
        lines += ["", "notes:"] + [f"- {n}" for n in ctx.notes]
    for r in ctx.results:
        if r.note:
            lines.append(f"- {r.benchmark}: {r.note}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
