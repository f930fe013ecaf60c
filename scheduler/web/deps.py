"""What every route is handed: one app's shared dependencies (:class:`Web`) and ``WebDep`` to ask for them.

``create_app`` builds one :class:`Web` and keeps it as ``app.state.web``; a route declares
``web: WebDep`` and FastAPI passes it in, so each route is a plain function of its inputs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

import dramatiq
import redis
from fastapi import Depends, Request

from scheduler.core.config import Config, ConfigSource, Integrations
from scheduler.core.ports import Store, TimerStore
from scheduler.core.promises import ON_TIME_GRACE_S
from scheduler.errors import AmendsError
from scheduler.service.settings import Settings
from scheduler.web.sessions import Role

__all__ = ["Web", "WebDep", "config_reader", "grace_s", "web_of"]


@dataclass(frozen=True)
class Web:
    """The stores, the settings, the clock and the tokens every route of one app shares."""

    settings: Settings
    client: redis.Redis
    """For what the store port does not cover: ``/healthz``'s ping, rejects counted, duplicates."""
    store: Store
    timers: TimerStore
    broker: dramatiq.Broker
    clock: Callable[[], datetime]
    """Read once per request."""
    config: Callable[[], Config | None]
    """The configuration in force, or None when there is none to read."""
    integrations: Callable[[], Integrations]
    """The ``integrations:`` section in force, for the routes other tools post to."""
    secret: str
    """``AMENDS_SECRET_KEY``: signs and verifies links and the review page's CSRF values."""
    token: str | None
    """``AMENDS_API_TOKEN``; None only in the demo, where every endpoint is open."""
    readers: tuple[str, ...]
    """The tokens that may read: the API token and ``AMENDS_READ_TOKEN``."""
    fingerprints: tuple[tuple[str, Role], ...]
    """Each token's fingerprint and role: a review session made with any other token
    (one rotated since) is no longer valid."""

    def name(self, stakeholder_id: str) -> str:
        """The stakeholder's configured name (the id itself when there is no such stakeholder)."""
        current = self.config()
        stakeholder = current.stakeholder(stakeholder_id) if current else None
        return stakeholder.name if stakeholder else stakeholder_id

    def grace_s(self) -> float:
        """How late a message may go out and still keep its promise, as configured now."""
        return grace_s(self.config())


def grace_s(config: Config | None) -> float:
    """How late a message may go out under ``config`` and still keep its promise."""
    return float(config.kept_within) if config else ON_TIME_GRACE_S


def web_of(request: Request) -> Web:
    """The app's :class:`Web`, as ``create_app`` kept it."""
    web: Web = request.app.state.web
    return web


WebDep = Annotated[Web, Depends(web_of)]


def config_reader(settings: Settings) -> Callable[[], Config | None]:
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
