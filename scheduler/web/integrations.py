"""The routes other tools post to: ``/v1/integrations/alertmanager``, ``/grafana``, ``/pagerduty``.

Each turns its payload into events (:mod:`scheduler.core.integrations`) and enqueues them
exactly as ``POST /v1/events`` does. Alertmanager and Grafana authenticate with the API
token as a bearer token; PagerDuty signs its body (``X-PagerDuty-Signature``, checked
against ``AMENDS_PAGERDUTY_SECRET``; unset, the route answers 401). A payload that cannot
be read or mapped gets 422 naming the field, and is kept for ``amends log --rejected``.

Each route decides before it reads more: the token (or PagerDuty's secret and signature
header) is checked before the body is read, the body is read once, and a body over
:data:`MAX_PAYLOAD_BYTES` is answered 413 at once, keeping nothing. A PagerDuty delivery
whose ``event.occurred_at`` is more than 5 minutes from now is refused as a replay, and
each delivery's ``event.id`` is remembered for the retention window: a repeat is answered
``duplicate`` and changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import redis
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from scheduler.core.config import ConfigSource, Integrations
from scheduler.core.events import decode_json, rejected_excerpt
from scheduler.core.integrations import Translation, from_alertmanager, from_grafana, from_pagerduty
from scheduler.core.text import decode_utf8
from scheduler.errors import AmendsError, EventError, RedisUnavailableError
from scheduler.mail.signing import pagerduty_signature_valid
from scheduler.service.emitting import already_accepted, emit
from scheduler.service.settings import Settings
from scheduler.storage import keys
from scheduler.web._http import SafeJSONResponse, invalid, read_capped, unanswered
from scheduler.web.auth import require_token
from scheduler.web.deps import Web, WebDep

__all__ = ["MAX_PAYLOAD_BYTES", "REPLAY_WINDOW", "delivery_of", "mapping_source", "router"]

logger = logging.getLogger(__name__)

MAX_PAYLOAD_BYTES = 1024 * 1024
"""An alert group with many alerts is large; a megabyte holds several hundred."""
REPLAY_WINDOW = timedelta(minutes=5)
"""How far a signed PagerDuty delivery's ``occurred_at`` may be from now, either way."""
_KEPT_WHOLE_BYTES = 64 * 1024

Translator = Callable[[Any, Integrations, datetime], Translation]


def mapping_source(settings: Settings) -> Callable[[], Integrations]:
    """The ``integrations:`` section in force; the defaults when the file cannot be read."""
    try:
        source: ConfigSource | None = ConfigSource(settings.config_path)
    except (AmendsError, OSError) as e:
        logger.warning("integrations use the default mapping: %s", str(e).splitlines()[0])
        source = None

    def current() -> Integrations:
        return source.current().integrations if source else Integrations()

    return current


router = APIRouter()


async def _keep(web: Web, kept: Any, errors: list[tuple[str, str]], via: str) -> None:
    try:
        await run_in_threadpool(web.store.reject, kept, errors, web.clock(), via)
    except redis.RedisError:  # the sender still learns what is wrong with its payload
        logger.warning("a rejected %s payload could not be kept: Redis did not answer", via)


def _too_large() -> JSONResponse:
    return SafeJSONResponse(
        {"detail": f"the payload is larger than {MAX_PAYLOAD_BYTES} bytes; nothing was read further"},
        status_code=413,
    )


async def _accept(request: Request, web: Web, translate: Translator, via: str) -> JSONResponse:
    """The body, read once within the cap (413 past it, keeping nothing), as events enqueued."""
    body = await read_capped(request, MAX_PAYLOAD_BYTES)
    if body is None:
        return _too_large()
    return await _enqueue(web, body, translate, via)


async def _enqueue(web: Web, body: bytes, translate: Translator, via: str) -> JSONResponse:
    excerpt = rejected_excerpt(body)
    kept: Any = excerpt
    try:
        try:
            document = decode_json(decode_utf8(body))
        except ValueError as e:
            raise EventError("invalid payload", [("", f"the body {e}")]) from None
        if len(body) <= _KEPT_WHOLE_BYTES:
            kept = document
        now = web.clock()
        translation = translate(document, web.integrations(), now)
        accepted = []
        for event in translation.events:
            # A tool's repeat of what was already applied is answered as such, not enqueued.
            if await run_in_threadpool(
                already_accepted, web.client, str(event["event_id"]), str(event["incident_id"])
            ):
                accepted.append(
                    {
                        "event_id": event["event_id"],
                        "incident_id": event["incident_id"],
                        "type": event["type"],
                        "status": "duplicate",
                    }
                )
                continue
            parsed = await run_in_threadpool(emit, event, broker=web.broker, now=now)
            accepted.append(
                {
                    "event_id": parsed.event_id,
                    "incident_id": parsed.incident_id,
                    "type": parsed.type,
                    "status": "enqueued",
                }
            )
    except EventError as e:
        logger.warning("%s payload rejected: %s", via, e)
        await _keep(web, kept, e.errors, via)
        return invalid(e.errors)
    except RedisUnavailableError as e:
        return SafeJSONResponse({"detail": f"{unanswered(e)}; nothing was enqueued"}, status_code=503)
    if translation.ignored:
        return SafeJSONResponse({"status": "ignored", "reason": translation.ignored}, status_code=200)
    if accepted and all(a["status"] == "duplicate" for a in accepted):
        return SafeJSONResponse({"status": "duplicate", "events": accepted}, status_code=200)
    return SafeJSONResponse({"status": "enqueued", "events": accepted}, status_code=202)


@router.post("/v1/integrations/alertmanager", status_code=202, dependencies=[Depends(require_token)])
async def alertmanager(request: Request, web: WebDep) -> JSONResponse:
    """An Alertmanager webhook notification (version 4): the group is one incident."""
    return await _accept(request, web, from_alertmanager, "alertmanager")


@router.post("/v1/integrations/grafana", status_code=202, dependencies=[Depends(require_token)])
async def grafana(request: Request, web: WebDep) -> JSONResponse:
    """A Grafana Alerting webhook contact point notification: the group is one incident."""
    return await _accept(request, web, from_grafana, "grafana")


def delivery_of(body: bytes, now: datetime) -> tuple[str | None, str | None]:
    """A PagerDuty delivery's ``event.id`` (None when it has none to read), and why it is
    refused as a replay: its ``event.occurred_at`` is more than 5 minutes from ``now``
    (None when it is within them, or carries no time to judge by)."""
    try:
        document = decode_json(body)
    except EventError:  # _enqueue names what is wrong with it
        return None, None
    event = document.get("event") if isinstance(document, dict) else None
    if not isinstance(event, dict):
        return None, None
    delivery = event.get("id") if isinstance(event.get("id"), str) and event["id"] else None
    try:
        moment = datetime.fromisoformat(str(event.get("occurred_at")))
    except ValueError:
        return delivery, None
    if moment.tzinfo is None or abs(now - moment) <= REPLAY_WINDOW:
        return delivery, None
    return (
        delivery,
        f"event.occurred_at {event['occurred_at']} is more than 5 minutes from now: a replay is refused",
    )


def _taken_before(web: Web, seen: str) -> bool:
    return bool(web.client.exists(seen))


def _kept_for_s(web: Web) -> int:
    """How long a delivery id is remembered: the retention window in force (at least a day)."""
    current = web.config()
    return max(int(current.retention) if current else 0, 86_400)


@router.post("/v1/integrations/pagerduty", status_code=202)
async def pagerduty(request: Request, web: WebDep) -> JSONResponse:
    """A PagerDuty V3 webhook, accepted only with a valid ``X-PagerDuty-Signature`` over a
    fresh delivery not taken before."""
    secret = web.settings.pagerduty_secret
    if secret is None:
        return SafeJSONResponse(
            {"detail": "AMENDS_PAGERDUTY_SECRET is not set: PagerDuty webhooks cannot be verified"},
            status_code=401,
        )
    signature = request.headers.get("x-pagerduty-signature")
    if not signature:
        return SafeJSONResponse({"detail": "X-PagerDuty-Signature is missing"}, status_code=401)
    body = await read_capped(request, MAX_PAYLOAD_BYTES)
    if body is None:
        return _too_large()
    if not pagerduty_signature_valid(secret, body, signature):
        return SafeJSONResponse({"detail": "X-PagerDuty-Signature does not sign this body"}, status_code=401)
    delivery, stale = delivery_of(body, web.clock())
    if stale:
        return SafeJSONResponse({"detail": stale}, status_code=401)
    seen = keys.pagerduty_delivery(delivery) if delivery else None
    taken_before = await run_in_threadpool(_taken_before, web, seen) if seen else False
    if taken_before:
        return SafeJSONResponse({"status": "duplicate", "delivery": delivery}, status_code=200)
    answer = await _enqueue(web, body, from_pagerduty, "pagerduty")
    if seen and answer.status_code < 300:
        # Remembered only once taken, so a delivery refused or cut short by an outage is
        # retried, not answered as a duplicate; two racing copies share the event's id.
        try:
            await run_in_threadpool(web.client.set, seen, "1", ex=_kept_for_s(web))
        except redis.RedisError:  # taken all the same; the event's own id still dedupes a repeat
            logger.warning("PagerDuty delivery %s taken but not remembered: Redis did not answer", delivery)
    return answer
