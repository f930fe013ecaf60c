"""The routes other tools post to: ``/v1/integrations/alertmanager``, ``/grafana``, ``/pagerduty``.

Each turns its payload into events (:mod:`scheduler.core.integrations`) and enqueues them
exactly as ``POST /v1/events`` does. Alertmanager and Grafana authenticate with the API
token as a bearer token; PagerDuty signs its body (``X-PagerDuty-Signature``, checked
against ``AMENDS_PAGERDUTY_SECRET``; unset, the route answers 401). A payload that cannot
be read or mapped gets 422 naming the field, and is kept for ``amends log --rejected``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

import redis
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from scheduler.core.config import ConfigSource, Integrations
from scheduler.core.events import decode_json
from scheduler.core.integrations import Translation, from_alertmanager, from_grafana, from_pagerduty
from scheduler.core.text import decode_utf8
from scheduler.errors import AmendsError, EventError, RedisUnavailableError
from scheduler.mail.signing import pagerduty_signature_valid
from scheduler.service.emitting import already_accepted, emit
from scheduler.service.settings import Settings
from scheduler.web._http import SafeJSONResponse, invalid, read_capped, unanswered
from scheduler.web.auth import require_token
from scheduler.web.deps import Web, WebDep

__all__ = ["MAX_PAYLOAD_BYTES", "mapping_source", "router"]

logger = logging.getLogger(__name__)

MAX_PAYLOAD_BYTES = 1024 * 1024
"""An alert group with many alerts is large; a megabyte holds several hundred."""
_KEPT_WHOLE_BYTES = 64 * 1024
_EXCERPT_CHARS = 2000

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


async def _accept(
    request: Request, web: Web, translate: Translator, via: str, body: bytes | None = None
) -> JSONResponse:
    if body is None:
        body = await read_capped(request, MAX_PAYLOAD_BYTES)
    if body is None:
        errors = [("", f"the payload is larger than {MAX_PAYLOAD_BYTES} bytes")]
        await _keep(web, None, errors, via)
        return invalid(errors)
    excerpt = body[:_EXCERPT_CHARS].decode("utf-8", errors="replace")
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


@router.post("/v1/integrations/pagerduty", status_code=202)
async def pagerduty(request: Request, web: WebDep) -> JSONResponse:
    """A PagerDuty V3 webhook, accepted only with a valid ``X-PagerDuty-Signature``."""
    body = await read_capped(request, MAX_PAYLOAD_BYTES)
    secret = web.settings.pagerduty_secret
    if secret is None:
        return SafeJSONResponse(
            {"detail": "AMENDS_PAGERDUTY_SECRET is not set: PagerDuty webhooks cannot be verified"},
            status_code=401,
        )
    if body is not None and not pagerduty_signature_valid(
        secret, body, request.headers.get("x-pagerduty-signature")
    ):
        return SafeJSONResponse({"detail": "X-PagerDuty-Signature does not sign this body"}, status_code=401)
    return await _accept(request, web, from_pagerduty, "pagerduty", body)
