"""Bounces: a permanent failure or a delivery status notification marks an address undeliverable;
later mail to it is logged `suppressed`, listed for the operator, and sent again once the mark is lifted."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
import yaml
from fastapi.testclient import TestClient

from scheduler import emit
from scheduler.cli.main import main
from scheduler.core.bounces import BounceList, BounceSource
from scheduler.mail.bounce_reports import read_report
from scheduler.storage.bounces import MemoryBounceList, RedisBounceList
from scheduler.web.app import create_app
from scheduler.web.bounces import MAX_REPORT_BYTES
from tests.conftest import App, event

TOKEN = "test-api-token"
T0 = datetime(2026, 11, 26, 14, 3, 5, tzinfo=UTC)


def delivery_report(recipient: str, status: str = "5.1.1", action: str = "failed") -> bytes:
    """A delivery status notification as Postfix writes it (RFC 3464: multipart/report)."""
    code = "550" if status.startswith("5") else "451"
    return f"""\
Return-Path: <>
From: MAILER-DAEMON@mx.example (Mail Delivery System)
To: status@acme.example
Subject: Undelivered Mail Returned to Sender
Date: Thu, 26 Nov 2026 14:05:00 +0000
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B1"

--B1
Content-Type: text/plain; charset=us-ascii

I'm sorry to have to inform you that your message could not be delivered.

--B1
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example
Arrival-Date: Thu, 26 Nov 2026 14:04:58 +0000

Final-Recipient: rfc822; {recipient}
Original-Recipient: rfc822;{recipient}
Action: {action}
Status: {status}
Remote-MTA: dns; mail.globex.example
Diagnostic-Code: smtp; {code} {status} <{recipient}>: Recipient address rejected

--B1
Content-Type: text/rfc822-headers

From: Acme Status <status@acme.example>
To: {recipient}
Subject: [sev1] Card payments failing

--B1--
""".replace("\n", "\r\n").encode()


# -- reading reports (flufl.bounce) --------------------------------------------------------


@pytest.mark.parametrize(
    ("report", "permanent", "delayed"),
    [
        (delivery_report("Support@Globex.example"), ["support@globex.example"], []),
        (delivery_report("eng@acme.example", "4.4.1", "delayed"), [], ["eng@acme.example"]),
    ],
)
def test_a_report_names_who_failed_for_good_and_who_is_only_delayed(
    report: bytes, permanent: list[str], delayed: list[str]
) -> None:
    """A 5.x.x `failed` recipient is permanent (case folded), a `delayed` 4.x.x one only delayed."""
    read = read_report(report)
    assert sorted(read.permanent) == permanent and read.temporary == delayed


def test_a_permanent_failure_keeps_the_reports_status_and_diagnostic() -> None:
    """The reason kept for a reported address is the report's own Status and Diagnostic-Code."""
    (reason,) = read_report(delivery_report("support@globex.example")).permanent.values()
    assert reason == (
        "Status 5.1.1; Diagnostic-Code smtp; 550 5.1.1 <support@globex.example>: Recipient address rejected"
    )


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (b"", "the body is empty"),
        (b"From: a@b.example\r\nSubject: hello\r\n\r\njust a message\r\n", "no failed recipient found"),
        (b"\xff\xfe not mail at all", "the body has no From header"),
    ],
)
def test_what_is_not_a_report_is_refused_saying_what_to_post(body: bytes, named: str) -> None:
    """An empty body or a message reporting no failure is refused with what a report must be."""
    with pytest.raises(ValueError, match=named):
        read_report(body)


# -- the list of marks: one contract, in process and in Redis ------------------------------


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.real)])
def bounce_list(request: pytest.FixtureRequest) -> Iterator[BounceList]:
    if request.param == "memory":
        yield MemoryBounceList()
    else:
        yield RedisBounceList(request.getfixturevalue("redis_client"))


def test_a_mark_is_kept_once_found_case_blind_and_lifted(bounce_list: BounceList) -> None:
    """The first mark of an address stays; lookups ignore case and spaces; lists are newest first; remove lifts it."""
    assert bounce_list.mark("Support@Globex.example", "550 no such user", BounceSource.SMTP, T0)
    assert not bounce_list.mark("support@globex.example", "later reason", BounceSource.REPORT, T0)
    assert bounce_list.mark("eng@acme.example", "reported", BounceSource.REPORT, T0 + timedelta(minutes=1))
    found = bounce_list.among([" SUPPORT@globex.example", "finance@acme.example"])
    assert list(found) == ["support@globex.example"]
    assert found["support@globex.example"].reason == "550 no such user"
    assert [m.address for m in bounce_list.newest()] == ["eng@acme.example", "support@globex.example"]
    assert [m.address for m in bounce_list.newest(1)] == ["eng@acme.example"]
    assert bounce_list.count() == 2
    assert bounce_list.remove("SUPPORT@globex.example") and not bounce_list.remove("support@globex.example")
    assert bounce_list.among(["support@globex.example"]) == {} and bounce_list.count() == 1


# -- end to end: a real worker, a real SMTP server, real Redis ------------------------------


def _comms(app: App, **match: Any) -> list[Any]:
    return [
        c for c in app.runtime.store.communications() if all(getattr(c, k) == v for k, v in match.items())
    ]


def _recipients(app: App) -> list[str]:
    return [m.rcpt_tos[0] for m in app.sink.received]


def _only_globex(app: App) -> None:
    """Concern only the Globex stakeholder (support@globex.example) from now on."""
    config = yaml.safe_load(app.config_path.read_text())
    config["stakeholders"] = [s for s in config["stakeholders"] if s["email"] == REFUSED]
    app.write_config(config)


REFUSED = "support@globex.example"


@pytest.mark.real
@pytest.mark.parametrize("refusal", ["rcpt", "data"])
def test_a_5xx_marks_the_address_and_later_mail_to_it_is_suppressed(app: App, refusal: str) -> None:
    """A 550 to RCPT or a 554 to DATA fails that message and marks its address; the next incident's mail to it is `suppressed`, not sent."""
    if refusal == "rcpt":
        app.sink.rcpt_reply = lambda address: "550 5.1.1 no such user" if address == REFUSED else None
    else:
        _only_globex(app)  # DATA has no recipient to tell apart: send to globex alone
        app.sink.data_reply = lambda: "554 5.7.1 message refused"
    emit(event(), broker=app.broker)
    app.drain()
    (failed,) = _comms(app, status="failed")
    assert failed.recipient == REFUSED and failed.attempts == 1
    assert "now undeliverable" in failed.last_error
    (mark,) = app.runtime.bounces.newest()
    expected = "550 5.1.1 no such user" if refusal == "rcpt" else "554 5.7.1 message refused"
    assert (mark.address, mark.source) == (REFUSED, "smtp") and expected in mark.reason

    app.sink.rcpt_reply = app.sink.data_reply = None
    before = len(app.sink.received)
    emit(event(incident_id="INC-2"), broker=app.broker)
    app.drain()
    (suppressed,) = _comms(app, incident_id="INC-2", recipient=REFUSED)
    assert suppressed.status == "suppressed" and suppressed.sent_at is None
    assert f"{REFUSED} is undeliverable since" in suppressed.last_error
    assert REFUSED not in _recipients(app)[before:]
    others = [c.status for c in _comms(app, incident_id="INC-2") if c.recipient != REFUSED]
    assert others == ["sent"] * len(others)


@pytest.mark.real
def test_a_suppressed_thread_stays_quiet_at_every_cadence_step_until_the_mark_is_lifted(app: App) -> None:
    """Updates to a marked address end `suppressed` (not retried) at each step; once lifted, the next updates are sent."""
    _only_globex(app)
    app.runtime.bounces.mark(REFUSED, "550 no such user", BounceSource.SMTP, app.clock())
    emit(event(), broker=app.broker)
    app.drain()
    app.advance_to(app.clock() + timedelta(hours=2))
    statuses = [c.status for c in _comms(app)]
    assert len(statuses) >= 2 and set(statuses) == {"suppressed"}
    assert all(c.attempts == 1 for c in _comms(app)) and app.sink.received == []
    assert app.runtime.bounces.remove(REFUSED)
    app.advance_to(app.clock() + timedelta(hours=2))
    assert _recipients(app) and set(_recipients(app)) == {REFUSED}
    sent = [c.seq for c in _comms(app, status="sent")]
    suppressed = [c.seq for c in _comms(app, status="suppressed")]
    assert sent and min(sent) > max(suppressed)


# -- the operator's side: POST /v1/bounces, the list, /metrics, the review page, the CLI ----


@pytest.fixture
def live(app: App) -> Iterator[TestClient]:
    """The API in front of the running worker, on its clock, with the API token."""
    with TestClient(create_app(app.settings.with_(api_token=TOKEN), clock=app.clock)) as client:
        client.headers["Authorization"] = f"Bearer {TOKEN}"
        yield client


@pytest.mark.real
def test_a_posted_report_marks_its_address_and_mail_to_it_is_suppressed(live: TestClient, app: App) -> None:
    """POST /v1/bounces with a raw RFC 3464 report marks the failed recipient; the next incident's mail to it is `suppressed`."""
    answer = live.post(
        "/v1/bounces", content=delivery_report(REFUSED), headers={"Content-Type": "message/rfc822"}
    )
    assert answer.status_code == 200
    assert answer.json() == {"undeliverable": [REFUSED], "newly_marked": [REFUSED], "delayed": []}
    again = live.post("/v1/bounces", content=delivery_report(REFUSED))
    assert again.json()["newly_marked"] == []
    emit(event(), broker=app.broker)
    app.drain()
    (suppressed,) = _comms(app, recipient=REFUSED)
    assert suppressed.status == "suppressed" and "Status 5.1.1" in suppressed.last_error
    assert REFUSED not in _recipients(app) and len(_recipients(app)) == 2


@pytest.mark.real
def test_a_delay_report_marks_nothing(live: TestClient, app: App) -> None:
    """A report of a delay (4.x.x, `delayed`) is answered with the address as delayed and marks nothing."""
    answer = live.post("/v1/bounces", content=delivery_report(REFUSED, "4.4.1", "delayed"))
    assert answer.status_code == 200 and answer.json()["delayed"] == [REFUSED]
    assert app.runtime.bounces.count() == 0


@pytest.mark.real
def test_the_bounce_route_takes_the_api_token_and_caps_the_body(live: TestClient, app: App) -> None:
    """Without the API token the answer is 401; over the cap 413; a body that is no report 422 naming it; nothing is marked."""
    report = delivery_report(REFUSED)
    assert live.post("/v1/bounces", content=report, headers={"Authorization": ""}).status_code == 401
    assert live.post("/v1/bounces", content=report, headers={"Authorization": "Bearer no"}).status_code == 401
    huge = report + b"x" * MAX_REPORT_BYTES
    assert live.post("/v1/bounces", content=huge).status_code == 413
    refused = live.post("/v1/bounces", content=b"hello")
    assert refused.status_code == 422
    (error,) = refused.json()["errors"]
    assert error["field"] == "body" and "has no From header" in error["reason"]
    assert app.runtime.bounces.count() == 0


@pytest.mark.real
def test_the_operator_sees_the_list_everywhere_and_can_lift_a_mark(
    live: TestClient,
    app: App,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A marked address shows in GET /v1/bounces, /metrics, the review page and `amends bounces`; `amends bounces remove` lifts it."""
    app.runtime.bounces.mark(REFUSED, "550 5.1.1 no such user", BounceSource.SMTP, T0)
    listed = live.get("/v1/bounces").json()["bounces"]
    assert listed == [
        {
            "address": REFUSED,
            "reason": "550 5.1.1 no such user",
            "source": "smtp",
            "since": "2026-11-26T14:03:05Z",
        }
    ]
    assert "\namends_undeliverable_addresses 1\n" in live.get("/metrics").text
    page = live.get("/").text  # the review page takes the bearer token
    assert f'data-address="{REFUSED}"' in page and "Undeliverable addresses (1)" in page

    monkeypatch.setenv("AMENDS_REDIS_URL", app.settings.redis_url or "")
    assert main(["bounces"]) == 0
    table = capsys.readouterr().out
    assert REFUSED in table and "550 5.1.1 no such user" in table
    assert main(["bounces", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["address"] == REFUSED
    assert main(["bounces", "remove", "Support@Globex.example"]) == 0
    assert main(["bounces", "remove", REFUSED]) == 1
    assert "is not marked undeliverable" in capsys.readouterr().err
    assert main(["bounces"]) == 0 and capsys.readouterr().out == "no undeliverable addresses\n"
    assert live.delete(f"/v1/bounces/{REFUSED}").status_code == 404

    emit(event(), broker=app.broker)
    app.drain()
    assert REFUSED in _recipients(app)


class _FirstMarkLost(RedisBounceList):
    """The real list, whose first mark meets a cut Redis connection."""

    lost = 0

    def mark(self, address: str, reason: str, source: BounceSource, now: datetime) -> bool:
        if not self.lost:
            self.lost += 1
            raise redis.ConnectionError("Connection closed by server.")
        return super().mark(address, reason, source, now)


@pytest.mark.real
def test_a_550_whose_mark_could_not_be_written_is_tried_again_and_then_marked(app: App) -> None:
    """Redis cut while marking after a 550: the message is `retrying`, not lost; its next attempt meets the 550 again, marks the address and fails."""
    _only_globex(app)
    app.runtime.bounces = _FirstMarkLost(app.runtime.client)
    app.sink.rcpt_reply = lambda address: "550 5.1.1 no such user"
    emit(event(), broker=app.broker)
    app.drain()
    (comm,) = _comms(app)
    assert comm.status == "retrying" and "Connection closed" in comm.last_error
    app.settle()
    (comm,) = _comms(app)
    assert comm.status == "failed" and comm.attempts == 2 and "now undeliverable" in comm.last_error
    assert [m.address for m in app.runtime.bounces.newest()] == [REFUSED]


@pytest.mark.real
def test_a_worker_that_died_after_marking_leaves_its_message_suppressed_after_the_lease(app: App) -> None:
    """A worker takes a retry, meets a 550, marks the address and dies before writing `failed`: after the lease the message ends `suppressed`, never sent."""
    from scheduler.core.model import ms_of

    _only_globex(app)
    app.sink.rcpt_reply = lambda address: "451 hold on"
    emit(event(), broker=app.broker)
    app.drain()
    (comm,) = _comms(app)
    assert comm.status == "retrying" and comm.next_attempt_at is not None
    app.clock.set(comm.next_attempt_at)
    assert app.runtime.store.begin_send(comm.id, ms_of(app.clock()), 60_000, "dead").state == "ok"
    app.runtime.bounces.mark(REFUSED, "550 5.1.1 no such user", BounceSource.SMTP, app.clock())
    app.sink.rcpt_reply = None
    app.settle()  # the sweep takes it again once the dead worker's lease ran out
    (comm,) = _comms(app)
    assert comm.status == "suppressed" and "550 5.1.1 no such user" in comm.last_error
    assert app.sink.received == [] and app.runtime.store.unfinished_count() == 0
