"""Text that UTF-8 cannot carry, or that reads differently than it is, is refused where it enters;
whatever the store already holds never makes a page, a response or a command fail."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from scheduler import emit
from scheduler.cli.main import main
from scheduler.core.text import bidi_control_in, decode_utf8, scrub, surrogate_at
from scheduler.errors import EventError
from scheduler.mail.mime import build_email
from scheduler.mail.render import RenderedMessage, clean_header
from scheduler.service.queues import build_broker
from scheduler.service.settings import Settings
from scheduler.storage import keys
from scheduler.storage.redis_store import RedisStore
from scheduler.web.app import create_app
from tests.conftest import event

TOKEN = "text-token"
T0 = datetime(2026, 11, 26, 14, 3, 5, tzinfo=UTC)


@pytest.fixture
def api(redis_url: str, redis_client: redis.Redis) -> Iterator[TestClient]:
    settings = Settings(redis_url=redis_url, api_token=TOKEN, secret_key="s")
    with TestClient(create_app(settings, clock=lambda: T0)) as client:
        client.headers["Authorization"] = f"Bearer {TOKEN}"
        yield client


@pytest.fixture
def cli_redis(redis_url: str, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> redis.Redis:
    monkeypatch.setenv("AMENDS_REDIS_URL", redis_url)
    return redis_client


def _post_raw(api: TestClient, document: str) -> Any:
    return api.post("/v1/events", content=document.encode(), headers={"Content-Type": "application/json"})


# -- the helpers ------------------------------------------------------------------------


def test_text_helpers_find_and_replace_what_utf8_cannot_carry() -> None:
    """A lone surrogate is found and scrubbed to U+FFFD; a well-formed pair is not one."""
    assert surrogate_at("ok \U0001f600") is None
    assert surrogate_at("lone \ud800 x") == 5
    assert scrub("a\udcffb") == "a\ufffdb"
    assert bidi_control_in("invoice\u202egnp.exe") == "U+202E"
    with pytest.raises(ValueError, match="UTF-16"):
        decode_utf8("{}".encode("utf-16"))
    with pytest.raises(ValueError, match=r"byte 0xff at offset 1"):
        decode_utf8(b"{\xff}")
    assert decode_utf8(b"\xef\xbb\xbf{}") == "{}"


# -- HTTP, Python and the CLI refuse it with the field named ---------------------------


@pytest.mark.real
def test_http_refuses_a_lone_surrogate_naming_the_field_and_keeps_the_event(
    api: TestClient, redis_client: redis.Redis, redis_url: str
) -> None:
    """`"title": "lone \\ud800 surrogate"` is valid JSON but not Unicode text: 422 on incident.title, kept as rejected."""
    document = json.dumps(event(title="placeholder")).replace("placeholder", "lone \\ud800 surrogate")
    response = _post_raw(api, document)
    assert response.status_code == 422
    (error,) = response.json()["errors"]
    assert error["field"] == "incident.title" and "lone surrogate U+D800" in error["reason"]
    assert redis_client.llen(keys.REJECTED) == 1
    broker = build_broker(redis_url)
    try:
        assert broker.do_qsize("events") == 0
    finally:
        broker.close()


@pytest.mark.real
def test_http_refuses_a_field_name_that_is_not_unicode(api: TestClient) -> None:
    """A surrogate in a key is refused too, at the object holding it."""
    document = json.dumps(event()).replace('"owner"', '"own\\udc80er"')
    response = _post_raw(api, document)
    assert response.status_code == 422
    assert response.json()["errors"] == [
        {"field": "incident", "reason": "has a field name that is not valid Unicode text"}
    ]


def test_python_emit_refuses_a_lone_surrogate() -> None:
    """emit() names the field before anything is enqueued."""
    with pytest.raises(EventError) as raised:
        emit(event(owner="on-call \udcff"), broker=None)
    assert raised.value.errors[0][0] == "incident.owner"


def test_cli_refuses_raw_bytes_on_stdin_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`\\xff` on stdin is not carried on as a surrogate: exit 2 with one line naming the byte."""
    raw = json.dumps(event(title="XX")).encode().replace(b"XX", b"\xff\xfe")
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(raw), errors="surrogateescape"))
    assert main(["emit", "-"]) == 2
    err = capsys.readouterr().err
    offset = raw.index(b"\xff")
    assert err == f"amends emit: stdin is not UTF-8 text (byte 0xff at offset {offset}); save it as UTF-8\n"


def test_cli_refuses_a_surrogate_from_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    """An argument with undecodable bytes (surrogate-escaped by Python) is refused on its field."""
    argv = ["emit", "opened", "--incident", "INC-1", "--title", "bad \udcff", "--severity", "sev1"]
    assert main(argv) == 2
    assert "incident.title (--title): is not valid Unicode text" in capsys.readouterr().err


# -- bidi controls never reach a header --------------------------------------------------


@pytest.mark.real
def test_bidi_controls_in_a_title_are_refused(api: TestClient) -> None:
    """U+202E in a title (which reaches the subject) gets 422 naming incident.title."""
    response = api.post("/v1/events", json=event(title="invoice\u202egnp.exe"))
    assert response.status_code == 422
    (error,) = response.json()["errors"]
    assert error["field"] == "incident.title" and "U+202E" in error["reason"]


def test_bidi_controls_are_stripped_from_every_header() -> None:
    """Whatever the source (a configured name, a template), no header carries a bidi control."""
    assert clean_header("Dana \u202eWhitfield\u2066 \u200f") == "Dana Whitfield"
    message = build_email(
        RenderedMessage("invoice\u202egnp.exe", "text", "<p>html</p>"),
        sender="Acme \u202bStatus <status@acme.example>",
        recipient="Fin\u2067ance <fin@acme.example>",
        message_id="<a@acme.example>",
        thread_id=None,
        sent_at=T0,
    )
    head = message.as_string().split("\r\n\r\n")[0]
    assert "Subject: invoicegnp.exe" in head and "From: Acme Status" in head and "To: Finance" in head


# -- nothing stored can make a page, a response or a command fail ------------------------


def _store_incident_with_a_surrogate(client: redis.Redis) -> None:
    state = {
        "id": "INC-X",
        "title": "lone \ud800 title",
        "severity": "sev1",
        "state": "open",
        "status": "investigating",
        "opened_ms": 1_764_165_780_000,
        "summary": "broken \udcff bytes",
        "stakeholders": ["acme-finance"],
    }
    client.set(keys.incident("INC-X"), json.dumps(state))  # JSON escapes it: this is how it was kept
    client.zadd(keys.incidents(keys.shard_of("INC-X")), {"INC-X": 1})


@pytest.mark.real
def test_pages_and_responses_render_a_stored_surrogate(api: TestClient, redis_client: redis.Redis) -> None:
    """An incident stored before the door refused such text shows with U+FFFD; nothing answers 500."""
    _store_incident_with_a_surrogate(redis_client)
    for path in ("/", "/v1/incidents", "/v1/incidents/INC-X", "/metrics"):
        response = api.get(path)
        assert response.status_code == 200, path
    assert "lone \ufffd title" in api.get("/").text
    assert api.get("/v1/incidents/INC-X").json()["incident"]["title"] == "lone \ufffd title"


@pytest.mark.real
def test_a_rejected_event_holding_a_surrogate_is_listed(
    cli_redis: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    """`amends log --rejected` (table and --json) prints such an event instead of crashing."""
    RedisStore(cli_redis).reject({"incident_id": "INC-\udcff", "title": "\ud800"}, [("x", "y")], T0, "worker")
    assert main(["log", "--rejected", "--json"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert json.loads(line)["event"]["title"] == "\ufffd"
    assert main(["log", "--rejected"]) == 0
    assert "INC-\ufffd" in capsys.readouterr().out
