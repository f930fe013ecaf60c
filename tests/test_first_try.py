"""What a newcomer meets first: duplicates named as such, every wrong field at once, lists of events."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from scheduler.cli.main import main
from scheduler.core.events import parse_event
from scheduler.errors import EventError
from scheduler.service.settings import Settings
from scheduler.web.app import create_app
from tests.conftest import App, event
from tests.test_api import queued_events

pytestmark = pytest.mark.real

TOKEN = "test-api-token"
T0 = datetime(2026, 11, 26, 14, 3, 5, tzinfo=UTC)


@pytest.fixture
def live(app: App) -> Iterator[TestClient]:
    client = TestClient(create_app(app.settings.with_(api_token=TOKEN), clock=app.clock))
    client.headers["Authorization"] = f"Bearer {TOKEN}"
    with client:
        yield client


@pytest.fixture
def api(redis_url: str, redis_client: redis.Redis) -> Iterator[TestClient]:
    settings = Settings(redis_url=redis_url, api_token=TOKEN, secret_key="test-secret")
    client = TestClient(create_app(settings, clock=lambda: T0))
    client.headers["Authorization"] = f"Bearer {TOKEN}"
    with client:
        yield client


def test_an_event_id_already_applied_is_answered_duplicate_over_http(live: TestClient, app: App) -> None:
    """Posting an event whose id a worker already applied answers "duplicate" and sends nothing more."""
    opened = event(event_id="evt-dup")
    assert live.post("/v1/events", json=opened).json() == {"event_id": "evt-dup", "status": "enqueued"}
    app.drain()
    sent = len(app.sink.received)
    again = live.post("/v1/events", json=opened)
    assert again.status_code == 200
    assert again.json() == {"event_id": "evt-dup", "status": "duplicate"}
    app.drain()
    assert len(app.sink.received) == sent


def test_the_cli_prints_a_duplicate_as_such(
    app: App, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`amends emit` with an event id already applied prints "duplicate" instead of "enqueued"."""
    monkeypatch.setenv("AMENDS_REDIS_URL", app.settings.redis_url or "")
    argv = ["emit", "opened", "--incident", "INC-5", "--title", "Slow", "--severity", "sev3"]
    assert main([*argv, "--event-id", "evt-cli-dup"]) == 0
    app.drain()
    assert main([*argv, "--event-id", "evt-cli-dup"]) == 0
    out = capsys.readouterr().out
    assert "enqueued evt-cli-dup" in out and "duplicate evt-cli-dup" in out


def test_a_json_list_of_events_is_accepted_over_http(live: TestClient, app: App) -> None:
    """POST /v1/events takes a JSON list, answers each event's status, and the worker acts on all of them."""
    both = [event(event_id="evt-a"), event("updated", event_id="evt-b", status="identified")]
    response = live.post("/v1/events", json=both)
    assert response.status_code == 202
    assert response.json() == {
        "events": [{"event_id": "evt-a", "status": "enqueued"}, {"event_id": "evt-b", "status": "enqueued"}]
    }
    app.drain()
    assert any("identified" in m.part("plain") for m in app.sink.received)


def test_a_list_with_a_bad_event_names_every_problem_and_enqueues_none(
    api: TestClient, redis_url: str
) -> None:
    """One invalid event in a list gets 422 naming each field as events[i].field, and no event is enqueued."""
    bad: dict[str, Any] = event(event_id="evt-2")
    del bad["incident"]["title"]
    bad["incident"]["severity"] = "high"
    response = api.post("/v1/events", json=[event(event_id="evt-1"), bad])
    assert response.status_code == 422
    fields = {e["field"] for e in response.json()["errors"]}
    assert fields == {"events[1].incident.title", "events[1].incident.severity"}
    assert queued_events(redis_url) == 0


def test_every_missing_field_of_an_event_is_reported_at_once(api: TestClient) -> None:
    """An opened event lacking its incident id, title and severity is refused naming all three."""
    document = event()
    del document["incident_id"]
    document["incident"] = {}
    response = api.post("/v1/events", json=document)
    assert response.status_code == 422
    assert {e["field"] for e in response.json()["errors"]} == {
        "incident_id",
        "incident.title",
        "incident.severity",
    }


def test_missing_flags_are_reported_together(capsys: pytest.CaptureFixture[str]) -> None:
    """`amends emit opened` with no flags names --incident, --title and --severity in one go."""
    assert main(["emit", "opened"]) == 2
    err = capsys.readouterr().err
    for flag in ("(--incident)", "(--title)", "(--severity)"):
        assert flag in err


def test_review_by_must_be_a_date() -> None:
    """review_by is a calendar date written YYYY-MM-DD; anything else is refused on that field."""
    assert parse_event(event(review_by="2026-12-01")).incident.review_by == "2026-12-01"
    with pytest.raises(EventError) as refused:
        parse_event(event(review_by="next week"))
    assert refused.value.errors[0][0] == "incident.review_by"


def test_mailsink_creates_its_maildir_and_keeps_what_it_receives(tmp_path: Path) -> None:
    """`amends mailsink --port P --maildir DIR` creates the Maildir and files each message received under new/."""
    import argparse
    import smtplib
    import socket
    import threading

    from scheduler.cli.mailsink import cmd_mailsink

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    maildir = tmp_path / "mail"
    stop = threading.Event()
    args = argparse.Namespace(host="127.0.0.1", port=port, maildir=str(maildir))
    runner = threading.Thread(target=cmd_mailsink, args=(args, stop))
    runner.start()
    try:
        for _ in range(500):  # the server thread binds its port
            try:
                client = smtplib.SMTP("127.0.0.1", port, timeout=5)
                break
            except OSError:
                threading.Event().wait(0.01)
        client.sendmail("status@acme.example", ["reader@acme.example"], "Subject: hello\r\n\r\nbody\r\n")
        client.quit()
    finally:
        stop.set()
        runner.join(timeout=10)
    assert {p.name for p in maildir.iterdir()} == {"cur", "new", "tmp"}
    (kept,) = (maildir / "new").iterdir()
    assert b"Subject: hello" in kept.read_bytes()


def test_the_kept_tolerance_is_configurable() -> None:
    """`kept_within: 5m` counts a message sent two minutes after its promise as kept, not late."""
    import dataclasses
    from datetime import timedelta

    from scheduler.core.config import parse_config
    from scheduler.core.promises import promise_report
    from scheduler.mail.preflight import sample_communication

    config = parse_config({"sender": "A <s@a.example>", "kept_within": "5m"})
    comm = dataclasses.replace(
        sample_communication("update", "r", "UTC", T0), status="sent", sent_at=T0 + timedelta(minutes=2)
    )
    assert promise_report([comm], T0, grace_s=60).late == 1
    assert promise_report([comm], T0, grace_s=config.kept_within).on_time == 1
    assert parse_config({"sender": "A <s@a.example>"}).kept_within == 60


def test_stop_embedded_stops_the_servers_under_amends_home(tmp_path: Path) -> None:
    """`make stop-embedded` with AMENDS_HOME set stops the embedded Redis started there."""
    import os
    import subprocess

    from scheduler.dev.embedded import ensure_embedded_redis

    url = ensure_embedded_redis(tmp_path / "home" / "redis", persistent=False)
    assert redis.Redis.from_url(url).ping()
    repo = Path(__file__).parent.parent
    env = {**os.environ, "AMENDS_HOME": str(tmp_path / "home")}
    subprocess.run(["make", "-s", "-C", str(repo), "stop-embedded"], env=env, check=True, capture_output=True)
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
