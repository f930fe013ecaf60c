"""What stakeholders answer, kept in Redis: ratings and comments per incident, and opt-outs."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any, cast

import redis

from scheduler.core.feedback import (
    Feedback,
    OptOut,
    check_rating,
    clean_comment,
    moment_of,
    opt_out_id,
    parse_opt_out_id,
)
from scheduler.core.model import iso_z, text_of
from scheduler.storage import keys
from scheduler.storage.connection import watched_transaction

__all__ = ["RedisAnswers"]


class RedisAnswers:
    """Feedback and opt-outs (part of :class:`~scheduler.storage.redis_store.RedisStore`)."""

    client: redis.Redis

    def _change_feedback(self, incident_id: str, stakeholder_id: str, changes: dict[str, Any]) -> Feedback:
        """Merge ``changes`` into the stored answer atomically (WATCH on the incident's feedback)."""
        key = keys.feedback(incident_id)

        def transaction(pipe: Any) -> Feedback:
            raw = pipe.hget(key, stakeholder_id)
            merged = replace(Feedback.from_json(raw) if raw else Feedback(), **changes)
            pipe.multi()
            pipe.hset(key, stakeholder_id, json.dumps(merged.as_json()))
            return merged

        result = watched_transaction(self.client, transaction, key, value_from_callable=True)
        return cast(Feedback, result)

    def record_rating(self, incident_id: str, stakeholder_id: str, rating: int, now: datetime) -> Feedback:
        """Keep ``rating`` (1-5) as the stakeholder's rating of the incident, replacing any earlier one."""
        changes = {"rating": check_rating(rating), "rated_at": now}
        return self._change_feedback(incident_id, stakeholder_id, changes)

    def record_comment(self, incident_id: str, stakeholder_id: str, comment: str, now: datetime) -> Feedback:
        """Keep the comment (see ``clean_comment``), replacing any earlier one; the rating stays."""
        changes = {"comment": clean_comment(comment), "commented_at": now}
        return self._change_feedback(incident_id, stakeholder_id, changes)

    def feedback_for(self, incident_id: str) -> dict[str, Feedback]:
        """Every answer about the incident, by stakeholder id."""
        raw = self.client.hgetall(keys.feedback(incident_id))
        return {text_of(sid): Feedback.from_json(value) for sid, value in sorted(raw.items())}

    def record_opt_out(self, stakeholder_id: str, now: datetime, incident_id: str | None = None) -> datetime:
        """Keep the stakeholder's opt-out from all incident mail (or, with ``incident_id``, from
        that incident's); return when it was first given (a repeat changes nothing)."""
        field = opt_out_id(stakeholder_id, incident_id)
        self.client.hsetnx(keys.UNSUBSCRIBED, field, iso_z(now) or "")
        first = self.client.hget(keys.UNSUBSCRIBED, field)
        return (moment_of(text_of(first)) if first is not None else None) or now

    def is_opted_out(self, stakeholder_id: str, incident_id: str | None = None) -> bool:
        """Whether the stakeholder opted out of all incident messages, or of ``incident_id``'s."""
        ids = [opt_out_id(stakeholder_id)] + (
            [opt_out_id(stakeholder_id, incident_id)] if incident_id else []
        )
        return any(value is not None for value in self.client.hmget(keys.UNSUBSCRIBED, ids))

    def opted_out_among(self, incident_id: str, stakeholder_ids: Sequence[str]) -> set[str]:
        """Which of ``stakeholder_ids`` opted out of all mail or of ``incident_id``'s, in one read."""
        fields = [f for s in stakeholder_ids for f in (opt_out_id(s), opt_out_id(s, incident_id))]
        if not fields:
            return set()
        found = self.client.hmget(keys.UNSUBSCRIBED, fields)
        return {
            s
            for n, s in enumerate(stakeholder_ids)
            if found[2 * n] is not None or found[2 * n + 1] is not None
        }

    def opt_outs(self) -> list[OptOut]:
        """Every opt-out, ordered by id (so a stakeholder's come together, all-mail first)."""
        found = []
        for field, at in self.client.hgetall(keys.UNSUBSCRIBED).items():
            stakeholder_id, incident_id = parse_opt_out_id(text_of(field))
            since = moment_of(text_of(at))
            if since is not None:
                found.append(OptOut(stakeholder_id, incident_id, since))
        return sorted(found, key=lambda o: o.id)

    def remove_opt_out(self, opt_out_id: str) -> bool:
        """Undo an opt-out (an id from ``opt_out_id``); False when there was none."""
        return bool(self.client.hdel(keys.UNSUBSCRIBED, opt_out_id))
