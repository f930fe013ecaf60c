"""Other tools' webhooks as amends events: Prometheus Alertmanager, Grafana Alerting, PagerDuty.

Pure translation: a decoded payload, the ``integrations:`` mapping and the time it was
received go in; schema-1 event documents come out, or
:class:`~scheduler.errors.EventError` naming each field of the payload that is wrong.

Alert groups (Alertmanager, Grafana): one group is one incident, keyed by a prefix and a
short hash of ``groupKey``. A ``firing`` notification becomes ``incident.opened`` with the
group's current fields: the engine applies an ``opened`` of a known incident as an update
(sending one only when a material field changed) and of a resolved one as a reopening. A
``resolved`` notification becomes ``incident.resolved``. Event ids hash what the
notification says (each alert's labels, annotations, start and state), so a repeated or
retried notification is the same event and changes nothing.

PagerDuty V3 webhooks: the incident id is the key and PagerDuty's event id the event id.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError

from scheduler.core._validation import field_errors
from scheduler.core.config import Integrations
from scheduler.core.config_fields import Severity
from scheduler.core.events import MAX_LINE_CHARS, MAX_TEXT_CHARS
from scheduler.core.model import iso_z
from scheduler.core.text import scrub, strip_bidi
from scheduler.errors import EventError

__all__ = [
    "PAGERDUTY_EVENT_TYPES",
    "Translation",
    "from_alertmanager",
    "from_grafana",
    "from_pagerduty",
    "group_incident_id",
]

PAGERDUTY_EVENT_TYPES = {
    "incident.triggered": "incident.opened",
    "incident.priority_updated": "incident.updated",
    "incident.annotated": "incident.updated",
    "incident.status_update_published": "incident.updated",
    "incident.resolved": "incident.resolved",
    "incident.reopened": "incident.reopened",
}
"""The PagerDuty event types amends acts on, and the event each becomes; others are ignored."""

_HASH_CHARS = 12
_MAX_LISTED_ALERTS = 20
_MAX_SERVICES = 50
_LINE_BREAKS = re.compile(r"[\x00-\x1f\x7f\u2028\u2029\x85]+")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


class Translation(BaseModel):
    """What one payload becomes: events to enqueue, or why it was ignored."""

    model_config = ConfigDict(frozen=True)

    events: list[dict[str, Any]]
    ignored: str = ""


# -- payload shapes (only what amends reads; other fields are allowed and ignored) --------


class _Payload(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)


Labels = dict[StrictStr, StrictStr]


class _Alert(_Payload):
    status: Literal["firing", "resolved"]
    labels: Labels = Field(default_factory=dict)
    annotations: Labels = Field(default_factory=dict)
    startsAt: StrictStr = ""  # the payload's own names
    endsAt: StrictStr = ""
    fingerprint: StrictStr = ""


class _AlertGroup(_Payload):
    version: StrictStr = "4"
    groupKey: Annotated[StrictStr, Field(min_length=1)]
    status: Literal["firing", "resolved"]
    alerts: Annotated[list[_Alert], Field(min_length=1)]
    groupLabels: Labels = Field(default_factory=dict)
    commonLabels: Labels = Field(default_factory=dict)
    commonAnnotations: Labels = Field(default_factory=dict)


class _Reference(_Payload):
    id: Annotated[StrictStr, Field(min_length=1)]
    summary: StrictStr | None = None


class _PagerDutyData(_Payload):
    id: StrictStr | None = None
    type: StrictStr | None = None
    title: StrictStr | None = None
    status: StrictStr | None = None
    urgency: StrictStr | None = None
    priority: _Reference | None = None
    service: _Reference | None = None
    incident: _Reference | None = None
    content: StrictStr | None = None
    message: StrictStr | None = None


class _PagerDutyEvent(_Payload):
    id: Annotated[StrictStr, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")]
    event_type: Annotated[StrictStr, Field(min_length=1)]
    occurred_at: StrictStr | None = None
    data: _PagerDutyData


class _PagerDutyPayload(_Payload):
    event: _PagerDutyEvent


def _parsed(model: type[_Payload], payload: Any, what: str) -> Any:
    if not isinstance(payload, dict):
        raise EventError(
            f"invalid {what} payload", [("", f"must be a JSON object, not {type(payload).__name__}")]
        )
    try:
        return model.model_validate(payload)
    except ValidationError as e:
        raise EventError(f"invalid {what} payload", field_errors(e)) from None


# -- text fit for an event -----------------------------------------------------------------


def _line(text: str, limit: int = MAX_LINE_CHARS) -> str:
    """One line of at most ``limit`` characters: line breaks and controls become spaces,
    bidirectional controls go, runs of spaces collapse."""
    line = " ".join(_LINE_BREAKS.sub(" ", strip_bidi(scrub(text))).split())
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


def _text(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    body = _CONTROL.sub(" ", scrub(text).replace("\r\n", "\n")).strip()
    return body if len(body) <= limit else body[: limit - 1].rstrip() + "…"


def _digest(value: Any, chars: int) -> str:
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:chars]


def group_incident_id(prefix: str, group_key: str) -> str:
    """The incident id of an alert group: ``prefix`` and a short stable hash of ``groupKey``."""
    return prefix + hashlib.sha256(scrub(group_key).encode()).hexdigest()[:_HASH_CHARS]


# -- alert groups --------------------------------------------------------------------------


def _distinct(values: Iterable[str]) -> list[str]:
    seen: list[str] = []
    for value in values:
        if value and value not in seen:
            seen.append(value)
    return seen


def _group_fields(group: _AlertGroup, mapping: Integrations) -> dict[str, Any]:
    """Title, summary, services and severity of the group's firing alerts."""
    firing = [a for a in group.alerts if a.status == "firing"] or group.alerts
    title_key, summary_key = mapping.title_annotation, mapping.summary_annotation
    titles = _distinct(a.annotations.get(title_key, "") for a in firing)
    names = _distinct(a.labels.get("alertname", "") for a in firing)
    title = (
        group.commonAnnotations.get(title_key)
        or (titles[0] if len(titles) == 1 else "")
        or group.commonLabels.get("alertname")
        or group.groupLabels.get("alertname")
        or ", ".join(names[:3])
        or "Alert"
    )
    descriptions = _distinct(a.annotations.get(summary_key, "") for a in firing)
    summary = group.commonAnnotations.get(summary_key) or (descriptions[0] if len(descriptions) == 1 else "")
    if len(firing) > 1:
        listed = [
            f"- {_line(a.annotations.get(title_key) or a.annotations.get(summary_key) or _labels_line(a.labels), 300)}"
            for a in firing[:_MAX_LISTED_ALERTS]
        ]
        more = len(firing) - _MAX_LISTED_ALERTS
        lines = [f"{len(firing)} alerts firing:", *listed, *([f"- and {more} more"] if more > 0 else [])]
        summary = "\n\n".join(p for p in (summary, "\n".join(lines)) if p)
    label = mapping.service_label
    services = _distinct(
        _line(v, 100) for v in [group.commonLabels.get(label, ""), *(a.labels.get(label, "") for a in firing)]
    )
    severities: list[Severity] = [mapping.severity_of(a.labels.get(mapping.severity_label)) for a in firing]
    fields: dict[str, Any] = {
        "title": _line(title),
        "severity": min(severities),
        "services": services[:_MAX_SERVICES],
        "status": "investigating",
    }
    if summary:
        fields["summary"] = _text(summary)
    return fields


def _labels_line(labels: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(labels.items()))


def _group_events(
    group: _AlertGroup, prefix: str, mapping: Integrations, now: datetime, source: str
) -> list[dict[str, Any]]:
    incident_id = group_incident_id(prefix, group.groupKey)
    said = [
        {
            "status": a.status,
            "labels": a.labels,
            "annotations": a.annotations,
            "startsAt": a.startsAt,
            # a firing alert's end is only Alertmanager's guess of when to time it out
            "endsAt": a.endsAt if a.status == "resolved" else "",
        }
        for a in group.alerts
    ]
    said.sort(key=lambda a: json.dumps(a, sort_keys=True))
    event: dict[str, Any] = {
        "schema": 1,
        "event_id": f"{incident_id}.{group.status}.{_digest([group.status, said], 16)}",
        "incident_id": incident_id,
        "occurred_at": iso_z(now),
        "source": source,
    }
    if group.status == "firing":
        event.update(type="incident.opened", incident=_group_fields(group, mapping))
    else:
        event.update(type="incident.resolved", incident={})
    return [event]


def from_alertmanager(payload: Any, mapping: Integrations, now: datetime) -> Translation:
    """An Alertmanager webhook notification (version 4) as events."""
    group: _AlertGroup = _parsed(_AlertGroup, payload, "Alertmanager")
    if group.version != "4":
        raise EventError(
            "invalid Alertmanager payload",
            [("version", f"version {group.version!r} is not supported; this route reads version 4")],
        )
    return Translation(
        events=_group_events(group, mapping.id_prefix.alertmanager, mapping, now, "alertmanager")
    )


def from_grafana(payload: Any, mapping: Integrations, now: datetime) -> Translation:
    """A Grafana Alerting webhook contact point notification as events."""
    group: _AlertGroup = _parsed(_AlertGroup, payload, "Grafana")
    return Translation(events=_group_events(group, mapping.id_prefix.grafana, mapping, now, "grafana"))


# -- PagerDuty -----------------------------------------------------------------------------


def _pagerduty_time(text: str | None, now: datetime) -> str:
    if text:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise EventError(
                "invalid PagerDuty payload", [("event.occurred_at", f"{text!r} is not an ISO 8601 time")]
            ) from None
        if moment.tzinfo is not None:
            return iso_z(moment)
    return iso_z(now)


def from_pagerduty(payload: Any, mapping: Integrations, now: datetime) -> Translation:
    """A PagerDuty V3 webhook event as events; types amends does not act on are ignored."""
    parsed: _PagerDutyPayload = _parsed(_PagerDutyPayload, payload, "PagerDuty")
    pd = parsed.event
    event_type = PAGERDUTY_EVENT_TYPES.get(pd.event_type)
    if event_type is None:
        return Translation(events=[], ignored=f"{pd.event_type} is not an event amends acts on")
    data = pd.data
    is_incident = data.type in (None, "incident", "incident_reference")
    key = data.id if is_incident else (data.incident.id if data.incident else None)
    if not key:
        place = "event.data.id" if is_incident else "event.data.incident.id"
        raise EventError("invalid PagerDuty payload", [(place, "is required: it names the incident")])
    fields: dict[str, Any] = {}
    if pd.event_type in ("incident.triggered", "incident.priority_updated"):
        level = data.priority.summary if data.priority else None
        fields["severity"] = mapping.severity_of(level or data.urgency)
    if pd.event_type == "incident.triggered":
        fields["title"] = _line(data.title or f"PagerDuty incident {key}")
        fields["status"] = "investigating"
        if data.service and data.service.summary:
            fields["services"] = [_line(data.service.summary, 100)]
    elif pd.event_type == "incident.annotated" and data.content:
        fields["plan"] = _text(data.content)
    elif pd.event_type == "incident.status_update_published" and data.message:
        fields["summary"] = _text(data.message)
    if event_type == "incident.updated" and not fields:
        return Translation(events=[], ignored=f"{pd.event_type} carries nothing amends shows")
    event = {
        "schema": 1,
        "event_id": f"pd-{pd.id}"[:128],
        "type": event_type,
        "incident_id": mapping.id_prefix.pagerduty + _line(key, 64),
        "occurred_at": _pagerduty_time(pd.occurred_at, now),
        "source": "pagerduty",
        "incident": fields,
    }
    return Translation(events=[event])
