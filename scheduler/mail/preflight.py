"""Checks a configuration's templates before any incident needs them."""

from __future__ import annotations

import html
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jinja2

from scheduler.core.config import Config, Stakeholder
from scheduler.core.events import Event
from scheduler.core.model import Communication, Kind, Status, ms_of
from scheduler.errors import TemplateError
from scheduler.mail.closing_samples import sample_about
from scheduler.mail.messages import template_context
from scheduler.mail.render import RenderedMessage, TemplateSet

__all__ = [
    "THIN_WORDS",
    "audience_warnings",
    "check_templates",
    "sample_communication",
    "sample_readers",
    "thin_event_warnings",
    "thin_message_warnings",
]

_SAMPLE_SECRET = "sample-secret"


def sample_communication(kind: Kind, stakeholder_id: str, timezone: str, now: datetime) -> Communication:
    """A realistic communication of ``kind`` to render templates against."""
    incident = {
        "id": "INC-SAMPLE",
        "title": "Card payments failing for some customers",
        "severity": "sev1",
        "services": ["payments"],
        "status": "identified",
        "summary": "A certificate expired on the card processor link.",
        "impact": "About 1 in 5 card payments fail.",
        "plan": "Rotate the certificate, then replay failed payments.",
        "owner": "Payments on-call",
        "workaround": "Pay by bank transfer until card payments work again.",
        "prevention": "Certificates now renew automatically 30 days before they expire.",
        "review_by": "2026-12-01",
        "opened_ms": ms_of(now - timedelta(minutes=30)),
        "resolved_ms": ms_of(now) if kind not in ("acknowledgment", "update") else None,
    }
    changes = [{"field": "status", "old": "investigating", "new": "identified"}] if kind == "update" else []
    wants_next = kind in ("acknowledgment", "update")
    return Communication(
        id=f"INC-SAMPLE:{stakeholder_id}:{kind}:1",
        incident_id="INC-SAMPLE",
        stakeholder_id=stakeholder_id,
        kind=kind,
        seq=2,
        status=Status.SCHEDULED,
        recipient="sample@example.org",
        created_at=now,
        promised_at=now,
        next_update_at=now + timedelta(minutes=30) if wants_next else None,
        sent_at=None,
        attempts=0,
        last_error="",
        subject="",
        message_id="",
        context={
            "incident": incident,
            "changes": changes,
            "since_ms": ms_of(now - timedelta(minutes=15)),
            "timezone": timezone,
            "about": sample_about(kind),
        },
        message="",
    )


def _syntax_problems(templates: TemplateSet) -> list[str]:
    problems = []
    for name in templates.env.list_templates(filter_func=lambda n: n.endswith(".j2")):
        try:
            templates.env.get_template(name)
        except jinja2.TemplateSyntaxError as e:
            problems.append(f"templates: {e.name or name}:{e.lineno}: {e.message}")
    return problems


def _missing(rendered: RenderedMessage, needle: str) -> list[str]:
    html_needle = html.escape(needle)
    return [
        part
        for part, body, want in (("txt", rendered.text, needle), ("html", rendered.html, html_needle))
        if want not in body
    ]


def audience_warnings(config: Config | Any, folder: Path) -> list[str]:
    """Stakeholders whose audience has no template folder (a typo falls back silently).

    ``config`` may also be the raw YAML document of a file that failed validation, so that
    an unknown audience is reported whatever else is wrong.
    """
    if isinstance(config, Config):
        audiences = [(i, s.audience) for i, s in enumerate(config.stakeholders)]
    else:
        listed = config.get("stakeholders") if isinstance(config, dict) else None
        audiences = [
            (i, s.get("audience", "default"))
            for i, s in enumerate(listed if isinstance(listed, list) else [])
            if isinstance(s, dict)
        ]
    return [
        f"stakeholders[{index}].audience: there is no {folder / str(audience)}/ folder; "
        f"the default/ templates will be used"
        for index, audience in audiences
        if audience != "default" and not (isinstance(audience, str) and (folder / audience).is_dir())
    ]


THIN_WORDS = 40
"""A message body with fewer words than this (links and the signature aside) says almost nothing."""


def _words(text: str) -> int:
    return sum(1 for word in text.split() if "://" not in word)


def thin_message_warnings(templates: TemplateSet, config: Config, now: datetime) -> list[str]:
    """Templates whose text body, rendered for a realistic sample, says almost nothing."""
    warnings: dict[str, str] = {}
    for audience, kind, context in _sample_contexts(templates, config, now):
        try:
            rendered = templates.render(audience, kind, context)
        except TemplateError:
            continue  # reported as an error by check_templates
        words = _words(rendered.text)
        name = templates.name_of(audience, kind, "txt")
        if words < THIN_WORDS and name not in warnings:
            warnings[name] = (
                f"{name}: says almost nothing ({words} words for a full sample incident); "
                "readers expect what is wrong, what it means for them, what is done and what comes next"
            )
    return sorted(warnings.values())


def sample_readers(templates: TemplateSet, config: Config) -> Iterator[tuple[str, Stakeholder]]:
    """Every audience, configured or present in the template folder, with a stakeholder
    reading it: the first configured one, else a sample reader."""
    audiences: dict[str, Stakeholder] = {}
    for stakeholder in config.stakeholders:
        audiences.setdefault(stakeholder.audience, stakeholder)
    sample = Stakeholder(id="sample", name="Sample Reader", email="sample@example.org")
    folders = sorted(p.name for p in templates.folder.iterdir() if p.is_dir() and p.name != "default")
    for audience in sorted({"default", *folders, *audiences}):
        yield audience, audiences.get(audience) or sample.model_copy(update={"audience": audience})


def _sample_contexts(
    templates: TemplateSet, config: Config, now: datetime
) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(audience, kind, template context) for every kind of every audience, configured or
    present in the template folder, each for a sample communication and stakeholder."""
    for audience, stakeholder in sample_readers(templates, config):
        for kind in Kind:
            comm = sample_communication(kind, stakeholder.id, config.timezone_of(stakeholder), now)
            yield audience, kind, template_context(comm, stakeholder, config, now, _SAMPLE_SECRET)


THIN_FIELD_WORDS = 3
"""Incident text shorter than this many words ("Fixed") tells a reader almost nothing."""
_TEXT_FIELDS = ("summary", "impact", "plan", "workaround", "prevention")


def thin_event_warnings(events: Sequence[Event]) -> list[str]:
    """Where the events' text would leave a message saying almost nothing.

    Events stay valid (emitting is permissive); this is advice for whoever writes them.
    """
    warnings = []
    latest: dict[str, dict[str, Any]] = {}
    for index, event in enumerate(events):
        where = f"events[{index}] ({event.type} {event.incident_id})"
        for name in _TEXT_FIELDS:
            value = getattr(event.incident, name)
            if value is not None and len(value.split()) < THIN_FIELD_WORDS:
                shown = value if len(value) <= 40 else value[:39] + "…"
                warnings.append(
                    f"{where}: incident.{name} {shown!r} says almost nothing; readers will see "
                    f"only that (write what happened, what it means for them, what is done)"
                )
        fields = latest.setdefault(event.incident_id, {})
        fields.update(event.incident.given())
        if event.type == "incident.resolved":
            missing = [n for n in ("summary", "prevention") if not fields.get(n)]
            if missing:
                warnings.append(
                    f"{where}: the resolution will have no {' and no '.join(missing)}; "
                    "readers want to know what happened and what will stop it happening again"
                )
        if event.type == "incident.opened" and not fields.get("impact"):
            warnings.append(
                f"{where}: no incident.impact: the acknowledgment cannot say what this means for readers"
            )
    return warnings


def check_templates(config: Config, folder: Path, now: datetime | None = None) -> list[str]:
    """Compile every template, render each kind for every audience (configured or present
    in the folder) against a sample, and check what each kind must carry.

    Returns one line per problem, each naming the template (and line, where there is one).
    """
    now = now or datetime.now(UTC)
    try:
        templates = TemplateSet(folder)
    except TemplateError as e:
        return [str(e)]
    problems = _syntax_problems(templates)
    for audience, kind, context in _sample_contexts(templates, config, now):
        try:
            rendered = templates.render(audience, kind, context)
        except TemplateError as e:
            message = f"templates: {e}"
            if message not in problems:
                problems.append(message)
            continue
        if kind in ("acknowledgment", "update"):
            for part in _missing(rendered, context["next_update"]):
                name = templates.name_of(audience, kind, part)
                problems.append(f"{name}: does not state the next update time ({{{{ next_update }}}})")
        if kind == "feedback_request":
            for part in _missing(rendered, context["feedback"]["links"][1]):
                name = templates.name_of(audience, kind, part)
                problems.append(f"{name}: does not carry the feedback links ({{{{ feedback.links }}}})")
    return sorted(set(problems))
