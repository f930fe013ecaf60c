"""From a stored communication to the email that is sent: template context and headers.

The context is documented in ``templates/README.md``; keep the two in step.
"""

from __future__ import annotations

import functools
from datetime import datetime
from email.message import EmailMessage
from email.utils import formataddr
from typing import Any

import pendulum

from scheduler.core.config import Config, Stakeholder
from scheduler.core.model import Communication, utc_of
from scheduler.core.tone import tone_for
from scheduler.mail.mime import build_email, message_id_for
from scheduler.mail.render import RenderedMessage, TemplateSet, message_time
from scheduler.mail.signing import feedback_links, feedback_page_link, unsubscribe_link

__all__ = ["FIELD_LABELS", "compose_email", "contact_context", "template_context", "thread_id_for"]

FIELD_LABELS = {
    "title": "Title",
    "severity": "Severity",
    "services": "Affected services",
    "status": "Status",
    "summary": "Summary",
    "impact": "Impact",
    "plan": "Plan",
    "owner": "Owner",
    "workaround": "Way around it",
    "prevention": "Prevention",
    "review_by": "Post-incident review by",
}
_OPTIONAL_TEXT = ("workaround", "prevention", "review_by")
"""Fields older incidents lack: templates get ``""`` for them."""


def _domain(config: Config) -> str:
    return config.sender_address.rsplit("@", 1)[-1]


def thread_id_for(incident_id: str, stakeholder_id: str, config: Config) -> str:
    """The Message-ID every message of one incident to one stakeholder refers to."""
    return message_id_for(f"amends.{incident_id}.{stakeholder_id}", _domain(config))


def _review_date(value: object) -> str:
    """``2026-12-01`` as ``Tuesday 1 December 2026``; anything else as it is."""
    return _long_date(str(value)) if value else ""


@functools.lru_cache(maxsize=256)
def _long_date(value: str) -> str:
    try:
        return pendulum.parse(value).format("dddd D MMMM YYYY")  # type: ignore[union-attr]
    except (ValueError, pendulum.parsing.exceptions.ParserError):
        return value


_SECONDS_BELOW_S = 60
"""Times carry seconds only for readers whose cadence is shorter than this."""


def _cadence_s(config: Config, stakeholder: Stakeholder, severity: str) -> int:
    """The reader's cadence for ``severity``; a minute for a severity the configuration lacks."""
    try:
        return config.cadence_s(stakeholder, severity)
    except KeyError:
        return _SECONDS_BELOW_S


def contact_context(stakeholder: Stakeholder, config: Config) -> dict[str, Any]:
    """Whom the reader can answer: the configured contact, else the sender itself."""
    contact = config.contact_of(stakeholder)
    if contact is None:
        return {
            "name": config.sender.split("<")[0].strip() or config.sender_address,
            "email": config.sender_address,
            "phone": "",
            "status_page": "",
            "configured": False,
        }
    return {
        "name": contact.name,
        "email": contact.email,
        "phone": contact.phone or "",
        "status_page": contact.status_page or "",
        "configured": True,
    }


def template_context(
    comm: Communication, stakeholder: Stakeholder, config: Config, now: datetime, secret_key: str
) -> dict[str, Any]:
    """Everything a template may use; times are already in the stakeholder's zone."""
    stored = comm.context
    tz = stored.get("timezone") or config.timezone_of(stakeholder)
    incident = dict(stored["incident"])
    opened_at = utc_of(incident.pop("opened_ms"))
    resolved_at = utc_of(incident.pop("resolved_ms", None))
    changes = [
        {**change, "label": FIELD_LABELS.get(change["field"], change["field"])}
        for change in stored["changes"]
    ]
    since = utc_of(stored.get("since_ms"))
    for name in _OPTIONAL_TEXT:
        incident[name] = incident.get(name) or ""
    incident["review_by"] = _review_date(incident["review_by"])
    links = feedback_links(config.base_url, secret_key, comm.incident_id, stakeholder.id)
    seconds = _cadence_s(config, stakeholder, str(incident.get("severity") or "")) < _SECONDS_BELOW_S

    def when(moment: datetime | None, *, promise: bool = False) -> str:
        return message_time(moment, tz, now, seconds=seconds, promise=promise)

    return {
        "kind": comm.kind,
        "sequence": comm.seq,
        "incident": {
            **incident,
            "opened_at": when(opened_at),
            "resolved_at": when(resolved_at),
        },
        "stakeholder": {
            "id": stakeholder.id,
            "name": stakeholder.name,
            "audience": stakeholder.audience,
            "timezone": tz,
        },
        "changes": changes,
        "no_news": comm.kind == "update" and not changes and not stored.get("first_contact"),
        "first_contact": bool(stored.get("first_contact")) and comm.kind != "acknowledgment",
        "since": when(since),
        "next_update": when(comm.next_update_at, promise=True),
        "next_update_at": comm.next_update_at.isoformat() if comm.next_update_at else "",
        "now": message_time(now, tz, now, seconds=seconds),
        "sender": config.sender.split("<")[0].strip() or config.sender_address,
        "feedback": {
            "links": links,
            "url": feedback_page_link(config.base_url, secret_key, comm.incident_id, stakeholder.id),
        },
        "unsubscribe_url": unsubscribe_link(config.base_url, secret_key, stakeholder.id, comm.incident_id),
        "contact": contact_context(stakeholder, config),
        "about": stored.get("about") or {},
        "tone": tone_for(
            str(incident.get("severity") or ""), comm.kind, comm.incident_id, stakeholder.id, comm.seq
        ),
    }


def compose_email(
    comm: Communication,
    stakeholder: Stakeholder,
    config: Config,
    templates: TemplateSet,
    now: datetime,
    secret_key: str,
) -> tuple[EmailMessage, RenderedMessage]:
    """Render ``comm`` for ``stakeholder`` and wrap it in its headers.

    The unsubscribe link names the incident, so that its page can offer to stop this
    incident's mail or all of it; the message's ``as_string()`` is exactly what is sent.
    """
    context = template_context(comm, stakeholder, config, now, secret_key)
    rendered = templates.render(stakeholder.audience, comm.kind, context)
    thread_id = thread_id_for(comm.incident_id, stakeholder.id, config)
    first = comm.kind == "acknowledgment" and comm.seq == 1
    message_id = thread_id if first else message_id_for(f"amends.{comm.id}", _domain(config))
    extra = {}
    contact = config.contact_of(stakeholder)
    if contact is not None:
        extra["Reply-To"] = formataddr((contact.name, contact.email))
    if stakeholder.audience == "customer":
        extra["List-Unsubscribe"] = f"<{context['unsubscribe_url']}>"
        extra["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"  # RFC 8058
    email = build_email(
        rendered,
        sender=config.sender,
        recipient=formataddr((stakeholder.name, stakeholder.email or "")),
        message_id=message_id,
        thread_id=thread_id,
        sent_at=now,
        extra_headers=extra,
    )
    return email, rendered
