"""One stakeholder's history across incidents, as JSON and as a page in real Chromium
(desktop and phone width): incidents, messages, promises, ratings, follow-ups; through a
real worker, a real Redis and a real SMTP server."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from scheduler import emit
from scheduler.mail.signing import sign
from tests.conftest import App, event
from tests.test_feedback_acted import READ, api
from tests.test_feedback_acted import TOKEN as API_TOKEN
from tests.test_review_page import CHROMIUM, TOKEN, base_url, chromium_page

pytestmark = pytest.mark.real
__all__ = ["api", "base_url"]  # the fixtures: the HTTP API in process and served by uvicorn

FIRST = datetime(2026, 11, 26, 14, 3, tzinfo=UTC)
SECOND = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)


def _two_incidents_with_feedback(app: App, post: Any, token: str) -> None:
    """INC-1 and INC-2 opened and resolved; ACME Finance rates INC-1 2 with a comment, is
    answered with a follow-up, and rates INC-2 5."""
    emit(event(at=FIRST), broker=app.broker)
    app.drain()
    app.clock.set(FIRST + timedelta(minutes=50))
    emit(event("resolved", at=FIRST + timedelta(minutes=50)), broker=app.broker)
    app.drain()
    app.clock.set(SECOND)
    emit(event(incident_id="INC-2", at=SECOND, title="Refunds delayed", severity="sev2"), broker=app.broker)
    app.drain()
    app.clock.set(SECOND + timedelta(minutes=20))
    emit(event("resolved", incident_id="INC-2", at=SECOND + timedelta(minutes=20)), broker=app.broker)
    app.drain()
    for incident_id, form in (
        ("INC-1", {"rating": "2", "comment": "Too late <again>."}),
        ("INC-2", {"rating": "5"}),
    ):
        sig = sign("test-secret", "feedback-comment", incident_id, "acme-finance")
        assert post(f"/feedback/{incident_id}/acme-finance", data={"sig": sig, **form}).status_code == 200
    answered = post(
        "/v1/incidents/INC-1/follow-ups",
        json={"stakeholder_id": "acme-finance", "text": "Updates now go out on the minute."},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert answered.status_code == 202, answered.text
    app.drain()


def test_the_history_lists_incidents_messages_promises_ratings_and_follow_ups(
    app: App, api: TestClient
) -> None:
    """GET /v1/stakeholders/acme-finance gives both incidents, as many messages as the SMTP server
    received for them, every promise kept, both ratings in time order and the follow-up."""
    _two_incidents_with_feedback(app, api.post, API_TOKEN)
    answered = api.get("/v1/stakeholders/acme-finance", headers={"Authorization": f"Bearer {READ}"})
    assert answered.status_code == 200, answered.text
    history = answered.json()
    assert history["id"] == "acme-finance" and history["name"] == "ACME Finance"
    assert [(i["id"], i["title"], i["severity"]) for i in history["incidents"]] == [
        ("INC-1", "Card payments failing", "sev1"),
        ("INC-2", "Refunds delayed", "sev2"),
    ]
    assert history["incidents"][0]["opened_at"] == "2026-11-26T14:03:00Z"
    assert history["incidents"][1]["resolved_at"] == "2026-11-27T09:20:00Z"
    received = len(app.sink.to("finance@acme.example"))
    assert history["messages"] == received and received >= 5
    assert history["promises"] == {"kept": received, "late": 0, "missed": 0}
    assert [(r["incident_id"], r["rating"], r["comment"]) for r in history["ratings"]] == [
        ("INC-1", 2, "Too late <again>."),
        ("INC-2", 5, ""),
    ]
    (follow_up,) = history["follow_ups"]
    assert follow_up["incident_id"] == "INC-1" and follow_up["text"] == "Updates now go out on the minute."
    assert follow_up["status"] == "sent"
    search = api.get("/v1/stakeholders/search-team", headers={"Authorization": f"Bearer {READ}"}).json()
    assert search["incidents"] == [] and search["promises"] == {"kept": 0, "late": 0, "missed": 0}
    assert api.get("/v1/stakeholders/nobody", headers={"Authorization": f"Bearer {READ}"}).status_code == 404
    assert api.get("/v1/stakeholders/acme-finance").status_code == 401


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")
@pytest.mark.parametrize("viewport", [{"width": 1280, "height": 900}, {"width": 390, "height": 844}])
def test_the_history_page_draws_kept_rate_and_ratings_and_fits_a_phone(
    app: App, base_url: str, tmp_path: Path, viewport: dict[str, int]
) -> None:
    """From the review page a stakeholder's name opens their history: both incidents, a kept-rate
    bar per incident and a dot per rating drawn as inline SVG, the comment beside our follow-up,
    within the screen's width and with no Content-Security-Policy complaint."""
    from playwright.sync_api import expect, sync_playwright

    with httpx.Client(base_url=base_url) as client:
        _two_incidents_with_feedback(app, client.post, TOKEN)
    with sync_playwright() as playwright:
        browser, page, violations = chromium_page(playwright, viewport)
        try:
            page.goto(f"{base_url}/")
            page.fill("input[name=token]", TOKEN)
            page.click("button[type=submit]")
            page.locator('[data-incident="INC-1"] [data-stakeholder="acme-finance"] a.history-link').click()
            expect(page.locator("h1")).to_contain_text("ACME Finance")
            expect(page.locator("[data-summary]")).to_contain_text("2 incidents")
            expect(page.locator("tr[data-incident]")).to_have_count(2)
            expect(page.locator("svg.history rect.kept-rate")).to_have_count(2)
            expect(page.locator("svg.history circle.rating")).to_have_count(2)
            entry = page.locator('.rating-entry[data-incident="INC-1"]')
            expect(entry).to_contain_text("rated 2 of 5")
            expect(entry.locator("blockquote.comment")).to_have_text("Too late <again>.")
            expect(entry.locator("blockquote.follow-up")).to_have_text("Updates now go out on the minute.")
            widths = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
            assert widths[0] <= widths[1], widths
            if os.environ.get("AMENDS_SCREENSHOT_DIR"):
                shot = Path(os.environ["AMENDS_SCREENSHOT_DIR"]) / f"stakeholder-{viewport['width']}.png"
                page.screenshot(path=str(shot), full_page=True)
            assert not violations, violations
        finally:
            browser.close()
