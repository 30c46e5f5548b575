"""--metrics-file: what each command writes, and that it writes it however the run ends."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import blob_path, land_at_intents, sha

pytest.importorskip("prometheus_client")

DAY = 86_400_000


def samples(path: Path) -> dict[str, list[tuple[dict, float]]]:
    """The file's samples by metric name: (labels, value) each."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, list[tuple[dict, float]]] = {}
    for family in text_string_to_metric_families(path.read_text("utf-8")):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def value(path: Path, name: str, **labels: str) -> float:
    found = [v for got, v in samples(path).get(name, []) if all(got.get(k) == w for k, w in labels.items())]
    assert len(found) == 1, (name, labels, samples(path).get(name))
    return found[0]


def put(cli, data: bytes, session: str = "s1") -> str:
    result = cli("put", "-s", session, "-", input=data)
    assert result.exit_code == 0, result.stderr
    return sha(data)


def age_everything(store: Path, days: int = 2) -> None:
    """Every intent (and the bytes it landed) dated ``days`` ago."""
    manifest = store / "manifest.jsonl"
    then = int(time.time() * 1000) - days * DAY
    events = [json.loads(line) for line in manifest.read_text("utf-8").splitlines()]
    for event in events:
        if event.get("op") == "intent":
            event["intent_at_epoch_ms"] = then
    manifest.write_text("".join(json.dumps(e, separators=(",", ":")) + "\n" for e in events), "utf-8")
    land_at_intents(store, events)


@pytest.fixture
def aged_store(cli, store):
    """Two orphans (3 and 5 bytes) and a committed blob with an aged intent of another session."""
    put(cli, b"one")
    put(cli, b"three")
    kept = put(cli, b"committed")
    put(cli, b"committed", session="s2")
    assert cli("commit", "-s", "s2", kept).exit_code == 0
    age_everything(store)
    return store


def test_reclaim_writes_its_report_and_the_run(cli, aged_store, tmp_path):
    out = tmp_path / "reclaim.prom"
    before = time.time()
    result = cli("reclaim", "--metrics-file", str(out))
    assert result.exit_code == 0, result.stderr
    common = {"command": "reclaim", "store": str(aged_store.resolve()), "manifest_kind": "jsonl"}
    assert value(out, "lashctl_deleted_blobs", **common) == 2
    assert value(out, "lashctl_freed_bytes", **common) == 8
    assert value(out, "lashctl_reclaim_released_rows", **common) == 1
    assert value(out, "lashctl_reclaim_scanned_intents", **common) == 3
    assert value(out, "lashctl_failures", **common) == 0
    assert value(out, "lashctl_deleted_while_referenced_blobs", **common) == 0
    assert value(out, "lashctl_reclaim_spared_blobs", **common) == 0
    assert value(out, "lashctl_run_exit_code", **common) == 0
    assert value(out, "lashctl_run_success", **common) == 1
    assert value(out, "lashctl_run_dry_run", **common) == 0
    assert before - 5 <= value(out, "lashctl_run_start_timestamp_seconds", **common) <= time.time()
    assert 0 <= value(out, "lashctl_run_duration_seconds", **common) < 60
    assert before <= value(out, "lashctl_last_success_timestamp_seconds", **common) <= time.time()
    assert value(out, "lashctl_build_info", version=__import__("lashctl").__version__) == 1
    # Every sample carries the same three labels (and no others but its own).
    for name, got in samples(out).items():
        for labels, _ in got:
            assert {k: labels[k] for k in common} == common, (name, labels)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("reclaim.prom")] == ["reclaim.prom"]


def test_a_dry_run_and_a_failed_run_keep_the_last_success(cli, aged_store, tmp_path):
    out = tmp_path / "reclaim.prom"
    assert cli("reclaim", "--dry-run", "--metrics-file", str(out)).exit_code == 0
    assert value(out, "lashctl_run_dry_run") == 1
    assert value(out, "lashctl_deleted_blobs") == 2  # would delete
    assert "lashctl_last_success_timestamp_seconds" not in samples(out)  # no real sweep yet

    assert cli("reclaim", "--metrics-file", str(out)).exit_code == 0
    succeeded = value(out, "lashctl_last_success_timestamp_seconds")

    result = cli("reclaim", "--metrics-file", str(out), "--older-than", "soon")
    assert result.exit_code == 2
    assert value(out, "lashctl_run_exit_code") == 2
    assert value(out, "lashctl_run_success") == 0
    assert value(out, "lashctl_last_success_timestamp_seconds") == succeeded
    assert "lashctl_deleted_blobs" not in samples(out)  # no report: no counts

    assert cli("reclaim", "--dry-run", "--metrics-file", str(out)).exit_code == 0
    assert value(out, "lashctl_last_success_timestamp_seconds") == succeeded


def test_the_file_is_written_when_the_store_is_missing(cli, tmp_path):
    out = tmp_path / "m.prom"
    result = cli("gc", "--metrics-file", str(out))
    assert result.exit_code == 2, result.stderr
    assert value(out, "lashctl_run_exit_code", command="gc") == 2
    assert value(out, "lashctl_run_success", command="gc") == 0


def test_a_usage_error_click_finds_after_the_option_is_reported(cli, store, tmp_path):
    put(cli, b"x")
    out = tmp_path / "m.prom"
    result = cli("delete", "--metrics-file", str(out))  # no ID
    assert result.exit_code == 2
    assert value(out, "lashctl_run_exit_code", command="delete") == 2


def test_an_interrupted_sweep_reports_its_signal(cli, aged_store, tmp_path, monkeypatch):
    from lashctl import sweep

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(sweep, "reclaim", interrupted)
    out = tmp_path / "m.prom"
    result = cli("reclaim", "--metrics-file", str(out))
    assert result.exit_code == 130
    assert value(out, "lashctl_run_exit_code") == 130
    assert value(out, "lashctl_run_success") == 0


def test_help_writes_no_file(cli, tmp_path):
    out = tmp_path / "m.prom"
    result = cli("reclaim", "--metrics-file", str(out), "--help")
    assert result.exit_code == 0
    assert not out.exists()


def test_a_directory_gets_a_file_per_command_and_the_variable_names_it(cli, aged_store, tmp_path):
    folder = tmp_path / "textfile"
    folder.mkdir()
    for command in ("stats", "verify", "reclaim"):
        result = cli(command, env={"LASHCTL_METRICS_FILE": str(folder)})
        assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in folder.iterdir()) == [
        "lashctl_reclaim.prom",
        "lashctl_stats.prom",
        "lashctl_verify.prom",
    ]


def test_stats_writes_the_stores_figures(cli, aged_store, tmp_path):
    out = tmp_path / "stats.prom"
    assert cli("stats", "--metrics-file", str(out)).exit_code == 0
    assert value(out, "lashctl_store_blobs") == 3
    assert value(out, "lashctl_store_bytes") == 3 + 5 + 9
    assert value(out, "lashctl_store_reclaimable_blobs") == 2
    assert value(out, "lashctl_store_reclaimable_bytes") == 8
    assert value(out, "lashctl_store_uncommitted_rows") == 3
    assert value(out, "lashctl_store_committed_rows") == 1
    assert value(out, "lashctl_store_state_blobs", state="committed") == 1
    assert value(out, "lashctl_store_state_bytes", state="uncommitted") == 8
    assert value(out, "lashctl_store_manifest_lines") > 0


def test_verify_writes_its_findings_by_kind_and_fails_with_them(cli, store, tmp_path):
    out = tmp_path / "verify.prom"
    broken = put(cli, b"will be damaged")
    put(cli, b"fine")
    path = blob_path(store, broken)
    os.chmod(path, 0o644)
    path.write_bytes(b"damaged!")
    result = cli("verify", "--metrics-file", str(out))
    assert result.exit_code == 65
    assert value(out, "lashctl_verify_findings", kind="hash-mismatch", severity="error") == 1
    assert value(out, "lashctl_verify_errors") == 1
    assert value(out, "lashctl_verify_checked_blobs") == 2
    assert value(out, "lashctl_run_exit_code") == 65


def test_gc_and_delete_write_what_they_deleted(cli, store, tmp_path):
    kept = put(cli, b"kept")
    assert cli("commit", "-s", "s1", kept).exit_code == 0
    out = tmp_path / "delete.prom"
    result = cli("delete", "--force", kept, "--metrics-file", str(out))
    assert result.exit_code == 0, result.stderr
    assert value(out, "lashctl_deleted_blobs", command="delete") == 1
    assert value(out, "lashctl_freed_bytes", command="delete") == 4
    assert value(out, "lashctl_run_dry_run", command="delete") == 0

    stays = put(cli, b"stays")  # gc refuses a manifest that references nothing present
    assert cli("commit", "-s", "s1", stays).exit_code == 0
    stray = blob_path(store, sha(b"nobody's"))
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_bytes(b"nobody's")
    then = time.time() - 3 * 86400
    os.utime(stray, (then, then))
    out = tmp_path / "gc.prom"
    result = cli("gc", "--metrics-file", str(out))
    assert result.exit_code == 0, result.stderr
    assert value(out, "lashctl_deleted_blobs", command="gc") == 1
    assert value(out, "lashctl_freed_bytes", command="gc") == 8
    assert value(out, "lashctl_gc_scanned_blobs", command="gc") == 2


def test_without_prometheus_client_the_option_is_a_usage_error(cli, aged_store, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # as if not installed
    out = tmp_path / "m.prom"
    result = cli("reclaim", "--metrics-file", str(out))
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "lashctl: error: --metrics-file needs the 'metrics' extra: pip install 'lashctl[metrics]' "
        "(in a clone of the repository: pip install '.[metrics]')"
    ]
    assert not out.exists()
    assert (aged_store / "sha256").exists() and cli("ls").stdout.count("\n") == 3  # nothing swept


@pytest.mark.parametrize(
    "value_given, message",
    [
        ("", "--metrics-file is empty"),
        ("{tmp}/missing/m.prom", "directory {tmp}/missing does not exist"),
        ("{tmp}/missing/", "directory {tmp}/missing does not exist"),  # never a file named "missing"
    ],
)
def test_a_file_that_cannot_be_written_is_refused_before_the_sweep(cli, aged_store, tmp_path, value_given, message):
    result = cli("reclaim", "--metrics-file", value_given.format(tmp=tmp_path))
    assert result.exit_code == 2
    assert message.format(tmp=tmp_path) in result.stderr
    assert cli("ls").stdout.count("\n") == 3  # nothing swept


def test_a_file_that_fails_to_write_at_the_end_turns_success_into_exit_1(cli, aged_store, tmp_path, monkeypatch):
    from lashctl import metrics

    def full(self, state, exit_code):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(metrics.Run, "write", full)
    out = tmp_path / "m.prom"
    result = cli("reclaim", "--metrics-file", str(out))
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1] == (
        f"lashctl: error: cannot write the metrics file {out}: No space left on device (reclaim itself succeeded)"
    )
    assert cli("ls").stdout.count("\n") == 1  # the sweep itself happened

    # A run that failed anyway keeps its own exit code.
    result = cli("reclaim", "--metrics-file", str(out), "--older-than", "soon")
    assert result.exit_code == 2
    assert "(reclaim itself exited 2)" in result.stderr


def test_labels_never_carry_credentials():
    from lashctl.metrics import manifest_kind, store_label

    assert store_label("s3://AKIAKEY:secret@bucket/pre/fix?session_token=tok#x") == "s3://bucket/pre/fix"
    assert store_label("relative/store") == os.path.abspath("relative/store")
    assert manifest_kind("postgresql://bob:pw@db/lash") == "postgresql"
    assert manifest_kind("lash-sqlite:/srv/sessions") == "lash-sqlite"
    assert manifest_kind(None) == manifest_kind("/srv/store/manifest.jsonl") == "jsonl"


def test_a_postgresql_manifest_that_fails_names_no_password(cli, aged_store, tmp_path):
    pytest.importorskip("psycopg")
    out = tmp_path / "m.prom"
    result = cli(
        "--manifest", "postgresql://bob:sekret@127.0.0.1:1/lash?password=sekret2", "reclaim", "--metrics-file", str(out)
    )
    assert result.exit_code == 69, result.stderr
    text = out.read_text("utf-8")
    assert "sekret" not in text and "bob" not in text
    assert value(out, "lashctl_run_exit_code", manifest_kind="postgresql") == 69


def test_commands_without_the_option_never_import_prometheus_client(store):
    script = (
        "import sys\nfrom lashctl.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in sys.modules if m.startswith(('prometheus_client', 'lashctl.metrics'))))"
    )
    for args in (["stats"], ["reclaim", "--dry-run"], ["verify"]):
        proc = subprocess.run(
            [sys.executable, "-c", script, "--store", str(store), *args],
            capture_output=True,
            text=True,
            timeout=60,
            env={k: v for k, v in os.environ.items() if k != "LASHCTL_METRICS_FILE"},
        )
        assert proc.stdout.strip().splitlines()[-1] == "[]", (args, proc.stdout, proc.stderr)


# -- what is at the path, and what the path may be --------------------------------------
def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def _link_to_file(path: Path) -> Path:
    target = path.parent / "target.prom"
    target.write_text("kept\n")
    path.symlink_to(target)
    return path


def _link_to_fifo(path: Path) -> Path:
    path.symlink_to(_fifo(path.parent / "fifo"))
    return path


def _dangling_link(path: Path) -> Path:
    path.symlink_to(path.parent / "nowhere.prom")
    return path


def _directory_with_a_link(path: Path) -> Path:
    """A directory whose per-command file is a symlink: the option names the directory."""
    path.mkdir()
    _link_to_file(path / "lashctl_reclaim.prom")
    return path / "lashctl_reclaim.prom"


@pytest.mark.parametrize(
    "make, what",
    [
        (_fifo, "a FIFO"),
        (_link_to_file, "a symlink"),
        (_link_to_fifo, "a symlink"),
        (_dangling_link, "a symlink"),
        (_directory_with_a_link, "a symlink"),
    ],
)
def test_a_path_that_is_not_a_regular_file_is_refused_before_the_sweep(cli, aged_store, tmp_path, make, what):
    at = make(tmp_path / "m.prom")
    before = os.lstat(at)
    named = tmp_path / "m.prom"
    result = cli("reclaim", "--metrics-file", str(named))
    assert result.exit_code == 2, result.stderr
    assert result.stderr.splitlines() == [
        f"lashctl: error: --metrics-file {named}: {at} is {what}, not a regular file: refusing to replace it"
    ]
    assert cli("ls").stdout.count("\n") == 3  # nothing swept
    after = os.lstat(at)
    assert (after.st_ino, after.st_mode) == (before.st_ino, before.st_mode)  # left as it was
    assert not [p for p in at.parent.iterdir() if p.name.endswith(".part")]


def test_what_appears_at_the_path_during_the_run_is_not_replaced(cli, aged_store, tmp_path, monkeypatch):
    """Checked again when the file is written: a FIFO put there meanwhile stays."""
    from lashctl import sweep

    out = tmp_path / "m.prom"
    real = sweep.reclaim

    def then_a_fifo(*args, **kwargs):
        report = real(*args, **kwargs)
        os.mkfifo(out)
        return report

    monkeypatch.setattr(sweep, "reclaim", then_a_fifo)
    result = cli("reclaim", "--metrics-file", str(out))
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1] == (
        f"lashctl: error: cannot write the metrics file {out}: it is a FIFO, not a regular file "
        "(reclaim itself succeeded)"
    )
    assert os.path.exists(out) and not out.is_file()


class Hung(Exception):
    pass


@pytest.fixture
def no_hang():
    """A test that would block for ever fails after 5 s instead."""
    import signal

    def hung(*_):
        raise Hung

    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(5)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


LABELS = {"command": "reclaim", "store": "/s", "manifest_kind": "jsonl"}


def _last_success_file(path: Path, when: float = 1234.0) -> Path:
    path.write_text(
        "# HELP lashctl_last_success_timestamp_seconds x\n"
        "# TYPE lashctl_last_success_timestamp_seconds gauge\n"
        'lashctl_last_success_timestamp_seconds{command="reclaim",manifest_kind="jsonl",store="/s"} '
        f"{when}\n"
    )
    return path


def test_the_previous_file_is_read_only_when_it_is_a_small_regular_file(tmp_path, no_hang):
    from lashctl.metrics import previous_success

    assert previous_success(_last_success_file(tmp_path / "ok.prom"), LABELS) == 1234.0
    assert previous_success(_fifo(tmp_path / "fifo.prom"), LABELS) is None  # never waits for a writer
    assert previous_success(_link_to_fifo(tmp_path / "link.prom"), LABELS) is None
    link = tmp_path / "link-to-file.prom"
    link.symlink_to(_last_success_file(tmp_path / "real.prom"))
    assert previous_success(link, LABELS) is None  # not followed
    zero = tmp_path / "zero.prom"
    zero.symlink_to("/dev/zero")
    assert previous_success(zero, LABELS) is None  # never read (it has no end)
    big = tmp_path / "big.prom"
    big.write_text("# " + "x" * (2 << 20) + "\n" + _last_success_file(tmp_path / "small.prom").read_text())
    assert previous_success(big, LABELS) is None  # more than a metrics file holds: not read whole
    (tmp_path / "junk.prom").write_bytes(b"\xff\x00{{{ not metrics")
    assert previous_success(tmp_path / "junk.prom", LABELS) is None


@pytest.mark.parametrize("signum, code", [("SIGTERM", 143), ("SIGHUP", 129), ("SIGINT", 130)])
def test_a_signal_while_the_file_is_written_exits_with_its_code(cli, aged_store, tmp_path, monkeypatch, signum, code):
    import signal

    from lashctl import Terminated, metrics

    def stopped(self, state, exit_code):
        number = getattr(signal, signum)
        raise KeyboardInterrupt if number == signal.SIGINT else Terminated(number)

    monkeypatch.setattr(metrics.Run, "write", stopped)
    result = cli("reclaim", "--metrics-file", str(tmp_path / "m.prom"))
    assert result.exit_code == code, result.stderr
    assert result.stderr.splitlines()[-1].startswith("lashctl: interrupted")
    assert "Traceback" not in result.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's owner needs root")
def test_a_replaced_file_keeps_its_owner_and_mode(cli, aged_store, tmp_path):
    out = tmp_path / "m.prom"
    out.write_text("old\n")
    os.chown(out, 4321, 4322)
    os.chmod(out, 0o600)
    assert cli("reclaim", "--metrics-file", str(out)).exit_code == 0
    st = os.stat(out)
    assert (st.st_uid, st.st_gid, oct(st.st_mode & 0o7777)) == (4321, 4322, "0o600")
    assert value(out, "lashctl_run_success") == 1


def test_a_new_file_is_never_group_or_other_writable(cli, aged_store, tmp_path):
    out = tmp_path / "m.prom"
    old = os.umask(0)
    try:
        assert cli("stats", "--metrics-file", str(out)).exit_code == 0
    finally:
        os.umask(old)
    assert oct(os.stat(out).st_mode & 0o777) == "0o644"


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a directory's owner needs root")
def test_a_new_file_takes_its_directorys_owner_as_root(cli, aged_store, tmp_path):
    folder = tmp_path / "textfile"
    folder.mkdir()
    os.chown(folder, 4321, 4322)
    assert cli("stats", "--metrics-file", str(folder)).exit_code == 0
    st = os.stat(folder / "lashctl_stats.prom")
    assert (st.st_uid, st.st_gid) == (4321, 4322)


def test_an_empty_variable_is_a_usage_error(cli, aged_store, tmp_path):
    result = cli("reclaim", env={"LASHCTL_METRICS_FILE": ""})
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "lashctl: error: LASHCTL_METRICS_FILE is empty: name a FILE.prom or a directory, or unset it"
    ]
    assert cli("ls").stdout.count("\n") == 3  # nothing swept


@pytest.mark.parametrize("name", ["node-exportr", "metrics.txt", "m.prom.bak"])
def test_a_file_name_not_ending_in_prom_is_refused(cli, aged_store, tmp_path, name):
    given = tmp_path / name
    result = cli("reclaim", env={"LASHCTL_METRICS_FILE": str(given)})
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"lashctl: error: --metrics-file {given}: not an existing directory, and node_exporter's "
        "textfile collector reads only files named *.prom"
    ]
    assert not given.exists()
    assert cli("ls").stdout.count("\n") == 3  # nothing swept


def test_a_store_path_that_is_not_utf8_is_escaped_in_the_label(tmp_path):
    from typer.testing import CliRunner

    from lashctl.cli import app

    root = tmp_path / os.fsdecode(b"st\xffore")
    runner = CliRunner(env={"LASHCTL_STORE": None, "LASHCTL_MANIFEST": None})
    blob = sha(b"gone")
    assert runner.invoke(app, ["--store", str(root), "put", "-s", "s1", "-"], input=b"gone").exit_code == 0
    assert runner.invoke(app, ["--store", str(root), "commit", "-s", "s1", blob]).exit_code == 0
    out = tmp_path / "delete.prom"
    result = runner.invoke(app, ["--store", str(root), "delete", "--force", blob, "--metrics-file", str(out)])
    assert result.exit_code == 0, result.stderr
    assert value(out, "lashctl_deleted_blobs") == 1
    assert value(out, "lashctl_run_success", store=str(tmp_path / "st\\xffore")) == 1


def test_a_long_file_name_is_written_or_refused_up_front(cli, aged_store, tmp_path):
    longest = tmp_path / ("x" * 250 + ".prom")  # 255 bytes: the most a name may have
    result = cli("reclaim", "--metrics-file", str(longest))
    assert result.exit_code == 0, result.stderr
    assert value(longest, "lashctl_run_success") == 1
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "store") == [longest.name]

    too_long = tmp_path / ("y" * 251 + ".prom")
    result = cli("gc", "--metrics-file", str(too_long))
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"lashctl: error: --metrics-file {too_long}: a name in it is longer than 255 bytes"
    ]


@pytest.mark.parametrize("where", ["x.prom", "sha256/x.prom", "."])
def test_a_file_inside_the_store_is_refused(cli, aged_store, where):
    given = aged_store / where
    result = cli("reclaim", "--metrics-file", str(given))
    assert result.exit_code == 2
    assert f"is inside the store {aged_store}: write it elsewhere" in result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert cli("ls").stdout.count("\n") == 3  # nothing swept
    assert not list(aged_store.rglob("*.prom"))
