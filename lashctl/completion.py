"""Shell completion: ids from the store, file names only where a path goes.

Completion runs on every TAB, so it reads only the shard directories the
typed prefix needs (never the manifest) and imports nothing heavy.

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
import re
from typing import Any

from typer._click.core import Parameter
from typer._click.shell_completion import CompletionItem, _resolve_context, _resolve_incomplete
from typer._completion_classes import BashComplete, FishComplete, ZshComplete

FILES = "::files"
# Offered with fewer than two characters typed, more ids than this are
# replaced by their two-character shard prefixes: a list nobody reads costs
# a walk of the store.
MAX_LISTED = 200
_HEX = re.compile(r"[0-9a-f]*")
_ID = re.compile(r"[0-9a-f]{64}")


def complete_id(ctx: Any, incomplete: str) -> list[str]:
    """Blob ids under ``<store>/sha256/`` that start with what was typed."""
    typed = incomplete.strip().lower()
    scheme = ""
    if typed.startswith("sha256:"):
        scheme, typed = "sha256:", typed[len("sha256:"):]
    if len(typed) > 64 or not _HEX.fullmatch(typed):
        return []
    objects = os.path.join(_store_root(ctx), "sha256")
    if len(typed) >= 2:
        shards = [typed[:2]]
    else:
        try:
            shards = sorted(n for n in os.listdir(objects) if len(n) == 2 and n.startswith(typed) and _HEX.fullmatch(n))
        except OSError:
            return []
    found: list[str] = []
    for shard in shards:
        try:
            names = os.listdir(os.path.join(objects, shard))
        except OSError:
            continue
        found.extend(scheme + n for n in names if n.startswith(typed) and _ID.fullmatch(n) and n[:2] == shard)
        if len(typed) < 2 and len(found) > MAX_LISTED:
            return [scheme + s for s in shards]
    return sorted(found)


def _store_root(ctx: Any) -> str:
    """--store as given on the line being completed (before or after the command), else LASHCTL_STORE, else the default."""
    late = ctx.meta.get("lashctl.late.store")
    if late:
        return str(late)
    while ctx is not None:
        value = (ctx.params or {}).get("store")
        if value:
            return str(value)
        ctx = ctx.parent
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
        return [LASH_SQLITE + name for name in _entries(incomplete[len(LASH_SQLITE):], dirs_only=True)]
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


def _is_manifest(obj: Any) -> bool:
    return isinstance(obj, Parameter) and any(opt in MANIFEST_OPTIONS for opt in getattr(obj, "opts", ()))


def _wants_files(obj: Any) -> bool:
    return isinstance(obj, Parameter) and any(word in (obj.metavar or "") for word in ("PATH", "FILE"))


class _Resolving:
    """Remembers whether the value being completed is a file name."""

    wants_files = False

    def get_completions(self, args: list[str], incomplete: str) -> list[CompletionItem]:
        ctx = _resolve_context(self.cli, self.ctx_args, self.prog_name, args)  # type: ignore[attr-defined]
        obj, incomplete = _resolve_incomplete(ctx, args, incomplete)
        if _is_manifest(obj):
            self.wants_files = False  # listed here, with the schemes
            return [CompletionItem(value) for value in complete_manifest(incomplete)]
        self.wants_files = _wants_files(obj)
        return obj.shell_complete(ctx, incomplete)


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


class LashctlBash(_Resolving, BashComplete):
    source_template = BASH_SCRIPT

    def source_vars(self) -> dict[str, Any]:
        return {**super().source_vars(), "files": FILES}

    def complete(self) -> str:
        args, incomplete = _join_colons(*self.get_completion_args())
        completions = self.get_completions(args, incomplete)
        if self.wants_files and not completions:
            return FILES
        # bash replaces only what follows the word's last ':'.
        typed = incomplete[:incomplete.rfind(":") + 1]
        for item in completions:
            if typed and item.value.startswith(typed):
                item.value = item.value[len(typed):]
        return "\n".join(self.format_completion(item) for item in completions)


class LashctlZsh(_Resolving, ZshComplete):
    def complete(self) -> str:
        args, incomplete = self.get_completion_args()
        completions = self.get_completions(args, incomplete)
        if completions:
            items = "\n".join(self.format_completion(item) for item in completions)
            return f"_arguments '*: :(({items}))'"
        return "_files" if self.wants_files else ""


class LashctlFish(_Resolving, FishComplete):
    def complete(self) -> str:
        import sys

        action = os.getenv("_TYPER_COMPLETE_FISH_ACTION", "")
        args, incomplete = self.get_completion_args()
        completions = self.get_completions(args, incomplete)
        if action == "is-args":
            # Exit 0: lashctl's list (maybe empty) replaces file names; 1: files.
            sys.exit(1 if self.wants_files and not completions else 0)
        return "\n".join(self.format_completion(item) for item in completions)


def register() -> None:
    """Use these classes for completing and for the scripts --show/--install-completion print."""
    from typer import _completion_shared
    from typer._click.shell_completion import add_completion_class

    add_completion_class(LashctlBash, "bash")
    add_completion_class(LashctlZsh, "zsh")
    add_completion_class(LashctlFish, "fish")
    _completion_shared._completion_scripts["bash"] = BASH_SCRIPT.replace("%(files)s", FILES)
