"""What the SMTP server receives, read as bytes: the log's copy, real parsers, one-click unsubscribe."""

from __future__ import annotations

import email
import email.policy
import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from scheduler import emit
from scheduler.cli.main import main
from scheduler.core.config_fields import MAX_BASE_URL_CHARS
from scheduler.dev.mailsink import ReceivedMail
from scheduler.mail.mime import VERBATIM_HEADERS
from scheduler.web.app import create_app
from tests.conftest import BASE_CONFIG, App, event

pytestmark = pytest.mark.real

SITE = "https://status.acme.example/"
BASE_URL = SITE + "p" * (MAX_BASE_URL_CHARS - len(SITE))  # the longest base_url the config accepts
STAKEHOLDER = "customer-" + "s" * 55  # ids are at most 64 characters
INCIDENT = "INC-" + "9" * 60


@pytest.fixture
def app_config() -> dict[str, Any]:
    """One customer with the longest id, behind the longest base URL."""
    customer = {
        "id": STAKEHOLDER,
        "name": "Zürich Customer",
        "email": "customer@acme.example",
        "audience": "customer",
        "services": ["payments"],
    }
    return {**BASE_CONFIG, "base_url": BASE_URL, "stakeholders": [customer]}


@pytest.fixture
def thread(app: App) -> list[ReceivedMail]:
    """An acknowledgment and a material update of one incident with the longest id, as received."""
    emit(event(incident_id=INCIDENT, title="Zahlungen gestört: Karten «Visa»"), broker=app.broker)
    app.drain()
    emit(event("updated", incident_id=INCIDENT, status="identified"), broker=app.broker)
    app.drain()
    return app.sink.wait_for(2)


@pytest.fixture
def api(app: App) -> Iterator[TestClient]:
    with TestClient(create_app(app.settings.with_(api_token="t"), clock=app.clock)) as client:
        yield client


def _header_lines(raw: bytes) -> list[bytes]:
    head = raw.split(b"\r\n\r\n", 1)[0]
    return head.split(b"\r\n")


def test_the_server_receives_byte_for_byte_what_the_log_keeps(
    app: App, thread: list[ReceivedMail], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each message's bytes on the wire equal the logged message and what `amends log show` prints."""
    monkeypatch.setenv("AMENDS_REDIS_URL", app.settings.redis_url or "")
    for mail in thread:
        message_id = mail.message["Message-ID"]
        (comm,) = [c for c in app.runtime.store.communications() if c.message_id == message_id]
        assert mail.raw == app.runtime.store.comm(comm.id).message.encode("utf-8")
        assert main(["log", "show", comm.id]) == 0
        assert capsys.readouterr().out.encode("utf-8") == mail.raw
        assert mail.raw.isascii() and all(len(line) <= 998 for line in mail.raw.split(b"\r\n"))


def test_threading_and_unsubscribe_headers_are_never_encoded_or_folded(thread: list[ReceivedMail]) -> None:
    """Message-ID, In-Reply-To, References and List-Unsubscribe(-Post) each sit on one line, as written."""
    for mail in thread:
        lines = _header_lines(mail.raw)
        for index, line in enumerate(lines):
            name = line.split(b":", 1)[0].decode().lower()
            if name in VERBATIM_HEADERS:
                assert b"=?" not in line, line
                follows = lines[index + 1] if index + 1 < len(lines) else b""
                assert not follows.startswith((b" ", b"\t")), f"{name} is folded"
    first, second = thread
    assert first.message["Message-ID"] == f"<amends.{INCIDENT}.{STAKEHOLDER}@acme.example>"
    assert second.message["In-Reply-To"] == second.message["References"] == first.message["Message-ID"]
    assert f"In-Reply-To: {first.message['Message-ID']}\r\n".encode() in second.raw


def test_a_standard_parser_finds_the_unsubscribe_link_and_one_click_records_the_opt_out(
    app: App, thread: list[ReceivedMail], api: TestClient
) -> None:
    """The URL parsed from the received List-Unsubscribe, POSTed as RFC 8058 says, opts the stakeholder out."""
    parsed = email.message_from_bytes(thread[-1].raw, policy=email.policy.default)
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    match = re.fullmatch(r"<(https://[^>\s]+)>", str(parsed["List-Unsubscribe"]))
    assert match, parsed["List-Unsubscribe"]
    url = match.group(1)
    assert url.startswith(BASE_URL + "/unsubscribe/" + STAKEHOLDER + "?incident=" + INCIDENT + "&sig=")
    assert not app.runtime.store.is_opted_out(STAKEHOLDER)
    response = api.post(
        url.removeprefix(BASE_URL),  # a proxy at BASE_URL hands /unsubscribe/... to amends
        content=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200 and "Zürich Customer will receive no more" in response.text
    assert app.runtime.store.is_opted_out(STAKEHOLDER)
