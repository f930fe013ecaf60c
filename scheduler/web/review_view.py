"""The review page's view model: each incident with every stakeholder's timeline, feedback and opt-out.

Each thread's promise still to keep is told in words (:func:`promise_words`), and each
incident is drawn as a timeline picture (:mod:`scheduler.web.timeline_svg`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import quote

import pendulum
from markupsafe import Markup

from scheduler.core.durations import TimeWindow
from scheduler.core.feedback import Feedback
from scheduler.core.model import Communication, Kind, Status, utc_of
from scheduler.core.promises import ON_TIME_GRACE_S
from scheduler.mail.render import DAYS, MONTHS, local_time, zone
from scheduler.web.timeline_svg import Lane, Mark, timeline_svg

__all__ = [
    "IncidentView",
    "StakeholderView",
    "TimelineRow",
    "badge",
    "message_href",
    "promise_words",
    "review_view",
    "shown_time",
]


def shown_time(moment: datetime | None, tz: str) -> str:
    """A moment as the pages show it, in ``tz``: "Fri 27 Nov 08:20:24 UTC"."""
    if moment is None:
        return ""
    local = moment.astimezone(zone(tz))
    # the year only when it is not this year's, so that old or odd dates are not misread
    year = "" if local.year == datetime.now(local.tzinfo).year else f" {local.year}"
    return f"{DAYS[local.weekday()]} {local.day} {MONTHS[local.month - 1]}{year} {local:%H:%M:%S} {local.tzname()}"


def badge(comm: Communication, now: datetime, grace_s: float = ON_TIME_GRACE_S) -> str:
    """How the communication's promise stands: kept, late, failed, cancelled,
    suppressed, overdue or pending."""
    if comm.lateness_s is not None:
        return "kept" if comm.lateness_s <= grace_s else "late"
    if comm.status in ("failed", "cancelled", "suppressed"):
        return comm.status
    if (now - comm.promised_at).total_seconds() > grace_s:
        return "overdue"
    return "pending"


@dataclass(frozen=True)
class TimelineRow:
    id: str
    seq: int
    kind: str
    status: str
    subject: str
    promised: str
    sent: str
    lateness: str
    badge: str
    last_error: str
    href: str = ""
    """Where the message as sent (or as composed) can be read."""


@dataclass(frozen=True)
class StakeholderView:
    id: str
    timezone: str
    rows: tuple[TimelineRow, ...]
    feedback: Feedback | None
    unsubscribed: str
    name: str = ""
    pending: str = ""
    """The promise still to be kept, in words: "update held until 07:00 CET by quiet hours"."""
    via: str = ""
    """Where its messages go: an email address, or the channel and host (``slack:hooks.slack.com``)."""
    follow_ups: tuple[str, ...] = ()
    """What we told the reader about their feedback (``follow_up`` messages), oldest first."""

    @property
    def unanswered(self) -> bool:
        """A comment that no follow-up answers yet."""
        return bool(self.feedback and self.feedback.comment and not self.follow_ups)


@dataclass(frozen=True)
class IncidentView:
    id: str
    title: str
    severity: str
    state: str
    status: str
    opened: str
    resolved: str
    stakeholders: tuple[StakeholderView, ...]
    svg: Markup = field(default_factory=lambda: Markup(""))
    """The incident's timeline picture (inline SVG, built from escaped text)."""


def message_href(comm_id: str) -> str:
    """The review page's link to one communication's message."""
    return f"/review/messages/{quote(comm_id, safe='')}"


def _row(comm: Communication, now: datetime, grace_s: float) -> TimelineRow:
    tz = str(comm.context.get("timezone") or "UTC")
    lateness = comm.lateness_s
    return TimelineRow(
        id=comm.id,
        seq=comm.seq,
        kind=comm.kind,
        status=comm.status,
        subject=comm.subject,
        promised=shown_time(comm.promised_at, tz),
        sent=shown_time(comm.sent_at, tz),
        lateness=f"{lateness:+.1f}s" if lateness is not None else "",
        badge=badge(comm, now, grace_s),
        last_error=comm.last_error if comm.status != "sent" else "",
        href=message_href(comm.id) if comm.status in ("sent", "failed") else "",
    )


def _opted_out(opted_out: Mapping[str, datetime], stakeholder_id: str, incident_id: str, tz: str) -> str:
    if stakeholder_id in opted_out:
        return f"unsubscribed {shown_time(opted_out[stakeholder_id], tz)}"
    this_incident = opted_out.get(f"{stakeholder_id}:{incident_id}")
    return f"unsubscribed from this incident {shown_time(this_incident, tz)}" if this_incident else ""


def review_view(
    incidents: Iterable[Mapping[str, Any]],
    comms: Iterable[Communication],
    feedback: Mapping[str, Mapping[str, Feedback]],
    opted_out: Mapping[str, datetime],
    now: datetime,
    *,
    names: Mapping[str, str] | None = None,
    pending: Mapping[tuple[str, str], tuple[datetime, str]] | None = None,
    grace_s: float = ON_TIME_GRACE_S,
) -> list[IncidentView]:
    """Each incident (in the order given) with every stakeholder's timeline and feedback;
    ``opted_out`` maps opt-out ids (``stakeholder`` or ``stakeholder:incident``) to when,
    ``names`` stakeholder ids to names, and ``pending`` (incident, stakeholder) to the
    promise not composed yet: its due time and its words."""
    names = names or {}
    pending = pending or {}
    threads: dict[str, dict[str, list[Communication]]] = {}
    for comm in comms:
        threads.setdefault(comm.incident_id, {}).setdefault(comm.stakeholder_id, []).append(comm)
    views = []
    for incident in incidents:
        incident_id = str(incident["id"])
        by_stakeholder = threads.get(incident_id, {})
        answers = feedback.get(incident_id, {})
        order = list(dict.fromkeys([*incident.get("stakeholders", []), *by_stakeholder, *answers]))
        stakeholders = []
        lanes: list[Lane] = []
        for sid in order:
            thread = sorted(by_stakeholder.get(sid, []), key=lambda c: (c.created_at, c.seq))
            tz = str(thread[-1].context.get("timezone") or "UTC") if thread else "UTC"
            stakeholders.append(
                StakeholderView(
                    id=sid,
                    timezone=tz,
                    rows=tuple(_row(c, now, grace_s) for c in thread),
                    feedback=answers.get(sid),
                    unsubscribed=_opted_out(opted_out, sid, incident_id, tz),
                    name=names.get(sid, sid),
                    pending=pending.get((incident_id, sid), (now, ""))[1],
                    via=thread[-1].recipient if thread else "",
                    follow_ups=follow_up_texts(thread),
                )
            )
            lanes.append(_lane(names.get(sid, sid), thread, now, pending.get((incident_id, sid)), grace_s))
        views.append(
            IncidentView(
                id=incident_id,
                title=str(incident.get("title", "")),
                severity=str(incident.get("severity", "")),
                state=str(incident.get("state", "")),
                status=str(incident.get("status", "")),
                opened=shown_time(utc_of(incident.get("opened_ms")), "UTC"),
                resolved=shown_time(utc_of(incident.get("resolved_ms")), "UTC"),
                stakeholders=tuple(stakeholders),
                svg=_picture(incident, lanes, now),
            )
        )
    return views


def follow_up_texts(thread: Iterable[Communication]) -> tuple[str, ...]:
    """The texts of a thread's follow-ups that were not cancelled, oldest first."""
    return tuple(
        str((c.context.get("about") or {}).get("text", ""))
        for c in thread
        if c.kind == Kind.FOLLOW_UP and c.status != Status.CANCELLED
    )


def _lane(
    name: str,
    thread: list[Communication],
    now: datetime,
    upcoming: tuple[datetime, str] | None,
    grace_s: float,
) -> Lane:
    marks = tuple(
        Mark(
            label=f"{c.kind} #{c.seq}: {badge(c, now, grace_s)}"
            + (f", sent {c.lateness_s:+.0f}s from the promise" if c.lateness_s is not None else ""),
            promised=c.promised_at,
            sent=c.sent_at,
            badge=badge(c, now, grace_s),
        )
        for c in thread
    )
    return Lane(name, marks, upcoming[0] if upcoming else None)


def _picture(incident: Mapping[str, Any], lanes: list[Lane], now: datetime) -> Markup:
    moments = [m.promised for lane in lanes for m in lane.marks]
    moments += [m.sent for lane in lanes for m in lane.marks if m.sent is not None]
    moments += [lane.upcoming for lane in lanes if lane.upcoming is not None]
    if not moments:
        return Markup("")
    start = utc_of(incident.get("opened_ms")) or min(moments)
    end = max([*moments, min(now, max(moments))])
    caption = f"Timeline of {incident.get('id', '')}: each stakeholder's messages, promised against sent"
    # every text in the SVG is escaped by timeline_svg
    return Markup(timeline_svg(lanes, min(start, *moments), end, caption))


def promise_words(
    kind: str,
    due: datetime,
    now: datetime,
    *,
    timezone: str,
    quiet_hours: TimeWindow | None = None,
    business_hours: TimeWindow | None = None,
    grace_s: float = ON_TIME_GRACE_S,
) -> str:
    """A promise not yet kept, in words: "update held until 07:00 CET by quiet hours",
    "next update by 14:30 CET", "feedback request at Mon 30 Nov, 09:00 CET (business hours)"."""
    when = local_time(due, timezone, now)
    local = pendulum.instance(due).in_tz(timezone)
    on_the_minute = local.second == 0 and local.microsecond == 0
    clock = local.time().replace(second=0, microsecond=0)
    if (now - due).total_seconds() > grace_s:
        what = "update" if kind == "update" else "feedback request"
        return f"{what} promised by {when} is overdue"
    if kind == "update":
        if quiet_hours is not None and on_the_minute and clock == quiet_hours.end:
            return f"update held until {when} by quiet hours"
        return f"next update by {when}"
    if business_hours is not None and on_the_minute and clock == business_hours.start:
        return f"feedback request at {when}, when business hours begin"
    return f"feedback request at {when}"
