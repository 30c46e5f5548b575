"""Operator ergonomics, end to end: what a cron line or a shell script typed is read as meant."""

from __future__ import annotations

import pytest

import json
import os

from reliability_helpers import base_env, one_line_error, run

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize(
    "args, hint",
    [
        (["reclaim", "--older-than", "1M"], "m for minutes"),
        (["list-uncommitted", "--older-than", "24H"], "24h"),
        (["reclaim", "--before", "1795647212"], "@1795647212"),
        (["manifest", "log", "--since", "1795647212"], "1795647212ms"),
    ],
)
def test_ambiguous_durations_and_times_are_refused_with_a_hint(tmp_path, args, hint):
    store = tmp_path / "store"
    result = run(["--store", store, *args])
    assert result.returncode == 2, result.stderr
    assert hint in one_line_error(result.stderr)
    assert not store.exists()


def test_epoch_seconds_with_an_at_sign_are_a_cutoff_in_seconds(tmp_path):
    store = tmp_path / "store"
    (tmp_path / "in.txt").write_bytes(b"x")
    assert run(["--store", store, "put", "-s", "s", tmp_path / "in.txt"]).returncode == 0
    listed = run(["--store", store, "list-uncommitted", "--before", "@4102444800"])  # 2100-01-01
    assert listed.returncode == 0 and len(listed.stdout.splitlines()) == 1
    none = run(["--store", store, "list-uncommitted", "--before", "@1000000000"])  # 2001
    assert none.returncode == 0 and none.stdout == b""


@pytest.mark.parametrize(
    "args",
    [
        ["put", "-s", "s", "--files-from", "-"],
        ["put", "-s", "s", "--files-from", "-", "-0"],
        ["commit", "-s", "s", "-"],
    ],
)
def test_an_empty_batch_on_stdin_is_a_successful_no_op(tmp_path, args):
    store = tmp_path / "store"
    result = run(["--store", store, *args], input=b"")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b""
    assert b"nothing" in result.stderr
    quiet = run(["--store", store, "-q", *args], input=b"")
    assert quiet.returncode == 0 and quiet.stderr == b""


def test_an_empty_batch_with_json_prints_an_empty_array(tmp_path):
    result = run(["--store", tmp_path / "store", "--json", "put", "-s", "s", "--files-from", "-"], input=b"")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"[]\n"


def test_put_without_any_input_is_still_a_usage_error(tmp_path):
    result = run(["--store", tmp_path / "store", "put", "-s", "s"])
    assert result.returncode == 2
    one_line_error(result.stderr)


# -- typos in cron lines -------------------------------------------------------------
@pytest.mark.parametrize(
    "command",
    [
        ["reclaim"],
        ["gc"],
        ["list-uncommitted"],
        ["stats"],
        ["ls"],
        ["verify"],
        ["commit", "-s", "s", "a" * 64],
        ["manifest", "compact"],
        ["manifest", "check"],
        ["delete", "a" * 64],
        ["get", "a" * 64],
    ],
)
def test_an_explicit_store_that_does_not_exist_is_an_error_and_nothing_is_created(tmp_path, command):
    typo = tmp_path / "srv" / "typo" / "nonexistent"
    for args, env in ((["--store", typo], None), ([], {"LASHCTL_STORE": str(typo)})):
        result = run([*args, *command], env=None if env is None else {**base_env(), **env})
        assert result.returncode == 2, (command, result.stderr)
        assert str(typo) in one_line_error(result.stderr)
        assert not (tmp_path / "srv").exists()


@pytest.mark.parametrize("command", [["reclaim"], ["list-uncommitted"], ["commit", "-s", "s", "a" * 64], ["gc"]])
def test_an_explicit_manifest_that_does_not_exist_is_an_error_and_nothing_is_created(tmp_path, command):
    store = tmp_path / "store"
    store.mkdir()
    typo = tmp_path / "typo.jsonl"
    result = run(["--store", store, "--manifest", typo, *command])
    assert result.returncode == 2, (command, result.stderr)
    assert str(typo) in one_line_error(result.stderr)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]
    assert list(store.iterdir()) == []


def test_put_creates_an_explicit_store_and_manifest(tmp_path):
    (tmp_path / "in.txt").write_bytes(b"x")
    result = run(
        ["--store", tmp_path / "new", "--manifest", tmp_path / "m.jsonl", "put", "-s", "s", tmp_path / "in.txt"]
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "m.jsonl").exists()


def test_the_default_store_may_be_created_on_first_use(tmp_path):
    env = {**base_env(), "HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path / "data")}
    result = run(["stats"], env=env)
    assert result.returncode == 0, result.stderr


# -- global options in either place ---------------------------------------------------
def test_global_options_are_accepted_after_the_command(tmp_path):
    store = tmp_path / "store"
    (tmp_path / "in.txt").write_bytes(b"x")
    put = run(["put", "-s", "s", tmp_path / "in.txt", "--store", store, "-q"])
    assert put.returncode == 0, put.stderr
    assert put.stderr == b""
    quiet = run(["reclaim", "-n", "-q", "--store", store])
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == b""
    listed = run(["list-uncommitted", "--json", "--store", store, "--lock-timeout", "5", "-v"])
    assert listed.returncode == 0, listed.stderr
    assert len(json.loads(listed.stdout)) == 1
    manifest = run(["manifest", "check", "--store", store, "--manifest", store / "manifest.jsonl", "-q"])
    assert manifest.returncode == 0, manifest.stderr
    bad = run(["reclaim", "--lock-timeout", "nan", "--store", store])
    assert bad.returncode == 2


def test_an_option_value_that_looks_like_a_global_option_is_still_a_value(tmp_path):
    store = tmp_path / "store"
    (tmp_path / "in.txt").write_bytes(b"x")
    result = run(["--store", store, "--json", "put", "-s", "s", "--label", "-q", tmp_path / "in.txt"])
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)[0]["label"] == "-q"


def test_verify_fix_reports_the_state_after_its_repairs(tmp_path):
    store = tmp_path / "store"
    (tmp_path / "in.txt").write_bytes(b"committed bytes\n")
    [attachment_id] = run(["--store", store, "put", "-s", "s", tmp_path / "in.txt"]).stdout.decode().split()
    assert run(["--store", store, "commit", "-s", "s", attachment_id]).returncode == 0
    blob = store / "sha256" / attachment_id[:2] / attachment_id
    blob.write_bytes(b"rotten bytes!!!\n")
    fixed = run(["--store", store, "--json", "verify", "--fix"])
    report = json.loads(fixed.stdout)
    kinds = sorted((f["kind"], bool(f["repair"])) for f in report["findings"])
    assert kinds == [("committed-bytes-missing", False), ("hash-mismatch", True)]
    again = json.loads(run(["--store", store, "--json", "verify"]).stdout)
    assert report["errors"] == again["errors"] == 1
    assert fixed.returncode == 65


# -- machine output a log can use -----------------------------------------------------
def _store_with_orphan(tmp_path):
    store = tmp_path / "store"
    (tmp_path / "in.txt").write_bytes(b"orphan bytes\n")
    assert run(["--store", store, "put", "-s", "s", tmp_path / "in.txt"]).returncode == 0
    return store


RUN_FIELDS = {"lashctl_version", "store", "manifest", "started_at", "finished_at"}


@pytest.mark.parametrize(
    "command",
    [
        ["reclaim", "--force", "--older-than", "0s"],
        ["reclaim", "-n"],
        ["gc", "--force", "--older-than", "0s"],
        ["delete", "--force", "PREFIX"],
        ["verify", "--fix"],
        ["manifest", "compact"],
    ],
)
def test_json_reports_of_destructive_commands_say_when_where_and_which_version(tmp_path, command):
    store = _store_with_orphan(tmp_path)
    attachment_id = next((store / "sha256").glob("*/*")).name.removesuffix(".json")
    command = [attachment_id if c == "PREFIX" else c for c in command]
    result = run(["--store", store, "--json", *command])
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert RUN_FIELDS <= set(document), document
    assert document["store"] == str(store)
    assert document["manifest"] == str(store / "manifest.jsonl")
    assert document["started_at"] <= document["finished_at"]


@pytest.mark.parametrize("command, code", [(["reclaim", "--older-than", "0s"], 4), (["get", "0" * 64], 3)])
def test_a_failure_under_json_still_prints_one_json_object(tmp_path, command, code):
    store = _store_with_orphan(tmp_path)
    result = run(["--store", store, "--json", *command])
    assert result.returncode == code
    document = json.loads(result.stdout)
    assert document["exit_code"] == code and document["error"]
    assert RUN_FIELDS <= set(document)
    one_line_error(result.stderr)


def test_a_lock_timeout_under_json_prints_one_json_object(tmp_path):
    import fcntl
    import os

    store = _store_with_orphan(tmp_path)
    fd = os.open(store / "manifest.jsonl.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        result = run(["--store", store, "--json", "--lock-timeout", "0.2", "reclaim"])
    finally:
        os.close(fd)
    assert result.returncode == 75
    assert json.loads(result.stdout)["exit_code"] == 75


def test_piped_json_is_compact_in_every_command(tmp_path):
    store = _store_with_orphan(tmp_path)
    for command in (["stats"], ["ls"], ["verify"], ["list-uncommitted"], ["reclaim", "-n"], ["manifest", "check"]):
        result = run(["--store", store, "--json", *command])
        document = json.loads(result.stdout)
        assert result.stdout.decode() == json.dumps(document, separators=(",", ":"), ensure_ascii=False) + "\n", command


def test_release_items_report_the_blobs_true_size(tmp_path):
    store = _store_with_orphan(tmp_path)
    attachment_id = next((store / "sha256").glob("*/*")).name.removesuffix(".json")
    (tmp_path / "in.txt").write_bytes(b"orphan bytes\n")
    run(["--store", store, "put", "-s", "t", tmp_path / "in.txt"])
    run(["--store", store, "commit", "-s", "t", attachment_id])
    items = json.loads(run(["--store", store, "--json", "reclaim", "--force", "--older-than", "0s"]).stdout)["items"]
    assert [(i["action"], i["byte_len"], i["bytes_present"]) for i in items] == [("release", 13, True)]


# -- a damaged manifest can still be inspected ------------------------------------------
def _damaged(tmp_path):
    store = tmp_path / "store"
    for name in ("a", "b"):
        (tmp_path / name).write_bytes(name.encode() * 10)
        assert run(["--store", store, "put", "-s", "s", tmp_path / name]).returncode == 0
    manifest = store / "manifest.jsonl"
    lines = manifest.read_bytes().splitlines(keepends=True)
    lines.insert(2, b'{"op":"intent", this is \x1b[31m not json\n')
    manifest.write_bytes(b"".join(lines))
    return store


@pytest.mark.parametrize("command", [["stats"], ["ls"], ["list-uncommitted"], ["manifest", "log"]])
def test_read_only_inspection_goes_on_past_a_malformed_line_and_exits_65(tmp_path, command):
    store = _damaged(tmp_path)
    result = run(["--store", store, *command])
    assert result.returncode == 65, result.stderr
    stderr = result.stderr.decode()
    assert "manifest.jsonl:3" in stderr and "this is \\x1b[31m not json" in stderr, stderr
    assert "\x1b" not in stderr
    if command != ["stats"]:
        assert len(result.stdout.splitlines()) == (3 if command == ["manifest", "log"] else 2), result.stdout


def test_manifest_log_gives_jq_the_events_on_a_pipe_and_numbers_them_on_a_terminal(tmp_path):
    """A pipe gets the events alone (``manifest log | jq`` works); a person
    at a terminal sees each after its line number, what a hand fix opens."""
    from test_terminal_e2e import run_tty

    store = _damaged(tmp_path)
    file_lines = (store / "manifest.jsonl").read_bytes().splitlines()
    result = run(["--store", store, "manifest", "log"])
    assert result.returncode == 65
    assert [json.loads(line) for line in result.stdout.splitlines()] == [json.loads(file_lines[n]) for n in (0, 1, 3)]
    screen, _err, code = run_tty(["--store", store, "manifest", "log"], 200)
    assert code == 65
    numbered = [line for line in screen.splitlines() if line.strip()]
    assert [int(line.split("\t")[0]) for line in numbered] == [1, 2, 4], numbered
    for line in numbered:
        number, _, event = line.partition("\t")
        assert json.loads(event) == json.loads(file_lines[int(number) - 1])


def test_manifest_log_json_marks_the_malformed_line(tmp_path):
    store = _damaged(tmp_path)
    result = run(["--store", store, "--json", "manifest", "log"])
    assert result.returncode == 65
    entries = json.loads(result.stdout)
    bad = [e for e in entries if "malformed" in e]
    assert [e["line"] for e in bad] == [3] and "not json" in bad[0]["malformed"]
    assert len(entries) == 4


def test_show_goes_on_past_a_malformed_line(tmp_path):
    store = _damaged(tmp_path)
    attachment_id = next((store / "sha256").glob("*/*[0-9a-f]")).name
    result = run(["--store", store, "show", attachment_id])
    assert result.returncode == 65
    assert b"verdict:" in result.stdout


@pytest.mark.parametrize("command", [["show", "ID"], ["ls"], ["stats"]])
def test_json_inspections_go_on_past_a_malformed_line_and_still_exit_65(tmp_path, command):
    store = _damaged(tmp_path)
    attachment_id = next((store / "sha256").glob("*/*[0-9a-f]")).name
    result = run(["--store", store, "--json", *[attachment_id if c == "ID" else c for c in command]])
    assert result.returncode == 65
    json.loads(result.stdout)  # the whole document was printed first
    assert b"line 3" in result.stderr or b":3:" in result.stderr


@pytest.mark.parametrize(
    "command",
    [["reclaim", "--force", "--older-than", "0s"], ["gc", "--force", "--older-than", "0s"], ["manifest", "compact"]],
)
def test_destructive_commands_still_refuse_a_malformed_manifest(tmp_path, command):
    store = _damaged(tmp_path)
    before = sorted(p.name for p in (store / "sha256").glob("*/*"))
    result = run(["--store", store, *command])
    assert result.returncode == 65
    assert sorted(p.name for p in (store / "sha256").glob("*/*")) == before


# -- standard input on a terminal, and Ctrl-C ---------------------------------------
def _lashctl_with_terminal_stdin(args: list, typed: bytes) -> tuple[int, bytes, bytes]:
    import os
    import pty
    import subprocess
    import time

    from reliability_helpers import find_lashctl

    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [find_lashctl(), *map(str, args)], stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=base_env()
    )
    os.close(slave)
    time.sleep(0.5)  # the hint comes before the first read
    os.write(master, typed)
    out, err = proc.communicate(timeout=30)
    os.close(master)
    return proc.returncode, out, err


def test_put_dash_on_a_terminal_says_it_reads_standard_input(tmp_path):
    code, out, err = _lashctl_with_terminal_stdin(
        ["--store", tmp_path / "store", "put", "-s", "s", "-"], b"typed by hand\n\x04"
    )
    assert code == 0, err
    assert len(out.split()) == 1
    assert b"standard input" in err and b"Ctrl-D" in err


def test_put_dash_from_a_pipe_gives_no_hint(tmp_path):
    result = run(["--store", tmp_path / "store", "put", "-s", "s", "-"], input=b"piped")
    assert result.returncode == 0
    assert b"Ctrl-D" not in result.stderr


def _interrupt(args: list, cwd=None, lines_first: int = 0, feed: bytes = b"partial input") -> tuple[int, bytes, bytes]:
    """Start lashctl with its standard input held open; once it has printed
    ``lines_first`` lines (and is waiting on its input), send SIGINT as Ctrl-C does."""
    import signal
    import subprocess
    import time

    from reliability_helpers import find_lashctl

    proc = subprocess.Popen(
        [find_lashctl(), *map(str, args)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=base_env(),
        cwd=cwd,
    )
    proc.stdin.write(feed)
    proc.stdin.flush()
    early = b"".join(proc.stdout.readline() for _ in range(lines_first))
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    return proc.returncode, early + out, err


def test_ctrl_c_in_put_says_what_was_kept_and_leaves_no_staging_file(tmp_path):
    from lashctl.transfer import PUT_BATCH_FILES

    from reliability_helpers import read_log

    inputs = tmp_path / "in"
    inputs.mkdir()
    names = []
    for i in range(PUT_BATCH_FILES + 1):  # one full batch lands before standard input is read
        (inputs / f"{i}.txt").write_bytes(b"file %d\n" % i)
        names.append(f"{i}.txt")
    store = tmp_path / "store"
    code, out, err = _interrupt(
        ["--store", store, "put", "-s", "s", *names, "-"], cwd=inputs, lines_first=PUT_BATCH_FILES
    )
    assert code == 130, err
    lines = err.decode().strip().splitlines()
    assert lines and "Traceback" not in err.decode()
    assert lines[-1] == (
        f"lashctl: interrupted: {PUT_BATCH_FILES} of {PUT_BATCH_FILES + 2} inputs stored and "
        "recorded (their ids are on stdout); staged copies of the rest were removed, and reclaim "
        "sweeps anything else they left"
    )
    assert len(out.split()) == PUT_BATCH_FILES
    intents = [e for e in read_log(store / "manifest.jsonl").events if e["op"] == "intent"]
    assert len(intents) == PUT_BATCH_FILES
    assert list((store / "tmp").iterdir()) == []


def test_ctrl_c_before_anything_was_stored_says_so(tmp_path):
    store = tmp_path / "store"
    code, out, err = _interrupt(["--store", store, "put", "-s", "s", "-"])
    assert code == 130
    assert err.decode().strip() == (
        "lashctl: interrupted: 0 of 1 input stored and recorded; staged copies "
        "of the rest were removed, and reclaim sweeps anything else they left"
    )
    assert out == b""
    assert list((store / "tmp").iterdir()) == []


def test_ctrl_c_elsewhere_is_one_line(tmp_path):
    store = tmp_path / "store"
    (tmp_path / "a").write_bytes(b"a")
    assert run(["--store", store, "put", "-s", "s", tmp_path / "a"]).returncode == 0
    code, out, err = _interrupt(["--store", store, "commit", "-s", "s", "-"], feed=b"")
    assert code == 130
    assert err.decode().strip() == "lashctl: interrupted; nothing half-written was left"


def test_cache_files_of_deleted_stores_are_dropped_when_a_cache_is_next_opened(tmp_path):
    import shutil

    cache = tmp_path / "cache"
    env = {**base_env(), "LASHCTL_CACHE_DIR": str(cache)}
    (tmp_path / "in.txt").write_bytes(b"x")
    stores = [tmp_path / f"store{n}" for n in range(3)]
    for store in stores:
        assert run(["--store", store, "put", "-s", "s", tmp_path / "in.txt"], env=env).returncode == 0
        assert run(["--store", store, "list-uncommitted"], env=env).returncode == 0
    assert len(list((cache / "index").glob("*.idx"))) == 3
    shutil.rmtree(stores[0])
    shutil.rmtree(stores[1])
    assert run(["--store", stores[2], "list-uncommitted"], env=env).returncode == 0
    left = sorted(p.name for p in (cache / "index").iterdir())
    assert len([n for n in left if n.endswith(".idx")]) == 1, left


@pytest.mark.parametrize("args", [["list-uncommitted"], ["--json", "list-uncommitted"], ["--json", "stats"]])
def test_a_closed_standard_output_is_one_line_and_exit_1(tmp_path, args):
    """Run with stdout closed (``>&-``): one error line, exit 1, never a
    traceback, and nothing written through a descriptor the store reused."""
    import subprocess

    from reliability_helpers import find_lashctl

    store = tmp_path / "store"
    (tmp_path / "f").write_bytes(b"f")
    assert run(["--store", store, "put", "-q", "-s", "s", tmp_path / "f"], env=base_env()).returncode == 0
    proc = subprocess.run(
        [find_lashctl(), "--store", str(store), *args],
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=base_env(),
        timeout=60,
        close_fds=True,
        preexec_fn=lambda: os.close(1),
    )
    assert proc.returncode == 1
    assert "standard output is closed" in one_line_error(proc.stderr)


def _run_with(args, closed=(), stdout=None, stdin=None, env=None):
    import subprocess

    from reliability_helpers import find_lashctl

    def close():
        for fd in closed:
            os.close(fd)

    return subprocess.run(
        [find_lashctl(), *map(str, args)],
        stdin=stdin if stdin is not None else subprocess.DEVNULL,
        stdout=stdout if stdout is not None else subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env or base_env(),
        timeout=60,
        preexec_fn=close,
    )


@pytest.mark.parametrize("args", [["ls"], ["--json", "verify"], ["put", "-s", "s", "{f}"], ["reclaim", "-n"]])
def test_a_closed_standard_error_silences_messages_and_keeps_data_clean(tmp_path, args):
    """With stderr closed (2>&-) messages go nowhere: never onto stdout (the
    data), and never a crash."""
    store = tmp_path / "store"
    (tmp_path / "f").write_bytes(b"f")
    assert run(["--store", store, "put", "-q", "-s", "s", tmp_path / "f"], env=base_env()).returncode == 0
    proc = _run_with(["--store", store, *[a.replace("{f}", str(tmp_path / "f")) for a in args]], closed=(2,))
    assert proc.returncode == 0, proc.stdout
    out = proc.stdout.decode()
    if "--json" in args:
        json.loads(out)
    assert "blob(s)" not in out and "lashctl:" not in out and "Traceback" not in out


@pytest.mark.parametrize(
    "args", [["put", "-s", "s", "-"], ["put", "-s", "s", "--files-from", "-"], ["commit", "-s", "s", "-"]]
)
def test_a_closed_standard_input_is_a_usage_error(tmp_path, args):
    store = tmp_path / "store"
    (tmp_path / "f").write_bytes(b"f")
    assert run(["--store", store, "put", "-q", "-s", "s", tmp_path / "f"], env=base_env()).returncode == 0
    before = (store / "manifest.jsonl").read_bytes()
    proc = _run_with(["--store", store, *args], closed=(0,))
    assert proc.returncode == 2
    assert "standard input is closed" in one_line_error(proc.stderr)
    assert (store / "manifest.jsonl").read_bytes() == before


@pytest.mark.parametrize(
    "args", [["--version"], ["--help"], ["--json", "get", "{id}"], ["get", "{id}"], ["--json", "ls"]]
)
def test_a_full_standard_output_is_one_line_and_exit_1(tmp_path, args):
    store = tmp_path / "store"
    (tmp_path / "f").write_bytes(b"f" * 100_000)
    put = run(["--store", store, "put", "-q", "-s", "s", tmp_path / "f"], env=base_env())
    blob = put.stdout.decode().strip()
    with open("/dev/full", "wb") as full:
        proc = _run_with(["--store", store, *[a.replace("{id}", blob) for a in args]], stdout=full)
    assert proc.returncode == 1
    assert "No space left on device" in one_line_error(proc.stderr)


def test_a_closed_standard_input_does_not_stop_a_put_of_files(tmp_path):
    """Only reading standard input needs it: put of a path works with stdin closed."""
    store = tmp_path / "store"
    (tmp_path / "f").write_bytes(b"f")
    proc = _run_with(["--store", store, "put", "-q", "-s", "s", tmp_path / "f"], closed=(0,))
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.split()) == 1
