"""The Dramatiq actors: thin, idempotent, each on a named queue.

Messages carry ids, never rendered mail. Actors are declared on a placeholder broker at
import and bound to the real one by :func:`workers.bind`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

import dramatiq
import redis
from dramatiq.brokers.stub import StubBroker
from dramatiq.errors import BrokerError
from dramatiq.middleware import AsyncIO, CurrentMessage, Retries

from scheduler.core.config import Config, Stakeholder
from scheduler.core.delivery import as_received, cancel_reason, retry_at
from scheduler.core.durations import format_duration
from scheduler.core.events import parse_event
from scheduler.core.model import Communication, Kind, Status, ms_of
from scheduler.errors import (
    EventError,
    PermanentDeliveryError,
    SettingsError,
    StorageError,
    TemplateError,
    TransientDeliveryError,
)
from scheduler.mail.channels import compose_channel
from scheduler.mail.channels import send as send_to_channel
from scheduler.mail.messages import compose_email
from scheduler.mail.mime import written_header
from scheduler.service import waiting
from scheduler.service.queues import DELIVER_QUEUE, EVENTS_QUEUE, TIMERS_QUEUE
from scheduler.core.ports import AttemptEnd, Claim
from workers import runtime

__all__ = [
    "ACTORS",
    "DramatiqDispatch",
    "bind",
    "deliver",
    "deliver_many",
    "fire_timers",
    "handle_event",
    "reconcile",
]

logger = logging.getLogger(__name__)

_placeholder = StubBroker(middleware=[AsyncIO(), CurrentMessage(), Retries()])


_OUTAGE_RETRIES = 2_000
"""How many times Dramatiq retries an event or timer message that met a storage outage
(backoff tops out at 5 min): an accepted event is not dropped because Redis was away for
an afternoon."""

_WAIT_FIRST_PAUSE_MS = 100
_WAIT_MAX_PAUSE_MS = 5_000
"""An event waiting for its incident's ``opened`` is tried again after 100 ms, 200 ms, … 5 s."""

_R = TypeVar("_R")


@dramatiq.actor(queue_name=EVENTS_QUEUE, broker=_placeholder, max_retries=_OUTAGE_RETRIES)
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


@dramatiq.actor(queue_name=TIMERS_QUEUE, broker=_placeholder, max_retries=_OUTAGE_RETRIES)
def fire_timers(timers: list[list[Any]]) -> None:
    """Timers came due: compose each thread's next update or feedback request.

    Each timer is handled on its own and its claim acked once handled; if any failed, the
    message is retried after the others are done, and those do nothing the second time. A
    claim never acked (this message was lost) is handed out again when its lease expires.
    """
    rt = runtime.current()
    failed: Exception | None = None
    handled: list[tuple[str, int]] = []
    for member, due_ms in timers:
        try:
            rt.engine.fire_timer(str(member), int(due_ms), rt.clock())
            handled.append((str(member), int(due_ms)))
        except Exception as e:  # one bad timer must not hold up the others
            logger.exception("timer %s failed", member)
            failed = e
    rt.engine.dispatch.flush()
    rt.engine.timers.ack_claims(handled)
    if failed is not None:
        raise failed


@dramatiq.actor(queue_name=TIMERS_QUEUE, broker=_placeholder, max_retries=_OUTAGE_RETRIES)
def reconcile() -> None:
    """The configuration changed: acknowledge to stakeholders open incidents now concern."""
    rt = runtime.current()
    rt.engine.reconcile(rt.clock())


def _queue_delay() -> timedelta:
    """How long the current message waited since it was first enqueued (real time, whatever the clock)."""
    message = CurrentMessage.get_current_message()
    if message is None:
        return timedelta(0)
    return timedelta(milliseconds=max(0, time.time() * 1000 - message.message_timestamp))


def _retries() -> int:
    message = CurrentMessage.get_current_message()
    return int(message.options.get("retries", 0)) if message is not None else 0


@dramatiq.actor(queue_name=DELIVER_QUEUE, broker=_placeholder)
async def deliver(comm_id: str) -> None:
    """Send one communication at most once, in its thread's order (see :func:`_deliver_one`)."""
    await _deliver_group(runtime.current(), [comm_id])


@dramatiq.actor(queue_name=DELIVER_QUEUE, broker=_placeholder)
async def deliver_many(comm_ids: list[str]) -> None:
    """Send a group of communications concurrently on this process's event loop.

    A fan-out hands its communications over in groups: one message per group instead of
    one per email, while each communication keeps its own status, lease, retries and order.
    """
    await _deliver_group(runtime.current(), [str(comm_id) for comm_id in comm_ids])


async def _deliver_group(rt: runtime.Runtime, comm_ids: list[str]) -> None:
    """Take the group for sending in one step off the event loop (each communication by its
    own compare-and-set, who among their readers opted out, and the configuration in force,
    which a reload of a large file may hold up), then send each."""
    now = rt.clock()
    attempts = [(comm_id, uuid.uuid4().hex) for comm_id in comm_ids]
    try:
        claims, opted_out, config = await _in_thread(_take, rt, attempts, ms_of(now))
    except (redis.RedisError, StorageError) as e:
        logger.warning(
            "%s: Redis did not answer (%s); the sweep will dispatch them again", ", ".join(comm_ids), e
        )
        return
    await asyncio.gather(
        *(
            _deliver_one(rt, comm_id, token, claim, now, opted_out, config)
            for (comm_id, token), claim in zip(attempts, claims, strict=True)
        )
    )


def _take(
    rt: runtime.Runtime, attempts: list[tuple[str, str]], now_ms: int
) -> tuple[list[Claim], set[tuple[str, str]] | Exception, Config]:
    """The claims of ``attempts``; the (incident, stakeholder) pairs among those taken whose
    stakeholder opted out, or the error that read met once they are taken (each attempt then
    ends ``retrying`` with it, rather than wait for its lease); and the configuration."""
    config = rt.config()
    claims = rt.store.begin_sends(attempts, now_ms, rt.settings.send_lease_ms)
    readers: dict[str, list[str]] = {}
    for claim in claims:
        if claim.comm is not None:
            readers.setdefault(claim.comm.incident_id, []).append(claim.comm.stakeholder_id)
    try:
        opted_out = {(i, s) for i, among in readers.items() for s in rt.engine.opted_out_among(i, among)}
    except (redis.RedisError, StorageError) as e:
        return claims, e, config
    return claims, opted_out, config


async def _deliver_one(
    rt: runtime.Runtime,
    comm_id: str,
    token: str,
    claim: Claim,
    now: datetime,
    opted_out: set[tuple[str, str]] | Exception,
    config: Config,
) -> None:
    """Send one communication at most once, in its thread's order.

    The store's compare-and-set decided whether this attempt may send (``claim``, see
    ``lua/begin_send.lua``). Whatever happens after that ends in ``sent``, ``failed``,
    ``cancelled`` or ``retrying`` with a next attempt; if even that cannot be written
    (Redis is away), the lease expires and the scheduler's sweep dispatches it again.
    """
    if claim.following:
        await _in_thread(deliver.send, claim.following)
    if claim.state != "ok" or claim.comm is None:
        logger.debug("%s not sent now: it is %s", comm_id, claim.state)
        return
    comm = claim.comm
    try:
        if isinstance(opted_out, Exception):
            raise opted_out
        status, fields = await _attempt(
            rt, claim, now, (comm.incident_id, comm.stakeholder_id) in opted_out, config
        )
    except Exception as e:
        logger.exception("%s: the attempt failed unexpectedly", comm_id)
        status, fields = Status.RETRYING, {"last_error": f"{type(e).__name__}: {e}"}
    next_attempt_ms = None
    if status == Status.RETRYING:
        next_attempt_ms = retry_at(
            comm.attempts,
            ms_of(comm.first_attempt_at or now),
            ms_of(now),
            min_backoff_ms=rt.settings.retry_min_backoff_ms,
            max_backoff_ms=rt.settings.retry_max_backoff_ms,
            window_ms=rt.settings.retry_window_ms,
            not_before_ms=int(fields.pop(_NOT_BEFORE, 0)),
        )
        if next_attempt_ms is None:
            window = format_duration(rt.settings.retry_window_ms // 1000)
            status = Status.FAILED
            fields["last_error"] = (
                f"gave up after {comm.attempts} attempts over {window}: {fields['last_error']}"
            )
            logger.error("%s failed: %s", comm_id, fields["last_error"])
        else:
            logger.warning("%s will be retried: %s", comm_id, fields["last_error"])
    try:
        _, following = await rt.end_writer().write(
            AttemptEnd(comm_id, token, status, ms_of(rt.clock()), next_attempt_ms, fields)
        )
    except (redis.RedisError, StorageError) as e:
        logger.warning("%s: could not record %s (%s); it is sent again after its lease", comm_id, status, e)
        return
    if following:
        await _in_thread(deliver.send, following)


async def _attempt(
    rt: runtime.Runtime, claim: Claim, now: datetime, reader_opted_out: bool, config: Config
) -> tuple[Status, dict[str, str | int]]:
    """Compose and send one taken communication; return its new status and the fields to record."""
    comm = claim.comm
    assert comm is not None
    stakeholder = config.stakeholder(comm.stakeholder_id)
    incident = await _in_thread(rt.store.incident, comm.incident_id) if comm.kind == Kind.UPDATE else None
    opted_out = stakeholder is not None and reader_opted_out
    reason = cancel_reason(comm, stakeholder, incident, opted_out)
    if reason is not None:
        if opted_out:
            await _in_thread(rt.engine.stop_thread, comm.incident_id, comm.stakeholder_id)
        return Status.CANCELLED, {"last_error": reason, "updated_ms": ms_of(now)}
    assert stakeholder is not None
    receive = functools.partial(
        as_received,
        rt.store,
        comm,
        now,
        prev_status=claim.prev_status,
        prev_sent_at=claim.prev_sent_at,
        thread=functools.partial(rt.store.thread, comm.incident_id, comm.stakeholder_id),
    )
    # Only a predecessor that was not sent, or a promise already past, makes it read Redis.
    reads = (comm.prev_id and claim.prev_status != Status.SENT) or (
        comm.next_update_at and comm.next_update_at <= now
    )
    comm = await _in_thread(receive) if reads else receive()
    if stakeholder.channel != "email":
        return await _attempt_channel(rt, comm, stakeholder, now, config)
    try:
        email, rendered = compose_email(
            comm, stakeholder, config, rt.templates, now, rt.settings.secret_key or ""
        )
    except TemplateError as e:
        logger.error("%s failed: %s", comm.id, e)
        return Status.FAILED, {"last_error": f"template: {e}", "updated_ms": ms_of(now)}
    except Exception as e:  # a message that cannot be composed now never will be: fail it visibly
        logger.exception("%s could not be composed", comm.id)
        return Status.FAILED, {
            "last_error": f"could not be composed: {type(e).__name__}: {e}",
            "updated_ms": ms_of(now),
        }
    return await _sent(
        rt,
        comm,
        now,
        rendered.subject,
        rt.pool().send(email),
        written_header(email, "Message-ID") or "",
        email.as_string(),
    )


async def _attempt_channel(
    rt: runtime.Runtime, comm: Communication, stakeholder: Stakeholder, now: datetime, config: Config
) -> tuple[Status, dict[str, str | int]]:
    """Compose and POST one communication to a Slack, Teams or webhook stakeholder."""
    try:
        delivery = compose_channel(
            comm,
            stakeholder,
            config,
            rt.templates,
            now,
            rt.settings.secret_key or "",
            webhook_secret=rt.settings.webhook_secret,
        )
    except (TemplateError, SettingsError, ValueError) as e:
        logger.error("%s failed: %s", comm.id, e)
        return Status.FAILED, {"last_error": f"could not be composed: {e}", "updated_ms": ms_of(now)}
    return await _sent(
        rt,
        comm,
        now,
        delivery.subject,
        send_to_channel(delivery, rt.http(), now=now),
        delivery.message_id,
        delivery.message,
    )


async def _sent(
    rt: runtime.Runtime,
    comm: Communication,
    now: datetime,
    subject: str,
    sending: Awaitable[str],
    message_id: str,
    message: str,
) -> tuple[Status, dict[str, str | int]]:
    """Await ``sending`` (an email or a channel post); the status and fields its outcome records."""
    attempted: dict[str, str | int] = {"subject": subject, "updated_ms": ms_of(now)}
    try:
        reply = await sending
    except PermanentDeliveryError as e:
        logger.error("%s failed: %s", comm.id, e)
        return Status.FAILED, {"last_error": str(e), **attempted}
    except TransientDeliveryError as e:
        if e.retry_after_s:
            attempted[_NOT_BEFORE] = ms_of(now) + int(e.retry_after_s * 1000)
        return Status.RETRYING, {"last_error": str(e), **attempted}
    sent = rt.clock()
    logger.info("%s sent to %s", comm.id, comm.recipient)
    return Status.SENT, {
        "sent_ms": ms_of(sent),
        "updated_ms": ms_of(sent),
        "subject": subject,
        "message_id": message_id,
        "message": message,
        "last_error": "",
        "server_reply": reply,
    }


_NOT_BEFORE = "_not_before_ms"
"""Set by an attempt whose reply named a time to come back (Retry-After); never stored."""


async def _in_thread(function: Callable[..., _R], *args: Any, **kwargs: Any) -> _R:
    """Run a blocking store call off the event loop, so other sends on it go on meanwhile."""
    return await asyncio.to_thread(function, *args, **kwargs)


ACTORS = (handle_event, fire_timers, reconcile, deliver, deliver_many)

DELIVER_GROUP = 25
"""Communications handed to one ``deliver_many`` message."""


class DramatiqDispatch:
    """Hands communications to the deliver actors, in groups of up to ``DELIVER_GROUP``.

    Held ids are per thread (each worker thread runs one entry point of the engine at a
    time), and handed over when a group is full or the engine flushes.
    """

    def __init__(self) -> None:
        self._held = threading.local()

    def _pending(self) -> list[str]:
        if not hasattr(self._held, "ids"):
            self._held.ids = []
        ids: list[str] = self._held.ids
        return ids

    def deliver(self, comm_id: str) -> None:
        pending = self._pending()
        pending.append(comm_id)
        if len(pending) >= DELIVER_GROUP:
            self.flush()

    def flush(self) -> None:
        pending = self._pending()
        if not pending:
            return
        group, pending[:] = list(pending), []
        if len(group) == 1:
            deliver.send(group[0])
        else:
            deliver_many.send(group)


def bind(broker: dramatiq.Broker) -> None:
    """Declare every actor on ``broker`` (the one the worker consumes from)."""
    for actor in ACTORS:
        actor.broker = broker
        broker.declare_actor(actor)
