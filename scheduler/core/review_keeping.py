"""The promised post-incident review, kept like an update promise.

The date a reader was last told (the resolution's ``review_by``, then the new date of a
``review_delayed``) arms two timers of the incident's owner thread: ``r|INC-1|owner`` a
``review_reminder_before`` ahead, which reminds the owner, and ``v|INC-1|owner`` at the end
of that day. When the review is published (``incident.review_published``) every reader who
received the resolution gets a ``review`` and both timers are cancelled; when the day ends
first, each of them gets a ``review_delayed`` saying so, with the new date when an update
set a later ``review_by``, and the timers are armed again for that date.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from scheduler.core.closing import Closing, review_page_url
from scheduler.core.model import Action, EventRecord, Incident, Kind, Status, TimerKind, TimerMember, ms_of
from scheduler.core.owners import owner_of
from scheduler.core.review_promise import long_date, review_due

__all__ = ["ReviewKeeping"]

_EARLY_TOLERANCE = timedelta(milliseconds=50)
_TOLD_BY = (Kind.RESOLUTION, Kind.REVIEW_DELAYED)


class ReviewKeeping:
    """Reminders, the review itself and the honest word when it is late, over :class:`Closing`'s ports."""

    def __init__(self, closing: Closing) -> None:
        self.closing = closing

    def _members(self, incident: Incident) -> tuple[str, str]:
        owner = owner_of(self.closing.config(), incident.services)
        return (
            str(TimerMember(TimerKind.REVIEW_REMINDER, incident.id, owner.id)),
            str(TimerMember(TimerKind.REVIEW_DUE, incident.id, owner.id)),
        )

    # -- what readers were told --------------------------------------------------------

    def told(self, incident: Incident) -> str | None:
        """The review date readers were last told (``2026-12-01``), or None: no date now.
        Before a resolution promised one, the open incident's own ``review_by`` (no log
        read); a resolution that promised none leaves readers with nothing promised."""
        if not incident.review_promised:
            return incident.review_by if incident.is_open else None
        told = [
            c
            for c in self.closing.store.incident_comms(incident.id)
            if c.kind in _TOLD_BY and c.status not in (Status.FAILED, Status.CANCELLED)
        ]
        if not told:
            return incident.review_by
        last = max(told, key=lambda c: (c.created_at, c.seq))
        if last.kind == Kind.RESOLUTION:
            return last.context.get("incident", {}).get("review_by") or None
        return (last.context.get("about") or {}).get("new_date_iso") or None

    def readers(self, incident: Incident) -> list[str]:
        """Who received the resolution (or has it on its way), in id order."""
        config = self.closing.config()
        return sorted(
            {
                c.stakeholder_id
                for c in self.closing.store.incident_comms(incident.id)
                if c.kind == Kind.RESOLUTION
                and c.status not in (Status.FAILED, Status.CANCELLED)
                and config.stakeholder(c.stakeholder_id) is not None
            }
        )

    # -- events ------------------------------------------------------------------------

    def after_event(self, record: EventRecord, now: datetime) -> list[str]:
        """Send the review when this event published it; keep the timers on the date told."""
        incident = record.incident
        if incident is None or not (incident.review_by or record.action == Action.REVIEW):
            return []
        comms = self._publish(incident, now) if record.action == Action.REVIEW else []
        self.arm(incident, now)
        return comms

    def arm(self, incident: Incident, now: datetime) -> None:
        """Arm the reminder and the due timer for the date told; cancel both once published or dateless."""
        reminder, due_member = self._members(incident)
        told = None if incident.review_published_ms is not None else self.told(incident)
        if told is None:
            self.closing.timers.cancel(reminder)
            self.closing.timers.cancel(due_member)
            return
        config = self.closing.config()
        due = review_due(told, config.defaults.timezone)
        self.closing.timers.arm_many(
            [
                (due_member, ms_of(due)),
                (reminder, ms_of(due - timedelta(seconds=config.review_reminder_before))),
            ]
        )

    def _publish(self, incident: Incident, now: datetime) -> list[str]:
        about = {"review_url": incident.review_url or "", "summary": incident.review_summary or ""}
        config = self.closing.config()
        made = []
        for sid in self.readers(incident):
            stakeholder = config.stakeholder(sid)
            assert stakeholder is not None
            comm_id = self.closing.compose(incident, stakeholder, Kind.REVIEW, "review", about, now)
            if comm_id:
                made.append(comm_id)
        return made

    # -- timers ------------------------------------------------------------------------

    def fire(self, timer: TimerMember, due_ms: int, now: datetime) -> str | None:
        """The reminder or the review's day came due."""
        incident = self.closing.store.incident(timer.incident_id)
        if incident is None or incident.review_published_ms is not None:
            return None
        told = self.told(incident)
        if told is None:
            return None
        config = self.closing.config()
        if timer.kind == TimerKind.REVIEW_REMINDER:
            about = {
                "review_by": long_date(told),
                "told": len(self.readers(incident)) or len(incident.stakeholders),
                "review_url": review_page_url(config, incident.id),
            }
            owner = owner_of(config, incident.services)
            return self.closing.compose(incident, owner, Kind.REVIEW_REMINDER, f"reminder:{told}", about, now)
        due = review_due(told, config.defaults.timezone)
        if due > now + _EARLY_TOLERANCE:
            self.closing.timers.arm(str(timer), ms_of(due))
            return None
        return self._delayed(incident, told, now)

    def _delayed(self, incident: Incident, told: str, now: datetime) -> str | None:
        """Tell each reader the promised day passed, with the new date when there is one."""
        later = incident.review_by if incident.review_by and incident.review_by > told else ""
        about = {
            "promised": long_date(told),
            "promised_iso": told,
            "new_date": long_date(later) if later else "",
            "new_date_iso": later,
        }
        config = self.closing.config()
        first = None
        for sid in self.readers(incident):
            stakeholder = config.stakeholder(sid)
            assert stakeholder is not None
            made = self.closing.compose(
                incident, stakeholder, Kind.REVIEW_DELAYED, f"delayed:{told}", about, now
            )
            first = first or made
        if later:
            self.arm(incident, now)
        return first
