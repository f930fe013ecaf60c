"""Ratings over time: each audience's average over a window, the counts ``/metrics`` shows.

A rating is kept per (incident, stakeholder) as last given, with the reader's audience
and when; these are pure functions of those rows and ``now``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

__all__ = ["AVERAGE_WINDOWS_DAYS", "Average", "RatingRow", "averages"]

AVERAGE_WINDOWS_DAYS = (30, 90)
"""The windows the review page shows each audience's average over."""


@dataclass(frozen=True)
class RatingRow:
    """One reader's rating of one incident's messages, as last given."""

    incident_id: str
    stakeholder_id: str
    audience: str
    rating: int
    at: datetime


@dataclass(frozen=True)
class Average:
    """An audience's average rating over a window, and how many ratings it is of."""

    audience: str
    days: int
    average: float
    count: int

    @property
    def words(self) -> str:
        return f"{self.average:.1f} of 5 ({self.count} rating{'' if self.count == 1 else 's'})"


def averages(rows: Iterable[RatingRow], now: datetime, days: int) -> dict[str, Average]:
    """Each audience's average over the ``days`` before ``now`` (ratings given after
    ``now`` do not count); audiences with no rating in the window are absent."""
    since = now - timedelta(days=days)
    totals: dict[str, list[int]] = {}
    for row in rows:
        if since < row.at <= now:
            totals.setdefault(row.audience, []).append(row.rating)
    return {
        audience: Average(audience, days, sum(given) / len(given), len(given))
        for audience, given in sorted(totals.items())
    }
