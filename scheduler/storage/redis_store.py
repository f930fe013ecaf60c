"""The state amends keeps in Redis: accepted events, incidents, threads, communications.

Every write that must happen once is atomic: an event is applied under WATCH of its own
idempotency key and of the incident; a communication is created under WATCH of its
thread, keyed by the trigger that caused it; a send moves ``scheduled -> sending ->
sent|failed|retrying`` by compare-and-set in Lua.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import redis

from scheduler.core.model import (
    Communication,
    EventRecord,
    Incident,
    Kind,
    Status,
    Thread,
    iso_z,
    text_of,
    utc_of,
)
from scheduler.core.ports import (
    DISPATCH_GRACE_MS,
    SKIPPED,
    WAIT_RECHECK_MS,
    AttemptEnd,
    Builder,
    Claim,
    CommRequest,
    Finished,
    check_finish,
    new_comm,
)
from scheduler.errors import AmendsError
from scheduler.storage import keys
from scheduler.storage.connection import execute_scripts, watched_transaction
from scheduler.storage.redis_answers import RedisAnswers
from scheduler.storage.redis_reading import RedisReading, with_texts
from scheduler.storage.redis_retention import RedisRetention
from scheduler.storage.texts import INLINE_CONTEXT, INLINE_MAX, MESSAGE_FIELDS, Texts, context_blob

__all__ = ["RedisStore"]

_LUA = Path(__file__).parent / "lua"

CREATE_BATCH = 50
"""Threads whose communications :meth:`RedisStore.create_comms` creates in one transaction."""


def _taken(answer: list[Any]) -> dict[Any, Any] | None:
    """The communication's fields ``lua/begin_send.lua`` answers "ok" with; None for another answer."""
    return dict(zip(answer[4::2], answer[5::2], strict=True)) if text_of(answer[0]) == "ok" else None


def _claim(answer: list[Any], taken: dict[Any, Any] | None, context: bytes | None) -> Claim:
    """What ``lua/begin_send.lua`` answered, as a claim (``taken``: see :func:`_taken`)."""
    if taken is None:
        return Claim(text_of(answer[0]), text_of(answer[1]) if len(answer) > 1 else None)
    comm = Communication.from_hash(with_texts(taken, context, None, whole=False))
    return Claim("ok", None, comm, text_of(answer[1]), utc_of(answer[2]))


class RedisStore(RedisReading, RedisAnswers, RedisRetention):
    """Redis persistence for events, incidents, threads and the communications log; reading
    the log and its figures comes from :class:`RedisReading`, what stakeholders answer from
    :class:`RedisAnswers`, the removal of old resolved incidents from :class:`RedisRetention`."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.texts = Texts(client)
        self._begin_send = client.register_script((_LUA / "begin_send.lua").read_text())
        self._finish_send = client.register_script((_LUA / "finish_send.lua").read_text())
        self._sweep = client.register_script((_LUA / "sweep.lua").read_text())

    # -- events ------------------------------------------------------------------------

    def apply_event(
        self, event_id: str, incident_id: str, apply: Callable[[Incident | None], EventRecord]
    ) -> EventRecord:
        """Apply an event to its incident exactly once; return the event's record.

        ``apply(current_incident_or_None)`` returns the event's record with the incident
        after it; it runs again if another writer changed the incident meanwhile. When the
        event was already applied, its stored record is returned (``duplicate``) and
        ``apply`` is not called. A record that is ``waiting`` (the event cannot apply yet)
        is returned and not kept.
        """
        event_key, incident_key = keys.event(incident_id, event_id), keys.incident(incident_id)

        def transaction(pipe: Any) -> EventRecord:
            seen = pipe.get(event_key)
            if seen is not None:
                return replace(EventRecord.from_json(json.loads(seen)), duplicate=True)
            raw = pipe.get(incident_key)
            record = apply(Incident.from_json(json.loads(raw)) if raw else None)
            if record.waiting:  # nothing to keep: it is tried again later
                return record
            pipe.multi()
            pipe.set(event_key, json.dumps(record.to_json()))
            pipe.sadd(keys.incident_events(incident_id), event_id)
            if record.incident is not None:
                shard = keys.shard_of(incident_id)
                pipe.set(incident_key, json.dumps(record.incident.to_json()))
                pipe.zadd(keys.incidents(shard), {incident_id: record.incident.opened_ms}, nx=True)
                if record.incident.is_open:
                    pipe.zrem(keys.resolved(shard), incident_id)
                else:
                    resolved_ms = record.incident.resolved_ms or record.incident.updated_ms
                    pipe.zadd(keys.resolved(shard), {incident_id: resolved_ms})
            return record

        result = watched_transaction(
            self.client,
            transaction,
            event_key,
            incident_key,
            value_from_callable=True,
        )
        return cast(EventRecord, result)

    def mark_event_done(self, incident_id: str, event_id: str) -> None:
        key = keys.event(incident_id, event_id)
        raw = self.client.get(key)
        if raw is not None:
            record = json.loads(raw)
            record["done"] = True
            self.client.set(key, json.dumps(record))

    def reject(self, payload: Any, errors: list[tuple[str, str]], now: datetime, source: str) -> None:
        """Keep a rejected event with its reasons, for ``amends log --rejected``."""
        record = {
            "rejected_at": iso_z(now),
            "via": source,
            "errors": [{"field": place, "reason": reason} for place, reason in errors],
            "event": payload
            if isinstance(payload, dict | list | str | int | float | None)
            else repr(payload),
        }
        pipe = self.client.pipeline()
        pipe.lpush(keys.REJECTED, json.dumps(record, default=repr))
        pipe.ltrim(keys.REJECTED, 0, keys.REJECTED_KEEP - 1)
        pipe.execute()

    def rejected(self, limit: int = 100) -> list[dict[str, Any]]:
        return [json.loads(raw) for raw in self.client.lrange(keys.REJECTED, 0, limit - 1)]

    # -- incidents ---------------------------------------------------------------------

    def incident(self, incident_id: str) -> Incident | None:
        raw = self.client.get(keys.incident(incident_id))
        return Incident.from_json(json.loads(raw)) if raw else None

    def set_incident_stakeholders(self, incident_id: str, update: Callable[[list[str]], list[str]]) -> None:
        key = keys.incident(incident_id)

        def transaction(pipe: Any) -> None:
            state = json.loads(pipe.get(key))
            state["stakeholders"] = update(state.get("stakeholders", []))
            pipe.multi()
            pipe.set(key, json.dumps(state))

        watched_transaction(self.client, transaction, key)

    # -- threads (one per incident and stakeholder) ------------------------------------

    def thread(self, incident_id: str, stakeholder_id: str) -> Thread:
        return Thread.from_hash(self.client.hgetall(keys.thread(incident_id, stakeholder_id)))

    def set_feedback_due(self, incident_id: str, stakeholder_id: str, due_ms: int) -> None:
        self.client.hset(keys.thread(incident_id, stakeholder_id), "feedback_ms", due_ms)

    def clear_promises(
        self, incident_id: str, stakeholder_id: str, *, update: bool = False, feedback: bool = False
    ) -> None:
        names = [n for n, wanted in (("promised_ms", update), ("feedback_ms", feedback)) if wanted]
        if names:
            self.client.hdel(keys.thread(incident_id, stakeholder_id), *names)

    # -- communications ----------------------------------------------------------------

    def create_comm(
        self,
        incident_id: str,
        stakeholder_id: str,
        kind: Kind,
        trigger: str,
        build: Builder,
        first: tuple[Kind, str] | None = None,
    ) -> tuple[str, bool]:
        """Create the communication caused by ``trigger`` unless it exists; return (id, created).

        The id is "" when the builder found nothing to send (and is again for that trigger).

        ``build(thread, incident)`` returns the communication and the thread after it;
        the id is ``{incident}:{stakeholder}:{kind}:{n}``, ``n`` counting the thread's messages.
        ``first`` is the (kind, trigger) to use instead when the thread has no message yet
        (an update that arrives before the acknowledgment is the acknowledgment): decided
        in the same transaction, so that the update can never fold into an acknowledgment
        composed a moment earlier from older facts.
        """
        (made,) = self.create_comms(incident_id, [CommRequest(stakeholder_id, kind, trigger, build, first)])
        return made

    def create_comms(self, incident_id: str, requests: Sequence[CommRequest]) -> list[tuple[str, bool]]:
        """:meth:`create_comm` for each request, in order: one transaction per batch of up to
        ``CREATE_BATCH`` threads, watching their trigger and thread keys and the incident,
        its reads in one round trip (the keys of one incident share a slot)."""
        made: list[tuple[str, bool]] = []
        batch: list[CommRequest] = []
        for request in requests:
            # a thread twice in one batch would be read once for two messages: start another
            if len(batch) == CREATE_BATCH or any(r.stakeholder_id == request.stakeholder_id for r in batch):
                made += self._create_batch(incident_id, batch)
                batch = []
            batch.append(request)
        return made + (self._create_batch(incident_id, batch) if batch else [])

    def _create_batch(self, incident_id: str, requests: list[CommRequest]) -> list[tuple[str, bool]]:
        incident_key = keys.incident(incident_id)
        trigger_keys = [keys.trigger(incident_id, r.stakeholder_id) for r in requests]
        thread_keys = [keys.thread(incident_id, r.stakeholder_id) for r in requests]

        def transaction(pipe: Any) -> list[tuple[str, bool]]:
            # Read after WATCH (on another connection, all at once): a write by anyone in
            # between makes EXEC fail, and the whole batch is done again.
            reads = self.client.pipeline(transaction=False)
            reads.get(incident_key)
            for r, trigger_key, thread_key in zip(requests, trigger_keys, thread_keys, strict=True):
                reads.hmget(trigger_key, [r.trigger, r.first[1] if r.first else r.trigger])
                reads.hgetall(thread_key)
            raw_incident, *replies = reads.execute()
            incident = Incident.from_json(json.loads(raw_incident)) if raw_incident else None
            shard = keys.shard_of(incident_id)
            pipe.multi()
            made: list[tuple[str, bool]] = []
            for n, r in enumerate(requests):
                (existing, folded), raw_thread = replies[2 * n], replies[2 * n + 1]
                trigger_key, thread_key = trigger_keys[n], thread_keys[n]
                if existing is not None:
                    made.append((("" if text_of(existing) == SKIPPED else text_of(existing)), False))
                    continue
                thread = Thread.from_hash(raw_thread)
                use_kind, use_trigger = r.first if r.first and not thread.seq else (r.kind, r.trigger)
                if use_trigger != r.trigger and folded is not None:
                    pipe.hset(trigger_key, r.trigger, text_of(folded))
                    made.append((text_of(folded), False))
                    continue
                new = new_comm(
                    incident_id, r.stakeholder_id, use_kind, use_trigger, thread, r.build, incident
                )
                if new is None:
                    pipe.hset(trigger_key, r.trigger, SKIPPED)
                    made.append(("", False))
                    continue
                comm_id, record, after = new
                context = self.texts.pack(incident_id, "ctx", str(record.pop("context")).encode())
                stored: dict[str, str | int | bytes] = dict(record)
                pipe.hset(trigger_key, mapping={use_trigger: comm_id, r.trigger: comm_id})
                pipe.hset(thread_key, mapping=after.to_hash())
                if len(context) <= INLINE_MAX:
                    stored[INLINE_CONTEXT] = context
                else:
                    pipe.set(keys.comm_context(comm_id), context)
                pipe.hset(keys.comm(comm_id), mapping=stored)
                if "prev" in record:
                    pipe.hset(keys.comm(str(record["prev"])), "next", comm_id)
                created_ms = int(record["created_ms"])
                pipe.zadd(keys.log(shard), {comm_id: created_ms})
                pipe.zadd(keys.incident_comms(incident_id), {comm_id: created_ms})
                pipe.hincrby(keys.counters(shard), f"created:{use_kind}", 1)
                pipe.hincrby(keys.counters(shard), f"n:{use_kind}:{Status.SCHEDULED}", 1)
                # Until it ends, the sweep looks at it again if nobody takes it for sending.
                pipe.zadd(keys.inflight(shard), {comm_id: created_ms + DISPATCH_GRACE_MS})
                made.append((comm_id, True))
            return made

        result = watched_transaction(
            self.client,
            transaction,
            incident_key,
            *trigger_keys,
            *thread_keys,
            value_from_callable=True,
        )
        return cast("list[tuple[str, bool]]", result)

    def comm(self, comm_id: str) -> Communication | None:
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(keys.comm(comm_id))
        pipe.get(keys.comm_context(comm_id))
        pipe.get(keys.comm_message(comm_id))
        raw, *texts = pipe.execute()
        if not raw:
            return None
        context, message = self.texts.unpack_many(
            [keys.incident_of_comm(comm_id)] * 2, [context_blob(raw, texts[0]), texts[1]]
        )
        return Communication.from_hash(with_texts(raw, context, message, whole=True))

    def begin_send(self, comm_id: str, now_ms: int, lease_ms: int, token: str) -> Claim:
        """Take ``comm_id`` for sending (see ``lua/begin_send.lua`` for every answer)."""
        (claim,) = self.begin_sends([(comm_id, token)], now_ms, lease_ms)
        return claim

    def begin_sends(self, attempts: Sequence[tuple[str, str]], now_ms: int, lease_ms: int) -> list[Claim]:
        """:meth:`begin_send` for each (communication id, token), in one round trip on a
        single Redis (a cluster client cannot pipeline scripts: there, one call each)."""
        pipe = self._script_pipeline()
        answers = []
        for comm_id, token in attempts:
            shard = keys.shard_of_comm(comm_id)
            comm_keys = [
                keys.comm(comm_id),
                keys.inflight(shard),
                keys.counters(shard),
                keys.comm_context(comm_id),
            ]
            args: list[str | int] = [now_ms, lease_ms, token, WAIT_RECHECK_MS, keys.comm_prefix(shard)]
            answers.append(self._begin_send(keys=comm_keys, args=args, client=pipe or self.client))
        if pipe is not None:
            answers = execute_scripts(pipe)
        incident_ids = [keys.incident_of_comm(comm_id) for comm_id, _ in attempts]
        taken = [_taken(a) for a in answers]
        blobs = [
            context_blob(t, a[3] or None) if t is not None else None
            for a, t in zip(answers, taken, strict=True)
        ]
        contexts = self.texts.unpack_many(incident_ids, blobs)
        return [_claim(*claimed) for claimed in zip(answers, taken, contexts, strict=True)]

    def finish_send(
        self,
        comm_id: str,
        token: str,
        status: Status,
        now_ms: int,
        next_attempt_ms: int | None = None,
        **fields: str | int,
    ) -> tuple[bool, str | None]:
        """Record an attempt's end; return (written, the thread's next message to dispatch)."""
        (finished,) = self.finish_sends([AttemptEnd(comm_id, token, status, now_ms, next_attempt_ms, fields)])
        if isinstance(finished, Exception):
            raise finished
        return finished

    def finish_sends(self, ends: Sequence[AttemptEnd]) -> list[Finished | Exception]:
        """:meth:`finish_send` for each end, in one round trip on a single Redis (a cluster
        client cannot pipeline scripts: there, one call each); an end that meets a Redis
        error (or a status ``check_finish`` refuses) answers with it, and the others are
        written all the same."""
        pipe = self._script_pipeline()
        answers: list[Any] = []
        for end in ends:
            try:
                check_finish(end.status, end.next_attempt_ms)
                answers.append(self._finish_one(end, pipe or self.client))
            except (redis.RedisError, AmendsError) as e:
                answers.append(e)
        if pipe is not None:
            queued = [n for n, answer in enumerate(answers) if answer is pipe]
            try:
                replies = execute_scripts(pipe, raise_on_error=False)
            except redis.RedisError as e:
                replies = [e] * len(queued)
            for n, reply in zip(queued, replies, strict=True):
                answers[n] = reply
        return [
            answer if isinstance(answer, Exception) else (bool(answer[0]), text_of(answer[1]) or None)
            for answer in answers
        ]

    def _script_pipeline(self) -> Any:
        """A pipeline to queue script calls on; None on a cluster client, which cannot pipeline
        scripts (there, each is called on its own)."""
        if isinstance(cast(object, self.client), redis.RedisCluster):
            return None
        return self.client.pipeline(transaction=False)

    def _finish_one(self, end: AttemptEnd, client: Any) -> Any:
        """Call ``finish_send.lua`` for ``end`` on ``client`` (queued, when it is a pipeline)."""
        fields = dict(end.fields)
        texts = {name: fields.pop(name) for name in MESSAGE_FIELDS if name in fields}
        packed = self.texts.pack_message(keys.incident_of_comm(end.comm_id), texts) if texts else b""
        args: list[str | int | bytes] = [
            end.token,
            str(end.status),
            end.now_ms,
            end.next_attempt_ms or 0,
            packed,
        ]
        for name, value in fields.items():
            args += [name, value]
        shard = keys.shard_of_comm(end.comm_id)
        shard_keys = [
            keys.comm(end.comm_id),
            keys.inflight(shard),
            keys.counters(shard),
            keys.comm_message(end.comm_id),
        ]
        return self._finish_send(keys=shard_keys, args=args, client=client)

    def sweep(self, now_ms: int, recheck_ms: int, limit: int) -> list[str]:
        """Unfinished communications due a look, each pushed ``recheck_ms`` ahead (``lua/sweep.lua``)."""
        found: list[str] = []
        for shard in range(keys.SHARDS):
            if len(found) >= limit:
                break
            due = self._sweep(keys=[keys.inflight(shard)], args=[now_ms, recheck_ms, limit - len(found)])
            found += [text_of(c) for c in due]
        return found

    def unfinished_count(self) -> int:
        pipe = self.client.pipeline(transaction=False)
        for shard in range(keys.SHARDS):
            pipe.zcard(keys.inflight(shard))
        return sum(int(n) for n in pipe.execute())

    def heartbeat(self, name: str, role: str, now_ms: int) -> None:
        self.client.hset(keys.HEARTBEATS, name, json.dumps({"role": role, "at_ms": now_ms}))

    def heartbeats(self) -> dict[str, dict[str, Any]]:
        return {text_of(k): json.loads(v) for k, v in self.client.hgetall(keys.HEARTBEATS).items()}
