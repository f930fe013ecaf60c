"""The review page's sign-ins: a random id in Redis that expires, ended by signing out.

A session records its :class:`Role` and which token made it (as a keyed fingerprint,
never the token), so that rotating ``AMENDS_API_TOKEN`` or ``AMENDS_READ_TOKEN`` ends
every session made with the old one. The cookie carries only the random id.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from enum import StrEnum

import redis

from scheduler.mail.signing import sign
from scheduler.storage import keys

__all__ = ["SESSION_TTL_S", "Role", "Session", "end", "find", "fingerprint", "start"]

SESSION_TTL_S = 12 * 3600
"""How long a sign-in lasts: a working day; then the page asks for the token again."""
_ID_BYTES = 32


class Role(StrEnum):
    """What a credential may do: ``read`` (the read token) or ``write`` (the API token)."""

    READ = "read"
    WRITE = "write"


@dataclass(frozen=True)
class Session:
    """A signed-in browser: its role, and the fingerprint of the token it signed in with."""

    role: Role
    fingerprint: str


def fingerprint(secret_key: str, token: str) -> str:
    """Which token a session was made with, without keeping the token."""
    return sign(secret_key, "review-session-token", token)


def start(client: redis.Redis, session: Session, ttl_s: int = SESSION_TTL_S) -> str:
    """A new session's id (random, 256 bits), kept for ``ttl_s`` seconds."""
    session_id = secrets.token_urlsafe(_ID_BYTES)
    record = json.dumps({"role": str(session.role), "fingerprint": session.fingerprint})
    client.set(keys.session(session_id), record, ex=ttl_s)
    return session_id


def find(client: redis.Redis, session_id: str) -> Session | None:
    """The session with this id, or None when there is none (expired, ended, or made up)."""
    if not session_id or len(session_id) > 2 * _ID_BYTES or not session_id.isascii():
        return None
    raw = client.get(keys.session(session_id))
    if raw is None:
        return None
    try:
        record = json.loads(raw)
        return Session(Role(record["role"]), str(record["fingerprint"]))
    except (ValueError, KeyError, TypeError):  # not a record this module wrote
        return None


def end(client: redis.Redis, session_id: str) -> None:
    """Forget the session: its cookie opens nothing any more."""
    if session_id and len(session_id) <= 2 * _ID_BYTES and session_id.isascii():
        client.delete(keys.session(session_id))
