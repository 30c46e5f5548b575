"""Regenerate docs/cli.md, the command reference, from the app.

Usage: python scripts/generate_docs.py [--check]

It runs Typer's generator (python -m typer lashctl.cli utils docs --name
lashctl --title "lashctl command reference") and turns the HTML entities it
writes for help text (&#x27;, &lt;, &gt;) back into the characters they stand
for, so the reference reads the same on GitHub and as plain text. A
placeholder in angle brackets (``<store>/manifest.jsonl``) goes into a code
span, where a Markdown renderer shows it rather than taking it for HTML.
With --check, write nothing and exit 1 if docs/cli.md is stale.
"""

from __future__ import annotations

import html
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "cli.md"


def render() -> str:
    with tempfile.TemporaryDirectory() as scratch:
        raw = Path(scratch) / "cli.md"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "typer",
                "lashctl.cli",
                "utils",
                "docs",
                "--name",
                "lashctl",
                "--title",
                "lashctl command reference",
                "--output",
                str(raw),
            ],
            check=True,
            capture_output=True,
            cwd=ROOT,
        )
        text = html.unescape(raw.read_text())
    return "".join(_code_spans(line) for line in text.splitlines(keepends=True))


_ANGLED = re.compile(r"(?<![`\w<])([\w:./-]*<[\w-]+>[\w:./-]*)(?![`\w>])")


def _code_spans(line: str) -> str:
    if line.startswith(("    ", "$ ", "```")):
        return line  # a code block already shows text as it is
    parts = line.split("`")
    # Even parts are outside code spans.
    return "`".join(_ANGLED.sub(r"`\1`", part) if i % 2 == 0 else part for i, part in enumerate(parts))


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT} is stale: run python scripts/generate_docs.py", file=sys.stderr)
            return 1
        return 0
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(text)
    print(f"wrote {OUT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
