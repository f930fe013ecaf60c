"""The HTTP API (``amends serve``): event ingestion, log and incident queries, feedback and
unsubscribe links, the review page, ``/metrics`` and ``/healthz``.

Authentication: ``/v1/*`` and ``/metrics`` need ``Authorization: Bearer $AMENDS_API_TOKEN``.
The review page ``/`` accepts the same header, or ``/?token=...`` so that a browser can
open it: a valid token in the query is exchanged for a cookie (derived from the token,
HttpOnly, SameSite=Strict) and the browser is sent to ``/``, so the token does not stay in
the address bar or the history. Feedback and unsubscribe links carry their own HMAC
signature instead; ``/healthz`` is open. Only the demo (``create_app(..., demo=True)``) may
run without a token, and then every endpoint is open, so it must listen on 127.0.0.1 only.
Secrets never appear in responses, and ``token=`` and ``sig=`` values are redacted from
the access log.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, quote

import redis
import uvicorn
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from scheduler import keys
from scheduler.durations import parse_duration
from scheduler.emitting import emit
from scheduler.engine import KINDS
from scheduler.errors import EventError, RedisUnavailableError, SettingsError
from scheduler.events import MAX_EVENT_BYTES
from scheduler.feedback import (
    MAX_COMMENT_CHARS,
    RATINGS,
    FeedbackError,
    feedback_for,
    record_comment,
    record_rating,
    record_unsubscribe,
    unsubscribed,
)
from scheduler.logview import LogFilter, open_promises, promise_report
from scheduler.metrics import metrics_text
from scheduler.processes import broker_for
from scheduler.review_page import (
    render_feedback_page,
    render_notice,
    render_review,
    review_view,
)
from scheduler.settings import Settings
from scheduler.signing import feedback_links, sign, verify
from scheduler.store import STATUSES, Communication, RedisStore, utc_of
from scheduler.timers import RedisTimerStore

__all__ = ["create_app", "serve", "server_config"]

logger = logging.getLogger(__name__)

REVIEW_COOKIE = "amends_review"
MAX_FORM_BYTES = 64 * 1024
_GENERATE = "generate one: python -c 'import secrets; print(secrets.token_urlsafe(32))'"
_HTML_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'",
    "Cache-Control": "no-store",
}


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment else None


def _invalid(errors: Iterable[tuple[str, str]]) -> JSONResponse:
    return JSONResponse({"errors": [{"field": f, "reason": r} for f, r in errors]}, status_code=422)


def _incident_json(state: dict[str, Any]) -> dict[str, Any]:
    """The stored incident with its ``*_ms`` times as ISO 8601 ``*_at`` fields."""
    return {
        (k[:-3] + "_at" if k.endswith("_ms") else k): (_iso(utc_of(v)) if k.endswith("_ms") else v)
        for k, v in state.items()
    }


def _page(html: str, status_code: int = 200) -> HTMLResponse:
    return HTMLResponse(html, status_code=status_code, headers=_HTML_HEADERS)


def _forbidden() -> HTMLResponse:
    return _page(
        render_notice(
            "This link does not work",
            "The link is incomplete or was altered. Please use the link exactly as it came in our email.",
            error=True,
        ),
        403,
    )


async def _read_capped(request: Request, limit: int) -> bytes | None:
    """The request body, or None when it is larger than ``limit`` bytes (read no further)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def create_app(settings: Settings, *, demo: bool = False, clock: Callable[[], datetime] = _utcnow) -> FastAPI:
    """The API on ``settings``' Redis; SettingsError names every missing setting at once.

    ``AMENDS_API_TOKEN`` is required unless ``demo``; ``AMENDS_SECRET_KEY`` always, since
    it verifies feedback and unsubscribe links. ``clock`` is read once per request.
    """
    missing = []
    if not settings.api_token and not demo:
        missing.append(f"AMENDS_API_TOKEN is not set; API clients send it as a bearer token; {_GENERATE}")
    if not settings.secret_key:
        missing.append(
            f"AMENDS_SECRET_KEY is not set; it verifies feedback and unsubscribe links and must be the "
            f"workers' key; {_GENERATE}"
        )
    if missing:
        raise SettingsError("\n  ".join(["cannot start the HTTP API:", *missing]))
    secret: str = settings.secret_key or ""
    token = settings.api_token
    client = redis.Redis.from_url(settings.resolved_redis_url())
    store = RedisStore(client)
    timers = RedisTimerStore(client)
    broker = broker_for(settings)
    review_session = sign(secret, "review-session", token) if token else ""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        broker.close()
        client.close()

    app = FastAPI(title="amends", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    def matches(given: str | None, expected: str) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), expected.encode())

    def bearer(request: Request) -> str | None:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        return value.strip() if scheme.lower() == "bearer" else None

    def require_token(request: Request) -> None:
        if token is not None and not matches(bearer(request), token):
            raise HTTPException(
                401, "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"}
            )

    def signed(signature: str, *parts: str) -> bool:
        return verify(secret, signature, *parts)

    @app.exception_handler(RequestValidationError)
    async def bad_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _invalid((str(e["loc"][-1]), str(e["msg"])) for e in exc.errors())

    @app.exception_handler(redis.RedisError)
    async def redis_down(_: Request, exc: redis.RedisError) -> JSONResponse:
        logger.warning("Redis did not answer: %s", type(exc).__name__)
        return JSONResponse({"detail": "Redis did not answer; try again shortly"}, status_code=503)

    @app.middleware("http")
    async def common_headers(request: Request, call_next: Callable[[Request], Any]) -> Response:
        response: Response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        return response

    # -- events --------------------------------------------------------------------------

    @app.post("/v1/events", status_code=202, dependencies=[Depends(require_token)])
    async def post_event(request: Request) -> JSONResponse:
        """Validate and enqueue one event; 422 names each wrong field; rejects are kept."""
        body = await _read_capped(request, MAX_EVENT_BYTES)
        payload: Any = None
        try:
            if body is None:
                raise EventError("invalid event", [("", f"the event is larger than {MAX_EVENT_BYTES} bytes")])
            try:
                payload = json.loads(body)
            except ValueError as e:
                payload = body[:2000].decode("utf-8", errors="replace")
                raise EventError("invalid event", [("", f"not valid JSON: {e}")]) from None
            event = await run_in_threadpool(emit, payload, broker=broker, now=clock())
        except EventError as e:
            try:
                await run_in_threadpool(store.reject, payload, e.errors, clock(), "api")
            except redis.RedisError:  # the client still learns what is wrong with its event
                logging.getLogger(__name__).warning(
                    "a rejected event could not be kept: Redis did not answer"
                )
            return _invalid(e.errors)
        except RedisUnavailableError:
            return JSONResponse({"detail": "Redis did not answer; nothing was enqueued"}, status_code=503)
        return JSONResponse({"event_id": event.event_id, "status": "enqueued"}, status_code=202)

    # -- the log and incidents -----------------------------------------------------------

    @app.get("/v1/communications", dependencies=[Depends(require_token)])
    def communications(
        incident: str | None = None,
        stakeholder: str | None = None,
        kind: str | None = None,
        status: str | None = None,
        since: str | None = None,
        limit: int = Query(1000, ge=1, le=10_000),
    ) -> JSONResponse:
        """The log, oldest first, like ``amends log --json``; ``limit`` keeps the newest."""
        errors = []
        if kind is not None and kind not in KINDS:
            errors.append(("kind", f"must be one of {', '.join(KINDS)}"))
        if status is not None and status not in STATUSES:
            errors.append(("status", f"must be one of {', '.join(STATUSES)}"))
        since_at = None
        if since is not None:
            try:
                since_at = clock() - timedelta(seconds=parse_duration(since))
            except ValueError as e:
                errors.append(("since", str(e)))
        if errors:
            return _invalid(errors)
        keep = LogFilter(incident, stakeholder, kind, status)
        found = [c.as_json() for c in store.communications(since_at) if keep.keeps(c)]
        return JSONResponse({"communications": found[-limit:]})

    @app.get("/v1/communications/{comm_id}", dependencies=[Depends(require_token)])
    def communication(comm_id: str) -> JSONResponse:
        """One communication with the full message as sent, headers included."""
        comm = store.comm(comm_id)
        if comm is None:
            raise HTTPException(404, f"no communication {comm_id!r}")
        return JSONResponse({**comm.as_json(), "message": comm.message})

    @app.get("/v1/incidents", dependencies=[Depends(require_token)])
    def incidents() -> JSONResponse:
        """Every incident's current state, newest first."""
        states = (store.incident(i) for i in reversed(store.incident_ids()))
        return JSONResponse({"incidents": [_incident_json(s) for s in states if s is not None]})

    @app.get("/v1/incidents/{incident_id}", dependencies=[Depends(require_token)])
    def incident(incident_id: str) -> JSONResponse:
        """One incident: its state, its communications by stakeholder, and the feedback received."""
        state = store.incident(incident_id)
        if state is None:
            raise HTTPException(404, f"no incident {incident_id!r}")
        grouped: dict[str, list[dict[str, Any]]] = {sid: [] for sid in state.get("stakeholders", [])}
        for comm in store.communications():
            if comm.incident_id == incident_id:
                grouped.setdefault(comm.stakeholder_id, []).append(comm.as_json())
        answers = {sid: f.as_json() for sid, f in feedback_for(client, incident_id).items()}
        return JSONResponse(
            {"incident": _incident_json(state), "communications": grouped, "feedback": answers}
        )

    # -- the review page and the figures -------------------------------------------------

    @app.get("/", response_class=HTMLResponse)
    def review(request: Request, token_param: str | None = Query(None, alias="token")) -> Response:
        """Every incident, newest first, with each stakeholder's timeline and feedback."""
        if token is not None and not (
            matches(bearer(request), token) or matches(request.cookies.get(REVIEW_COOKIE), review_session)
        ):
            if not matches(token_param, token):
                return _page(
                    render_notice(
                        "Sign in",
                        "Open this page as /?token=… with the API token, or send "
                        "Authorization: Bearer with it.",
                        error=True,
                    ),
                    401,
                )
            to_clean_url = RedirectResponse("/", status_code=303)
            to_clean_url.set_cookie(
                REVIEW_COOKIE,
                review_session,
                httponly=True,
                samesite="strict",
                secure=request.url.scheme == "https",
            )
            return to_clean_url
        now = clock()
        ids = list(reversed(store.incident_ids()))
        states = [s for s in (store.incident(i) for i in ids) if s is not None]
        view = review_view(
            states,
            store.communications(),
            {i: feedback_for(client, i) for i in ids},
            unsubscribed(client),
            now,
        )
        return _page(render_review(view, now))

    @app.get("/metrics", dependencies=[Depends(require_token)])
    def metrics() -> PlainTextResponse:
        """Prometheus text format: communications by kind and status, lateness, timers, rejects."""
        comms: list[Communication] = list(store.communications())
        overdue = promise_report([], clock(), open_promises(store)).overdue_unsent
        text = metrics_text(comms, timers.armed_count(), int(client.llen(keys.REJECTED)), overdue)
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/healthz")
    def healthz() -> JSONResponse:
        try:
            client.ping()
        except redis.RedisError:
            return JSONResponse({"redis": "unavailable"}, status_code=503)
        return JSONResponse({"redis": "ok"})

    # -- feedback and unsubscribe links --------------------------------------------------

    def feedback_page(
        incident_id: str, stakeholder_id: str, status_code: int = 200, **shown: Any
    ) -> HTMLResponse:
        state = store.incident(incident_id)
        html = render_feedback_page(
            incident_id=incident_id,
            title=str(state.get("title", "")) if state else "",
            links=feedback_links("", secret, incident_id, stakeholder_id),
            action=f"/feedback/{quote(incident_id, safe='')}/{quote(stakeholder_id, safe='')}",
            comment_sig=sign(secret, "feedback-comment", incident_id, stakeholder_id),
            **shown,
        )
        return _page(html, status_code)

    @app.get("/feedback/{incident_id}/{stakeholder_id}", response_class=HTMLResponse)
    def feedback(incident_id: str, stakeholder_id: str, sig: str = "", rating: str | None = None) -> Response:
        """A signed rating link records the rating (the latest wins); the page link shows the form."""
        if rating is None:
            if not signed(sig, "feedback-page", incident_id, stakeholder_id):
                return _forbidden()
            return feedback_page(incident_id, stakeholder_id)
        if not signed(sig, "feedback", incident_id, stakeholder_id, rating):
            return _forbidden()
        value = int(rating) if rating.isascii() and rating.isdigit() else 0
        if value not in RATINGS:
            return _page(render_notice("Not a rating", "A rating is 1 to 5.", error=True), 422)
        record_rating(client, incident_id, stakeholder_id, value, clock())
        return feedback_page(
            incident_id,
            stakeholder_id,
            rating=value,
            message=f"Thank you! You rated our messages {value} of 5.",
        )

    @app.post("/feedback/{incident_id}/{stakeholder_id}", response_class=HTMLResponse)
    async def feedback_comment(request: Request, incident_id: str, stakeholder_id: str) -> Response:
        """The comment form: signed for this incident and stakeholder; at most 4000 characters."""
        body = await _read_capped(request, MAX_FORM_BYTES)
        if body is None:
            return _page(render_notice("Not saved", "The comment is too long.", error=True), 422)
        form = parse_qs(body.decode("utf-8", errors="replace"), max_num_fields=10)
        sig = (form.get("sig") or [""])[-1]
        if not signed(sig, "feedback-comment", incident_id, stakeholder_id):
            return _forbidden()
        comment = (form.get("comment") or [""])[-1]
        return await run_in_threadpool(keep_comment, incident_id, stakeholder_id, comment)

    def keep_comment(incident_id: str, stakeholder_id: str, comment: str) -> HTMLResponse:
        try:
            saved = record_comment(client, incident_id, stakeholder_id, comment, clock())
        except FeedbackError as e:
            shown = comment[:MAX_COMMENT_CHARS]
            return feedback_page(incident_id, stakeholder_id, 422, error=f"Not saved: {e}.", comment=shown)
        thanks = "Thank you! Your comment was recorded."
        return feedback_page(
            incident_id, stakeholder_id, rating=saved.rating, comment=saved.comment, message=thanks
        )

    @app.get("/unsubscribe/{stakeholder_id}", response_class=HTMLResponse)
    def confirm_unsubscribe(request: Request, stakeholder_id: str, sig: str = "") -> Response:
        """Opening the link only asks: mail scanners fetch links, and must not unsubscribe anyone."""
        if not signed(sig, "unsubscribe", stakeholder_id):
            return _forbidden()
        return _page(
            render_notice(
                "Unsubscribe?",
                f"{stakeholder_id} will receive no more incident messages.",
                button="Unsubscribe",
                action=str(request.url.path) + "?" + str(request.url.query),
            )
        )

    @app.post("/unsubscribe/{stakeholder_id}", response_class=HTMLResponse)
    def unsubscribe(stakeholder_id: str, sig: str = "") -> Response:
        """Records the opt-out: the page's button, or RFC 8058's one-click POST from a mail client."""
        if not signed(sig, "unsubscribe", stakeholder_id):
            return _forbidden()
        record_unsubscribe(client, stakeholder_id, clock())
        return _page(
            render_notice("Unsubscribed", f"{stakeholder_id} will receive no more incident messages.")
        )

    return app


class _RedactSecrets(logging.Filter):
    """Keeps ``token=`` and ``sig=`` query values out of the access log."""

    _pattern = re.compile(r"(?i)\b(token|sig)=[^&\s\"]*")

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                self._pattern.sub(r"\1=[redacted]", a) if isinstance(a, str) else a for a in record.args
            )
        return True


def server_config(app: FastAPI, host: str, port: int) -> uvicorn.Config:
    """uvicorn's configuration for the API, with link signatures and tokens kept out of its log."""
    config = uvicorn.Config(app, host=host, port=port, server_header=False, log_level="info")
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, _RedactSecrets) for f in access.filters):
        access.addFilter(_RedactSecrets())
    return config


def serve(settings: Settings, host: str, port: int) -> None:
    """Run the API until interrupted; SettingsError when a required setting is missing."""
    uvicorn.Server(server_config(create_app(settings), host, port)).run()
