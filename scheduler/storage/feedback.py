"""What stakeholders tell amends back: ratings and comments per incident, and opt-outs.

Feedback is kept per (incident, stakeholder), so answering again replaces the earlier
answer: the latest rating and the latest comment win, and following the same link twice
changes nothing. An opt-out, from one incident's mail or from all of it, is kept with
the time it was first given, and can be undone. Every function
takes ``now`` from its caller; none reads the clock.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, cast

import redis

from scheduler.errors import AmendsError
from scheduler.storage import keys

__all__ = [
    "MAX_COMMENT_CHARS",
    "RATINGS",
    "Feedback",
    "FeedbackError",
    "OptOut",
    "feedback_for",
    "is_unsubscribed",
    "opt_out_id",
    "opt_outs",
    "record_comment",
    "record_rating",
    "record_unsubscribe",
    "remove_opt_out",
    "unsubscribed",
]

RATINGS = (1, 2, 3, 4, 5)
MAX_COMMENT_CHARS = 4000


class FeedbackError(AmendsError):
    """A rating or comment that cannot be kept (out of range, empty, too long)."""


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z") if moment else None


def _moment(text: Any) -> datetime | None:
    return datetime.fromisoformat(text) if isinstance(text, str) and text else None


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


@dataclass(frozen=True)
class Feedback:
    """One stakeholder's answer about one incident; either part may still be missing."""

    rating: int | None = None
    rated_at: datetime | None = None
    comment: str = ""
    commented_at: datetime | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "rating": self.rating,
            "rated_at": _iso(self.rated_at),
            "comment": self.comment,
            "commented_at": _iso(self.commented_at),
        }

    @classmethod
    def from_json(cls, raw: bytes | str) -> Feedback:
        data = json.loads(raw)
        return cls(
            rating=data.get("rating"),
            rated_at=_moment(data.get("rated_at")),
            comment=data.get("comment") or "",
            commented_at=_moment(data.get("commented_at")),
        )


def clean_comment(comment: str) -> str:
    """The comment as kept: line breaks normalised, control characters other than
    line breaks and tabs dropped, surrounding space trimmed; FeedbackError when it is
    empty or longer than ``MAX_COMMENT_CHARS``."""
    text = comment.replace("\r\n", "\n").replace("\r", "\n")
    text = "".join(c for c in text if c in "\n\t" or (ord(c) >= 32 and ord(c) != 127)).strip()
    if not text:
        raise FeedbackError("the comment is empty")
    if len(text) > MAX_COMMENT_CHARS:
        raise FeedbackError(f"the comment is {len(text)} characters long; the limit is {MAX_COMMENT_CHARS}")
    return text


def _change(client: redis.Redis, incident_id: str, stakeholder_id: str, changes: dict[str, Any]) -> Feedback:
    """Merge ``changes`` into the stored answer atomically (WATCH on the incident's feedback)."""
    key = keys.feedback(incident_id)

    def transaction(pipe: Any) -> Feedback:
        raw = pipe.hget(key, stakeholder_id)
        merged = replace(Feedback.from_json(raw) if raw else Feedback(), **changes)
        pipe.multi()
        pipe.hset(key, stakeholder_id, json.dumps(merged.as_json()))
        return merged

    result = client.transaction(transaction, key, value_from_callable=True)  # type: ignore[arg-type]
    return cast(Feedback, result)


def record_rating(
    client: redis.Redis, incident_id: str, stakeholder_id: str, rating: int, now: datetime
) -> Feedback:
    """Keep ``rating`` (1-5) as the stakeholder's rating of the incident, replacing any earlier one."""
    if rating not in RATINGS:
        raise FeedbackError(f"a rating is a whole number from 1 to 5, not {rating!r}")
    return _change(client, incident_id, stakeholder_id, {"rating": rating, "rated_at": now})


def record_comment(
    client: redis.Redis, incident_id: str, stakeholder_id: str, comment: str, now: datetime
) -> Feedback:
    """Keep ``comment`` (see :func:`clean_comment`), replacing any earlier one; the rating stays."""
    text = clean_comment(comment)
    return _change(client, incident_id, stakeholder_id, {"comment": text, "commented_at": now})


def feedback_for(client: redis.Redis, incident_id: str) -> dict[str, Feedback]:
    """Every answer about the incident, by stakeholder id."""
    raw = client.hgetall(keys.feedback(incident_id))
    return {_text(sid): Feedback.from_json(value) for sid, value in sorted(raw.items())}


@dataclass(frozen=True)
class OptOut:
    """A stakeholder's opt-out from one incident's mail, or (``incident_id`` None) from all."""

    stakeholder_id: str
    incident_id: str | None
    since: datetime

    @property
    def id(self) -> str:
        return opt_out_id(self.stakeholder_id, self.incident_id)

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "stakeholder_id": self.stakeholder_id,
            "incident_id": self.incident_id,
            "scope": "incident" if self.incident_id else "all",
            "since": _iso(self.since),
        }


def opt_out_id(stakeholder_id: str, incident_id: str | None = None) -> str:
    """``acme-finance`` (all incident mail) or ``acme-finance:INC-1`` (that incident's only).

    Ids never contain ``:``, so the two halves are never ambiguous.
    """
    return f"{stakeholder_id}:{incident_id}" if incident_id else stakeholder_id


def record_unsubscribe(
    client: redis.Redis, stakeholder_id: str, now: datetime, incident_id: str | None = None
) -> datetime:
    """Keep the stakeholder's opt-out from all incident mail (or, with ``incident_id``, from
    that incident's); return when it was first given (a repeat changes nothing)."""
    field = opt_out_id(stakeholder_id, incident_id)
    client.hsetnx(keys.UNSUBSCRIBED, field, _iso(now) or "")
    first = client.hget(keys.UNSUBSCRIBED, field)
    return (_moment(_text(first)) if first is not None else None) or now


def is_unsubscribed(client: redis.Redis, stakeholder_id: str, incident_id: str | None = None) -> bool:
    """Whether the stakeholder has opted out of all incident messages, or of ``incident_id``'s."""
    fields = [opt_out_id(stakeholder_id)] + ([opt_out_id(stakeholder_id, incident_id)] if incident_id else [])
    return any(value is not None for value in client.hmget(keys.UNSUBSCRIBED, fields))


def unsubscribed(client: redis.Redis) -> dict[str, datetime]:
    """Every opt-out, by its id (see :func:`opt_out_id`), with when it was given."""
    return {o.id: o.since for o in opt_outs(client)}


def opt_outs(client: redis.Redis) -> list[OptOut]:
    """Every opt-out, ordered by id (so a stakeholder's come together, all-mail first)."""
    found = []
    for field, at in client.hgetall(keys.UNSUBSCRIBED).items():
        stakeholder_id, _, incident_id = _text(field).partition(":")
        since = _moment(_text(at))
        if since is not None:
            found.append(OptOut(stakeholder_id, incident_id or None, since))
    return sorted(found, key=lambda o: o.id)


def remove_opt_out(client: redis.Redis, opt_out: str) -> bool:
    """Undo the opt-out ``opt_out`` (an id from :func:`opt_out_id`); False when there was none."""
    return bool(client.hdel(keys.UNSUBSCRIBED, opt_out))
