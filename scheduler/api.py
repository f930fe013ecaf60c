"""The HTTP API (``amends serve``): event ingestion, log and incident queries, feedback and
unsubscribe links, opt-outs, the review page, ``/metrics`` and ``/healthz``.

Authentication: posting events and undoing opt-outs need ``Authorization: Bearer
$AMENDS_API_TOKEN``; reading (the log, incidents, opt-outs, ``/metrics``) takes that token
or ``$AMENDS_READ_TOKEN``. The review page ``/`` takes either as a bearer token, or from
its sign-in form: the form POSTs the token, which is exchanged for a cookie (derived from
the token, HttpOnly, SameSite=Strict), so a token never appears in a URL; one given as
``/?token=`` is not used. Feedback and unsubscribe links carry their own HMAC signature
instead; ``/healthz`` is open. Only the demo (``create_app(..., demo=True)``) may run
without a token, and then every endpoint is open, so it must listen on 127.0.0.1 only.

No input gets a 500: bodies are size-capped and decoded strictly, forms and JSON that
cannot be read are answered 4xx with the reason, and responses replace whatever text the
store holds that cannot be encoded. Secrets never appear in responses, and query values
of secret-looking names are redacted from the access log however they are encoded.
"""

from __future__ import annotations

import hmac
import logging
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote

import redis
import uvicorn
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from scheduler import keys
from scheduler._http import SafeJSONResponse, invalid, page, read_capped, read_form
from scheduler._validation import bounded_duration_s
from scheduler.config import ConfigSource
from scheduler.emitting import emit
from scheduler.engine import KINDS
from scheduler.errors import AmendsError, EventError, RedisUnavailableError, SettingsError
from scheduler.events import MAX_DEPTH, MAX_EVENT_BYTES, decode_json, nested_deeper_than
from scheduler.feedback import feedback_for, opt_outs, remove_opt_out, unsubscribed
from scheduler.integration_routes import integration_router
from scheduler.link_routes import link_router
from scheduler.logview import LogFilter, open_promises, promise_report
from scheduler.metrics import metrics_text
from scheduler.processes import broker_for
from scheduler.review_page import render_review, render_sign_in, review_view
from scheduler.settings import Settings
from scheduler.signing import sign
from scheduler.store import STATUSES, Communication, RedisStore, utc_of
from scheduler.text import decode_utf8, scrub
from scheduler.timers import RedisTimerStore

__all__ = ["create_app", "serve", "server_config"]

logger = logging.getLogger(__name__)

REVIEW_COOKIE = "amends_review"
_GENERATE = "generate one: python -c 'import secrets; print(secrets.token_urlsafe(32))'"
_REJECTED_EXCERPT_CHARS = 2000


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment else None


def _incident_json(state: dict[str, Any]) -> dict[str, Any]:
    """The stored incident with its ``*_ms`` times as ISO 8601 ``*_at`` fields."""
    return {
        (k[:-3] + "_at" if k.endswith("_ms") else k): (_iso(utc_of(v)) if k.endswith("_ms") else v)
        for k, v in state.items()
    }


def _names(settings: Settings) -> Callable[[str], str]:
    """Stakeholder id -> its configured name (the id itself when there is no such stakeholder)."""
    try:
        source: ConfigSource | None = ConfigSource(settings.config_path)
    except (AmendsError, OSError):
        source = None

    def name(stakeholder_id: str) -> str:
        try:
            stakeholder = source.current().stakeholder(stakeholder_id) if source else None
        except (AmendsError, OSError):
            stakeholder = None
        return stakeholder.name if stakeholder else stakeholder_id

    return name


def _decoded_event(body: bytes | None) -> tuple[Any, Any]:
    """(the event document, what to keep of it if it is rejected); EventError for a body
    that is too large, not UTF-8 or not JSON, with the kept excerpt on the error."""
    if body is None:
        raise EventError("invalid event", [("", f"the event is larger than {MAX_EVENT_BYTES} bytes")])
    excerpt = body[:_REJECTED_EXCERPT_CHARS].decode("utf-8", errors="replace")
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
    readers = [t for t in (token, settings.read_token) if t]
    client = redis.Redis.from_url(settings.resolved_redis_url())
    store = RedisStore(client)
    timers = RedisTimerStore(client)
    broker = broker_for(settings)
    sessions = {sign(secret, "review-session", t): t for t in readers}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        broker.close()
        client.close()

    app = FastAPI(
        title="amends",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        default_response_class=SafeJSONResponse,
    )

    def matches(given: str | None, expected: str) -> bool:
        return given is not None and hmac.compare_digest(
            given.encode("utf-8", "replace"), expected.encode("utf-8", "replace")
        )

    def bearer(request: Request) -> str | None:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        return value.strip() if scheme.lower() == "bearer" else None

    def can_read(request: Request, *, cookie: bool = False) -> bool:
        if token is None:
            return True
        given = bearer(request)
        session = request.cookies.get(REVIEW_COOKIE) if cookie else None
        return any(matches(given, t) for t in readers) or any(matches(session, s) for s in sessions)

    def require_token(request: Request) -> None:
        """The API token: it may post events and change opt-outs."""
        if token is not None and not matches(bearer(request), token):
            raise HTTPException(
                401, "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"}
            )

    def require_reader(request: Request) -> None:
        """The API token or the read-only token."""
        if not can_read(request):
            raise HTTPException(
                401, "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"}
            )

    @app.exception_handler(RequestValidationError)
    async def bad_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        return invalid((str(e["loc"][-1]) if e["loc"] else "", str(e["msg"])) for e in exc.errors())

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        return SafeJSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(redis.RedisError)
    async def redis_down(_: Request, exc: redis.RedisError) -> JSONResponse:
        logger.warning("Redis did not answer: %s", type(exc).__name__)
        return SafeJSONResponse({"detail": "Redis did not answer; try again shortly"}, status_code=503)

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
        body = await read_capped(request, MAX_EVENT_BYTES)
        kept: Any = None
        try:
            payload, kept = _decoded_event(body)
            event = await run_in_threadpool(emit, payload, broker=broker, now=clock())
        except EventError as e:
            kept = getattr(e, "kept", kept)
            try:
                await run_in_threadpool(store.reject, kept, e.errors, clock(), "api")
            except redis.RedisError:  # the client still learns what is wrong with its event
                logger.warning("a rejected event could not be kept: Redis did not answer")
            return invalid(e.errors)
        except RedisUnavailableError:
            return SafeJSONResponse({"detail": "Redis did not answer; nothing was enqueued"}, status_code=503)
        return SafeJSONResponse({"event_id": event.event_id, "status": "enqueued"}, status_code=202)

    # -- the log and incidents -----------------------------------------------------------

    @app.get("/v1/communications", dependencies=[Depends(require_reader)])
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
                since_at = clock() - timedelta(seconds=bounded_duration_s(since))
            except (ValueError, OverflowError) as e:
                errors.append(("since", str(e)))
        if errors:
            return invalid(errors)
        keep = LogFilter(incident, stakeholder, kind, status)
        found = [c.as_json() for c in store.communications(since_at) if keep.keeps(c)]
        return SafeJSONResponse({"communications": found[-limit:]})

    @app.get("/v1/communications/{comm_id}", dependencies=[Depends(require_reader)])
    def communication(comm_id: str) -> JSONResponse:
        """One communication with the full message as sent, headers included."""
        comm = store.comm(comm_id)
        if comm is None:
            raise HTTPException(404, f"no communication {comm_id!r}")
        return SafeJSONResponse({**comm.as_json(), "message": comm.message})

    @app.get("/v1/incidents", dependencies=[Depends(require_reader)])
    def incidents() -> JSONResponse:
        """Every incident's current state, newest first."""
        states = (store.incident(i) for i in reversed(store.incident_ids()))
        return SafeJSONResponse({"incidents": [_incident_json(s) for s in states if s is not None]})

    @app.get("/v1/incidents/{incident_id}", dependencies=[Depends(require_reader)])
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
        return SafeJSONResponse(
            {"incident": _incident_json(state), "communications": grouped, "feedback": answers}
        )

    # -- opt-outs ------------------------------------------------------------------------

    @app.get("/v1/opt-outs", dependencies=[Depends(require_reader)])
    def list_opt_outs() -> JSONResponse:
        """Every opt-out: from one incident's mail (``stakeholder:incident``) or from all."""
        return SafeJSONResponse({"opt_outs": [o.as_json() for o in opt_outs(client)]})

    @app.delete("/v1/opt-outs/{opt_out}", dependencies=[Depends(require_token)])
    def undo_opt_out(opt_out: str) -> JSONResponse:
        """Undo one opt-out: the stakeholder receives that mail again."""
        if not remove_opt_out(client, opt_out):
            raise HTTPException(404, f"no opt-out {opt_out!r}")
        return SafeJSONResponse({"removed": opt_out})

    # -- the review page and the figures -------------------------------------------------

    @app.get("/", response_class=HTMLResponse)
    def review(request: Request) -> Response:
        """Every incident, newest first, with each stakeholder's timeline and feedback."""
        if any(name.lower() == "token" for name in request.query_params):
            # a token in an address stays in history and logs: it is never used, and leaves
            return RedirectResponse("/", status_code=303)
        if not can_read(request, cookie=True):
            return page(render_sign_in(), 401)
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
        return page(render_review(view, now))

    @app.post("/signin", response_class=HTMLResponse)
    async def sign_in(request: Request) -> Response:
        """The sign-in form: a valid token becomes a cookie, and the browser goes to ``/``."""
        form = await read_form(request)
        given = (form or {}).get("token", "")
        if token is not None and not any(matches(given, t) for t in readers):
            return page(render_sign_in("That token is not right."), 401)
        signed_in = RedirectResponse("/", status_code=303)
        if token is not None:
            signed_in.set_cookie(
                REVIEW_COOKIE,
                sign(secret, "review-session", given),
                httponly=True,
                samesite="strict",
                secure=request.url.scheme == "https",
            )
        return signed_in

    @app.post("/signout", response_class=HTMLResponse)
    def sign_out() -> Response:
        signed_out = RedirectResponse("/", status_code=303)
        signed_out.delete_cookie(REVIEW_COOKIE, httponly=True, samesite="strict")
        return signed_out

    @app.get("/metrics", dependencies=[Depends(require_reader)])
    def metrics() -> PlainTextResponse:
        """Prometheus text format: communications by kind and status, lateness, timers, rejects."""
        comms: list[Communication] = list(store.communications())
        overdue = promise_report([], clock(), open_promises(store)).overdue_unsent
        text = metrics_text(comms, timers.armed_count(), int(client.llen(keys.REJECTED)), overdue)
        return PlainTextResponse(scrub(text), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/healthz")
    def healthz() -> JSONResponse:
        """Redis, and each worker's and scheduler's last heartbeat (``stale`` past 30 s)."""
        try:
            client.ping()
            beats = store.heartbeats()
            unfinished = store.unfinished_count()
        except redis.RedisError:
            return SafeJSONResponse({"redis": "unavailable"}, status_code=503)
        now_ms = int(clock().timestamp() * 1000)
        processes = {
            name: {
                "role": beat.get("role", "?"),
                "last_heartbeat": _iso(utc_of(beat.get("at_ms"))),
                "age_s": round((now_ms - int(beat.get("at_ms", 0))) / 1000, 1),
                "stale": now_ms - int(beat.get("at_ms", 0)) > _STALE_HEARTBEAT_MS,
            }
            for name, beat in sorted(beats.items())
            if now_ms - int(beat.get("at_ms", 0)) < _FORGET_HEARTBEAT_MS
        }
        return SafeJSONResponse({"redis": "ok", "processes": processes, "unfinished_sends": unfinished})

    app.include_router(link_router(client, secret, clock, _names(settings)))
    app.include_router(integration_router(settings, store, broker, clock, require_token))
    return app


_STALE_HEARTBEAT_MS = 30_000
"""Processes beat every 5 s; one silent for 30 s is reported stale."""
_FORGET_HEARTBEAT_MS = 86_400_000
"""A process silent for a day is no longer listed."""

_SECRET_NAME = re.compile(r"(?i)token|sig|secret|passw|key|auth")


def _redacted(target: str) -> str:
    """``target`` (a path with its query) with the value of every secret-looking query
    field replaced; names are decoded first, so ``%74oken`` is seen as ``token``."""
    path, sep, query = target.partition("?")
    if not sep:
        return target
    fields = []
    for field in re.split(r"[&;]", query):
        name, equals, _ = field.partition("=")
        decoded = name
        for _ in range(4):  # %2574oken decodes to %74oken, then to token
            decoded = unquote(decoded.replace("+", " "))
        fields.append(f"{name}=[redacted]" if equals and _SECRET_NAME.search(decoded) else field)
    return f"{path}?{'&'.join(fields)}"


class _RedactSecrets(logging.Filter):
    """Keeps tokens and link signatures in query strings out of the access log."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_redacted(a) if isinstance(a, str) and "?" in a else a for a in record.args)
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
