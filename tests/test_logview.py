"""The review figures: promise keeping, and the rejected-events listing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from scheduler.cli.logview import rejected_records
from scheduler.core.model import Communication
from scheduler.core.promises import promise_report

NOW = datetime(2026, 11, 26, 15, 0, tzinfo=UTC)


def comm(status: str, promised_min_ago: float, late_s: float | None = None) -> Communication:
    promised = NOW - timedelta(minutes=promised_min_ago)
    return Communication(
        id=f"INC-1:a:update:{promised_min_ago}",
        incident_id="INC-1",
        stakeholder_id="a",
        kind="update",
        seq=1,
        status=status,
        recipient="a@acme.example",
        created_at=promised,
        promised_at=promised,
        next_update_at=None,
        sent_at=promised + timedelta(seconds=late_s) if late_s is not None else None,
        attempts=1,
        last_error="",
        subject="",
        message_id="",
        context={},
        message="",
    )


def test_failed_and_overdue_messages_are_broken_promises() -> None:
    """Sent in the grace is kept, later is late; failed and overdue-unsent are not kept; cancelled is withdrawn."""
    report = promise_report(
        [
            comm("sent", 30, late_s=0.2),
            comm("sent", 25, late_s=-5),  # early counts as on time, lateness 0
            comm("sent", 20, late_s=90),
            comm("failed", 15),
            comm("cancelled", 14),
            comm("retrying", 10),  # overdue, not sent
            comm("scheduled", 0.5),  # not due past the grace yet: not counted
        ],
        NOW,
    )
    assert (
        report.promises,
        report.on_time,
        report.late,
        report.failed,
        report.overdue_unsent,
        report.withdrawn,
    ) == (5, 2, 1, 1, 1, 1)
    assert report.max_s == 90 and report.p50_s == 0.2
    assert "kept on time (within 60s): 2 of 5" in report.lines()[0]


def test_no_promises_says_so() -> None:
    """With nothing sent or due the report says there is nothing yet, not a lateness of 0."""
    assert promise_report([], NOW).lines() == ["no promises yet: nothing has been sent or scheduled"]


def _rejected(incident: str, at: str) -> dict[str, Any]:
    return {
        "rejected_at": at,
        "errors": [{"field": "type", "reason": "bad"}],
        "event": {"incident_id": incident},
    }


def test_rejected_events_filter_by_incident_and_time() -> None:
    """--rejected --incident keeps that incident's events; --since drops older rejections."""
    records = [_rejected("INC-1", "2026-11-26T14:30:00Z"), _rejected("INC-2", "2026-11-26T12:00:00Z")]
    assert [r["event"]["incident_id"] for r in rejected_records(records, "INC-1", None)] == ["INC-1"]
    assert rejected_records(records, None, NOW - timedelta(hours=1)) == records[:1]
