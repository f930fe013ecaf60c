"""Durations as people write them (``30s``, ``15m``, ``1h30m``, ``2d``) and daily time windows."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import time

__all__ = ["TimeWindow", "format_duration", "parse_duration", "parse_window"]

_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
_UNIT_S = (86_400, 3_600, 60, 1)


def parse_duration(text: str) -> int:
    """Return the number of seconds in ``text``; raise ValueError naming the accepted form."""
    match = _DURATION.match(text.strip()) if isinstance(text, str) else None
    if not match or not any(match.groups()):
        raise ValueError(f"{text!r} is not a duration; write e.g. 30s, 15m, 1h30m or 2d")
    seconds = sum(int(n) * unit for n, unit in zip(match.groups(), _UNIT_S, strict=True) if n)
    if seconds <= 0:
        raise ValueError(f"{text!r} is not a positive duration")
    return seconds


def format_duration(seconds: int) -> str:
    """The shortest written form of ``seconds``: 5400 -> ``1h30m``."""
    parts = []
    for suffix, unit in zip("dhms", _UNIT_S, strict=True):
        count, seconds = divmod(seconds, unit)
        if count:
            parts.append(f"{count}{suffix}")
    return "".join(parts) or "0s"


@dataclass(frozen=True)
class TimeWindow:
    """A daily window of wall-clock time, e.g. 22:00-07:00; it may wrap past midnight."""

    start: time
    end: time

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"

    def contains(self, t: time) -> bool:
        """Whether the wall-clock time ``t`` lies inside the window (start inclusive)."""
        if self.start <= self.end:
            return self.start <= t < self.end
        return t >= self.start or t < self.end


def _parse_clock(text: str) -> time:
    hours, _, minutes = text.partition(":")
    if not (hours.isdigit() and minutes.isdigit() and len(minutes) == 2):
        raise ValueError(f"{text!r} is not a time of day; write HH:MM")
    h, m = int(hours), int(minutes)
    if h > 23 or m > 59:
        raise ValueError(f"{text!r} is not a time of day; write HH:MM between 00:00 and 23:59")
    return time(h, m)


def parse_window(text: str) -> TimeWindow:
    """Parse ``HH:MM-HH:MM``; raise ValueError naming the accepted form."""
    if not isinstance(text, str) or text.count("-") != 1:
        raise ValueError(f"{text!r} is not a time window; write HH:MM-HH:MM, e.g. 22:00-07:00")
    try:
        start, end = (_parse_clock(part.strip()) for part in text.split("-"))
    except ValueError as e:
        raise ValueError(
            f"{text!r} is not a time window; write HH:MM-HH:MM, e.g. 22:00-07:00 ({e})"
        ) from None
    if start == end:
        raise ValueError(f"{text!r} is an empty time window")
    return TimeWindow(start, end)
