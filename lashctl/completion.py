"""Shell completion: ids from the store, file names only where a path goes.

Completion runs on every TAB. The console entry point (``lashctl.main``)
answers it here before anything imports Typer: the commands, options and
what each one takes come from ``lashctl/_completion_table.py``, generated
from the app (``scripts/generate_completion_table.py``), and the ids from
the shard directories the typed prefix needs (never the manifest). The
answer is the one Typer's own completion gives (Click's resilient parsing,
replayed on the table; ``tests/unit/test_completion_table.py`` compares the
two), and a line the replay does not cover (a quoted word, ``--version``)
is left to Typer.

Typer's bash script falls back to file names whenever lashctl offers nothing
(``complete -o default``), and so do its zsh and fish scripts; that is wrong
after ``--older-than`` or ``--session``. The classes here tell the shell
explicitly: ``::files`` (bash) or ``_files`` (zsh) where a PATH or FILE goes,
and nothing at all elsewhere. PowerShell keeps Typer's behaviour.

A manifest (``--manifest``, ``--to-manifest``) is a file or a URL: its
schemes are offered beside the file names, which lashctl then lists itself
(only directories after ``lash-sqlite:``, nothing after ``postgresql:``).
bash splits a word at ``:`` (COMP_WORDBREAKS): the pieces are joined again
before completing, and the replies trimmed to what follows the last ``:``.
"""

from __future__ import annotations

import os
import sys

FILES = "::files"
# Offered with fewer than two characters typed, more ids than this are
# replaced by their two-character shard prefixes: a list nobody reads costs
# a walk of the store.
MAX_LISTED = 200
_HEX_DIGITS = frozenset("0123456789abcdef")
COMPLETE_VAR = "_LASHCTL_COMPLETE"
SHELLS = ("bash", "zsh", "fish", "powershell", "pwsh")


def _hex(text: str) -> bool:
    return all(c in _HEX_DIGITS for c in text)


def complete_id(ctx, incomplete: str) -> list[str]:
    """Blob ids under ``<store>/sha256/`` that start with what was typed."""
    return ids_in_store(_store_root(ctx), incomplete)


def ids_in_store(root: str, incomplete: str) -> list[str]:
    """Blob ids under ``<root>/sha256/`` that start with what was typed."""
    typed = incomplete.strip().lower()
    scheme = ""
    if typed.startswith("sha256:"):
        scheme, typed = "sha256:", typed[len("sha256:") :]
    if len(typed) > 64 or not _hex(typed):
        return []
    objects = os.path.join(root, "sha256")
    if len(typed) >= 2:
        shards = [typed[:2]]
    else:
        try:
            shards = sorted(n for n in os.listdir(objects) if len(n) == 2 and n.startswith(typed) and _hex(n))
        except OSError:
            return []
    found: list[str] = []
    for shard in shards:
        try:
            names = os.listdir(os.path.join(objects, shard))
        except OSError:
            continue
        found.extend(scheme + n for n in names if n.startswith(typed) and len(n) == 64 and _hex(n) and n[:2] == shard)
        if len(typed) < 2 and len(found) > MAX_LISTED:
            return [scheme + s for s in shards]
    return sorted(found)


def _store_root(ctx) -> str:
    """--store as given on the line being completed (before or after the command), else LASHCTL_STORE, else the default."""
    late = ctx.meta.get("lashctl.late.store")
    if late:
        return str(late)
    while ctx is not None:
        value = (ctx.params or {}).get("store")
        if value:
            return str(value)
        ctx = ctx.parent
    return _default_root()


def _default_root() -> str:
    from_env = os.environ.get("LASHCTL_STORE")
    if from_env:
        return from_env
    import platformdirs

    return platformdirs.user_data_dir("lashctl")


MANIFEST_OPTIONS = ("--manifest", "--to-manifest")
LASH_SQLITE = "lash-sqlite:"  # the lash-sqlite manifest's PREFIX, not imported: completion stays light
SCHEMES = ("postgresql://", LASH_SQLITE)


def complete_manifest(incomplete: str) -> list[str]:
    """The manifest schemes that start with what was typed, and the files and
    directories it names (only directories after ``lash-sqlite:``)."""
    if incomplete.startswith(LASH_SQLITE):
        return [LASH_SQLITE + name for name in _entries(incomplete[len(LASH_SQLITE) :], dirs_only=True)]
    offered = [scheme for scheme in SCHEMES if scheme.startswith(incomplete)]
    if ":" in incomplete:  # a URL: no file names
        return offered
    return offered + _entries(incomplete, dirs_only=False)


def _entries(typed: str, dirs_only: bool) -> list[str]:
    """Names in ``typed``'s directory that start with its last part; directories end in ``/``."""
    head, part = os.path.split(typed)
    try:
        found = list(os.scandir(os.path.expanduser(head) or "."))
    except OSError:
        return []
    names = []
    for entry in found:
        if not entry.name.startswith(part) or (entry.name.startswith(".") and not part.startswith(".")):
            continue
        try:
            is_dir = entry.is_dir()
        except OSError:
            is_dir = False
        if is_dir or not dirs_only:
            names.append(os.path.join(head, entry.name) + ("/" if is_dir else ""))
    return sorted(names)


def _join_colons(args: list[str], incomplete: str) -> tuple[list[str], str]:
    """Undo bash's split of a word at ``:``: ``lash-sqlite : /x`` is ``lash-sqlite:/x``."""
    args = list(args)
    while args and (args[-1] == ":" or (incomplete.startswith(":") and not args[-1].startswith("-"))):
        incomplete = args.pop() + incomplete
    return args, incomplete


BASH_SCRIPT = """
%(complete_func)s() {
    local IFS=$'\\n'
    local reply
    reply=( $( env COMP_WORDS="${COMP_WORDS[*]}" \\
                   COMP_CWORD=$COMP_CWORD \\
                   %(autocomplete_var)s=complete_bash $1 ) )
    if [[ "${reply[0]}" == "%(files)s" ]]; then
        # A path goes here: let bash complete file names.
        compopt -o default
        COMPREPLY=()
    else
        COMPREPLY=( "${reply[@]}" )
        # A directory or a URL scheme goes on: no space after it.
        [[ ${#COMPREPLY[@]} == 1 && "${COMPREPLY[0]}" == *[/:] ]] && compopt -o nospace
    fi
    return 0
}

complete -F %(complete_func)s %(prog_name)s
"""


# ---------------------------------------------------------------------------
# The answer to a TAB, without Typer: Click's resilient parsing on the table.
# ---------------------------------------------------------------------------


class _Decline(Exception):
    """A line the table's replay does not cover: Typer answers it."""


class _Item:
    __slots__ = ("value", "help")

    def __init__(self, value: str, help: str | None = None) -> None:
        self.value = value
        self.help = help


class _Context:
    """What Click's context holds that completion reads: the command, the
    parameters given on the line (their values) and the leftover words."""

    def __init__(self, node: dict, parent: _Context | None) -> None:
        self.node = node
        self.parent = parent
        self.given: dict[str, object] = {}  # parameter name -> value, for those given on the line
        self.rest: list[str] = []
        self.late_store: str | None = parent.late_store if parent is not None else None


def _split_words(text: str) -> list[str]:
    """Click's ``split_arg_string``: shlex, posix, split at whitespace only."""
    if not any(c in text for c in "'\"\\"):
        for blank in "\t\r\n":
            text = text.replace(blank, " ")
        return [word for word in text.split(" ") if word]
    from shlex import shlex

    lex = shlex(text, posix=True)
    lex.whitespace_split = True
    lex.commenters = ""
    out = []
    try:
        for token in lex:
            out.append(token)
    except ValueError:
        out.append(lex.token)
    return out


def _params(node: dict) -> tuple[list[dict], dict[str, int], dict[str, int]]:
    """A command's parameters (in Click's order), and the parser's maps of its long and short options."""
    if "_params" not in node:
        from lashctl._completion_table import FIELDS, PARAMS

        params = [dict(zip(FIELDS, PARAMS[i])) for i in node["params"]]
        long_opts: dict[str, int] = {}
        short_opts: dict[str, int] = {}
        for i, param in enumerate(params):
            if param["kind"] == "option":
                for opt in (*param["opts"], *param["secondary"]):
                    (long_opts if opt[:2] == "--" else short_opts)[opt] = i
        node["_params"] = params, long_opts, short_opts
    return node["_params"]


def _parse(ctx: _Context, args: list[str]) -> None:
    """Click's parser (``OptionParser.parse_args``) and parameter handling in
    resilient mode: a usage error stops it, keeping what was parsed."""
    node = ctx.node
    params, long_opts, short_opts = _params(node)
    opts: dict = {}
    order: list[int] = []
    largs: list[str] = []
    rargs = list(args)

    def take(option: int, name: str, value: object) -> None:
        param = params[option]
        if param["multiple"]:
            opts.setdefault(param["name"], []).append(value if param["takes_value"] else name not in param["secondary"])
        elif param["takes_value"]:
            opts[param["name"]] = value
        else:
            opts[param["name"]] = name not in param["secondary"]
        order.append(option)

    def value_for(param: dict) -> str:
        if not rargs:
            raise _Stop
        return rargs.pop(0)

    def match_short(arg: str) -> None:
        prefix = arg[0]
        i = 1
        for ch in arg[1:]:
            opt = prefix + ch
            index = short_opts.get(opt)
            i += 1
            if index is None:
                raise _Stop
            param = params[index]
            stop = False
            value = None
            if param["takes_value"]:
                if i < len(arg):
                    rargs.insert(0, arg[i:])
                    stop = True
                value = value_for(param)
            take(index, opt, value)
            if stop:
                break

    def process_opts(arg: str) -> None:
        explicit = None
        if "=" in arg:
            long_opt, explicit = arg.split("=", 1)
        else:
            long_opt = arg
        index = long_opts.get(long_opt)
        if index is None:
            if arg[:2] != "--":
                match_short(arg)
                return
            raise _Stop
        param = params[index]
        if param["takes_value"]:
            if explicit is not None:
                rargs.insert(0, explicit)
            value = value_for(param)
        elif explicit is not None:
            raise _Stop
        else:
            value = None
        take(index, long_opt, value)

    try:
        while rargs:
            arg = rargs.pop(0)
            if arg == "--":
                break
            if arg[:1] == "-" and len(arg) > 1:
                process_opts(arg)
            elif node["interspersed"]:
                largs.append(arg)
            else:
                rargs.insert(0, arg)
                break
        # Positional arguments (Click's _unpack_args: only nargs 1 and -1 occur).
        words = largs + rargs
        arguments = [p for p in params if p["kind"] == "argument"]
        spec = [p["nargs"] for p in arguments]
        values: list = []
        if -1 in spec:
            star = spec.index(-1)
            front = words[:star]
            words = words[star:]
            values = [front[i] if i < len(front) else None for i in range(star)]
            back_count = len(spec) - star - 1
            back: list[str | None] = list(words[len(words) - back_count :]) if back_count else []
            middle = words[: len(words) - back_count] if back_count else words
            if back_count and len(back) < back_count:
                missing: list[str | None] = [None] * (back_count - len(back))
                back = missing + back
            values.append(tuple(middle))
            values.extend(back)
            words = []
        else:
            for _ in spec:
                values.append(words.pop(0) if words else None)
        for param, value in zip(arguments, values):
            if param["nargs"] == -1 and value == ():
                value = None
            opts[param["name"]] = value
        largs, rargs = words, []
    except _Stop:
        pass
    for name, value in opts.items():
        if value is not None:
            ctx.given[name] = value
    for index in order:
        param = params[index]
        if param["eager_callback"] and param["name"] in ctx.given:
            raise _Decline  # --version prints while Click parses: Typer answers
    late = node.get("late_store")
    if late and opts.get(late):
        ctx.late_store = opts[late]
    ctx.rest = largs  # after a usage error Click keeps only what it had set aside


class _Stop(Exception):
    """A usage error while parsing: resilient parsing stops there."""


def _resolve(args: list[str]) -> _Context:
    """Click's ``_resolve_context``: follow the commands named on the line."""
    from lashctl._completion_table import ROOT

    ctx = _Context(ROOT, None)
    _parse(ctx, args)
    rest = ctx.rest
    while rest and ctx.node["commands"] is not None:
        sub = ctx.node["commands"].get(rest[0])
        if sub is None:
            return ctx
        child = _Context(sub, ctx)
        _parse(child, rest[1:])
        ctx, rest = child, child.rest
        if ctx.node["commands"] is None:
            break
    return ctx


def _resolve_incomplete(ctx: _Context, args: list[str], incomplete: str) -> tuple[dict | None, str]:
    """Click's ``_resolve_incomplete``: None for the command itself, else the parameter."""
    if incomplete == "=":
        incomplete = ""
    elif "=" in incomplete and incomplete[:1] == "-":
        name, _, incomplete = incomplete.partition("=")
        args.append(name)
    if "--" not in args and incomplete[:1] == "-":
        return None, incomplete
    params = _params(ctx.node)[0]
    last = args[-1] if args else ""
    if last[:1] == "-":
        for param in params:
            if param["option"] and last in param["opts"]:
                return param, incomplete
    for param in params:
        if param["argument"] and (param["nargs"] == -1 or param["name"] not in ctx.given):
            return param, incomplete
    return None, incomplete


def _command_items(ctx: _Context, incomplete: str) -> list[_Item]:
    node = ctx.node
    items = []
    if node["commands"] is not None:
        items = [
            _Item(name, sub["short_help"])
            for name, sub in node["commands"].items()
            if name.startswith(incomplete) and not sub["hidden"]
        ]
    if incomplete and not incomplete[0].isalnum():
        for param in _params(node)[0]:
            if not param["listed"] or (not param["multiple"] and param["name"] in ctx.given):
                continue
            items.extend(
                _Item(name, param["help"])
                for name in (*param["opts"], *param["secondary"])
                if name.startswith(incomplete)
            )
    return items


def _store_of(ctx: _Context) -> str:
    if ctx.late_store:
        return str(ctx.late_store)
    walk: _Context | None = ctx
    while walk is not None:
        value = walk.given.get("store") if walk.node.get("store_param") else None
        if value:
            return str(value)
        walk = walk.parent
    return _default_root()


def _param_items(ctx: _Context, param: dict, incomplete: str) -> list[_Item]:
    kind = param["complete"]
    if kind == "id":
        return [_Item(v) for v in ids_in_store(_store_of(ctx), incomplete) if v.startswith(incomplete)]
    if kind == "choice":
        if param["case_sensitive"]:
            return [_Item(c) for c in param["choices"] if c.startswith(incomplete)]
        low = incomplete.lower()
        return [_Item(c) for c in param["choices"] if c.lower().startswith(low)]
    if kind == "echo":
        return [_Item(incomplete)]
    return []


def _completions(args: list[str], incomplete: str, resolving: bool) -> tuple[list[_Item], bool]:
    """The items offered, and whether a file name goes here (lashctl's shells)."""
    ctx = _resolve(list(args))
    param, incomplete = _resolve_incomplete(ctx, args, incomplete)
    if param is None:
        return _command_items(ctx, incomplete), False
    if resolving and param["manifest"]:
        return [_Item(v) for v in complete_manifest(incomplete)], False
    return _param_items(ctx, param, incomplete), resolving and param["files"]


def _rendered(shell: str, text: str) -> str:
    from lashctl._completion_table import RENDERED

    return RENDERED.get((shell, text), text)


def _zsh_escape(s: str) -> str:
    return s.replace('"', '""').replace("'", "''").replace("$", "\\$").replace("`", "\\`").replace(":", r"\\:")


def _words_of(environ, shell: str) -> tuple[list[str], str]:
    """The complete words after the program's name, and the incomplete one, as each shell's script passes them."""
    if shell == "bash":
        words = _split_words(environ["COMP_WORDS"])
        cword = int(environ["COMP_CWORD"])
        try:
            incomplete = words[cword]
        except IndexError:
            incomplete = ""
        return words[1:cword], incomplete
    line = environ.get("_TYPER_COMPLETE_ARGS", "")
    words = _split_words(line)
    if shell in ("powershell", "pwsh"):
        incomplete = environ.get("_TYPER_COMPLETE_WORD_TO_COMPLETE", "")
        return (words[1:-1] if incomplete else words[1:]), incomplete
    args = words[1:]
    if args and not line.endswith(" "):
        return args[:-1], args[-1]
    return args, ""


def _reply(environ, shell: str) -> str | int:
    """What Typer's completion (with lashctl's classes) prints, or the exit code fish's is-args asks for."""
    args, incomplete = _words_of(environ, shell)
    if shell == "bash":
        args, incomplete = _join_colons(args, incomplete)
        items, files = _completions(args, incomplete, resolving=True)
        if files and not items:
            return FILES
        typed = incomplete[: incomplete.rfind(":") + 1]
        return "\n".join(
            item.value[len(typed) :] if typed and item.value.startswith(typed) else item.value for item in items
        )
    if shell == "zsh":
        items, files = _completions(args, incomplete, resolving=True)
        if not items:
            return "_files" if files else ""
        lines = [
            f'"{_zsh_escape(i.value)}":"{_rendered("zsh", _zsh_escape(i.help))}"'
            if i.help
            else f'"{_zsh_escape(i.value)}"'
            for i in items
        ]
        return "_arguments '*: :((" + "\n".join(lines) + "))'"
    if shell == "fish":
        items, files = _completions(args, incomplete, resolving=True)
        if environ.get("_TYPER_COMPLETE_FISH_ACTION", "") == "is-args":
            return 1 if files and not items else 0
        return "\n".join(f"{i.value}\t{_rendered('fish', _one_line(i.help))}" if i.help else i.value for i in items)
    items, _files = _completions(args, incomplete, resolving=False)
    return "\n".join(f"{i.value}:::{_rendered('powershell', i.help) if i.help else ' '}" for i in items)


def _one_line(text: str) -> str:
    """Typer's fish help: every whitespace character a space (``re.sub(r"\\s", " ", ...)``)."""
    return "".join(" " if c.isspace() else c for c in text)


def answer(environ=None) -> int | None:
    """Answer a TAB as Typer would (the same output, the same exit code) and
    return the exit code; None when Typer has to answer this one."""
    environ = os.environ if environ is None else environ
    instruction, _, shell = environ.get(COMPLETE_VAR, "").partition("_")
    if instruction != "complete" or shell not in SHELLS:
        return None
    if sys.stdout is None or sys.stdin is None or sys.stderr is None:
        return None  # the entry point's own handling of closed streams
    try:
        reply = _reply(environ, shell)
    except (_Decline, KeyError, ValueError):
        return None
    if isinstance(reply, int):
        return reply
    out = reply + "\n"
    stream = sys.stdout
    try:
        stream.reconfigure(errors="surrogateescape")  # type: ignore[union-attr]
    except (AttributeError, ValueError):
        pass
    if "\033" in out and not stream.isatty():
        import re

        out = re.sub(r"\033\[[;?0-9]*[a-zA-Z]", "", out)  # click.echo strips ANSI codes off a terminal
    stream.write(out)
    stream.flush()
    return 0


# ---------------------------------------------------------------------------
# Typer's completion classes, for --show-completion and for the full app.
# ---------------------------------------------------------------------------


def _typer_classes() -> tuple[type, type, type]:
    from typing import Any

    from typer._click.core import Parameter
    from typer._click.shell_completion import CompletionItem, _resolve_context, _resolve_incomplete
    from typer._completion_classes import BashComplete, FishComplete, ZshComplete

    def is_manifest(obj: Any) -> bool:
        return isinstance(obj, Parameter) and any(opt in MANIFEST_OPTIONS for opt in getattr(obj, "opts", ()))

    def wants_files(obj: Any) -> bool:
        return isinstance(obj, Parameter) and any(word in (obj.metavar or "") for word in ("PATH", "FILE"))

    class Resolving:
        """Remembers whether the value being completed is a file name."""

        wants_files = False

        def get_completions(self, args: list[str], incomplete: str) -> list[CompletionItem]:
            ctx = _resolve_context(self.cli, self.ctx_args, self.prog_name, args)  # type: ignore[attr-defined]
            obj, incomplete = _resolve_incomplete(ctx, args, incomplete)
            if is_manifest(obj):
                self.wants_files = False  # listed here, with the schemes
                return [CompletionItem(value) for value in complete_manifest(incomplete)]
            self.wants_files = wants_files(obj)
            return obj.shell_complete(ctx, incomplete)

    class LashctlBash(Resolving, BashComplete):
        source_template = BASH_SCRIPT

        def source_vars(self) -> dict[str, Any]:
            return {**super().source_vars(), "files": FILES}

        def complete(self) -> str:
            args, incomplete = _join_colons(*self.get_completion_args())
            completions = self.get_completions(args, incomplete)
            if self.wants_files and not completions:
                return FILES
            # bash replaces only what follows the word's last ':'.
            typed = incomplete[: incomplete.rfind(":") + 1]
            for item in completions:
                if typed and item.value.startswith(typed):
                    item.value = item.value[len(typed) :]
            return "\n".join(self.format_completion(item) for item in completions)

    class LashctlZsh(Resolving, ZshComplete):
        def complete(self) -> str:
            args, incomplete = self.get_completion_args()
            completions = self.get_completions(args, incomplete)
            if completions:
                items = "\n".join(self.format_completion(item) for item in completions)
                return f"_arguments '*: :(({items}))'"
            return "_files" if self.wants_files else ""

    class LashctlFish(Resolving, FishComplete):
        def complete(self) -> str:
            action = os.getenv("_TYPER_COMPLETE_FISH_ACTION", "")
            args, incomplete = self.get_completion_args()
            completions = self.get_completions(args, incomplete)
            if action == "is-args":
                # Exit 0: lashctl's list (maybe empty) replaces file names; 1: files.
                sys.exit(1 if self.wants_files and not completions else 0)
            return "\n".join(self.format_completion(item) for item in completions)

    return LashctlBash, LashctlZsh, LashctlFish


def register() -> None:
    """Use these classes for completing and for the scripts --show/--install-completion print."""
    from typer import _completion_shared
    from typer._click.shell_completion import add_completion_class

    bash, zsh, fish = _typer_classes()
    add_completion_class(bash, "bash")
    add_completion_class(zsh, "zsh")
    add_completion_class(fish, "fish")
    _completion_shared._completion_scripts["bash"] = BASH_SCRIPT.replace("%(files)s", FILES)
