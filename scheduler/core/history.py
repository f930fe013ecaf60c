"""One stakeholder's history across incidents: what concerned them, what we sent, which
promises we kept, how they rated us, and what we answered.

A pure function of the incidents, the communications and the feedback the store keeps,
and ``now`` (a promise still in its grace is not counted yet).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from scheduler.core.feedback import Feedback
from scheduler.core.model import Communication, Incident, Kind, Status, iso_z, utc_of
from scheduler.core.promises import promise_report

__all__ = ["IncidentLine", "StakeholderHistory", "stakeholder_history"]


@dataclass(frozen=True)
class IncidentLine:
    """One incident that concerned the stakeholder, with how our promises to them went in it."""

    id: str
    title: str
    severity: str
    opened_at: datetime | None
    resolved_at: datetime | None
    messages: int
    kept: int
    late: int
    missed: int

    @property
    def kept_rate(self) -> float | None:
        """Kept of the promises counted (None when none is)."""
        counted = self.kept + self.late + self.missed
        return self.kept / counted if counted else None


@dataclass(frozen=True)
class StakeholderHistory:
    """``GET /v1/stakeholders/{id}`` and the page ``/stakeholders/{id}``."""

    id: str
    name: str
    incidents: tuple[IncidentLine, ...]
    ratings: tuple[dict[str, Any], ...]
    follow_ups: tuple[dict[str, Any], ...]

    @property
    def messages(self) -> int:
        return sum(i.messages for i in self.incidents)

    def promises(self) -> dict[str, int]:
        return {
            "kept": sum(i.kept for i in self.incidents),
            "late": sum(i.late for i in self.incidents),
            "missed": sum(i.missed for i in self.incidents),
        }

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "incidents": [
                {
                    "id": i.id,
                    "title": i.title,
                    "severity": i.severity,
                    "opened_at": iso_z(i.opened_at),
                    "resolved_at": iso_z(i.resolved_at),
                    "messages": i.messages,
                    "promises": {"kept": i.kept, "late": i.late, "missed": i.missed},
                }
                for i in self.incidents
            ],
            "messages": self.messages,
            "promises": self.promises(),
            "ratings": list(self.ratings),
            "follow_ups": list(self.follow_ups),
        }


def stakeholder_history(
    stakeholder_id: str,
    name: str,
    incidents: Iterable[Incident],
    comms: Iterable[Communication],
    feedback: Mapping[str, Feedback],
    now: datetime,
    grace_s: float,
) -> StakeholderHistory:
    """The history of ``stakeholder_id`` over ``incidents`` (oldest opened first); ``comms``
    may hold other stakeholders' messages, ``feedback`` is theirs by incident id. A promise
    is kept when sent in time, late when sent after, missed when it failed or is overdue."""
    own: dict[str, list[Communication]] = {}
    for comm in comms:
        if comm.stakeholder_id == stakeholder_id:
            own.setdefault(comm.incident_id, []).append(comm)
    lines = []
    follow_ups = []
    for incident in sorted(incidents, key=lambda i: (i.opened_ms, i.id)):
        thread = sorted(own.get(incident.id, []), key=lambda c: (c.created_at, c.seq))
        report = promise_report(thread, now, (), grace_s)
        lines.append(
            IncidentLine(
                id=incident.id,
                title=incident.title,
                severity=incident.severity,
                opened_at=utc_of(incident.opened_ms),
                resolved_at=utc_of(incident.resolved_ms),
                messages=sum(1 for c in thread if c.status == Status.SENT),
                kept=report.on_time,
                late=report.late,
                missed=report.failed + report.overdue_unsent,
            )
        )
        follow_ups += [
            {
                "incident_id": incident.id,
                "id": c.id,
                "text": str((c.context.get("about") or {}).get("text", "")),
                "status": str(c.status),
                "at": iso_z(c.sent_at or c.created_at),
            }
            for c in thread
            if c.kind == Kind.FOLLOW_UP
        ]
    ratings = [
        {
            "incident_id": incident_id,
            "rating": answer.rating,
            "comment": answer.comment,
            "at": iso_z(max(m for m in (answer.rated_at, answer.commented_at) if m is not None)),
        }
        for incident_id, answer in feedback.items()
        if answer.rated_at is not None or answer.commented_at is not None
    ]
    ratings.sort(key=lambda r: str(r["at"]))
    return StakeholderHistory(stakeholder_id, name, tuple(lines), tuple(ratings), tuple(follow_ups))
