"""Ratings kept across incidents in Redis, for averages over time and ``/metrics``.

The keys (``amends:{ratings}:…``, :mod:`scheduler.storage.keys`) share one hash tag, so the
transaction that records a rating stays in one slot of a Redis Cluster.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import redis

from scheduler.core.model import ms_of, text_of, utc_of
from scheduler.core.ratings import RatingRow
from scheduler.errors import StorageError
from scheduler.storage import keys

__all__ = ["KEEP_DAYS", "RatingsLog"]

KEEP_DAYS = 400
"""Ratings older than this are dropped as new ones come in (the counts stay)."""


def _member(incident_id: str, stakeholder_id: str) -> str:
    return f"{incident_id}|{stakeholder_id}"


class RatingsLog:
    """Every rating as last given per (incident, stakeholder), and counts by audience and value."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def record(
        self, incident_id: str, stakeholder_id: str, audience: str, rating: int, now: datetime
    ) -> None:
        """Keep ``rating`` (replacing that reader's earlier one of the incident) and count it."""
        member = _member(incident_id, stakeholder_id)
        try:
            pipe = self.client.pipeline(transaction=True)
            pipe.zadd(keys.RATINGS_AT, {member: ms_of(now)})
            pipe.hset(keys.RATINGS_GIVEN, member, f"{audience}|{rating}")
            pipe.hincrby(keys.RATINGS_COUNTS, f"{audience}|{rating}", 1)
            pipe.zremrangebyscore(keys.RATINGS_AT, "-inf", ms_of(now - timedelta(days=KEEP_DAYS)))
            pipe.execute()
        except redis.RedisError as e:
            raise StorageError(f"cannot record the rating: {e}") from e

    def rows(self, since: datetime, stakeholder_id: str | None = None) -> list[RatingRow]:
        """The ratings given since ``since``, oldest first (one reader's only, when named)."""
        try:
            members = [
                text_of(m)
                for m in self.client.zrangebyscore(keys.RATINGS_AT, ms_of(since), "+inf", withscores=False)
            ]
            if stakeholder_id is not None:
                members = [m for m in members if m.split("|", 1)[1] == stakeholder_id]
            if not members:
                return []
            pipe = self.client.pipeline(transaction=False)
            pipe.zmscore(keys.RATINGS_AT, members)
            pipe.hmget(keys.RATINGS_GIVEN, members)
            scores, given = pipe.execute()
        except redis.RedisError as e:
            raise StorageError(f"cannot read the ratings: {e}") from e
        rows = []
        for member, score, value in zip(members, scores, given, strict=True):
            if score is None or value is None:
                continue
            incident_id, stakeholder = member.split("|", 1)
            audience, rating = text_of(value).rsplit("|", 1)
            at = utc_of(int(score))
            assert at is not None
            rows.append(RatingRow(incident_id, stakeholder, audience, int(rating), at))
        return rows

    def counts(self) -> dict[tuple[str, int], int]:
        """Ratings given so far by (audience, rating)."""
        try:
            raw = self.client.hgetall(keys.RATINGS_COUNTS)
        except redis.RedisError as e:
            raise StorageError(f"cannot read the rating counts: {e}") from e
        out: dict[tuple[str, int], int] = {}
        for field, count in raw.items():
            audience, rating = text_of(field).rsplit("|", 1)
            out[(audience, int(rating))] = int(count)
        return out
