"""The object-store and PostgreSQL rows: lashctl against the same moto S3
server and the same throwaway PostgreSQL as its baselines, in the same run.

Needs the ``s3`` and ``postgres`` extras, moto's server and the PostgreSQL
binaries (``pg_config --bindir``); without them the group reports SKIP with
the reason. The servers are started with the helpers the tests use
(``tests/servers.py``, ``tests/pgserver.py``).
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from pathlib import Path

from harness import Result, interleave, log, run

ROOT = Path(__file__).resolve().parents[1]


def bench_remote(ctx) -> None:
    try:
        sys.path.insert(0, str(ROOT / "tests"))
        import obstore  # noqa: F401
        import pgserver
        import psycopg
        import servers
    except Exception as exc:  # noqa: BLE001 - any missing piece: the group is skipped
        ctx.add(Result("remote", "S3 + PostgreSQL rows", "info", status="SKIP", note=f"not available: {exc}"))
        return
    try:
        server, stop = pgserver.start()
    except BaseException as exc:  # noqa: BLE001 - pytest.skip/fail raise BaseException subclasses
        ctx.add(Result("remote", "S3 + PostgreSQL rows", "info", status="SKIP", note=f"no PostgreSQL: {exc}"))
        return
    d = ctx.dir("remote")
    try:
        # Pages of 1,000 keys, as S3 itself answers a listing (moto's default is 100).
        with servers.moto_server(d, env={"MOTO_S3_DEFAULT_MAX_KEYS": "1000"}) as endpoint:
            env = dict(
                ctx.env,
                AWS_ACCESS_KEY_ID="bench",
                AWS_SECRET_ACCESS_KEY="bench",
                AWS_REGION="us-east-1",
                AWS_ENDPOINT_URL=endpoint,
                AWS_ALLOW_HTTP="true",
            )
            os.environ.update(
                {
                    k: env[k]
                    for k in (
                        "AWS_ACCESS_KEY_ID",
                        "AWS_SECRET_ACCESS_KEY",
                        "AWS_REGION",
                        "AWS_ENDPOINT_URL",
                        "AWS_ALLOW_HTTP",
                    )
                }
            )
            _put_rows(ctx, d, env, servers.new_bucket(endpoint, "bench"))
            _table_rows(ctx, d, env, server, pgserver, psycopg)
            _reclaim_rows(ctx, d, env, servers.new_bucket(endpoint, "benchr"), server, pgserver, psycopg)
    finally:
        stop()


def _lashctl(ctx, store: str, manifest: str, *args: str) -> list[str]:
    return [*ctx.cfg.lashctl, "--store", store, "--manifest", manifest, *args]


def _put_rows(ctx, d: Path, env: dict, bucket: str) -> None:
    n = ctx.cfg.n(500, 10_000)
    reps = ctx.cfg.n(2, 3)
    files = d / "files"
    files.mkdir(exist_ok=True)
    paths = []
    for i in range(n):
        path = files / f"{i:06d}"
        path.write_bytes(os.urandom(4096))
        paths.append(str(path))
    listing = d / "files.list"
    listing.write_text("\n".join(paths) + "\n")
    # The baseline puts the same objects lashctl does (each file's sidecar, then
    # the file), 16 files in flight as in lashctl's batch (s3.CONCURRENCY).
    script = d / "obstore_put.py"
    script.write_text(
        "import hashlib, json, os, sys\nfrom concurrent.futures import ThreadPoolExecutor\n"
        "from obstore.store import S3Store\nimport obstore\n"
        "store = S3Store(sys.argv[1])\n"
        "def one(p):\n"
        "    data = open(p, 'rb').read()\n"
        "    i = hashlib.sha256(data).hexdigest()\n"
        "    side = json.dumps({'attachment_id': i, 'media_type': 'application/octet-stream',"
        " 'byte_len': len(data), 'label': os.path.basename(p)}).encode()\n"
        "    obstore.put(store, f'{sys.argv[2]}/sha256/{i[:2]}/{i}.json', side)\n"
        "    obstore.put(store, f'{sys.argv[2]}/sha256/{i[:2]}/{i}', data)\n"
        "with ThreadPoolExecutor(16) as pool:\n"
        "    list(pool.map(one, open(sys.argv[3]).read().split()))\n"
    )
    count = {"lashctl": 0, "obstore": 0}

    def lashctl_put():
        count["lashctl"] += 1
        return run(
            _lashctl(
                ctx,
                f"s3://{bucket}/l{count['lashctl']}",
                str(d / f"m{count['lashctl']}.jsonl"),
                "put",
                "-q",
                "-s",
                "bench",
                "--files-from",
                str(listing),
            ),
            env=env,
            stdout_path=os.devnull,
        )

    def obstore_put():
        count["obstore"] += 1
        return run([sys.executable, str(script), bucket, f"o{count['obstore']}", str(listing)], env=env)

    log(f"remote: put of {n:,} x 4 KiB to S3, {reps} runs each")
    s = interleave(reps, [("lashctl", lashctl_put), ("obstore", obstore_put)])
    ctx.add(
        Result(
            "remote",
            f"batch put {n:,} x 4 KiB to S3 vs obstore (same objects, 16 in flight)",
            "ratio",
            s["lashctl"].median,
            s["obstore"].median,
            1.5,
            baseline_label="obstore put",
        )
    )


def bench_id(i: int) -> str:
    """The i-th id: a sha256, spread over the 256 shards as real ids are."""
    return hashlib.sha256(b"bench %d" % i).hexdigest()


def _fill_table(url: str, psycopg, n: int, *, committed_every: int = 10) -> None:
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        with cur.copy(
            "COPY lash_attachment_manifest (attachment_id, session_id, canonical_uri, intent_at_ms,"
            " committed_at_ms) FROM STDIN"
        ) as copy:
            for i in range(n):
                aid = bench_id(i)
                copy.write_row(
                    (
                        aid,
                        "s",
                        "sha256:" + aid,
                        1_700_000_000_000 + i,
                        None if i % committed_every else 1_700_000_000_001 + i,
                    )
                )


def _table_rows(ctx, d: Path, env: dict, server, pgserver, psycopg) -> None:
    n = ctx.cfg.n(100_000, 1_000_000)
    reps = ctx.cfg.n(2, 3)
    big = pgserver.fresh_database(server, "benchbig")
    empty = pgserver.fresh_database(server, "benchempty")
    store = str(d / "store")
    os.makedirs(store, exist_ok=True)
    for url in (big, empty):
        run([*ctx.cfg.lashctl, "--manifest", url, "manifest", "init"], env=env)
    log(f"remote: filling a {n:,}-row table")
    _fill_table(big, psycopg, n)
    with psycopg.connect(big, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE lash_attachment_manifest")
    psql = str(Path(pgserver._bindir() or "") / "psql")
    query = (
        "SELECT coalesce(json_agg(json_build_object('id', attachment_id, 'session_id', session_id,"
        " 'canonical_uri', canonical_uri, 'intent_at_epoch_ms', intent_at_ms) ORDER BY intent_at_ms,"
        " attachment_id, session_id), '[]') FROM lash_attachment_manifest WHERE committed_at_ms IS NULL"
    )
    cmds = [
        (
            "lashctl",
            lambda: run(_lashctl(ctx, store, big, "--json", "list-uncommitted"), env=env, stdout_path=os.devnull),
        )
    ]
    if os.path.exists(psql):
        cmds.append(("psql", lambda: run([psql, big, "-At", "-c", query], env=env, stdout_path=os.devnull)))
    log(f"remote: list-uncommitted on {n:,} rows, {reps} runs each")
    s = interleave(reps, cmds, warmup=1)
    if "psql" in s:
        ctx.add(
            Result(
                "remote",
                f"--json list-uncommitted, {n:,}-row table vs psql JSON",
                "ratio",
                s["lashctl"].median,
                s["psql"].median,
                1.5,
                baseline_label="psql json_agg",
            )
        )
    # commit of one id (an uncommitted row of each table), big against empty
    target = bench_id(1)
    with psycopg.connect(empty) as conn:
        conn.execute("INSERT INTO lash_attachment_manifest VALUES (%s, 's', 'u', 1, NULL, NULL, NULL)", (target,))
    commit = {"big": big, "empty": empty}

    def committing(name):
        def go():
            with psycopg.connect(commit[name], autocommit=True) as conn:  # uncommit it again
                conn.execute(
                    "UPDATE lash_attachment_manifest SET committed_at_ms = NULL WHERE attachment_id = %s", (target,)
                )
            return run(
                _lashctl(ctx, store, commit[name], "commit", "-q", "-s", "s", target), env=env, stdout_path=os.devnull
            )

        return go

    s = interleave(ctx.cfg.n(5, 10), [("big", committing("big")), ("empty", committing("empty"))], warmup=1)
    ctx.add(
        Result(
            "remote",
            f"commit 1 id on a {n:,}-row table vs an empty one",
            "ratio",
            s["big"].median,
            s["empty"].median,
            1.2,
            baseline_label="empty table",
        )
    )


def _reclaim_rows(ctx, d: Path, env: dict, bucket: str, server, pgserver, psycopg) -> None:
    import obstore
    from obstore.store import S3Store

    n = ctx.cfg.n(2_000, 100_000)
    store = S3Store(bucket)
    times = {"lashctl": [], "baseline": [], "listing": []}
    for rep in range(ctx.cfg.n(1, 2)):
        for which in ("lashctl", "baseline"):
            url = pgserver.fresh_database(server, f"benchr{rep}{which[0]}")
            run([*ctx.cfg.lashctl, "--manifest", url, "manifest", "init"], env=env)
            prefix = f"r{rep}{which[0]}"
            keys = [f"{prefix}/sha256/{bench_id(i)[:2]}/{bench_id(i)}" for i in range(n)]
            log(f"remote: reclaim run {rep + 1} ({which}): uploading {n:,} orphans")
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(16) as pool:
                list(pool.map(lambda k: obstore.put(store, k, b"x" * 64), keys))
            _fill_table(url, psycopg, n, committed_every=n + 1)
            started = time.perf_counter()
            if which == "lashctl":
                run(
                    _lashctl(
                        ctx,
                        f"s3://{bucket}/{prefix}",
                        url,
                        "reclaim",
                        "-q",
                        "--force",
                        "--before",
                        "2999-01-01T00:00:00Z",
                    ),
                    env=env,
                    stdout_path=os.devnull,
                )
            else:
                # What the sweep's re-read of each object's LastModified costs at
                # the least: one listing of each shard holding orphans (timed
                # apart, not part of the baseline of the target).
                from concurrent.futures import ThreadPoolExecutor

                def list_shard(shard: str) -> int:
                    return sum(len(page) for page in obstore.list(store, f"{prefix}/sha256/{shard}/", chunk_size=1000))

                with ThreadPoolExecutor(16) as pool:
                    listed = sum(pool.map(list_shard, sorted({bench_id(i)[:2] for i in range(n)})))
                assert listed == n, listed
                times["listing"].append(time.perf_counter() - started)
                started = time.perf_counter()
                for start in range(0, n, 1000):
                    obstore.delete(store, keys[start : start + 1000])
                with psycopg.connect(url, autocommit=True) as conn:
                    conn.execute("DELETE FROM lash_attachment_manifest WHERE committed_at_ms IS NULL")
            times[which].append(time.perf_counter() - started)
    ctx.add(
        Result(
            "remote",
            f"reclaim {n:,} orphans on S3 + PostgreSQL vs obstore batch delete + one DELETE",
            "ratio",
            min(times["lashctl"]),
            min(times["baseline"]),
            2.0,
            baseline_label="batch delete + DELETE",
        )
    )
    floor = min(times["listing"]) + min(times["baseline"])
    ctx.add(
        Result(
            "remote",
            f"reclaim {n:,} orphans vs obstore listing of their shards + batch delete + DELETE",
            "info",
            min(times["lashctl"]),
            floor,
            None,
            baseline_label="listing + delete + DELETE",
        )
    )
