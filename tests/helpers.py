"""Small things the tests share: the test day's clock times and a communication draft for store contracts."""

from __future__ import annotations

from datetime import UTC, datetime

from scheduler.core.model import Draft, Incident, Thread
from scheduler.storage.port import Builder

__all__ = ["at", "draft_builder"]


def at(hour: int, minute: int, second: int = 0) -> datetime:
    """A moment of the day the tests' incidents happen on (2026-11-26, UTC)."""
    return datetime(2026, 11, 26, hour, minute, second, tzinfo=UTC)


def draft_builder(
    created_ms: int = 1000, *, no_news: bool = False, recipient: str = "a@acme.example"
) -> Builder:
    """A builder that composes a plain draft created (and promised) at ``created_ms``."""

    def build(thread: Thread, incident: Incident | None) -> tuple[Draft, Thread]:
        thread.last_ms = created_ms
        draft = Draft(recipient, "email", created_ms, created_ms, context={}, no_news=no_news)
        return draft, thread

    return build
