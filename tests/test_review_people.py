"""The review page as people use it, on a phone in real Chromium: names, messages, pending promises, a picture."""

from __future__ import annotations

import copy
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from scheduler.cli.main import main
from scheduler.service.loop import SchedulerLoop
from scheduler.service.processes import timer_sender
from scheduler.storage.timers import RedisTimerStore
from scheduler.web.review_view import promise_words
from tests.conftest import BASE_CONFIG, App, event
from tests.test_review_page import CHROMIUM, TOKEN, at, base_url, chromium_page, post_event

pytestmark = pytest.mark.real
__all__ = ["base_url"]  # the fixture, served by uvicorn

LONG_REPLY = "550 5.1.1 " + "mailbox-unavailable-" * 12 + " user unknown"


@pytest.fixture
def app_config() -> dict[str, Any]:
    config = copy.deepcopy(BASE_CONFIG)
    for stakeholder in config["stakeholders"]:
        if stakeholder["id"] == "payments-eng":
            stakeholder["quiet_hours"] = "22:00-07:00"  # 14:03 UTC is 23:03 in Tokyo
    return config


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")
def test_the_review_page_on_a_phone(app: App, base_url: str, tmp_path: Path) -> None:
    """On a phone-sized screen the page fits its width, names stakeholders (ids on hover), links each message,
    says which promise is held by quiet hours, wraps a long error and draws each incident's timeline."""
    from playwright.sync_api import expect, sync_playwright

    app.sink.rcpt_reply = lambda address: LONG_REPLY if address == "support@globex.example" else None
    loop = SchedulerLoop(RedisTimerStore(app.runtime.client), timer_sender(app.broker), clock=app.clock)
    post_event(base_url, event(at=app.clock()))
    app.drain()
    loop.tick(app.clock())
    app.drain()

    with sync_playwright() as playwright:
        browser, page, violations = chromium_page(playwright, {"width": 390, "height": 844})
        try:
            page.goto(f"{base_url}/")
            page.fill("input[name=token]", TOKEN)
            page.click("button[type=submit]")
            incident = page.locator('[data-incident="INC-1"]')
            eng = incident.locator('[data-stakeholder="payments-eng"]')
            expect(eng.locator("h3 .name")).to_have_text("Payments Engineering")
            assert eng.locator("h3 .name").get_attribute("title") == "payments-eng"
            expect(eng.locator(".promise-pending")).to_contain_text(
                "update held until Fri 27 Nov, 07:00 JST by quiet hours"
            )
            globex = incident.locator('[data-stakeholder="globex"]')
            expect(globex).to_contain_text("mailbox-unavailable")
            assert incident.locator("svg.timeline path.failed").count() == 1
            assert incident.locator("svg.timeline circle.sent.kept").count() == 2
            widths = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
            assert widths[0] <= widths[1], widths
            page.screenshot(path=str(tmp_path / "review-phone.png"), full_page=True)
            if os.environ.get("AMENDS_SCREENSHOT_DIR"):
                page.screenshot(
                    path=str(Path(os.environ["AMENDS_SCREENSHOT_DIR"]) / "review-phone.png"), full_page=True
                )

            globex.locator("tbody a").first.click()
            body = page.locator("body")
            expect(body).to_contain_text("is failed: it was not sent and will not be")
            expect(body).to_contain_text("What was composed")
            expect(body).to_contain_text("Subject: We are working on it: Card payments failing")
            page.go_back()
            incident.locator('[data-stakeholder="acme-finance"] tbody a').first.click()
            expect(page.locator("body")).to_contain_text(
                "Message-ID: <amends.INC-1.acme-finance@acme.example>"
            )
            assert not violations, violations
        finally:
            browser.close()


def test_a_message_link_needs_a_reader(app: App, base_url: str) -> None:
    """The page that shows a message as sent answers 401 without a token or the review cookie."""
    post_event(base_url, event(at=app.clock()))
    app.drain()
    response = httpx.get(f"{base_url}/review/messages/INC-1:globex:acknowledgment:1")
    assert response.status_code == 401
    signed_in = httpx.get(
        f"{base_url}/review/messages/INC-1:globex:acknowledgment:1",
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert signed_in.status_code == 200 and "Message-ID:" in signed_in.text
    assert "default-src 'none'" in signed_in.headers["content-security-policy"]


def test_log_show_of_a_failed_message_shows_what_was_composed(
    app: App, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`amends log show` of a message the server refused prints why, then the message as composed."""
    app.sink.rcpt_reply = lambda address: LONG_REPLY if address == "support@globex.example" else None
    monkeypatch.setenv("AMENDS_REDIS_URL", app.settings.redis_url or "")
    monkeypatch.setenv("AMENDS_CONFIG", str(app.config_path))
    from scheduler import emit

    emit(event(), broker=app.broker)
    app.drain()
    assert main(["log", "show", "INC-1:globex:acknowledgment:1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("INC-1:globex:acknowledgment:1 is failed: it was not sent and will not be.")
    assert "mailbox-unavailable" in out
    assert "To: Globex Support <support@globex.example>" in out and "Hello Globex Support," in out


@pytest.mark.parametrize(
    ("kind", "due", "expected"),
    [
        ("update", at(22, 0), "update held until Fri 27 Nov, 07:00 JST by quiet hours"),
        ("update", at(14, 30), "next update by 23:30 JST"),
        (
            "feedback_request",
            at(0, 0) + timedelta(days=1),
            "feedback request at Fri 27 Nov, 09:00 JST, when business hours begin",
        ),
        ("update", at(13, 0), "update promised by 22:00 JST is overdue"),
    ],
)
def test_pending_promises_are_put_in_words(kind: str, due: Any, expected: str) -> None:
    """A promise not yet kept reads as a person would say it, naming quiet or business hours when they hold it."""
    from scheduler.core.durations import parse_window

    words = promise_words(
        kind,
        due,
        at(14, 3),
        timezone="Asia/Tokyo",
        quiet_hours=parse_window("22:00-07:00"),
        business_hours=parse_window("09:00-17:00"),
    )
    assert words == expected


def test_a_long_stakeholder_name_in_the_timeline_ends_before_its_lane() -> None:
    """Names longer than the label column are clipped and squeezed to end before the first dot."""
    from datetime import UTC, datetime

    from scheduler.web.timeline_svg import _LEFT, Lane, Mark, timeline_svg

    t = datetime(2026, 11, 27, 7, 0, tzinfo=UTC)
    lanes = [Lane(name, (Mark("ack", t, t, "kept"),)) for name in ("ACME Finance", "Payments Engineering")]
    svg = timeline_svg(lanes, t, t + timedelta(hours=1), "Timeline")
    assert f'textLength="{_LEFT - 16}"' in svg.split("Payments Engine")[0].rsplit("<text", 1)[1]
    assert "ACME Finance" in svg and "textLength" not in svg.split("ACME Finance")[0].rsplit("<text", 1)[1]
