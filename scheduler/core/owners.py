"""Who owns an incident: the person feedback, digests and review reminders go to.

``owners.<service>`` in the configuration for the first of the incident's services that
has one, else ``contact``, else the sender itself. An owner is addressed like a
stakeholder (``owner.payments``, or ``owner`` for the contact), in a thread of its own
per incident, with the audience ``owner``: its templates are the ``default`` set's.
"""

from __future__ import annotations

from scheduler.core.config import Config, Stakeholder
from scheduler.core.model import Kind

__all__ = ["OWNER_AUDIENCE", "OWNER_ID", "OWNER_KINDS", "owner_by_id", "owner_of"]

OWNER_ID = "owner"
OWNER_AUDIENCE = "owner"
OWNER_KINDS = (Kind.FEEDBACK_ALERT, Kind.FEEDBACK_DIGEST, Kind.REVIEW_REMINDER)
"""The kinds only an owner receives; their templates are the ``default`` set's."""


def owner_of(config: Config, services: list[str]) -> Stakeholder:
    """The owner of an incident touching ``services``."""
    for service in services:
        if service in config.owners:
            found = owner_by_id(config, f"{OWNER_ID}.{service}")
            assert found is not None
            return found
    owner = owner_by_id(config, OWNER_ID)
    assert owner is not None
    return owner


def owner_by_id(config: Config, owner_id: str) -> Stakeholder | None:
    """``owner.payments`` (``owners.payments``) or ``owner`` (``contact``, else the sender)."""
    if owner_id == OWNER_ID:
        contact = config.contact
        name = contact.name if contact else (config.sender.split("<")[0].strip() or config.sender_address)
        email = contact.email if contact else config.sender_address
    else:
        head, _, service = owner_id.partition(".")
        found = config.owners.get(service) if head == OWNER_ID else None
        if found is None:
            return None
        name, email = found.name, found.email
    return Stakeholder(id=owner_id, name=name, email=email, audience=OWNER_AUDIENCE)
