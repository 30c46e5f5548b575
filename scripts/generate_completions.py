"""Regenerate completions/ from the app: bash, zsh, fish and PowerShell.

Usage: python scripts/generate_completions.py [--check]

With --check, write nothing and exit 1 if any checked-in script is stale.
"""

from __future__ import annotations

import sys
from pathlib import Path

from typer._completion_shared import get_completion_script

from lashctl.cli import app
from lashctl.completion import register

# lashctl's own scripts: file names only where a path goes (lashctl/completion.py).
register()

SHELLS = {"bash": "lashctl.bash", "zsh": "_lashctl", "fish": "lashctl.fish", "powershell": "lashctl.ps1"}
OUT_DIR = Path(__file__).resolve().parent.parent / "completions"


def render(shell: str) -> str:
    """The script ``lashctl --show-completion`` prints in ``shell``.

    It is the one Typer's own --show-completion and --install-completion use;
    called directly because those pick the shell by detecting the parent.
    """
    prog_name = app.info.name or "lashctl"
    complete_var = "_{}_COMPLETE".format(prog_name.replace("-", "_").upper())
    script = get_completion_script(prog_name=prog_name, complete_var=complete_var, shell=shell)
    return script.rstrip("\n") + "\n"


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for shell, name in SHELLS.items():
        path = OUT_DIR / name
        text = render(shell)
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
        else:
            OUT_DIR.mkdir(exist_ok=True)
            path.write_text(text)
            print(f"wrote {path}", file=sys.stderr)
    if stale:
        print(
            "stale completion scripts (run python scripts/generate_completions.py): " + ", ".join(stale),
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
