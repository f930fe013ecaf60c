"""Checks a configuration's templates before any incident needs them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from scheduler.config import Config
from scheduler.engine import KINDS
from scheduler.errors import TemplateError
from scheduler.messages import template_context
from scheduler.render import TemplateSet
from scheduler.store import Communication, ms_of

__all__ = ["check_templates", "sample_communication"]

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


def check_templates(config: Config, folder: Path, now: datetime | None = None) -> list[str]:
    """Render every kind for every audience in use; return one line per problem."""
    now = now or datetime.now(UTC)
    try:
        templates = TemplateSet(folder)
    except TemplateError as e:
        return [str(e)]
    problems: list[str] = []
    checked: set[str] = set()
    for stakeholder in config.stakeholders:
        if stakeholder.audience in checked:
            continue
        checked.add(stakeholder.audience)
        for kind in KINDS:
            comm = sample_communication(kind, stakeholder.id, config.timezone_of(stakeholder), now)
            context = template_context(comm, stakeholder, config, now, _SAMPLE_SECRET)
            try:
                rendered = templates.render(stakeholder.audience, kind, context)
            except TemplateError as e:
                problems.append(f"templates: {e}")
                continue
            where = f"{templates.name_of(stakeholder.audience, kind, 'txt')}"
            if kind in ("acknowledgment", "update") and context["next_update"] not in rendered.text:
                problems.append(f"{where}: does not state the next update time ({{{{ next_update }}}})")
            if kind == "feedback_request" and context["feedback"]["links"][1] not in rendered.text:
                problems.append(f"{where}: does not carry the feedback links ({{{{ feedback.links }}}})")
    return problems
