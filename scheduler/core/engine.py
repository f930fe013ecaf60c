"""What happens when an event arrives or a timer comes due: who hears what, and when next.

The engine is the product's logic between the ports: it reads the configuration in force,
keeps state through :class:`~scheduler.core.ports.Store`, arms timers in a
:class:`~scheduler.storage.timers.TimerStore` and hands communication ids to a :class:`Dispatch`
(Dramatiq in production, a list in the preview). Every entry point takes ``now`` and is
idempotent: running it twice for the same event or timer creates and sends nothing new.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from scheduler.core import cadence
from scheduler.core.closing import Closing
from scheduler.core.config import Config, Stakeholder
from scheduler.core.events import Event
from scheduler.core.incidents import apply_event, changes_between
from scheduler.core.model import (
    Action,
    Draft,
    EventRecord,
    Incident,
    Kind,
    Status,
    Thread,
    TimerKind,
    TimerMember,
    ms_of,
    utc_of,
)
from scheduler.core.ports import CommRequest, Store, TimerStore
from scheduler.core.review_keeping import ReviewKeeping

__all__ = ["Dispatch", "Engine", "Outcome"]

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
        self._opted_out = opted_out
        """``opted_out(stakeholder_id, incident_id)``: True when that stakeholder opted out of it;
        None: what the store keeps (see :meth:`opted_out_among`)."""
        self.closing = Closing(store, timers, config, dispatch)
        """Feedback alerts and digests to the owner, follow-ups."""
        self.reviews = ReviewKeeping(self.closing)
        """The promised post-incident review: reminder, review, the word when it is late."""

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
        config = self.config()

        def apply(current: Incident | None) -> EventRecord:
            record = apply_event(event, current, now, lambda state: [s.id for s in _newcomers(config, state)])
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
        comms += self.closing.after_event(record, now) + self.reviews.after_event(record, now)
        # Hand the communications over before the event counts as done: a crash in between
        # leaves it not done, and its redelivery dispatches them again (begin_send makes that
        # harmless) instead of leaving them to the sweep a minute later.
        self.dispatch.flush()
        self.store.mark_event_done(event.incident_id, event.event_id)
        return Outcome(duplicate=record.duplicate, communications=tuple(comms))

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
        wanted: list[tuple[Stakeholder, Kind, str]] = []
        if action in (Action.UPDATE, Action.REOPEN):
            for sid in informed:
                found = config.stakeholder(sid)
                assert found is not None
                if action == Action.REOPEN:
                    self.timers.cancel(_timer(TimerKind.FEEDBACK, incident.id, sid))
                    self.store.clear_promises(incident.id, sid, feedback=True)
                if action == Action.REOPEN or record.material:
                    wanted.append((found, Kind.UPDATE, trigger))
        for sid in record.newcomers:
            stakeholder = config.stakeholder(sid)
            if stakeholder is not None:
                # One acknowledgment per thread whichever event or configuration change causes it.
                wanted.append((stakeholder, Kind.ACKNOWLEDGMENT, "acknowledgment"))
        return comms + self._compose_many(config, incident, wanted, now, promised_ms)

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
        wanted = [(s, Kind.ACKNOWLEDGMENT, "acknowledgment") for s in newcomers]
        comms = self._compose_many(config, incident, wanted, now, promised_ms)
        self.dispatch.flush()  # before they stop being newcomers, for the same reason as events
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
        if timer.kind in (TimerKind.REVIEW_REMINDER, TimerKind.REVIEW_DUE):
            return self.reviews.fire(timer, due_ms, now)
        if timer.kind not in (TimerKind.UPDATE, TimerKind.FEEDBACK):
            return self.closing.fire(timer, due_ms, now)
        incident_id, stakeholder_id = timer.incident_id, timer.stakeholder_id
        config = self.config()
        stakeholder = config.stakeholder(stakeholder_id)
        incident = self.store.incident(incident_id)
        if stakeholder is None or incident is None:
            logger.info("timer %s dropped: stakeholder or incident no longer exists", member)
            return None
        if self.opted_out_among(incident_id, [stakeholder_id]):
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
        """:meth:`_compose_many` for one thread."""
        made = self._compose_many(config, incident, [(stakeholder, kind, trigger)], now, promised_ms)
        return made[0] if made else None

    def _compose_many(
        self,
        config: Config,
        incident: Incident,
        wanted: list[tuple[Stakeholder, Kind, str]],
        now: datetime,
        promised_ms: int | None = None,
    ) -> list[str]:
        """Create (once per trigger) a communication of ``kind`` for each (stakeholder, kind,
        trigger), all in as few round trips as the store can; then keep each thread's promise
        and dispatch it (:meth:`_settle`). Nothing is composed for a stakeholder who opted
        out: the thread stops instead. Returns the ids of what was created or found."""
        if not wanted:
            return []
        now = now.astimezone(UTC)
        out = self.opted_out_among(incident.id, [s.id for s, _, _ in wanted])
        for stakeholder_id in sorted(out):
            self.stop_thread(incident.id, stakeholder_id)
        kept = [(s, kind, trigger) for s, kind, trigger in wanted if s.id not in out]
        builds = [
            _Composer(cadence.policy_for(config, s), incident, s, kind, trigger, now, promised_ms)
            for s, kind, trigger in kept
        ]
        # An update whose thread has no acknowledgment yet is the acknowledgment (the other
        # event's acknowledgment then folds into it); the store decides that atomically.
        requests = [
            CommRequest(
                s.id,
                kind,
                trigger,
                build,
                (Kind.ACKNOWLEDGMENT, "acknowledgment") if kind == Kind.UPDATE else None,
            )
            for (s, kind, trigger), build in zip(kept, builds, strict=True)
        ]
        made = self.store.create_comms(incident.id, requests)
        comms: list[str] = []
        arms: list[tuple[str, int]] = []
        composed: Counter[Kind] = Counter()
        for (s, kind, _), build, (comm_id, created) in zip(kept, builds, made, strict=True):
            if not comm_id:
                continue  # nothing new to tell this stakeholder
            arms += self._settle(incident.id, s.id, kind, comm_id, created, build.planned_next_ms)
            if created:
                logger.debug("%s composed for %s (%s)", kind, s.id, comm_id)
                composed[kind] += 1
            comms.append(comm_id)
        for made_kind, count in composed.items():  # one line per kind: a fan-out to thousands stays readable
            logger.info(
                "%s: %s composed for %d stakeholder%s",
                incident.id,
                made_kind,
                count,
                "" if count == 1 else "s",
            )
        if arms:
            self.timers.arm_many(arms)
        return comms

    def opted_out_among(self, incident_id: str, stakeholder_ids: list[str]) -> set[str]:
        """Which of ``stakeholder_ids`` opted out of ``incident_id`` (or of all mail)."""
        if self._opted_out is not None:
            return {s for s in stakeholder_ids if self._opted_out(s, incident_id)}
        return self.store.opted_out_among(incident_id, stakeholder_ids)

    def _settle(
        self,
        incident_id: str,
        stakeholder_id: str,
        kind: Kind,
        comm_id: str,
        created: bool,
        planned_next_ms: int | None,
    ) -> list[tuple[str, int]]:
        """After a communication is composed (``created``: just now, planning that next
        update) or found (a retry, a duplicate: read what was stored then), clear the
        thread's promise or return the update timer to arm, and dispatch it if it is still
        to send."""
        status, promised = (Status.SCHEDULED, planned_next_ms) if created else self._stored(comm_id)
        arm: list[tuple[str, int]] = []
        if kind in (Kind.RESOLUTION, Kind.FEEDBACK_REQUEST):
            feedback = kind == Kind.FEEDBACK_REQUEST
            self.store.clear_promises(incident_id, stakeholder_id, update=True, feedback=feedback)
        elif promised is not None and (
            created or self.store.thread(incident_id, stakeholder_id).promised_ms == promised
        ):
            arm.append((_timer(TimerKind.UPDATE, incident_id, stakeholder_id), promised))
        if status == Status.SCHEDULED:
            self.dispatch.deliver(comm_id)
        return arm


@dataclass
class _Composer:
    """The builder ``create_comm`` calls inside its transaction: the new message's draft and
    the thread after it, from the thread and the incident as they are there; None when an
    earlier message of the thread already told everything."""

    policy: cadence.Policy
    incident: Incident
    stakeholder: Stakeholder
    kind: Kind
    trigger: str
    now: datetime
    promised_ms: int | None
    planned_next_ms: int | None = None

    def __call__(self, thread: Thread, current: Incident | None) -> tuple[Draft, Thread] | None:
        # The incident as it is now, read in the same transaction as the thread: a message
        # numbered later never tells of an older state than the one before it.
        state = current or self.incident
        snapshot = state.content()
        changes = changes_between(thread.seen, snapshot) if thread.seen is not None else []
        from_event, from_timer = self.trigger.startswith("event:"), self.trigger.startswith("timer:")
        if self.kind == Kind.UPDATE and from_event and thread.seen is not None and not changes:
            return None  # an earlier message of the thread already told this change
        wants_next = self.kind in (Kind.ACKNOWLEDGMENT, Kind.UPDATE) and state.is_open
        now_ms = ms_of(self.now)
        next_ms = (
            ms_of(cadence.next_update_at(self.policy, state.severity, self.now, self.now))
            if wants_next
            else None
        )
        self.planned_next_ms = next_ms
        context = {
            "incident": {
                **snapshot,
                "id": state.id,
                "opened_ms": state.opened_ms,
                "resolved_ms": state.resolved_ms,
            },
            "changes": changes,
            "since_ms": thread.last_ms,
            "timezone": self.policy.timezone,
        }
        draft = Draft(
            recipient=self.stakeholder.recipient,
            channel=self.stakeholder.channel,
            created_ms=now_ms,
            promised_ms=self.promised_ms if self.promised_ms is not None else now_ms,
            context=context,
            next_update_ms=next_ms,
            no_news=self.kind == Kind.UPDATE and from_timer and not changes,
        )
        thread.seen, thread.last_ms = snapshot, now_ms
        if next_ms is not None:
            thread.promised_ms = next_ms
        return draft, thread
