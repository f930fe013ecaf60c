"""The review page and the feedback flow in a real browser (Debian's Chromium driven by Playwright),
against the API served by uvicorn, a real worker, real Redis and a real SMTP server."""

from __future__ import annotations

import html
import re
import shutil
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn

from scheduler.web.app import create_app, server_config
from tests.conftest import App, event
from tests.helpers import at
from tests.realservers import free_port

pytestmark = pytest.mark.real

TOKEN = "review-page-token"
CHROMIUM = shutil.which("chromium")


def launch_chromium(playwright: Any) -> Any:
    """Headless Chromium as the tests run it: the system's, without sandbox, GPU or background traffic."""
    return playwright.chromium.launch(
        executable_path=CHROMIUM,
        args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        headless=True,
    )


def chromium_page(playwright: Any, viewport: dict[str, int]) -> tuple[Any, Any, list[str]]:
    """Chromium, one page of ``viewport`` (2x pixels), and the Content-Security-Policy
    complaints its console reports (a test asserts there are none)."""
    browser = launch_chromium(playwright)
    page = browser.new_context(viewport=viewport, device_scale_factor=2).new_page()
    page.set_default_timeout(15_000)
    violations: list[str] = []
    page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
    return browser, page, violations


STAKEHOLDERS = ("acme-finance", "globex", "payments-eng")


@pytest.fixture
def base_url(app: App) -> Iterator[str]:
    """The API served by uvicorn on a free local port, on the worker's clock."""
    api = create_app(app.settings.with_(api_token=TOKEN), clock=app.clock)
    port = free_port()
    server = uvicorn.Server(server_config(api, "127.0.0.1", port))
    thread = threading.Thread(target=server.run, name="amends-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:  # startup is not an event we can join on
        assert thread.is_alive() and time.monotonic() < deadline, "the API did not start"
        time.sleep(0.01)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def post_event(base_url: str, document: dict[str, object]) -> None:
    response = httpx.post(
        f"{base_url}/v1/events", json=document, headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert response.status_code == 202, response.text


def rating_link(app: App, base_url: str, address: str, rating: int) -> str:
    """The rating link of the feedback request ``address`` received, pointed at this server."""
    body = app.sink.to(address)[-1].part("html")
    hrefs = [html.unescape(h) for h in re.findall(r'href="([^"]+)"', body)]
    (link,) = [h for h in hrefs if f"rating={rating}&" in h]
    return link.replace("https://status.acme.example", base_url)


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")
def test_review_page_shows_timelines_and_the_feedback_given_in_the_browser(app: App, base_url: str) -> None:
    """A person signs in to the review page, rates and comments from the emailed link, and sees it reviewed."""
    from playwright.sync_api import expect, sync_playwright

    post_event(base_url, event(at=app.clock(), title="Card payments failing <for some>"))
    app.drain()
    app.advance_to(at(14, 25))
    app.clock.set(at(14, 30))
    post_event(base_url, event("resolved", summary="Fixed.", at=app.clock()))
    app.drain()
    app.advance_to(at(16, 31))  # feedback requests: resolved + 2h
    link = rating_link(app, base_url, "support@globex.example", 4)

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            page = browser.new_context().new_page()
            page.set_default_timeout(15_000)
            page.goto(f"{base_url}/")
            page.fill("input[name=token]", TOKEN)
            page.click("button[type=submit]")
            expect(page.locator("h1")).to_have_text("Incidents and their communications")
            assert page.url == f"{base_url}/" and TOKEN not in page.url
            incident = page.locator('[data-incident="INC-1"]')
            expect(incident.locator("h2")).to_contain_text("Card payments failing <for some>")
            expect(incident).to_contain_text("resolved")
            for stakeholder in STAKEHOLDERS:
                timeline = incident.locator(f'[data-stakeholder="{stakeholder}"]')
                kinds = timeline.locator("tbody tr td:nth-child(2)").all_inner_texts()
                assert kinds[0] == "acknowledgment" and kinds[-2:] == ["resolution", "feedback_request"]
                badges = timeline.locator("tbody .badge").all_inner_texts()
                assert badges == ["kept"] * len(kinds), stakeholder
                expect(timeline).to_contain_text("No feedback yet.")
            finance = incident.locator('[data-stakeholder="acme-finance"]')
            expect(finance.locator("tbody tr").first).to_contain_text("CET")  # the stakeholder's own zone

            page.goto(link)
            expect(page.locator("input[name=rating][value='4']")).to_be_checked()
            page.fill("textarea[name=comment]", "Updates were on time; say more about the cause.")
            page.click("button[type=submit]")
            expect(page.locator(".thanks")).to_have_text(
                "Thank you! You rated our messages 4 of 5, and your comment was recorded."
            )

            page.goto(f"{base_url}/")
            globex = page.locator('[data-incident="INC-1"] [data-stakeholder="globex"]')
            expect(globex.locator(".rating")).to_have_text("rated 4 of 5")
            expect(globex.locator(".comment")).to_have_text("Updates were on time; say more about the cause.")
            expect(page.locator('[data-stakeholder="acme-finance"]')).to_contain_text("No feedback yet.")
        finally:
            browser.close()
