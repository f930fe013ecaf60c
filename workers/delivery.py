"""The deliver actors: take communications for sending and record how each attempt ended."""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime

import dramatiq
import redis

from scheduler.core.bounces import Undeliverable, address_key
from scheduler.core.config import Config
from scheduler.core.delivery import retry_at
from scheduler.core.durations import format_duration
from scheduler.core.model import Communication, Status, ms_of
from scheduler.core.ports import AttemptEnd, Claim
from scheduler.errors import StorageError
from scheduler.service.queues import DELIVER_QUEUE
from scheduler.storage.connection import connection_lost
from workers import runtime
from workers._declare import in_thread, placeholder
from workers.attempts import NOT_BEFORE, PACED, attempt

__all__ = ["deliver", "deliver_many"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Readers:
    """What a group's readers allow: who opted out, which email addresses are undeliverable."""

    opted_out: set[tuple[str, str]]
    undeliverable: dict[str, Undeliverable]

    def mark_of(self, comm: Communication) -> Undeliverable | None:
        return self.undeliverable.get(address_key(comm.recipient)) if comm.channel == "email" else None


@dramatiq.actor(queue_name=DELIVER_QUEUE, broker=placeholder)
async def deliver(comm_id: str) -> None:
    """Send one communication at most once, in its thread's order (see :func:`_deliver_one`)."""
    await _deliver_group(runtime.current(), [comm_id])


@dramatiq.actor(queue_name=DELIVER_QUEUE, broker=placeholder)
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
        claims, readers, config = await in_thread(_take, rt, attempts, ms_of(now))
    except (redis.RedisError, StorageError) as e:
        if connection_lost(e):
            # Dramatiq tries the message again (from 2 s on) rather than leave it to the sweep's grace
            logger.warning("%s: Redis did not answer (%s); tried again shortly", ", ".join(comm_ids), e)
            raise
        logger.warning("%s: %s; the sweep will dispatch them again", ", ".join(comm_ids), e)
        return
    await asyncio.gather(
        *(
            _deliver_one(rt, comm_id, token, claim, now, readers, config)
            for (comm_id, token), claim in zip(attempts, claims, strict=True)
        )
    )


def _take(
    rt: runtime.Runtime, attempts: list[tuple[str, str]], now_ms: int
) -> tuple[list[Claim], _Readers | Exception, Config]:
    """The claims of ``attempts``; the (incident, stakeholder) pairs among those taken whose
    stakeholder opted out and the undeliverable addresses among their recipients, or the
    error those reads met once they are taken (each attempt then ends ``retrying`` with it,
    rather than wait for its lease); and the configuration."""
    config = rt.config()
    claims = rt.store.begin_sends(attempts, now_ms, rt.settings.send_lease_ms)
    readers: dict[str, list[str]] = {}
    addresses = []
    for claim in claims:
        if claim.comm is not None:
            readers.setdefault(claim.comm.incident_id, []).append(claim.comm.stakeholder_id)
            if claim.comm.channel == "email":
                addresses.append(claim.comm.recipient)
    try:
        opted_out = {(i, s) for i, among in readers.items() for s in rt.engine.opted_out_among(i, among)}
        undeliverable = rt.bounces.among(addresses)
    except (redis.RedisError, StorageError) as e:
        return claims, e, config
    return claims, _Readers(opted_out, undeliverable), config


async def _deliver_one(
    rt: runtime.Runtime,
    comm_id: str,
    token: str,
    claim: Claim,
    now: datetime,
    readers: _Readers | Exception,
    config: Config,
) -> None:
    """Send one communication at most once, in its thread's order.

    The store's compare-and-set decided whether this attempt may send (``claim``, see
    ``lua/begin_send.lua``). Whatever happens after that ends in ``sent``, ``failed``,
    ``cancelled`` or ``retrying`` with a next attempt; if even that cannot be written
    (Redis is away), the lease expires and the scheduler's sweep dispatches it again.
    """
    if claim.following:
        await in_thread(deliver.send, claim.following)
    if claim.state != "ok" or claim.comm is None:
        logger.debug("%s not sent now: it is %s", comm_id, claim.state)
        return
    comm = claim.comm
    try:
        if isinstance(readers, Exception):
            raise readers
        opted_out = (comm.incident_id, comm.stakeholder_id) in readers.opted_out
        status, fields = await attempt(rt, claim, now, opted_out, config, readers.mark_of(comm))
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
            not_before_ms=int(fields.pop(NOT_BEFORE, 0)),
            paced=bool(fields.pop(PACED, 0)),
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
        await in_thread(deliver.send, following)
