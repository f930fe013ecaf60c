"""Events held for their incident's ``opened``, where people can see them.

An ``updated``, ``resolved`` or ``reopened`` that arrives before its incident was opened
waits (``order_wait_ms``, 10 minutes by default) and is then rejected with that reason.
While it waits it is kept in ``amends:waiting``: ``amends log --waiting``, the review page
and ``/metrics`` show it. The worker says once that it waits
(``INC-999: resolved waits for its opened (up to 10 min)``) instead of a retry line every
few seconds, and the doors (``amends emit``, ``POST /v1/events``) answer ``waiting`` for an
event they can already tell will wait.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

import redis
from dramatiq.middleware import CurrentMessage

from scheduler.core.events import Event
from scheduler.core.model import iso_z
from scheduler.storage import keys

__all__ = [
    "WaitingEvent",
    "door_status",
    "expired",
    "hold",
    "hold_words",
    "settled",
    "waiting_events",
    "waiting_metrics",
]

logger = logging.getLogger(__name__)

_OPENED = "incident.opened"


def hold_words(hold_ms: int) -> str:
    """``10 min``, ``90 s``, ``1.5 s``: how long an event may wait, for people."""
    if hold_ms > 0 and hold_ms % 60_000 == 0:
        return f"{hold_ms // 60_000} min"
    return f"{max(0, hold_ms) / 1000:g} s"


def _kind(event: Event) -> str:
    return event.type.removeprefix("incident.")


@dataclass(frozen=True)
class WaitingEvent:
    """An event held for its incident's ``opened``: since when, until when, and why."""

    event_id: str
    incident_id: str
    type: str
    since: str
    until: str
    reason: str

    @classmethod
    def from_json(cls, raw: str | bytes) -> WaitingEvent:
        return cls(**json.loads(raw))

    def as_json(self) -> dict[str, str]:
        return asdict(self)


def _line(event: Event, hold_ms: int) -> str:
    return f"{event.incident_id}: {_kind(event)} waits for its opened (up to {hold_words(hold_ms)})"


# -- the worker --------------------------------------------------------------------------------

_quiet_ids: set[str] = set()
_quiet_lock = threading.Lock()


class _QuietWaitingRetries(logging.Filter):
    """Drops Dramatiq's "Retrying message … in 5000 milliseconds" for a waiting event:
    the worker has said once, with the incident and the reason, that it waits."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        if not str(record.msg).startswith("Retrying message") or not args:
            return True
        with _quiet_lock:
            if args[0] in _quiet_ids:
                _quiet_ids.discard(str(args[0]))
                return False
        return True


logging.getLogger("dramatiq.middleware.retries.Retries").addFilter(_QuietWaitingRetries())


def _current() -> tuple[str, int]:
    """The message being handled: its id and how many times it was retried."""
    message = CurrentMessage.get_current_message()
    if message is None:
        return "", 0
    return message.message_id, int(message.options.get("retries", 0))


def hold(
    client: redis.Redis, event: Event, reason: str, now: datetime, waited_ms: float, hold_ms: int
) -> None:
    """Keep ``event`` as waiting until ``hold_ms`` after it was enqueued; say so once, the
    first time it is found waiting, and not at each retry."""
    message_id, retries = _current()
    if message_id:
        with _quiet_lock:
            _quiet_ids.add(message_id)
    if retries:
        return
    since = now - timedelta(milliseconds=waited_ms)
    record = WaitingEvent(
        event.event_id,
        event.incident_id,
        event.type,
        iso_z(since),
        iso_z(since + timedelta(milliseconds=hold_ms)),
        reason,
    )
    client.hset(keys.WAITING, event.event_id, json.dumps(record.as_json()))
    logger.warning("%s", _line(event, hold_ms))


def expired(client: redis.Redis, event: Event, hold_ms: int) -> str:
    """The reason an event that waited its whole hold is rejected with; it no longer waits."""
    client.hdel(keys.WAITING, event.event_id)
    return f"{event.incident_id}: {_kind(event)} waited {hold_words(hold_ms)} for its opened, and none came"


def settled(client: redis.Redis, event: Event) -> None:
    """``event`` was applied, or refused for another reason: it no longer waits."""
    if _current()[1]:  # only a retried message can have waited
        client.hdel(keys.WAITING, event.event_id)


# -- the doors and the readers ------------------------------------------------------------------


def door_status(client: redis.Redis, events: Sequence[Event], event: Event, hold_ms: int) -> str | None:
    """What a door tells the sender of ``event`` when its incident is not opened yet (nor
    opened earlier in the same batch ``events``), or None."""
    if event.type == _OPENED:
        return None
    if any(e.type == _OPENED and e.incident_id == event.incident_id for e in events):
        return None
    if client.exists(keys.incident(event.incident_id)):
        return None
    return (
        f"incident {event.incident_id} is not opened yet; it waits up to {hold_words(hold_ms)} for its opened"
    )


def waiting_events(client: redis.Redis, incident_id: str | None = None) -> list[WaitingEvent]:
    """The events waiting now, longest waiting first (about ``incident_id``, when given)."""
    found = [WaitingEvent.from_json(raw) for raw in client.hvals(keys.WAITING)]
    return sorted(
        (w for w in found if incident_id is None or w.incident_id == incident_id), key=lambda w: w.since
    )


def waiting_metrics(client: redis.Redis) -> str:
    """The ``/metrics`` lines for the events waiting now."""
    return (
        "# HELP amends_waiting_events Events held for their incident's opened, rejected at the end of the hold.\n"
        "# TYPE amends_waiting_events gauge\n"
        f"amends_waiting_events {int(client.hlen(keys.WAITING))}\n"
    )
