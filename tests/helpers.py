"""Small things the tests share: the test day's clock times, a communication draft for store
contracts, an incident as the store keeps it, and the review page's sign-in."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import redis

from scheduler.core.model import Draft, Incident, Thread
from scheduler.core.ports import Builder
from scheduler.storage import keys

__all__ = ["at", "draft_builder", "sign_in", "stored_incident"]


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


def stored_incident(client: redis.Redis, incident_id: str, stakeholders: list[str], title: str = "") -> None:
    """Keep an open incident told to ``stakeholders``, as a worker would have (links name known ones)."""
    incident = Incident(id=incident_id, title=title, stakeholders=stakeholders)
    client.set(keys.incident(incident_id), json.dumps(incident.to_json()))


def sign_in(client: Any, token: str) -> Any:
    """Sign ``client`` (a TestClient) in as a browser does: open the form, post it with its CSRF value."""
    form = client.get("/")
    found = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert found, "the sign-in form carries no CSRF value"
    return client.post("/signin", data={"token": token, "csrf": found.group(1)}, follow_redirects=False)
