"""Redis going away under the security checks: sessions, sign-in and PagerDuty deliveries are
answered 503 with the reason, never 500, and a delivery refused in an outage is taken once
Redis is back (not answered as a duplicate)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient

from scheduler.service.settings import Settings
from scheduler.web.app import create_app
from tests.conftest import BASE_CONFIG, FakeClock
from tests.helpers import sign_in
from tests.realservers import RedisServer
from tests.security.conftest import PD_SECRET, READ, TOKEN, pd_signature

pytestmark = pytest.mark.real

DELIVERY = (Path(__file__).parent.parent / "fixtures" / "pagerduty_triggered.json").read_bytes()


@pytest.fixture
def private(tmp_path: Path) -> Iterator[tuple[RedisServer, TestClient]]:
    """The API on a Redis of its own, which the test stops and starts; on the fixture's time."""
    config = tmp_path / "amends.yaml"
    config.write_text(yaml.safe_dump(BASE_CONFIG))
    clock = FakeClock(datetime(2020, 10, 2, 18, 45, 22, tzinfo=UTC))  # the delivery's occurred_at
    with RedisServer(extra_args=("--appendonly", "no")) as server:
        settings = Settings(
            redis_url=server.url,
            api_token=TOKEN,
            read_token=READ,
            secret_key="outage-secret",
            pagerduty_secret=PD_SECRET,
            config_path=config,
        )
        with TestClient(create_app(settings, clock=clock), base_url="https://testserver") as client:
            yield server, client


def test_an_outage_gets_503_everywhere_and_a_refused_delivery_is_taken_afterwards(
    private: tuple[RedisServer, TestClient],
) -> None:
    """With Redis killed, the review page with a session cookie, sign-in and a signed PagerDuty
    delivery are 503 naming Redis; once it is back, the same delivery is accepted (202)."""
    server, client = private
    assert sign_in(client, READ).status_code == 303
    with TestClient(client.app, base_url="https://testserver") as other_browser:
        csrf = re.search(r'name="csrf" value="([^"]+)"', other_browser.get("/").text)
        assert csrf
        server.kill()
        signing_in = other_browser.post("/signin", data={"token": READ, "csrf": csrf.group(1)})
        assert signing_in.status_code == 503 and "Redis did not answer" in signing_in.text
    page = client.get("/")  # the session cookie cannot be looked up
    assert page.status_code == 503 and "Redis did not answer" in page.text
    headers = {"Content-Type": "application/json", "X-PagerDuty-Signature": pd_signature(DELIVERY)}
    refused = client.post("/v1/integrations/pagerduty", content=DELIVERY, headers=headers)
    assert refused.status_code == 503 and "did not answer" in refused.text
    assert client.get("/healthz").json() == {"status": "not ok"}
    server.start()
    taken = client.post("/v1/integrations/pagerduty", content=DELIVERY, headers=headers)
    assert taken.status_code == 202, taken.text
    again = client.post("/v1/integrations/pagerduty", content=DELIVERY, headers=headers)
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
