"""The progress bar as a terminal of each width draws it: one line that
names the file being stored and never wraps its figures."""

from __future__ import annotations

import io

import pytest

from lashctl.render import _RichProgressBar, human_bytes

GIB = 1024**3
NAME = "recording-2026-11-02-interview-with-a-very-long-name.wav"


def drawn(
    width: int,
    *,
    unit: str = "bytes",
    total: int | None = 1_932_735_283,
    done: int = 1_288_490_188,
    item: str | None = NAME,
) -> list[str]:
    from rich.console import Console

    out = io.StringIO()
    console = Console(file=out, width=width, force_terminal=True, color_system=None, legacy_windows=False)
    bar = _RichProgressBar("storing", total, unit, console=console)
    if item is not None:
        bar.item(item)
    bar.advance(done)
    console.print(bar._progress.get_renderable())
    return out.getvalue().rstrip("\n").split("\n")


@pytest.mark.parametrize("width", [60, 80, 120, 200])
def test_puts_bar_is_one_line_naming_the_file(width):
    (line,) = drawn(width)
    assert len(line.rstrip()) < width, line
    assert f"{human_bytes(1_288_490_188)}/{human_bytes(1_932_735_283)}" in line  # the size is whole
    label = line.split(" ")[0]
    assert label.endswith("…") and NAME.startswith(label[:-1]) and len(label) >= 15, line
    assert ("MiB/s" in line or " ? " in line) == (width >= 80), line  # the speed only where it fits


@pytest.mark.parametrize("width", [60, 80])
def test_the_widest_figures_still_fit(width):
    """The widest amount (1023.9 MiB of 1023.9 MiB) does not wrap either."""
    (line,) = drawn(width, total=1023 * 1024**2 + 950_000, done=1023 * 1024**2 + 940_000)
    assert "1023.9 MiB/1023.9 MiB" in line and len(line.rstrip()) < width, line


@pytest.mark.parametrize("width", [60, 80])
def test_a_short_name_a_hostile_name_and_standard_input(width):
    (line,) = drawn(width, item="a.png")
    assert line.startswith("a.png ") and len(line.rstrip()) < width, line
    (line,) = drawn(width, item="x\x1b[31m[bold]y")  # an escape is shown, never obeyed; no markup
    assert "\x1b" not in line and line.startswith("x\\x1b[31m[bold]y"), line
    (line,) = drawn(width, item="standard input", total=None)
    assert line.startswith("standard input") and human_bytes(1_288_490_188) in line, line


@pytest.mark.parametrize("width", [60, 80])
def test_a_bar_of_blobs_fits_too(width):
    (line,) = drawn(width, unit="blobs", total=123_456, done=7_890, item=None)
    assert line.startswith("storing ") and "7890/123456" in line and len(line.rstrip()) < width, line
