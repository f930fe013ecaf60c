"""What the review page shows of the loop closed after incidents: each audience's average
rating over the last 30 and 90 days, and how each promised post-incident review stands."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from scheduler.core.config import Config
from scheduler.core.model import Incident, utc_of
from scheduler.core.ratings import AVERAGE_WINDOWS_DAYS, averages
from scheduler.core.review_promise import ReviewOutcome, long_date, review_outcome
from scheduler.storage.ratings import RatingsLog

__all__ = ["RatingAverages", "ReviewBadge", "rating_averages", "review_badges"]


@dataclass(frozen=True)
class RatingAverages:
    """One audience's average rating over the last 30 and 90 days, in words ("" for none)."""

    audience: str
    last_30: str
    last_90: str


def rating_averages(ratings: RatingsLog, now: datetime) -> list[RatingAverages]:
    """Every audience rated in the last 90 days, by name."""
    short, long = AVERAGE_WINDOWS_DAYS
    rows = ratings.rows(now - timedelta(days=long))
    recent, older = averages(rows, now, short), averages(rows, now, long)
    return [
        RatingAverages(audience, recent[audience].words if audience in recent else "", average.words)
        for audience, average in older.items()
    ]


@dataclass(frozen=True)
class ReviewBadge:
    """How an incident's review promise stands: its outcome (the badge) and it in words."""

    outcome: ReviewOutcome
    words: str


_BADGE_CLASS = {
    ReviewOutcome.KEPT: "kept",
    ReviewOutcome.LATE: "late",
    ReviewOutcome.MISSED: "overdue",
    ReviewOutcome.PENDING: "pending",
}


def review_badges(
    incidents: list[Incident], now: datetime, config: Config | None, grace_s: float
) -> dict[str, ReviewBadge]:
    """Each incident whose resolution promised a review, by id."""
    timezone = config.defaults.timezone if config else "UTC"
    found = {}
    for incident in incidents:
        outcome = review_outcome(incident, now, timezone, grace_s)
        if outcome is None or incident.review_promised is None:
            continue
        promised = long_date(incident.review_promised)
        published = utc_of(incident.review_published_ms)
        if published is not None:
            words = f"review promised by {promised}, published {published:%Y-%m-%d %H:%M} UTC"
        elif outcome == ReviewOutcome.MISSED:
            later = (
                f"; now promised by {long_date(incident.review_by)}"
                if incident.review_by and incident.review_by > incident.review_promised
                else ""
            )
            words = f"review promised by {promised}, not published{later}"
        else:
            words = f"review promised by {promised}"
        found[incident.id] = ReviewBadge(outcome, words)
    return found


def badge_class(outcome: ReviewOutcome) -> str:
    return _BADGE_CLASS[outcome]
