"""How an event changes its incident: a pure fold, in ``occurred_at`` order whatever the arrival order."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from scheduler.core.events import MATERIAL_FIELDS, Event
from scheduler.core.model import CONTENT_FIELDS, Action, EventRecord, Incident, IncidentState, ms_of

__all__ = ["apply_event", "changes_between"]

_ASSERTED: dict[str, tuple[IncidentState, dict[str, str]]] = {
    "incident.resolved": (IncidentState.RESOLVED, {"status": "resolved"}),
    "incident.reopened": (IncidentState.OPEN, {"status": "investigating"}),
    "incident.opened": (IncidentState.OPEN, {}),
}
"""What resolved, reopened and opened assert about the incident's state, and the status they imply."""


def changes_between(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each content field whose value differs, in field order: ``{"field", "old", "new"}``."""
    return [
        {"field": f, "old": before.get(f), "new": after.get(f)}
        for f in CONTENT_FIELDS
        if before.get(f) != after.get(f)
    ]


def apply_event(
    event: Event, current: Incident | None, now: datetime, newcomers_of: Callable[[Incident], list[str]]
) -> EventRecord:
    """The event's record: the incident after it, and what that calls for.

    Events may arrive in any order; the outcome is as if they came in ``occurred_at``
    order. Each field remembers when it was last set, so an older event never moves it
    back; the open/resolved state likewise. An event of an incident whose ``opened`` has
    not arrived yet is ``waiting``. ``newcomers_of(incident)`` names the stakeholders an
    open incident concerns who have not been told of it yet.
    """
    if current is None and event.type != "incident.opened":
        reason = f"incident {event.incident_id!r} is not known yet; waiting for its incident.opened"
        return EventRecord(event.event_id, event.type, waiting=reason)
    occurred_ms = ms_of(event.occurred_at)
    if event.type == "incident.review_published" and current is not None:
        return _review_published(event, current, now)
    state = copy.deepcopy(current) if current else _opened(event)
    # An opened incident's defaults (status "investigating", no owner yet, ...) hold as of
    # its opening: an update dated before that does not replace them.
    opened_defaults = {} if current else {f: occurred_ms for f in CONTENT_FIELDS}
    field_ms: dict[str, int] = {**opened_defaults, **state.field_times}
    asserted, implied = _ASSERTED.get(event.type, (None, {}))
    was = state.state
    # The latest assertion of the state wins, whatever the order the events arrive in.
    if current is not None and asserted is not None and occurred_ms >= state.state_ms:
        state.state, state.state_ms = asserted, occurred_ms
    else:
        implied = {}
    for name, value in {**implied, **event.incident.given()}.items():
        if occurred_ms >= field_ms.get(name, -1):
            state.set(name, value)
            field_ms[name] = occurred_ms
    state.field_times, state.updated_ms = field_ms, ms_of(now)
    action = _action(current, was, state, now)
    if action == Action.RESOLVE and state.review_by and not state.review_promised:
        state.review_promised = state.review_by  # what the resolution tells its readers
    changes = changes_between(current.content(), state.content()) if current else []
    newcomers: list[str] = []
    if state.is_open:
        # Decided under the incident's transaction: of two events handled at once,
        # exactly one finds a stakeholder new and acknowledges to it.
        newcomers = newcomers_of(state)
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


def _review_published(event: Event, current: Incident, now: datetime) -> EventRecord:
    """The review is out: kept on the incident (the first publication counts); nothing
    else of the incident changes, its ``summary`` included."""
    state = copy.deepcopy(current)
    action = Action.NONE
    if state.review_published_ms is None:
        given = event.incident.given()
        state.review_url = given["review_url"]
        state.review_summary = given.get("summary") or ""
        state.review_published_ms = ms_of(event.occurred_at)
        state.updated_ms = ms_of(now)
        action = Action.REVIEW
    return EventRecord(event.event_id, event.type, incident=state, action=action, now_ms=ms_of(now))


def _opened(event: Event) -> Incident:
    at_ms = ms_of(event.occurred_at)
    return Incident(id=event.incident_id, state_ms=at_ms, opened_ms=at_ms, updated_ms=at_ms)


def _action(current: Incident | None, was: IncidentState, state: Incident, now: datetime) -> Action:
    """What the event did to the incident's state (``state.resolved_ms`` follows it)."""
    if current is None:
        return Action.OPEN
    if was == IncidentState.OPEN and not state.is_open:
        state.resolved_ms = ms_of(now)
        return Action.RESOLVE
    if was == IncidentState.RESOLVED and state.is_open:
        state.resolved_ms = None
        return Action.REOPEN
    return Action.UPDATE if state.is_open else Action.NONE
