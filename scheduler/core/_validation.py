"""Turning pydantic's errors into (place, reason) pairs a person can act on, and bounded durations."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

_PREFIXES = ("Value error, ", "Assertion failed, ")


def place_of(loc: Sequence[int | str]) -> str:
    """``("stakeholders", 2, "timezone")`` -> ``stakeholders[2].timezone``."""
    place = ""
    for part in loc:
        if isinstance(part, int):
            place += f"[{part}]"
        elif part.startswith(("function-", "literal[")) or part in {"str", "int", "[key]"}:
            continue  # pydantic's names of union branches mean nothing to a reader
        else:
            place += f".{part}" if place else part
    return place


def reason_of(error: Any) -> str:
    message = str(error["msg"])
    for prefix in _PREFIXES:
        if message.startswith(prefix):
            message = message[len(prefix) :]
    if error["type"] == "missing":
        return "is required"
    if error["type"] == "extra_forbidden":
        return "is not a known field"
    if error["type"] in {"string_too_long", "too_long"}:
        limit = error.get("ctx", {}).get("max_length")
        unit = "characters" if isinstance(error.get("input"), str) else "items"
        return f"is too long: at most {limit} {unit}"
    if "[key]" in error["loc"]:
        return f"is not a known key: {message}"
    return message


def field_errors(exc: ValidationError) -> list[tuple[str, str]]:
    """One (place, reason) pair per problem, in the order pydantic found them."""
    return [(place_of(e["loc"]), reason_of(e)) for e in exc.errors()]


MAX_DURATION_S = 36_500 * 86_400
"""A hundred years: the longest duration a filter or a preview accepts."""


def bounded_duration_s(text: str, at_most_s: int = MAX_DURATION_S) -> int:
    """Seconds in ``text`` (``30m``, ``2d``); ValueError saying why, also when over ``at_most_s``."""
    from scheduler.core.durations import format_duration, parse_duration

    seconds = parse_duration(text)
    if seconds > at_most_s:
        raise ValueError(f"{text.strip()!r} is too long; at most {format_duration(at_most_s)}")
    return seconds
