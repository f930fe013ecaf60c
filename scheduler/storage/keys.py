"""Every Redis key amends uses, in one place, all under one prefix.

| key | type | holds |
|---|---|---|
| ``amends:event:{event_id}`` | string | JSON of an accepted event's record (idempotency) |
| ``amends:incident:{incident_id}`` | string | JSON of the incident's current state |
| ``amends:incidents`` | zset | incident ids scored by opening time (ms) |
| ``amends:thread:{incident_id}:{stakeholder_id}`` | hash | one stakeholder's thread: seq, last message, promise |
| ``amends:trigger:{incident_id}:{stakeholder_id}`` | hash | trigger token -> communication id (idempotent creation) |
| ``amends:comm:{comm_id}`` | hash | one communication: status, times, rendered message |
| ``amends:log`` | zset | communication ids scored by creation time (ms) |
| ``amends:rejected`` | list | JSON records of rejected events, newest first |
| ``amends:timers`` | zset | armed timers scored by due time (epoch ms) |
| ``amends:timers:leased`` | zset | claimed timers scored by lease expiry (epoch ms) |
| ``amends:timers:due`` | hash | claimed timer -> the due time it was claimed at (ms) |
| ``amends:timers:wake`` | list | a nudge for sleeping schedulers when an earlier timer is armed |
| ``amends:feedback:{incident_id}`` | hash | stakeholder id -> JSON of its feedback: rating, comment, when given |
| ``amends:inflight`` | zset | unfinished communication ids scored by when to look at them again (ms) |
| ``amends:heartbeats`` | hash | process name -> JSON of its role and last heartbeat (ms) |
| ``amends:unsubscribed`` | hash | ``stakeholder`` (all mail) or ``stakeholder:incident`` -> when it opted out (ISO 8601, UTC) |
"""

from __future__ import annotations

PREFIX = "amends"

INCIDENTS = f"{PREFIX}:incidents"
LOG = f"{PREFIX}:log"
REJECTED = f"{PREFIX}:rejected"
TIMERS = f"{PREFIX}:timers"
TIMERS_LEASED = f"{PREFIX}:timers:leased"
TIMERS_DUE = f"{PREFIX}:timers:due"
TIMERS_WAKE = f"{PREFIX}:timers:wake"
UNSUBSCRIBED = f"{PREFIX}:unsubscribed"
INFLIGHT = f"{PREFIX}:inflight"
HEARTBEATS = f"{PREFIX}:heartbeats"

REJECTED_KEEP = 10_000
"""How many rejected events are kept for review."""


def event(event_id: str) -> str:
    return f"{PREFIX}:event:{event_id}"


def incident(incident_id: str) -> str:
    return f"{PREFIX}:incident:{incident_id}"


def thread(incident_id: str, stakeholder_id: str) -> str:
    return f"{PREFIX}:thread:{incident_id}:{stakeholder_id}"


def trigger(incident_id: str, stakeholder_id: str) -> str:
    return f"{PREFIX}:trigger:{incident_id}:{stakeholder_id}"


def comm(comm_id: str) -> str:
    return f"{PREFIX}:comm:{comm_id}"


def feedback(incident_id: str) -> str:
    return f"{PREFIX}:feedback:{incident_id}"
