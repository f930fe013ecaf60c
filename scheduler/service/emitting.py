"""``emit(event)``: validate an incident event, then enqueue it for the workers."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

import dramatiq
import redis
from dramatiq.errors import BrokerError

from scheduler.core.events import Event, check_not_ahead, parse_event
from scheduler.errors import RedisUnavailableError
from scheduler.service.queues import EVENTS_QUEUE, BrokerUnavailableError, build_broker, enqueue
from scheduler.service.settings import Settings
from scheduler.storage import keys

__all__ = ["already_accepted", "emit"]

_lock = threading.Lock()
_brokers: dict[str, dramatiq.Broker] = {}


def _broker_for(settings: Settings) -> dramatiq.Broker:
    url = settings.resolved_broker_url()
    with _lock:
        if url not in _brokers:
            _brokers[url] = build_broker(url)
        return _brokers[url]


def emit(
    event: dict[str, Any], *, broker: dramatiq.Broker | None = None, now: datetime | None = None
) -> Event:
    """Validate ``event`` (schema 1) and enqueue it on the ``events`` queue.

    Raises :class:`~scheduler.errors.EventError` naming each wrong field, or
    :class:`~scheduler.errors.RedisUnavailableError` (:class:`BrokerUnavailableError` for
    RabbitMQ); nothing is enqueued then. The broker defaults to the one ``AMENDS_BROKER_URL``
    names (RabbitMQ), else the Redis of ``AMENDS_REDIS_URL``.
    """
    parsed = check_not_ahead(parse_event(event), now or datetime.now(UTC))
    document = parsed.model_dump(mode="json", by_alias=True, exclude_none=True)
    try:
        enqueue(broker or _broker_for(Settings.from_env()), EVENTS_QUEUE, "handle_event", document)
    except redis.RedisError as e:
        raise RedisUnavailableError(
            f"event {parsed.event_id} was not enqueued: Redis did not answer ({e})"
        ) from e
    except BrokerError as e:  # RabbitMQ, after Dramatiq's own attempts to reconnect
        raise BrokerUnavailableError(
            f"event {parsed.event_id} was not enqueued: RabbitMQ did not answer ({type(e).__name__}: {e})"
        ) from e
    return parsed


def already_accepted(client: redis.Redis, event_id: str, incident_id: str) -> bool:
    """Whether a worker has already applied an event with this id, so that sending it again
    changes nothing. An event still waiting in the queue is not known yet: False."""
    return bool(client.exists(keys.event(incident_id, event_id)))
