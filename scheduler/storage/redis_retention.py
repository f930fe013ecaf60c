"""Retention in Redis: resolved incidents older than the configured age go, with everything of theirs."""

from __future__ import annotations

import json
from typing import Any, cast

import redis

from scheduler.core.model import Incident, TimerKind, TimerMember, text_of
from scheduler.core.ports import Removed
from scheduler.storage import keys
from scheduler.storage.connection import watched_transaction

__all__ = ["RedisRetention"]

_BATCH = 100
"""Incidents looked at per shard and pass."""


class RedisRetention:
    """Removal of old resolved incidents (part of :class:`~scheduler.storage.redis_store.RedisStore`)."""

    client: redis.Redis

    def remove_resolved_before(self, before_ms: int, now_ms: int) -> Removed:
        """Remove incidents resolved before ``before_ms``: the incident, its events, threads,
        communications and feedback, and their entries in every index. An incident reopened
        meanwhile is kept. Up to ``_BATCH`` incidents per shard per call."""
        incidents = comms = 0
        for shard in range(keys.SHARDS):
            for raw in self.client.zrangebyscore(keys.resolved(shard), "-inf", f"({before_ms}", 0, _BATCH):
                removed = self._remove(text_of(raw), before_ms)
                if removed is not None:
                    incidents, comms = incidents + 1, comms + removed
        if incidents:
            pipe = self.client.pipeline(transaction=False)
            pipe.hincrby(keys.RETENTION, "incidents", incidents)
            pipe.hincrby(keys.RETENTION, "communications", comms)
            pipe.hset(keys.RETENTION, mapping={"last_ms": now_ms, "before_ms": before_ms})
            pipe.execute()
        return Removed(incidents, comms)

    def removed(self) -> Removed:
        """What retention has removed so far, and when it last removed something."""
        raw = {text_of(k): int(v) for k, v in self.client.hgetall(keys.RETENTION).items()}
        return Removed(
            raw.get("incidents", 0), raw.get("communications", 0), raw.get("last_ms"), raw.get("before_ms")
        )

    def _remove(self, incident_id: str, before_ms: int) -> int | None:
        """Remove one incident in one transaction; how many communications went, or None
        when it is kept (reopened, or resolved later than ``before_ms``)."""
        shard = keys.shard_of(incident_id)
        incident_key = keys.incident(incident_id)

        def transaction(pipe: Any) -> int | None:
            raw = pipe.get(incident_key)
            incident = Incident.from_json(json.loads(raw)) if raw else None
            if incident is not None and (incident.is_open or (incident.resolved_ms or 0) >= before_ms):
                return None
            comm_ids = [text_of(c) for c in pipe.zrange(keys.incident_comms(incident_id), 0, -1)]
            statuses = [pipe.hmget(keys.comm(c), "kind", "status") for c in comm_ids]
            event_ids = [text_of(e) for e in pipe.smembers(keys.incident_events(incident_id))]
            references = [text_of(t) for t in pipe.smembers(keys.text_references(incident_id))]
            stakeholders = set(incident.stakeholders if incident else [])
            stakeholders |= {c.split(":")[1] for c in comm_ids}
            pipe.multi()
            pipe.delete(incident_key, keys.incident_comms(incident_id), keys.incident_events(incident_id))
            pipe.delete(keys.feedback(incident_id), keys.text_references(incident_id))
            for comm_id in comm_ids:
                pipe.delete(keys.comm(comm_id), keys.comm_context(comm_id), keys.comm_message(comm_id))
            for token in references:
                pipe.delete(keys.text_reference(incident_id, token))
            for event_id in event_ids:
                pipe.delete(keys.event(incident_id, event_id))
            for stakeholder_id in stakeholders:
                pipe.delete(
                    keys.thread(incident_id, stakeholder_id), keys.trigger(incident_id, stakeholder_id)
                )
                members = [str(TimerMember(k, incident_id, stakeholder_id)) for k in TimerKind]
                pipe.zrem(keys.timers(shard), *members)
            if comm_ids:
                pipe.zrem(keys.log(shard), *comm_ids)
                pipe.zrem(keys.inflight(shard), *comm_ids)
            for kind, status in statuses:
                if kind and status:
                    pipe.hincrby(keys.counters(shard), f"n:{text_of(kind)}:{text_of(status)}", -1)
            pipe.zrem(keys.incidents(shard), incident_id)
            pipe.zrem(keys.resolved(shard), incident_id)
            return len(comm_ids)

        result = watched_transaction(
            self.client,
            transaction,
            incident_key,
            keys.incident_comms(incident_id),
            value_from_callable=True,
        )
        return cast("int | None", result)
