"""What the security tests share: the API with every credential set, in process and as a
real ``amends serve`` on a loopback port, in front of the worker and SMTP server."""

from __future__ import annotations

import hashlib
import hmac
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
import uvicorn
from fastapi.testclient import TestClient

from scheduler.service.settings import Settings
from scheduler.web.app import create_app
from tests.conftest import App
from tests.realservers import free_port, wait_until

FIXTURES = Path(__file__).parent.parent / "fixtures"
TOKEN = "security-api-token"
READ = "security-read-token"
PD_SECRET = "security-pagerduty-secret"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def pd_signature(body: bytes, secret: str = PD_SECRET) -> str:
    """``X-PagerDuty-Signature`` for ``body``, as PagerDuty computes it."""
    return "v1=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def secured(app: App) -> Settings:
    """The worker's settings with the API token, the read token and the PagerDuty secret set."""
    return app.settings.with_(api_token=TOKEN, read_token=READ, pagerduty_secret=PD_SECRET)


@pytest.fixture
def web(app: App) -> Iterator[TestClient]:
    """The API in process (as an https site: the configuration's base_url is https), no credential sent."""
    with TestClient(create_app(secured(app), clock=app.clock), base_url="https://testserver") as client:
        yield client


@dataclass(frozen=True)
class Served:
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


@pytest.fixture
def served(app: App) -> Iterator[Served]:
    """``amends serve`` (the real uvicorn server) on a free loopback port, on the worker's Redis and clock."""
    port = free_port()
    application = create_app(secured(app), clock=app.clock)
    server = uvicorn.Server(uvicorn.Config(application, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, 30.0, "amends serve did not start")
    yield Served("127.0.0.1", port)
    server.should_exit = True
    thread.join(10)


def pagerduty_body(app: App, name: str = "pagerduty_triggered.json", **shift: float) -> bytes:
    """A documented PagerDuty payload as delivered now (``occurred_at`` is the app's clock, moved by ``shift``)."""
    moment = app.clock() + timedelta(**shift)
    raw = (FIXTURES / name).read_bytes()
    when = moment.isoformat().replace("+00:00", "Z").encode()
    return re.sub(rb'"occurred_at": "[^"]*"', b'"occurred_at": "' + when + b'"', raw)
