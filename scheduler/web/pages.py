"""The HTML pages, rendered from ``page_templates/``: review, sign-in, feedback, unsubscribe, notices.

Pages are rendered server side with Jinja2, autoescaping on: incident titles, subjects,
errors and comments are data and are always escaped. They load nothing from elsewhere
(inline CSS, no scripts), so the Content-Security-Policy the API sends can forbid it all.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import jinja2
from markupsafe import Markup

from scheduler.core.feedback import MAX_COMMENT_CHARS, RATINGS
from scheduler.core.history import StakeholderHistory
from scheduler.core.promises import ON_TIME_GRACE_S
from scheduler.service.waiting import WaitingEvent
from scheduler.web.closing_view import RatingAverages, ReviewBadge, badge_class
from scheduler.web.review_view import IncidentView, shown_time

__all__ = [
    "UnsubscribeChoice",
    "render_feedback_page",
    "render_notice",
    "render_review",
    "render_sign_in",
    "render_stakeholder",
    "render_unsubscribe",
]

_env = jinja2.Environment(
    loader=jinja2.PackageLoader("scheduler.web", "page_templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    auto_reload=False,
)


def render_review(
    incidents: list[IncidentView],
    now: datetime,
    grace_s: float = ON_TIME_GRACE_S,
    older: str = "",
    sign_out: str = "",
    waiting: Sequence[WaitingEvent] = (),
    undeliverable: Sequence[dict[str, str]] = (),
    undeliverable_count: int = 0,
    ratings: Sequence[RatingAverages] = (),
    reviews: Mapping[str, ReviewBadge] | None = None,
) -> str:
    """The review page; ``older`` links to the next page of older incidents, if any;
    ``sign_out`` is the sign-out form's CSRF value (no form without one); ``waiting`` are
    the events held for their incident's opened; ``undeliverable`` the newest marked
    addresses (``Undeliverable.as_json()``) of ``undeliverable_count``; ``ratings`` each
    audience's averages; ``reviews`` each incident's review promise."""
    return _env.get_template("review.html").render(
        incidents=incidents,
        now=shown_time(now, "UTC"),
        grace_s=int(grace_s),
        older=older,
        sign_out=sign_out,
        waiting=waiting,
        undeliverable=undeliverable,
        undeliverable_count=undeliverable_count,
        ratings=ratings,
        reviews=reviews or {},
        review_class=badge_class,
    )


def render_stakeholder(
    history: StakeholderHistory,
    now: datetime,
    *,
    kept_svg: Markup | None,
    ratings_svg: Markup | None,
    sign_out: str = "",
) -> str:
    """One stakeholder's history page; the pictures are inline SVG built from escaped text."""
    return _env.get_template("stakeholder.html").render(
        history=history,
        promises=history.promises(),
        now=shown_time(now, "UTC"),
        kept_svg=kept_svg,
        ratings_svg=ratings_svg,
        sign_out=sign_out,
    )


def render_feedback_page(
    *,
    incident_id: str,
    title: str,
    action: str,
    stakeholder: str = "",
    comment_sig: str,
    rating: int | None = None,
    saved_rating: int | None = None,
    comment: str = "",
    message: str = "",
    error: str = "",
) -> str:
    """The page a feedback link opens: a form with the ratings (``rating`` chosen) and a
    comment. Opening it records nothing; sending the form does."""
    return _env.get_template("feedback.html").render(
        incident_id=incident_id,
        title=title,
        stakeholder=stakeholder,
        ratings=RATINGS,
        action=action,
        comment_sig=comment_sig,
        rating=rating,
        saved_rating=saved_rating,
        comment=comment,
        message=message,
        error=error,
        max_chars=MAX_COMMENT_CHARS,
    )


def render_notice(title: str, *lines: str, error: bool = False, button: str = "", action: str = "") -> str:
    """A short page: a confirmation, why a link did not work, or a question with one button."""
    return _env.get_template("notice.html").render(
        title=title, lines=lines, error=error, button=button, action=action
    )


def render_sign_in(error: str = "", *, csrf: str) -> str:
    """The review page's sign-in form; it posts the token, so the token never enters a URL,
    and ``csrf``, which ties the form to the browser it was shown to."""
    return _env.get_template("sign_in.html").render(error=error, csrf=csrf)


@dataclass(frozen=True)
class UnsubscribeChoice:
    scope: str
    """``incident`` or ``all``."""
    label: str
    undo: bool = False


def render_unsubscribe(
    heading: str, lines: Iterable[str], action: str, choices: Iterable[UnsubscribeChoice]
) -> str:
    """The unsubscribe page: what the reader may stop (or restart), one button each."""
    return _env.get_template("unsubscribe.html").render(
        heading=heading, lines=list(lines), action=action, choices=list(choices)
    )
