"""Incident events, schema 1: the format other services emit (the README's "Emitting events" shows it).

:func:`parse_event` turns a decoded JSON document into an :class:`Event` or raises
:class:`~scheduler.errors.EventError` naming every field that is wrong and why.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictStr,
    ValidationError,
    model_validator,
)

from scheduler.core._validation import field_errors
from scheduler.core.config_fields import Severity, check_identifier, check_one_line
from scheduler.core.model import iso_z
from scheduler.core.text import bidi_control_in, surrogate_at
from scheduler.errors import EventError

__all__ = [
    "EVENT_TYPES",
    "MATERIAL_FIELDS",
    "MAX_CLOCK_AHEAD",
    "MAX_DEPTH",
    "MAX_EVENT_BYTES",
    "REJECTED_EXCERPT_CHARS",
    "Event",
    "EventType",
    "IncidentFields",
    "check_not_ahead",
    "decode_json",
    "nested_deeper_than",
    "parse_event",
    "parse_event_json",
    "rejected_excerpt",
]

EVENT_TYPES = (
    "incident.opened",
    "incident.updated",
    "incident.resolved",
    "incident.reopened",
    "incident.review_published",
)
EventType = Literal[
    "incident.opened",
    "incident.updated",
    "incident.resolved",
    "incident.reopened",
    "incident.review_published",
]
MATERIAL_FIELDS = ("status", "severity", "summary", "impact", "plan")
"""A change of one of these sends an update at once; other changes wait for the next one."""

MAX_EVENT_BYTES = 64 * 1024
REJECTED_EXCERPT_CHARS = 2000
"""How much of an input that is not an event (not UTF-8, not JSON, too deep) is kept for
``amends log --rejected``."""
MAX_LINE_CHARS = 200
MAX_TEXT_CHARS = 4000
MAX_DEPTH = 16
"""How deeply arrays and objects may nest in an event (schema 1 needs three levels)."""


def rejected_excerpt(raw: bytes) -> str:
    """The start of an input that could not be read as an event, as text to keep."""
    return raw[:REJECTED_EXCERPT_CHARS].decode("utf-8", errors="replace")


def _text(value: Any) -> Any:
    if isinstance(value, str) and any((ord(c) < 32 and c not in "\n\t") or ord(c) == 127 for c in value):
        raise ValueError("contains control characters other than line breaks and tabs")
    return value


def _timestamp(value: Any) -> datetime:
    if not isinstance(value, str):
        raise ValueError("must be an ISO 8601 string with a time zone, e.g. 2026-11-26T14:03:00Z")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an ISO 8601 timestamp, e.g. 2026-11-26T14:03:00Z") from None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise ValueError(f"{value!r} has no time zone; add Z or an offset such as +01:00")
    return parsed.astimezone(UTC)


def _no_bidi(value: Any) -> Any:
    # One-line fields reach mail subjects, where U+202E makes "gnp.exe" read "exe.png".
    if isinstance(value, str) and (control := bidi_control_in(value)):
        raise ValueError(
            f"contains the bidirectional control character {control}, which can make text read "
            "differently than it is"
        )
    return value


def _date(value: Any) -> Any:
    if not isinstance(value, str):
        return value  # StrictStr names the type
    try:
        return date.fromisoformat(value).isoformat() if len(value) == 10 else _not_a_date(value)
    except ValueError:
        return _not_a_date(value)


def _not_a_date(value: str) -> str:
    raise ValueError(f"{value!r} is not a date written like 2026-12-01")


Line = Annotated[
    StrictStr,
    BeforeValidator(check_one_line),
    BeforeValidator(_no_bidi),
    Field(min_length=1, max_length=MAX_LINE_CHARS),
]
Text = Annotated[StrictStr, BeforeValidator(_text), Field(max_length=MAX_TEXT_CHARS)]
Timestamp = Annotated[datetime, BeforeValidator(_timestamp)]
Date = Annotated[StrictStr, BeforeValidator(_date)]


def _review_url(value: Any) -> Any:
    if isinstance(value, str) and not re.match(r"^https?://[^\s/?#]+\S*$", value):
        raise ValueError(
            f"{value[:60]!r} is not a web address like https://status.acme.example/reviews/INC-1"
        )
    return value


ReviewURL = Annotated[
    StrictStr, BeforeValidator(_review_url), BeforeValidator(check_one_line), Field(max_length=2000)
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class IncidentFields(_Model):
    """The incident's fields an event carries; ``updated`` carries only those that changed."""

    title: Line | None = None
    severity: Severity | None = None
    services: Annotated[list[Annotated[Line, Field(max_length=100)]], Field(max_length=50)] | None = None
    status: Annotated[Line, Field(max_length=40)] | None = None
    summary: Text | None = None
    impact: Text | None = None
    plan: Text | None = None
    owner: Line | None = None
    workaround: Text | None = None
    """What the reader can do meanwhile."""
    prevention: Text | None = None
    """What will stop it happening again; shown in the resolution."""
    review_by: Date | None = None
    """The date (YYYY-MM-DD) by which a post-incident review is promised."""
    review_url: ReviewURL | None = None
    """Where the published review is (``incident.review_published`` only; ``summary`` then
    says what it found, not where the incident stands)."""

    def given(self) -> dict[str, Any]:
        """The fields this event sets, by name."""
        return self.model_dump(exclude_none=True)


class Event(_Model):
    """One incident event. ``event_id`` is its idempotency key."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, populate_by_name=True)

    schema_version: Literal[1] = Field(alias="schema")
    event_id: Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")]
    type: EventType
    incident_id: Annotated[StrictStr, BeforeValidator(check_identifier)]
    occurred_at: Timestamp
    source: Annotated[Line, Field(max_length=100)]
    incident: IncidentFields = Field(default_factory=IncidentFields)

    @model_validator(mode="after")
    def _fields_the_type_needs(self) -> Event:
        problems = _type_problems(self.type, self.incident.given())
        if problems:
            raise ValueError("; ".join(f"{place}: {reason}" for place, reason in problems))
        return self

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, exclude_none=True)


def _type_problems(event_type: Any, incident: Any) -> list[tuple[str, str]]:
    """What the event's type requires of its incident fields and they lack."""
    given = incident if isinstance(incident, dict) else {}
    if event_type == "incident.opened":
        return [
            (f"incident.{f}", "is required when type is incident.opened")
            for f in ("title", "severity")
            if given.get(f) is None
        ]
    if event_type == "incident.updated" and not any(v is not None for v in given.values()):
        return [("incident", "an incident.updated event carries at least one changed field")]
    if event_type == "incident.review_published" and given.get("review_url") is None:
        return [("incident.review_url", "is required when type is incident.review_published")]
    if event_type != "incident.review_published" and given.get("review_url") is not None:
        return [("incident.review_url", "only an incident.review_published event carries it")]
    return []


def _place(parent: str, part: str | int) -> str:
    if isinstance(part, int):
        return f"{parent}[{part}]"
    return f"{parent}.{part}" if parent else part


def _text_problems(data: Any) -> list[tuple[str, str]]:
    """Strings (keys included) that are not valid Unicode, and nesting deeper than MAX_DEPTH.

    Runs before anything else looks at the document: a lone surrogate cannot be encoded
    as UTF-8 (nor stored, nor mailed), and a deep document cannot even be serialised.
    """
    problems: list[tuple[str, str]] = []
    pending: list[tuple[str, Any, int]] = [("", data, 0)]
    while pending and len(problems) < 20:
        place, value, depth = pending.pop()
        if isinstance(value, str):
            at = surrogate_at(value)
            if at is not None:
                problems.append(
                    (
                        place,
                        f"is not valid Unicode text: a lone surrogate U+{ord(value[at]):04X} "
                        f"at character {at}",
                    )
                )
        elif isinstance(value, dict | list):
            if depth >= MAX_DEPTH:
                problems.append((place, f"is nested more than {MAX_DEPTH} levels deep"))
                continue
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in reversed(list(items)):
                if isinstance(key, str) and surrogate_at(key) is not None:
                    problems.append((place, "has a field name that is not valid Unicode text"))
                    continue
                pending.append((_place(place, key), item, depth + 1))
    return problems


def nested_deeper_than(data: Any, depth: int) -> bool:
    """Whether arrays and objects in ``data`` nest more than ``depth`` levels (no recursion)."""
    pending: list[tuple[Any, int]] = [(data, 0)]
    while pending:
        value, level = pending.pop()
        if isinstance(value, dict | list):
            if level >= depth:
                return True
            pending.extend(
                (item, level + 1) for item in (value.values() if isinstance(value, dict) else value)
            )
    return False


def parse_event(data: Any) -> Event:
    """Validate a decoded event document; raise EventError naming each wrong field."""
    if not isinstance(data, dict):
        raise EventError("invalid event", [("", f"an event is a JSON object, not {type(data).__name__}")])
    problems = _text_problems(data)
    if problems:
        raise EventError("invalid event", problems)
    try:
        return Event.model_validate(data)
    except ValidationError as e:
        errors = []
        for place, reason in field_errors(e):
            if not place and reason.startswith("incident"):
                continue  # the type's requirements, added below with their places
            if place == "schema" and "schema" in data:
                reason = f"unsupported schema {data['schema']!r}; this version reads schema 1"
            errors.append((place, reason))
        # the whole-event check does not run when a field failed: every problem is named at once
        errors += [p for p in _type_problems(data.get("type"), data.get("incident")) if p not in errors]
        raise EventError("invalid event", errors) from None


MAX_CLOCK_AHEAD = timedelta(days=1)
"""How far ahead of the receiver's clock an event may say it occurred (clock skew)."""


def check_not_ahead(event: Event, now: datetime) -> Event:
    """Refuse an event dated further ahead of ``now`` than clock skew explains."""
    if event.occurred_at > now + MAX_CLOCK_AHEAD:
        when = iso_z(event.occurred_at)
        raise EventError("invalid event", [("occurred_at", f"{when} is more than a day ahead of this clock")])
    return event


def parse_event_json(raw: str | bytes) -> Event:
    """Decode and validate one event given as JSON text."""
    size = len(raw.encode() if isinstance(raw, str) else raw)
    if size > MAX_EVENT_BYTES:
        raise EventError(
            "invalid event", [("", f"the event is {size} bytes; the limit is {MAX_EVENT_BYTES}")]
        )
    return parse_event(decode_json(raw))


def decode_json(raw: str | bytes) -> Any:
    """The JSON document in ``raw``; EventError with a one-line reason when it is not one.

    Deep nesting, huge numbers and bytes that are not UTF-8 are refused like any other
    malformed JSON, never raised as a different exception.
    """
    try:
        return json.loads(raw)
    except RecursionError:
        raise EventError("invalid event", [("", "not valid JSON: nested too deeply")]) from None
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError, and int() refusing 5,000 digits
        raise EventError("invalid event", [("", f"not valid JSON: {e}")]) from None
