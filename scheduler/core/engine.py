"""What happens when an event arrives or a timer comes due: who hears what, and when next.

The engine is the product's logic between the ports: it reads the configuration in force,
keeps state through :class:`~scheduler.storage.port.Store`, arms timers in a
:class:`~scheduler.storage.timers.TimerStore` and hands communication ids to a :class:`Dispatch`
(Dramatiq in production, a list in the preview). Every entry point takes ``now`` and is
idempotent: running it twice for the same event or timer creates and sends nothing new.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from scheduler.core import cadence
from scheduler.core.config import Config, Stakeholder
from scheduler.core.events import MATERIAL_FIELDS, Event
from scheduler.core.model import (
    CONTENT_FIELDS,
    Action,
    Draft,
    EventRecord,
    Incident,
    IncidentState,
    Kind,
    Status,
    Thread,
    TimerKind,
    TimerMember,
    ms_of,
    utc_of,
)
from scheduler.storage.port import Store
from scheduler.storage.timers import TimerStore

__all__ = ["Dispatch", "Engine", "Outcome", "changes_between"]

logger = logging.getLogger(__name__)

_EARLY_TOLERANCE = timedelta(milliseconds=50)


class Dispatch(Protocol):
    """Where communications go to be sent.

    ``deliver`` may hold ids back to hand them over in groups; ``flush`` hands over what it
    holds. The engine flushes at the end of every entry point (and a crash before that is
    covered by the sweep of unfinished communications).
    """

    def deliver(self, comm_id: str) -> None: ...
    def flush(self) -> None: ...


def _timer(kind: TimerKind, incident_id: str, stakeholder_id: str) -> str:
    return str(TimerMember(kind, incident_id, stakeholder_id))


@dataclass(frozen=True)
class Outcome:
    """What handling one event did."""

    duplicate: bool
    rejected: str = ""
    communications: tuple[str, ...] = ()
    waiting: str = ""
    """Why the event cannot apply yet (its incident's ``opened`` has not arrived): try again."""


def _new_incident(event: Event) -> Incident:
    now_ms = ms_of(event.occurred_at)
    return Incident(id=event.incident_id, state_ms=now_ms, opened_ms=now_ms, updated_ms=now_ms)


def _some(comm_id: str | None) -> list[str]:
    return [comm_id] if comm_id is not None else []


def changes_between(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each content field whose value differs, in field order: ``{"field", "old", "new"}``."""
    return [
        {"field": f, "old": before.get(f), "new": after.get(f)}
        for f in CONTENT_FIELDS
        if before.get(f) != after.get(f)
    ]


def _newcomers(config: Config, incident: Incident) -> list[Stakeholder]:
    """Stakeholders the incident concerns who have not been told of it yet."""
    informed = set(incident.stakeholders)
    return [s for s in config.concerned(incident.severity, incident.services) if s.id not in informed]


class Engine:
    """The product's decisions, with the configuration read through ``config()`` each time."""

    def __init__(
        self,
        store: Store,
        timers: TimerStore,
        config: Callable[[], Config],
        dispatch: Dispatch,
        opted_out: Callable[[str, str], bool] | None = None,
    ) -> None:
        self.store = store
        self.timers = timers
        self.config = config
        self.dispatch = dispatch
        self.opted_out = opted_out or (
            lambda stakeholder_id, incident_id: store.is_opted_out(stakeholder_id, incident_id)
        )
        """``opted_out(stakeholder_id, incident_id)``: True when that stakeholder opted out of it
        (by default, what the store keeps)."""

    # -- events ------------------------------------------------------------------------

    def handle_event(self, event: Event, now: datetime, received_at: datetime | None = None) -> Outcome:
        """Apply ``event`` once and send what it calls for.

        ``received_at`` is when the event was enqueued: what it causes (acknowledgments,
        changes, resolutions) is promised for that moment, so time spent waiting for a
        worker shows as lateness in the log.
        """
        try:
            return self._handle_event(event, now, received_at)
        finally:
            self.dispatch.flush()

    def _handle_event(self, event: Event, now: datetime, received_at: datetime | None) -> Outcome:
        def apply(current: Incident | None) -> EventRecord:
            record = self._apply(event, current, now)
            record.received_ms = ms_of(min(received_at or now, now))
            return record

        record = self.store.apply_event(event.event_id, event.incident_id, apply)
        if record.waiting:
            return Outcome(duplicate=False, waiting=record.waiting)
        if record.rejected:
            return Outcome(duplicate=record.duplicate, rejected=record.rejected)
        if record.duplicate and record.done:
            return Outcome(duplicate=True)
        comms = self._follow_up(record, now)
        self.store.mark_event_done(event.event_id)
        return Outcome(duplicate=record.duplicate, communications=tuple(comms))

    def _apply(self, event: Event, current: Incident | None, now: datetime) -> EventRecord:
        """The event's record: the incident after it, and what that calls for.

        Events may arrive in any order; the outcome is as if they came in ``occurred_at``
        order. Each field remembers when it was last set, so an older event never moves
        it back; the open/resolved state likewise. An event of an incident whose
        ``opened`` has not arrived yet is ``waiting``.
        """
        if current is None and event.type != "incident.opened":
            reason = f"incident {event.incident_id!r} is not known yet; waiting for its incident.opened"
            return EventRecord(event.event_id, event.type, waiting=reason)
        occurred_ms = ms_of(event.occurred_at)
        state = copy.deepcopy(current) if current else _new_incident(event)
        # An opened incident's defaults (status "investigating", no owner yet, ...) hold as of
        # its opening: an update dated before that does not replace them.
        opened_defaults = {} if current else {f: occurred_ms for f in CONTENT_FIELDS}
        field_ms: dict[str, int] = {**opened_defaults, **state.field_times}
        state_ms = state.state_ms
        # resolved, reopened and opened each assert the incident's state as of when they
        # occurred; the latest assertion wins, whatever the order they arrive in.
        asserted, implied = {
            "incident.resolved": (IncidentState.RESOLVED, {"status": "resolved"}),
            "incident.reopened": (IncidentState.OPEN, {"status": "investigating"}),
            "incident.opened": (IncidentState.OPEN, {}),
        }.get(event.type, (None, {}))
        was = state.state
        if current is not None and asserted is not None and occurred_ms >= state_ms:
            state.state, state_ms = asserted, occurred_ms
        else:
            implied = {}
        for name, value in {**implied, **event.incident.given()}.items():
            if occurred_ms >= field_ms.get(name, -1):
                state.set(name, value)
                field_ms[name] = occurred_ms
        state.field_times, state.state_ms, state.updated_ms = field_ms, state_ms, ms_of(now)
        if current is None:
            action = Action.OPEN
        elif was == IncidentState.OPEN and not state.is_open:
            action, state.resolved_ms = Action.RESOLVE, ms_of(now)
        elif was == IncidentState.RESOLVED and state.is_open:
            action, state.resolved_ms = Action.REOPEN, None
        else:
            action = Action.UPDATE if state.is_open else Action.NONE
        changes = changes_between(current.content(), state.content()) if current else []
        newcomers: list[str] = []
        if state.is_open:
            # Decided here, under the incident's transaction: of two events handled at once,
            # exactly one finds a stakeholder new and acknowledges to it.
            newcomers = [s.id for s in _newcomers(self.config(), state)]
            state.stakeholders = [*state.stakeholders, *newcomers]
        return EventRecord(
            event_id=event.event_id,
            event_type=event.type,
            incident=state,
            action=action,
            newcomers=newcomers,
            material=any(c["field"] in MATERIAL_FIELDS for c in changes),
            now_ms=ms_of(now),
        )

    def _follow_up(self, record: EventRecord, now: datetime) -> list[str]:
        incident = record.incident
        assert incident is not None, "only a waiting record has no incident"
        action = record.action
        trigger = f"event:{record.event_id}"
        promised_ms = record.received_ms
        config = self.config()
        newcomers = set(record.newcomers)
        informed = [sid for sid in incident.stakeholders if config.stakeholder(sid) and sid not in newcomers]
        comms: list[str] = []
        if action == Action.RESOLVE:
            for sid in informed:
                stakeholder = config.stakeholder(sid)
                assert stakeholder is not None
                comms += self._resolve_thread(config, incident, stakeholder, trigger, now, promised_ms)
            return comms
        if action in (Action.UPDATE, Action.REOPEN):
            for sid in informed:
                found = config.stakeholder(sid)
                assert found is not None
                if action == Action.REOPEN:
                    self.timers.cancel(_timer(TimerKind.FEEDBACK, incident.id, sid))
                    self.store.clear_promises(incident.id, sid, feedback=True)
                if action == Action.REOPEN or record.material:
                    comms += _some(
                        self._compose(config, incident, found, Kind.UPDATE, trigger, now, promised_ms)
                    )
        for sid in record.newcomers:
            stakeholder = config.stakeholder(sid)
            if stakeholder is not None:
                comms += _some(self._acknowledge(config, incident, stakeholder, now, promised_ms))
        return comms

    def _acknowledge(
        self,
        config: Config,
        incident: Incident,
        stakeholder: Stakeholder,
        now: datetime,
        promised_ms: int | None,
    ) -> str | None:
        # One acknowledgment per thread whichever event or configuration change causes it.
        return self._compose(
            config, incident, stakeholder, Kind.ACKNOWLEDGMENT, "acknowledgment", now, promised_ms
        )

    def acknowledge_new(
        self, config: Config, incident: Incident, now: datetime, promised_ms: int | None = None
    ) -> list[str]:
        """Acknowledge to every stakeholder the open incident newly concerns.

        The acknowledgments are composed before the stakeholders are recorded on the
        incident: a crash in between leaves them newcomers, and the next reconcile finds
        the acknowledgment already composed (one per thread) and records them.
        """
        if not incident.is_open:
            return []
        newcomers = _newcomers(config, incident)
        if not newcomers:
            return []
        comms = [
            c for s in newcomers for c in _some(self._acknowledge(config, incident, s, now, promised_ms))
        ]
        self.store.set_incident_stakeholders(
            incident.id, lambda ids: ids + [s.id for s in newcomers if s.id not in ids]
        )
        return comms

    def reconcile(self, now: datetime) -> list[str]:
        """Bring open incidents in line with the configuration in force (new stakeholders)."""
        config = self.config()
        comms: list[str] = []
        try:
            for incident_id in self.store.incident_ids():
                incident = self.store.incident(incident_id)
                if incident and incident.is_open:
                    comms += self.acknowledge_new(config, incident, now)
        finally:
            self.dispatch.flush()
        return comms

    def _stored(self, comm_id: str) -> tuple[Status, int | None]:
        """A communication's status and the next update it promises."""
        comm = self.store.comm(comm_id)
        if comm is None:  # pragma: no cover - created in the same store
            raise RuntimeError(f"communication {comm_id} vanished")
        return comm.status, ms_of(comm.next_update_at) if comm.next_update_at else None

    def stop_thread(self, incident_id: str, stakeholder_id: str) -> None:
        """No more updates or feedback requests for this thread (the stakeholder opted out)."""
        self.timers.cancel(_timer(TimerKind.UPDATE, incident_id, stakeholder_id))
        self.timers.cancel(_timer(TimerKind.FEEDBACK, incident_id, stakeholder_id))
        self.store.clear_promises(incident_id, stakeholder_id, update=True, feedback=True)

    # -- timers ------------------------------------------------------------------------

    def fire_timer(self, member: str, due_ms: int, now: datetime) -> str | None:
        """A timer came due: send the thread's next update or feedback request, if still wanted.

        The thread's stored promise is the truth; a timer that no longer matches it is
        moved to the promise (when in the future) or ignored (when nothing is promised).
        What it composes is handed over at the next ``dispatch.flush()`` (the caller's).
        """
        timer = TimerMember.parse(member)
        incident_id, stakeholder_id = timer.incident_id, timer.stakeholder_id
        config = self.config()
        stakeholder = config.stakeholder(stakeholder_id)
        incident = self.store.incident(incident_id)
        if stakeholder is None or incident is None:
            logger.info("timer %s dropped: stakeholder or incident no longer exists", member)
            return None
        if self.opted_out(stakeholder_id, incident_id):
            self.stop_thread(incident_id, stakeholder_id)
            return None
        thread = self.store.thread(incident_id, stakeholder_id)
        is_update = timer.kind == TimerKind.UPDATE
        promised_ms = thread.promised_ms if is_update else thread.feedback_ms
        if incident.is_open != is_update or promised_ms is None:
            return None
        if utc_of(promised_ms) > now + _EARLY_TOLERANCE:  # type: ignore[operator]
            self.timers.arm(member, promised_ms)
            return None
        if is_update:
            return self._compose(
                config, incident, stakeholder, Kind.UPDATE, f"timer:{promised_ms}", now, promised_ms
            )
        return self._compose(
            config, incident, stakeholder, Kind.FEEDBACK_REQUEST, f"feedback:{promised_ms}", now, promised_ms
        )

    # -- composing ---------------------------------------------------------------------

    def _resolve_thread(
        self,
        config: Config,
        incident: Incident,
        stakeholder: Stakeholder,
        trigger: str,
        now: datetime,
        promised_ms: int | None,
    ) -> list[str]:
        self.timers.cancel(_timer(TimerKind.UPDATE, incident.id, stakeholder.id))
        comm_id = self._compose(config, incident, stakeholder, Kind.RESOLUTION, trigger, now, promised_ms)
        if comm_id is None:
            return []
        policy = cadence.policy_for(config, stakeholder)
        thread = self.store.thread(incident.id, stakeholder.id)
        feedback_ms = thread.feedback_ms or ms_of(cadence.feedback_at(policy, now))
        self.store.set_feedback_due(incident.id, stakeholder.id, feedback_ms)
        self.timers.arm(_timer(TimerKind.FEEDBACK, incident.id, stakeholder.id), feedback_ms)
        return [comm_id]

    def _compose(
        self,
        config: Config,
        incident: Incident,
        stakeholder: Stakeholder,
        kind: Kind,
        trigger: str,
        now: datetime,
        promised_ms: int | None = None,
    ) -> str | None:
        """Create (once per trigger) one communication, arm the thread's next update, dispatch it.

        Nothing is composed for a stakeholder who opted out: the thread stops instead.
        """
        now = now.astimezone(UTC)
        if self.opted_out(stakeholder.id, incident.id):
            self.stop_thread(incident.id, stakeholder.id)
            return None
        policy = cadence.policy_for(config, stakeholder)
        planned_next_ms: int | None = None

        def build(thread: Thread, current: Incident | None) -> tuple[Draft, Thread] | None:
            # The incident as it is now, read in the same transaction as the thread: a
            # message numbered later never tells of an older state than the one before it.
            state = current or incident
            snapshot = state.content()
            changes = changes_between(thread.seen, snapshot) if thread.seen is not None else []
            from_event, from_timer = trigger.startswith("event:"), trigger.startswith("timer:")
            if kind == Kind.UPDATE and from_event and thread.seen is not None and not changes:
                return None  # an earlier message of the thread already told this change
            wants_next = kind in (Kind.ACKNOWLEDGMENT, Kind.UPDATE) and state.is_open
            next_ms = ms_of(cadence.next_update_at(policy, state.severity, now, now)) if wants_next else None
            nonlocal planned_next_ms
            planned_next_ms = next_ms
            context = {
                "incident": {
                    **snapshot,
                    "id": incident.id,
                    "opened_ms": state.opened_ms,
                    "resolved_ms": state.resolved_ms,
                },
                "changes": changes,
                "since_ms": thread.last_ms,
                "timezone": policy.timezone,
            }
            draft = Draft(
                recipient=stakeholder.recipient,
                channel=stakeholder.channel,
                created_ms=ms_of(now),
                promised_ms=promised_ms if promised_ms is not None else ms_of(now),
                context=context,
                next_update_ms=next_ms,
                no_news=kind == Kind.UPDATE and from_timer and not changes,
            )
            thread.seen, thread.last_ms = snapshot, ms_of(now)
            if next_ms is not None:
                thread.promised_ms = next_ms
            return draft, thread

        # An update whose thread has no acknowledgment yet is the acknowledgment (the other
        # event's acknowledgment then folds into it); the store decides that atomically.
        first = (Kind.ACKNOWLEDGMENT, "acknowledgment") if kind == Kind.UPDATE else None
        comm_id, created = self.store.create_comm(incident.id, stakeholder.id, kind, trigger, build, first)
        if not comm_id:
            return None  # nothing new to tell this stakeholder
        # Created now: it is scheduled and the thread promises what it states. Found instead
        # (a retry, a duplicate): read what was stored then.
        status, promised = (Status.SCHEDULED, planned_next_ms) if created else self._stored(comm_id)
        if kind in (Kind.RESOLUTION, Kind.FEEDBACK_REQUEST):
            feedback = kind == Kind.FEEDBACK_REQUEST
            self.store.clear_promises(incident.id, stakeholder.id, update=True, feedback=feedback)
        elif promised is not None and (
            created or self.store.thread(incident.id, stakeholder.id).promised_ms == promised
        ):
            self.timers.arm(_timer(TimerKind.UPDATE, incident.id, stakeholder.id), promised)
        if status == Status.SCHEDULED:
            self.dispatch.deliver(comm_id)
        if created:
            logger.info("%s composed for %s (%s)", kind, stakeholder.id, comm_id)
        return comm_id
