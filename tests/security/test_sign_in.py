"""The review page's sign-in: a server-side session (random id, expiring, ended by sign-out
and by rotating the token), CSRF values on its forms, and ``Secure`` when base_url is https."""

from __future__ import annotations

import copy
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import redis
from fastapi.testclient import TestClient

from scheduler.web.app import create_app
from scheduler.web.sessions import SESSION_TTL_S
from tests.conftest import BASE_CONFIG, App
from tests.helpers import sign_in
from tests.realservers import free_port
from tests.security.conftest import READ, TOKEN, Served, secured
from tests.test_review_page import CHROMIUM, launch_chromium

pytestmark = pytest.mark.real


def _session_cookie(response: object) -> str:
    """The value of the session cookie a response sets, with its attributes."""
    cookies = [c for c in response.headers.get_list("set-cookie") if c.startswith("amends_review=")]  # type: ignore[attr-defined]
    assert len(cookies) == 1, cookies
    return cookies[0]


def _value(cookie: str) -> str:
    return cookie.split(";", 1)[0].split("=", 1)[1]


def _browser(app: App, token: str | None = None, **settings: object) -> TestClient:
    client = TestClient(
        create_app(secured(app).with_(**settings), clock=app.clock), base_url="https://testserver"
    )
    if token is not None:
        assert sign_in(client, token).status_code == 303
    return client


def test_a_session_is_a_random_id_that_expires(web: TestClient, app: App, redis_client: redis.Redis) -> None:
    """Two sign-ins with the same token get different cookies, neither holding or derived from
    the token; each is a Redis record that expires within 12 hours, as the cookie does."""
    first = _session_cookie(sign_in(web, READ))
    with _browser(app) as other:
        second = _session_cookie(sign_in(other, READ))
    assert _value(first) != _value(second) and READ not in first + second
    assert "Max-Age=43200" in first and "HttpOnly" in first and "SameSite=strict" in first
    for cookie in (first, second):
        ttl = redis_client.ttl(f"amends:session:{_value(cookie)}")
        assert 0 < ttl <= SESSION_TTL_S


def test_signing_out_ends_the_session_even_for_a_replayed_cookie(web: TestClient, app: App) -> None:
    """After sign-out from the page's button, the same cookie sent again opens only the sign-in form."""
    cookie = _value(_session_cookie(sign_in(web, TOKEN)))
    page = web.get("/")
    assert page.status_code == 200
    csrf = re.search(r'action="/signout".*?name="csrf" value="([^"]+)"', page.text)
    assert csrf
    assert web.post("/signout", data={"csrf": csrf.group(1)}, follow_redirects=False).status_code == 303
    with _browser(app) as replay:
        replay.cookies.set("amends_review", cookie)
        assert replay.get("/").status_code == 401
        assert replay.get("/review/messages/x").status_code == 401


def test_sign_out_without_its_csrf_value_ends_nothing(web: TestClient) -> None:
    """A sign-out POST without the session's CSRF value (another site's form) is 403 and the session goes on."""
    sign_in(web, READ)
    assert web.post("/signout", data={}, follow_redirects=False).status_code == 403
    assert web.post("/signout", data={"csrf": "0" * 32}, follow_redirects=False).status_code == 403
    assert web.get("/").status_code == 200


def test_rotating_a_token_ends_the_sessions_made_with_it(web: TestClient, app: App) -> None:
    """A server restarted with a new read token refuses the old read sessions; API token sessions go on."""
    reader = _value(_session_cookie(sign_in(web, READ)))
    with _browser(app) as operator_browser:
        operator = _value(_session_cookie(sign_in(operator_browser, TOKEN)))
    with _browser(app, read_token="a-rotated-read-token") as rotated:
        rotated.cookies.set("amends_review", reader)
        assert rotated.get("/").status_code == 401
        rotated.cookies.set("amends_review", operator)
        assert rotated.get("/").status_code == 200


def test_sign_in_needs_the_forms_own_csrf_value(web: TestClient, app: App) -> None:
    """A POST of a valid token without the sign-in form's CSRF value, with another browser's,
    or from another site's page is 403 and signs no one in (login CSRF)."""
    cases = [
        ({"token": TOKEN}, {}),
        ({"token": TOKEN, "csrf": "0" * 32}, {}),
    ]
    with _browser(app) as attacker:
        form = attacker.get("/")
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert csrf
        cases.append(({"token": TOKEN, "csrf": csrf.group(1)}, {}))  # the attacker's form, without its cookie
    for data, headers in cases:
        refused = web.post("/signin", data=data, headers=headers, follow_redirects=False)
        assert refused.status_code == 403 and "amends_review=" not in str(
            refused.headers.get_list("set-cookie")
        )
    web.get("/")  # this browser's own form: its cookie and CSRF value, but posted from another site
    own = re.search(r'name="csrf" value="([^"]+)"', web.get("/").text)
    assert own
    cross = web.post(
        "/signin",
        data={"token": TOKEN, "csrf": own.group(1)},
        headers={"Origin": "https://attacker.example"},
        follow_redirects=False,
    )
    assert cross.status_code == 403
    assert web.get("/").status_code == 401
    assert sign_in(web, TOKEN).status_code == 303 and web.get("/").status_code == 200


def test_the_session_cookie_is_secure_when_base_url_is_https(app: App) -> None:
    """With an https base_url the cookie is Secure; with an http one (a loopback demo) it is not."""
    with _browser(app) as https_site:
        assert "Secure" in _session_cookie(sign_in(https_site, READ))
    config = copy.deepcopy(BASE_CONFIG)
    config["base_url"] = "http://127.0.0.1:8000"
    app.write_config(config)
    with TestClient(create_app(secured(app), clock=app.clock)) as http_site:
        assert "Secure" not in _session_cookie(sign_in(http_site, READ))


# -- in a real browser ----------------------------------------------------------------------


@pytest.fixture
def attacker_site() -> Iterator[str]:
    """Another origin whose page posts a sign-in form to the URL given as ``?to=`` with its own token."""

    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            target = self.path.split("?to=", 1)[1]
            body = (
                f'<form id="f" method="post" action="{target}/signin">'
                f'<input name="token" value="{READ}"><input name="csrf" value="{"0" * 32}"></form>'
                '<script>document.getElementById("f").submit()</script>'
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://localhost:{server.server_address[1]}"
    server.shutdown()
    thread.join(10)


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")
def test_in_chromium_another_site_cannot_sign_the_browser_in_and_sign_out_revokes(
    served: Served, attacker_site: str
) -> None:
    """In Chromium, a page on another origin that posts the sign-in form with its token leaves
    the browser signed out; the real form signs in, and its sign-out button ends the session."""
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            context = browser.new_context()
            page = context.new_page()
            page.set_default_timeout(15_000)
            page.goto(f"{served.url}/")  # the sign-in form, and its cookie
            page.goto(f"{attacker_site}/?to={served.url}")
            page.wait_for_load_state()
            page.goto(f"{served.url}/")
            expect(page.locator("h1")).to_have_text("Sign in")
            page.fill("input[name=token]", READ)
            page.click("button[type=submit]")
            expect(page.locator("h1")).to_have_text("Incidents and their communications")
            [session] = [c for c in context.cookies() if c["name"] == "amends_review"]
            page.click("form.sign-out button")
            expect(page.locator("h1")).to_have_text("Sign in")
            context.add_cookies([session])  # the old cookie replayed
            page.goto(f"{served.url}/")
            expect(page.locator("h1")).to_have_text("Sign in")
        finally:
            browser.close()


def test_a_read_token_equal_to_the_api_token_still_signs_in(app: App) -> None:
    """When both variables hold the same token, signing in with it opens the page as the operator."""
    with _browser(app, TOKEN, read_token=TOKEN) as browser:
        assert browser.get("/").status_code == 200
