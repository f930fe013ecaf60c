"""What happens when an event arrives or a timer comes due: who hears what, and when next.

The engine is the product's logic between the ports: it reads the configuration in force,
keeps state through :class:`~scheduler.storage.redis_store.Store`, arms timers in a
:class:`~scheduler.storage.timers.TimerStore` and hands communication ids to a :class:`Dispatch`
(Dramatiq in production, a list in the preview). Every entry point takes ``now`` and is
idempotent: running it twice for the same event or timer creates and sends nothing new.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from scheduler.core import cadence
from scheduler.core.config import Config, Stakeholder
from scheduler.core.events import MATERIAL_FIELDS, Event
from scheduler.storage.redis_store import Store, ms_of, utc_of
from scheduler.storage.timers import TimerStore

__all__ = ["CONTENT_FIELDS", "KINDS", "Dispatch", "Engine", "Outcome", "changes_between", "timer_member"]

logger = logging.getLogger(__name__)

KINDS = ("acknowledgment", "update", "resolution", "feedback_request")
CONTENT_FIELDS = (
    "title",
    "severity",
    "services",
    "status",
    "summary",
    "impact",
    "plan",
    "owner",
    "workaround",
    "prevention",
    "review_by",
)
_UPDATE, _FEEDBACK = "u", "f"
_EARLY_TOLERANCE = timedelta(milliseconds=50)


class Dispatch(Protocol):
    """Where communications go to be sent.

    ``deliver`` may hold ids back to hand them over in groups; ``flush`` hands over what it
    holds. The engine flushes at the end of every entry point (and a crash before that is
    covered by the sweep of unfinished communications).
    """

    def deliver(self, comm_id: str) -> None: ...
    def flush(self) -> None: ...


def timer_member(kind: str, incident_id: str, stakeholder_id: str) -> str:
    """The timer of one thread: ``u|INC-1|acme`` (next update) or ``f|INC-1|acme`` (feedback)."""
    return f"{kind}|{incident_id}|{stakeholder_id}"


@dataclass(frozen=True)
class Outcome:
    """What handling one event did."""

    duplicate: bool
    rejected: str = ""
    communications: tuple[str, ...] = ()
    waiting: str = ""
    """Why the event cannot apply yet (its incident's ``opened`` has not arrived): try again."""


def _new_incident(event: Event) -> dict[str, Any]:
    now_ms = ms_of(event.occurred_at)
    return {
        "state_ms": now_ms,
        "field_times": {},
        "id": event.incident_id,
        "title": "",
        "severity": "sev4",
        "services": [],
        "status": "investigating",
        "summary": "",
        "impact": "",
        "plan": "",
        "owner": "",
        "state": "open",
        "opened_ms": now_ms,
        "updated_ms": now_ms,
        "resolved_ms": None,
        "stakeholders": [],
    }


def _some(comm_id: str | None) -> list[str]:
    return [comm_id] if comm_id is not None else []


def changes_between(before: dict[str, Any], after: dict[str, Any]) -> list[dict[str, Any]]:
    """Each content field whose value differs, in field order: ``{"field", "old", "new"}``."""
    return [
        {"field": f, "old": before.get(f), "new": after.get(f)}
        for f in CONTENT_FIELDS
        if before.get(f) != after.get(f)
    ]


def _newcomers(config: Config, incident: dict[str, Any]) -> list[Stakeholder]:
    """Stakeholders the incident concerns who have not been told of it yet."""
    informed = set(incident.get("stakeholders", []))
    return [s for s in config.concerned(incident["severity"], incident["services"]) if s.id not in informed]


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
        self.opted_out = opted_out or (lambda stakeholder_id, incident_id: False)
        """``opted_out(stakeholder_id, incident_id)``: True when that stakeholder opted out of it."""

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
        def apply(current: dict[str, Any] | None) -> dict[str, Any]:
            record = self._apply(event, current, now)
            record["received_ms"] = ms_of(min(received_at or now, now))
            return record

        record = self.store.apply_event(event.event_id, event.incident_id, apply)
        if record.get("waiting"):
            return Outcome(duplicate=False, waiting=record["waiting"])
        if record.get("rejected"):
            return Outcome(duplicate=record["duplicate"], rejected=record["rejected"])
        if record["duplicate"] and record.get("done"):
            return Outcome(duplicate=True)
        comms = self._follow_up(record, now)
        self.store.mark_event_done(event.event_id)
        return Outcome(duplicate=record["duplicate"], communications=tuple(comms))

    def _apply(self, event: Event, current: dict[str, Any] | None, now: datetime) -> dict[str, Any]:
        """The event's record: the incident after it, and what that calls for.

        Events may arrive in any order; the outcome is as if they came in ``occurred_at``
        order. Each field remembers when it was last set, so an older event never moves
        it back; the open/resolved state likewise. An event of an incident whose
        ``opened`` has not arrived yet is ``waiting``.
        """
        if current is None and event.type != "incident.opened":
            reason = f"incident {event.incident_id!r} is not known yet; waiting for its incident.opened"
            return {"waiting": reason, "incident": None}
        occurred_ms = ms_of(event.occurred_at)
        before = current or {}
        state = copy.deepcopy(current) if current else _new_incident(event)
        # An opened incident's defaults (status "investigating", no owner yet, ...) hold as of
        # its opening: an update dated before that does not replace them.
        opened_defaults = {} if current else {f: occurred_ms for f in CONTENT_FIELDS}
        field_ms: dict[str, int] = {**opened_defaults, **(state.get("field_times") or {})}
        state_ms = int(state.get("state_ms", state["opened_ms"]))
        # resolved, reopened and opened each assert the incident's state as of when they
        # occurred; the latest assertion wins, whatever the order they arrive in.
        asserted, implied = {
            "incident.resolved": ("resolved", {"status": "resolved"}),
            "incident.reopened": ("open", {"status": "investigating"}),
            "incident.opened": ("open", {}),
        }.get(event.type, (None, {}))
        was = state["state"]
        if current is not None and asserted is not None and occurred_ms >= state_ms:
            state["state"], state_ms = asserted, occurred_ms
        else:
            implied = {}
        for name, value in {**implied, **event.incident.given()}.items():
            if occurred_ms >= field_ms.get(name, -1):
                state[name], field_ms[name] = value, occurred_ms
        state["field_times"], state["state_ms"], state["updated_ms"] = field_ms, state_ms, ms_of(now)
        if current is None:
            action = "open"
        elif was == "open" and state["state"] == "resolved":
            action, state["resolved_ms"] = "resolve", ms_of(now)
        elif was == "resolved" and state["state"] == "open":
            action, state["resolved_ms"] = "reopen", None
        else:
            action = "update" if state["state"] == "open" else "none"
        changes = changes_between(before, state) if current else []
        material = any(c["field"] in MATERIAL_FIELDS for c in changes)
        newcomers: list[str] = []
        if state["state"] == "open":
            # Decided here, under the incident's transaction: of two events handled at once,
            # exactly one finds a stakeholder new and acknowledges to it.
            newcomers = [s.id for s in _newcomers(self.config(), state)]
            state["stakeholders"] = [*state.get("stakeholders", []), *newcomers]
        return {
            "incident": state,
            "newcomers": newcomers,
            "action": action,
            "material": material,
            "event_type": event.type,
            "event_id": event.event_id,
            "now_ms": ms_of(now),
        }

    def _follow_up(self, record: dict[str, Any], now: datetime) -> list[str]:
        incident: dict[str, Any] = record["incident"]
        action: str = record["action"]
        trigger = f"event:{record['event_id']}"
        promised_ms: int | None = record.get("received_ms")
        config = self.config()
        newcomers = set(record.get("newcomers", []))
        informed = [
            sid
            for sid in incident.get("stakeholders", [])
            if config.stakeholder(sid) and sid not in newcomers
        ]
        comms: list[str] = []
        if action == "resolve":
            for sid in informed:
                stakeholder = config.stakeholder(sid)
                assert stakeholder is not None
                comms += self._resolve_thread(config, incident, stakeholder, trigger, now, promised_ms)
            return comms
        if action in ("update", "reopen"):
            for sid in informed:
                found = config.stakeholder(sid)
                assert found is not None
                if action == "reopen":
                    self.timers.cancel(timer_member(_FEEDBACK, incident["id"], sid))
                    self.store.clear_thread_fields(incident["id"], sid, "feedback_ms")
                if action == "reopen" or record["material"]:
                    comms += _some(
                        self._compose(config, incident, found, "update", trigger, now, promised_ms)
                    )
        for sid in record.get("newcomers", []):
            stakeholder = config.stakeholder(sid)
            if stakeholder is not None:
                comms += _some(self._acknowledge(config, incident, stakeholder, now, promised_ms))
        return comms

    def _acknowledge(
        self,
        config: Config,
        incident: dict[str, Any],
        stakeholder: Stakeholder,
        now: datetime,
        promised_ms: int | None,
    ) -> str | None:
        # One acknowledgment per thread whichever event or configuration change causes it.
        return self._compose(
            config, incident, stakeholder, "acknowledgment", "acknowledgment", now, promised_ms
        )

    def acknowledge_new(
        self, config: Config, incident: dict[str, Any], now: datetime, promised_ms: int | None = None
    ) -> list[str]:
        """Acknowledge to every stakeholder the open incident newly concerns.

        The acknowledgments are composed before the stakeholders are recorded on the
        incident: a crash in between leaves them newcomers, and the next reconcile finds
        the acknowledgment already composed (one per thread) and records them.
        """
        if incident["state"] != "open":
            return []
        newcomers = _newcomers(config, incident)
        if not newcomers:
            return []
        comms = [
            c for s in newcomers for c in _some(self._acknowledge(config, incident, s, now, promised_ms))
        ]
        self.store.set_incident_stakeholders(
            incident["id"], lambda ids: ids + [s.id for s in newcomers if s.id not in ids]
        )
        return comms

    def reconcile(self, now: datetime) -> list[str]:
        """Bring open incidents in line with the configuration in force (new stakeholders)."""
        config = self.config()
        comms: list[str] = []
        try:
            for incident_id in self.store.incident_ids():
                incident = self.store.incident(incident_id)
                if incident and incident["state"] == "open":
                    comms += self.acknowledge_new(config, incident, now)
        finally:
            self.dispatch.flush()
        return comms

    def _stored(self, comm_id: str) -> tuple[str, int | None]:
        """A communication's status and the next update it promises."""
        comm = self.store.comm(comm_id)
        if comm is None:  # pragma: no cover - created in the same store
            raise RuntimeError(f"communication {comm_id} vanished")
        return comm.status, ms_of(comm.next_update_at) if comm.next_update_at else None

    def stop_thread(self, incident_id: str, stakeholder_id: str) -> None:
        """No more updates or feedback requests for this thread (the stakeholder opted out)."""
        self.timers.cancel(timer_member(_UPDATE, incident_id, stakeholder_id))
        self.timers.cancel(timer_member(_FEEDBACK, incident_id, stakeholder_id))
        self.store.clear_thread_fields(incident_id, stakeholder_id, "promised_ms", "feedback_ms")

    # -- timers ------------------------------------------------------------------------

    def fire_timer(self, member: str, due_ms: int, now: datetime) -> str | None:
        """A timer came due: send the thread's next update or feedback request, if still wanted.

        The thread's stored promise is the truth; a timer that no longer matches it is
        moved to the promise (when in the future) or ignored (when nothing is promised).
        What it composes is handed over at the next ``dispatch.flush()`` (the caller's).
        """
        kind, incident_id, stakeholder_id = member.split("|")
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
        field, wanted_state = ("promised_ms", "open") if kind == _UPDATE else ("feedback_ms", "resolved")
        if incident["state"] != wanted_state or field not in thread:
            return None
        promised_ms = int(thread[field])
        if utc_of(promised_ms) > now + _EARLY_TOLERANCE:  # type: ignore[operator]
            self.timers.arm(member, promised_ms)
            return None
        if kind == _UPDATE:
            return self._compose(
                config, incident, stakeholder, "update", f"timer:{promised_ms}", now, promised_ms
            )
        return self._compose(
            config, incident, stakeholder, "feedback_request", f"feedback:{promised_ms}", now, promised_ms
        )

    # -- composing ---------------------------------------------------------------------

    def _resolve_thread(
        self,
        config: Config,
        incident: dict[str, Any],
        stakeholder: Stakeholder,
        trigger: str,
        now: datetime,
        promised_ms: int | None,
    ) -> list[str]:
        self.timers.cancel(timer_member(_UPDATE, incident["id"], stakeholder.id))
        comm_id = self._compose(config, incident, stakeholder, "resolution", trigger, now, promised_ms)
        if comm_id is None:
            return []
        policy = cadence.policy_for(config, stakeholder)
        thread = self.store.thread(incident["id"], stakeholder.id)
        feedback_ms = int(thread.get("feedback_ms") or ms_of(cadence.feedback_at(policy, now)))
        self.store.update_thread(incident["id"], stakeholder.id, feedback_ms=feedback_ms)
        self.timers.arm(timer_member(_FEEDBACK, incident["id"], stakeholder.id), feedback_ms)
        return [comm_id]

    def _compose(
        self,
        config: Config,
        incident: dict[str, Any],
        stakeholder: Stakeholder,
        kind: str,
        trigger: str,
        now: datetime,
        promised_ms: int | None = None,
    ) -> str | None:
        """Create (once per trigger) one communication, arm the thread's next update, dispatch it.

        Nothing is composed for a stakeholder who opted out: the thread stops instead.
        """
        now = now.astimezone(UTC)
        if self.opted_out(stakeholder.id, incident["id"]):
            self.stop_thread(incident["id"], stakeholder.id)
            return None
        policy = cadence.policy_for(config, stakeholder)
        planned_next_ms: int | None = None

        def build(
            thread: dict[str, str], current: dict[str, Any] | None
        ) -> tuple[dict[str, str | int], dict[str, str | int]] | None:
            # The incident as it is now, read in the same transaction as the thread: a
            # message numbered later never tells of an older state than the one before it.
            state = current or incident
            snapshot = {f: state.get(f) for f in CONTENT_FIELDS}
            seen = json.loads(thread["seen"]) if "seen" in thread else None
            changes = changes_between(seen, snapshot) if seen is not None else []
            if kind == "update" and trigger.startswith("event:") and seen is not None and not changes:
                return None  # an earlier message of the thread already told this change
            wants_next = kind in ("acknowledgment", "update") and state["state"] == "open"
            next_ms = (
                ms_of(cadence.next_update_at(policy, state["severity"], now, now)) if wants_next else None
            )
            nonlocal planned_next_ms
            planned_next_ms = next_ms
            context = {
                "incident": {
                    **snapshot,
                    "id": incident["id"],
                    "opened_ms": state["opened_ms"],
                    "resolved_ms": state.get("resolved_ms"),
                },
                "changes": changes,
                "since_ms": int(thread["last_ms"]) if "last_ms" in thread else None,
                "timezone": policy.timezone,
            }
            fields: dict[str, str | int] = {
                # a regular update with nothing new: a newer message of the thread supersedes it
                "no_news": int(kind == "update" and trigger.startswith("timer:") and not changes),
                "recipient": stakeholder.recipient,
                "channel": stakeholder.channel,
                "created_ms": ms_of(now),
                "promised_ms": promised_ms if promised_ms is not None else ms_of(now),
                "context": json.dumps(context),
                "updated_ms": ms_of(now),
            }
            thread_updates: dict[str, str | int] = {"seen": json.dumps(snapshot), "last_ms": ms_of(now)}
            if next_ms is not None:
                fields["next_update_ms"] = next_ms
                thread_updates["promised_ms"] = next_ms
            return fields, thread_updates

        # An update whose thread has no acknowledgment yet is the acknowledgment (the other
        # event's acknowledgment then folds into it); the store decides that atomically.
        first = ("acknowledgment", "acknowledgment") if kind == "update" else None
        comm_id, created = self.store.create_comm(incident["id"], stakeholder.id, kind, trigger, build, first)
        if not comm_id:
            return None  # nothing new to tell this stakeholder
        # Created now: it is scheduled and the thread promises what it states. Found instead
        # (a retry, a duplicate): read what was stored then.
        status, promised = ("scheduled", planned_next_ms) if created else self._stored(comm_id)
        if kind in ("resolution", "feedback_request"):
            self.store.clear_thread_fields(incident["id"], stakeholder.id, "promised_ms")
            if kind == "feedback_request":
                self.store.clear_thread_fields(incident["id"], stakeholder.id, "feedback_ms")
        elif promised is not None and (
            created or self.store.thread(incident["id"], stakeholder.id).get("promised_ms") == str(promised)
        ):
            self.timers.arm(timer_member(_UPDATE, incident["id"], stakeholder.id), promised)
        if status == "scheduled":
            self.dispatch.deliver(comm_id)
        if created:
            logger.info("%s composed for %s (%s)", kind, stakeholder.id, comm_id)
        return comm_id
