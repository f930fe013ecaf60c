"""The HTTP API against a real Redis; the end-to-end ones with a real worker and SMTP server."""

from __future__ import annotations

import html
import json
import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from scheduler.core.model import Kind, ms_of
from scheduler.errors import SettingsError
from scheduler.mail.signing import feedback_links, feedback_page_link, sign, unsubscribe_link
from scheduler.service.queues import EVENTS_QUEUE, build_broker
from scheduler.service.settings import Settings
from scheduler.storage import keys
from scheduler.storage.redis_store import RedisStore
from scheduler.storage.timers import RedisTimerStore
from scheduler.web.app import create_app, server_config
from tests.conftest import App, event
from tests.helpers import draft_builder, sign_in, stored_incident

pytestmark = pytest.mark.real

TOKEN = "test-api-token"
SECRET = "test-secret"
BASE = "http://testserver"
T0 = datetime(2026, 11, 26, 14, 3, 5, tzinfo=UTC)


def _client(settings: Settings, clock: Any = None) -> TestClient:
    client = TestClient(create_app(settings, clock=clock) if clock else create_app(settings))
    client.headers["Authorization"] = f"Bearer {TOKEN}"
    return client


@pytest.fixture
def api(redis_url: str, redis_client: redis.Redis) -> Iterator[TestClient]:
    """The API on the test Redis with no worker behind it: what it enqueues stays queued."""
    settings = Settings(redis_url=redis_url, api_token=TOKEN, secret_key=SECRET)
    with _client(settings, lambda: T0) as client:
        yield client


@pytest.fixture
def live(app: App) -> Iterator[TestClient]:
    """The API in front of a running worker and SMTP server, on the worker's clock."""
    with _client(app.settings.with_(api_token=TOKEN), app.clock) as client:
        yield client


def queued_events(redis_url: str) -> int:
    broker = build_broker(redis_url)
    try:
        return int(broker.do_qsize(EVENTS_QUEUE))
    finally:
        broker.close()


def opened_with_checkout_incident(live: TestClient, app: App) -> None:
    """INC-1 (payments, sev1: three stakeholders) then INC-2 (checkout, sev3: globex only)."""
    assert live.post("/v1/events", json=event()).status_code == 202
    app.drain()
    app.clock.advance(minutes=5)
    inc2 = event(incident_id="INC-2", title="Checkout slow", severity="sev3", services=["checkout"])
    assert live.post("/v1/events", json=inc2).status_code == 202
    app.drain()


# -- POST /v1/events ----------------------------------------------------------------------


def test_an_accepted_event_is_acknowledged_by_email(live: TestClient, app: App) -> None:
    """A valid event gets 202 with its id, and the worker then sends each concerned stakeholder an acknowledgment."""
    opened = event(event_id="evt-42")
    response = live.post("/v1/events", json=opened)
    assert response.status_code == 202
    assert response.json() == {"event_id": "evt-42", "status": "enqueued"}
    app.drain()
    assert {m.rcpt_tos[0] for m in app.sink.received} == {
        "finance@acme.example",
        "support@globex.example",
        "eng@acme.example",
    }


def test_an_accepted_event_lands_on_the_events_queue(api: TestClient, redis_url: str) -> None:
    """202 means the event is on the Dramatiq events queue."""
    assert api.post("/v1/events", json=event()).status_code == 202
    assert queued_events(redis_url) == 1


def test_an_invalid_event_is_refused_with_its_fields_and_kept(
    api: TestClient, redis_url: str, redis_client: redis.Redis
) -> None:
    """A bad event gets 422 naming each wrong field, is not enqueued, and is kept as rejected."""
    bad = event(severity="sev9")
    del bad["source"]
    response = api.post("/v1/events", json=bad)
    assert response.status_code == 422
    fields = {e["field"]: e["reason"] for e in response.json()["errors"]}
    assert set(fields) == {"incident.severity", "source"}
    assert "sev1" in fields["incident.severity"]
    assert queued_events(redis_url) == 0
    (kept,) = RedisStore(redis_client).rejected()
    assert kept["via"] == "api" and kept["event"]["incident_id"] == "INC-1"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "an event is a JSON object"),
        (json.dumps(event(summary="x" * 70_000)).encode(), "larger than 65536 bytes"),
    ],
)
def test_a_body_that_is_not_one_json_event_is_refused(
    api: TestClient, redis_url: str, body: bytes, reason: str
) -> None:
    """Non-JSON, a JSON non-object and a body over 64 KiB get 422 with the reason, and nothing is enqueued."""
    response = api.post("/v1/events", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    assert reason in response.json()["errors"][0]["reason"]
    assert queued_events(redis_url) == 0


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-token", f"Basic {TOKEN}", f"Bearer {TOKEN}x", "Bearer ünïcode".encode("latin-1")],
)
def test_without_the_token_nothing_is_accepted_or_shown(
    api: TestClient, redis_url: str, authorization: str | bytes | None
) -> None:
    """A missing or wrong bearer token gets 401 on every /v1 endpoint and /metrics, and enqueues nothing."""
    headers = {"Authorization": authorization} if authorization else {}
    api.headers.pop("Authorization")
    response = api.post("/v1/events", json=event(), headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    for path in (
        "/v1/communications",
        "/v1/communications/x",
        "/v1/incidents",
        "/v1/incidents/INC-1",
        "/metrics",
    ):
        assert api.get(path, headers=headers).status_code == 401, path
    assert queued_events(redis_url) == 0


# -- the log and incidents ------------------------------------------------------------------


def test_communications_filter_like_the_log(live: TestClient, app: App) -> None:
    """incident, stakeholder, kind, status, since and limit narrow /v1/communications as `amends log` does."""
    opened_with_checkout_incident(live, app)

    def ids(**query: Any) -> list[str]:
        response = live.get("/v1/communications", params=query)
        assert response.status_code == 200, response.text
        return [c["id"] for c in response.json()["communications"]]

    assert len(ids()) == 4
    assert ids(incident="INC-2") == ["INC-2:globex:acknowledgment:1"]
    assert ids(stakeholder="globex") == ["INC-2:globex:acknowledgment:1", "INC-1:globex:acknowledgment:1"]
    assert len(ids(kind="acknowledgment", status="sent")) == 4
    assert ids(kind="update") == []
    assert ids(since="3m") == ["INC-2:globex:acknowledgment:1"]
    assert ids(limit=1) == ["INC-2:globex:acknowledgment:1"]
    app.clock.advance(hours=3)
    assert ids(since="2h") == []
    (one,) = live.get("/v1/communications", params={"incident": "INC-2"}).json()["communications"]
    assert one["status"] == "sent" and one["recipient"] == "support@globex.example"
    assert one["lateness_s"] is not None and one["promised_at"].endswith("Z")


def test_communications_are_newest_first_and_page_with_a_cursor(live: TestClient, app: App) -> None:
    """limit=1 pages through the log newest first; each page's next_cursor leads on; the last has none."""
    opened_with_checkout_incident(live, app)
    everything = [c["id"] for c in live.get("/v1/communications").json()["communications"]]
    assert everything[0].startswith("INC-2:") and len(everything) == 4
    paged, cursor = [], None
    for _ in range(10):
        body = live.get(
            "/v1/communications", params={"limit": 1, **({"cursor": cursor} if cursor else {})}
        ).json()
        paged += [c["id"] for c in body["communications"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert paged == everything
    bad = live.get("/v1/communications", params={"cursor": "yesterday"})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "cursor"


def test_bad_filters_are_refused_with_their_field(api: TestClient) -> None:
    """An unknown kind or status, a bad duration or a bad limit gets 422 naming the parameter."""
    response = api.get("/v1/communications", params={"kind": "memo", "status": "lost", "since": "soon"})
    assert response.status_code == 422
    assert {e["field"] for e in response.json()["errors"]} == {"kind", "status", "since"}
    response = api.get("/v1/communications", params={"limit": "0"})
    assert response.status_code == 422 and response.json()["errors"][0]["field"] == "limit"


def test_one_communication_comes_with_the_message_as_sent(live: TestClient, app: App) -> None:
    """/v1/communications/{id} adds the full message, headers included; an unknown id is 404."""
    live.post("/v1/events", json=event())
    app.drain()
    response = live.get("/v1/communications/INC-1:globex:acknowledgment:1")
    assert response.status_code == 200
    body = response.json()
    assert body["subject"] and body["subject"] in body["message"]
    assert "Message-ID: <amends.INC-1.globex@acme.example>" in body["message"]
    assert live.get("/v1/communications/INC-1:globex:acknowledgment:9").status_code == 404


def test_incidents_newest_first_and_one_with_its_threads(live: TestClient, app: App) -> None:
    """/v1/incidents lists the newest first; /v1/incidents/{id} groups its communications by stakeholder."""
    opened_with_checkout_incident(live, app)
    listed = live.get("/v1/incidents").json()["incidents"]
    assert [i["id"] for i in listed] == ["INC-2", "INC-1"]
    assert listed[1]["title"] == "Card payments failing" and listed[1]["state"] == "open"
    assert listed[1]["opened_at"] == "2026-11-26T14:03:00Z" and "opened_ms" not in listed[1]
    detail = live.get("/v1/incidents/INC-1").json()
    assert detail["incident"]["severity"] == "sev1"
    assert set(detail["communications"]) == {"acme-finance", "globex", "payments-eng"}
    assert [c["kind"] for c in detail["communications"]["globex"]] == ["acknowledgment"]
    assert detail["feedback"] == {}
    assert live.get("/v1/incidents/INC-404").status_code == 404
    first = live.get("/v1/incidents", params={"limit": 1}).json()
    assert [i["id"] for i in first["incidents"]] == ["INC-2"] and first["next_cursor"]
    rest = live.get("/v1/incidents", params={"limit": 1, "cursor": first["next_cursor"]}).json()
    assert [i["id"] for i in rest["incidents"]] == ["INC-1"] and rest["next_cursor"] is None
    assert live.get("/v1/incidents", params={"cursor": "nonsense"}).status_code == 422
    recent = live.get("/v1/incidents", params={"since": "30d"}).json()["incidents"]
    assert [i["id"] for i in recent] == ["INC-2", "INC-1"]
    bad = live.get("/v1/incidents", params={"since": "soon"})
    assert bad.status_code == 422 and "since" in bad.text


# -- feedback links -------------------------------------------------------------------------


def test_a_rating_link_shows_the_rating_chosen_and_the_form_records_it(live: TestClient, app: App) -> None:
    """Opening a rating link records nothing; sending its form does (visible in the incident and on the review page); a later one replaces it."""
    live.post("/v1/events", json=event())
    app.drain()
    links = feedback_links(BASE, SECRET, "INC-1", "globex")
    page = live.get(links[4])
    assert page.status_code == 200 and "You chose 4 of 5" in page.text
    assert 'value="4" checked' in page.text
    assert live.get("/v1/incidents/INC-1").json()["feedback"] == {}  # a link scanner's GET records nothing
    action, sig = _comment_form(page.text)
    sent = live.post(action, data={"sig": sig, "rating": "4"})
    assert sent.status_code == 200 and "Thank you! You rated our messages 4 of 5." in sent.text
    app.clock.advance(minutes=1)
    live.post(action, data={"sig": sig, "rating": "2"})
    feedback = live.get("/v1/incidents/INC-1").json()["feedback"]
    assert feedback == {
        "globex": {"rating": 2, "rated_at": "2026-11-26T14:04:05Z", "comment": "", "commented_at": None}
    }
    review = live.get("/").text
    section = review[review.index('data-stakeholder="globex"') :]
    assert "rated 2 of 5" in section[: section.index("</div>\n</div>")]


def _altered_links() -> list[tuple[str, str]]:
    good = feedback_links(BASE, SECRET, "INC-1", "globex")[5]
    sig = sign(SECRET, "feedback", "INC-1", "globex", "5")
    page_sig = sign(SECRET, "feedback-page", "INC-1", "globex")
    return [
        ("rating changed", good.replace("rating=5", "rating=1")),
        ("incident changed", good.replace("/INC-1/", "/INC-2/")),
        ("stakeholder changed", good.replace("/globex?", "/acme-finance?")),
        ("signature changed", good.replace(sig, sig[:-1] + ("0" if sig[-1] != "0" else "1"))),
        ("signature missing", good.split("&sig=")[0]),
        ("signed with another key", feedback_links(BASE, "other-key", "INC-1", "globex")[5]),
        ("page signature with a rating", feedback_page_link(BASE, SECRET, "INC-1", "globex") + "&rating=5"),
        ("rating 6 with the page signature", f"{BASE}/feedback/INC-1/globex?rating=6&sig={page_sig}"),
        ("non-ASCII signature", f"{BASE}/feedback/INC-1/globex?rating=5&sig=%C3%A9"),
    ]


@pytest.mark.parametrize(("case", "link"), _altered_links(), ids=[c for c, _ in _altered_links()])
def test_an_altered_feedback_link_gets_403_and_records_nothing(
    api: TestClient, redis_client: redis.Redis, case: str, link: str
) -> None:
    """A forged or altered rating or page link gets 403 and no feedback is kept anywhere."""
    response = api.get(link)
    assert response.status_code == 403, case
    assert "This link does not work" in response.text
    assert redis_client.keys(keys.feedback("*")) == []


def _comment_form(page: str) -> tuple[str, str]:
    action = re.search(r'<form method="post" action="([^"]+)"', page)
    sig = re.search(r'name="sig" value="([0-9a-f]+)"', page)
    assert action and sig
    return html.unescape(action.group(1)), sig.group(1)


def test_the_feedback_page_takes_a_comment(live: TestClient, app: App, redis_client: redis.Redis) -> None:
    """The page link shows a form with five ratings; the form's comment is kept and shown escaped."""
    live.post("/v1/events", json=event())
    app.drain()
    page = live.get(feedback_page_link(BASE, SECRET, "INC-1", "acme-finance"))
    assert page.status_code == 200
    assert "Card payments failing" in page.text
    assert page.text.count('type="radio" name="rating"') == 5
    action, sig = _comment_form(page.text)
    assert action == "/feedback/INC-1/acme-finance"
    comment = "Clear and on time.\r\nBut <b>why</b> the outage?"
    saved = live.post(action, data={"sig": sig, "comment": comment})
    assert saved.status_code == 200
    assert "Your comment was recorded" in saved.text
    kept = RedisStore(redis_client).feedback_for("INC-1")["acme-finance"]
    assert kept.comment == "Clear and on time.\nBut <b>why</b> the outage?" and kept.rating is None
    review = live.get("/").text
    assert "But &lt;b&gt;why&lt;/b&gt; the outage?" in review and "<b>why</b>" not in review


def test_a_forged_or_too_long_comment_is_not_kept(api: TestClient, redis_client: redis.Redis) -> None:
    """A comment with another stakeholder's signature gets 403; one over 4000 characters or empty gets 422."""
    stored_incident(redis_client, "INC-1", ["globex", "acme-finance"])
    action = "/feedback/INC-1/globex"
    other = sign(SECRET, "feedback-comment", "INC-1", "acme-finance")
    assert api.post(action, data={"sig": other, "comment": "hi"}).status_code == 403
    assert api.post(action, data={"comment": "hi"}).status_code == 403
    sig = sign(SECRET, "feedback-comment", "INC-1", "globex")
    too_long = api.post(action, data={"sig": sig, "comment": "x" * 4001})
    assert too_long.status_code == 422 and "the limit is 4000" in too_long.text
    assert api.post(action, data={"sig": sig, "comment": "  \n "}).status_code == 422
    assert redis_client.keys(keys.feedback("*")) == []
    assert api.post(action, data={"sig": sig, "comment": "x" * 4000}).status_code == 200


# -- unsubscribe ----------------------------------------------------------------------------


def test_a_signed_unsubscribe_link_records_the_opt_out(api: TestClient, redis_client: redis.Redis) -> None:
    """Opening the link only asks; its button (a POST) records the opt-out, as does RFC 8058's one-click POST."""
    response = api.get(unsubscribe_link(BASE, SECRET, "globex-support"))
    assert response.status_code == 200 and "Unsubscribe?" in response.text
    assert not RedisStore(redis_client).is_opted_out("globex-support")  # a link scanner's GET changes nothing
    confirmed = api.post(unsubscribe_link(BASE, SECRET, "globex-support"))
    assert confirmed.status_code == 200 and "Unsubscribed" in confirmed.text
    assert RedisStore(redis_client).is_opted_out("globex-support")
    one_click = api.post(
        unsubscribe_link(BASE, SECRET, "acme-finance"),
        content=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert one_click.status_code == 200
    assert RedisStore(redis_client).is_opted_out("acme-finance")
    assert not RedisStore(redis_client).is_opted_out("payments-eng")


def test_a_forged_unsubscribe_link_gets_403(api: TestClient, redis_client: redis.Redis) -> None:
    """Another stakeholder's signature, or none, gets 403 and unsubscribes no one."""
    forged = unsubscribe_link(BASE, SECRET, "globex").replace("/globex?", "/acme-finance?")
    assert api.get(forged).status_code == 403
    assert api.post(forged).status_code == 403
    assert api.get("/unsubscribe/globex").status_code == 403
    assert redis_client.hlen(keys.UNSUBSCRIBED) == 0


# -- /metrics, /healthz, the review page's sign-in, startup ---------------------------------

LATENESS_S = [-2.0, 0.3, 0.5, 0.9, 4.0, 45.0, 120.0, 400.0]


def _sent_with_lateness(store: RedisStore, stakeholder: str, lateness_s: float | None, n: int) -> None:
    promised_ms = ms_of(T0) + n * 60_000

    build = draft_builder(promised_ms, recipient=f"{stakeholder}@example.com")
    comm_id, _ = store.create_comm("INC-1", stakeholder, Kind.UPDATE, f"timer:{n}", build)
    if lateness_s is None:
        return
    assert store.begin_send(comm_id, promised_ms, 60_000, "t").state == "ok"
    sent_ms = promised_ms + int(lateness_s * 1000)
    store.finish_send(comm_id, "t", "sent", sent_ms, sent_ms=sent_ms)


def _metric(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert match, f"{name} not in /metrics"
    return float(match.group(1))


def test_metrics_count_communications_lateness_timers_and_rejects(
    api: TestClient, redis_client: redis.Redis
) -> None:
    """After known sends, /metrics has the exact counts, lateness buckets, armed timers and rejected events."""
    store = RedisStore(redis_client)
    for n, lateness in enumerate(LATENESS_S):
        _sent_with_lateness(store, "globex", lateness, n)
    _sent_with_lateness(store, "acme", None, 100)  # scheduled, not sent: no lateness yet
    timers = RedisTimerStore(redis_client)
    timers.arm("u|INC-1|globex", ms_of(T0 + timedelta(minutes=30)))
    timers.arm("f|INC-1|acme", ms_of(T0 + timedelta(hours=2)))
    api.post("/v1/events", content=b"nope")
    response = api.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = response.text
    assert "# TYPE amends_lateness_seconds histogram" in text
    expected_buckets = {"0.5": 3, "1.0": 4, "2.0": 4, "5.0": 5, "10.0": 5, "30.0": 5, "60.0": 6, "300.0": 7}
    for bound, count in expected_buckets.items():
        assert _metric(text, f'amends_lateness_seconds_bucket{{le="{bound}"}}') == count, bound
    assert _metric(text, 'amends_lateness_seconds_bucket{le="+Inf"}') == 8
    assert _metric(text, "amends_lateness_seconds_count") == 8
    assert _metric(text, "amends_lateness_seconds_sum") == pytest.approx(570.7)
    assert _metric(text, 'amends_communications{kind="update",status="sent"}') == 8
    assert _metric(text, 'amends_communications{kind="update",status="scheduled"}') == 1
    assert _metric(text, 'amends_communications{kind="acknowledgment",status="sent"}') == 0
    assert _metric(text, 'amends_communications_created_total{kind="update"}') == 9
    assert _metric(text, "amends_timers_armed") == 2
    assert _metric(text, "amends_rejected_events") == 1


def test_metrics_follow_a_live_incident(live: TestClient, app: App) -> None:
    """An opened incident shows as three sent acknowledgments and three armed update timers."""
    live.post("/v1/events", json=event())
    app.drain()
    text = live.get("/metrics").text
    assert _metric(text, 'amends_communications{kind="acknowledgment",status="sent"}') == 3
    assert _metric(text, "amends_lateness_seconds_count") == 3
    assert _metric(text, "amends_timers_armed") == 3


def test_healthz_says_whether_redis_answers(api: TestClient) -> None:
    """/healthz needs no token and is 200 with Redis up, 503 when it does not answer; a reader learns which."""
    detail = api.get("/healthz").json()
    assert detail == {"status": "ok", "redis": "ok", "processes": {}, "unfinished_sends": 0}
    api.headers.pop("Authorization")
    assert api.get("/healthz").json() == {"status": "ok"}
    down = Settings(redis_url="redis://127.0.0.1:9/0", api_token=TOKEN, secret_key=SECRET)
    with _client(down) as client:
        response = client.get("/healthz")
        assert response.status_code == 503 and response.json() == {"status": "not ok", "redis": "unavailable"}
        assert client.get("/v1/incidents").status_code == 503
        anonymous = client.get("/healthz", headers={"Authorization": ""})
        assert anonymous.status_code == 503 and anonymous.json() == {"status": "not ok"}


def test_healthz_reports_each_workers_and_schedulers_last_heartbeat(
    api: TestClient, redis_client: redis.Redis
) -> None:
    """Each process's last heartbeat is listed with its age; one silent for over 30 s is stale."""
    store = RedisStore(redis_client)
    t0_ms = int(T0.timestamp() * 1000)
    store.heartbeat("worker@host-a:11", "worker", t0_ms - 2_000)
    store.heartbeat("scheduler@host-b:12", "scheduler", t0_ms - 45_000)
    processes = api.get("/healthz").json()["processes"]
    assert processes["worker@host-a:11"] == {
        "role": "worker",
        "last_heartbeat": "2026-11-26T14:03:03Z",
        "age_s": 2.0,
        "stale": False,
    }
    assert processes["scheduler@host-b:12"]["stale"] is True


def test_the_review_page_signs_in_with_a_form_never_with_the_token_in_the_url(api: TestClient) -> None:
    """Without a token / is 401 with a sign-in form; ?token= is never used and leaves the address;
    the form's POST sets a cookie and leads to /; the token is never echoed."""
    api.headers.pop("Authorization")
    signed_out = api.get("/")
    assert signed_out.status_code == 401
    assert '<form method="post" action="/signin">' in signed_out.text and 'type="password"' in signed_out.text
    in_url = api.get("/", params={"token": TOKEN}, follow_redirects=False)
    assert in_url.status_code == 303 and in_url.headers["location"] == "/"
    assert "set-cookie" not in in_url.headers
    api.base_url = "https://testserver"  # type: ignore[assignment]  # the configured base_url is https
    assert sign_in(api, "wrong").status_code == 401
    response = sign_in(api, TOKEN)
    assert response.status_code == 303 and response.headers["location"] == "/"
    [cookie] = [c for c in response.headers.get_list("set-cookie") if c.startswith("amends_review=")]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Secure" in cookie and TOKEN not in cookie
    page = api.get("/")
    assert page.status_code == 200 and "Incidents and their communications" in page.text
    assert TOKEN not in page.text and SECRET not in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]
    api.cookies.clear()
    assert api.get("/", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_the_review_page_escapes_event_text(live: TestClient, app: App) -> None:
    """An incident title with markup appears as text on the review page, never as markup."""
    live.post("/v1/events", json=event(title='<script>alert("x")</script>'))
    app.drain()
    page = live.get("/").text
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page
    assert "<script>" not in page
    assert page.count('<span class="badge kept">kept</span>') == 3


def test_the_api_refuses_to_start_without_its_secrets(redis_url: str) -> None:
    """Without AMENDS_API_TOKEN (outside the demo) or AMENDS_SECRET_KEY the API does not start, and says why."""
    with pytest.raises(SettingsError, match="AMENDS_API_TOKEN is not set") as raised:
        create_app(Settings(redis_url=redis_url, secret_key=SECRET))
    assert "AMENDS_SECRET_KEY" not in str(raised.value)
    with pytest.raises(SettingsError, match="AMENDS_SECRET_KEY is not set"):
        create_app(Settings(redis_url=redis_url, api_token=TOKEN))
    with pytest.raises(SettingsError, match=r"(?s)AMENDS_API_TOKEN.*AMENDS_SECRET_KEY"):
        create_app(Settings(redis_url=redis_url))


def test_the_demo_runs_open_without_a_token(redis_url: str, redis_client: redis.Redis) -> None:
    """With demo=True and no token, the API starts and its endpoints need no token."""
    with TestClient(create_app(Settings(redis_url=redis_url, secret_key=SECRET), demo=True)) as client:
        assert client.get("/v1/incidents").json() == {"incidents": [], "next_cursor": None}
        assert client.get("/").status_code == 200
        assert client.get("/metrics").status_code == 200


def test_the_access_log_never_shows_tokens_or_link_signatures(api: TestClient) -> None:
    """uvicorn's access log line for /?token=… or a signed link shows neither value."""
    server_config(api.app, "127.0.0.1", 0)  # type: ignore[arg-type]
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", f"/feedback/INC-1/globex?rating=5&sig=abcdef&token={TOKEN}", "1.1", 200),
        None,
    )
    for log_filter in logging.getLogger("uvicorn.access").filters:
        assert not isinstance(log_filter, logging.Filter) or log_filter.filter(record)
    line = record.getMessage()
    assert "/feedback/INC-1/globex?rating=5" in line
    assert "abcdef" not in line and TOKEN not in line


def test_the_review_page_shows_ten_incidents_newest_first_and_links_to_older_ones(
    live: TestClient, app: App
) -> None:
    """25 incidents: pages of the 10 newest, the next 10 and the 5 oldest, each linking on; the last no link."""
    for n in range(25):
        inc = event(incident_id=f"INC-{n:02d}", title=f"Incident {n}", severity="sev3", services=["checkout"])
        inc["occurred_at"] = (app.clock() + timedelta(minutes=n)).isoformat().replace("+00:00", "Z")
        assert live.post("/v1/events", json=inc).status_code == 202
    app.drain()
    pages, path = [], "/"
    while path:
        text = live.get(path).text
        pages.append(re.findall(r'data-incident="(INC-\d+)"', text))
        older = re.search(r'class="older" href="([^"]+)"', text)
        path = html.unescape(older.group(1)) if older else ""
    assert pages == [[f"INC-{n:02d}" for n in range(top, max(top - 10, -1), -1)] for top in (24, 14, 4)]
