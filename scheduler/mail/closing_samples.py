"""What the owner's and the follow-up kinds tell, as samples to render templates against.

``config check``, the read-through and ``amends preview`` render every kind; these are
the ``about`` each new kind carries, with text as people write it.
"""

from __future__ import annotations

from typing import Any

from scheduler.core.model import Kind

__all__ = ["about_variants", "sample_about"]

_REVIEW_URL = "https://status.example.org/#incident-INC-SAMPLE"
_COMMENT = 'The updates came too late & said <b>no news</b> twice, "again".\nPlease call us next time.'


def sample_about(kind: str) -> dict[str, Any]:
    """The ``about`` of a sample message of ``kind`` (empty for the four first kinds)."""
    answer = {
        "stakeholder_id": "acme-finance",
        "stakeholder": "ACME Finance",
        "audience": "customer",
        "rating": 2,
        "comment": _COMMENT,
    }
    samples: dict[str, dict[str, Any]] = {
        Kind.FEEDBACK_ALERT: {**answer, "review_url": _REVIEW_URL},
        Kind.FEEDBACK_DIGEST: {
            "answers": [
                answer,
                {**answer, "stakeholder_id": "globex", "stakeholder": "Globex", "rating": 5, "comment": ""},
            ],
            "rated": 2,
            "average": "3.5",
            "told": 3,
            "review_url": _REVIEW_URL,
        },
        Kind.FOLLOW_UP: {
            "comment": _COMMENT,
            "rating": 2,
            "text": "From now on every update goes out on time, also when nothing changed.",
        },
        Kind.REVIEW_REMINDER: {"review_by": "Tuesday 1 December 2026", "told": 3, "review_url": _REVIEW_URL},
        Kind.REVIEW: {
            "review_url": "https://status.example.org/reviews/INC-SAMPLE",
            "summary": "An expired certificate stopped card payments; renewals are now automatic.",
        },
        Kind.REVIEW_DELAYED: {"promised": "Tuesday 1 December 2026", "new_date": "Friday 4 December 2026"},
    }
    return samples.get(kind, {})


def about_variants(kind: str) -> list[tuple[str, dict[str, Any]]]:
    """The other shapes a kind's ``about`` takes, named, for the read-through."""
    about = sample_about(kind)
    if kind == Kind.FEEDBACK_ALERT:
        return [
            ("a comment without a rating", {**about, "rating": None}),
            ("a rating without a comment", {**about, "comment": ""}),
        ]
    if kind == Kind.FEEDBACK_DIGEST:
        unrated = [{**answer, "rating": None} for answer in about["answers"]]
        return [
            ("no answers", {**about, "answers": [], "rated": 0, "average": ""}),
            ("comments without ratings", {**about, "answers": unrated, "rated": 0, "average": ""}),
            ("one told, one answer", {**about, "answers": about["answers"][:1], "rated": 1, "told": 1}),
        ]
    if kind == Kind.FOLLOW_UP:
        lines = "We changed two things.\nUpdates go out on the minute.\nThe owner reads every comment."
        return [
            ("no comment, a rating", {**about, "comment": ""}),
            ("no comment, no rating", {**about, "comment": "", "rating": None}),
            ("a text of several lines", {**about, "text": lines}),
        ]
    if kind == Kind.REVIEW_REMINDER:
        return [("one reader told", {**about, "told": 1})]
    if kind == Kind.REVIEW:
        return [("no summary", {**about, "summary": ""})]
    if kind == Kind.REVIEW_DELAYED:
        return [("no new date", {**about, "new_date": ""})]
    return []
