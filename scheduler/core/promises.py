"""What counts as a kept promise, and which communications a review asks for: the
product's rules, used by the CLI, the API, the review page, the demo and the preview alike."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from scheduler.core.model import Communication, Kind, Status, utc_of
from scheduler.core.ports import Store

__all__ = ["ON_TIME_GRACE_S", "LogFilter", "OpenPromise", "PromiseReport", "open_promises", "promise_report"]

ON_TIME_GRACE_S = 60.0
"""A promise "by 14:30" is kept by a message sent before 14:31 (``kept_within`` in the
configuration changes it)."""


@dataclass(frozen=True)
class LogFilter:
    """Which communications a review asks for (``amends log``, ``/v1/communications``)."""

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


@dataclass(frozen=True)
class PromiseReport:
    """How well promised times were kept.

    Every communication is a promise (an update at its announced time; an acknowledgment,
    change or resolution at once). It is kept when sent within ``ON_TIME_GRACE_S`` of that
    time; late when sent after; broken when it failed; overdue when still unsent past the
    grace (``grace_s``). A cancelled message was withdrawn, not broken: a newer message superseded it, the
    incident was resolved first, or the stakeholder opted out or was removed; a suppressed one had an undeliverable address; those are
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
            f"withdrawn (superseded, resolved first, opted out, undeliverable): {self.withdrawn}",
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
    kind: Kind
    due: datetime


def open_promises(
    store: Store,
    incident: str | None = None,
    stakeholder: str | None = None,
    among: Iterable[str] | None = None,
) -> list[OpenPromise]:
    """The next update (open incidents) or feedback request (resolved ones) of every thread
    of ``incident``, or of the incidents ``among`` names, or else of every incident.

    These live in the threads until their timer fires; counting them shows promises that
    are overdue while no worker or scheduler runs.
    """
    found = []
    ids = [incident] if incident is not None else list(among) if among is not None else store.incident_ids()
    pairs = [
        (state.id, stakeholder_id)
        for state in store.incidents(ids)
        for stakeholder_id in state.stakeholders
        if stakeholder is None or stakeholder_id == stakeholder
    ]
    for (incident_id, stakeholder_id), thread in zip(pairs, store.threads(pairs), strict=True):
        for due_ms, kind in ((thread.promised_ms, Kind.UPDATE), (thread.feedback_ms, Kind.FEEDBACK_REQUEST)):
            due = utc_of(due_ms)
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
        elif comm.status in (Status.CANCELLED, Status.SUPPRESSED):
            withdrawn += 1
            continue
        elif comm.status == Status.FAILED:
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
