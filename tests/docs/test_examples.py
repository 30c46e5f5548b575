"""Every shell example in README.md and docs/*.md runs, offline, on one
scratch home and store. A ```sh block that cannot run here is marked in the
text with ``<!-- example: skip (why) -->`` (or is one of the README's two CI
commands, which .ci/run runs) and shows up as a skipped test with its reason."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import png_bytes
from reliability_helpers import find_lashctl

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted(p for p in (ROOT / "docs").glob("*.md") if p.name != "cli.md")]
BLOCK = re.compile(r"(?:^(<!--[^\n]*-->)\n)?^```sh\n(.*?)^```", re.MULTILINE | re.DOTALL)


def examples() -> list:
    found = []
    for page in PAGES:
        text = page.read_text()
        for match in BLOCK.finditer(text):
            line = text.count("\n", 0, match.start(2))
            name = f"{page.relative_to(ROOT)}:{line}"
            marker = match.group(1) or ""
            skip = re.match(r"<!-- example: skip \((.+)\) -->", marker)
            marks = []
            if skip:
                marks = [pytest.mark.skip(reason=skip.group(1))]
            elif marker.startswith("<!-- ci:"):
                marks = [pytest.mark.skip(reason="one of the README's CI commands: .ci/run runs it")]
            found.append(pytest.param(match.group(2), id=name, marks=marks))
    return found


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> tuple[Path, dict]:
    """A scratch directory with the files the examples name, a home whose
    default store holds a blob, and lashctl first on the PATH."""
    work = tmp_path_factory.mktemp("examples")
    (work / "photo.png").write_bytes(png_bytes(3, 2))
    (work / "notes.pdf").write_bytes(b"%PDF-1.4 notes\n")
    for folder in ("uploads", "outbox"):
        (work / folder).mkdir()
        for n in range(2):
            (work / folder / f"file-{n}.txt").write_text(f"{folder} {n}\n")
    shutil.copytree(ROOT / "completions", work / "completions")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LASHCTL_", "XDG_"))}
    env.update(
        HOME=str(work / "home"),
        LASHCTL_CACHE_DIR=str(work / "cache"),
        COLUMNS="80",
        NO_COLOR="1",
        PATH=f"{Path(find_lashctl()).parent}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
    )
    (work / "home").mkdir()
    # The default store (the jq recipes read its manifest) holds one blob.
    subprocess.run(
        ["lashctl", "-q", "put", "-s", "demo", "notes.pdf"], cwd=work, env=env, check=True, capture_output=True
    )
    return work, env


@pytest.mark.parametrize("script", examples())
def test_example_runs(script, scratch):
    work, env = scratch
    if "jq " in script and shutil.which("jq") is None:
        pytest.skip("jq is not installed")
    # Paths of a deployment (/srv, /var/lib) land in the scratch directory.
    script = script.replace("/srv/", f"{work}/srv/").replace("/var/lib/", f"{work}/var/lib/")
    prelude = "set -eo pipefail\nsome-producer() { printf 'produced bytes\\n'; }\n"
    result = subprocess.run(
        ["bash", "-c", prelude + script], cwd=work, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
