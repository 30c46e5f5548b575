"""Shell completion, through the entry point in a fresh interpreter and through
the generated bash script: what a TAB offers, and that it stays light (no
manifest read, no Rich, nothing a command name does not need)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def test_bash_completion_lists_commands_and_options():
    env = dict(os.environ, _LASHCTL_COMPLETE="complete_bash", COMP_WORDS="lashctl re", COMP_CWORD="1")
    script = [sys.executable, "-c", "from lashctl.cli import main; main()"]
    result = subprocess.run(script, capture_output=True, text=True, env=env)
    assert result.stdout.split() == ["reclaim"]
    env.update(COMP_WORDS="lashctl reclaim --", COMP_CWORD="2")
    result = subprocess.run(script, capture_output=True, text=True, env=env)
    assert {"--older-than", "--before", "--dry-run", "--force", "--json"} <= set(result.stdout.split())


def _complete(words: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    """What the bash completion function receives from lashctl for ``words`` (the last one incomplete)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("LASHCTL_")}
    environ.update(env or {})
    environ.update(
        _LASHCTL_COMPLETE="complete_bash",
        COMP_WORDS=" ".join(words),
        COMP_CWORD=str(len(words) - 1),
        PYTHONPROFILEIMPORTTIME="1",
    )
    script = [sys.executable, "-c", "from lashctl.cli import main; main()"]
    return subprocess.run(script, capture_output=True, text=True, env=environ)


def test_completion_of_a_command_name_imports_only_what_it_needs():
    """Every TAB pays start-up: completing a command name compiles no pattern of
    ids or control characters and loads no JSON, hashing or store code."""
    result = _complete(["lashctl", "re"])
    assert sorted(result.stdout.split()) == ["reclaim"], result.stderr[-2000:]
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    needless = {"json", "hashlib", "lashctl.ids", "lashctl.core", "lashctl.backends", "lashctl.transfer", "rich"}
    assert not imported & needless


@pytest.fixture
def two_blob_store(tmp_path):
    store = tmp_path / "store"
    ids = []
    for data in (b"first", b"second"):
        path = tmp_path / "in"
        path.write_bytes(data)
        result = subprocess.run(
            [
                sys.executable,
                "-c",
                "from lashctl.cli import main; main()",
                "--store",
                str(store),
                "put",
                "-s",
                "s",
                str(path),
            ],
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stderr
        ids.append(result.stdout.strip())
    return store, ids


@pytest.mark.parametrize("command", [["get"], ["delete"], ["show"], ["commit", "-s", "s"], ["manifest", "log", "--id"]])
def test_completion_offers_ids_from_the_store(two_blob_store, command):
    store, ids = two_blob_store
    for words, env in [
        (["lashctl", "--store", str(store), *command, ids[0][:3]], {}),
        (["lashctl", *command, ids[0][:3]], {"LASHCTL_STORE": str(store)}),
        (
            [
                "lashctl",
                *[w for w in command if w != "--id"],
                "--store",
                str(store),
                *[w for w in command if w == "--id"],
                ids[0][:3],
            ],
            {},
        ),
    ]:
        result = _complete(words, env)
        assert result.stdout.split() == [ids[0]], (words, result.stdout, result.stderr[-2000:])
    everything = _complete(["lashctl", "--store", str(store), *command, ""])
    assert sorted(everything.stdout.split()) == sorted(ids)


def test_completion_of_an_id_reads_no_manifest_and_imports_no_rich(two_blob_store):
    store, ids = two_blob_store
    (store / "manifest.jsonl").write_text("this is not a manifest\n")  # reading it would fail
    result = _complete(["lashctl", "--store", str(store), "show", ids[1][:2]])
    assert result.stdout.split() == [ids[1]]
    imported = [line.split("|")[-1].strip() for line in result.stderr.splitlines() if "|" in line]
    assert not [m for m in imported if m == "rich" or m.startswith("rich.")]


@pytest.mark.parametrize(
    "words",
    [
        ["reclaim", "--older-than"],
        ["reclaim", "--before"],
        ["gc", "--older-than"],
        ["list-uncommitted", "--before"],
        ["verify", "--grace"],
        ["manifest", "log", "--since"],
        ["commit", "-s"],
    ],
)
def test_completion_offers_no_file_names_for_durations_times_and_sessions(tmp_path, words):
    (tmp_path / "some-file").write_text("x")
    bash = (
        f"source {ROOT / 'completions' / 'lashctl.bash'}\n"
        f"cd {tmp_path}\n"
        f"COMP_WORDS=(lashctl {' '.join(words)} ''); COMP_CWORD={len(words) + 1}\n"
        "_lashctl_completion lashctl\n"
        "printf '<%s>\\n' \"${COMPREPLY[@]}\"\n"
        "complete -p lashctl\n"
    )
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    result = subprocess.run(["bash", "--norc", "-c", bash], capture_output=True, text=True, env=env)
    lines = result.stdout.splitlines()
    assert lines[:-1] in ([], ["<>"]), result.stdout
    assert "-o default" not in lines[-1], "bash would fall back to file names"


def test_completion_still_offers_file_names_for_paths():
    for words in (
        ["lashctl", "put", "-s", "s", ""],
        ["lashctl", "--store", ""],
        ["lashctl", "get", "abcd", "-o", ""],
        ["lashctl", "put", "--files-from", ""],
    ):
        assert _complete(words).stdout.strip() == "::files", words


def _bash_completes(words: list[str], cwd: Path) -> list[str]:
    """COMPREPLY of the installed bash script for ``words`` as bash splits them
    (``:`` is a word of its own: it is in COMP_WORDBREAKS), the last one incomplete."""
    quoted = " ".join(f"'{w}'" for w in words)
    bash = (
        f"source {ROOT / 'completions' / 'lashctl.bash'}\n"
        f"cd {cwd}\n"
        f"COMP_WORDS=(lashctl {quoted}); COMP_CWORD={len(words)}\n"
        "_lashctl_completion lashctl 2>/dev/null\n"
        "printf '<%s>\\n' \"${COMPREPLY[@]}\"\n"
    )
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    env = {k: v for k, v in env.items() if not k.startswith("LASHCTL_")}
    result = subprocess.run(["bash", "--norc", "-c", bash], capture_output=True, text=True, env=env, check=False)
    return sorted(line[1:-1] for line in result.stdout.splitlines() if line != "<>")


@pytest.mark.parametrize(
    "words, offered",
    [
        (["--manifest", ""], ["lash-sqlite:", "manifest.jsonl", "postgresql://", "sessions/"]),
        (["--manifest", "lash"], ["lash-sqlite:"]),
        (["--manifest", "p"], ["postgresql://"]),
        (["--manifest", "ma"], ["manifest.jsonl"]),
        (["--manifest", "lash-sqlite", ":"], ["sessions/"]),
        (["--manifest", "lash-sqlite", ":", "se"], ["sessions/"]),
        (["--manifest", "postgresql", ":", "//db"], []),
        (["--manifest", ":", "se"], []),
        (["reclaim", "--manifest", "lash-sqlite", ":", "s"], ["sessions/"]),
        (
            ["migrate", "--to-store", "x", "--to-manifest", ""],
            ["lash-sqlite:", "manifest.jsonl", "postgresql://", "sessions/"],
        ),
        (["migrate", "--to-store", "x", "--to-manifest", "lash-sqlite", ":"], ["sessions/"]),
    ],
)
def test_completion_of_a_manifest_offers_its_url_schemes_and_file_names(tmp_path, words, offered):
    (tmp_path / "sessions").mkdir()
    (tmp_path / "manifest.jsonl").write_text("")
    assert _bash_completes(words, tmp_path) == offered
