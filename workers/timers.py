"""The timer actors: due timers become updates and feedback requests; a configuration
change reaches the incidents already open."""

from __future__ import annotations

import logging
from typing import Any

import dramatiq

from scheduler.core.model import ms_of
from scheduler.service.queues import TIMERS_QUEUE
from scheduler.storage.connection import connection_lost
from workers import runtime
from workers._declare import OUTAGE_RETRIES, placeholder

__all__ = ["fire_timers", "reconcile"]

logger = logging.getLogger(__name__)


@dramatiq.actor(queue_name=TIMERS_QUEUE, broker=placeholder, max_retries=OUTAGE_RETRIES)
def fire_timers(timers: list[list[Any]]) -> None:
    """Timers came due: compose each thread's next update or feedback request.

    Each timer is handled on its own and its claim acked once handled. A timer whose
    handling lost its Redis (or broker) connection is put back at once, to be claimed again
    as soon as Redis answers, not after its lease. If any other failed, the message is
    retried after the others are done, and those do nothing the second time. A claim never
    acked (this message was lost, the worker died) is handed out again when its lease expires.
    """
    rt = runtime.current()
    failed: Exception | None = None
    handled: list[tuple[str, int]] = []
    put_back: list[tuple[str, int]] = []
    for member, due_ms in timers:
        claim = (str(member), int(due_ms))
        try:
            rt.engine.fire_timer(*claim, rt.clock())
            handled.append(claim)
        except Exception as e:  # one bad timer must not hold up the others
            if connection_lost(e):
                logger.warning("timer %s failed: %s; it is put back to be claimed again", member, e)
                put_back.append(claim)
                continue
            logger.exception("timer %s failed", member)
            failed = e
    rt.engine.dispatch.flush()
    rt.engine.timers.ack_claims(handled)
    if put_back:
        rt.engine.timers.release_claims(put_back, ms_of(rt.clock()))
    if failed is not None:
        raise failed


@dramatiq.actor(queue_name=TIMERS_QUEUE, broker=placeholder, max_retries=OUTAGE_RETRIES)
def reconcile() -> None:
    """The configuration changed: acknowledge to stakeholders open incidents now concern."""
    rt = runtime.current()
    rt.engine.reconcile(rt.clock())
