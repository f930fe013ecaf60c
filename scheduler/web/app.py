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
from urllib.parse import quote, unquote

import redis
import uvicorn
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from scheduler.cli.logview import LogFilter
from scheduler.core._validation import bounded_duration_s
from scheduler.core.config import Config, ConfigSource
from scheduler.core.events import (
    MAX_DEPTH,
    MAX_EVENT_BYTES,
    Event,
    check_not_ahead,
    decode_json,
    nested_deeper_than,
    parse_event,
)
from scheduler.core.model import Communication, Incident, Kind, Status, iso_z, utc_of
from scheduler.core.promises import ON_TIME_GRACE_S, open_promises, promise_report
from scheduler.core.text import decode_utf8, scrub
from scheduler.errors import AmendsError, EventError, RedisUnavailableError, SettingsError
from scheduler.mail.composed import composed_text
from scheduler.mail.signing import sign
from scheduler.service.emitting import already_accepted, emit
from scheduler.service.processes import broker_for
from scheduler.service.settings import Settings
from scheduler.storage import keys
from scheduler.storage.port import Cursor, format_cursor, parse_cursor
from scheduler.storage.redis_store import RedisStore
from scheduler.storage.timers import RedisTimerStore
from scheduler.web._http import HTML_HEADERS, SafeJSONResponse, invalid, page, read_capped, read_form
from scheduler.web.integrations import integration_router
from scheduler.web.links import link_router
from scheduler.web.metrics import metrics_text
from scheduler.web.review_page import promise_words, render_review, render_sign_in, review_view

__all__ = ["create_app", "serve", "server_config"]

logger = logging.getLogger(__name__)

REVIEW_COOKIE = "amends_review"
_GENERATE = "generate one: python -c 'import secrets; print(secrets.token_urlsafe(32))'"
_REJECTED_EXCERPT_CHARS = 2000


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _incident_json(incident: Incident) -> dict[str, Any]:
    """The incident with its ``*_ms`` times as ISO 8601 ``*_at`` fields."""
    return {
        (k[:-3] + "_at" if k.endswith("_ms") else k): (iso_z(utc_of(v)) if k.endswith("_ms") else v)
        for k, v in incident.to_json().items()
    }


def _config_reader(settings: Settings) -> Callable[[], Config | None]:
    """The configuration in force, or None when there is none to read (the API runs without)."""
    try:
        source: ConfigSource | None = ConfigSource(settings.config_path)
    except (AmendsError, OSError):
        source = None

    def current() -> Config | None:
        try:
            return source.current() if source else None
        except (AmendsError, OSError):
            return None

    return current


def _names(config: Callable[[], Config | None]) -> Callable[[str], str]:
    """Stakeholder id -> its configured name (the id itself when there is no such stakeholder)."""

    def name(stakeholder_id: str) -> str:
        current = config()
        stakeholder = current.stakeholder(stakeholder_id) if current else None
        return stakeholder.name if stakeholder else stakeholder_id

    return name


def _grace_s(config: Config | None) -> float:
    return float(config.kept_within) if config else ON_TIME_GRACE_S


def _stakeholder_ids(states: list[Incident]) -> set[str]:
    return {sid for state in states for sid in state.stakeholders}


def _pending(
    config: Config | None, store: RedisStore, states: list[Incident], now: datetime
) -> dict[tuple[str, str], tuple[datetime, str]]:
    """Each thread's promise not composed yet, with its words for the review page."""
    found: dict[tuple[str, str], tuple[datetime, str]] = {}
    severity = {s.id: s.severity for s in states}
    for promise in open_promises(store):
        stakeholder = config.stakeholder(promise.stakeholder_id) if config else None
        tz = config.timezone_of(stakeholder) if config and stakeholder else "UTC"
        quiet = config.quiet_hours_of(stakeholder) if config and stakeholder else None
        if (
            config
            and stakeholder
            and config.overrides_quiet_hours(stakeholder, severity.get(promise.incident_id, ""))
        ):
            quiet = None
        words = promise_words(
            promise.kind,
            promise.due,
            now,
            timezone=tz,
            quiet_hours=quiet,
            business_hours=config.business_hours if config else None,
            grace_s=_grace_s(config),
        )
        found[(promise.incident_id, promise.stakeholder_id)] = (promise.due, words)
    return found


MAX_BATCH_EVENTS = 100
"""How many events one ``POST /v1/events`` may carry as a JSON list."""
_MAX_BODY_BYTES = 1024 * 1024


class _Listed(list[Any]):
    """Events that came as a JSON list: their problems are named ``events[i].…``."""


class _AllRejected(EventError):
    """Every invalid document of a request, each already kept as rejected."""


def _decoded_event(body: bytes | None) -> tuple[Any, Any]:
    """(the event document, what to keep of it if it is rejected); EventError for a body
    that is too large, not UTF-8 or not JSON, with the kept excerpt on the error."""
    if body is None or (len(body) > MAX_EVENT_BYTES and not body.lstrip().startswith(b"[")):
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
    config = _config_reader(settings)

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

    def keep_rejected(kept: Any, errors: list[tuple[str, str]]) -> None:
        try:
            store.reject(kept, errors, clock(), "api")
        except redis.RedisError:  # the client still learns what is wrong with its event
            logger.warning("a rejected event could not be kept: Redis did not answer")

    def accept(documents: list[Any], kept: Any = None) -> list[dict[str, str]]:
        """Validate every document, then enqueue each one not already applied.

        Every problem of every document is kept and raised at once as EventError (named
        ``events[i].field`` in a list), and nothing is enqueued then. ``kept`` is what to
        keep of a single document that is rejected.
        """
        now = clock()
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
                keep_rejected(keep if listed else kept, e.errors)
                errors += [(".".join(p for p in (prefix, place) if p), why) for place, why in e.errors]
        if errors:
            raise _AllRejected("invalid events", errors)
        answers, seen = [], set()
        for event in events:
            if event.event_id in seen or already_accepted(client, event.event_id, event.incident_id):
                answers.append({"event_id": event.event_id, "status": "duplicate"})
                continue
            emit(event.model_dump(mode="json", by_alias=True, exclude_none=True), broker=broker, now=now)
            seen.add(event.event_id)
            answers.append({"event_id": event.event_id, "status": "enqueued"})
        return answers

    @app.post("/v1/events", status_code=202, dependencies=[Depends(require_token)])
    async def post_event(request: Request) -> JSONResponse:
        """Validate and enqueue one event, or a JSON list of them (all or none); 422 names
        every wrong field at once; rejects are kept. An event id already applied is answered
        ``"status": "duplicate"`` (200 for a single event) and is not enqueued again."""
        body = await read_capped(request, _MAX_BODY_BYTES)
        kept: Any = None
        try:
            payload, kept = _decoded_event(body)
            if isinstance(payload, list):
                if not payload or len(payload) > MAX_BATCH_EVENTS:
                    raise EventError(
                        "invalid events", [("", f"a list carries 1 to {MAX_BATCH_EVENTS} events")]
                    )
                answers = await run_in_threadpool(accept, _Listed(payload))
                return SafeJSONResponse({"events": answers}, status_code=202)
            answer = (await run_in_threadpool(accept, [payload], kept))[0]
        except _AllRejected as e:  # each one already kept
            return invalid(e.errors)
        except EventError as e:
            await run_in_threadpool(keep_rejected, getattr(e, "kept", kept), e.errors)
            return invalid(e.errors)
        except (RedisUnavailableError, redis.RedisError):
            return SafeJSONResponse({"detail": "Redis did not answer; nothing was enqueued"}, status_code=503)
        return SafeJSONResponse(answer, status_code=202 if answer["status"] == "enqueued" else 200)

    # -- the log and incidents -----------------------------------------------------------

    @app.get("/v1/communications", dependencies=[Depends(require_reader)])
    def communications(
        incident: str | None = None,
        stakeholder: str | None = None,
        kind: str | None = None,
        status: str | None = None,
        since: str | None = None,
        limit: int = Query(100, ge=1, le=1_000),
        cursor: str | None = None,
    ) -> JSONResponse:
        """The log, newest first, one page of ``limit``; ``next_cursor`` (null on the last
        page) is passed back as ``cursor`` for the next one. Fields as ``amends log --json``."""
        errors = []
        after: Cursor | None = None
        if cursor is not None:
            try:
                after = parse_cursor(cursor)
            except ValueError as e:
                errors.append(("cursor", str(e)))
        if kind is not None and kind not in set(Kind):
            errors.append(("kind", f"must be one of {', '.join(Kind)}"))
        if status is not None and status not in set(Status):
            errors.append(("status", f"must be one of {', '.join(Status)}"))
        since_at = None
        if since is not None:
            try:
                since_at = clock() - timedelta(seconds=bounded_duration_s(since))
            except (ValueError, OverflowError) as e:
                errors.append(("since", str(e)))
        if errors:
            return invalid(errors)
        keep = LogFilter(incident, stakeholder, kind, status)
        found, following = store.page(keep.keeps, limit, after, since_at)
        return SafeJSONResponse(
            {
                "communications": [c.as_json() for c in found],
                "next_cursor": format_cursor(following) if following else None,
            }
        )

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
        grouped: dict[str, list[dict[str, Any]]] = {sid: [] for sid in state.stakeholders}
        for comm in store.communications():
            if comm.incident_id == incident_id:
                grouped.setdefault(comm.stakeholder_id, []).append(comm.as_json())
        answers = {sid: f.as_json() for sid, f in store.feedback_for(incident_id).items()}
        return SafeJSONResponse(
            {"incident": _incident_json(state), "communications": grouped, "feedback": answers}
        )

    # -- opt-outs ------------------------------------------------------------------------

    @app.get("/v1/opt-outs", dependencies=[Depends(require_reader)])
    def list_opt_outs() -> JSONResponse:
        """Every opt-out: from one incident's mail (``stakeholder:incident``) or from all."""
        return SafeJSONResponse({"opt_outs": [o.as_json() for o in store.opt_outs()]})

    @app.delete("/v1/opt-outs/{opt_out}", dependencies=[Depends(require_token)])
    def undo_opt_out(opt_out: str) -> JSONResponse:
        """Undo one opt-out: the stakeholder receives that mail again."""
        if not store.remove_opt_out(opt_out):
            raise HTTPException(404, f"no opt-out {opt_out!r}")
        return SafeJSONResponse({"removed": opt_out})

    # -- the review page and the figures -------------------------------------------------

    @app.get("/", response_class=HTMLResponse)
    def review(request: Request, before: str | None = None) -> Response:
        """The incidents, newest first, 20 a page, each with every stakeholder's timeline and
        feedback; ``?before=`` (the page's "older incidents" link) continues after a page."""
        if any(name.lower() == "token" for name in request.query_params):
            # a token in an address stays in history and logs: it is never used, and leaves
            return RedirectResponse("/", status_code=303)
        if not can_read(request, cookie=True):
            return page(render_sign_in(), 401)
        now = clock()
        try:
            after = parse_cursor(before) if before else None
        except ValueError:
            return RedirectResponse("/", status_code=303)
        ids, following = store.incident_page(_REVIEW_PAGE, after)
        states = [s for s in (store.incident(i) for i in ids) if s is not None]
        shown = set(ids)
        view = review_view(
            [s.to_json() for s in states],
            (c for c in store.communications() if c.incident_id in shown),
            {i: store.feedback_for(i) for i in ids},
            {o.id: o.since for o in store.opt_outs()},
            now,
            names={sid: name for sid in _stakeholder_ids(states) if (name := _names(config)(sid))},
            pending=_pending(config(), store, states, now),
            grace_s=_grace_s(config()),
        )
        older = f"/?before={quote(format_cursor(following), safe='')}" if following else ""
        return page(render_review(view, now, _grace_s(config()), older))

    @app.get("/review/messages/{comm_id}", response_class=PlainTextResponse)
    def review_message(request: Request, comm_id: str) -> Response:
        """One message as sent (headers included) for the review page; a message that could
        not be sent shows what was composed, marked as such."""
        if not can_read(request, cookie=True):
            return page(render_sign_in(), 401)
        comm = store.comm(comm_id)
        if comm is None:
            return PlainTextResponse(f"no communication {comm_id!r}", status_code=404)
        text = comm.message or composed_text(comm, config(), settings.templates_dir, secret)
        return PlainTextResponse(scrub(text), headers=HTML_HEADERS)

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
        overdue = promise_report([], clock(), open_promises(store), _grace_s(config())).overdue_unsent
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
                "last_heartbeat": iso_z(utc_of(beat.get("at_ms"))),
                "age_s": round((now_ms - int(beat.get("at_ms", 0))) / 1000, 1),
                "stale": now_ms - int(beat.get("at_ms", 0)) > _STALE_HEARTBEAT_MS,
            }
            for name, beat in sorted(beats.items())
            if now_ms - int(beat.get("at_ms", 0)) < _FORGET_HEARTBEAT_MS
        }
        return SafeJSONResponse({"redis": "ok", "processes": processes, "unfinished_sends": unfinished})

    app.include_router(link_router(client, secret, clock, _names(config)))
    app.include_router(integration_router(settings, store, broker, clock, require_token))
    return app


_REVIEW_PAGE = 20
"""Incidents on one page of the review page."""

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
