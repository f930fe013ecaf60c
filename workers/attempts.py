"""One send attempt: compose a taken communication and hand it to SMTP or a channel."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

from scheduler.core.bounces import BounceSource, Undeliverable, suppressed_reason
from scheduler.core.config import Config, Stakeholder
from scheduler.core.delivery import as_received, cancel_reason
from scheduler.core.model import Communication, Kind, Status, ms_of
from scheduler.core.ports import Claim
from scheduler.core.rate import Rate
from scheduler.errors import (
    PermanentDeliveryError,
    SettingsError,
    TemplateError,
    TransientDeliveryError,
    UndeliverableError,
)
from scheduler.mail.channels import compose_channel
from scheduler.mail.channels import send as send_to_channel
from scheduler.mail.dkim_signing import sign_email
from scheduler.mail.messages import compose_email
from scheduler.mail.mime import written_header
from workers import runtime
from workers._declare import in_thread

__all__ = ["NOT_BEFORE", "PACED", "attempt"]

logger = logging.getLogger(__name__)

NOT_BEFORE = "_not_before_ms"
"""Set by an attempt whose reply named a time to come back (Retry-After); never stored."""

PACED = "_paced"
"""Set by an attempt that waits for the send rate or was throttled: no backoff; never stored."""

_THROTTLE_PAUSE_MS = 1_000
"""How long a throttling reply without Retry-After pauses its send rate."""


async def attempt(
    rt: runtime.Runtime,
    claim: Claim,
    now: datetime,
    reader_opted_out: bool,
    config: Config,
    undeliverable: Undeliverable | None = None,
) -> tuple[Status, dict[str, str | int]]:
    """Compose and send one taken communication; return its new status and the fields to record.

    A message to an address marked undeliverable (``undeliverable``) is not sent: it ends
    ``suppressed`` with the mark's reason.
    """
    comm = claim.comm
    assert comm is not None
    stakeholder = config.stakeholder(comm.stakeholder_id)
    incident = await in_thread(rt.store.incident, comm.incident_id) if comm.kind == Kind.UPDATE else None
    opted_out = stakeholder is not None and reader_opted_out
    reason = cancel_reason(comm, stakeholder, incident, opted_out)
    if reason is not None:
        if opted_out:
            await in_thread(rt.engine.stop_thread, comm.incident_id, comm.stakeholder_id)
        return Status.CANCELLED, {"last_error": reason, "updated_ms": ms_of(now)}
    assert stakeholder is not None
    if undeliverable is not None:
        logger.info("%s suppressed: %s is undeliverable", comm.id, comm.recipient)
        return Status.SUPPRESSED, {"last_error": suppressed_reason(undeliverable), "updated_ms": ms_of(now)}
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
    comm = await in_thread(receive) if reads else receive()
    if stakeholder.channel != "email":
        return await _attempt_channel(rt, comm, stakeholder, now, config)
    try:
        email, rendered = compose_email(
            comm, stakeholder, config, rt.templates, now, rt.settings.secret_key or ""
        )
        if rt.settings.dkim is not None:  # an RSA signature costs milliseconds: off the event loop
            email = await in_thread(sign_email, email, rt.settings.dkim)
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
        functools.partial(rt.pool().send, email),
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
        functools.partial(send_to_channel, delivery, rt.http(), now=now),
        delivery.message_id,
        delivery.message,
    )


def _rate_of(rt: runtime.Runtime, comm: Communication) -> tuple[str, Rate | None]:
    """The send rate ``comm`` goes at: ``smtp`` (AMENDS_SMTP_RATE), or its channel's per host
    (its recipient is ``slack:HOST``, never the webhook's secret address)."""
    if comm.channel == "email":
        return "smtp", rt.settings.smtp_rate
    return comm.recipient, rt.settings.channel_rates.get(comm.channel)


async def _sent(
    rt: runtime.Runtime,
    comm: Communication,
    now: datetime,
    subject: str,
    sending: Callable[[], Awaitable[str]],
    message_id: str,
    message: str,
) -> tuple[Status, dict[str, str | int]]:
    """Send (an email or a channel post) once its rate has a slot; the status and fields its outcome records."""
    attempted: dict[str, str | int] = {"subject": subject, "updated_ms": ms_of(now)}
    bucket, rate = _rate_of(rt, comm)
    if rate is not None:
        asked = rt.clock()  # not the group's start: composing and signing took time since
        slot = await in_thread(rt.rates.reserve, bucket, rate, ms_of(asked))
        if not slot.reserved:  # a backlog: come back when the slot is near, holding nothing meanwhile
            return Status.RETRYING, {
                "last_error": f"waiting for the send rate ({bucket} {rate}): next slot in about "
                f"{slot.wait_ms / 1000:.1f} s",
                NOT_BEFORE: ms_of(asked) + slot.wait_ms,
                PACED: 1,
                **attempted,
            }
        await asyncio.sleep(max(0, slot.wait_ms - (ms_of(rt.clock()) - ms_of(asked))) / 1000)
    try:
        reply = await sending()
    except UndeliverableError as e:
        logger.error("%s failed: %s; %s is marked undeliverable", comm.id, e, comm.recipient)
        await in_thread(rt.bounces.mark, comm.recipient, str(e), BounceSource.SMTP, now)
        return Status.FAILED, {"last_error": f"{e} ({comm.recipient} is now undeliverable)", **attempted}
    except PermanentDeliveryError as e:
        logger.error("%s failed: %s", comm.id, e)
        return Status.FAILED, {"last_error": str(e), **attempted}
    except TransientDeliveryError as e:
        if e.retry_after_s:
            attempted[NOT_BEFORE] = ms_of(now) + int(e.retry_after_s * 1000)
        if (
            e.throttled and rate is not None
        ):  # every worker slows down, and this one comes back after the pause
            pause_ms = int(e.retry_after_s * 1000) if e.retry_after_s else _THROTTLE_PAUSE_MS
            await in_thread(rt.rates.pause, bucket, pause_ms, ms_of(now))
            attempted.update({NOT_BEFORE: ms_of(now) + pause_ms, PACED: 1})
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
