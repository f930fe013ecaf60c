"""Feedback acted on: the owner hears of it, the reader hears back.

A rating of 1 or 2, or any comment, arms an alert timer (``a|INC-1|acme``) due at once;
when it fires the incident's owner (:mod:`scheduler.core.owners`) gets a
``feedback_alert`` naming the reader, the rating and the comment as written. When an
incident is resolved a digest timer (``d|INC-1|owner``) is armed ``feedback_digest_after``
later: the owner then gets every rating and comment of it in one ``feedback_digest``.
An operator's answer to a reader (:meth:`Closing.follow_up`) is a ``follow_up`` in that
reader's thread, quoting their comment.

Every entry point takes ``now`` and creates each message once per trigger, as the engine does.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Protocol

from scheduler.core.config import Config, Stakeholder
from scheduler.core.feedback import Feedback, FeedbackError, clean_comment
from scheduler.core.model import (
    Action,
    Draft,
    EventRecord,
    Incident,
    Kind,
    Thread,
    TimerKind,
    TimerMember,
    ms_of,
)
from scheduler.core.owners import owner_of
from scheduler.core.ports import CommRequest, Store, TimerStore
from scheduler.errors import AmendsError

__all__ = [
    "AFTER_KINDS",
    "ALERT_RATINGS",
    "Closing",
    "FollowUpError",
    "Sends",
    "alert_member",
    "needs_alert",
    "review_page_url",
]

AFTER_KINDS = (Kind.FOLLOW_UP, Kind.REVIEW, Kind.REVIEW_DELAYED)
"""What a reader may get after the feedback request; they tell no incident change."""

ALERT_RATINGS = (1, 2)
"""Ratings the owner hears of at once (any comment too)."""


class FollowUpError(AmendsError):
    """A follow-up that cannot be sent: unknown incident or stakeholder, or empty text."""


class Sends(Protocol):
    """Where a composed communication goes to be sent (the engine's ``Dispatch``)."""

    def deliver(self, comm_id: str) -> None: ...


def needs_alert(rating: int | None, comment: str) -> bool:
    """Whether an answer reaches the owner at once: a low rating or any comment."""
    return rating in ALERT_RATINGS or bool(comment.strip())


def alert_member(incident_id: str, stakeholder_id: str) -> str:
    return str(TimerMember(TimerKind.FEEDBACK_ALERT, incident_id, stakeholder_id))


def review_page_url(config: Config, incident_id: str) -> str:
    """The review page, at the incident (sign-in with a token is asked for there)."""
    return f"{config.base_url.rstrip('/')}/#incident-{incident_id}"


def _answered_ms(answer: Feedback) -> int:
    moments = [m for m in (answer.rated_at, answer.commented_at) if m is not None]
    return max(ms_of(m) for m in moments) if moments else 0


def _answer(config: Config, stakeholder_id: str, answer: Feedback) -> dict[str, Any]:
    stakeholder = config.stakeholder(stakeholder_id)
    return {
        "stakeholder_id": stakeholder_id,
        "stakeholder": stakeholder.name if stakeholder else stakeholder_id,
        "audience": stakeholder.audience if stakeholder else "",
        "rating": answer.rating,
        "comment": answer.comment,
    }


def draft_for(
    config: Config,
    incident: Incident,
    to: Stakeholder,
    about: Mapping[str, Any],
    now: datetime,
) -> Callable[[Thread, Incident | None], tuple[Draft, Thread] | None]:
    """The builder ``create_comms`` calls: a message about ``about`` in ``to``'s thread."""

    def build(thread: Thread, current: Incident | None) -> tuple[Draft, Thread]:
        state = current or incident
        now_ms = ms_of(now)
        context: dict[str, Any] = {
            "incident": {
                **state.content(),
                "id": state.id,
                "opened_ms": state.opened_ms,
                "resolved_ms": state.resolved_ms,
            },
            "changes": [],
            "since_ms": thread.last_ms,
            "timezone": config.timezone_of(to),
            "about": dict(about),
        }
        draft = Draft(
            recipient=to.recipient,
            channel=to.channel,
            created_ms=now_ms,
            promised_ms=now_ms,
            context=context,
        )
        return draft, thread

    return build


class Closing:
    """Feedback alerts, digests and follow-ups, over the engine's ports."""

    def __init__(self, store: Store, timers: TimerStore, config: Callable[[], Config], sends: Sends) -> None:
        self.store = store
        self.timers = timers
        self.config = config
        self.sends = sends

    def compose(
        self,
        incident: Incident,
        to: Stakeholder,
        kind: Kind,
        trigger: str,
        about: Mapping[str, Any],
        now: datetime,
    ) -> str | None:
        """Create (once per trigger) a ``kind`` message to ``to`` and hand it over to send."""
        build = draft_for(self.config(), incident, to, about, now)
        [(comm_id, created)] = self.store.create_comms(
            incident.id, [CommRequest(to.id, kind, trigger, build)]
        )
        if not comm_id:
            return None
        if created:
            self.sends.deliver(comm_id)
        return comm_id

    # -- events ---------------------------------------------------------------------------

    def after_event(self, record: EventRecord, now: datetime) -> list[str]:
        """A resolution arms the owner's digest ``feedback_digest_after`` after it."""
        incident = record.incident
        if record.action != Action.RESOLVE or incident is None:
            return []
        config = self.config()
        owner = owner_of(config, incident.services)
        resolved_ms = incident.resolved_ms or ms_of(now)
        member = str(TimerMember(TimerKind.FEEDBACK_DIGEST, incident.id, owner.id))
        self.timers.arm(member, resolved_ms + config.feedback_digest_after * 1000)
        return []

    # -- timers ---------------------------------------------------------------------------

    def fire(self, timer: TimerMember, due_ms: int, now: datetime) -> str | None:
        """A feedback alert or digest timer came due."""
        incident = self.store.incident(timer.incident_id)
        if incident is None:
            return None
        if timer.kind == TimerKind.FEEDBACK_ALERT:
            return self._alert(incident, timer.stakeholder_id, now)
        if timer.kind == TimerKind.FEEDBACK_DIGEST:
            return None if incident.is_open else self._digest(incident, due_ms, now)
        return None

    def _alert(self, incident: Incident, stakeholder_id: str, now: datetime) -> str | None:
        answer = self.store.feedback_for(incident.id).get(stakeholder_id)
        if answer is None or not needs_alert(answer.rating, answer.comment):
            return None
        config = self.config()
        about = {
            **_answer(config, stakeholder_id, answer),
            "review_url": review_page_url(config, incident.id),
        }
        owner = owner_of(config, incident.services)
        trigger = f"alert:{stakeholder_id}:{_answered_ms(answer)}"
        return self.compose(incident, owner, Kind.FEEDBACK_ALERT, trigger, about, now)

    def _digest(self, incident: Incident, due_ms: int, now: datetime) -> str | None:
        config = self.config()
        answers = sorted(self.store.feedback_for(incident.id).items())
        rows = [_answer(config, sid, answer) for sid, answer in answers]
        ratings = [r["rating"] for r in rows if r["rating"] is not None]
        about = {
            "answers": rows,
            "rated": len(ratings),
            "average": f"{sum(ratings) / len(ratings):.1f}" if ratings else "",
            "told": len(incident.stakeholders),
            "review_url": review_page_url(config, incident.id),
        }
        owner = owner_of(config, incident.services)
        return self.compose(incident, owner, Kind.FEEDBACK_DIGEST, f"digest:{due_ms}", about, now)

    # -- follow-ups -----------------------------------------------------------------------

    def follow_up(self, incident_id: str, stakeholder_id: str, text: str, now: datetime) -> str:
        """Send ``text`` to the stakeholder in the incident's thread, quoting their comment;
        returns the communication's id. The same text again is the same message."""
        try:
            said = clean_comment(text)
        except FeedbackError as e:
            raise FollowUpError(f"text: {e}") from None
        incident = self.store.incident(incident_id)
        if incident is None:
            raise FollowUpError(f"incident_id: no incident {incident_id!r}")
        stakeholder = self.config().stakeholder(stakeholder_id)
        if stakeholder is None or stakeholder_id not in incident.stakeholders:
            raise FollowUpError(f"stakeholder_id: {stakeholder_id!r} was not told of {incident_id}")
        answer = self.store.feedback_for(incident_id).get(stakeholder_id)
        about = {
            "comment": answer.comment if answer else "",
            "rating": answer.rating if answer else None,
            "text": said,
        }
        trigger = "follow_up:" + hashlib.sha256(said.encode()).hexdigest()[:16]
        comm_id = self.compose(incident, stakeholder, Kind.FOLLOW_UP, trigger, about, now)
        assert comm_id, "a follow-up always has something to say"
        return comm_id
