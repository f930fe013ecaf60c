"""Slack, Teams and webhook deliveries: composed from the templates, posted to a real local
HTTP server, replies sorted into transient and permanent; webhook signatures checked with
the ``standardwebhooks`` package."""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import standardwebhooks

from scheduler.core.config import Config, Stakeholder, parse_config
from scheduler.core.model import Communication
from scheduler.errors import (
    ConfigError,
    PermanentDeliveryError,
    SettingsError,
    TransientDeliveryError,
)
from scheduler.mail.channels import (
    SLACK_MAX_BLOCKS,
    SLACK_MAX_SECTION_CHARS,
    ChannelDelivery,
    check_channel_templates,
    compose_channel,
    new_client,
    send,
)
from scheduler.mail.preflight import sample_communication
from scheduler.mail.render import TemplateSet
from scheduler.service.settings import bundled_path
from tests.realservers import free_port

NOW = datetime(2026, 11, 26, 14, 3, tzinfo=UTC)
WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@dataclass
class Reply:
    status: int = 200
    body: bytes = b"ok"
    headers: dict[str, str] = field(default_factory=dict)
    hold: threading.Event | None = None
    """The server answers only once this is set (a receiver that takes too long)."""


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


class Receiver:
    """A real HTTP server on 127.0.0.1 that records each POST and answers from a script."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.replies: list[Reply] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                receiver.received.append(
                    Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                )
                reply = receiver.replies.pop(0) if receiver.replies else Reply()
                if reply.hold is not None:
                    # the client gives up first; no reply is written to its closed socket
                    # (a test before may have set SIGPIPE to its default, which would end the run)
                    reply.hold.wait(10)
                    return
                try:
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    self.wfile.write(reply.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client went away

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str = "/hook/T000/B000/secret-token") -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def templates() -> TemplateSet:
    return TemplateSet(bundled_path("templates"))


def _config(*stakeholders: dict[str, Any]) -> Config:
    return parse_config({"sender": "Acme Status <status@acme.example>", "stakeholders": list(stakeholders)})


def _stakeholder(channel: str, url: str, audience: str = "default") -> dict[str, Any]:
    return {"id": f"{channel}-room", "name": "Ops Room", "channel": channel, "url": url, "audience": audience}


def _comm(kind: str, stakeholder: Stakeholder, now: datetime = NOW, **incident: Any) -> Communication:
    comm = sample_communication(kind, stakeholder.id, "Europe/Berlin", now)
    comm.context["incident"].update(incident)
    return comm


def _post(delivery: ChannelDelivery, timeout_s: float = 5.0) -> str:
    async def go() -> str:
        async with new_client(timeout_s) as client:
            return await send(delivery, client, now=NOW)

    return asyncio.run(go())


def _compose(
    config: Config, templates: TemplateSet, kind: str = "acknowledgment", now: datetime = NOW, **incident: Any
) -> ChannelDelivery:
    stakeholder = config.stakeholders[0]
    return compose_channel(
        _comm(kind, stakeholder, now, **incident),
        stakeholder,
        config,
        templates,
        now,
        "test-secret",
        webhook_secret=WEBHOOK_SECRET,
    )


# -- Slack ---------------------------------------------------------------------------------


def test_a_slack_stakeholder_gets_a_block_kit_message_with_a_text_fallback_and_the_next_update(
    receiver: Receiver, templates: TemplateSet
) -> None:
    """A Slack delivery posts exactly its logged body: a text fallback and Block Kit blocks stating the next update."""
    config = _config(_stakeholder("slack", receiver.url()))
    delivery = _compose(config, templates)
    reply = _post(delivery)
    assert reply == "200 OK: ok"
    [got] = receiver.received
    assert got.body == delivery.body == delivery.message.encode("utf-8")
    assert got.path == "/hook/T000/B000/secret-token"
    assert got.headers["content-type"] == "application/json"
    document = json.loads(got.body)
    assert document["text"].startswith("[SEV1] We are working on it: Card payments failing")
    assert document["blocks"][0]["type"] == "header"
    sections = "\n".join(b["text"]["text"] for b in document["blocks"] if b["type"] == "section")
    assert "Next update by *15:33 CET*" in sections
    assert delivery.subject == document["blocks"][0]["text"]["text"]


def test_slack_messages_keep_within_three_thousand_characters_a_section_and_fifty_blocks(
    templates: TemplateSet,
) -> None:
    """However long the incident's text, no section exceeds 3,000 characters and no message 50 blocks."""
    config = _config(_stakeholder("slack", "https://hooks.slack.com/services/T/B/X"))
    paragraphs = "\n\n".join(f"Finding {n}: " + "word " * 700 for n in range(120))
    document = json.loads(_compose(config, templates, "update", plan=paragraphs).body)
    assert len(document["blocks"]) <= SLACK_MAX_BLOCKS
    assert all(
        len(b["text"]["text"]) <= SLACK_MAX_SECTION_CHARS
        for b in document["blocks"]
        if b["type"] == "section"
    )
    assert len(document["text"]) <= 3000


def test_incident_text_cannot_ping_a_channel_or_disguise_a_link_in_slack(templates: TemplateSet) -> None:
    """Event text reaches Slack's mrkdwn escaped: ``<!channel>`` and ``<url|label>`` stay literal text."""
    config = _config(_stakeholder("slack", "https://hooks.slack.com/services/T/B/X"))
    delivery = _compose(config, templates, title="<!channel> see <https://evil.example|bank> & more")
    document = json.loads(delivery.body)
    mrkdwn = [document["text"], *(b["text"]["text"] for b in document["blocks"] if b["type"] == "section")]
    assert not any("<!channel>" in m or "<https://evil" in m for m in mrkdwn)
    assert "&lt;!channel&gt; see &lt;https://evil.example|bank&gt; &amp; more" in delivery.text


def test_an_audience_with_its_own_text_part_and_no_slack_template_gets_its_text_part(
    templates: TemplateSet,
) -> None:
    """A customer stakeholder on Slack reads the customer text part, not the default Slack wording."""
    config = _config(_stakeholder("slack", "https://hooks.slack.com/services/T/B/X", audience="customer"))
    delivery = _compose(config, templates)
    assert delivery.text.startswith("Hello Ops Room")


def test_an_audience_slack_template_wins_over_everything_else(tmp_path: Path) -> None:
    """``<audience>/<kind>.slack.j2`` is used when it exists, with event values escaped."""
    folder = tmp_path / "templates"
    for source in bundled_path("templates").glob("default/*"):
        (folder / "default").mkdir(parents=True, exist_ok=True)
        (folder / "default" / source.name).write_text(source.read_text())
    (folder / "ops").mkdir()
    (folder / "ops" / "acknowledgment.slack.j2").write_text(
        ":rotating_light: {{ incident.title }} until {{ next_update }}"
    )
    config = _config(_stakeholder("slack", "https://hooks.slack.com/services/T/B/X", audience="ops"))
    delivery = _compose(config, TemplateSet(folder), title="A & B")
    assert delivery.text == ":rotating_light: A &amp; B until 15:33 CET"


# -- Teams ---------------------------------------------------------------------------------


def test_a_teams_stakeholder_gets_an_adaptive_card(receiver: Receiver, templates: TemplateSet) -> None:
    """A Teams delivery posts a Workflows message carrying one Adaptive Card with the whole text."""
    receiver.replies.append(Reply(202, b""))
    config = _config(_stakeholder("teams", receiver.url("/workflows/abc?sig=secret")))
    delivery = _compose(config, templates, "resolution")
    assert _post(delivery) == "202 Accepted"
    document = json.loads(receiver.received[0].body)
    [attachment] = document["attachments"]
    assert document["type"] == "message"
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert card["type"] == "AdaptiveCard" and card["version"] == "1.4"
    texts = [block["text"] for block in card["body"]]
    assert texts[0] == delivery.subject
    assert any("**What happened:** A certificate expired" in t for t in texts)


# -- signed webhooks -----------------------------------------------------------------------


def test_a_webhook_delivery_verifies_with_the_standard_webhooks_library(
    receiver: Receiver, templates: TemplateSet
) -> None:
    """A receiver using the standardwebhooks package verifies the body and reads every promised field."""
    config = _config(_stakeholder("webhook", receiver.url("/amends")))
    now = datetime.now(UTC).replace(microsecond=0)  # the library refuses timestamps 5 minutes off its clock
    delivery = _compose(config, templates, "update", now)
    _post(delivery)
    got = receiver.received[0]
    verified = standardwebhooks.Webhook(WEBHOOK_SECRET).verify(got.body, got.headers)  # raises if not
    assert verified["communication_id"] == got.headers["webhook-id"] == "INC-SAMPLE:webhook-room:update:1"
    assert verified["kind"] == "update" and verified["sequence"] == 2
    assert verified["incident"]["id"] == "INC-SAMPLE" and verified["incident"]["severity"] == "sev1"
    assert verified["stakeholder"]["id"] == "webhook-room"
    assert verified["subject"] == delivery.subject
    assert "Next update by" in verified["text"] and "<html" in verified["html"].lower()
    assert verified["promised_at"] == now.isoformat().replace("+00:00", "Z")
    assert verified["next_update_at"] == (now + timedelta(minutes=30)).isoformat().replace("+00:00", "Z")


def test_a_tampered_webhook_body_does_not_verify(templates: TemplateSet) -> None:
    """Changing one byte of a signed body makes the standardwebhooks check fail."""
    config = _config(_stakeholder("webhook", "https://hooks.example/amends"))
    delivery = _compose(config, templates, "update", datetime.now(UTC))
    standardwebhooks.Webhook(WEBHOOK_SECRET).verify(delivery.body, delivery.headers)
    tampered = delivery.body.replace(b"sev1", b"sev4")
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
        standardwebhooks.Webhook(WEBHOOK_SECRET).verify(tampered, delivery.headers)


def test_a_webhook_stakeholder_without_a_signing_secret_cannot_be_composed(templates: TemplateSet) -> None:
    """Without AMENDS_WEBHOOK_SECRET nothing unsigned is sent; the error names the variable."""
    config = _config(_stakeholder("webhook", "https://hooks.example/amends"))
    stakeholder = config.stakeholders[0]
    with pytest.raises(SettingsError, match="AMENDS_WEBHOOK_SECRET"):
        compose_channel(_comm("update", stakeholder), stakeholder, config, templates, NOW, "k")


# -- replies -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("retry_after", "wait_s"),
    [("30", 30.0), (format_datetime(NOW + timedelta(minutes=2), usegmt=True), 120.0), (None, None)],
)
def test_a_429_is_transient_and_carries_the_wait_it_asked_for(
    receiver: Receiver, templates: TemplateSet, retry_after: str | None, wait_s: float | None
) -> None:
    """Rate limiting is retried no earlier than Retry-After says, in seconds or as a date."""
    receiver.replies.append(Reply(429, b"rate_limited", {"Retry-After": retry_after} if retry_after else {}))
    delivery = _compose(_config(_stakeholder("slack", receiver.url())), templates)
    with pytest.raises(TransientDeliveryError) as caught:
        _post(delivery)
    assert caught.value.retry_after_s == wait_s
    assert "429 Too Many Requests: rate_limited" in str(caught.value)


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_are_transient(receiver: Receiver, templates: TemplateSet, status: int) -> None:
    """A 5xx reply is retried, with the reply in the error."""
    receiver.replies.append(Reply(status, b"upstream trouble"))
    with pytest.raises(TransientDeliveryError, match=f"{status}.*upstream trouble"):
        _post(_compose(_config(_stakeholder("teams", receiver.url())), templates))


@pytest.mark.parametrize(
    ("status", "body"),
    [(400, b"invalid_payload"), (404, b"no_service"), (410, b"channel_is_archived"), (302, b"")],
)
def test_other_replies_fail_for_good_with_the_reply_and_never_the_address(
    receiver: Receiver, templates: TemplateSet, status: int, body: bytes
) -> None:
    """A 4xx (or a redirect) is permanent; the error shows the reply but not the secret address."""
    receiver.replies.append(
        Reply(status, body, {"Location": "https://elsewhere.example/"} if status == 302 else {})
    )
    with pytest.raises(PermanentDeliveryError) as caught:
        _post(_compose(_config(_stakeholder("slack", receiver.url())), templates))
    assert str(status) in str(caught.value) and body.decode() in str(caught.value)
    assert "secret-token" not in str(caught.value)


def test_a_receiver_that_does_not_answer_in_time_is_transient(
    receiver: Receiver, templates: TemplateSet
) -> None:
    """A timeout is retried later."""
    answer = threading.Event()
    receiver.replies.append(Reply(hold=answer))
    try:
        with pytest.raises(TransientDeliveryError, match="did not answer in time"):
            _post(_compose(_config(_stakeholder("webhook", receiver.url())), templates), timeout_s=0.2)
    finally:
        answer.set()


def test_a_refused_connection_is_transient_and_hides_the_address(templates: TemplateSet) -> None:
    """Nobody listening is retried later; the error does not show the address."""
    url = f"http://127.0.0.1:{free_port()}/hook/secret-token"
    with pytest.raises(TransientDeliveryError, match="cannot reach the slack webhook") as caught:
        _post(_compose(_config(_stakeholder("slack", url)), templates))
    assert "secret-token" not in str(caught.value)


def test_send_raises_only_delivery_errors_for_an_unusable_address(templates: TemplateSet) -> None:
    """An address httpx cannot use fails for good instead of raising something else."""
    delivery = _compose(_config(_stakeholder("slack", "https://hooks.slack.com/x")), templates)
    broken = ChannelDelivery(
        delivery.comm_id, "slack", "http://[::1", delivery.body, delivery.headers, "s", "t"
    )
    with pytest.raises(PermanentDeliveryError):
        asyncio.run(_send_with(broken))


async def _send_with(delivery: ChannelDelivery) -> str:
    async with httpx.AsyncClient() as client:
        return await send(delivery, client)


# -- configuration -------------------------------------------------------------------------


def test_chat_and_webhook_stakeholders_need_a_url_and_show_only_the_host_in_the_log() -> None:
    """``channel`` takes ``url`` instead of ``email``; the log's recipient leaves out the secret path."""
    config = _config(_stakeholder("slack", "https://hooks.slack.com/services/T/B/secret"))
    assert config.stakeholders[0].recipient == "slack:hooks.slack.com"
    with pytest.raises(ConfigError) as caught:
        _config(
            {"id": "a", "name": "A", "channel": "teams"},
            {"id": "b", "name": "B", "channel": "fax", "url": "https://x.example"},
        )
    assert ("stakeholders[0].url", "is required when channel is teams") in caught.value.errors
    assert caught.value.errors[1][0] == "stakeholders[1].channel"


def test_config_check_reports_a_chat_template_without_the_next_update(tmp_path: Path) -> None:
    """A Slack template that drops the promised next update time is reported with its name."""
    folder = tmp_path / "templates"
    (folder / "default").mkdir(parents=True)
    for source in bundled_path("templates").glob("default/*"):
        (folder / "default" / source.name).write_text(source.read_text())
    (folder / "default" / "update.slack.j2").write_text("{{ incident.title }}")
    config = _config(
        _stakeholder("slack", "https://hooks.slack.com/x"), _stakeholder("teams", "https://t.example/x")
    )
    assert check_channel_templates(config, folder) == [
        "default/update.slack.j2: does not state the next update time ({{ next_update }})"
    ]
    assert check_channel_templates(config, bundled_path("templates")) == []


# -- preview and config check --------------------------------------------------------------


def test_the_preview_shows_what_a_chat_or_webhook_stakeholder_would_be_posted(templates: TemplateSet) -> None:
    """A Slack stakeholder's preview carries its channel, its rendered Slack text and the JSON body."""
    from scheduler.cli.preview import simulate
    from scheduler.core.events import parse_event
    from tests.conftest import event

    config = _config(_stakeholder("slack", "https://hooks.slack.com/services/T/B/X"))
    timeline = simulate([parse_event(event())], config, templates, timedelta(minutes=1))
    [ack] = timeline.messages
    assert ack.channel == "slack" and ack.text.startswith("*Card payments failing*")
    assert json.loads(ack.body)["blocks"][0]["type"] == "header"


def test_config_check_warns_when_a_webhook_stakeholder_has_no_signing_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``amends config check`` accepts channel stakeholders and says when AMENDS_WEBHOOK_SECRET is missing."""
    import yaml

    from scheduler.cli.main import main

    path = tmp_path / "amends.yaml"
    document = {
        "sender": "Acme Status <status@acme.example>",
        "stakeholders": [
            _stakeholder("webhook", "https://hooks.example/amends"),
            _stakeholder("teams", "https://t.example/x"),
        ],
        "integrations": {"severity_map": {"page": "sev1"}},
    }
    path.write_text(yaml.safe_dump(document))
    monkeypatch.delenv("AMENDS_WEBHOOK_SECRET", raising=False)
    assert main(["config", "check", "--file", str(path)]) == 0
    assert "stakeholders[0]: channel webhook needs AMENDS_WEBHOOK_SECRET" in capsys.readouterr().err
    document["integrations"] = {"severity_map": {"page": "urgent"}}
    path.write_text(yaml.safe_dump(document))
    assert main(["config", "check", "--file", str(path)]) == 1
    assert "integrations.severity_map.page: Input should be 'sev1'" in capsys.readouterr().err
