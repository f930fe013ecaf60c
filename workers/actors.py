"""The Dramatiq actors: thin, idempotent, each on a named queue.

Messages carry ids, never rendered mail. Actors are declared on a placeholder broker at
import and bound to the real one by :func:`workers.bind`.
"""

from __future__ import annotations

import logging
import time
import uuid
from datetime import timedelta
from typing import Any

import dramatiq
import redis
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import AsyncIO, CurrentMessage, Retries

from scheduler.errors import (
    ConfigError,
    EventError,
    PermanentDeliveryError,
    TemplateError,
    TransientDeliveryError,
)
from scheduler.events import parse_event
from scheduler.feedback import is_unsubscribed
from scheduler.messages import compose_email
from scheduler.queues import DELIVER_QUEUE, EVENTS_QUEUE, TIMERS_QUEUE
from scheduler.store import ms_of
from workers import runtime

__all__ = ["ACTORS", "DramatiqDispatch", "bind", "deliver", "fire_timers", "handle_event", "reconcile"]

logger = logging.getLogger(__name__)

_placeholder = StubBroker(middleware=[AsyncIO(), CurrentMessage(), Retries()])


# Events and timers are retried through long Redis outages (backoff tops out at 5 min):
# an accepted event must not be dropped because Redis was away for an afternoon.
_PATIENT = 2_000


@dramatiq.actor(queue_name=EVENTS_QUEUE, broker=_placeholder, max_retries=_PATIENT)
def handle_event(payload: Any) -> None:
    """Validate an event and apply it; an invalid one is kept as rejected, never retried."""
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
    except redis.RedisError:
        raise  # Dramatiq retries the message with backoff once Redis answers again
    except Exception as e:
        # A bug must not cost the event: keep it where `amends log --rejected` shows it.
        logger.exception("event %s could not be applied", event.event_id)
        rt.store.reject(payload, [("", f"could not be applied: {type(e).__name__}: {e}")], now, "worker")
        return
    if outcome.rejected:
        logger.warning("event %s rejected: %s", event.event_id, outcome.rejected)
        if not outcome.duplicate:
            rt.store.reject(payload, [("incident_id", outcome.rejected)], now, "worker")
    elif outcome.duplicate and not outcome.communications:
        logger.info("event %s was already applied; nothing to do", event.event_id)


@dramatiq.actor(queue_name=TIMERS_QUEUE, broker=_placeholder, max_retries=_PATIENT)
def fire_timers(timers: list[list[Any]]) -> None:
    """Timers came due: compose each thread's next update or feedback request.

    Each timer is handled on its own; if any failed, the message is retried after the
    others are done, and those do nothing the second time.
    """
    rt = runtime.current()
    failed: Exception | None = None
    for member, due_ms in timers:
        try:
            rt.engine.fire_timer(str(member), int(due_ms), rt.clock())
        except Exception as e:  # one bad timer must not hold up the others
            logger.exception("timer %s failed", member)
            failed = e
    if failed is not None:
        raise failed


@dramatiq.actor(queue_name=TIMERS_QUEUE, broker=_placeholder, max_retries=_PATIENT)
def reconcile() -> None:
    """The configuration changed: acknowledge to stakeholders open incidents now concern."""
    rt = runtime.current()
    rt.engine.reconcile(rt.clock())


def _queue_delay() -> timedelta:
    """How long the current message waited in the queue (real time, whatever the clock)."""
    message = CurrentMessage.get_current_message()
    if message is None:
        return timedelta(0)
    return timedelta(milliseconds=max(0, time.time() * 1000 - message.message_timestamp))


def _retries() -> int:
    message = CurrentMessage.get_current_message()
    return int(message.options.get("retries", 0)) if message is not None else 0


@dramatiq.actor(queue_name=DELIVER_QUEUE, broker=_placeholder)
async def deliver(comm_id: str) -> None:
    """Send one communication at most once (compare-and-set on its status, with a lease)."""
    rt = runtime.current()
    now = rt.clock()
    token = uuid.uuid4().hex
    state = rt.store.begin_send(comm_id, ms_of(now), rt.settings.send_lease_ms, token)
    if state != "ok":
        logger.info("%s not sent again: it is %s", comm_id, state)
        return
    comm = rt.store.comm(comm_id)
    assert comm is not None
    try:
        config = rt.config()
    except ConfigError as e:  # pragma: no cover - the source keeps the last good config
        rt.store.finish_send(comm_id, token, "retrying", last_error=str(e))
        raise
    stakeholder = config.stakeholder(comm.stakeholder_id)
    if stakeholder is None:
        rt.store.finish_send(comm_id, token, "cancelled", last_error="stakeholder is no longer configured")
        return
    if is_unsubscribed(rt.client, stakeholder.id):
        rt.store.finish_send(comm_id, token, "cancelled", last_error="the stakeholder unsubscribed")
        return
    if comm.kind == "update" and (rt.store.incident(comm.incident_id) or {}).get("state") == "resolved":
        # composed just before the resolution arrived: "still working on it" must not follow "resolved"
        rt.store.finish_send(
            comm_id, token, "cancelled", last_error="the incident was resolved before it went out"
        )
        return
    try:
        email, rendered = compose_email(
            comm, stakeholder, config, rt.templates, now, rt.settings.secret_key or ""
        )
    except TemplateError as e:
        rt.store.finish_send(comm_id, token, "failed", last_error=f"template: {e}", updated_ms=ms_of(now))
        logger.error("%s failed: %s", comm_id, e)
        return
    except Exception as e:  # a message that cannot be composed now never will be: fail it visibly
        logger.exception("%s could not be composed", comm_id)
        error = f"could not be composed: {type(e).__name__}: {e}"
        rt.store.finish_send(comm_id, token, "failed", last_error=error, updated_ms=ms_of(now))
        return
    attempted: dict[str, str | int] = {"subject": rendered.subject, "updated_ms": ms_of(now)}
    try:
        reply = await rt.pool().send(email)
    except PermanentDeliveryError as e:
        rt.store.finish_send(comm_id, token, "failed", last_error=str(e), **attempted)
        logger.error("%s failed: %s", comm_id, e)
        return
    except TransientDeliveryError as e:
        attempts = _retries() + 1
        if attempts > rt.settings.retry_max:
            error = f"gave up after {attempts} attempts: {e}"
            rt.store.finish_send(comm_id, token, "failed", last_error=error, **attempted)
            logger.error("%s failed: %s", comm_id, error)
            return
        rt.store.finish_send(comm_id, token, "retrying", last_error=str(e), **attempted)
        logger.warning("%s will be retried: %s", comm_id, e)
        # Retry, not the error itself: Dramatiq backs off without logging a traceback.
        raise dramatiq.Retry(str(e)) from e
    sent = rt.clock()
    rt.store.finish_send(
        comm_id,
        token,
        "sent",
        sent_ms=ms_of(sent),
        updated_ms=ms_of(sent),
        subject=rendered.subject,
        message_id=str(email["Message-ID"]),
        message=email.as_string(),
        last_error="",
        server_reply=reply,
    )
    logger.info("%s sent to %s", comm_id, comm.recipient)


ACTORS = (handle_event, fire_timers, reconcile, deliver)


class DramatiqDispatch:
    """Hands communications to the ``deliver`` actor."""

    def deliver(self, comm_id: str) -> None:
        deliver.send(comm_id)


def bind(broker: dramatiq.Broker) -> None:
    """Declare every actor on ``broker`` (the one the worker consumes from)."""
    for actor in ACTORS:
        actor.broker = broker
        broker.declare_actor(actor)
