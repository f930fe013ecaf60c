"""The promised post-incident review as a promise: when it falls due and how it stands,
as pure functions of the incident and ``now`` (tables of aware datetimes)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from scheduler.core.model import Incident, ms_of
from scheduler.core.review_promise import ReviewOutcome, long_date, review_counts, review_due, review_outcome


@pytest.mark.parametrize(
    ("review_by", "timezone", "due"),
    [
        ("2026-12-01", "UTC", datetime(2026, 12, 2, 0, 0, tzinfo=UTC)),
        ("2026-12-01", "Europe/Berlin", datetime(2026, 12, 1, 23, 0, tzinfo=UTC)),
        ("2026-12-01", "America/New_York", datetime(2026, 12, 2, 5, 0, tzinfo=UTC)),
        # the day the clocks go back in Berlin still ends at local midnight
        ("2026-10-25", "Europe/Berlin", datetime(2026, 10, 25, 23, 0, tzinfo=UTC)),
        ("2026-03-29", "Europe/Berlin", datetime(2026, 3, 29, 22, 0, tzinfo=UTC)),
    ],
)
def test_a_review_is_due_at_the_end_of_its_day_in_the_zone(
    review_by: str, timezone: str, due: datetime
) -> None:
    """ "By 1 December" lasts until midnight at the end of 1 December in the zone, DST days included."""
    assert review_due(review_by, timezone) == due


def _incident(promised: str | None, published: datetime | None = None) -> Incident:
    return Incident(
        id="INC-1",
        review_promised=promised,
        review_by=promised,
        review_published_ms=ms_of(published) if published else None,
    )


@pytest.mark.parametrize(
    ("incident", "now", "outcome"),
    [
        (_incident(None), datetime(2026, 12, 5, tzinfo=UTC), None),
        (_incident("2026-12-01"), datetime(2026, 12, 1, 23, 59, tzinfo=UTC), ReviewOutcome.PENDING),
        (_incident("2026-12-01"), datetime(2026, 12, 2, 0, 0, 30, tzinfo=UTC), ReviewOutcome.PENDING),
        (_incident("2026-12-01"), datetime(2026, 12, 2, 0, 1, 1, tzinfo=UTC), ReviewOutcome.MISSED),
        (
            _incident("2026-12-01", datetime(2026, 12, 1, 16, 0, tzinfo=UTC)),
            datetime(2026, 12, 9, tzinfo=UTC),
            ReviewOutcome.KEPT,
        ),
        (
            _incident("2026-12-01", datetime(2026, 12, 3, 9, 0, tzinfo=UTC)),
            datetime(2026, 12, 9, tzinfo=UTC),
            ReviewOutcome.LATE,
        ),
    ],
)
def test_a_review_promise_is_kept_late_missed_or_pending(
    incident: Incident, now: datetime, outcome: ReviewOutcome | None
) -> None:
    """Published by the end of the day (plus the grace) is kept, after it late; unpublished past it, missed."""
    assert review_outcome(incident, now, "UTC", 60.0) == outcome


def test_review_promises_are_counted_by_outcome_every_outcome_named() -> None:
    """The counts name every outcome, zero included, and skip incidents that promised no review."""
    now = datetime(2026, 12, 9, tzinfo=UTC)
    incidents = [
        _incident("2026-12-01", datetime(2026, 12, 1, 9, 0, tzinfo=UTC)),
        _incident("2026-12-01"),
        _incident("2026-12-01"),
        _incident(None),
    ]
    assert review_counts(incidents, now, "UTC", 60.0) == {
        ReviewOutcome.KEPT: 1,
        ReviewOutcome.LATE: 0,
        ReviewOutcome.MISSED: 2,
        ReviewOutcome.PENDING: 0,
    }


def test_a_review_date_reads_as_words() -> None:
    """2026-12-01 reads "Tuesday 1 December 2026" in messages."""
    assert long_date("2026-12-01") == "Tuesday 1 December 2026"


def test_the_preview_shows_the_owners_reminder_digest_and_the_readers_late_word() -> None:
    """`amends preview` lists the incident owner's review_reminder and feedback_digest under
    the owner, and a review_delayed to each reader when the promised day passes unpublished."""
    from datetime import timedelta

    from scheduler.cli.preview import simulate, timeline_text
    from scheduler.core.config import parse_config
    from scheduler.core.events import parse_event
    from scheduler.mail.render import TemplateSet
    from scheduler.service.settings import bundled_path
    from tests.conftest import event

    config = parse_config(
        {
            "sender": "Acme Status <status@acme.example>",
            "owners": {"payments": {"name": "Payments on-call", "email": "oncall@acme.example"}},
            "stakeholders": [
                {"id": "acme", "name": "ACME", "email": "a@acme.example", "audience": "customer"}
            ],
        }
    )
    events = [
        parse_event(event(at=datetime(2026, 11, 26, 14, 3, tzinfo=UTC), review_by="2026-11-28")),
        parse_event(event("resolved", at=datetime(2026, 11, 26, 15, 0, tzinfo=UTC))),
    ]
    text = timeline_text(
        simulate(events, config, TemplateSet(bundled_path("templates")), timedelta(days=4)), config
    )
    owner = text.split("owner.payments  Payments on-call <oncall@acme.example>")[1]
    assert "Sat 28 Nov 00:00:00 UTC     review_reminder" in owner
    assert "Sun 29 Nov 15:00:00 UTC     feedback_digest" in owner
    reader = text.split("owner.payments")[0]
    assert "Sun 29 Nov 00:00:00 UTC     review_delayed    The review of Card payments failing" in reader
