"""Durations, timestamps and cutoffs as operators type and read them."""

from __future__ import annotations

import re
import time

from lashctl.errors import UsageError

# Cutoffs outside these bounds are typing mistakes, not dates (year 9999).
MAX_EPOCH_MS = 253_402_300_799_999
_MAX_DIGITS = 20

_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_PART = re.compile(r"(\d+)(ms|s|m|h|d|w)")


# An intent stamped more than this past now was written by a clock that runs
# ahead: show, verify and list-uncommitted say so (a sweep keeps it until then).
FUTURE_SKEW_MS = 5 * 60_000
FUTURE_SKEW = "5m"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def in_future(at_ms: int, now: int) -> bool:
    """Whether a time is further ahead of ``now`` than clocks drift apart."""
    return at_ms > now + FUTURE_SKEW_MS


def parse_duration(text: str, option: str = "--older-than") -> int:
    """``90s``, ``15m``, ``24h``, ``7d``, ``1h30m`` (also ``ms``, ``w``) -> milliseconds.

    Units are case-sensitive: ``M`` (a month to rclone users) is refused with a
    hint rather than read as minutes.
    """
    value = text.strip()
    if value.isascii() and value != value.lower():
        hint = (
            "units are lower-case: m for minutes; there is no unit for months, use days (30d)"
            if "M" in value
            else f"units are lower-case, like {value.lower()}"
        )
        raise UsageError(f"{option} '{text}' is not a duration: {hint}")
    pos, total = 0, 0
    for match in _PART.finditer(value):
        if match.start() != pos or len(match.group(1)) > _MAX_DIGITS:
            break
        total += int(match.group(1)) * _UNITS_MS[match.group(2)]
        pos = match.end()
    if not value or pos != len(value) or not value.isascii():
        raise UsageError(
            f"{option} '{text}' is not a duration: use a number and a unit, like 90s, 15m, 24h, 7d or 1h30m"
        )
    return total


_EPOCH_SECONDS = re.compile(r"@(\d{1,12})(?:\.(\d{1,3}))?")
_EPOCH_MS = re.compile(r"(\d{1,20})(ms)?")
# A bare number is read as epoch milliseconds only from here on (2001-09-09):
# below it, it is far more likely epoch seconds from ``date +%s``.
_BARE_MS_FROM = 1_000_000_000_000


def parse_timestamp(text: str, option: str = "--before") -> int:
    """ISO-8601 (naive means UTC), ``@SECONDS`` (as GNU date), ``<N>ms``, or a bare
    13-digit epoch millisecond count -> epoch milliseconds.

    A bare number that can only be seconds is refused with a hint, never read
    as milliseconds in 1970.
    """
    from datetime import datetime, timezone

    value = text.strip()
    if value.isascii():
        seconds = _EPOCH_SECONDS.fullmatch(value)
        if seconds is not None:
            fraction = (seconds.group(2) or "").ljust(3, "0")
            return _in_range(int(seconds.group(1)) * 1000 + int(fraction), text, option)
        millis = _EPOCH_MS.fullmatch(value)
        if millis is not None:
            number = int(millis.group(1))
            if millis.group(2) is None and number < _BARE_MS_FROM:
                raise UsageError(
                    f"{option} '{text}' is ambiguous: write @{value} for epoch seconds "
                    f"(as from date +%s) or {value}ms for epoch milliseconds"
                )
            return _in_range(number, text, option)
    try:
        parsed = datetime.fromisoformat(value.replace("z", "Z").replace("Z", "+00:00"))
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=timezone.utc)
        epoch_ms = int(parsed.timestamp() * 1000)
    except (ValueError, OverflowError, OSError):
        raise UsageError(
            f"{option} '{text}' is not a timestamp: use ISO-8601 "
            "(2026-11-26T12:00:00Z), @SECONDS since the epoch, or MILLISECONDSms"
        ) from None
    return _in_range(epoch_ms, text, option)


def _in_range(epoch_ms: int, text: str, option: str) -> int:
    if not 0 <= epoch_ms <= MAX_EPOCH_MS:
        raise UsageError(f"{option} '{text}' is out of range (1970 to the year 9999)")
    return epoch_ms


def cutoff_ms(older_than: str | None, before: str | None, now: int, default: str | None = None) -> int | None:
    """The cutoff from ``--older-than`` or ``--before`` (not both); None if neither."""
    if older_than is not None and before is not None:
        raise UsageError("give --older-than or --before, not both")
    if before is not None:
        return parse_timestamp(before)
    duration = older_than if older_than is not None else default
    if duration is None:
        return None
    cutoff = now - parse_duration(duration)
    if cutoff < 0:
        raise UsageError(f"--older-than '{duration}' reaches back before 1970")
    return cutoff


def iso_ms(epoch_ms: int | None) -> str | None:
    """``2026-11-26T12:00:00.123Z`` (UTC, millisecond precision)."""
    if epoch_ms is None:
        return None
    seconds, millis = divmod(epoch_ms, 1000)
    # time.strftime is several times cheaper than datetime per call, which
    # counts on listings of a hundred thousand rows.
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def iso_clock():
    """``iso_ms`` for a run of times in 1970-9999, mostly in order (a
    listing's): the date is formatted once per day met in a row, the clock
    from tables once per second met in a row, several times cheaper than
    ``iso_ms`` per call."""
    hours = [f"T{h:02d}:" for h in range(24)]
    minutes = [f"{m:02d}:" for m in range(60)]
    seconds = [f"{s:02d}" for s in range(60)]
    millis = [f".{ms:03d}Z" for ms in range(1000)]
    last_day, date = -1, ""
    last_second, head = -1, ""

    def iso(epoch_ms: int) -> str:
        nonlocal last_day, date, last_second, head
        second, milli = divmod(epoch_ms, 1000)
        if second != last_second:
            day, rest = divmod(second, 86_400)
            if day != last_day:
                last_day, date = day, time.strftime("%Y-%m-%d", time.gmtime(day * 86_400))
            rest, sec = divmod(rest, 60)
            hour, minute = divmod(rest, 60)
            last_second, head = second, date + hours[hour] + minutes[minute] + seconds[sec]
        return head + millis[milli]

    return iso


def age_text(ms: int) -> str:
    """A compact age such as ``3d4h``, ``15m``, ``42s``; negative ages are clock skew."""
    if ms < 0:
        return "-" + age_text(-ms)
    seconds = ms // 1000
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h{minutes}m" if minutes else f"{hours}h"
    if minutes:
        return f"{minutes}m{secs}s" if secs else f"{minutes}m"
    return f"{secs}s"
