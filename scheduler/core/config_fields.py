"""The value types of the configuration file and the events: durations, windows, time
zones, addresses, ids and one-line text, each with the message that names what is wrong."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import pendulum
from pydantic import BeforeValidator, Field

from scheduler.core.durations import TimeWindow, parse_duration, parse_window

__all__ = [
    "IDENTIFIER",
    "MAX_BASE_URL_CHARS",
    "SEVERITIES",
    "Email",
    "Identifier",
    "OneLine",
    "Seconds",
    "Severity",
    "TimeZoneName",
    "Window",
    "check_base_url",
    "check_email",
    "check_identifier",
    "check_one_line",
]

SEVERITIES = ("sev1", "sev2", "sev3", "sev4")
Severity = Literal["sev1", "sev2", "sev3", "sev4"]
IDENTIFIER = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


def _duration(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f"{value!r} is not a duration; write e.g. 30s, 15m, 1h30m or 2d")
    return value if isinstance(value, int) and value > 0 else parse_duration(str(value))


def _window(value: Any) -> TimeWindow:
    return value if isinstance(value, TimeWindow) else parse_window(value)


def _timezone(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a time zone name such as Europe/Berlin")
    try:
        pendulum.timezone(value)
    except Exception:  # pendulum raises its own not-found error types
        raise ValueError(f"unknown time zone {value!r}") from None
    return value


def check_email(value: Any) -> str:
    if not isinstance(value, str) or value.count("@") != 1 or any(c.isspace() or c in "<>,;" for c in value):
        raise ValueError(f"{value!r} is not an email address")
    local, domain = value.split("@")
    if not local or "." not in domain.strip("."):
        raise ValueError(f"{value!r} is not an email address")
    return value


Seconds = Annotated[int, BeforeValidator(_duration)]
Window = Annotated[TimeWindow, BeforeValidator(_window)]
TimeZoneName = Annotated[str, BeforeValidator(_timezone)]
Email = Annotated[str, BeforeValidator(check_email)]


def check_identifier(value: Any) -> Any:
    """Ids (stakeholders, incidents) become parts of keys, mail headers and links."""
    if isinstance(value, str) and not re.match(IDENTIFIER, value):
        raise ValueError(
            f"{value!r} is not an id: use letters, digits, '.', '_' or '-' (at most 64), "
            "starting with a letter or digit"
        )
    return value


MAX_BASE_URL_CHARS = 500
"""Keeps the List-Unsubscribe line, with the longest ids, inside RFC 5322's 998 characters."""


def check_base_url(value: Any) -> Any:
    if isinstance(value, str) and not re.match(r"^https?://[^\s/]+[^\s]*$", value):
        raise ValueError(f"{value!r} is not a web address like https://status.acme.example")
    if isinstance(value, str) and not (value.isascii() and value.isprintable() and '"' not in value):
        raise ValueError(
            f"{value!r} must be written in ASCII: percent-encode the path and use the xn-- form of the host"
        )
    if isinstance(value, str) and len(value) > MAX_BASE_URL_CHARS:
        raise ValueError(f"is {len(value)} characters long; the limit is {MAX_BASE_URL_CHARS}")
    return value


Identifier = Annotated[str, BeforeValidator(check_identifier)]


def check_one_line(value: Any) -> Any:
    """Single-line text reaches mail headers: a control character there is refused outright."""
    if isinstance(value, str) and any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError("must be one line without control characters (CR, LF, tab, ...)")
    return value


OneLine = Annotated[str, BeforeValidator(check_one_line), Field(min_length=1, max_length=200)]
