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
        "lashctl_reclaim.prom", "lashctl_stats.prom", "lashctl_verify.prom"]


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
        "(in a clone of the repository: pip install '.[metrics]')"]
    assert not out.exists()
    assert (aged_store / "sha256").exists() and cli("ls").stdout.count("\n") == 3  # nothing swept


@pytest.mark.parametrize("value_given, message", [
    ("", "--metrics-file is empty"),
    ("{tmp}/missing/m.prom", "directory {tmp}/missing does not exist"),
    ("{tmp}/missing/", "directory {tmp}/missing does not exist"),  # never a file named "missing"
])
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
        f"lashctl: error: cannot write the metrics file {out}: No space left on device (reclaim itself succeeded)")
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
    result = cli("--manifest", "postgresql://bob:sekret@127.0.0.1:1/lash?password=sekret2", "reclaim",
                 "--metrics-file", str(out))
    assert result.exit_code == 69, result.stderr
    text = out.read_text("utf-8")
    assert "sekret" not in text and "bob" not in text
    assert value(out, "lashctl_run_exit_code", manifest_kind="postgresql") == 69


def test_commands_without_the_option_never_import_prometheus_client(store):
    script = ("import sys\nfrom lashctl.cli import main\n"
              "try:\n    main()\nexcept SystemExit:\n    pass\n"
              "print(sorted(m for m in sys.modules if m.startswith(('prometheus_client', 'lashctl.metrics'))))")
    for args in (["stats"], ["reclaim", "--dry-run"], ["verify"]):
        proc = subprocess.run([sys.executable, "-c", script, "--store", str(store), *args], capture_output=True,
                              text=True, timeout=60, env={**os.environ, "LASHCTL_METRICS_FILE": ""})
        assert proc.stdout.strip().splitlines()[-1] == "[]", (args, proc.stdout, proc.stderr)
