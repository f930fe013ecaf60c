"""Reading the communications log: filters, the table, and the promise figures."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pendulum

from scheduler.storage.redis_store import Communication, Store, utc_of

__all__ = [
    "LogFilter",
    "OpenPromise",
    "PromiseReport",
    "format_table",
    "open_promises",
    "promise_report",
    "row_json",
]

ON_TIME_GRACE_S = 60.0
"""A promise "by 14:30" is kept by a message sent before 14:31 (``kept_within`` in the
configuration changes it)."""


@dataclass(frozen=True)
class LogFilter:
    incident: str | None = None
    stakeholder: str | None = None
    kind: str | None = None
    status: str | None = None

    def keeps(self, comm: Communication) -> bool:
        return (
            (self.incident is None or comm.incident_id == self.incident)
            and (self.stakeholder is None or comm.stakeholder_id == self.stakeholder)
            and (self.kind is None or comm.kind == self.kind)
            and (self.status is None or comm.status == self.status)
        )


def _local(moment: datetime | None, comm: Communication) -> str:
    if moment is None:
        return "-"
    tz = comm.context.get("timezone", "UTC")
    return pendulum.instance(moment).in_tz(tz).format("YYYY-MM-DD HH:mm:ss zz")


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


COLUMNS = (
    "time",
    "incident",
    "stakeholder",
    "kind",
    "status",
    "recipient",
    "subject",
    "promised",
    "sent",
    "attempts",
    "last error",
)


def table_row(comm: Communication) -> tuple[str, ...]:
    """One row of ``amends log``; times in the stakeholder's own zone."""
    sent = _local(comm.sent_at, comm)
    if comm.lateness_s is not None:
        sent += f" ({comm.lateness_s:+.1f}s)"
    return (
        _local(comm.created_at, comm),
        comm.incident_id,
        comm.stakeholder_id,
        comm.kind,
        f"retrying (next {_local(comm.next_attempt_at, comm)[11:19]})"
        if comm.status == "retrying" and comm.next_attempt_at
        else comm.status,
        comm.recipient,
        _clip(comm.subject or "-", 48),
        _local(comm.promised_at, comm),
        sent,
        str(comm.attempts),
        _clip(comm.last_error or "-", 60),
    )


def format_table(rows: Iterable[tuple[str, ...]], header: tuple[str, ...] = COLUMNS) -> str:
    rows = list(rows)
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    return "\n".join(lines)


STREAM_WIDTHS = (23, 15, 16, 8, 9, 52, 18)
STREAM_HEADER = ("time", "stakeholder", "kind", "#", "status", "subject", "sent vs promised")


def stream_row(comm: Communication) -> str:
    """A fixed-width row for logs printed as they happen (``amends demo``)."""
    lateness = f"{comm.lateness_s:+.2f}s" if comm.lateness_s is not None else comm.last_error or "-"
    cells = (
        _local(comm.sent_at or comm.created_at, comm),
        comm.stakeholder_id,
        comm.kind,
        str(comm.seq),
        comm.status,
        _clip(comm.subject or "-", 50),
        lateness,
    )
    return "  ".join(c.ljust(w) for c, w in zip(cells, STREAM_WIDTHS, strict=True)).rstrip()


def stream_header() -> str:
    return "  ".join(c.ljust(w) for c, w in zip(STREAM_HEADER, STREAM_WIDTHS, strict=True)).rstrip()


REJECTED_COLUMNS = ("rejected at", "event_id", "incident", "type", "why")


def rejected_records(
    records: list[dict[str, Any]], incident: str | None, since: datetime | None
) -> list[dict[str, Any]]:
    """Rejected events about ``incident`` (when given) rejected after ``since`` (when given)."""

    def keep(record: dict[str, Any]) -> bool:
        event = record["event"] if isinstance(record["event"], dict) else {}
        if incident is not None and event.get("incident_id") != incident:
            return False
        return since is None or datetime.fromisoformat(record["rejected_at"]) >= since

    return [r for r in records if keep(r)]


def rejected_row(record: dict[str, Any]) -> tuple[str, ...]:
    event = record["event"] if isinstance(record["event"], dict) else {}
    at = pendulum.parse(record["rejected_at"]).in_tz("UTC").format("YYYY-MM-DD HH:mm:ss zz")  # type: ignore[union-attr]
    reasons = "; ".join(f"{e['field'] or 'event'}: {e['reason']}" for e in record["errors"])
    return (
        at,
        str(event.get("event_id", "-")),
        str(event.get("incident_id", "-")),
        str(event.get("type", "-")),
        reasons,
    )


def row_json(comm: Communication) -> str:
    return json.dumps(comm.as_json(), ensure_ascii=False)


@dataclass(frozen=True)
class PromiseReport:
    """How well promised times were kept.

    Every communication is a promise (an update at its announced time; an acknowledgment,
    change or resolution at once). It is kept when sent within ``ON_TIME_GRACE_S`` of that
    time; late when sent after; broken when it failed; overdue when still unsent past the
    grace (``grace_s``). A cancelled message was withdrawn, not broken: a newer message superseded it, the
    incident was resolved first, or the stakeholder opted out or was removed; those are
    counted apart and are not promises. Lateness percentiles are over the messages sent.
    """

    promises: int
    on_time: int
    late: int
    failed: int
    overdue_unsent: int
    withdrawn: int
    p50_s: float
    p99_s: float
    max_s: float
    grace_s: float = ON_TIME_GRACE_S

    @property
    def sent(self) -> int:
        return self.on_time + self.late

    def as_json(self) -> dict[str, Any]:
        return {
            "promises": self.promises,
            "sent": self.sent,
            "on_time": self.on_time,
            "late": self.late,
            "failed": self.failed,
            "overdue_unsent": self.overdue_unsent,
            "withdrawn": self.withdrawn,
            "lateness_p50_s": self.p50_s,
            "lateness_p99_s": self.p99_s,
            "lateness_max_s": self.max_s,
            "grace_s": self.grace_s,
        }

    def lines(self) -> list[str]:
        if not self.promises:
            return ["no promises yet: nothing has been sent or scheduled"]
        grace = f"{self.grace_s:.0f}s"
        return [
            f"promises kept on time (within {grace}): {self.on_time} of {self.promises}; "
            f"late: {self.late}; failed: {self.failed}; overdue and unsent: {self.overdue_unsent}",
            f"withdrawn (superseded, resolved first, opted out): {self.withdrawn}",
            f"lateness of the {self.sent} sent: p50 {self.p50_s:.2f}s  p99 {self.p99_s:.2f}s  max {self.max_s:.2f}s"
            if self.sent
            else "nothing sent yet",
        ]


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[index]


@dataclass(frozen=True)
class OpenPromise:
    """A message promised to a stakeholder that has not been composed yet."""

    incident_id: str
    stakeholder_id: str
    kind: str
    due: datetime


def open_promises(
    store: Store, incident: str | None = None, stakeholder: str | None = None
) -> list[OpenPromise]:
    """The next update (open incidents) or feedback request (resolved ones) of every thread.

    These live in the threads until their timer fires; counting them shows promises that
    are overdue while no worker or scheduler runs.
    """
    found = []
    for incident_id in store.incident_ids():
        if incident is not None and incident_id != incident:
            continue
        state = store.incident(incident_id) or {}
        for stakeholder_id in state.get("stakeholders", []):
            if stakeholder is not None and stakeholder_id != stakeholder:
                continue
            thread = store.thread(incident_id, stakeholder_id)
            for field, kind in (("promised_ms", "update"), ("feedback_ms", "feedback_request")):
                due = utc_of(thread.get(field))
                if due is not None:
                    found.append(OpenPromise(incident_id, stakeholder_id, kind, due))
    return found


def promise_report(
    comms: Iterable[Communication],
    now: datetime,
    pending: Iterable[OpenPromise] = (),
    grace_s: float = ON_TIME_GRACE_S,
) -> PromiseReport:
    """Every communication against its promised time (sending early counts as 0 lateness).

    ``pending`` promises not yet composed count as overdue once past the grace.
    """
    lateness: list[float] = []
    promises = failed = overdue = withdrawn = 0
    for promise in pending:
        if (now - promise.due).total_seconds() > grace_s:
            overdue += 1
            promises += 1
    for comm in comms:
        if comm.lateness_s is not None:
            lateness.append(max(0.0, comm.lateness_s))
        elif comm.status == "cancelled":
            withdrawn += 1
            continue
        elif comm.status == "failed":
            failed += 1
        elif (now - comm.promised_at).total_seconds() > grace_s:
            overdue += 1
        else:
            continue  # not due yet: not counted until it is
        promises += 1
    lateness.sort()
    late = sum(1 for s in lateness if s > grace_s)
    return PromiseReport(
        promises=promises,
        on_time=len(lateness) - late,
        late=late,
        failed=failed,
        overdue_unsent=overdue,
        withdrawn=withdrawn,
        p50_s=_percentile(lateness, 0.50),
        p99_s=_percentile(lateness, 0.99),
        max_s=lateness[-1] if lateness else 0.0,
        grace_s=grace_s,
    )
