"""The promised post-incident review as a promise: when it falls due, and whether it was kept.

A review promised "by 1 December" is due at the end of that day in the configuration's
default time zone. It is kept when the review was published by then (within the grace),
late when it was published after, missed while the day has passed without it, and pending
before. Pure functions of the incident and ``now``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from scheduler.core.model import Incident, utc_of

__all__ = ["ReviewOutcome", "long_date", "review_counts", "review_due", "review_line", "review_outcome"]


class ReviewOutcome(StrEnum):
    KEPT = "kept"
    LATE = "late"
    MISSED = "missed"
    PENDING = "pending"


def review_due(review_by: str, timezone: str) -> datetime:
    """The end of the day ``review_by`` (``2026-12-01``) in ``timezone``, in UTC."""
    next_day = date.fromisoformat(review_by) + timedelta(days=1)
    return datetime.combine(next_day, time(0), tzinfo=ZoneInfo(timezone)).astimezone(UTC)


def long_date(review_by: str) -> str:
    """``2026-12-01`` as ``Tuesday 1 December 2026``."""
    day = date.fromisoformat(review_by)
    return f"{day:%A} {day.day} {day:%B %Y}"


def review_outcome(incident: Incident, now: datetime, timezone: str, grace_s: float) -> ReviewOutcome | None:
    """How the incident's review promise stands; None when its resolution promised none."""
    if not incident.review_promised:
        return None
    due = review_due(incident.review_promised, timezone)
    published = utc_of(incident.review_published_ms)
    if published is not None:
        kept = (published - due).total_seconds() <= grace_s
        return ReviewOutcome.KEPT if kept else ReviewOutcome.LATE
    return ReviewOutcome.MISSED if (now - due).total_seconds() > grace_s else ReviewOutcome.PENDING


def review_counts(
    incidents: Iterable[Incident], now: datetime, timezone: str, grace_s: float
) -> dict[ReviewOutcome, int]:
    """How many review promises are kept, late, missed and pending (every outcome named)."""
    found = Counter(
        outcome
        for incident in incidents
        if (outcome := review_outcome(incident, now, timezone, grace_s)) is not None
    )
    return {outcome: found.get(outcome, 0) for outcome in ReviewOutcome}


def review_line(counts: dict[ReviewOutcome, int]) -> str:
    """``post-incident reviews promised: 3; kept 1, late 1, missed 1, not due yet 0``."""
    total = sum(counts.values())
    if not total:
        return "post-incident reviews promised: none"
    return (
        f"post-incident reviews promised: {total}; kept {counts[ReviewOutcome.KEPT]}, "
        f"late {counts[ReviewOutcome.LATE]}, missed {counts[ReviewOutcome.MISSED]}, "
        f"not due yet {counts[ReviewOutcome.PENDING]}"
    )
