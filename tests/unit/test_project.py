"""Project-level checks: completions are fresh, every command is documented,
the CI reads its commands from the README, and start-up stays light."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.main import get_command

from lashctl.cli import app

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
# What each command does, and what is guaranteed (with the tests that check it), live in docs/.
COMMANDS_DOC = (ROOT / "docs" / "commands.md").read_text()
GUARANTEES_DOC = (ROOT / "docs" / "guarantees.md").read_text()


def commands() -> dict:
    group = get_command(app)
    return {name: group.get_command(None, name) for name in group.list_commands(None)}


def test_completion_scripts_are_fresh():
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "generate_completions.py"), "--check"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    for name in ("lashctl.bash", "_lashctl", "lashctl.fish", "lashctl.ps1"):
        assert "_LASHCTL_COMPLETE" in (ROOT / "completions" / name).read_text()


def test_completion_table_is_fresh():
    """lashctl/_completion_table.py, what a TAB is answered from, is generated
    from the app; regenerate it when commands or options change:
    python scripts/generate_completion_table.py
    """
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "generate_completion_table.py"), "--check"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("name", sorted(commands()))
def test_every_command_has_help_and_a_docs_section(name):
    command = commands()[name]
    assert command.help and command.help.strip(), f"{name} has no help text"
    assert re.search(rf"^## `{re.escape(name)}\b", COMMANDS_DOC, re.MULTILINE), (
        f"docs/commands.md has no section for {name}"
    )


def test_readme_quickstart_is_what_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text()
    for marker in ("install-and-run", "tests"):
        block = re.search(rf"<!-- ci: {marker} -->\n```sh\n(.+)\n```", README)
        assert block, f"README lost its {marker} command"
        assert f"readme_command {marker}" in ci
    assert "lashctl reclaim" in re.search(r"<!-- ci: install-and-run -->\n```sh\n(.+)\n", README).group(1)
    assert "pytest" in re.search(r"<!-- ci: tests -->\n```sh\n(.+)\n", README).group(1)


def test_every_exit_code_is_documented():
    from lashctl import errors

    codes = {v for k, v in vars(errors).items() if k.startswith("EXIT_")}
    for code in codes:
        assert re.search(rf"^\| {code} \|", README, re.MULTILINE), f"exit code {code} missing from README"


@pytest.mark.parametrize("command", ["put", "get", "commit", "delete", "list-uncommitted", "reclaim"])
def test_start_up_imports_no_rich(command, tmp_path):
    """Importing the CLI and parsing a command must not pull in rich (or pydantic)."""
    code = (
        "import sys\n"
        "from typer.main import get_command\n"
        "from lashctl.cli import app\n"
        f"get_command(app).get_command(None, {command!r})\n"
        "bad = [m for m in ('rich', 'pydantic') if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


def test_put_run_loads_no_rich(tmp_path):
    source = tmp_path / "small.bin"
    source.write_bytes(os.urandom(2048))
    code = (
        "import sys\n"
        "from lashctl.cli import app\n"
        "try:\n"
        f"    app(['--store', {str(tmp_path / 'store')!r}, 'put', '-s', 's', {str(source)!r}], prog_name='lashctl')\n"
        "except SystemExit as exc:\n"
        "    assert exc.code in (0, None), exc.code\n"
        "print('rich' in sys.modules, file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip().splitlines()[-1] == "False"


def test_cli_reference_is_fresh():
    """docs/cli.md is generated from the app; regenerate it when commands change:
    python scripts/generate_docs.py
    """
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "generate_docs.py"), "--check"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr


def test_cli_reference_shows_text_not_html_entities():
    text = (ROOT / "docs" / "cli.md").read_text()
    for entity in ("&#x27;", "&lt;", "&gt;", "&amp;", "&quot;"):
        assert entity not in text, f"docs/cli.md shows {entity} as text"
    assert "platform's" in text and "`<store>/manifest.jsonl`" in text


def all_commands() -> list[tuple[str, ...]]:
    found = []
    for name, command in sorted(commands().items()):
        if hasattr(command, "commands"):
            found.extend((name, sub) for sub in sorted(command.commands))
        else:
            found.append((name,))
    return found


@pytest.mark.parametrize("path", all_commands(), ids=" ".join)
def test_every_help_has_examples_exit_codes_and_named_placeholders(path):
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    text = result.output
    assert "Examples" in text and f"lashctl {' '.join(path)}" in text.split("Examples", 1)[1]
    assert "Exit codes" in text and re.search(r"\b0\b", text.split("Exit codes", 1)[1])
    for default in ("<str>", "<int", "<float", "<path>", "{ID", "x>=0", "TEXT", "INTEGER"):
        assert default not in text, f"lashctl {' '.join(path)} --help shows the placeholder {default}"


@pytest.mark.parametrize("name", ["check", "log", "compact"])
def test_manifest_subcommands_have_help_and_docs_entries(name):
    group = commands()["manifest"]
    command = group.commands[name]
    assert command.help and command.help.strip()
    assert f"manifest {name}" in COMMANDS_DOC


def test_every_test_the_guarantees_name_exists():
    named = re.findall(r"`(test_\w+\.py)(?:::(\w+))?`", GUARANTEES_DOC)
    assert len(named) >= 10
    for filename, name in named:
        found = sorted((ROOT / "tests").rglob(filename))
        assert found, f"docs/guarantees.md names a missing test file {filename}"
        path = found[0]
        if name:
            assert re.search(rf"^(def|class) {name}\b|^{name} = ", path.read_text(), re.MULTILINE), (
                f"docs/guarantees.md names {filename}::{name}, which does not exist"
            )


def test_the_modules_every_command_loads_build_no_dataclass():
    """A dataclass compiles its methods at import (about half a millisecond
    each): the records on the start-up path are lashctl.record classes."""
    code = (
        "import dataclasses, sys\n"
        "made = []\n"
        "real = dataclasses.dataclass\n"
        "def spy(cls=None, **kw):\n"
        "    wrap = lambda c: (made.append(c.__module__ + '.' + c.__name__), real(c, **kw))[1]\n"
        "    return wrap if cls is None else wrap(cls)\n"
        "dataclasses.dataclass = spy\n"
        "import lashctl.cli, lashctl.commands.put, lashctl.commands.get, lashctl.commands.commit\n"
        "import lashctl.commands.list_uncommitted, lashctl.transfer, lashctl.core\n"
        "import lashctl.backends.manifests.jsonl.manifest, lashctl.backends.blobs.localfs\n"
        "print(' '.join(m for m in made if m.startswith('lashctl')))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == []


def test_start_up_objects_are_frozen_once_the_command_starts(tmp_path):
    """``lashctl.main`` run as the program collects garbage sparsely while it
    starts (Typer, the command's modules, the parse) and freezes what
    start-up made when the command's work begins (``app_state``): the
    collector's usual thresholds hold for the command itself, and again
    after ``main``."""
    source = tmp_path / "small.bin"
    source.write_bytes(os.urandom(2048))
    code = (
        "import gc, sys\n"
        "import lashctl, lashctl.cli, lashctl.commands\n"
        "usual = gc.get_threshold()\n"
        "seen = []\n"
        "build, state = lashctl.cli._build_command, lashctl.commands.app_state\n"
        "def spy_build(name):\n"
        "    seen.append(('build', gc.get_threshold()[0] > usual[0]))\n"
        "    return build(name)\n"
        "def spy_state(*args, **kwargs):\n"
        "    got = state(*args, **kwargs)\n"
        "    seen.append(('command', gc.get_threshold() == usual, gc.get_freeze_count() > 1000))\n"
        "    return got\n"
        "lashctl.cli._build_command, lashctl.commands.app_state = spy_build, spy_state\n"
        "from lashctl import main  # as the console script does: main is the program\n"
        f"sys.argv = ['lashctl', '--store', {str(tmp_path / 'store')!r}, 'put', '-s', 's', {str(source)!r}]\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exc:\n"
        "    assert exc.code in (0, None), exc.code\n"
        "print(seen, gc.get_threshold() == usual, file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip().splitlines()[-1] == "[('build', True), ('command', True, True)] True"


def test_main_called_by_another_program_leaves_the_collector_alone(tmp_path):
    """A caller that goes on after ``lashctl.main`` (a test, a wrapper) finds
    nothing frozen and the collector's thresholds as they were."""
    source = tmp_path / "small.bin"
    source.write_bytes(os.urandom(2048))
    code = (
        "import gc, sys\n"
        "import lashctl\n"
        "usual = gc.get_threshold()\n"
        f"sys.argv = ['lashctl', '--store', {str(tmp_path / 'store')!r}, 'put', '-s', 's', {str(source)!r}]\n"
        "try:\n"
        "    lashctl.main()\n"
        "except SystemExit as exc:\n"
        "    assert exc.code in (0, None), exc.code\n"
        "print(gc.get_freeze_count(), gc.get_threshold() == usual, file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip().splitlines()[-1] == "0 True"
