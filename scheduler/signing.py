"""HMAC-signed links: a feedback link works for one stakeholder of one incident only."""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import quote, urlencode

__all__ = ["feedback_links", "feedback_page_link", "sign", "unsubscribe_link", "verify"]


def sign(secret_key: str, *parts: str) -> str:
    message = "\x1f".join(parts).encode()
    return hmac.new(secret_key.encode(), message, hashlib.sha256).hexdigest()[:32]


def verify(secret_key: str, signature: str, *parts: str) -> bool:
    """Whether ``signature`` signs ``parts``; any text (even non-ASCII) is safe to pass."""
    return hmac.compare_digest(sign(secret_key, *parts).encode(), signature.encode("utf-8", "replace"))


def _feedback_base(base_url: str, incident_id: str, stakeholder_id: str) -> str:
    return f"{base_url.rstrip('/')}/feedback/{quote(incident_id, safe='')}/{quote(stakeholder_id, safe='')}"


def feedback_links(base_url: str, secret_key: str, incident_id: str, stakeholder_id: str) -> dict[int, str]:
    """One link per rating 1-5, each signed over (incident, stakeholder, rating): an altered
    incident, stakeholder or rating no longer verifies."""
    base = _feedback_base(base_url, incident_id, stakeholder_id)
    return {
        rating: f"{base}?{urlencode({'rating': rating, 'sig': sign(secret_key, 'feedback', incident_id, stakeholder_id, str(rating))})}"
        for rating in range(1, 6)
    }


def feedback_page_link(base_url: str, secret_key: str, incident_id: str, stakeholder_id: str) -> str:
    """The feedback page without a rating chosen (rating and comment on the page)."""
    signature = sign(secret_key, "feedback-page", incident_id, stakeholder_id)
    return f"{_feedback_base(base_url, incident_id, stakeholder_id)}?{urlencode({'sig': signature})}"


def unsubscribe_link(
    base_url: str, secret_key: str, stakeholder_id: str, incident_id: str | None = None
) -> str:
    """The stakeholder's unsubscribe page; with ``incident_id`` it also offers to stop only
    that incident's mail. Signed over the stakeholder (and the incident, when given)."""
    parts = (stakeholder_id, incident_id) if incident_id else (stakeholder_id,)
    query = {"incident": incident_id} if incident_id else {}
    query["sig"] = sign(secret_key, "unsubscribe", *parts)
    return f"{base_url.rstrip('/')}/unsubscribe/{quote(stakeholder_id, safe='')}?{urlencode(query)}"
