"""Least privilege for the read token: nothing it can fetch lets it act as a stakeholder
(unsubscribe, rate, comment), while the API token still sees the messages as sent."""

from __future__ import annotations

import email
import email.policy
import html
import re
from datetime import timedelta

import pytest
import redis
from fastapi.testclient import TestClient

from scheduler.storage.redis_store import RedisStore
from tests.conftest import App, event
from tests.helpers import sign_in
from tests.security.conftest import READ, TOKEN, bearer

pytestmark = pytest.mark.real

_LINK = re.compile(r"https?://[^\s\"'<>]+?/(?:unsubscribe|feedback|preferences)/[^\s\"'<>]+")


def _resolved_with_feedback_requests(web: TestClient, app: App) -> list[str]:
    """INC-1 opened, resolved, and its feedback requests sent; every communication's id."""
    assert web.post("/v1/events", json=event(), headers=bearer(TOKEN)).status_code == 202
    app.drain()
    app.clock.advance(minutes=5)
    resolved = web.post("/v1/events", json=event("resolved", at=app.clock()), headers=bearer(TOKEN))
    assert resolved.status_code == 202
    app.drain()
    app.advance_to(app.clock() + timedelta(hours=3))
    comms = web.get("/v1/communications?limit=1000", headers=bearer(TOKEN)).json()["communications"]
    assert {c["kind"] for c in comms} >= {"acknowledgment", "resolution", "feedback_request"}
    return [c["id"] for c in comms]


def _links(text: str) -> set[str]:
    """Every action link in a page, or in a message as shown: its headers, and each part's
    text with quoted-printable and HTML entities decoded."""
    texts = [text]
    if "\nMIME-Version:" in text or text.startswith("MIME-Version:"):
        message = email.message_from_string(text, policy=email.policy.default)
        texts = [str(value) for _, value in message.items()]
        texts += [p.get_content() for p in message.walk() if p.get_content_maintype() == "text"]
    return {link.rstrip(".,;)>") for t in texts for link in _LINK.findall(html.unescape(t))}


def _path(link: str) -> str:
    return "/" + link.split("://", 1)[1].split("/", 1)[1]


def _everything_a_reader_sees(web: TestClient, comm_ids: list[str]) -> list[str]:
    texts = [
        web.get(path, headers=bearer(READ)).text
        for path in ("/", "/v1/communications?limit=1000", "/v1/incidents", "/v1/incidents/INC-1", "/healthz")
    ]
    for comm_id in comm_ids:
        texts.append(web.get(f"/v1/communications/{comm_id}", headers=bearer(READ)).json()["message"] or "")
        texts.append(web.get(f"/review/messages/{comm_id}", headers=bearer(READ)).text)
    assert sign_in(web, READ).status_code == 303  # and the same through the review page's session
    texts += [web.get(f"/review/messages/{comm_id}").text for comm_id in comm_ids]
    web.cookies.clear()
    return texts


def test_nothing_the_read_token_fetches_can_unsubscribe_rate_or_comment(
    web: TestClient, app: App, redis_client: redis.Redis
) -> None:
    """Every action link in what the read token can fetch has its signature withheld: opening
    or posting any of them gets 403, and no opt-out or feedback is kept."""
    comm_ids = _resolved_with_feedback_requests(web, app)
    texts = _everything_a_reader_sees(web, comm_ids)
    links = set().union(*(_links(t) for t in texts))
    assert any("/unsubscribe/" in link for link in links) and any("rating=" in link for link in links)
    assert any("WITHHELD" in t for t in texts)
    for link in links:
        path = _path(link)
        assert web.get(path).status_code == 403, link
        one_click = web.post(path, data={"List-Unsubscribe": "One-Click", "scope": "all", "rating": "1"})
        assert one_click.status_code in (403, 405), link
    store = RedisStore(redis_client)
    assert store.opt_outs() == [] and store.feedback_for("INC-1") == {}


def test_the_api_token_still_sees_each_message_as_sent(web: TestClient, app: App) -> None:
    """The operator's token gets the message byte for byte as sent: its links are live."""
    comm_ids = _resolved_with_feedback_requests(web, app)
    links: set[str] = set()
    for comm_id in comm_ids:
        shown = web.get(f"/v1/communications/{comm_id}", headers=bearer(TOKEN)).json()["message"] or ""
        assert "WITHHELD" not in shown
        links |= _links(shown)
    unsubscribe = next(link for link in links if "/unsubscribe/" in link)
    assert web.get(_path(unsubscribe)).status_code == 200
    rating = next(link for link in links if "rating=" in link)
    assert web.get(_path(rating)).status_code == 200
