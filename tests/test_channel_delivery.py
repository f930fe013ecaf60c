"""Slack and webhook stakeholders through a real worker: statuses, retries (Retry-After
honoured), thread order and the log, as for email; posts go to a real local HTTP server."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import standardwebhooks

from scheduler import emit
from tests.conftest import BASE_CONFIG, App, event
from tests.test_channels import WEBHOOK_SECRET, Receiver, Reply

pytestmark = pytest.mark.real


@pytest.fixture
def app_config(receiver: Receiver) -> dict[str, Any]:
    return {
        **BASE_CONFIG,
        "stakeholders": [
            {"id": "ops-chat", "name": "Ops chat", "channel": "slack", "url": receiver.url("/slack/T1/B1/x")},
            {"id": "status-bot", "name": "Status bot", "channel": "webhook", "url": receiver.url("/hook")},
        ],
    }


def _by_path(receiver: Receiver, path: str) -> list[Any]:
    return [r for r in receiver.received if r.path == path]


def test_chat_and_webhook_stakeholders_are_acknowledged_and_logged_as_sent(
    app: App, receiver: Receiver
) -> None:
    """An opened incident posts to Slack and to the signed webhook; the log keeps each body as sent."""
    app.runtime.settings = app.runtime.settings.with_(webhook_secret=WEBHOOK_SECRET)
    app.clock.set(datetime.now(UTC))  # receivers refuse webhook timestamps older than 5 minutes
    emit(event(at=app.clock()), broker=app.broker)
    app.drain()
    (slack,) = _by_path(receiver, "/slack/T1/B1/x")
    (hook,) = _by_path(receiver, "/hook")
    assert "Card payments failing" in json.loads(slack.body)["text"]
    payload = standardwebhooks.Webhook(WEBHOOK_SECRET).verify(hook.body, hook.headers)
    assert payload["kind"] == "acknowledgment" and payload["incident"]["id"] == "INC-1"
    comms = {c.stakeholder_id: c for c in app.runtime.store.communications()}
    assert {c.status for c in comms.values()} == {"sent"}
    store = app.runtime.store  # a listing leaves the message out; one communication has it in full
    assert store.comm(comms["status-bot"].id).message.encode() == hook.body
    assert store.comm(comms["ops-chat"].id).message.encode() == slack.body
    assert "secret" not in comms["ops-chat"].recipient and "/slack/" not in comms["ops-chat"].recipient


def test_a_429_is_retried_no_sooner_than_asked_and_the_thread_stays_in_order(
    app: App, receiver: Receiver
) -> None:
    """503 then 429 with Retry-After: 120 on the acknowledgment; the change waits for it; both arrive in order."""

    app.runtime.store.record_opt_out("status-bot", app.clock())  # only the Slack thread here
    receiver.replies = [Reply(503), Reply(429, headers={"Retry-After": "120"})]
    start = app.clock()
    emit(event(), broker=app.broker)
    app.drain()
    emit(event("updated", status="identified"), broker=app.broker)
    app.drain()
    store = app.runtime.store
    ack = store.comm("INC-1:ops-chat:acknowledgment:1")
    assert ack is not None and ack.status == "retrying" and "503" in ack.last_error
    app.settle()
    ack = store.comm("INC-1:ops-chat:acknowledgment:1")
    update = store.comm("INC-1:ops-chat:update:2")
    assert ack is not None and update is not None
    assert ack.status == update.status == "sent" and ack.attempts == 3
    assert ack.sent_at is not None and ack.sent_at - start >= timedelta(seconds=120)
    slack = [json.loads(r.body)["text"] for r in _by_path(receiver, "/slack/T1/B1/x")]
    assert len(slack) == 4  # 503, 429, the acknowledgment, then the update
    assert "identified" in slack[-1].lower()


def test_the_review_page_shows_where_a_channel_stakeholders_messages_went(app: App) -> None:
    """The review page names a chat stakeholder's channel and host, never its secret webhook address."""
    from fastapi.testclient import TestClient

    from scheduler.web.app import create_app

    emit(event(), broker=app.broker)
    app.drain()
    with TestClient(create_app(app.settings.with_(api_token="t"), clock=app.clock)) as client:
        page = client.get("/", headers={"Authorization": "Bearer t"}).text
    assert "via slack:127.0.0.1" in page and "/slack/T1/B1/x" not in page


def test_a_429_pauses_that_hosts_send_rate_for_every_worker(app: App, receiver: Receiver) -> None:
    """A 429 with Retry-After: 120 from a Slack host pauses its rate (Slack's 1/s per host): no worker gets a slot there for 120 s."""
    from scheduler.core.model import ms_of
    from scheduler.core.rate import Rate

    app.runtime.store.record_opt_out("status-bot", app.clock())  # only the Slack thread here
    receiver.replies = [Reply(429, headers={"Retry-After": "120"})]
    emit(event(), broker=app.broker)
    app.drain()
    ack = app.runtime.store.comm("INC-1:ops-chat:acknowledgment:1")
    assert ack is not None and ack.status == "retrying" and "429" in ack.last_error
    assert ack.recipient.startswith("slack:")
    slot = app.runtime.rates.reserve(ack.recipient, Rate(1, 1), ms_of(app.clock()))
    assert not slot.reserved and slot.wait_ms >= 117_000  # the pause's end, less the 2 s horizon
    assert app.runtime.rates.reserve("teams:elsewhere", Rate(1, 1), ms_of(app.clock())).wait_ms == 0
