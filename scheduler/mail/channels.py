"""Channels beside email: Slack incoming webhooks, Teams Workflows webhooks, signed JSON webhooks.

Two steps, like email:

1. :func:`compose_channel` renders a communication for a stakeholder whose ``channel`` is
   ``slack``, ``teams`` or ``webhook`` and returns a :class:`ChannelDelivery`: the exact
   body bytes to POST (also what the log keeps as the message as sent), its headers and
   the subject. It takes what :func:`scheduler.mail.messages.compose_email` takes, plus the
   ``AMENDS_WEBHOOK_SECRET`` that signs ``webhook`` deliveries.
2. :func:`send` POSTs a delivery with an ``httpx.AsyncClient`` and returns the receiver's
   reply, or raises only :class:`~scheduler.errors.TransientDeliveryError` (5xx, 429 and
   408, timeouts, connection errors; ``retry_after_s`` carries ``Retry-After``) or
   :class:`~scheduler.errors.PermanentDeliveryError` (any other reply that is not 2xx).

The deliver actor calls them in place of ``compose_email`` and the SMTP pool::

    if stakeholder.channel != "email":
        delivery = compose_channel(
            comm, stakeholder, config, templates, now, secret_key,
            webhook_secret=settings.webhook_secret,
        )                                          # TemplateError, SettingsError: fail it
        try:
            reply = await send(delivery, client)   # one httpx.AsyncClient per worker loop
        except PermanentDeliveryError as e:        # failed, str(e) is the reply
            ...
        except TransientDeliveryError as e:        # retrying, not before now + e.retry_after_s
            ...
        # sent: subject=delivery.subject, message=delivery.message, server_reply=reply,
        #       message_id=delivery.message_id

Templates: ``<audience>/<kind>.slack.j2`` (Slack mrkdwn; every ``{{ value }}`` is escaped for
Slack) and ``<audience>/<kind>.teams.j2`` (Markdown for an Adaptive Card). An audience
without its own channel template but with its own text part uses that text part;
otherwise ``default/<kind>.<channel>.j2``, else the text part. Webhook addresses are
secrets: they never appear in errors or the log (see ``Stakeholder.recipient``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import httpx
import jinja2

from scheduler.core.config import Config, Stakeholder
from scheduler.core.model import Communication, Kind, iso_z, utc_of
from scheduler.core.text import scrub
from scheduler.errors import PermanentDeliveryError, SettingsError, TemplateError, TransientDeliveryError
from scheduler.mail.messages import template_context
from scheduler.mail.render import TemplateSet, render_named
from scheduler.mail.signing import check_webhook_secret, standard_webhook_signature

__all__ = [
    "CHAT_PARTS",
    "SLACK_MAX_BLOCKS",
    "SLACK_MAX_SECTION_CHARS",
    "ChannelDelivery",
    "chat_text",
    "check_channel_templates",
    "compose_channel",
    "new_client",
    "send",
]

CHAT_PARTS = ("slack", "teams")
SLACK_MAX_SECTION_CHARS = 3000
SLACK_MAX_BLOCKS = 50
_SLACK_MAX_HEADER_CHARS = 150
_SLACK_MAX_FALLBACK_CHARS = 3000
_TEAMS_MAX_TEXT_CHARS = 20_000
"""Teams refuses messages over about 28 KB; the card's text stays well inside."""
_MAX_REPLY_CHARS = 300
_MAX_RETRY_AFTER_S = 86_400.0
DEFAULT_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class ChannelDelivery:
    """One rendered channel message: what is POSTed, where, and what the log keeps."""

    comm_id: str
    channel: str
    url: str = field(repr=False)
    """Where it goes; a secret (chat webhook addresses carry their token)."""
    body: bytes
    """The exact bytes POSTed."""
    headers: dict[str, str]
    subject: str
    text: str
    """The rendered channel text (mrkdwn for Slack, Markdown for Teams, the text part for webhooks)."""

    @property
    def message(self) -> str:
        """The message as sent, for the log: the body, whose UTF-8 encoding is ``body``."""
        return self.body.decode("utf-8")

    @property
    def message_id(self) -> str:
        """The delivery's stable id, the same on every attempt (``webhook-id`` for webhooks)."""
        return self.headers.get("webhook-id", self.comm_id)


# -- rendering -----------------------------------------------------------------------------


def _slack_escape(value: Any) -> Any:
    """Slack mrkdwn control characters in a value: ``<!channel>`` or a disguised link stays text."""
    if isinstance(value, str):
        return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return value


_overlays: dict[tuple[int, str], jinja2.Environment] = {}


def _environment(templates: TemplateSet, part: str) -> jinja2.Environment:
    key = (id(templates.env), part)
    if key not in _overlays:
        _overlays[key] = (
            templates.env.overlay(finalize=_slack_escape) if part == "slack" else templates.env.overlay()
        )
    return _overlays[key]


def channel_template_name(templates: TemplateSet, audience: str, kind: str, part: str) -> str:
    """Which template renders ``part`` (``slack`` or ``teams``) of ``kind`` for ``audience``."""
    own = f"{audience}/{kind}.{part}.j2"
    if (templates.folder / own).is_file():
        return own
    own_text = f"{audience}/{kind}.txt.j2"
    if (templates.folder / own_text).is_file():
        return own_text
    default = f"default/{kind}.{part}.j2"
    return default if (templates.folder / default).is_file() else f"default/{kind}.txt.j2"


def chat_text(
    templates: TemplateSet, audience: str, kind: str, part: str, context: dict[str, Any]
) -> tuple[str, str]:
    """The template that renders ``part`` (``slack`` or ``teams``) of ``kind`` for ``audience``, and its text."""
    name = channel_template_name(templates, audience, kind, part)
    return name, _render(templates, name, part, context)


def _render(templates: TemplateSet, name: str, part: str, context: dict[str, Any]) -> str:
    if name.endswith(".txt.j2"):
        text = render_named(templates.env, name, context)
        return str(_slack_escape(text)) if part == "slack" else text
    return render_named(_environment(templates, part), name, context)


def _paragraphs(text: str) -> list[str]:
    return [p.strip("\n") for p in re.split(r"\n\s*\n", scrub(text)) if p.strip()]


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _chunks(text: str, limit: int) -> list[str]:
    """``text`` in pieces of at most ``limit`` characters, split at a line break or space when one is near."""
    pieces = []
    while len(text) > limit:
        at = max(text.rfind("\n", 0, limit), text.rfind(" ", 0, limit))
        at = at if at > limit // 2 else limit
        pieces.append(text[:at].rstrip())
        text = text[at:].lstrip()
    return [*pieces, text] if text else pieces


def _sections(text: str, limit: int, most: int) -> list[str]:
    """Paragraphs packed into at most ``most`` sections of at most ``limit`` characters each."""
    sections: list[str] = []
    for paragraph in _paragraphs(text):
        for piece in _chunks(paragraph, limit):
            if sections and len(sections[-1]) + 2 + len(piece) <= limit:
                sections[-1] += "\n\n" + piece
            else:
                sections.append(piece)
    if len(sections) > most:
        sections = [*sections[: most - 1], _cut(sections[most - 1] + " …", limit)]
    return sections


def slack_body(subject: str, text: str, reference: str) -> dict[str, Any]:
    """An incoming-webhook message: ``text`` as the notification fallback, and Block Kit
    blocks (a header, mrkdwn sections within Slack's limits, a context line)."""
    sections = _sections(text, SLACK_MAX_SECTION_CHARS, SLACK_MAX_BLOCKS - 2)
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _cut(subject, _SLACK_MAX_HEADER_CHARS)}},
        *({"type": "section", "text": {"type": "mrkdwn", "text": s}} for s in sections),
        {"type": "context", "elements": [{"type": "mrkdwn", "text": str(_slack_escape(reference))}]},
    ]
    fallback = _cut(f"{_slack_escape(subject)}\n\n{text}", _SLACK_MAX_FALLBACK_CHARS)
    return {"text": fallback, "blocks": blocks}


def teams_body(subject: str, text: str, reference: str) -> dict[str, Any]:
    """A Workflows webhook message carrying one Adaptive Card (1.4)."""
    paragraphs = _sections(_cut(text, _TEAMS_MAX_TEXT_CHARS), 4000, 100)
    card = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "msteams": {"width": "Full"},
        "body": [
            {"type": "TextBlock", "text": subject, "weight": "Bolder", "size": "Medium", "wrap": True},
            *({"type": "TextBlock", "text": p, "wrap": True} for p in paragraphs),
            {"type": "TextBlock", "text": reference, "isSubtle": True, "size": "Small", "wrap": True},
        ],
    }
    return {
        "type": "message",
        "attachments": [
            {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, "content": card}
        ],
    }


def webhook_body(
    comm: Communication, stakeholder: Stakeholder, subject: str, text: str, html: str
) -> dict[str, Any]:
    """The JSON a ``webhook`` stakeholder receives."""
    stored = dict(comm.context.get("incident", {}))
    incident = {k: v for k, v in stored.items() if k not in ("opened_ms", "resolved_ms")}
    incident["opened_at"] = iso_z(utc_of(stored.get("opened_ms")))
    incident["resolved_at"] = iso_z(utc_of(stored.get("resolved_ms")))
    return {
        "type": f"communication.{comm.kind}",
        "communication_id": comm.id,
        "incident": {"id": comm.incident_id, **incident},
        "stakeholder": {"id": stakeholder.id, "name": stakeholder.name, "audience": stakeholder.audience},
        "kind": comm.kind,
        "sequence": comm.seq,
        "subject": subject,
        "text": text,
        "html": html,
        "promised_at": iso_z(comm.promised_at),
        "next_update_at": iso_z(comm.next_update_at),
    }


def _json_bytes(document: dict[str, Any]) -> bytes:
    return scrub(json.dumps(document, ensure_ascii=False, separators=(",", ":"))).encode("utf-8")


def compose_channel(
    comm: Communication,
    stakeholder: Stakeholder,
    config: Config,
    templates: TemplateSet,
    now: datetime,
    secret_key: str,
    *,
    webhook_secret: str | None = None,
) -> ChannelDelivery:
    """Render ``comm`` for a ``slack``, ``teams`` or ``webhook`` stakeholder.

    Raises :class:`~scheduler.errors.TemplateError` when a template fails, ValueError for an
    ``email`` stakeholder, and :class:`~scheduler.errors.SettingsError` for a ``webhook``
    stakeholder when ``webhook_secret`` (``AMENDS_WEBHOOK_SECRET``) is unset or malformed.
    A webhook's ``webhook-timestamp`` is ``now``: compose at each attempt, as for email.
    """
    if stakeholder.channel == "email" or stakeholder.url is None:
        raise ValueError(f"stakeholder {stakeholder.id} receives email; use compose_email")
    context = template_context(comm, stakeholder, config, now, secret_key)
    rendered = templates.render(stakeholder.audience, comm.kind, context)
    reference = f"{comm.incident_id} · {rendered.subject}"
    headers = {"Content-Type": "application/json"}
    if stakeholder.channel in CHAT_PARTS:
        name = channel_template_name(templates, stakeholder.audience, comm.kind, stakeholder.channel)
        text = _render(templates, name, stakeholder.channel, context)
        reference = f"Reference: {comm.incident_id}"
        document = (slack_body if stakeholder.channel == "slack" else teams_body)(
            rendered.subject, text, reference
        )
        body = _json_bytes(document)
    else:
        if not webhook_secret:
            raise SettingsError(f"AMENDS_WEBHOOK_SECRET is not set; it signs deliveries to {stakeholder.id}")
        try:
            check_webhook_secret(webhook_secret)
        except ValueError as e:
            raise SettingsError(f"AMENDS_WEBHOOK_SECRET: {e}") from None
        text = rendered.text
        body = _json_bytes(webhook_body(comm, stakeholder, rendered.subject, rendered.text, rendered.html))
        timestamp_s = int(now.timestamp())
        headers |= {
            "webhook-id": comm.id,
            "webhook-timestamp": str(timestamp_s),
            "webhook-signature": standard_webhook_signature(webhook_secret, comm.id, timestamp_s, body),
        }
    return ChannelDelivery(
        comm.id, stakeholder.channel, stakeholder.url, body, headers, rendered.subject, text
    )


# -- sending -------------------------------------------------------------------------------


def new_client(timeout_s: float = DEFAULT_TIMEOUT_S) -> httpx.AsyncClient:
    """A client for :func:`send`: pooled connections, no redirects followed, ``timeout_s`` per step."""
    return httpx.AsyncClient(timeout=httpx.Timeout(timeout_s), follow_redirects=False)


def _reply(response: httpx.Response) -> str:
    text = " ".join(scrub(response.text).split())
    return _cut(
        f"{response.status_code} {response.reason_phrase}" + (f": {text}" if text else ""), _MAX_REPLY_CHARS
    )


def retry_after_s(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date), at most a day."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), _MAX_RETRY_AFTER_S)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return min(max((moment - now).total_seconds(), 0.0), _MAX_RETRY_AFTER_S)


async def send(delivery: ChannelDelivery, client: httpx.AsyncClient, *, now: datetime | None = None) -> str:
    """POST ``delivery`` to its address; the reply (``200 OK: ok``) when it was accepted (2xx).

    Raises only TransientDeliveryError (5xx, 429, 408, a timeout or a connection error;
    ``retry_after_s`` set from ``Retry-After``) or PermanentDeliveryError (any other reply,
    a redirect included, or an address that cannot be used); each carries the reply. The
    address never appears in an error. ``now`` (default: the clock) reads a ``Retry-After`` date.
    """
    where = f"the {delivery.channel} webhook"
    try:
        response = await client.post(delivery.url, content=delivery.body, headers=delivery.headers)
    except httpx.TimeoutException as e:
        raise TransientDeliveryError(f"{where} did not answer in time ({type(e).__name__})") from None
    except httpx.TransportError as e:
        raise TransientDeliveryError(
            f"cannot reach {where}: {type(e).__name__}{_detail(e, delivery.url)}"
        ) from None
    except (httpx.HTTPError, httpx.InvalidURL, ValueError) as e:
        raise PermanentDeliveryError(f"cannot post to {where}: {type(e).__name__}") from None
    reply = _reply(response)
    status = response.status_code
    if 200 <= status < 300:
        return reply
    if status in (408, 429) or status >= 500:
        wait = retry_after_s(response.headers.get("retry-after"), now or datetime.now(UTC))
        raise TransientDeliveryError(f"{where} answered {reply}", retry_after_s=wait, throttled=status == 429)
    raise PermanentDeliveryError(f"{where} answered {reply}")


def _detail(error: Exception, url: str) -> str:
    text = str(error).replace(url, "[address]")
    return f": {_cut(text, 200)}" if text else ""


# -- checking ------------------------------------------------------------------------------


def check_channel_templates(config: Config, folder: Path, now: datetime | None = None) -> list[str]:
    """Render each kind for every chat stakeholder's audience as it would be sent, and report
    template errors, acknowledgments and updates that do not state the next update time,
    and feedback requests without their links."""
    from scheduler.mail.preflight import sample_communication

    now = now or datetime.now(UTC)
    try:
        templates = TemplateSet(folder)
    except TemplateError as e:
        return [str(e)]
    problems: list[str] = []
    checked: set[tuple[str, str]] = set()
    for stakeholder in config.stakeholders:
        part = stakeholder.channel
        if part not in CHAT_PARTS or (stakeholder.audience, part) in checked:
            continue
        checked.add((stakeholder.audience, part))
        for kind in Kind:
            comm = sample_communication(kind, stakeholder.id, config.timezone_of(stakeholder), now)
            context = template_context(comm, stakeholder, config, now, "sample-secret")
            name = channel_template_name(templates, stakeholder.audience, kind, part)
            try:
                text = _render(templates, name, part, context)
            except TemplateError as e:
                problems.append(f"templates: {e}")
                continue
            needle = str(context["next_update"])
            if kind in ("acknowledgment", "update") and needle not in text:
                problems.append(f"{name}: does not state the next update time ({{{{ next_update }}}})")
            link = str(
                _slack_escape(context["feedback"]["links"][1])
                if part == "slack"
                else context["feedback"]["links"][1]
            )
            if kind == "feedback_request" and link not in text:
                problems.append(f"{name}: does not carry the feedback links ({{{{ feedback.links }}}})")
    return sorted(set(problems))
