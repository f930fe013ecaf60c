"""What follows a reader's answer on the feedback page: the rating is counted for its
audience, and a low rating or any comment reaches the incident's owner within a minute.

The owner's ``feedback_alert`` is composed by a worker when the alert timer (armed here,
due at once) is claimed by the scheduler, so the page answers without waiting on mail.
"""

from __future__ import annotations

from scheduler.core.closing import alert_member, needs_alert
from scheduler.core.model import ms_of
from scheduler.storage.ratings import RatingsLog
from scheduler.web.deps import Web

__all__ = ["feedback_given"]


def feedback_given(web: Web, incident_id: str, stakeholder_id: str, rating: int | None, comment: str) -> None:
    """Count ``rating`` (if any) and arm the owner's alert when the answer calls for one."""
    now = web.clock()
    if rating is not None:
        config = web.config()
        stakeholder = config.stakeholder(stakeholder_id) if config else None
        audience = stakeholder.audience if stakeholder else "default"
        RatingsLog(web.client).record(incident_id, stakeholder_id, audience, rating, now)
    if needs_alert(rating, comment):
        web.timers.arm(alert_member(incident_id, stakeholder_id), ms_of(now))
