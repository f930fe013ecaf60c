"""PagerDuty replays: a signed delivery more than 5 minutes from now is refused, and a
delivery's id is remembered for the retention window, after its incident's records go."""

from __future__ import annotations

import json

import httpx
import pytest
import redis
from fastapi.testclient import TestClient

from scheduler.storage import keys
from scheduler.storage.redis_store import RedisStore
from tests.conftest import App
from tests.security.conftest import pagerduty_body, pd_signature

pytestmark = pytest.mark.real

ROUTE = "/v1/integrations/pagerduty"


def _deliver(web: TestClient, body: bytes) -> httpx.Response:
    headers = {"Content-Type": "application/json", "X-PagerDuty-Signature": pd_signature(body)}
    return web.post(ROUTE, content=body, headers=headers)


@pytest.mark.parametrize(("case", "shift_s"), [("6 minutes old", -360), ("6 minutes ahead", 360)])
def test_a_signed_delivery_outside_5_minutes_is_refused(
    web: TestClient, app: App, redis_client: redis.Redis, case: str, shift_s: float
) -> None:
    """A correctly signed delivery whose occurred_at is over 5 minutes from now gets 401 naming
    the reason, and no incident or mail results."""
    refused = _deliver(web, pagerduty_body(app, seconds=shift_s))
    assert refused.status_code == 401, case
    assert "more than 5 minutes" in refused.json()["detail"]
    app.drain()
    assert RedisStore(redis_client).incident_page(10, None)[0] == [] and app.sink.received == []


def test_a_delivery_within_5_minutes_is_taken(web: TestClient, app: App) -> None:
    """A delivery 4 minutes old (PagerDuty's retry of a slow one) is accepted and acknowledged."""
    assert _deliver(web, pagerduty_body(app, seconds=-240)).status_code == 202
    app.drain()
    assert len(app.sink.received) == 3


def test_a_replay_after_retention_removed_the_incident_is_still_a_duplicate(
    web: TestClient, app: App, redis_client: redis.Redis
) -> None:
    """The delivery id outlives the event's own record: replayed once that is gone, it changes
    nothing and mails no one again; the id is kept at least as long as retention (90 days)."""
    body = pagerduty_body(app)
    assert _deliver(web, body).status_code == 202
    app.drain()
    mailed = len(app.sink.received)
    assert mailed == 3
    delivery = json.loads(body)["event"]["id"]
    incident_id = "PGR0VU2"
    redis_client.delete(keys.event(incident_id, f"pd-{delivery}"), keys.incident(incident_id))
    replay = _deliver(web, body)
    assert replay.status_code == 200 and replay.json()["status"] == "duplicate"
    app.drain()
    assert len(app.sink.received) == mailed
    assert redis_client.ttl(keys.pagerduty_delivery(delivery)) >= 90 * 86_400 - 60


def test_a_refused_delivery_does_not_use_up_its_id(web: TestClient, app: App) -> None:
    """A signed delivery answered 422 (it cannot be mapped) leaves its id free for PagerDuty's corrected retry."""
    good = pagerduty_body(app)
    document = json.loads(good)
    broken = json.loads(good)
    broken["event"]["data"]["title"] = 7
    refused = _deliver(web, json.dumps(broken).encode())
    assert refused.status_code == 422
    assert _deliver(web, json.dumps(document).encode()).status_code == 202
