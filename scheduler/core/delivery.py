"""The product's rules at send time: what cancels a send, what a message may refer to, when to retry.

The ``deliver`` actor and the preview's send loop both ask these; none of them reads the
clock, sends mail or talks to Dramatiq.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime

from scheduler.core.config import Stakeholder
from scheduler.core.incidents import changes_between
from scheduler.core.model import Communication, Incident, Kind, Status, Thread, ms_of
from scheduler.core.ports import Store

__all__ = ["as_received", "cancel_reason", "retry_at"]

_LOOKBACK = 100
"""How far back a thread is searched for the last message its reader received."""


def cancel_reason(
    comm: Communication,
    stakeholder: Stakeholder | None,
    incident: Incident | None,
    opted_out: bool,
) -> str | None:
    """Why ``comm`` must not go out after all, or None when it may."""
    if stakeholder is None:
        return "stakeholder is no longer configured"
    if opted_out:
        return "the stakeholder unsubscribed"
    if comm.kind == Kind.UPDATE and incident is not None and not incident.is_open:
        # composed just before the resolution arrived: "still working on it" must not follow "resolved"
        return "the incident was resolved before it went out"
    return None


def retry_at(
    attempts: int,
    first_attempt_ms: int,
    now_ms: int,
    *,
    min_backoff_ms: int,
    max_backoff_ms: int,
    window_ms: int,
    not_before_ms: int = 0,
    paced: bool = False,
) -> int | None:
    """When to try again after ``attempts`` transient failures, or None: the window is over.

    The wait doubles from ``min_backoff_ms`` up to ``max_backoff_ms``; a receiver's
    ``Retry-After`` (``not_before_ms``) moves the attempt later, but the last attempt falls
    at the end of the window, counted from the first attempt. A ``paced`` attempt (one that
    waits for the send rate, or that a throttling reply put back) backs off not at all: it
    comes back at ``not_before_ms``, when the rate has a slot for it.
    """
    deadline_ms = first_attempt_ms + window_ms
    if now_ms >= deadline_ms:
        return None
    backoff_ms = 0 if paced else min(max_backoff_ms, min_backoff_ms << min(max(attempts - 1, 0), 40))
    return min(max(now_ms + backoff_ms, not_before_ms), deadline_ms)


def _last_received(store: Store, comm: Communication) -> Communication | None:
    prev_id = comm.prev_id
    for _ in range(_LOOKBACK):
        if not prev_id:
            return None
        prev = store.comm(prev_id)
        if prev is None:
            return None
        if prev.status == Status.SENT:
            return prev
        prev_id = prev.prev_id
    return None


def as_received(
    store: Store,
    comm: Communication,
    now: datetime,
    *,
    prev_status: str = "",
    prev_sent_at: datetime | None = None,
    thread: Callable[[], Thread] | None = None,
) -> Communication:
    """``comm`` with what it refers to brought in line with what its reader actually received.

    A message refers to "our last message at 14:00" and lists what changed since; when that
    message failed or was cancelled, the reference moves to the last one that was sent,
    and when none was (the acknowledgment failed for good), the message is marked
    ``first_contact`` so that it carries the essentials. A promise of a next update that
    has already passed (the message was held up by retries) is replaced by the thread's
    current promise (``thread()`` reads the thread; only then is it called).
    ``prev_status`` and ``prev_sent_at`` describe the previous message when the caller
    knows them already (``begin_send`` returns them), saving a read.
    """
    context = dict(comm.context)
    next_update_at = comm.next_update_at
    if comm.prev_id and prev_status == "sent" and prev_sent_at is not None:
        context["since_ms"] = ms_of(prev_sent_at)
    elif comm.prev_id:
        received = _last_received(store, comm)
        if received is None:
            context.update(first_contact=True, changes=[], since_ms=None)
        else:
            if received.sent_at is not None:
                context["since_ms"] = ms_of(received.sent_at)
            if received.id != comm.prev_id:
                context["changes"] = changes_between(
                    received.context.get("incident", {}), context["incident"]
                )
    if next_update_at is not None and next_update_at <= now and thread is not None:
        promised = thread().promised_ms
        if promised and promised > ms_of(now):
            next_update_at = datetime.fromtimestamp(promised / 1000, tz=next_update_at.tzinfo)
    return replace(comm, context=context, next_update_at=next_update_at)
