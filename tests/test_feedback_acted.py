"""Feedback acted on: the owner hears of a low rating or a comment at once and gets a digest
when the window closes, and the reader gets a follow-up in the incident's thread; through a
real worker, a real Redis, a real SMTP server and the HTTP API."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from scheduler import emit
from scheduler.cli.main import main
from scheduler.mail.signing import sign
from scheduler.web.app import create_app
from tests.conftest import BASE_CONFIG, App, event
from tests.helpers import sign_in

pytestmark = pytest.mark.real

TOKEN = "write-token"
READ = "read-token"
OWNER = "payments-oncall@acme.example"
CONTACT = "dana@acme.example"
OPENED = datetime(2026, 11, 26, 14, 3, tzinfo=UTC)
RESOLVED = datetime(2026, 11, 26, 15, 0, tzinfo=UTC)


@pytest.fixture
def app_config() -> dict[str, Any]:
    return {
        **BASE_CONFIG,
        "contact": {"name": "Dana Whitfield", "email": CONTACT},
        "owners": {"payments": {"name": "Payments on-call", "email": OWNER}},
        "feedback_digest_after": "3d",
        "review_reminder_before": "1d",
    }


@pytest.fixture
def api(app: App) -> Iterator[TestClient]:
    """The HTTP API on the app's Redis, configuration and clock, with both tokens."""
    settings = dataclasses.replace(app.settings, api_token=TOKEN, read_token=READ)
    with TestClient(create_app(settings, clock=app.clock), base_url="https://testserver") as client:
        yield client


def _resolved_incident(app: App) -> None:
    emit(event(at=OPENED), broker=app.broker)
    app.drain()
    app.clock.set(RESOLVED + timedelta(seconds=5))
    emit(event("resolved", at=RESOLVED, summary="Card payments work again."), broker=app.broker)
    app.drain()


def _answer(api: TestClient, stakeholder_id: str, **form: str) -> None:
    sig = sign("test-secret", "feedback-comment", "INC-1", stakeholder_id)
    answered = api.post(f"/feedback/INC-1/{stakeholder_id}", data={"sig": sig, **form})
    assert answered.status_code == 200, answered.text


def test_a_low_rating_with_a_comment_reaches_the_services_owner_within_the_next_tick(
    app: App, api: TestClient
) -> None:
    """A rating of 2 with a comment sends the payments owner a feedback_alert naming the reader,
    the rating and the comment as written (escaped in HTML), with a link to the review page."""
    _resolved_incident(app)
    _answer(api, "acme-finance", rating="2", comment='Updates came too late <b>twice</b> & "no news".')
    app.tick()
    (alert,) = app.sink.to(OWNER)
    text, html = alert.part("plain"), alert.part("html")
    assert (
        "Feedback from ACME Finance: 2 of 5, with a comment on Card payments failing"
        in alert.message["Subject"]
    )
    assert '> Updates came too late <b>twice</b> & "no news".' in text
    assert "Updates came too late &lt;b&gt;twice&lt;/b&gt; &amp; &#34;no news&#34;." in html
    assert "<b>twice</b>" not in html
    assert "https://status.acme.example/#incident-INC-1" in text
    assert "amends follow-up INC-1 acme-finance" in text
    assert app.sink.to(CONTACT) == []


def test_a_good_rating_alone_alerts_no_one_and_a_comment_alone_does(app: App, api: TestClient) -> None:
    """A 5 without a comment stays in the log and the digest; a comment with no rating still alerts."""
    _resolved_incident(app)
    _answer(api, "globex", rating="5")
    app.tick()
    assert app.sink.to(OWNER) == []
    _answer(api, "globex", comment="Clear and on time, thank you.")
    app.tick()
    (alert,) = app.sink.to(OWNER)
    assert "Feedback from Globex Support: 5 of 5, with a comment" in alert.message["Subject"]
    assert "> Clear and on time, thank you." in alert.part("plain")


def test_an_incident_of_a_service_without_an_owner_alerts_the_contact(app: App, api: TestClient) -> None:
    """With no ``owners`` entry for the incident's services the configured contact is the owner."""
    emit(event(at=OPENED, services=["checkout"], severity="sev2"), broker=app.broker)
    app.drain()
    _answer(api, "globex", rating="1")
    app.tick()
    (alert,) = app.sink.to(CONTACT)
    assert "Feedback from Globex Support: 1 of 5 on" in alert.message["Subject"]
    assert app.sink.to(OWNER) == []


def test_the_owner_gets_every_rating_and_comment_when_the_feedback_window_closes(
    app: App, api: TestClient
) -> None:
    """Three days after the resolution the owner gets one digest with each answer and the average."""
    _resolved_incident(app)
    _answer(api, "acme-finance", rating="2", comment="Too late.")
    _answer(api, "globex", rating="5")
    app.advance_to(RESOLVED + timedelta(days=3) - timedelta(minutes=1))
    assert [m for m in app.sink.to(OWNER) if "digest" in m.message["Subject"]] == []
    app.advance_to(RESOLVED + timedelta(days=3, minutes=1))
    (digest,) = [m for m in app.sink.to(OWNER) if "digest" in m.message["Subject"]]
    assert "Feedback digest, average 3.5 of 5" in digest.message["Subject"]
    text = digest.part("plain")
    assert "ACME Finance: 2 of 5" in text and "> Too late." in text
    assert "Globex Support: 5 of 5" in text
    assert "We told 3 stakeholders about it; 2 answered." in text


def test_a_follow_up_quotes_the_comment_in_the_readers_thread_and_is_logged(
    app: App, api: TestClient
) -> None:
    """POST /v1/incidents/INC-1/follow-ups answers 202 with the id, and the reader receives the
    follow-up in the incident's thread, quoting their comment, and the log keeps it as sent."""
    _resolved_incident(app)
    _answer(api, "acme-finance", rating="2", comment="Updates came too late.")
    answered = api.post(
        "/v1/incidents/INC-1/follow-ups",
        json={
            "stakeholder_id": "acme-finance",
            "text": "Updates now go out on the minute, also with no news.",
        },
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert answered.status_code == 202, answered.text
    comm_id = answered.json()["id"]
    assert comm_id.startswith("INC-1:acme-finance:follow_up:")
    app.drain()
    follow_up = app.sink.to("finance@acme.example")[-1]
    (ack,) = [m for m in app.sink.to("finance@acme.example") if m.message["In-Reply-To"] is None]
    assert follow_up.message["In-Reply-To"] == ack.message["Message-ID"]
    text = follow_up.part("plain")
    assert "> Updates came too late." in text
    assert "Updates now go out on the minute, also with no news." in text
    stored = app.runtime.store.comm(comm_id)
    assert stored.status == "sent" and "Updates now go out on the minute" in stored.message


def test_a_follow_up_names_the_field_it_cannot_take(app: App, api: TestClient) -> None:
    """An unknown incident or stakeholder, an empty text or a missing field get 422 naming the field."""
    _resolved_incident(app)
    bearer = {"Authorization": f"Bearer {TOKEN}"}

    def refused(path: str, body: Any) -> str:
        answered = api.post(path, json=body, headers=bearer)
        assert answered.status_code == 422, answered.text
        return str(answered.json()["errors"][0]["field"])

    assert (
        refused("/v1/incidents/INC-9/follow-ups", {"stakeholder_id": "globex", "text": "Done."})
        == "incident_id"
    )
    assert (
        refused("/v1/incidents/INC-1/follow-ups", {"stakeholder_id": "search-team", "text": "x"})
        == "stakeholder_id"
    )
    assert refused("/v1/incidents/INC-1/follow-ups", {"stakeholder_id": "globex", "text": " \n "}) == "text"
    assert refused("/v1/incidents/INC-1/follow-ups", {"stakeholder_id": "globex"}) == "text"
    no_token = api.post("/v1/incidents/INC-1/follow-ups", json={"stakeholder_id": "globex", "text": "Done."})
    assert no_token.status_code == 401


def test_amends_follow_up_sends_from_the_command_line(
    app: App, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`amends follow-up INC-1 globex "…"` sends the follow-up; an unknown stakeholder exits 1 naming it."""
    _resolved_incident(app)
    monkeypatch.setenv("AMENDS_REDIS_URL", app.settings.redis_url or "")
    monkeypatch.setenv("AMENDS_CONFIG", str(app.config_path))
    assert main(["follow-up", "INC-1", "globex", "We now page the owner on every comment."]) == 0
    assert "INC-1:globex:follow_up:" in capsys.readouterr().out
    app.drain()
    assert "We now page the owner on every comment." in app.sink.to("support@globex.example")[-1].part(
        "plain"
    )
    assert main(["follow-up", "INC-1", "nobody", "Hello."]) == 1
    assert "stakeholder_id: 'nobody' was not told of INC-1" in capsys.readouterr().err


def test_metrics_count_ratings_by_audience_and_value(app: App, api: TestClient) -> None:
    """/metrics counts each rating given under the reader's audience and the value."""
    _resolved_incident(app)
    _answer(api, "acme-finance", rating="2")
    _answer(api, "globex", rating="2")
    _answer(api, "payments-eng", rating="4")
    text = api.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).text
    assert 'amends_feedback_ratings_total{audience="customer",rating="2"} 2' in text
    assert 'amends_feedback_ratings_total{audience="engineering",rating="4"} 1' in text


def test_the_review_page_shows_comments_beside_their_follow_ups_and_the_averages(
    app: App, api: TestClient
) -> None:
    """The review page puts each comment beside what we answered, marks a comment with no
    follow-up yet, and shows each audience's average rating over 30 and 90 days."""
    _resolved_incident(app)
    _answer(api, "acme-finance", rating="2", comment="Updates came too late.")
    _answer(api, "globex", rating="4", comment="Fine <i>overall</i>.")
    api.post(
        "/v1/incidents/INC-1/follow-ups",
        json={"stakeholder_id": "acme-finance", "text": "Updates now go out on the minute."},
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    app.drain()
    assert sign_in(api, TOKEN).status_code == 303
    page = api.get("/").text
    finance = page.split('data-stakeholder="acme-finance"')[1].split('data-stakeholder="')[0]
    assert "Updates came too late." in finance and "Updates now go out on the minute." in finance
    assert "no follow-up yet" not in finance
    globex = page.split('data-stakeholder="globex"')[1].split('data-stakeholder="')[0]
    assert "no follow-up yet" in globex and "Fine &lt;i&gt;overall&lt;/i&gt;." in globex
    averages = page.split('id="ratings"')[1].split("</section>")[0]
    assert 'data-audience="customer"' in averages
    assert averages.count("3.0 of 5 (2 ratings)") == 2


def test_a_stakeholder_id_kept_for_owners_is_refused_with_its_place() -> None:
    """A stakeholder may not take the id an incident owner is addressed by ('owner', 'owner.<service>')."""
    from scheduler.core.config import parse_config
    from scheduler.errors import ConfigError

    config = {
        **BASE_CONFIG,
        "stakeholders": [
            *BASE_CONFIG["stakeholders"],
            {"id": "owner", "name": "O", "email": "o@acme.example"},
        ],
    }
    with pytest.raises(ConfigError) as refused:
        parse_config(config)
    assert refused.value.errors == [
        (
            "stakeholders[4].id",
            "'owner' is kept for incident owners ('owner', 'owner.<service>'); choose another id",
        )
    ]
