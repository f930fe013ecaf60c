"""What the review page shows of the loop closed after incidents: each audience's average
rating over the last 30 and 90 days."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from scheduler.core.ratings import AVERAGE_WINDOWS_DAYS, averages
from scheduler.storage.ratings import RatingsLog

__all__ = ["RatingAverages", "rating_averages"]


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
