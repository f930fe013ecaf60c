"""Every Redis key amends uses, in one place, all under one prefix.

An incident's keys carry the hash tag of its shard (``amends:{07}:…``), so that every
multi-key step of one incident (a Lua script, a WATCH transaction) stays in one slot of a
Redis Cluster. The indexes that would otherwise take every write (the log, the unfinished
sends, the incidents, the timers) are kept per shard, in the same slot as the incidents
they index; readers merge the shards. ``SHARDS`` is fixed: data written with one count is
not found with another.

| key | type | holds |
|---|---|---|
| ``amends:{NN}:event:{incident_id}:{event_id}`` | string | JSON of an accepted event's record (idempotency) |
| ``amends:{NN}:incident:{incident_id}`` | string | JSON of the incident's current state |
| ``amends:{NN}:incidents`` | zset | the shard's incident ids scored by opening time (ms) |
| ``amends:{NN}:thread:{incident_id}:{stakeholder_id}`` | hash | one stakeholder's thread: seq, last message, promise |
| ``amends:{NN}:trigger:{incident_id}:{stakeholder_id}`` | hash | trigger token -> communication id (idempotent creation) |
| ``amends:{NN}:comm:{comm_id}`` | hash | one communication's short fields: status, times, ids |
| ``amends:{NN}:ctx:{comm_id}`` | string | its template context, compressed against a reference (:mod:`~scheduler.storage.texts`), when too long for the hash's ``ctx_z`` |
| ``amends:{NN}:msg:{comm_id}`` | string | its subject, Message-ID, server reply and message as sent, compressed likewise |
| ``amends:{NN}:ref:{incident_id}:{token}`` | string | a text the incident's communications are compressed against (never changed) |
| ``amends:{NN}:refs:{incident_id}`` | set | the tokens of the incident's references (removed with it) |
| ``amends:{NN}:log`` | zset | the shard's communication ids scored by creation time (ms) |
| ``amends:{NN}:inflight`` | zset | the shard's unfinished communication ids scored by when to look at them again (ms) |
| ``amends:{NN}:events:{incident_id}`` | set | the ids of the incident's applied events (removed with it) |
| ``amends:{NN}:resolved`` | zset | the shard's resolved incidents scored by resolution time (ms), for retention |
| ``amends:{NN}:comms:{incident_id}`` | zset | the incident's communication ids scored by creation time (ms) |
| ``amends:{NN}:counters`` | hash | the shard's figures kept as things happen: ``created:{kind}``, ``n:{kind}:{status}``, ``late:le:{ms}``, ``late:count``, ``late:sum_ms`` |
| ``amends:{NN}:feedback:{incident_id}`` | hash | stakeholder id -> JSON of its feedback: rating, comment, when given |
| ``amends:{NN}:timers`` | zset | the shard's armed timers scored by due time (epoch ms) |
| ``amends:{NN}:timers:leased`` | zset | claimed timers scored by lease expiry (epoch ms) |
| ``amends:{NN}:timers:due`` | hash | claimed timer -> the due time it was claimed at (ms) |
| ``amends:{NN}:timers:claims`` | hash | claimed timer -> the token of the claim that holds it |
| ``amends:timers:wake`` | list | a nudge for sleeping schedulers when an earlier timer is armed |
| ``amends:retention`` | hash | what retention removed so far: incidents, communications, the last pass |
| ``amends:rejected`` | list | JSON records of rejected events, newest first |
| ``amends:waiting`` | hash | event id -> JSON of an event held for its incident's ``opened`` (:mod:`scheduler.service.waiting`) |
| ``amends:heartbeats`` | hash | process name -> JSON of its role and last heartbeat (ms) |
| ``amends:session:{session_id}`` | string | a review page sign-in: JSON of its role and which token it was made with; expires |
| ``amends:pagerduty:delivery:{event_id}`` | string | a PagerDuty delivery already taken (replays are refused); expires after retention |
| ``amends:{bounces}:marks`` | hash | undeliverable address (case folded) -> JSON of why, what marked it, since when (ms) |
| ``amends:{bounces}:since`` | zset | the same addresses scored by when they were marked (ms), for newest-first pages |
| ``amends:rate:{bucket}`` | string | a send rate's next free slot (epoch ms, :mod:`scheduler.core.rate`): ``smtp``, ``slack:HOST``, ``teams:HOST``, ``webhook:HOST``; expires when idle |
| ``amends:{ratings}:at`` | zset | ``incident|stakeholder`` of each rating, scored by when it was last given (ms) |
| ``amends:{ratings}:given`` | hash | ``incident|stakeholder`` -> ``audience|rating`` as last given |
| ``amends:{ratings}:counts`` | hash | ``audience|rating`` -> ratings given so far (a counter for ``/metrics``) |
| ``amends:unsubscribed`` | hash | ``stakeholder`` (all mail) or ``stakeholder:incident`` -> when it opted out (ISO 8601, UTC) |

``NN`` is the incident's shard, two digits: :func:`shard_of`.
"""

from __future__ import annotations

import zlib

PREFIX = "amends"

SHARDS = 16
"""How many slots of a Redis Cluster the incidents and the indexes spread over."""

REJECTED = f"{PREFIX}:rejected"
WAITING = f"{PREFIX}:waiting"
RETENTION = f"{PREFIX}:retention"
TIMERS_WAKE = f"{PREFIX}:timers:wake"
UNSUBSCRIBED = f"{PREFIX}:unsubscribed"
HEARTBEATS = f"{PREFIX}:heartbeats"
BOUNCES = f"{PREFIX}:{{bounces}}:marks"
BOUNCES_SINCE = f"{PREFIX}:{{bounces}}:since"
RATINGS_AT = f"{PREFIX}:{{ratings}}:at"
RATINGS_GIVEN = f"{PREFIX}:{{ratings}}:given"
RATINGS_COUNTS = f"{PREFIX}:{{ratings}}:counts"

LATENESS_BUCKETS_MS = (500, 1_000, 2_000, 5_000, 10_000, 30_000, 60_000, 300_000)
"""Upper bounds of the lateness histogram kept in ``counters`` (``lua/finish_send.lua`` has them too)."""

REJECTED_KEEP = 10_000
"""How many rejected events are kept for review."""


def shard_of(incident_id: str) -> int:
    """The incident's shard: the same in every process and on every machine."""
    return zlib.crc32(incident_id.encode()) % SHARDS


def incident_of_comm(comm_id: str) -> str:
    """The incident a communication belongs to: what its id starts with (``INC-1:acme:update:3``)."""
    return comm_id.split(":", 1)[0]


def shard_of_comm(comm_id: str) -> int:
    """A communication's shard: its incident's."""
    return shard_of(incident_of_comm(comm_id))


def shard_of_timer(member: str) -> int:
    """A timer's shard: its incident's (``u|INC-1|acme``), or the member's own for other shapes."""
    parts = member.split("|")
    return shard_of(parts[1] if len(parts) == 3 else member)


def _tag(shard: int) -> str:
    return f"{PREFIX}:{{{shard:02d}}}"


def incidents(shard: int) -> str:
    return f"{_tag(shard)}:incidents"


def log(shard: int) -> str:
    return f"{_tag(shard)}:log"


def inflight(shard: int) -> str:
    return f"{_tag(shard)}:inflight"


def timers(shard: int) -> str:
    return f"{_tag(shard)}:timers"


def timers_leased(shard: int) -> str:
    return f"{_tag(shard)}:timers:leased"


def timers_due(shard: int) -> str:
    return f"{_tag(shard)}:timers:due"


def timers_claims(shard: int) -> str:
    return f"{_tag(shard)}:timers:claims"


def event(incident_id: str, event_id: str) -> str:
    return f"{_tag(shard_of(incident_id))}:event:{incident_id}:{event_id}"


def incident(incident_id: str) -> str:
    return f"{_tag(shard_of(incident_id))}:incident:{incident_id}"


def thread(incident_id: str, stakeholder_id: str) -> str:
    return f"{_tag(shard_of(incident_id))}:thread:{incident_id}:{stakeholder_id}"


def trigger(incident_id: str, stakeholder_id: str) -> str:
    return f"{_tag(shard_of(incident_id))}:trigger:{incident_id}:{stakeholder_id}"


def comm_prefix(shard: int) -> str:
    """What a communication's id is appended to, for a Lua step that reads a neighbour by id."""
    return f"{_tag(shard)}:comm:"


def comm(comm_id: str) -> str:
    return comm_prefix(shard_of_comm(comm_id)) + comm_id


def comm_context(comm_id: str) -> str:
    """The template context of a communication (see :mod:`scheduler.storage.texts`)."""
    return f"{_tag(shard_of_comm(comm_id))}:ctx:{comm_id}"


def comm_message(comm_id: str) -> str:
    """The subject, Message-ID, server reply and message as sent (see :mod:`scheduler.storage.texts`)."""
    return f"{_tag(shard_of_comm(comm_id))}:msg:{comm_id}"


def text_reference(incident_id: str, token: str) -> str:
    """A text the incident's communications are compressed against; never changed."""
    return f"{_tag(shard_of(incident_id))}:ref:{incident_id}:{token}"


def text_references(incident_id: str) -> str:
    """The tokens of the incident's text references, for retention."""
    return f"{_tag(shard_of(incident_id))}:refs:{incident_id}"


def feedback(incident_id: str) -> str:
    return f"{_tag(shard_of(incident_id))}:feedback:{incident_id}"


def incident_comms(incident_id: str) -> str:
    return f"{_tag(shard_of(incident_id))}:comms:{incident_id}"


def counters(shard: int) -> str:
    return f"{_tag(shard)}:counters"


def incident_events(incident_id: str) -> str:
    return f"{_tag(shard_of(incident_id))}:events:{incident_id}"


def resolved(shard: int) -> str:
    return f"{_tag(shard)}:resolved"


def session(session_id: str) -> str:
    """A review page sign-in (:mod:`scheduler.web.sessions`); it expires."""
    return f"{PREFIX}:session:{session_id}"


def pagerduty_delivery(event_id: str) -> str:
    """A PagerDuty webhook delivery already taken, kept for the retention window."""
    return f"{PREFIX}:pagerduty:delivery:{event_id}"


def rate(bucket: str) -> str:
    """A send rate shared by every worker: ``smtp`` or ``CHANNEL:HOST``."""
    return f"{PREFIX}:rate:{bucket}"
