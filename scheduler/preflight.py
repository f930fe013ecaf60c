"""Checks a configuration's templates before any incident needs them."""

from __future__ import annotations

import html
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jinja2

from scheduler.config import Config, Stakeholder
from scheduler.engine import KINDS
from scheduler.errors import TemplateError
from scheduler.messages import template_context
from scheduler.render import RenderedMessage, TemplateSet
from scheduler.store import Communication, ms_of

__all__ = ["audience_warnings", "check_templates", "sample_communication"]

_SAMPLE_SECRET = "sample-secret"


def sample_communication(kind: str, stakeholder_id: str, timezone: str, now: datetime) -> Communication:
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
        "opened_ms": ms_of(now - timedelta(minutes=30)),
        "resolved_ms": ms_of(now) if kind in ("resolution", "feedback_request") else None,
    }
    changes = [{"field": "status", "old": "investigating", "new": "identified"}] if kind == "update" else []
    wants_next = kind in ("acknowledgment", "update")
    return Communication(
        id=f"INC-SAMPLE:{stakeholder_id}:{kind}:1",
        incident_id="INC-SAMPLE",
        stakeholder_id=stakeholder_id,
        kind=kind,
        seq=2,
        status="scheduled",
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


def audience_warnings(config: Config, folder: Path) -> list[str]:
    """Stakeholders whose audience has no template folder (a typo falls back silently)."""
    return [
        f"stakeholders[{index}].audience: there is no {folder / stakeholder.audience}/ folder; "
        f"the default/ templates will be used"
        for index, stakeholder in enumerate(config.stakeholders)
        if stakeholder.audience != "default" and not (folder / stakeholder.audience).is_dir()
    ]


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
    audiences = {s.audience: s for s in config.stakeholders}
    folders = sorted(p.name for p in folder.iterdir() if p.is_dir() and p.name != "default")
    sample_stakeholder = Stakeholder(id="sample", name="Sample Reader", email="sample@example.org")
    for audience in sorted({"default", *folders, *audiences}):
        stakeholder = audiences.get(audience) or sample_stakeholder.model_copy(update={"audience": audience})
        for kind in KINDS:
            comm = sample_communication(kind, stakeholder.id, config.timezone_of(stakeholder), now)
            context = template_context(comm, stakeholder, config, now, _SAMPLE_SECRET)
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
