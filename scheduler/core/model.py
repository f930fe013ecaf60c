"""The product's nouns as types: kinds, statuses, incidents, threads, timers, communications.

Each type has one serialisation, used by every store: ``to_json``/``from_json`` for what is
kept as JSON (incidents, event records), ``to_hash``/``from_hash`` for Redis hashes
(threads, communications), and ``str``/``parse`` for timer members.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar, overload

__all__ = [
    "CONTENT_FIELDS",
    "Action",
    "Communication",
    "Draft",
    "EventRecord",
    "Incident",
    "IncidentState",
    "Kind",
    "Status",
    "Thread",
    "TimerKind",
    "TimerMember",
    "iso_z",
    "ms_of",
    "text_of",
    "utc_of",
]


class Kind(StrEnum):
    """What a communication is."""

    ACKNOWLEDGMENT = "acknowledgment"
    UPDATE = "update"
    RESOLUTION = "resolution"
    FEEDBACK_REQUEST = "feedback_request"
    FEEDBACK_ALERT = "feedback_alert"
    FEEDBACK_DIGEST = "feedback_digest"
    REVIEW_REMINDER = "review_reminder"
    FOLLOW_UP = "follow_up"
    REVIEW = "review"
    REVIEW_DELAYED = "review_delayed"


class Status(StrEnum):
    """Where a communication is: ``scheduled -> sending -> sent|failed|retrying|suppressed``, or ``cancelled``."""

    SCHEDULED = "scheduled"
    SENDING = "sending"
    RETRYING = "retrying"
    SENT = "sent"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SUPPRESSED = "suppressed"
    """not sent: the address is undeliverable (:mod:`scheduler.core.bounces`)"""

    @property
    def final(self) -> bool:
        return self in (Status.SENT, Status.FAILED, Status.CANCELLED, Status.SUPPRESSED)


class IncidentState(StrEnum):
    OPEN = "open"
    RESOLVED = "resolved"


class Action(StrEnum):
    """What applying an event did to its incident."""

    OPEN = "open"
    UPDATE = "update"
    RESOLVE = "resolve"
    REOPEN = "reopen"
    REVIEW = "review"
    """The promised post-incident review was published."""
    NONE = "none"


class TimerKind(StrEnum):
    UPDATE = "u"
    FEEDBACK = "f"
    FEEDBACK_ALERT = "a"
    """A stakeholder's rating or comment to pass on to the incident's owner."""
    FEEDBACK_DIGEST = "d"
    REVIEW_REMINDER = "r"
    REVIEW_DUE = "v"
    """The promised review's date passed: the review is published or late."""


CONTENT_FIELDS = (
    "title",
    "severity",
    "services",
    "status",
    "summary",
    "impact",
    "plan",
    "owner",
    "workaround",
    "prevention",
    "review_by",
)
"""The incident fields a message tells; a change to any of them is a change to tell."""


_OPTIONAL_FIELDS = ("workaround", "prevention", "review_by")
_REVIEW_FIELDS = ("review_promised", "review_url", "review_summary", "review_published_ms")
"""Kept on the incident once its review is promised or published; absent before."""


def ms_of(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def utc_of(ms: int | str | bytes | None) -> datetime | None:
    if ms is None or ms == b"" or ms == "":
        return None
    return datetime.fromtimestamp(int(ms) / 1000, tz=UTC)


@overload
def iso_z(moment: datetime) -> str: ...
@overload
def iso_z(moment: datetime | None) -> str | None: ...
def iso_z(moment: datetime | None) -> str | None:
    """``2026-11-27T08:20:24.512000Z``: a moment in UTC as the JSON of every output writes it."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z") if moment else None


def text_of(value: Any) -> str:
    """A value read from Redis (bytes) or given in process (str, int) as text."""
    return value.decode() if isinstance(value, bytes) else str(value)


def _int_or_none(value: Any) -> int | None:
    return None if value is None or value == "" or value == b"" else int(value)


@dataclass(frozen=True)
class TimerMember:
    """The timer of one thread: ``u|INC-1|acme`` (its next update) or ``f|INC-1|acme`` (feedback)."""

    kind: TimerKind
    incident_id: str
    stakeholder_id: str

    def __str__(self) -> str:
        return f"{self.kind}|{self.incident_id}|{self.stakeholder_id}"

    @classmethod
    def parse(cls, member: str) -> TimerMember:
        kind, incident_id, stakeholder_id = member.split("|")
        return cls(TimerKind(kind), incident_id, stakeholder_id)


@dataclass
class Incident:
    """An incident as its events made it. ``field_times`` remembers when each field was last
    set (ms of ``occurred_at``) and ``state_ms`` when the open/resolved state was, so an older
    event never moves either back."""

    id: str
    title: str = ""
    severity: str = "sev4"
    services: list[str] = field(default_factory=list)
    status: str = "investigating"
    summary: str = ""
    impact: str = ""
    plan: str = ""
    owner: str = ""
    workaround: str | None = None
    prevention: str | None = None
    review_by: str | None = None
    state: IncidentState = IncidentState.OPEN
    opened_ms: int = 0
    updated_ms: int = 0
    resolved_ms: int | None = None
    state_ms: int = 0
    field_times: dict[str, int] = field(default_factory=dict)
    stakeholders: list[str] = field(default_factory=list)
    review_promised: str | None = None
    """The review date the resolution promised (``review_by`` as it was then)."""
    review_url: str | None = None
    review_summary: str | None = None
    review_published_ms: int | None = None

    @property
    def is_open(self) -> bool:
        return self.state == IncidentState.OPEN

    def content(self) -> dict[str, Any]:
        """The fields a message tells, as a message's snapshot keeps them."""
        return {name: getattr(self, name) for name in CONTENT_FIELDS}

    def set(self, name: str, value: Any) -> None:
        if name not in CONTENT_FIELDS:
            raise KeyError(f"{name!r} is not an incident field")
        setattr(self, name, value)

    def to_json(self) -> dict[str, Any]:
        """Every field; the optional text fields only once an event gave them."""
        data = asdict(self)
        for name in (*_OPTIONAL_FIELDS, *_REVIEW_FIELDS):
            if data[name] is None:
                del data[name]
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Incident:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["state"] = IncidentState(values.get("state", "open"))
        values.setdefault("state_ms", values.get("opened_ms", 0))
        return cls(**values)


@dataclass
class Thread:
    """One stakeholder's thread of one incident: its numbering and what it promises next."""

    seq: int = 0
    last_comm: str = ""
    promised_ms: int | None = None
    """When the next update is promised (open incidents)."""
    feedback_ms: int | None = None
    """When the feedback request is due (resolved incidents)."""
    last_ms: int | None = None
    """When the thread's latest message was composed."""
    seen: dict[str, Any] | None = None
    """The incident's content as the thread's latest message told it."""

    @classmethod
    def from_hash(cls, raw: Mapping[Any, Any]) -> Thread:
        h = {text_of(k): text_of(v) for k, v in raw.items()}
        return cls(
            seq=int(h.get("seq") or 0),
            last_comm=h.get("last_comm", ""),
            promised_ms=_int_or_none(h.get("promised_ms")),
            feedback_ms=_int_or_none(h.get("feedback_ms")),
            last_ms=_int_or_none(h.get("last_ms")),
            seen=json.loads(h["seen"]) if h.get("seen") else None,
        )

    def to_hash(self) -> dict[str, str | int]:
        """The fields that are set (an unset one is absent from the hash)."""
        out: dict[str, str | int] = {"seq": self.seq}
        if self.last_comm:
            out["last_comm"] = self.last_comm
        for name in ("promised_ms", "feedback_ms", "last_ms"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.seen is not None:
            out["seen"] = json.dumps(self.seen)
        return out


@dataclass
class EventRecord:
    """What applying one event did: kept under the event's id, so a repeat does nothing new."""

    event_id: str
    event_type: str = ""
    incident: Incident | None = None
    action: Action = Action.NONE
    newcomers: list[str] = field(default_factory=list)
    material: bool = False
    now_ms: int = 0
    received_ms: int | None = None
    waiting: str = ""
    """Why the event cannot apply yet (its incident's ``opened`` has not arrived); not kept."""
    rejected: str = ""
    duplicate: bool = False
    done: bool = False
    """Its communications are all composed."""

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["incident"] = self.incident.to_json() if self.incident else None
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> EventRecord:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values.setdefault("event_id", "")
        if values.get("incident") is not None:
            values["incident"] = Incident.from_json(values["incident"])
        values["action"] = Action(values.get("action") or "none")
        return cls(**values)


@dataclass(frozen=True)
class Draft:
    """A new communication as the engine composes it; the store numbers and keeps it."""

    recipient: str
    channel: str
    created_ms: int
    promised_ms: int
    context: dict[str, Any]
    next_update_ms: int | None = None
    no_news: bool = False
    """A regular update with nothing new: a newer message of the thread supersedes it."""

    def to_hash(self) -> dict[str, str | int]:
        out: dict[str, str | int] = {
            "no_news": int(self.no_news),
            "recipient": self.recipient,
            "channel": self.channel,
            "created_ms": self.created_ms,
            "promised_ms": self.promised_ms,
            "context": json.dumps(self.context),
            "updated_ms": self.created_ms,
        }
        if self.next_update_ms is not None:
            out["next_update_ms"] = self.next_update_ms
        return out


@dataclass(frozen=True)
class Communication:
    """One message to one stakeholder, as the log keeps it."""

    id: str
    incident_id: str
    stakeholder_id: str
    kind: Kind
    seq: int
    status: Status
    recipient: str
    created_at: datetime
    promised_at: datetime
    next_update_at: datetime | None
    sent_at: datetime | None
    attempts: int
    last_error: str
    subject: str
    message_id: str
    context: dict[str, Any]
    message: str
    prev_id: str = ""
    next_id: str = ""
    next_attempt_at: datetime | None = None
    first_attempt_at: datetime | None = None
    no_news: bool = False
    channel: str = "email"

    LISTED_FIELDS: ClassVar[tuple[str, ...]] = (
        *("id", "incident_id", "stakeholder_id", "kind", "seq", "status", "recipient", "created_ms"),
        *("promised_ms", "next_update_ms", "sent_ms", "attempts", "last_error", "subject", "message_id"),
        *("context", "prev", "next", "next_attempt_ms", "first_attempt_ms", "no_news", "channel"),
    )
    """The stored fields ``from_hash`` reads, but the message as sent (``message_z``)."""

    @classmethod
    def from_hash(cls, raw: Mapping[Any, Any]) -> Communication:
        packed = raw.get(b"message_z", raw.get("message_z"))
        h = {text_of(k): text_of(v) for k, v in raw.items() if k not in (b"message_z", "message_z")}
        if packed is not None:
            h["message"] = zlib.decompress(packed).decode()
        return cls(
            id=h["id"],
            incident_id=h["incident_id"],
            stakeholder_id=h["stakeholder_id"],
            kind=Kind(h["kind"]),
            seq=int(h["seq"]),
            status=Status(h["status"]),
            recipient=h["recipient"],
            created_at=utc_of(h["created_ms"]),  # type: ignore[arg-type]
            promised_at=utc_of(h["promised_ms"]),  # type: ignore[arg-type]
            next_update_at=utc_of(h.get("next_update_ms")),
            sent_at=utc_of(h.get("sent_ms")),
            attempts=int(h.get("attempts", 0)),
            last_error=h.get("last_error", ""),
            subject=h.get("subject", ""),
            message_id=h.get("message_id", ""),
            context=json.loads(h.get("context", "{}")),
            message=h.get("message", ""),
            prev_id=h.get("prev", ""),
            next_id=h.get("next", ""),
            next_attempt_at=utc_of(h.get("next_attempt_ms")),
            first_attempt_at=utc_of(h.get("first_attempt_ms")),
            no_news=h.get("no_news") == "1",
            channel=h.get("channel") or "email",
        )

    @property
    def lateness_s(self) -> float | None:
        """Seconds between the promised and the actual send time (negative: early)."""
        if self.sent_at is None:
            return None
        return (self.sent_at - self.promised_at).total_seconds()

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "incident_id": self.incident_id,
            "stakeholder_id": self.stakeholder_id,
            "kind": str(self.kind),
            "seq": self.seq,
            "status": str(self.status),
            "channel": self.channel,
            "recipient": self.recipient,
            "subject": self.subject,
            "created_at": iso_z(self.created_at),
            "promised_at": iso_z(self.promised_at),
            "sent_at": iso_z(self.sent_at),
            "lateness_s": self.lateness_s,
            "next_update_at": iso_z(self.next_update_at),
            "attempts": self.attempts,
            "last_error": self.last_error,
            "next_attempt_at": iso_z(self.next_attempt_at),
            "message_id": self.message_id,
        }
