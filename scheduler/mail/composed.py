"""What a message that was not sent says: rendered again from what its communication stored.

A sent message is kept byte for byte as sent; one that failed, was cancelled or is still
waiting has no such copy. ``amends log show`` and the review page show it rendered from
the stored content instead, headed by why it was not sent.
"""

from __future__ import annotations

from pathlib import Path

from scheduler.core.config import Config
from scheduler.core.model import Communication
from scheduler.errors import AmendsError
from scheduler.mail.messages import compose_email
from scheduler.mail.render import TemplateSet

__all__ = ["composed_text"]

_STATES = {
    "failed": "it was not sent and will not be",
    "cancelled": "it was cancelled and will not be sent",
    "suppressed": "it was not sent: its address is undeliverable",
}


def composed_text(comm: Communication, config: Config | None, templates_dir: Path, secret_key: str) -> str:
    """A note on why ``comm`` was not sent, then the message it carries, headers included.

    The message is rendered again from the communication's stored content with today's
    templates; its Date is when it was last tried (or composed).
    """
    state = _STATES.get(comm.status, "nothing has been sent yet")
    note = f"{comm.id} is {comm.status}: {state}. Last error: {comm.last_error or '-'}\n"
    stakeholder = config.stakeholder(comm.stakeholder_id) if config else None
    if config is None or stakeholder is None:
        return note + "It cannot be shown: its stakeholder is no longer configured.\n"
    try:
        email, _ = compose_email(
            comm,
            stakeholder,
            config,
            TemplateSet(templates_dir),
            comm.first_attempt_at or comm.created_at,
            secret_key,
        )
    except AmendsError as e:
        return note + f"It cannot be shown: {e}\n"
    return note + "What was composed (rendered again from what it stored):\n\n" + email.as_string()
