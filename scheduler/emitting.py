"""``emit(event)``: validate an incident event, then enqueue it for the workers."""

from __future__ import annotations

import threading
from typing import Any

import dramatiq

from scheduler.events import Event, parse_event
from scheduler.queues import EVENTS_QUEUE, build_broker, enqueue
from scheduler.settings import Settings

__all__ = ["emit"]

_lock = threading.Lock()
_brokers: dict[str, dramatiq.Broker] = {}


def _broker_for(settings: Settings) -> dramatiq.Broker:
    url = settings.resolved_redis_url()
    with _lock:
        if url not in _brokers:
            _brokers[url] = build_broker(url)
        return _brokers[url]


def emit(event: dict[str, Any], *, broker: dramatiq.Broker | None = None) -> Event:
    """Validate ``event`` (schema 1) and enqueue it on the ``events`` queue.

    Raises :class:`~scheduler.errors.EventError` naming each wrong field; nothing is
    enqueued then. The broker defaults to the one ``AMENDS_REDIS_URL`` names.
    """
    parsed = parse_event(event)
    target = broker or _broker_for(Settings.from_env())
    enqueue(
        target, EVENTS_QUEUE, "handle_event", parsed.model_dump(mode="json", by_alias=True, exclude_none=True)
    )
    return parsed
