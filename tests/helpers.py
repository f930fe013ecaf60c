"""Small builders the tests share: a communication draft for store contract tests."""

from __future__ import annotations

from scheduler.core.model import Draft, Incident, Thread
from scheduler.storage.port import Builder

__all__ = ["draft_builder"]


def draft_builder(
    created_ms: int = 1000, *, no_news: bool = False, recipient: str = "a@acme.example"
) -> Builder:
    """A builder that composes a plain draft created (and promised) at ``created_ms``."""

    def build(thread: Thread, incident: Incident | None) -> tuple[Draft, Thread]:
        thread.last_ms = created_ms
        draft = Draft(recipient, "email", created_ms, created_ms, context={}, no_news=no_news)
        return draft, thread

    return build
