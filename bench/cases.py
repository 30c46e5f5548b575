"""The benchmark groups: start-up, batch upload, big files, big manifests,
big sweeps and lash's SQLite session databases (and, in remote.py, S3 +
PostgreSQL). Each appends ``Result`` rows to the context.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import datagen
from harness import HarnessError, Result, Run, Series, interleave, log, run

MIB = 1024 * 1024
GIB = 1024 * MIB


@dataclass
class Config:
    quick: bool
    python: str
    lashctl: list[str]
    workdir: Path
    reps: int | None = None  # override every repetition count
    typer_compare: list[str] = field(default_factory=list)

    # sizes ---------------------------------------------------------------------
    @property
    def batch_files(self) -> int:
        return 2_000 if self.quick else 10_000

    @property
    def big_file(self) -> int:
        return 128 * MIB if self.quick else GIB

    @property
    def manifest_sizes(self) -> list[int]:
        return [10_000, 100_000] if self.quick else [10_000, 100_000, 1_000_000]

    @property
    def sweep_orphans(self) -> int:
        return 10_000 if self.quick else 100_000

    @property
    def session_dbs(self) -> int:
        return 500 if self.quick else 5_000

    def n(self, quick: int, full: int) -> int:
        """Repetitions: the override, else the mode's default."""
        if self.reps is not None:
            return self.reps
        return quick if self.quick else full


@dataclass
class Context:
    cfg: Config
    env: dict[str, str]
    results: list[Result] = field(default_factory=list)
    growth: list[dict] = field(default_factory=list)
    growth_commands: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    details: dict = field(default_factory=dict)

    def dir(self, name: str) -> Path:
        path = self.cfg.workdir / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def lashctl(self, store: Path, *args: str) -> list[str]:
        return [*self.cfg.lashctl, "--store", str(store), *args]

    def add(self, result: Result) -> Result:
        self.results.append(result.judge())
        return result

    def note(self, text: str) -> None:
        self.notes.append(text)
        log(text)


def clean_env(pycache: Path | None) -> dict[str, str]:
    """The caller's environment without LASHCTL_* settings that would change what runs.

    With ``pycache``, Python may cache bytecode there (PYTHONPYCACHEPREFIX,
    PYTHONDONTWRITEBYTECODE unset), as an installed tool has its .pyc files:
    an editable install under PYTHONDONTWRITEBYTECODE=1 would otherwise
    recompile every lashctl module on every run, while typer's come from
    site-packages' caches. Nothing is written next to the sources.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LASHCTL_", "_LASHCTL_"))}
    env.pop("PYTHONPROFILEIMPORTTIME", None)
    if pycache is not None:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(pycache)
    return env


def rmtree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def copy_tree(src: Path, dst: Path) -> None:
    """``cp -a`` where it exists (fast, keeps mtimes), else shutil."""
    rmtree(dst)
    if shutil.which("cp"):
        subprocess.run(["cp", "-a", str(src), str(dst)], check=True)
    else:
        shutil.copytree(src, dst, symlinks=True)


def disk_free(path: Path) -> int:
    return shutil.disk_usage(path).free


def count_files(root: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(root))


# =====================================================================================
# 1. Start-up
# =====================================================================================
def bench_startup(ctx: Context) -> None:
    cfg = ctx.cfg
    d = ctx.dir("startup")
    small = d / "small.bin"
    datagen.write_random_file(small, 2048, seed=11)
    bare = d / "bare_typer_app.py"
    datagen.write_bare_app(bare)
    store = d / "store"
    env = ctx.env
    comp_l = dict(env, _LASHCTL_COMPLETE="complete_bash", COMP_WORDS="lashctl re", COMP_CWORD="1")
    comp_b = dict(env, _BARE_COMPLETE="complete_bash", COMP_WORDS="bare p", COMP_CWORD="1")
    py = cfg.python

    # Sanity: each completes to its only matching command.
    out = run(cfg.lashctl, env=comp_l).stdout.decode().split()
    if "reclaim" not in out:
        raise HarnessError(f"lashctl completion printed {out!r}, expected reclaim among them")
    out = run([py, str(bare)], env=comp_b).stdout.decode().split()
    if out != ["put"]:
        raise HarnessError(f"bare app completion printed {out!r}, expected ['put']")

    cmds: list[tuple[str, Callable[[], Run]]] = [
        ("put", lambda: run(ctx.lashctl(store, "put", "-s", "s", str(small)), env=env)),
        ("bare_put", lambda: run([py, str(bare), "put", "-s", "s", str(small)], env=env)),
        ("complete", lambda: run(cfg.lashctl, env=comp_l)),
        ("bare_complete", lambda: run([py, str(bare)], env=comp_b)),
        ("python_pass", lambda: run([py, "-c", "pass"], env=env)),
    ]
    raw = {k: v for k, v in os.environ.items() if not k.startswith(("LASHCTL_", "_LASHCTL_"))}
    no_pyc = "PYTHONPYCACHEPREFIX" in env and raw.get("PYTHONDONTWRITEBYTECODE")
    if no_pyc:
        # The caller's environment forbids bytecode caches: show what that costs.
        cmds += [
            ("put_nopyc", lambda: run(ctx.lashctl(store, "put", "-s", "s", str(small)), env=raw)),
            ("bare_put_nopyc", lambda: run([py, str(bare), "put", "-s", "s", str(small)], env=raw)),
        ]
    reps = cfg.n(15, 30)
    log(f"start-up: {reps} interleaved runs of each of {len(cmds)} commands")
    s = interleave(reps, cmds, warmup=2)
    ctx.details["startup"] = {
        k: {"median_s": v.median, "cpu_median_s": v.cpu_median, "spread": v.spread(), "peak_rss_mib": v.peak_rss_mib}
        for k, v in s.items()
    }
    ctx.add(
        Result(
            "startup",
            "start-up: put 2 KiB vs bare Typer app",
            "ratio",
            s["put"].median,
            s["bare_put"].median,
            1.15,
            baseline_label="bare app",
        )
    )
    # CPU time (user + system) of the same runs: what a busy machine distorts less than wall time.
    ctx.add(
        Result(
            "startup",
            "start-up: put 2 KiB vs bare Typer app, CPU time",
            "info",
            s["put"].cpu_median,
            s["bare_put"].cpu_median,
            baseline_label="bare app",
        )
    )
    ctx.add(
        Result(
            "startup",
            "start-up: bash completion vs bare app's",
            "ratio",
            s["complete"].median,
            s["bare_complete"].median,
            1.10,
            baseline_label="bare app",
        )
    )
    pp = s["python_pass"].median
    ctx.add(
        Result("startup", "start-up: put 2 KiB vs python -c pass", "info", s["put"].median, pp, baseline_label="python")
    )
    ctx.add(
        Result(
            "startup",
            "start-up: bash completion vs python -c pass",
            "ratio",
            s["complete"].median,
            pp,
            1.50,
            baseline_label="python",
        )
    )
    ctx.add(
        Result(
            "startup",
            "start-up: bare app put vs python -c pass",
            "info",
            s["bare_put"].median,
            pp,
            baseline_label="python",
        )
    )
    if no_pyc:
        ctx.add(
            Result(
                "startup",
                "start-up: put, PYTHONDONTWRITEBYTECODE=1 as given",
                "info",
                s["put_nopyc"].median,
                s["bare_put_nopyc"].median,
                baseline_label="bare app",
            )
        )
        ctx.note(
            "start-up: the caller's environment sets PYTHONDONTWRITEBYTECODE=1; the suite lets Python "
            "cache bytecode under the scratch dir (PYTHONPYCACHEPREFIX) so lashctl's modules are not "
            "recompiled on every run; the 'as given' row shows the cost of recompiling them"
        )
    ctx.note(
        "start-up: put runs against a warm store (the same 2 KiB file each time: "
        "a deduplicated put, which still takes the lock, appends and fsyncs one intent "
        "and brings the manifest's state cache up to date); the bare app accepts the same arguments "
        "and does nothing. The CPU row is user + system time of the same runs."
    )

    if cfg.typer_compare:
        compare_typer(ctx, bare, small)


def compare_typer(ctx: Context, bare: Path, small: Path) -> None:
    """The bare app under other interpreters (e.g. typer 0.27 vs 0.29 venvs)."""
    cmds = []
    versions = {}
    for py in ctx.cfg.typer_compare:
        version = run([py, "-c", "import typer; print(typer.__version__)"], env=ctx.env).stdout.decode().strip()
        # Does running the app import pydantic? (typer 0.28+ does, lazily, when the app starts.)
        imports = run([py, "-X", "importtime", str(bare), "put", "-s", "s", str(small)], env=ctx.env).stderr
        versions[py] = (version, b" pydantic\n" in imports or b"| pydantic\n" in imports)
        cmds.append((py, lambda py=py: run([py, str(bare), "put", "-s", "s", str(small)], env=ctx.env)))
        cmds.append((py + " pass", lambda py=py: run([py, "-c", "pass"], env=ctx.env)))
    reps = ctx.cfg.n(15, 30)
    log(f"typer comparison: {reps} interleaved runs under {len(ctx.cfg.typer_compare)} interpreters")
    s = interleave(reps, cmds, warmup=2)
    first = ctx.cfg.typer_compare[0]
    detail = {}
    for py in ctx.cfg.typer_compare:
        version, pydantic = versions[py]
        detail[py] = {
            "typer": version,
            "imports_pydantic": pydantic,
            "bare_app_median_s": s[py].median,
            "python_pass_median_s": s[py + " pass"].median,
            "peak_rss_mib": s[py].peak_rss_mib,
        }
        ctx.add(
            Result(
                "typer",
                f"bare app, typer {version}{' (+pydantic)' if pydantic else ''}",
                "info",
                s[py].median,
                s[first].median,
                baseline_label=f"typer {versions[first][0]}",
            )
        )
    ctx.details["typer_compare"] = detail


# =====================================================================================
# 2. Batch upload
# =====================================================================================
def bench_batch(ctx: Context) -> None:
    cfg = ctx.cfg
    if not shutil.which("git"):
        ctx.add(
            Result("batch", "batch put --files-from vs git hash-object", "ratio", status="SKIP", note="git not found")
        )
        ctx.note("batch upload skipped: git is not installed (it is the baseline)")
        return
    n = cfg.batch_files
    d = ctx.dir("batch")
    log(f"batch: generating {n} files of 4 KiB")
    paths = datagen.make_small_files(d / "files", n, 4096)
    listing = d / "list.txt"
    listing.write_text("\n".join(paths) + "\n")
    out_l, out_g = d / "lashctl.out", d / "git.out"
    # Every run writes into a directory of its own, and nothing is deleted
    # until the suite ends: on ext4 without a journal, creating inodes soon
    # after deleting many is slow (the allocator skips "recently deleted"
    # inodes one by one), which would tax whichever run follows a cleanup.
    where: dict[str, Path] = {}

    def setup(name: str, rep: int) -> None:
        target = d / f"{name}-{rep}"
        where[name] = target
        if name == "git":
            subprocess.run(["git", "init", "-q", str(target)], check=True, env=ctx.env)
        os.sync()  # no writeback of the previous run during this one

    def git() -> Run:
        return run(
            [
                "git",
                "-C",
                str(where["git"]),
                "-c",
                "core.fsync=loose-object",
                "-c",
                "core.fsyncMethod=batch",
                "hash-object",
                "-w",
                "--stdin-paths",
            ],
            env=ctx.env,
            stdin_path=str(listing),
            stdout_path=str(out_g),
        )

    cmds = [
        (
            "lashctl",
            lambda: run(
                ctx.lashctl(where["lashctl"], "put", "-s", "batch", "--files-from", str(listing)),
                env=ctx.env,
                stdout_path=str(out_l),
            ),
        ),
        ("git", git),
    ]
    reps = cfg.n(3, 5)
    log(f"batch: {reps} runs each")
    s = interleave(reps, cmds, setup=setup)
    for name, out in (("lashctl", out_l), ("git", out_g)):
        got = len(out.read_text().split())
        if got != n:
            raise HarnessError(f"batch: {name} printed {got} ids for {n} files")
    ctx.details["batch"] = {
        k: {"median_s": v.median, "spread": v.spread(), "peak_rss_mib": v.peak_rss_mib} for k, v in s.items()
    }
    ctx.add(
        Result(
            "batch",
            f"batch put --files-from, {n:,} x 4 KiB",
            "ratio",
            s["lashctl"].median,
            s["git"].median,
            1.3,
            baseline_label="git hash-object",
        )
    )
    ctx.note(
        f"batch upload: {reps} runs each, every run into a new empty store / repository "
        "(git init untimed); page cache warm for the input files."
    )
    # The same batch again into a store that holds it all: every input is a
    # dedup hit, and each existing blob is re-hashed before it is kept (a
    # re-upload heals rotten bytes). Reported against the first upload.
    full = where["lashctl"]
    again = interleave(
        reps,
        [
            (
                "dedup",
                lambda: run(
                    ctx.lashctl(full, "put", "-s", "again", "--files-from", str(listing)),
                    env=ctx.env,
                    stdout_path=str(out_l),
                ),
            )
        ],
    )
    ctx.details["batch"]["dedup"] = {"median_s": again["dedup"].median, "spread": again["dedup"].spread()}
    ctx.add(
        Result(
            "batch",
            f"batch put, {n:,} x 4 KiB all already stored (each re-hashed)",
            "info",
            again["dedup"].median,
            s["lashctl"].median,
            baseline_label="first upload",
        )
    )


# =====================================================================================
# 3. Big files
# =====================================================================================
HASH_SCRIPT = """\
import hashlib, sys
h = hashlib.sha256()
with open(sys.argv[1], "rb") as f:
    while True:
        chunk = f.read(1 << 20)
        if not chunk:
            break
        h.update(chunk)
print(h.hexdigest())
"""


COPY_SCRIPT = """\
import os, sys
src, dst = sys.argv[1], sys.argv[2]
with open(src, "rb") as f, open(dst, "wb") as out:
    while True:
        chunk = f.read(1 << 20)
        if not chunk:
            break
        out.write(chunk)
    out.flush()
    os.fsync(out.fileno())
"""


def bench_bigfile(ctx: Context) -> None:
    cfg = ctx.cfg
    size = cfg.big_file
    label = f"{size // GIB} GiB" if size >= GIB else f"{size // MIB} MiB"
    d = ctx.dir("bigfile")
    need = 3 * size + 256 * MIB  # the source, the stored copy, the baseline's copy, slack
    free = disk_free(d)
    if free < need:
        for name in ("put", "get"):
            ctx.add(
                Result(
                    "bigfile",
                    f"big {name} {label} vs sha256",
                    "ratio",
                    status="SKIP",
                    note=f"needs {need // MIB} MiB free, {free // MIB} MiB available",
                )
            )
        ctx.note(f"big files skipped: {d} has {free // MIB} MiB free, the {label} case needs {need // MIB} MiB")
        return
    src = d / "big.bin"
    log(f"big file: generating {label}")
    datagen.write_random_file(src, size, seed=12)
    os.sync()
    store = d / "store"
    hash_cmd = [cfg.python, "-c", HASH_SCRIPT, str(src)]

    copy = d / "copy.bin"

    def put_setup(name: str, _rep: int) -> None:
        if name == "put":
            rmtree(store)
            os.sync()
        elif name == "copy":
            copy.unlink(missing_ok=True)
            os.sync()

    reps = cfg.n(3, 3)
    log(f"big file: put vs sha256, {reps} runs each")
    s = interleave(
        reps,
        [
            ("put", lambda: run(ctx.lashctl(store, "put", "-s", "big", str(src)), env=ctx.env)),
            ("sha256", lambda: run(hash_cmd, env=ctx.env)),
            ("copy", lambda: run([cfg.python, "-c", COPY_SCRIPT, str(src), str(copy)], env=ctx.env)),
        ],
        setup=put_setup,
    )
    copy.unlink(missing_ok=True)
    digest = s["sha256"].last.stdout.decode().strip()
    put_id = s["put"].last.stdout.decode().strip()
    if digest != put_id:
        raise HarnessError(f"big file: put printed {put_id!r}, sha256 is {digest!r}")
    os.sync()
    log(f"big file: get -o - > /dev/null vs sha256 of the stored blob + bare app start-up, {reps} runs each")
    blob = store / "sha256" / digest[:2] / digest
    bare = d / "bare_typer_app.py"
    datagen.write_bare_app(bare)
    small = d / "small.bin"
    small.write_bytes(b"x")
    g = interleave(
        reps,
        [
            ("get", lambda: run(ctx.lashctl(store, "get", digest, "-o", "-"), env=ctx.env, stdout_path=os.devnull)),
            ("sha256", lambda: run([cfg.python, "-c", HASH_SCRIPT, str(blob)], env=ctx.env)),
            ("bare", lambda: run([cfg.python, str(bare), "put", "-s", "s", str(small)], env=ctx.env)),
        ],
    )
    ctx.details["bigfile"] = {
        "size_bytes": size,
        "put": {k: {"median_s": v.median, "spread": v.spread(), "peak_rss_mib": v.peak_rss_mib} for k, v in s.items()},
        "get": {k: {"median_s": v.median, "spread": v.spread(), "peak_rss_mib": v.peak_rss_mib} for k, v in g.items()},
    }
    # A put must read, hash, write and fsync: its floor is the slower of the
    # hash alone and a durable copy (write + fsync) of the same file.
    floor = max(s["sha256"].median, s["copy"].median)
    floor_label = "hashlib" if floor == s["sha256"].median else "durable copy"
    ctx.add(
        Result(
            "bigfile",
            f"big put {label} vs max(sha256, durable copy)",
            "ratio",
            s["put"].median,
            floor,
            1.1,
            baseline_label=floor_label,
        )
    )
    ctx.add(
        Result(
            "bigfile",
            f"big put {label} vs sha256 of it",
            "info",
            s["put"].median,
            s["sha256"].median,
            baseline_label="hashlib",
        )
    )
    ctx.add(
        Result(
            "bigfile",
            f"big put {label} vs durable copy (write + fsync)",
            "info",
            s["put"].median,
            s["copy"].median,
            baseline_label="durable copy",
        )
    )
    # A get starts a Typer app, then reads and hashes: its floor is the hash
    # alone plus the start-up of a bare Typer app (both measured here).
    ctx.add(
        Result(
            "bigfile",
            f"big get {label} -o - >/dev/null vs sha256 + bare app start-up",
            "ratio",
            g["get"].median,
            g["sha256"].median + g["bare"].median,
            1.1,
            baseline_label="hashlib + bare app",
        )
    )
    ctx.add(
        Result(
            "bigfile",
            f"big get {label} -o - >/dev/null vs sha256",
            "info",
            g["get"].median,
            g["sha256"].median,
            baseline_label="hashlib",
        )
    )
    ctx.add(Result("bigfile", f"big put {label}: peak RSS", "limit", s["put"].peak_rss_mib, target=64, unit="MiB"))
    ctx.add(Result("bigfile", f"big get {label}: peak RSS", "limit", g["get"].peak_rss_mib, target=64, unit="MiB"))
    ctx.note(
        f"big files: {reps} runs each; the source file is in the page cache (reads are warm for both); "
        "put writes and fsyncs a staged copy, the baseline only reads. "
        f"sha256 baseline peak RSS {s['sha256'].peak_rss_mib:.1f} MiB."
    )
    rmtree(store)
    src.unlink()


# =====================================================================================
# 4. Big manifests
# =====================================================================================
SQL_UNCOMMITTED = (
    "SELECT attachment_id AS id, session_id, canonical_uri, intent_at_epoch_ms "
    "FROM rows WHERE committed_at_epoch_ms IS NULL "
    "ORDER BY intent_at_epoch_ms, attachment_id, session_id;"
)
SMALL_MANIFEST_ROWS = 1_000


def _truncate(path: Path, size: int) -> None:
    os.truncate(path, size)


def bench_manifest(ctx: Context) -> None:
    cfg = ctx.cfg
    d = ctx.dir("manifest")
    sqlite_cli = shutil.which("sqlite3")
    if not sqlite_cli:
        ctx.note(
            "big manifests: the sqlite3 CLI is NOT installed: the list-uncommitted baseline is "
            "missing (install it: apt-get install sqlite3); lashctl times are still reported"
        )
    try:
        import sqlite3  # noqa: F401  (builds the baseline's table)
    except ImportError:
        sqlite_cli = None
        ctx.note("big manifests: Python's sqlite3 module is missing: no baseline table")

    small = d / "small.bin"
    datagen.write_random_file(small, 2048, seed=13)
    small_id = hashlib.sha256(small.read_bytes()).hexdigest()

    # Baselines: a header-only manifest (put) and a small manifest (commit).
    empty_store = d / "empty"
    datagen.header_only_manifest(empty_store / "manifest.jsonl")
    small_store = d / "small"
    small_store.mkdir(exist_ok=True)
    small_info = datagen.generate_manifest(small_store / "manifest.jsonl", SMALL_MANIFEST_ROWS, seed=5)

    def restore(store: Path, size: int) -> None:
        _truncate(store / "manifest.jsonl", size)
        for p in (store / "sha256" / small_id[:2] / small_id, store / "sha256" / small_id[:2] / (small_id + ".json")):
            try:
                p.unlink()
            except FileNotFoundError:
                pass

    empty_size = (empty_store / "manifest.jsonl").stat().st_size
    small_size = (small_store / "manifest.jsonl").stat().st_size
    largest = cfg.manifest_sizes[-1]
    manifests = {}
    for rows in cfg.manifest_sizes:
        store = d / f"rows{rows}"
        store.mkdir(exist_ok=True)
        mpath = store / "manifest.jsonl"
        db = d / f"rows{rows}.db"
        log(f"manifest: generating {rows:,} rows")
        info = datagen.generate_manifest(mpath, rows, seed=7, sqlite_path=db if sqlite_cli else None)
        size = mpath.stat().st_size
        manifests[rows] = {
            "rows_generated": info.rows_generated,
            "live_rows": info.live_rows,
            "committed": info.committed,
            "uncommitted": info.uncommitted,
            "forgotten": info.forgotten,
            "refreshed": info.refreshed,
            "shared_blobs": info.shared_blobs,
            "sessions": info.sessions,
            "events": info.events,
            "bytes": size,
        }
        os.sync()
        big = rows >= 1_000_000
        reps = cfg.n(3, 3 if big else 5)

        # list-uncommitted vs sqlite3 -json
        out_l, out_s = d / "list.json", d / "sqlite.json"
        cmds = [
            ("list", lambda: run(ctx.lashctl(store, "--json", "list-uncommitted"), env=ctx.env, stdout_path=str(out_l)))
        ]
        if sqlite_cli:
            cmds.append(
                (
                    "sqlite",
                    lambda: run([sqlite_cli, "-json", str(db), SQL_UNCOMMITTED], env=ctx.env, stdout_path=str(out_s)),
                )
            )
        # The first command on a new manifest builds lashctl's state cache:
        # timed once on its own, then the steady state is measured.
        build = run(ctx.lashctl(store, "list-uncommitted", "--session", "none"), env=ctx.env)
        ctx.add(
            Result(
                "manifest",
                f"state cache build, {rows:,}-row manifest (first command only)",
                "limit" if rows == largest else "info",
                build.seconds,
                None,
                4.0 if rows == largest else None,
                "s",
            )
        )
        ctx.details.setdefault("cache_build", {})[rows] = {
            "seconds": build.seconds,
            "peak_rss_mib": build.maxrss_kib / 1024,
        }
        log(f"manifest {rows:,}: list-uncommitted, {reps} runs")
        lst = interleave(reps, cmds)
        listed = json.loads(out_l.read_text())
        if len(listed) != info.uncommitted:
            raise HarnessError(f"list-uncommitted listed {len(listed)} rows, the manifest has {info.uncommitted}")
        if sqlite_cli:
            text = out_s.read_text().strip()
            selected = json.loads(text) if text else []
            if [(r["id"], r["session_id"]) for r in selected] != [(r["id"], r["session_id"]) for r in listed]:
                raise HarnessError("sqlite3 and lashctl list different uncommitted rows")
        # Distinct uncommitted rows to commit, one per timed run, in both stores.
        picks = [(r["session_id"], r["id"]) for r in listed[: reps + 1]]
        del listed
        small_listed = json.loads(run(ctx.lashctl(small_store, "--json", "list-uncommitted"), env=ctx.env).stdout)
        small_picks = [(r["session_id"], r["id"]) for r in small_listed[: reps + 1]]

        # put of one small file: this manifest vs a header-only one
        log(f"manifest {rows:,}: put, {reps} runs")
        pt = interleave(
            reps,
            [
                ("put", lambda: run(ctx.lashctl(store, "put", "-s", "bench", str(small)), env=ctx.env)),
                ("put_empty", lambda: run(ctx.lashctl(empty_store, "put", "-s", "bench", str(small)), env=ctx.env)),
            ],
            setup=lambda name, _r: restore(store, size) if name == "put" else restore(empty_store, empty_size),
            teardown=lambda name, _r: restore(store, size) if name == "put" else restore(empty_store, empty_size),
        )
        rmtree(store / "sha256")
        rmtree(store / "tmp")

        # commit of one existing uncommitted id: this manifest vs a small one.
        # Each run commits a different row and appends its line, as commits do
        # in use. The put runs above restored the manifest by truncation,
        # which lashctl's state cache treats as a rewrite: one untimed command
        # rebuilds the cache first (its time is reported on its own).
        rebuild = run(ctx.lashctl(store, "list-uncommitted", "--session", "none"), env=ctx.env)
        ctx.note(
            f"big manifests: rebuilding the state cache of the {rows:,}-row manifest took "
            f"{rebuild.seconds:.2f} s (once, after the manifest was rewritten)"
        )
        run(ctx.lashctl(small_store, "list-uncommitted", "--session", "none"), env=ctx.env)
        turns = {"commit": iter(picks), "commit_small": iter(small_picks)}

        def commit_next(name: str, where: Path) -> Run:
            sess, aid = next(turns[name])
            return run(ctx.lashctl(where, "commit", "-s", sess, aid), env=ctx.env)

        log(f"manifest {rows:,}: commit, {reps} runs")
        cm = interleave(
            reps,
            [
                ("commit", lambda: commit_next("commit", store)),
                ("commit_small", lambda: commit_next("commit_small", small_store)),
            ],
        )
        if b"committed" not in cm["commit"].last.stdout:
            raise HarnessError(f"commit printed {cm['commit'].last.stdout!r}")
        _truncate(small_store / "manifest.jsonl", small_size)
        if rows == largest:
            # manifest compact holds the folded state and stores it as the new
            # file's cache: the first command after it must not fold again.
            compacted = run(ctx.lashctl(store, "manifest", "compact"), env=ctx.env)
            first = run(ctx.lashctl(store, "list-uncommitted", "--session", "none"), env=ctx.env)
            again = interleave(
                reps, [("again", lambda: run(ctx.lashctl(store, "list-uncommitted", "--session", "none"), env=ctx.env))]
            )["again"]
            ctx.add(Result("manifest", f"manifest compact, {rows:,} rows", "info", compacted.seconds))
            ctx.add(
                Result(
                    "manifest",
                    "first command after manifest compact vs the next ones",
                    "ratio",
                    first.seconds,
                    again.median,
                    1.5,
                    baseline_label="warm cache",
                )
            )

        ctx.growth.append(
            {
                "rows": rows,
                "manifest_mib": round(size / MIB, 1),
                "uncommitted_rows": info.uncommitted,
                "reps": reps,
                "list_uncommitted_s": lst["list"].median,
                "list_uncommitted_rss_mib": lst["list"].peak_rss_mib,
                "sqlite3_s": lst["sqlite"].median if "sqlite" in lst else None,
                "put_s": pt["put"].median,
                "put_empty_manifest_s": pt["put_empty"].median,
                "commit_s": cm["commit"].median,
                "commit_small_manifest_s": cm["commit_small"].median,
            }
        )
        if rows == largest:
            if sqlite_cli:
                ctx.add(
                    Result(
                        "manifest",
                        f"--json list-uncommitted, {rows:,} rows",
                        "ratio",
                        lst["list"].median,
                        lst["sqlite"].median,
                        1.5,
                        baseline_label="sqlite3 -json",
                    )
                )
            else:
                ctx.add(
                    Result(
                        "manifest",
                        f"--json list-uncommitted, {rows:,} rows",
                        "ratio",
                        lst["list"].median,
                        None,
                        1.5,
                        status="SKIP",
                        note="sqlite3 CLI missing",
                    )
                )
            ctx.add(
                Result(
                    "manifest",
                    f"list-uncommitted {rows:,} rows: peak RSS",
                    "limit",
                    lst["list"].peak_rss_mib,
                    target=400,
                    unit="MiB",
                )
            )
            ctx.add(
                Result(
                    "manifest",
                    f"put 2 KiB on {rows:,}-row manifest",
                    "ratio",
                    pt["put"].median,
                    pt["put_empty"].median,
                    1.2,
                    baseline_label="empty manifest",
                )
            )
            ctx.add(
                Result(
                    "manifest",
                    f"commit 1 id on {rows:,}-row manifest",
                    "ratio",
                    cm["commit"].median,
                    cm["commit_small"].median,
                    1.2,
                    baseline_label=f"{SMALL_MANIFEST_ROWS:,} rows",
                )
            )
        (d / f"rows{rows}.db").unlink(missing_ok=True)
        rmtree(store)
    ctx.details["manifest"] = {
        "manifests": manifests,
        "small_manifest_rows": SMALL_MANIFEST_ROWS,
        "mix": small_info.mix,
    }
    ctx.note(
        "big manifests: generated rows have no blobs or sidecars (list-uncommitted reports their bytes "
        "as missing; with blobs present each row also costs a stat and a sidecar read). "
        f"The put baseline is a header-only manifest, the commit baseline a {SMALL_MANIFEST_ROWS:,}-row one; "
        "put runs restore the manifest (truncate) and remove the put blob between runs; each commit run "
        "commits a different uncommitted row (appending, as in use). "
        + ("1M-row cases: 3 runs each." if largest >= 1_000_000 else "")
    )


# =====================================================================================
# 4b. Growth of the commands that no longer fold the whole log
# =====================================================================================
GROWTH_ORPHANS = 100  # a small blob store: the manifest dominates
GROWTH_COMMANDS = ("reclaim", "delete --dry-run", "gc --dry-run", "show", "ls", "stats", "verify", "list-uncommitted")


GROWTH_OUTPUT_GROWS = ("verify", "list-uncommitted")  # a line per row without bytes / uncommitted row


def bench_growth(ctx: Context) -> None:
    """Time and peak RSS of reclaim (few orphans), delete --dry-run, gc --dry-run,
    show, ls, stats and verify on manifests of growing size, with the same
    small blob store; the cache is warm (one command first)."""
    cfg = ctx.cfg
    d = ctx.dir("growth")
    reps = cfg.n(3, 3)
    table = []
    largest = cfg.manifest_sizes[-1]
    for rows in cfg.manifest_sizes:
        store = d / f"rows{rows}"
        store.mkdir(exist_ok=True)
        mpath = store / "manifest.jsonl"
        log(f"growth: generating a {rows:,}-row manifest and {GROWTH_ORPHANS} orphans")
        datagen.generate_manifest(mpath, rows, seed=9)
        # Orphans older than every generated row: a cutoff between them reclaims only these.
        now = int(time.time() * 1000)
        orphan_at = now - 40 * datagen.DAY_MS
        cutoff_s = (now - 35 * datagen.DAY_MS) // 1000
        ids = datagen.add_orphans(store, GROWTH_ORPHANS, 1024, orphan_at)
        template = d / f"rows{rows}-objects"
        copy_tree(store / "sha256", template)
        size = mpath.stat().st_size
        os.sync()

        def restore(store=store, mpath=mpath, size=size, template=template) -> None:
            _truncate(mpath, size)
            copy_tree(template, store / "sha256")

        warm = ctx.lashctl(store, "list-uncommitted", "--session", "none")
        argv = {
            "reclaim": ctx.lashctl(store, "reclaim", "--before", f"@{cutoff_s}"),
            "delete --dry-run": ctx.lashctl(store, "delete", "--dry-run", "--force", ids[0]),
            "gc --dry-run": ctx.lashctl(store, "gc", "--dry-run"),
            "show": ctx.lashctl(store, "show", ids[1]),
            "ls": ctx.lashctl(store, "ls"),
            "stats": ctx.lashctl(store, "stats"),
            "verify": ctx.lashctl(store, "verify"),
            "list-uncommitted": ctx.lashctl(store, "--json", "list-uncommitted"),
        }
        codes = {"verify": (0, 65), "stats": (0, 65)}  # generated committed rows have no bytes
        entry = {"rows": rows, "manifest_mib": round(size / MIB, 1)}
        run(warm, env=ctx.env)
        for name in GROWTH_COMMANDS:
            series = Series(name)
            for _ in range(reps):
                if name == "reclaim":
                    restore()
                    run(warm, env=ctx.env)  # the truncation is a rewrite: warm the cache again, untimed
                    os.sync()
                series.add(run(argv[name], env=ctx.env, stdout_path=os.devnull, expect_codes=codes.get(name, (0,))))
            if name == "reclaim":
                restore()
                run(warm, env=ctx.env)
                os.sync()
            entry[name] = {"median_s": series.median, "peak_rss_mib": series.peak_rss_mib, "spread": series.spread()}
            log(f"growth {rows:,}: {name} {series.median:.3f} s, {series.peak_rss_mib:.0f} MiB")
        table.append(entry)
        if rows == largest:
            ctx.add(
                Result(
                    "growth",
                    f"reclaim ({GROWTH_ORPHANS} orphans) on {rows:,} rows vs list-uncommitted",
                    "ratio",
                    entry["reclaim"]["median_s"],
                    entry["list-uncommitted"]["median_s"],
                    2.0,
                    baseline_label="list-uncommitted",
                )
            )
            ctx.add(
                Result(
                    "growth",
                    f"reclaim ({GROWTH_ORPHANS} orphans) on {rows:,} rows: peak RSS",
                    "limit",
                    entry["reclaim"]["peak_rss_mib"],
                    target=150,
                    unit="MiB",
                )
            )
            ctx.add(
                Result(
                    "growth",
                    f"verify on {rows:,} rows vs ls",
                    "ratio",
                    entry["verify"]["median_s"],
                    entry["ls"]["median_s"],
                    2.0,
                    baseline_label="ls",
                )
            )
            ctx.add(
                Result(
                    "growth",
                    f"verify on {rows:,} rows: peak RSS",
                    "limit",
                    entry["verify"]["peak_rss_mib"],
                    target=150,
                    unit="MiB",
                )
            )
        rmtree(store)
        rmtree(template)
    if len(table) >= 2:
        # Peak RSS from the second largest manifest to the largest: flat, but
        # for the commands whose output grows with the rows (one line each).
        before, last = table[-2], table[-1]
        for name in GROWTH_COMMANDS:
            ctx.add(
                Result(
                    "growth",
                    f"{name}: peak RSS, {last['rows']:,} vs {before['rows']:,} rows",
                    "ratio",
                    last[name]["peak_rss_mib"],
                    before[name]["peak_rss_mib"],
                    None if name in GROWTH_OUTPUT_GROWS else 1.2,
                    unit="MiB",
                    baseline_label=f"{before['rows']:,} rows",
                )
            )
    ctx.growth_commands = table
    ctx.details["growth_commands"] = table
    ctx.note(
        f"growth: each manifest has {GROWTH_ORPHANS} orphans (blob + sidecar, intents 40 days old) and no "
        "other blobs; reclaim uses a cutoff that reaches only them, and each reclaim run starts from a "
        "restored store with a warm cache (untimed); verify and stats exit 65 there (committed rows "
        f"without bytes), which is expected. {reps} runs each."
    )


# =====================================================================================
# 5. Big sweeps
# =====================================================================================
def bench_sweep(ctx: Context) -> None:
    cfg = ctx.cfg
    n = cfg.sweep_orphans
    d = ctx.dir("sweep")
    find = shutil.which("find")
    blob_size = 1024
    reps = cfg.n(3, 3)
    copies_needed = 1 + 2 * reps  # the template and a copy per timed run
    need = copies_needed * n * (4096 + 4096) + 256 * MIB  # a block per blob and per sidecar
    need_inodes = copies_needed * 2 * n + 10_000
    free = disk_free(d)
    inodes = os.statvfs(d).f_favail
    if free < need or inodes < need_inodes:
        why = (
            f"needs {need // MIB} MiB and {need_inodes:,} inodes free in {d}; "
            f"{free // MIB} MiB and {inodes:,} inodes available"
        )
        ctx.add(Result("sweep", f"reclaim {n:,} orphans vs find -delete", "ratio", status="SKIP", note=why))
        ctx.note(f"big sweeps skipped: {why}")
        return
    template = d / "template"
    log(f"sweep: generating {n:,} orphans (blob + sidecar each)")
    datagen.make_orphan_store(template, n, blob_size)
    os.sync()
    # All copies are made before the first timed deletion: on ext4 without a
    # journal, creating inodes right after deleting many is slow (the inode
    # allocator checks "recently deleted" inodes one by one), so copying after
    # a sweep would crawl. Deleting is what is measured, and it is unaffected.
    copies: dict[tuple[str, int], Path] = {}
    for rep in range(reps):
        for name in ("reclaim", "find"):
            t0 = time.perf_counter()
            copies[name, rep] = d / f"{name}-{rep}"
            copy_tree(template, copies[name, rep])
            log(f"sweep: copy for run {rep + 1} of {name} made in {time.perf_counter() - t0:.1f}s")
    os.sync()
    where: dict[str, Path] = {}

    def setup(name: str, rep: int) -> None:
        where[name] = copies[name, rep]
        os.sync()

    def teardown(name: str, _rep: int) -> None:
        left = count_files(where[name] / "sha256")
        if left:
            raise HarnessError(f"sweep: {name} left {left} files under sha256/")

    cmds = [
        (
            "reclaim",
            lambda: run(
                ctx.lashctl(where["reclaim"], "reclaim", "--force", "--older-than", "1m"),
                env=ctx.env,
                stdout_path=os.devnull,
            ),
        )
    ]
    if find:
        cmds.append(
            ("find", lambda: run([find, "sha256", "-type", "f", "-delete"], env=ctx.env, cwd=str(where["find"])))
        )
    else:
        ctx.note("big sweeps: find is not installed: no baseline")
    log(f"sweep: {reps} runs each (each on its own cp -a copy of the store)")
    s = interleave(reps, cmds, setup=setup, teardown=teardown)
    ctx.details["sweep"] = {
        k: {"median_s": v.median, "spread": v.spread(), "peak_rss_mib": v.peak_rss_mib} for k, v in s.items()
    }
    if find:
        ctx.add(
            Result(
                "sweep",
                f"reclaim {n:,} orphans vs find -delete",
                "ratio",
                s["reclaim"].median,
                s["find"].median,
                1.3,
                baseline_label="find -delete",
            )
        )
    else:
        ctx.add(
            Result(
                "sweep",
                f"reclaim {n:,} orphans vs find -delete",
                "ratio",
                s["reclaim"].median,
                status="SKIP",
                note="find missing",
            )
        )
    ctx.add(
        Result("sweep", f"reclaim {n:,} orphans: peak RSS", "limit", s["reclaim"].peak_rss_mib, target=100, unit="MiB")
    )
    ctx.note(
        f"big sweeps: {n:,} orphans of {blob_size} B with a sidecar each, intents dated 2 days ago; "
        f"{reps} runs, each on its own `cp -a` copy made before the first timed run "
        "(os.sync() before timing)."
    )


# =====================================================================================
# 6. lash's SQLite session databases
# =====================================================================================
SQLITE_ROWS_PER_DB = 100
SQLITE_COMMITTED_PER_DB = 10  # the rest are aged orphans
SQLITE_TURN_OWNED_PER_DB = 10  # of the orphans: owned by a turn a later commit made dead

# The floor for "read every database": each primary session database opened
# read-only, one at a time, every row fetched. With --stat, also an os.stat
# of each uncommitted row's blob (what telling whether its bytes exist costs).
READ_SESSIONS_SCRIPT = """\
import os, sqlite3, sys
from urllib.parse import quote
directory, store, stat = sys.argv[1], sys.argv[2], "--stat" in sys.argv
rows = present = 0
for name in sorted(os.listdir(directory)):
    if not name.endswith(".db") or ".db" in name[:-3]:
        continue
    path = os.path.join(directory, name)
    conn = sqlite3.connect("file:%s?mode=ro" % quote(path, safe="/"), uri=True)
    got = conn.execute("SELECT session_id, attachment_id, canonical_uri, intent_at_ms, committed_at_ms,"
                       " owner_kind, owner_id FROM attachment_manifest").fetchall()
    conn.close()
    rows += len(got)
    if stat:
        for row in got:
            if row[4] is None:
                try:
                    os.stat(os.path.join(store, "sha256", row[1][:2], row[1]))
                    present += 1
                except FileNotFoundError:
                    pass
print(rows, present)
"""


def bench_sqlite(ctx: Context) -> None:
    """list-uncommitted and reclaim --dry-run on a directory of lash session
    databases, against a Python reading every database's rows."""
    cfg = ctx.cfg
    n = cfg.session_dbs
    d = ctx.dir("sqlite")
    sessions, store = d / "sessions", d / "store"
    now_ms = int(time.time() * 1000)
    aged_ms = now_ms - 40 * datagen.DAY_MS
    log(f"sqlite: generating {n:,} session databases of {SQLITE_ROWS_PER_DB} rows, a blob each")
    t0 = time.perf_counter()
    info = datagen.make_lash_sessions(
        sessions,
        store,
        n,
        SQLITE_ROWS_PER_DB,
        SQLITE_COMMITTED_PER_DB,
        SQLITE_TURN_OWNED_PER_DB,
        aged_ms,
        aged_ms / 1000,
    )
    os.sync()
    log(f"sqlite: generated in {time.perf_counter() - t0:.0f}s")
    out_l, out_r = d / "list.json", d / "reclaim.json"
    base = [*ctx.lashctl(store, "--manifest", f"lash-sqlite:{sessions}"), "--json"]
    read = [cfg.python, "-c", READ_SESSIONS_SCRIPT, str(sessions), str(store)]
    cmds = [
        ("list", lambda: run([*base, "list-uncommitted"], env=ctx.env, stdout_path=str(out_l))),
        ("reclaim", lambda: run([*base, "reclaim", "--dry-run"], env=ctx.env, stdout_path=str(out_r))),
        ("read", lambda: run(read, env=ctx.env)),
        ("read_stat", lambda: run([*read, "--stat"], env=ctx.env)),
    ]
    reps = cfg.n(3, 5)
    log(f"sqlite: {reps} interleaved runs of each of {len(cmds)} commands")
    s = interleave(reps, cmds, warmup=1)
    _check_sqlite_outputs(info, out_l, out_r, s["read_stat"].last.stdout)
    ctx.details["sqlite"] = {
        "data": vars(info),
        "runs": {k: {"median_s": v.median, "spread": v.spread(), "peak_rss_mib": v.peak_rss_mib} for k, v in s.items()},
    }
    what = f"{n:,} session dbs x {SQLITE_ROWS_PER_DB} rows"
    floor = "python sqlite3, every db read"
    for name, label in (("list", "--json list-uncommitted"), ("reclaim", "--json reclaim --dry-run")):
        ctx.add(Result("sqlite", f"{label}, {what}", "info", s[name].median, s["read"].median, baseline_label=floor))
        ctx.add(
            Result(
                "sqlite",
                f"{label}, {what}: peak RSS",
                "info",
                s[name].peak_rss_mib,
                s["read"].peak_rss_mib,
                unit="MiB",
                baseline_label=floor,
            )
        )
    ctx.add(
        Result(
            "sqlite",
            f"every db read + a stat per uncommitted blob, {what}",
            "info",
            s["read_stat"].median,
            s["read"].median,
            baseline_label=floor,
        )
    )
    ctx.note(
        f"sqlite: {info.databases:,} primary session databases in lash's schema (version "
        f"{datagen.LASH_SCHEMA_VERSION}, WAL mode, named by lash's rule), {info.rows:,} rows: per database "
        f"{SQLITE_COMMITTED_PER_DB} committed, the rest uncommitted intents 40 days old "
        f"({SQLITE_TURN_OWNED_PER_DB} owned by a turn a later turn's commit made dead, the others "
        "ownerless); every row's blob present in a bare directory store, a few distinct bytes dated 40 "
        "days ago, so list-uncommitted stats real blobs and reclaim --dry-run plans to reclaim every "
        f"orphan ({info.uncommitted:,}) rather than sparing them. {reps} interleaved runs each, 1 warm-up; "
        "the page cache is warm."
    )


def _check_sqlite_outputs(info: datagen.SessionsInfo, listing: Path, plan: Path, read: bytes) -> None:
    listed = json.loads(listing.read_text())
    if len(listed) != info.uncommitted or not all(r["bytes_present"] for r in listed):
        raise HarnessError(
            f"sqlite: list-uncommitted listed {len(listed)} rows, expected {info.uncommitted} with their bytes"
        )
    report = json.loads(plan.read_text())
    if report["blobs_reclaimed"] != info.uncommitted:
        raise HarnessError(
            f"sqlite: reclaim --dry-run would reclaim {report['blobs_reclaimed']} blobs, expected {info.uncommitted}"
        )
    if read.split() != [str(info.rows).encode(), str(info.uncommitted).encode()]:
        raise HarnessError(f"sqlite: the baseline printed {read!r}, expected {info.rows} {info.uncommitted}")


from remote import bench_remote  # noqa: E402  (the S3 + PostgreSQL rows)

GROUPS: dict[str, Callable[[Context], None]] = {
    "startup": bench_startup,
    "batch": bench_batch,
    "bigfile": bench_bigfile,
    "manifest": bench_manifest,
    "growth": bench_growth,
    "sweep": bench_sweep,
    "sqlite": bench_sqlite,
    "remote": bench_remote,
}
