"""Every signed or authenticated route decides before it reads more: the chunked attack
(a first chunk just over the cap, a pause, then a real payload) gets 413 or 401 at once
from a real ``amends serve``, and no incident, mail or kept reject results."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from urllib.parse import urlencode

import httpx
import pytest
import redis
from fastapi.testclient import TestClient

from scheduler.mail.signing import sign
from scheduler.service.queues import EVENTS_QUEUE, build_broker
from scheduler.storage import keys
from scheduler.storage.redis_store import RedisStore
from scheduler.web.integrations import MAX_PAYLOAD_BYTES
from tests.conftest import App
from tests.helpers import stored_incident
from tests.security.conftest import TOKEN, Served, bearer, pagerduty_body, pd_signature

pytestmark = pytest.mark.real

ALERT = (
    b'{"version": "4", "groupKey": "{}:{alertname=\\"CardPayments\\"}", "status": "firing",'
    b' "receiver": "amends", "groupLabels": {"alertname": "CardPayments"},'
    b' "commonLabels": {"alertname": "CardPayments", "severity": "critical", "service": "payments"},'
    b' "commonAnnotations": {"summary": "Card payments failing"}, "externalURL": "http://am",'
    b' "alerts": [{"status": "firing", "labels": {"alertname": "CardPayments", "severity": "critical",'
    b' "service": "payments"}, "annotations": {"summary": "Card payments failing"},'
    b' "startsAt": "2026-11-26T14:00:00Z", "endsAt": "0001-01-01T00:00:00Z", "fingerprint": "f1"}]}'
)


def _status(sock: socket.socket) -> int:
    """The status code of the first response on ``sock``."""
    seen = b""
    while b"\r\n" not in seen:
        chunk = sock.recv(4096)
        if not chunk:
            break
        seen += chunk
    assert seen.startswith(b"HTTP/1.1 "), seen[:200]
    return int(seen.split(b" ", 2)[1])


def _chunked_attack(served: Served, path: str, headers: dict[str, str], rest: bytes) -> int:
    """Send a first chunk of MAX_PAYLOAD_BYTES + 1 spaces, wait for the answer (the pause),
    then try the real payload as the next chunks: the answer must come before it."""
    head = f"POST {path} HTTP/1.1\r\nHost: {served.host}:{served.port}\r\nContent-Type: application/json\r\n"
    head += "Transfer-Encoding: chunked\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    first = b" " * (MAX_PAYLOAD_BYTES + 1)
    with socket.create_connection((served.host, served.port), timeout=20) as sock:

        def send_first() -> None:
            with contextlib.suppress(OSError):  # the server answered and closed before taking it all
                sock.sendall(head.encode() + f"{len(first):x}\r\n".encode() + first + b"\r\n")

        sender = threading.Thread(target=send_first, daemon=True)
        sender.start()
        status = _status(sock)  # the server answers with the rest not sent yet
        sender.join(20)
        with contextlib.suppress(OSError):  # closed after the answer: the rest goes nowhere
            sock.sendall(f"{len(rest):x}\r\n".encode() + rest + b"\r\n0\r\n\r\n")
    return status


def _nothing_happened(app: App, redis_client: redis.Redis) -> None:
    app.drain()
    store = RedisStore(redis_client)
    assert store.incident_page(10, None)[0] == []
    assert app.sink.received == []
    assert store.rejected() == []
    broker = build_broker(app.settings.resolved_redis_url())
    try:
        assert int(broker.do_qsize(EVENTS_QUEUE)) == 0
    finally:
        broker.close()


@pytest.mark.parametrize(
    ("route", "credential", "expected"),
    [
        ("pagerduty", {}, 401),
        ("pagerduty", {"X-PagerDuty-Signature": "v1=" + "0" * 64}, 413),
        ("alertmanager", {}, 401),
        ("alertmanager", bearer(TOKEN), 413),
        ("grafana", {}, 401),
        ("grafana", bearer(TOKEN), 413),
    ],
)
def test_the_chunked_attack_is_refused_before_the_payload_is_read(
    served: Served, app: App, redis_client: redis.Redis, route: str, credential: dict[str, str], expected: int
) -> None:
    """An over-cap first chunk is answered 413 (or 401 without a credential) before the rest
    is sent, and no incident, mail, queued event or kept reject results."""
    rest = pagerduty_body(app) if route == "pagerduty" else ALERT
    assert _chunked_attack(served, f"/v1/integrations/{route}", credential, rest) == expected
    _nothing_happened(app, redis_client)


def test_the_same_routes_still_take_a_proper_delivery(
    served: Served, app: App, redis_client: redis.Redis
) -> None:
    """After the attacks, a signed PagerDuty delivery and an authenticated alert are accepted as usual."""
    for route, credential, body in [
        ("pagerduty", {}, pagerduty_body(app)),
        ("alertmanager", bearer(TOKEN), ALERT),
    ]:
        _chunked_attack(served, f"/v1/integrations/{route}", credential, body)
    body = pagerduty_body(app)
    signed = {"X-PagerDuty-Signature": pd_signature(body), "Content-Type": "application/json"}
    assert (
        httpx.post(f"{served.url}/v1/integrations/pagerduty", content=body, headers=signed).status_code == 202
    )
    alert = httpx.post(f"{served.url}/v1/integrations/alertmanager", content=ALERT, headers=bearer(TOKEN))
    assert alert.status_code == 202
    app.drain()
    assert len(RedisStore(redis_client).incident_page(10, None)[0]) == 2
    assert app.sink.received


@pytest.mark.parametrize("route", ["alertmanager", "grafana", "pagerduty"])
def test_a_declared_20_mb_body_is_refused_in_under_10_ms(served: Served, app: App, route: str) -> None:
    """A Content-Length of 20 MB gets 413 before a byte of the body is sent, in under 10 ms."""
    credential = bearer(TOKEN) if route != "pagerduty" else {"X-PagerDuty-Signature": "v1=" + "0" * 64}
    head = f"POST /v1/integrations/{route} HTTP/1.1\r\nHost: {served.host}\r\nContent-Length: {20 * 1024 * 1024}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in credential.items()) + "\r\n"
    timings = []
    for _ in range(5):
        with socket.create_connection((served.host, served.port), timeout=10) as sock:
            started = time.perf_counter()
            sock.sendall(head.encode())
            assert _status(sock) == 413
            timings.append(time.perf_counter() - started)
    assert min(timings) < 0.010, timings


@pytest.mark.parametrize("path", ["/signin", "/signout", "/unsubscribe/globex", "/feedback/INC-1/globex"])
def test_an_over_cap_form_is_413_before_its_signature_or_token_is_looked_at(
    web: TestClient, app: App, redis_client: redis.Redis, path: str
) -> None:
    """A form over 64 KB, even with a valid signature or sign-in CSRF value, is 413 and changes nothing."""
    secret = app.settings.secret_key or ""
    stored_incident(redis_client, "INC-1", ["globex"])
    query = {"sig": sign(secret, "unsubscribe", "globex")} if "unsubscribe" in path else {}
    fields = {"sig": sign(secret, "feedback-comment", "INC-1", "globex"), "rating": "1", "token": TOKEN}
    body = urlencode({**fields, "List-Unsubscribe": "One-Click", "comment": "x" * 70_000})
    answer = web.post(
        path, params=query, content=body, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert answer.status_code == 413 and "larger than" in answer.text
    assert redis_client.hlen(keys.UNSUBSCRIBED) == 0 and RedisStore(redis_client).feedback_for("INC-1") == {}
    assert "amends_review=" not in str(answer.headers.get_list("set-cookie"))
