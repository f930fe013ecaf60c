"""What already held under probing, kept: who may reach which route, constant-time
comparisons, text cleaned at the door, no open redirect, oversized events refused, and
``/healthz`` telling nothing but ok to a caller without a token."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from scheduler.service.queues import EVENTS_QUEUE, build_broker
from scheduler.storage.redis_store import RedisStore
from tests.conftest import App, event
from tests.helpers import sign_in
from tests.security.conftest import READ, TOKEN, bearer

pytestmark = pytest.mark.real

SOURCES = Path(__file__).parent.parent.parent / "scheduler"
LINK_PAGES = ("/feedback/", "/unsubscribe/")
"""Opened from an email by its recipient: a signature, not a token, lets them in."""
OWN_CHECK = {"/signin", "/signout", "/v1/integrations/pagerduty"}
"""Routes that check their own credential: the sign-in token, the session's CSRF value, PagerDuty's signature."""


def _api_routes(routes: list[Any]) -> Iterator[APIRoute]:
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        elif hasattr(route, "original_router"):  # a router included in the app
            yield from _api_routes(route.original_router.routes)


def _routes(web: TestClient) -> list[tuple[str, str]]:
    """Every (method, path) the API serves, path parameters filled in."""
    found = []
    for route in _api_routes(web.app.router.routes):  # type: ignore[attr-defined]
        path = re.sub(r"\{[^}]+\}", "x", route.path)
        found += [(method, path) for method in sorted(route.methods)]
    assert len(found) > 15
    return found


def test_the_read_token_gets_401_on_every_write_route(web: TestClient) -> None:
    """Every POST, PUT, PATCH and DELETE the API token guards answers the read token 401."""
    writes = [
        (m, p)
        for m, p in _routes(web)
        if m in {"POST", "PUT", "PATCH", "DELETE"} and p not in OWN_CHECK and not p.startswith(LINK_PAGES)
    ]
    assert ("POST", "/v1/events") in writes and ("DELETE", "/v1/opt-outs/x") in writes
    for method, path in writes:
        assert web.request(method, path, headers=bearer(READ), json={}).status_code == 401, (method, path)


def test_every_route_but_healthz_needs_a_credential(web: TestClient) -> None:
    """Without a token every route is 401 (the review page answers its sign-in form), link pages
    without a signature are 403, and /healthz alone answers, with nothing but its status."""
    for method, path in _routes(web):
        answer = web.request(method, path, json={}, follow_redirects=False)
        if path == "/healthz":
            assert answer.status_code == 200 and answer.json() == {"status": "ok"}
        elif path.startswith(LINK_PAGES):
            assert answer.status_code == 403, (method, path)
        elif path == "/signout":
            assert answer.status_code == 303  # ends nothing: there is no session to end
        else:
            assert answer.status_code in (401, 403), (method, path)


def test_healthz_details_are_for_readers(web: TestClient, redis_client: redis.Redis) -> None:
    """Host names, process ids and heartbeat ages show to the read token, never without one."""
    now_ms = int(web.app.state.web.clock().timestamp() * 1000)  # type: ignore[attr-defined]
    RedisStore(redis_client).heartbeat("worker@db-host-7:4242", "worker", now_ms)
    anonymous = web.get("/healthz")
    assert anonymous.json() == {"status": "ok"} and "db-host-7" not in anonymous.text
    detailed = web.get("/healthz", headers=bearer(READ)).json()
    assert detailed["status"] == "ok" and "worker@db-host-7:4242" in detailed["processes"]


def test_secrets_are_compared_in_constant_time() -> None:
    """No token, signature or CSRF value is compared with == or != anywhere in the code."""
    compared = re.compile(
        r"(token|sig|signature|secret|csrf|digest)\w*\s*[!=]=\s*\w|\w\s*[!=]=\s*\w*(token|sig|csrf)\b"
    )
    offending = [
        f"{path.relative_to(SOURCES)}:{n}: {line.strip()}"
        for path in sorted(SOURCES.rglob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if compared.search(line) and "is None" not in line and "compare_digest" not in line
    ]
    assert offending == []
    uses = sum("compare_digest" in p.read_text() for p in SOURCES.rglob("*.py"))
    assert uses >= 2


def test_control_characters_and_bidi_marks_are_stripped_from_alert_labels(
    web: TestClient, app: App, redis_client: redis.Redis
) -> None:
    """An alert whose labels and summary carry control characters and bidi overrides opens an incident without them."""
    labels = {
        "alertname": "Card\x1b[31mPayments\u202e",
        "severity": "critical",
        "service": "pay\u2066ments\x07",
    }
    alert = {
        "version": "4",
        "groupKey": '{}:{alertname="x"}',
        "status": "firing",
        "receiver": "amends",
        "groupLabels": {"alertname": labels["alertname"]},
        "commonLabels": labels,
        "commonAnnotations": {"summary": "Card payments\u202e failing\r\nBcc: x@evil.example"},
        "externalURL": "http://am",
        "alerts": [
            {
                "status": "firing",
                "labels": labels,
                "annotations": {"summary": "Card payments\u202e failing\r\nBcc: x@evil.example"},
                "startsAt": "2026-11-26T14:00:00Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "fingerprint": "f1",
            }
        ],
    }
    assert web.post("/v1/integrations/alertmanager", json=alert, headers=bearer(TOKEN)).status_code == 202
    app.drain()
    [incident] = web.get("/v1/incidents", headers=bearer(READ)).json()["incidents"]
    shown = json.dumps(incident, ensure_ascii=False)
    for mark in ("\x1b", "\u202e", "\u2066", "\x07", "\r", "\n"):
        assert mark not in incident["title"] + "".join(incident["services"]), repr(mark)
    assert "\u202e" not in shown and "\x1b" not in shown
    assert all("Bcc" not in str(m.message.get("Bcc", "")) for m in app.sink.received)


@pytest.mark.parametrize(
    "target", ["/?token=x&next=https://evil.example/", "//evil.example/", "/?before=//evil.example"]
)
def test_no_address_redirects_to_another_site(web: TestClient, target: str) -> None:
    """Redirects go to this site's own ``/`` only, whatever the address or a sign-in's extra fields say."""
    answer = web.get(target, follow_redirects=False)
    if answer.is_redirect:
        assert answer.headers["location"] == "/", target
    signed_in = sign_in(web, READ)
    assert signed_in.headers["location"] == "/"


def test_an_oversized_event_is_422_and_never_reaches_the_worker(web: TestClient, app: App) -> None:
    """An event over 64 KB is refused 422 naming the size, and nothing is queued for the worker."""
    answer = web.post("/v1/events", json=event(summary="x" * 70_000), headers=bearer(TOKEN))
    assert answer.status_code == 422 and "larger than" in answer.text
    broker = build_broker(app.settings.resolved_redis_url())
    try:
        assert int(broker.do_qsize(EVENTS_QUEUE)) == 0
    finally:
        broker.close()
    app.drain()
    assert app.sink.received == []
