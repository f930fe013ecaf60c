"""``POST /v1/events``: validate one event, or a JSON list of them, and enqueue it; rejects are kept."""

from __future__ import annotations

import logging
from typing import Any

import redis
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from scheduler.core.events import (
    MAX_DEPTH,
    MAX_EVENT_BYTES,
    Event,
    check_not_ahead,
    decode_json,
    nested_deeper_than,
    parse_event,
    rejected_excerpt,
)
from scheduler.core.text import decode_utf8
from scheduler.errors import EventError, RedisUnavailableError
from scheduler.service.emitting import already_accepted, emit
from scheduler.service.waiting import door_status
from scheduler.web._http import SafeJSONResponse, invalid, read_capped, unanswered
from scheduler.web.auth import require_token
from scheduler.web.deps import Web, WebDep

__all__ = ["MAX_BATCH_EVENTS", "router"]

logger = logging.getLogger(__name__)

MAX_BATCH_EVENTS = 100
"""How many events one ``POST /v1/events`` may carry as a JSON list."""
_MAX_BODY_BYTES = 1024 * 1024

router = APIRouter()


class _Listed(list[Any]):
    """Events that came as a JSON list: their problems are named ``events[i].…``."""


class _AllRejected(EventError):
    """Every invalid document of a request, each already kept as rejected."""


def _decoded_event(body: bytes | None) -> tuple[Any, Any]:
    """(the event document, what to keep of it if it is rejected); EventError for a body
    that is too large, not UTF-8 or not JSON, with the kept excerpt on the error."""
    if body is None or (len(body) > MAX_EVENT_BYTES and not body.lstrip().startswith(b"[")):
        raise EventError("invalid event", [("", f"the event is larger than {MAX_EVENT_BYTES} bytes")])
    excerpt = rejected_excerpt(body)
    try:
        text = decode_utf8(body)
    except ValueError as e:
        error = EventError("invalid event", [("", f"the body {e}")])
        error.kept = excerpt  # type: ignore[attr-defined]
        raise error from None
    try:
        payload = decode_json(text)
    except EventError as e:
        e.kept = excerpt  # type: ignore[attr-defined]
        raise
    # a document too deep to serialise is kept as its text
    return payload, excerpt if nested_deeper_than(payload, MAX_DEPTH) else payload


def _keep_rejected(web: Web, kept: Any, errors: list[tuple[str, str]]) -> None:
    try:
        web.store.reject(kept, errors, web.clock(), "api")
    except redis.RedisError:  # the client still learns what is wrong with its event
        logger.warning("a rejected event could not be kept: Redis did not answer")


def _accept(web: Web, documents: list[Any], kept: Any = None) -> list[dict[str, str]]:
    """Validate every document, then enqueue each one not already applied.

    Every problem of every document is kept and raised at once as EventError (named
    ``events[i].field`` in a list), and nothing is enqueued then. ``kept`` is what to
    keep of a single document that is rejected.
    """
    now = web.clock()
    events: list[Event] = []
    errors: list[tuple[str, str]] = []
    listed = isinstance(documents, _Listed)
    for index, document in enumerate(documents):
        prefix = f"events[{index}]" if listed else ""
        try:
            event = check_not_ahead(parse_event(document), now)  # refuses deep nesting first
            if listed and len(event.to_json().encode()) > MAX_EVENT_BYTES:
                raise EventError("invalid event", [("", f"is larger than {MAX_EVENT_BYTES} bytes")])
            events.append(event)
        except EventError as e:
            deep = nested_deeper_than(document, MAX_DEPTH)
            keep = (kept if not listed else "(nested too deeply to keep)") if deep else document
            _keep_rejected(web, keep if listed else kept, e.errors)
            errors += [(".".join(p for p in (prefix, place) if p), why) for place, why in e.errors]
    if errors:
        raise _AllRejected("invalid events", errors)
    answers, seen = [], set()
    for event in events:
        if event.event_id in seen or already_accepted(web.client, event.event_id, event.incident_id):
            answers.append({"event_id": event.event_id, "status": "duplicate"})
            continue
        waits = door_status(web.client, events, event, web.settings.order_wait_ms)
        emit(event.model_dump(mode="json", by_alias=True, exclude_none=True), broker=web.broker, now=now)
        seen.add(event.event_id)
        answers.append(
            {"event_id": event.event_id, "status": "waiting", "detail": waits}
            if waits
            else {"event_id": event.event_id, "status": "enqueued"}
        )
    return answers


@router.post("/v1/events", status_code=202, dependencies=[Depends(require_token)])
async def post_event(request: Request, web: WebDep) -> JSONResponse:
    """Validate and enqueue one event, or a JSON list of them (all or none); 422 names
    every wrong field at once; rejects are kept. An event id already applied is answered
    ``"status": "duplicate"`` (200 for a single event) and is not enqueued again."""
    body = await read_capped(request, _MAX_BODY_BYTES)
    kept: Any = None
    try:
        payload, kept = _decoded_event(body)
        if isinstance(payload, list):
            if not payload or len(payload) > MAX_BATCH_EVENTS:
                raise EventError("invalid events", [("", f"a list carries 1 to {MAX_BATCH_EVENTS} events")])
            answers = await run_in_threadpool(_accept, web, _Listed(payload))
            return SafeJSONResponse({"events": answers}, status_code=202)
        answer = (await run_in_threadpool(_accept, web, [payload], kept))[0]
    except _AllRejected as e:  # each one already kept
        return invalid(e.errors)
    except EventError as e:
        await run_in_threadpool(_keep_rejected, web, getattr(e, "kept", kept), e.errors)
        return invalid(e.errors)
    except (RedisUnavailableError, redis.RedisError) as e:
        return SafeJSONResponse({"detail": f"{unanswered(e)}; nothing was enqueued"}, status_code=503)
    return SafeJSONResponse(answer, status_code=200 if answer["status"] == "duplicate" else 202)
