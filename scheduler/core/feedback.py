"""What stakeholders tell amends back: ratings and comments per incident, and opt-outs.

Feedback is kept per (incident, stakeholder), so answering again replaces the earlier
answer: the latest rating and the latest comment win, and following the same link twice
changes nothing. An opt-out, from one incident's mail or from all of it, is kept with
the time it was first given, and can be undone. The stores keep them
(:class:`~scheduler.core.ports.Store`); the rules are here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from scheduler.core.model import iso_z
from scheduler.errors import AmendsError

__all__ = [
    "MAX_COMMENT_CHARS",
    "RATINGS",
    "Feedback",
    "FeedbackError",
    "OptOut",
    "check_rating",
    "clean_comment",
    "opt_out_id",
    "parse_opt_out_id",
]

RATINGS = (1, 2, 3, 4, 5)
MAX_COMMENT_CHARS = 4000


class FeedbackError(AmendsError):
    """A rating or comment that cannot be kept (out of range, empty, too long)."""


def moment_of(text: Any) -> datetime | None:
    return datetime.fromisoformat(text) if isinstance(text, str) and text else None


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
            "rated_at": iso_z(self.rated_at),
            "comment": self.comment,
            "commented_at": iso_z(self.commented_at),
        }

    @classmethod
    def from_json(cls, raw: bytes | str) -> Feedback:
        data = json.loads(raw)
        return cls(
            rating=data.get("rating"),
            rated_at=moment_of(data.get("rated_at")),
            comment=data.get("comment") or "",
            commented_at=moment_of(data.get("commented_at")),
        )


def check_rating(rating: int) -> int:
    if rating not in RATINGS:
        raise FeedbackError(f"a rating is a whole number from 1 to 5, not {rating!r}")
    return rating


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
            "since": iso_z(self.since),
        }


def opt_out_id(stakeholder_id: str, incident_id: str | None = None) -> str:
    """``acme-finance`` (all incident mail) or ``acme-finance:INC-1`` (that incident's only).

    Ids never contain ``:``, so the two halves are never ambiguous.
    """
    return f"{stakeholder_id}:{incident_id}" if incident_id else stakeholder_id


def parse_opt_out_id(opt_out: str) -> tuple[str, str | None]:
    stakeholder_id, _, incident_id = opt_out.partition(":")
    return stakeholder_id, incident_id or None
