"""The event actor: validate an incoming event and apply it to its incident."""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import Any

import dramatiq
import redis
from dramatiq.errors import BrokerError
from dramatiq.middleware import CurrentMessage

from scheduler.core.events import parse_event
from scheduler.errors import EventError, StorageError
from scheduler.service import waiting
from scheduler.service.queues import EVENTS_QUEUE
from workers import runtime
from workers._declare import OUTAGE_RETRIES, placeholder

__all__ = ["handle_event"]

logger = logging.getLogger(__name__)

_WAIT_FIRST_PAUSE_MS = 100
_WAIT_MAX_PAUSE_MS = 5_000
"""An event waiting for its incident's ``opened`` is tried again after 100 ms, 200 ms, … 5 s."""


@dramatiq.actor(queue_name=EVENTS_QUEUE, broker=placeholder, max_retries=OUTAGE_RETRIES)
def handle_event(payload: Any) -> None:
    """Validate an event and apply it; an invalid one is kept as rejected, never retried.

    An event of an incident whose ``opened`` has not arrived yet is tried again, with a
    growing pause, until that ``opened`` is applied or ``order_wait_ms`` has passed since
    it was enqueued; only then is it rejected.
    """
    rt = runtime.current()
    now = rt.clock()
    try:
        event = parse_event(payload)
    except EventError as e:
        logger.warning("event rejected: %s", e)
        rt.store.reject(payload, e.errors, now, "worker")
        return
    try:
        outcome = rt.engine.handle_event(event, now, now - _queue_delay())
    except (redis.RedisError, StorageError, BrokerError):
        raise  # Dramatiq retries the message with backoff once Redis (or RabbitMQ) answers again
    except Exception as e:
        # A bug must not cost the event: keep it where `amends log --rejected` shows it.
        logger.exception("event %s could not be applied", event.event_id)
        rt.store.reject(payload, [("", f"could not be applied: {type(e).__name__}: {e}")], now, "worker")
        return
    if outcome.waiting:
        waited_ms = _queue_delay() / timedelta(milliseconds=1)
        if waited_ms < rt.settings.order_wait_ms:
            waiting.hold(rt.client, event, outcome.waiting, now, waited_ms, rt.settings.order_wait_ms)
            pause_ms = min(_WAIT_MAX_PAUSE_MS, _WAIT_FIRST_PAUSE_MS * 2 ** min(_retries(), 10))
            raise dramatiq.Retry(outcome.waiting, delay=pause_ms)
        reason = waiting.expired(rt.client, event, rt.settings.order_wait_ms)
        logger.warning("event %s rejected: %s", event.event_id, reason)
        rt.store.reject(payload, [("incident_id", reason)], now, "worker")
        return
    waiting.settled(rt.client, event)
    if outcome.rejected:
        logger.warning("event %s rejected: %s", event.event_id, outcome.rejected)
        if not outcome.duplicate:
            rt.store.reject(payload, [("incident_id", outcome.rejected)], now, "worker")
    elif outcome.duplicate and not outcome.communications:
        logger.info("event %s was already applied; nothing to do", event.event_id)


def _queue_delay() -> timedelta:
    """How long the current message waited since it was first enqueued (real time, whatever the clock)."""
    message = CurrentMessage.get_current_message()
    if message is None:
        return timedelta(0)
    return timedelta(milliseconds=max(0, time.time() * 1000 - message.message_timestamp))


def _retries() -> int:
    message = CurrentMessage.get_current_message()
    return int(message.options.get("retries", 0)) if message is not None else 0
