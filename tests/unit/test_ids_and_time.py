"""Ids, durations and timestamps as operators type them (the README)."""

from __future__ import annotations

import pytest

from lashctl import timefmt
from lashctl.errors import UsageError
from lashctl.ids import IdQuery, canonical_uri, is_valid_id, parse_id

FULL = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"


# -- ids -----------------------------------------------------------------------
def test_parse_full_id():
    query = parse_id(FULL)
    assert query == IdQuery(text=FULL, hex=FULL)
    assert query.is_full


def test_parse_uri_form():
    query = parse_id("sha256:" + FULL)
    assert query.hex == FULL
    assert query.is_full


def test_parse_upper_case_folded():
    assert parse_id(FULL.upper()).hex == FULL
    assert parse_id("SHA256:" + FULL.upper()).hex == FULL
    assert parse_id("9F86").hex == "9f86"


@pytest.mark.parametrize("prefix", ["9f86", "9f86d", FULL[:63]])
def test_parse_prefix(prefix):
    query = parse_id(prefix)
    assert query.hex == prefix
    assert not query.is_full


def test_parse_uri_prefix():
    assert parse_id("sha256:9f86d0").hex == "9f86d0"


@pytest.mark.parametrize(
    "text",
    [
        "../../etc/passwd",
        "zz",
        "abc",
        FULL + "0",
        "",
        "   ",
        "sha256:",
        "sha256:abc",
        "9f86 d081",
        "9f86/..",
        "0x9f86",
        "md5:" + FULL,
        FULL[:10] + "\n" + FULL[10:],
    ],
)
def test_parse_id_rejects(text):
    with pytest.raises(UsageError) as info:
        parse_id(text)
    assert info.value.exit_code == 2
    assert repr(text if len(text) <= 80 else text[:77] + "...") in info.value.message


def test_is_valid_id():
    assert is_valid_id(FULL)
    assert not is_valid_id(FULL.upper())
    assert not is_valid_id(FULL[:63])
    assert not is_valid_id(FULL + "\n")
    assert not is_valid_id(None)
    assert not is_valid_id(123)


def test_canonical_uri():
    assert canonical_uri(FULL) == "sha256:" + FULL


# -- durations -----------------------------------------------------------------
@pytest.mark.parametrize(
    "text, ms",
    [
        ("90s", 90_000),
        ("15m", 900_000),
        ("24h", 86_400_000),
        ("7d", 604_800_000),
        ("1h30m", 5_400_000),
        ("1w", 604_800_000),
        ("250ms", 250),
        ("1m30s", 90_000),
        (" 2h ", 7_200_000),
        ("0s", 0),
    ],
)
def test_parse_duration(text, ms):
    assert timefmt.parse_duration(text) == ms


@pytest.mark.parametrize(
    "text",
    ["10", "abc", "-5m", "", "5 m", "1h 30m", "m", "1.5h", "5y", "h1", "1M", "2H", "7D", "90S", "1W", "1Ms", "1mo"],
)
def test_parse_duration_rejects(text):
    with pytest.raises(UsageError) as info:
        timefmt.parse_duration(text)
    assert info.value.exit_code == 2
    assert "--older-than" in info.value.message


# -- timestamps ----------------------------------------------------------------
@pytest.mark.parametrize(
    "text, ms",
    [
        ("2026-11-26T12:00:00Z", 1_795_694_400_000),
        ("2026-11-26T12:00:00z", 1_795_694_400_000),
        ("2026-11-26T12:00:00+00:00", 1_795_694_400_000),
        ("2026-11-26T14:00:00+02:00", 1_795_694_400_000),
        ("2026-11-26T07:00:00-05:00", 1_795_694_400_000),
        ("2026-11-26T12:00:00", 1_795_694_400_000),  # naive means UTC
        ("2026-11-26T12:00:00.250Z", 1_795_694_400_250),
        ("2026-11-26", 1_795_651_200_000),
        ("1764150000000", 1_764_150_000_000),
        ("1764150000000ms", 1_764_150_000_000),
        ("0ms", 0),
        ("@1795647212", 1_795_647_212_000),
        ("@1795647212.5", 1_795_647_212_500),
        ("@0", 0),
    ],
)
def test_parse_timestamp(text, ms):
    assert timefmt.parse_timestamp(text) == ms


@pytest.mark.parametrize(
    "text",
    [
        "yesterday",
        "",
        "2026-13-01",
        "-5",
        "12:00",
        "1e12",
        "0",
        "1795647212",
        "@",
        "@-5",
        "@1e9",
        "ms",
        "@1795647212ms",
    ],
)
def test_parse_timestamp_rejects(text):
    with pytest.raises(UsageError) as info:
        timefmt.parse_timestamp(text)
    assert info.value.exit_code == 2
    assert "--before" in info.value.message


def test_parse_timestamp_non_ascii_digits_is_usage_error():
    # str.isdigit() is true for superscripts, which int() cannot parse: still a usage error.
    with pytest.raises(UsageError):
        timefmt.parse_timestamp("\u00b2\u00b3")


def test_cutoff_ms():
    now = 1_764_150_000_000
    assert timefmt.cutoff_ms("15m", None, now) == now - 900_000
    assert timefmt.cutoff_ms(None, "1764150000000", now) == 1_764_150_000_000
    assert timefmt.cutoff_ms(None, None, now) is None
    assert timefmt.cutoff_ms(None, None, now, default="24h") == now - 86_400_000
    with pytest.raises(UsageError):
        timefmt.cutoff_ms("15m", "0", now)


def test_iso_ms():
    assert timefmt.iso_ms(1_795_694_400_250) == "2026-11-26T12:00:00.250Z"
    assert timefmt.iso_ms(None) is None


def test_iso_clock_is_iso_ms_for_any_run_of_times():
    """A listing's clock (the date kept between calls) writes what iso_ms writes,
    in order, out of order, on day boundaries and at both ends of the range."""
    import random

    rng = random.Random(7)
    edges = [
        0,
        1,
        999,
        1000,
        86_399_999,
        86_400_000,
        951_782_400_000,
        1_795_694_400_250,
        timefmt.MAX_EPOCH_MS - 1,
        timefmt.MAX_EPOCH_MS,
    ]
    runs = [
        edges,
        edges[::-1],
        sorted(rng.randrange(timefmt.MAX_EPOCH_MS + 1) for _ in range(3000)),
        [rng.randrange(timefmt.MAX_EPOCH_MS + 1) for _ in range(3000)],
        sorted(1_795_694_400_000 + rng.randrange(3 * 86_400_000) for _ in range(3000)),
        sorted(86_395_000 + rng.randrange(10_000) for _ in range(3000)),  # many rows a second, over midnight
        [1_795_694_400_000 + rng.randrange(3000) for _ in range(3000)],
    ]
    for times in runs:
        clock = timefmt.iso_clock()
        assert [clock(t) for t in times] == [timefmt.iso_ms(t) for t in times]


@pytest.mark.parametrize(
    "ms, text",
    [
        (0, "0s"),
        (42_000, "42s"),
        (900_000, "15m"),
        (930_000, "15m30s"),
        (5_400_000, "1h30m"),
        (7_200_000, "2h"),
        (86_400_000, "1d"),
        (273_600_000, "3d4h"),
        (-42_000, "-42s"),
    ],
)
def test_age_text(ms, text):
    assert timefmt.age_text(ms) == text


def test_a_capital_m_duration_says_minutes_are_lower_case_and_months_are_days():
    with pytest.raises(UsageError) as info:
        timefmt.parse_duration("1M")
    assert "m for minutes" in info.value.message and "30d" in info.value.message


def test_epoch_seconds_without_at_are_refused_with_a_hint():
    with pytest.raises(UsageError) as info:
        timefmt.parse_timestamp("1795647212")
    assert "@1795647212" in info.value.message


# -- text shown to people ---------------------------------------------------------
# Labels and session ids come from other writers. Every character that could
# move the cursor, recolour the terminal, reorder what is shown or start a new
# line must reach a person as a visible escape.
CONTROL_CHARS = [
    "\x00",
    "\x07",
    "\x08",
    "\t",
    "\n",
    "\x0b",
    "\x0c",
    "\r",
    "\x1b",
    "\x1f",
    "\x7f",
    "\x80",
    "\x85",
    "\x9b",
    "\x9d",
    "\x9f",
    "\u061c",
    "\u200e",
    "\u200f",
    "\u202a",
    "\u202b",
    "\u202c",
    "\u202d",
    "\u202e",
    "\u2066",
    "\u2067",
    "\u2068",
    "\u2069",
    "\u2028",
    "\u2029",
    # invisible format characters: two names that look the same must not look the same
    "\u00ad",
    "\u180e",
    "\u200b",
    "\u200c",
    "\u200d",
    "\u2060",
    "\u2061",
    "\u2062",
    "\u2063",
    "\u2064",
    "\ufeff",
    "\ufff9",
    "\ufffa",
    "\ufffb",
]


@pytest.mark.parametrize("char", CONTROL_CHARS, ids=lambda c: f"U+{ord(c):04X}")
def test_every_control_character_is_escaped_visibly(char):
    from lashctl.text import escape_text, has_control

    shown = escape_text(f"a{char}b")
    assert char not in shown
    assert shown.isascii() and shown.isprintable(), repr(shown)
    assert shown.startswith("a\\") and shown.endswith("b")
    assert has_control(char)


@pytest.mark.parametrize(
    "raw, shown",
    [
        ("\x1b[31mred", "\\x1b[31mred"),
        ("left\u202eright", "left\\u202eright"),
        ("one\ntwo\tthree\rfour", "one\\ntwo\\tthree\\rfour"),
        ("csi\x9b2J", "csi\\x9b2J"),
        ("para\u2029graph", "para\\u2029graph"),
        ("o\u200bk", "o\\u200bk"),
        ("back\\slash", "back\\\\slash"),
        ("forged \\x1b", "forged \\\\x1b"),
    ],
)
def test_escape_forms(raw, shown):
    from lashctl.text import escape_text

    assert escape_text(raw) == shown


def test_an_escape_cannot_be_forged_with_a_backslash():
    from lashctl.text import escape_text

    assert escape_text("\\x1b") != escape_text("\x1b")
    assert escape_text("\\n") != escape_text("\n")


@pytest.mark.parametrize("plain", ["", "photo.png", "s-42", "héllo wörld", "日本語 ☃ emoji 🙂", "a b", "[bold]x[/]"])
def test_ordinary_text_is_unchanged(plain):
    from lashctl.text import escape_text, has_control

    assert escape_text(plain) == plain
    assert not has_control(plain)
