"""The promised post-incident review is kept like an update promise: the owner is reminded,
readers of the resolution get the review when it is published, and an honest word (with
the new date, when there is one) when the day passes without it; through a real worker,
a real Redis and a real SMTP server."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from scheduler import emit
from scheduler.cli.main import main
from tests.conftest import App, event
from tests.helpers import sign_in
from tests.test_feedback_acted import OWNER, TOKEN, api, app_config

pytestmark = pytest.mark.real
__all__ = ["api", "app_config"]  # the fixtures: the owners' configuration and the HTTP API

READERS = ("finance@acme.example", "support@globex.example", "eng@acme.example")
OPENED = datetime(2026, 11, 26, 14, 3, tzinfo=UTC)
RESOLVED = datetime(2026, 11, 26, 15, 0, tzinfo=UTC)
URL = "https://status.acme.example/reviews/INC-1"


def _resolved_with_a_review_promised(app: App) -> None:
    emit(event(at=OPENED, review_by="2026-12-01"), broker=app.broker)
    app.drain()
    app.clock.set(RESOLVED + timedelta(seconds=5))
    emit(event("resolved", at=RESOLVED, summary="Card payments work again."), broker=app.broker)
    app.drain()


def _publish(app: App, at: datetime, **incident: Any) -> None:
    app.clock.set(at + timedelta(seconds=2))
    emit(event("review_published", at=at, review_url=URL, **incident), broker=app.broker)
    app.drain()


def _kind(app: App, address: str, words: str) -> list[Any]:
    return [m for m in app.sink.to(address) if words in m.message["Subject"]]


def test_the_owner_is_reminded_and_every_reader_of_the_resolution_gets_the_review(app: App) -> None:
    """A day before the promised date the owner gets a review_reminder; when the review is
    published each reader of the resolution gets it in the incident's thread, and no late word follows."""
    _resolved_with_a_review_promised(app)
    app.advance_to(datetime(2026, 11, 30, 23, 59, tzinfo=UTC))
    assert _kind(app, OWNER, "Review due") == []
    app.advance_to(datetime(2026, 12, 1, 0, 1, tzinfo=UTC))
    (reminder,) = _kind(app, OWNER, "Review due")
    assert "[INC-1] Review due Tuesday 1 December 2026: Card payments failing" in reminder.message["Subject"]
    assert "We promised 3 stakeholders a post-incident review" in reminder.part("plain")
    _publish(
        app,
        datetime(2026, 12, 1, 10, 0, tzinfo=UTC),
        summary="An expired certificate; renewals are automatic now.",
    )
    for address in READERS:
        (review,) = _kind(app, address, "Post-incident review")
        (ack,) = [m for m in app.sink.to(address) if m.message["In-Reply-To"] is None]
        assert review.message["In-Reply-To"] == ack.message["Message-ID"]
        assert URL in review.part("plain") and f'href="{URL}"' in review.part("html")
        assert "An expired certificate; renewals are automatic now." in review.part("plain")
    assert app.sink.to("search@acme.example") == []
    assert app.runtime.store.incident("INC-1").summary == "Card payments work again."
    app.advance_to(datetime(2026, 12, 4, tzinfo=UTC))
    assert [m for a in READERS for m in _kind(app, a, "is late")] == []


def test_a_missed_date_is_said_plainly_with_the_new_date_an_update_set(app: App, api: TestClient) -> None:
    """When 1 December passes without the review, each reader gets a review_delayed naming the
    promised date and the later date an update set; the review published then counts as late."""
    _resolved_with_a_review_promised(app)
    app.clock.set(datetime(2026, 11, 30, 9, 0, 5, tzinfo=UTC))
    emit(
        event("updated", at=datetime(2026, 11, 30, 9, 0, tzinfo=UTC), review_by="2026-12-04"),
        broker=app.broker,
    )
    app.drain()
    app.advance_to(datetime(2026, 12, 2, 0, 5, tzinfo=UTC))
    for address in READERS:
        (late,) = _kind(app, address, "is late")
        text = " ".join(late.part("plain").split())
        assert (
            'We promised you a post-incident review of "Card payments failing" by Tuesday 1 December 2026.'
            in text
        )
        assert "we did not keep that promise" in text
        assert "We will publish it by Friday 4 December 2026" in text
    _publish(app, datetime(2026, 12, 3, 12, 0, tzinfo=UTC))
    assert all(len(_kind(app, a, "Post-incident review")) == 1 for a in READERS)
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    assert 'amends_review_promises{outcome="late"} 1' in api.get("/metrics", headers=bearer).text
    assert sign_in(api, TOKEN).status_code == 303
    page = api.get("/").text
    assert 'data-review="late"' in page and "review promised by Tuesday 1 December 2026, published" in page


def test_a_missed_date_with_no_new_one_is_said_once_and_counts_as_missed(
    app: App, api: TestClient, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With no new date the late word says there is none yet, is sent once per reader, and
    the promise shows as missed in /metrics and `amends log --promises`."""
    _resolved_with_a_review_promised(app)
    app.advance_to(datetime(2026, 12, 9, tzinfo=UTC))
    for address in READERS:
        (late,) = _kind(app, address, "is late")
        assert "We do not have a new date yet." in late.part("plain")
    metrics = api.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).text
    assert 'amends_review_promises{outcome="missed"} 1' in metrics
    monkeypatch.setenv("AMENDS_REDIS_URL", app.settings.redis_url or "")
    monkeypatch.setenv("AMENDS_CONFIG", str(app.config_path))
    assert main(["log", "--promises", "--since", "3650d", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["reviews"] == {"kept": 0, "late": 0, "missed": 1, "pending": 0}
    assert main(["log", "--promises", "--since", "3650d"]) == 0
    assert (
        "post-incident reviews promised: 1; kept 0, late 0, missed 1, not due yet 0"
        in capsys.readouterr().out
    )


def test_review_published_needs_its_address_and_is_the_only_event_that_carries_one(app: App) -> None:
    """A review_published without review_url, or another event with one, is refused naming incident.review_url."""
    from scheduler.core.events import parse_event
    from scheduler.errors import EventError

    with pytest.raises(EventError) as missing:
        parse_event(event("review_published"))
    assert (
        "incident.review_url",
        "is required when type is incident.review_published",
    ) in missing.value.errors
    with pytest.raises(EventError) as elsewhere:
        parse_event(event("updated", review_url=URL))
    assert any(place == "incident.review_url" for place, _ in elsewhere.value.errors)
    with pytest.raises(EventError) as bad:
        parse_event(event("review_published", review_url="javascript:alert(1)"))
    assert any(place == "incident.review_url" for place, _ in bad.value.errors)


def test_a_review_date_set_after_a_resolution_that_promised_none_promises_readers_nothing(app: App) -> None:
    """Readers whose resolution named no review date are not told of a missed one when an update sets it later."""
    emit(event(at=OPENED), broker=app.broker)
    app.drain()
    app.clock.set(RESOLVED + timedelta(seconds=5))
    emit(event("resolved", at=RESOLVED), broker=app.broker)
    app.drain()
    app.clock.set(RESOLVED + timedelta(hours=1))
    emit(event("updated", at=RESOLVED + timedelta(hours=1), review_by="2026-12-01"), broker=app.broker)
    app.drain()
    app.advance_to(datetime(2026, 12, 4, tzinfo=UTC))
    assert [m for a in READERS for m in _kind(app, a, "is late")] == []
    assert app.runtime.store.incident("INC-1").review_promised is None
