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

import logging
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

import redis
import uvicorn
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from scheduler.errors import SettingsError
from scheduler.service.processes import broker_for
from scheduler.service.settings import Settings
from scheduler.storage.redis_store import RedisStore
from scheduler.storage.timers import RedisTimerStore
from scheduler.web import auth, health, incidents, intake, log, metrics, opt_outs, review
from scheduler.web._http import SafeJSONResponse, invalid
from scheduler.web.auth import review_session
from scheduler.web.deps import Web, config_reader
from scheduler.web.integrations import integration_router
from scheduler.web.links import link_router

__all__ = ["create_app", "serve", "server_config"]

logger = logging.getLogger(__name__)

_GENERATE = "generate one: python -c 'import secrets; print(secrets.token_urlsafe(32))'"


def _utcnow() -> datetime:
    return datetime.now(UTC)


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
    readers = tuple(t for t in (token, settings.read_token) if t)
    client = redis.Redis.from_url(settings.resolved_redis_url())
    store = RedisStore(client)
    timers = RedisTimerStore(client)
    broker = broker_for(settings)
    config = config_reader(settings)
    web = Web(
        settings=settings,
        client=client,
        store=store,
        timers=timers,
        broker=broker,
        clock=clock,
        config=config,
        secret=secret,
        token=token,
        readers=readers,
        sessions=tuple(review_session(secret, t) for t in readers),
    )

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
    app.state.web = web

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

    app.include_router(intake.router)
    app.include_router(log.router)
    app.include_router(incidents.router)
    app.include_router(opt_outs.router)

    app.include_router(review.router)
    app.include_router(auth.router)

    app.include_router(metrics.router)
    app.include_router(health.router)
    app.include_router(link_router(client, secret, clock, web.name))
    app.include_router(integration_router(settings, store, broker, clock))
    return app


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
