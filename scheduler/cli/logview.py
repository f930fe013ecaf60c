"""The log as text: filters, the ``amends log`` table and JSON lines, rejected events, the demo's rows."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import pendulum

from scheduler.core.model import Communication
from scheduler.service.waiting import WaitingEvent

__all__ = [
    "COLUMNS",
    "NARROW_COLUMNS",
    "NARROW_WIDTH",
    "REJECTED_COLUMNS",
    "WAITING_COLUMNS",
    "fit_table",
    "format_table",
    "narrow_header",
    "narrow_row",
    "rejected_records",
    "rejected_row",
    "row_json",
    "stream_header",
    "stream_row",
    "table_row",
    "waiting_row",
]


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
    """One row of ``amends log --wide``, nothing cut; times in the stakeholder's own zone."""
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
        comm.subject or "-",
        _local(comm.promised_at, comm),
        sent,
        str(comm.attempts),
        " ".join((comm.last_error or "-").split()),
    )


NARROW_COLUMNS = ("time", "incident", "stakeholder", "kind", "status", "to", "subject")
NARROW_WIDTH = 100
"""What ``amends log`` fits by default, when the terminal's width is not known."""
_NARROW_MOST = (11, 10, 12, 10, 11, 16)
"""The most each column before the subject takes; the subject gets what is left."""
_SUBJECT_LEAST = 12
_SHORT_KIND = {"acknowledgment": "ack", "feedback_request": "feedback"}


def _short_time(moment: datetime, now: datetime) -> str:
    """``15:03:05`` today, ``11-26 15:03`` on another day, in ``now``'s zone."""
    local = moment.astimezone(now.tzinfo)
    return f"{local:%H:%M:%S}" if local.date() == now.date() else f"{local:%m-%d %H:%M}"


def narrow_row(comm: Communication, now: datetime) -> tuple[str, ...]:
    """One row of ``amends log`` in a terminal's width: the time in ``now``'s zone, the
    lateness after the status, the recipient and the subject cut to fit (``--wide`` has all)."""
    status = str(comm.status)
    if comm.lateness_s is not None:
        status += f" {comm.lateness_s:+.1f}s"
    return (
        _short_time(comm.created_at, now),
        comm.incident_id,
        comm.stakeholder_id,
        _SHORT_KIND.get(comm.kind, comm.kind),
        status,
        comm.recipient,
        comm.subject or "-",
    )


def narrow_header(now: datetime) -> tuple[str, ...]:
    return (f"time {now.tzname()}", *NARROW_COLUMNS[1:])


def fit_table(rows: Iterable[tuple[str, ...]], header: tuple[str, ...], width: int) -> str:
    """A table no wider than ``width``: each column but the last cut to its most, the last
    (the subject) to what is left."""
    rows = list(rows)
    firsts = [min(most, max(len(r[i]) for r in [header, *rows])) for i, most in enumerate(_NARROW_MOST)]
    last = max(_SUBJECT_LEAST, width - sum(firsts) - 2 * len(firsts))
    cut = [(*(_clip(c, w) for c, w in zip(r, firsts, strict=False)), _clip(r[-1], last)) for r in rows]
    return format_table(cut, header)


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


REJECTED_COLUMNS = ("rejected at", "event_id", "incident", "type", "via", "why")
WAITING_COLUMNS = ("waiting since", "event_id", "incident", "type", "rejected at", "why")


def waiting_row(waiting: WaitingEvent) -> tuple[str, ...]:
    """One row of ``amends log --waiting``; times in UTC."""

    def shown(iso: str) -> str:
        return str(pendulum.parse(iso).in_tz("UTC").format("YYYY-MM-DD HH:mm:ss zz"))  # type: ignore[union-attr]

    kind = waiting.type.removeprefix("incident.")
    return (
        shown(waiting.since),
        waiting.event_id,
        waiting.incident_id,
        kind,
        shown(waiting.until),
        waiting.reason,
    )


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
        str(record.get("via", "-")),
        reasons,
    )


def row_json(comm: Communication) -> str:
    return json.dumps(comm.as_json(), ensure_ascii=False)
