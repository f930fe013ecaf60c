"""The HTTP API (``amends serve``): ``create_app`` builds what the routes share and includes each router.

The routes: ``POST /v1/events`` (:mod:`.intake`), ``/v1/communications`` (:mod:`.log`),
``/v1/incidents`` (:mod:`.incidents`), ``/v1/opt-outs`` (:mod:`.opt_outs`), ``/v1/bounces``
(:mod:`.bounces`), the review
page ``/`` (:mod:`.review`) and its sign-in (:mod:`.auth`), ``/metrics`` (:mod:`.metrics`),
``/healthz`` (:mod:`.health`), feedback and unsubscribe links (:mod:`.links`) and
``/v1/integrations/*`` (:mod:`.integrations`). Each route asks for the app's :class:`.deps.Web`.

Authentication: posting events and bounce reports and undoing opt-outs and bounces need ``Authorization: Bearer
$AMENDS_API_TOKEN``; reading (the log, incidents, opt-outs, ``/metrics``) takes that token
or ``$AMENDS_READ_TOKEN``. The review page ``/`` takes either as a bearer token, or from
its sign-in form: the form POSTs the token, which starts a server-side session whose
random id is the cookie (:mod:`.auth`), so a token never appears in a URL; one given as
``/?token=`` is not used. Messages shown to the read token have their action links'
signatures withheld. Feedback and unsubscribe links carry their own HMAC signature
instead; ``/healthz`` without a token says only ok or not ok (:mod:`.health`). Only the demo (``create_app(..., demo=True)``) may run
without a token, and then every endpoint is open, so it must listen on 127.0.0.1 only.

No input gets a 500: bodies are size-capped and decoded strictly, forms and JSON that
cannot be read are answered 4xx with the reason, and responses replace whatever text the
store holds that cannot be encoded. Secrets never appear in responses, and query values
of secret-looking names are redacted from the access log however they are encoded.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import redis
import uvicorn
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from scheduler.errors import SettingsError
from scheduler.service.processes import broker_for
from scheduler.service.settings import Settings
from scheduler.storage.connection import client_for
from scheduler.storage.redis_store import RedisStore
from scheduler.storage.timers import RedisTimerStore
from scheduler.web import (
    auth,
    bounces,
    follow_ups,
    health,
    incidents,
    intake,
    integrations,
    links,
    log,
    metrics,
    opt_outs,
    review,
    stakeholders,
)
from scheduler.web._http import SafeJSONResponse, invalid
from scheduler.web.access_log import RedactSecrets
from scheduler.web.deps import Web, config_reader
from scheduler.web.sessions import Role, fingerprint

__all__ = ["create_app", "serve", "server_config"]

logger = logging.getLogger(__name__)

_GENERATE = "generate one: python -c 'import secrets; print(secrets.token_urlsafe(32))'"

_ROUTERS = (
    intake.router,
    log.router,
    incidents.router,
    follow_ups.router,
    stakeholders.router,
    opt_outs.router,
    bounces.router,
    review.router,
    auth.router,
    metrics.router,
    health.router,
    links.router,
    integrations.router,
)
"""Every route of the API, included in this order."""


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _check(settings: Settings, demo: bool) -> None:
    """SettingsError naming every setting the API cannot start without."""
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


def _web(settings: Settings, clock: Callable[[], datetime]) -> Web:
    """The dependencies every route shares, on ``settings``' Redis."""
    secret = settings.secret_key or ""
    readers = tuple(t for t in (settings.api_token, settings.read_token) if t)
    client = client_for(settings.resolved_redis_url())
    return Web(
        settings=settings,
        client=client,
        store=RedisStore(client),
        timers=RedisTimerStore(client),
        broker=broker_for(settings),
        clock=clock,
        config=config_reader(settings),
        integrations=integrations.mapping_source(settings),
        secret=secret,
        token=settings.api_token,
        readers=readers,
        fingerprints=tuple(
            (fingerprint(secret, t), Role.WRITE if t == settings.api_token else Role.READ) for t in readers
        ),
    )


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Closes the app's broker and Redis client when the server stops."""
    yield
    web: Web = app.state.web
    web.broker.close()
    web.client.close()


async def _bad_request(_: Request, exc: RequestValidationError) -> JSONResponse:
    return invalid((str(e["loc"][-1]) if e["loc"] else "", str(e["msg"])) for e in exc.errors())


async def _http_error(_: Request, exc: HTTPException) -> JSONResponse:
    return SafeJSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)


async def _redis_down(_: Request, exc: redis.RedisError) -> JSONResponse:
    logger.warning("Redis did not answer: %s", type(exc).__name__)
    return SafeJSONResponse({"detail": "Redis did not answer; try again shortly"}, status_code=503)


async def _common_headers(request: Request, call_next: Callable[[Request], Any]) -> Response:
    response: Response = await call_next(request)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    return response


def create_app(settings: Settings, *, demo: bool = False, clock: Callable[[], datetime] = _utcnow) -> FastAPI:
    """The API on ``settings``' Redis; SettingsError names every missing setting at once.

    ``AMENDS_API_TOKEN`` is required unless ``demo``; ``AMENDS_SECRET_KEY`` always, since
    it verifies feedback and unsubscribe links. ``clock`` is read once per request.
    """
    _check(settings, demo)
    app = FastAPI(
        title="amends",
        lifespan=_lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        default_response_class=SafeJSONResponse,
        exception_handlers={
            RequestValidationError: _bad_request,
            HTTPException: _http_error,
            redis.RedisError: _redis_down,
        },
    )
    app.state.web = _web(settings, clock)
    app.middleware("http")(_common_headers)
    for router in _ROUTERS:
        app.include_router(router)
    return app


def server_config(app: FastAPI, host: str, port: int) -> uvicorn.Config:
    """uvicorn's configuration for the API, with link signatures and tokens kept out of its log."""
    config = uvicorn.Config(app, host=host, port=port, server_header=False, log_level="info")
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactSecrets) for f in access.filters):
        access.addFilter(RedactSecrets())
    return config


def serve(settings: Settings, host: str, port: int) -> None:
    """Run the API until interrupted; SettingsError when a required setting is missing."""
    uvicorn.Server(server_config(create_app(settings), host, port)).run()
