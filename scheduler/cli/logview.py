"""The log as text: filters, the ``amends log`` table and JSON lines, rejected events, the demo's rows."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import pendulum

from scheduler.core.model import Communication

__all__ = [
    "COLUMNS",
    "REJECTED_COLUMNS",
    "format_table",
    "rejected_records",
    "rejected_row",
    "row_json",
    "stream_header",
    "stream_row",
    "table_row",
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
