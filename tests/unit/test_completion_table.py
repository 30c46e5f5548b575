"""A TAB is answered from lashctl/_completion_table.py without Typer: the
answer must be the one Typer's own completion gives, for every shell.

Each case runs both in this process: Typer's (``lashctl.cli.main`` with the
completion variables set, as the shell scripts call it) and the table's
(``lashctl.completion.answer``, what ``lashctl.main`` runs before importing
Typer), and compares what they print and how they exit, exactly. The only
difference allowed is the order of ``-h`` and ``--help``: Click keeps the
help option's names in a set, so Typer's order changes from run to run.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys

import pytest
import typer.rich_utils

import lashctl
from lashctl import completion
from lashctl._completion_table import FIELDS, PARAMS, ROOT
from lashctl.cli import main as typer_main

IDS = ["ab" + "0" * 62, "ab" + "1" * 62, "ac" + "2" * 62, "f0" + "3" * 62]
SHELLS = ["bash", "zsh", "fish", "fish-is-args", "powershell"]


@pytest.fixture
def place(tmp_path, monkeypatch):
    """A store with four ids, a working directory with a file and a directory, and no LASHCTL_ variables."""
    store = tmp_path / "store"
    for blob in IDS:
        shard = store / "sha256" / blob[:2]
        shard.mkdir(parents=True, exist_ok=True)
        (shard / blob).write_bytes(b"")
    work = tmp_path / "work"
    (work / "sessions").mkdir(parents=True)
    (work / "manifest.jsonl").write_text("")
    monkeypatch.chdir(work)
    for name in list(os.environ):
        if name.startswith(("LASHCTL_", "_LASHCTL_", "_TYPER_", "COMP_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setattr(typer.rich_utils, "MAX_WIDTH", 1_000_000)  # help texts unwrapped, as the table has them
    return store


def _environ(shell: str, words: list[str], incomplete: str) -> dict[str, str]:
    """The variables the shell's script sets for a TAB after ``lashctl WORDS... INCOMPLETE``."""
    if shell == "bash":
        line = ["lashctl", *words, incomplete]
        return {"_LASHCTL_COMPLETE": "complete_bash", "COMP_WORDS": "\n".join(line), "COMP_CWORD": str(len(words) + 1)}
    typed = " ".join(["lashctl", *words, incomplete]) if incomplete else " ".join(["lashctl", *words]) + " "
    if shell == "powershell":
        return {
            "_LASHCTL_COMPLETE": "complete_powershell",
            "_TYPER_COMPLETE_ARGS": typed.rstrip(" "),
            "_TYPER_COMPLETE_WORD_TO_COMPLETE": incomplete,
        }
    if shell.startswith("fish"):
        action = "is-args" if shell == "fish-is-args" else "get-args"
        return {
            "_LASHCTL_COMPLETE": "complete_fish",
            "_TYPER_COMPLETE_ARGS": typed,
            "_TYPER_COMPLETE_FISH_ACTION": action,
        }
    return {"_LASHCTL_COMPLETE": "complete_zsh", "_TYPER_COMPLETE_ARGS": typed}


def _run(monkeypatch, capsys, environ: dict[str, str], which: str) -> tuple[str, object]:
    with monkeypatch.context() as patch:
        for name, value in environ.items():
            patch.setenv(name, value)
        capsys.readouterr()
        if which == "typer":
            try:
                typer_main()
                code: object = "returned"
            except SystemExit as exc:
                code = exc.code
        else:
            code = completion.answer()
        return capsys.readouterr().out, code


def _canonical(out: str) -> str:
    """The help option's two names in one order (Click keeps them in a set)."""
    head, tail = "_arguments '*: :((", "))'\n"
    if out.startswith(head) and out.endswith(tail):
        return head + _canonical(out[len(head) : -len(tail)]) + tail
    lines = out.split("\n")
    for i in range(len(lines) - 1):
        first, second = lines[i].lstrip('"'), lines[i + 1].lstrip('"')
        if first.startswith("--help") and second.startswith("-h") and not second.startswith("-h-"):
            lines[i], lines[i + 1] = lines[i + 1], lines[i]
    return "\n".join(lines)


def _same(monkeypatch, capsys, shell: str, words: list[str], incomplete: str) -> str:
    environ = _environ(shell, words, incomplete)
    typer_out, typer_code = _run(monkeypatch, capsys, environ, "typer")
    table_out, table_code = _run(monkeypatch, capsys, environ, "table")
    assert table_code is not None, f"the table left {shell} {words} {incomplete!r} to Typer"
    assert (_canonical(table_out), table_code) == (_canonical(typer_out), typer_code or 0), (
        shell,
        words,
        incomplete,
        _diff(typer_out, table_out),
    )
    return table_out


def _diff(typer_out: str, table_out: str) -> str:
    import difflib

    return "\n".join(
        difflib.unified_diff(
            _canonical(typer_out).splitlines(), _canonical(table_out).splitlines(), "typer", "table", lineterm=""
        )
    )


def _commands(node: dict = ROOT, path: tuple = ()) -> list[tuple[tuple, dict]]:
    found = [(path, node)]
    for name, sub in (node["commands"] or {}).items():
        found += _commands(sub, (*path, name))
    return found


def _params(node: dict) -> list[dict]:
    return [dict(zip(FIELDS, PARAMS[i])) for i in node["params"]]


def _prefixes(word: str) -> list[str]:
    return [word[:n] for n in range(len(word) + 1)]


COMMANDS = _commands()


def test_the_table_knows_every_command_of_the_app():
    from typer.main import get_command

    from lashctl.cli import app

    group = get_command(app)
    assert list(ROOT["commands"]) == group.list_commands(None)
    manifest = group.get_command(None, "manifest")
    assert list(ROOT["commands"]["manifest"]["commands"]) == manifest.list_commands(None)


@pytest.mark.parametrize("shell", SHELLS)
def test_every_command_prefix(place, monkeypatch, capsys, shell):
    for path, node in COMMANDS:
        for name in node["commands"] or {}:
            for typed in _prefixes(name):
                _same(monkeypatch, capsys, shell, list(path), typed)


@pytest.mark.parametrize("shell", SHELLS)
def test_every_option_prefix_of_every_command(place, monkeypatch, capsys, shell):
    for path, node in COMMANDS:
        names = {name for p in _params(node) if p["kind"] == "option" for name in (*p["opts"], *p["secondary"])}
        typed = sorted({prefix for name in names for prefix in _prefixes(name) if prefix.startswith("-")})
        for prefix in typed:
            _same(monkeypatch, capsys, shell, list(path), prefix)


@pytest.mark.parametrize("shell", SHELLS)
def test_the_values_of_every_option(place, monkeypatch, capsys, shell):
    """Choices, manifest locations, file names, and options whose values are
    free text (nothing offered, and no file names in lashctl's shells)."""
    for path, node in COMMANDS:
        for param in _params(node):
            if param["kind"] != "option" or not param["takes_value"]:
                continue
            values = {"", "x", "-"} | {p for choice in param["choices"] or () for p in _prefixes(choice)}
            if param["manifest"]:
                values |= {"lash", "lash-sqlite:", "lash-sqlite:se", "postgresql://db", "ma", "se", "./"}
            if param["files"]:
                values |= {"ma", "se", "sessions/", "~"}
            for opt in param["opts"]:
                for value in sorted(values):
                    _same(monkeypatch, capsys, shell, [*path, opt], value)
                _same(monkeypatch, capsys, shell, list(path), f"{opt}=")
                _same(monkeypatch, capsys, shell, list(path), f"{opt}=se")


@pytest.mark.parametrize("shell", SHELLS)
def test_ids_from_the_store(place, monkeypatch, capsys, shell):
    store = str(place)
    typed = ["", "a", "ab", "ab0", "AB", "f", "sha256:", "sha256:ab", "zz", IDS[0], IDS[0] + "0"]
    for path, node in COMMANDS:
        for param in _params(node):
            if param["complete"] != "id":
                continue
            at = [*path, *(param["opts"][:1] if param["kind"] == "option" else [])]
            if path == ("commit",) or path == ("forget",):
                at = [*path, "-s", "s", *at[len(path) :]]
            lines = [
                ["--store", store, *at],
                [*at[: len(path)], "--store", store, *at[len(path) :]],
                [f"--store={store}", *at],
                ["--store", "elsewhere", *path, "--store", store, *at[len(path) :]],
            ]
            if param["kind"] == "argument":
                lines.append(["--store", store, *at, IDS[1]])  # a second id
            for words in lines:
                for prefix in typed:
                    out = _same(monkeypatch, capsys, shell, words, prefix)
                    if shell == "bash" and prefix == "ab" and words is lines[0]:
                        assert out.split() == IDS[:2]
            with monkeypatch.context() as patch:
                patch.setenv("LASHCTL_STORE", store)
                for prefix in typed:
                    _same(monkeypatch, capsys, shell, at, prefix)
            for prefix in ("", "ab"):
                _same(monkeypatch, capsys, shell, at, prefix)  # the default store: empty


VOCABULARY = [
    "put",
    "get",
    "delete",
    "ls",
    "commit",
    "manifest",
    "log",
    "compact",
    "migrate",
    "nope",
    "-s",
    "s",
    "--session",
    "--store",
    "--manifest",
    "--json",
    "-q",
    "-qv",
    "-vq",
    "-sx",
    "-s=x",
    "--store=x",
    "--json=1",
    "--bogus",
    "-z",
    "--",
    "-",
    "x",
    ":",
    "lash-sqlite",
    "--sort",
    "size",
    "--state",
    "--id",
    "-o",
    "--output",
    "ab",
    "-h",
    "--help",
    "--lock-timeout",
    "1",
    "--layout",
    "bare",
    "--files-from",
    "--older-than",
    "--to-manifest",
    "=",
    "'quoted word'",
    "sha256:ab",
]


def test_any_line_is_answered_as_typer_answers_it(place, monkeypatch, capsys):
    """Lines made of commands, options, values and mistakes, in any order."""
    chance = random.Random(23)
    declined = 0
    for _ in range(600):
        words = [chance.choice(VOCABULARY) for _ in range(chance.randint(0, 5))]
        if words and words[0] not in ("nope", "--", "-"):
            words.insert(0, chance.choice(["--store", "--json", "-q"]) if chance.random() < 0.2 else "")
            words = [w for w in words if w]
        incomplete = chance.choice(["", "-", "--", "a", "s", "l", "--s", "lash-sqlite:", "ab", ":"])
        shell = chance.choice(SHELLS)
        environ = _environ(shell, words, incomplete)
        typer_out, typer_code = _run(monkeypatch, capsys, environ, "typer")
        table_out, table_code = _run(monkeypatch, capsys, environ, "table")
        if table_code is None:
            declined += 1
            continue
        assert (_canonical(table_out), table_code) == (_canonical(typer_out), typer_code or 0), environ
    assert declined == 0


def test_a_line_with_version_is_left_to_typer(place, monkeypatch, capsys):
    """--version prints while Click parses the line, even when completing: Typer answers that one."""
    environ = _environ("bash", ["--version"], "")
    assert _run(monkeypatch, capsys, environ, "table") == ("", None)


def test_the_entry_point_answers_without_typer(place, monkeypatch):
    """What a TAB imports: no Typer, Click or Rich, no command module."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LASHCTL_")}
    env.update(_LASHCTL_COMPLETE="complete_bash", COMP_WORDS=f"lashctl --store {place} get ab", COMP_CWORD="4")
    code = (
        "import sys, lashctl\n"
        "try:\n    lashctl.main()\nexcept SystemExit as exc:\n    assert exc.code == 0, exc.code\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('typer', 'click', 'rich', 'platformdirs')\n"
        "             or m.startswith(('lashctl.cli', 'lashctl.commands')))\n"
        "print(bad, file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.stdout.split() == IDS[:2]
    assert result.stderr.strip() == "[]"


def test_a_line_the_table_leaves_goes_on_to_typer(place, monkeypatch):
    env = {k: v for k, v in os.environ.items() if not k.startswith("LASHCTL_")}
    env.update(_LASHCTL_COMPLETE="complete_bash", COMP_WORDS="lashctl --version g", COMP_CWORD="2")
    result = subprocess.run(
        [sys.executable, "-c", "import lashctl; lashctl.main()"], capture_output=True, text=True, env=env
    )
    assert result.returncode == 0 and result.stdout.splitlines() == [f"lashctl {lashctl.__version__}", "get", "gc"]


@pytest.mark.parametrize("spec", [[1], [-1], [1, 1], [1, -1], [-1, 1], [1, -1, 1], [-1, 1, 1]])
def test_positional_arguments_are_shared_out_as_click_does(spec):
    """Commands to come may take several arguments: the replay gives each the words Click gives it."""
    from typer._click.parser import _unpack_args

    arguments = [
        dict.fromkeys(FIELDS) | {"kind": "argument", "name": f"a{i}", "nargs": n, "opts": (f"a{i}",), "secondary": ()}
        for i, n in enumerate(spec)
    ]
    node = {"interspersed": True, "_params": (arguments, {}, {}), "late_store": None}
    for count in range(5):
        words = [f"w{i}" for i in range(count)]
        ctx = completion._Context(node, None)
        completion._parse(ctx, words)
        expected, rest = _unpack_args(words, spec)
        for argument, value in zip(arguments, expected):
            if value == ():
                value = None
            assert ctx.given.get(argument["name"]) == value, (spec, words)
        assert ctx.rest == rest
