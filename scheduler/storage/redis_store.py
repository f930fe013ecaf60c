"""The state amends keeps in Redis: accepted events, incidents, threads, communications.

Every write that must happen once is atomic: an event is applied under WATCH of its own
idempotency key and of the incident; a communication is created under WATCH of its
thread, keyed by the trigger that caused it; a send moves ``scheduled -> sending ->
sent|failed|retrying`` by compare-and-set in Lua.
"""

from __future__ import annotations

import itertools
import json
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, cast

import redis

from scheduler.errors import AmendsError
from scheduler.storage import keys

__all__ = [
    "DISPATCH_GRACE_MS",
    "FINAL_STATUSES",
    "STATUSES",
    "WAIT_RECHECK_MS",
    "Claim",
    "Communication",
    "Cursor",
    "RedisStore",
    "Store",
    "check_finish",
    "format_cursor",
    "ms_of",
    "parse_cursor",
    "utc_of",
]

STATUSES = ("scheduled", "sending", "retrying", "sent", "failed", "cancelled")
FINAL_STATUSES = ("sent", "failed", "cancelled")
_LUA = Path(__file__).parent / "lua"

DISPATCH_GRACE_MS = 60_000
"""A communication not taken for sending this long after its creation is dispatched again."""

_PAGE_SLICE = 200
"""Log entries read per round trip while a page is filled."""

WAIT_RECHECK_MS = 600_000
"""A message waiting for its predecessor is looked at again after this at the latest; the
predecessor's end wakes it at once."""


@dataclass(frozen=True)
class Claim:
    """What ``begin_send`` decided: ``state`` is "ok" when the caller may send.

    ``following`` names the thread's next communication when this one was superseded and
    that one should be dispatched now.
    """

    state: str
    following: str | None = None
    comm: Communication | None = None
    """With "ok": the communication as taken (status ``sending``)."""
    prev_status: str = ""
    """With "ok": the status of the thread's previous communication ("" when there is none)."""
    prev_sent_at: datetime | None = None


def ms_of(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def utc_of(ms: int | str | bytes | None) -> datetime | None:
    if ms is None or ms == b"" or ms == "":
        return None
    return datetime.fromtimestamp(int(ms) / 1000, tz=UTC)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class Communication:
    """One message to one stakeholder, as the log keeps it."""

    id: str
    incident_id: str
    stakeholder_id: str
    kind: str
    seq: int
    status: str
    recipient: str
    created_at: datetime
    promised_at: datetime
    next_update_at: datetime | None
    sent_at: datetime | None
    attempts: int
    last_error: str
    subject: str
    message_id: str
    context: dict[str, Any]
    message: str
    prev_id: str = ""
    next_id: str = ""
    next_attempt_at: datetime | None = None
    first_attempt_at: datetime | None = None
    no_news: bool = False
    channel: str = "email"

    @classmethod
    def from_hash(cls, raw: Mapping[Any, Any]) -> Communication:
        packed = raw.get(b"message_z", raw.get("message_z"))
        h = {_text(k): _text(v) for k, v in raw.items() if k not in (b"message_z", "message_z")}
        if packed is not None:
            h["message"] = zlib.decompress(packed).decode()
        return cls(
            id=h["id"],
            incident_id=h["incident_id"],
            stakeholder_id=h["stakeholder_id"],
            kind=h["kind"],
            seq=int(h["seq"]),
            status=h["status"],
            recipient=h["recipient"],
            created_at=utc_of(h["created_ms"]),  # type: ignore[arg-type]
            promised_at=utc_of(h["promised_ms"]),  # type: ignore[arg-type]
            next_update_at=utc_of(h.get("next_update_ms")),
            sent_at=utc_of(h.get("sent_ms")),
            attempts=int(h.get("attempts", 0)),
            last_error=h.get("last_error", ""),
            subject=h.get("subject", ""),
            message_id=h.get("message_id", ""),
            context=json.loads(h.get("context", "{}")),
            message=h.get("message", ""),
            prev_id=h.get("prev", ""),
            next_id=h.get("next", ""),
            next_attempt_at=utc_of(h.get("next_attempt_ms")),
            first_attempt_at=utc_of(h.get("first_attempt_ms")),
            no_news=h.get("no_news") == "1",
            channel=h.get("channel") or "email",
        )

    @property
    def lateness_s(self) -> float | None:
        """Seconds between the promised and the actual send time (negative: early)."""
        if self.sent_at is None:
            return None
        return (self.sent_at - self.promised_at).total_seconds()

    def as_json(self) -> dict[str, Any]:
        def iso(moment: datetime | None) -> str | None:
            return moment.isoformat().replace("+00:00", "Z") if moment else None

        return {
            "id": self.id,
            "incident_id": self.incident_id,
            "stakeholder_id": self.stakeholder_id,
            "kind": self.kind,
            "seq": self.seq,
            "status": self.status,
            "channel": self.channel,
            "recipient": self.recipient,
            "subject": self.subject,
            "created_at": iso(self.created_at),
            "promised_at": iso(self.promised_at),
            "sent_at": iso(self.sent_at),
            "lateness_s": self.lateness_s,
            "next_update_at": iso(self.next_update_at),
            "attempts": self.attempts,
            "last_error": self.last_error,
            "next_attempt_at": iso(self.next_attempt_at),
            "message_id": self.message_id,
        }


Builder = Callable[
    [dict[str, str], dict[str, Any] | None], tuple[dict[str, str | int], dict[str, str | int]] | None
]
"""``build(thread, incident)``: the new communication's fields and the thread's updates, from
the thread and the incident as they are inside the creating transaction; None: nothing to send."""

Cursor = tuple[int, str]
"""Where a page of the log ends: the last communication's creation time (ms) and id."""


def parse_cursor(text: str) -> Cursor:
    """``1795701785000:INC-1:acme:update:3`` as (created_ms, id); ValueError names the form."""
    ms, sep, comm_id = text.partition(":")
    if not sep or not ms.isdigit() or not comm_id or len(text) > 1000:
        raise ValueError("is not a cursor from an earlier page (created_ms:id)")
    return int(ms), comm_id


def format_cursor(cursor: Cursor) -> str:
    return f"{cursor[0]}:{cursor[1]}"


SKIPPED = "-"
"""Kept under a trigger whose builder found nothing to send, so a retry decides the same."""


class Store(Protocol):
    """Where amends keeps events, incidents, threads and the communications log.

    :class:`RedisStore` is what the product runs; :class:`~scheduler.storage.memory_store.MemoryStore`
    has the same contract in process (the preview and fast unit tests use it).
    """

    def apply_event(
        self, event_id: str, incident_id: str, apply: Callable[[dict[str, Any] | None], dict[str, Any]]
    ) -> dict[str, Any]: ...
    def mark_event_done(self, event_id: str) -> None: ...
    def reject(self, payload: Any, errors: list[tuple[str, str]], now: datetime, source: str) -> None: ...
    def rejected(self, limit: int = 100) -> list[dict[str, Any]]: ...
    def incident(self, incident_id: str) -> dict[str, Any] | None: ...
    def incident_ids(self) -> list[str]: ...
    def set_incident_stakeholders(
        self, incident_id: str, update: Callable[[list[str]], list[str]]
    ) -> None: ...
    def thread(self, incident_id: str, stakeholder_id: str) -> dict[str, str]: ...
    def update_thread(self, incident_id: str, stakeholder_id: str, **fields: str | int) -> None: ...
    def clear_thread_fields(self, incident_id: str, stakeholder_id: str, *names: str) -> None: ...
    def create_comm(
        self,
        incident_id: str,
        stakeholder_id: str,
        kind: str,
        trigger: str,
        build: Builder,
        first: tuple[str, str] | None = None,
    ) -> tuple[str, bool]: ...
    def comm(self, comm_id: str) -> Communication | None: ...
    def begin_send(self, comm_id: str, now_ms: int, lease_ms: int, token: str) -> Claim: ...
    def finish_send(
        self,
        comm_id: str,
        token: str,
        status: str,
        now_ms: int,
        next_attempt_ms: int | None = None,
        **fields: str | int,
    ) -> tuple[bool, str | None]: ...
    def sweep(self, now_ms: int, recheck_ms: int, limit: int) -> list[str]: ...
    def unfinished_count(self) -> int: ...
    def heartbeat(self, name: str, role: str, now_ms: int) -> None: ...
    def heartbeats(self) -> dict[str, dict[str, Any]]: ...
    def communications(self, since: datetime | None = None, batch: int = 500) -> Iterator[Communication]: ...
    def page(
        self,
        keep: Callable[[Communication], bool],
        limit: int,
        before: Cursor | None = None,
        since: datetime | None = None,
    ) -> tuple[list[Communication], Cursor | None]: ...
    def incident_page(self, limit: int, before: Cursor | None = None) -> tuple[list[str], Cursor | None]: ...


def check_finish(status: str, next_attempt_ms: int | None) -> None:
    """What ``finish_send`` refuses in every store: an unknown status, a retry with no time."""
    if status not in STATUSES:
        raise AmendsError(f"unknown status {status!r}")
    if status == "retrying" and next_attempt_ms is None:
        raise AmendsError("a retry needs next_attempt_ms")


def comm_id_for(incident_id: str, stakeholder_id: str, kind: str, seq: int) -> str:
    return f"{incident_id}:{stakeholder_id}:{kind}:{seq}"


def new_comm(
    incident_id: str,
    stakeholder_id: str,
    kind: str,
    trigger: str,
    thread: dict[str, str],
    build: Builder,
    incident: dict[str, Any] | None = None,
) -> tuple[str, dict[str, str | int], dict[str, str | int]] | None:
    """The next communication of a thread: (id, its fields, the thread's updates); None: nothing to send."""
    seq = int(thread.get("seq", 0)) + 1
    comm_id = comm_id_for(incident_id, stakeholder_id, kind, seq)
    built = build(dict(thread), incident)
    if built is None:
        return None
    fields, thread_updates = built
    record: dict[str, str | int] = {
        **fields,
        "id": comm_id,
        "incident_id": incident_id,
        "stakeholder_id": stakeholder_id,
        "kind": kind,
        "seq": seq,
        "status": "scheduled",
        "attempts": 0,
        "trigger": trigger,
    }
    if thread.get("last_comm"):
        record["prev"] = thread["last_comm"]
    return comm_id, record, {**thread_updates, "seq": seq, "last_comm": comm_id}


class RedisStore:
    """Redis persistence for events, incidents, threads and the communications log."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._begin_send = client.register_script((_LUA / "begin_send.lua").read_text())
        self._finish_send = client.register_script((_LUA / "finish_send.lua").read_text())
        self._sweep = client.register_script((_LUA / "sweep.lua").read_text())

    # -- events ------------------------------------------------------------------------

    def apply_event(
        self, event_id: str, incident_id: str, apply: Callable[[dict[str, Any] | None], dict[str, Any]]
    ) -> dict[str, Any]:
        """Apply an event to its incident exactly once; return the event's record.

        ``apply(current_incident_or_None)`` returns ``{"incident": new_state, ...}``; it
        runs again if another writer changed the incident meanwhile. When the event was
        already applied, its stored record is returned and ``apply`` is not called. A
        record with ``waiting`` (the event cannot apply yet) is returned and not kept.
        """
        event_key, incident_key = keys.event(event_id), keys.incident(incident_id)

        def transaction(pipe: Any) -> dict[str, Any]:
            seen = pipe.get(event_key)
            if seen is not None:
                record: dict[str, Any] = json.loads(seen)
                record["duplicate"] = True
                return record
            raw = pipe.get(incident_key)
            record = apply(json.loads(raw) if raw else None)
            if record.get("waiting"):  # nothing to keep: it is tried again later
                return {**record, "duplicate": False}
            pipe.multi()
            pipe.set(event_key, json.dumps(record))
            if record.get("incident") is not None:
                pipe.set(incident_key, json.dumps(record["incident"]))
                pipe.zadd(keys.INCIDENTS, {incident_id: record["incident"]["opened_ms"]}, nx=True)
            return {**record, "duplicate": False}

        result = self.client.transaction(
            transaction,  # type: ignore[arg-type]
            event_key,
            incident_key,
            value_from_callable=True,
        )
        return cast(dict[str, Any], result)

    def mark_event_done(self, event_id: str) -> None:
        raw = self.client.get(keys.event(event_id))
        if raw is not None:
            record = json.loads(raw)
            record["done"] = True
            self.client.set(keys.event(event_id), json.dumps(record))

    def reject(self, payload: Any, errors: list[tuple[str, str]], now: datetime, source: str) -> None:
        """Keep a rejected event with its reasons, for ``amends log --rejected``."""
        record = {
            "rejected_at": now.astimezone(UTC).isoformat().replace("+00:00", "Z"),
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

    def incident(self, incident_id: str) -> dict[str, Any] | None:
        raw = self.client.get(keys.incident(incident_id))
        return json.loads(raw) if raw else None

    def incident_ids(self) -> list[str]:
        return [_text(i) for i in self.client.zrange(keys.INCIDENTS, 0, -1)]

    def incident_page(self, limit: int, before: Cursor | None = None) -> tuple[list[str], Cursor | None]:
        """Up to ``limit`` incident ids, newest opened first, after ``before``; and the next cursor."""
        picked = list(itertools.islice(self._newest_first(keys.INCIDENTS, before), limit + 1))
        following = picked[limit - 1] if len(picked) > limit else None
        return [i for _, i in picked[:limit]], following

    def _newest_first(self, key: str, before: Cursor | None, since_ms: int | None = None) -> Iterator[Cursor]:
        """A sorted set's (score, member) pairs from the highest score down, strictly after
        ``before`` (equal scores go by member, also descending), down to ``since_ms``; read in
        slices of ``_PAGE_SLICE`` per round trip."""
        high: int | str = before[0] if before else "+inf"
        low: int | str = since_ms if since_ms is not None else "-inf"
        offset = 0
        while True:
            chunk = cast(
                "list[tuple[bytes, float]]",
                self.client.zrevrangebyscore(key, high, low, start=offset, num=_PAGE_SLICE, withscores=True),
            )
            if not chunk:
                return
            offset += len(chunk)
            for member, score in chunk:
                entry = (int(score), _text(member))
                if before is None or entry < before:
                    yield entry

    def set_incident_stakeholders(self, incident_id: str, update: Callable[[list[str]], list[str]]) -> None:
        key = keys.incident(incident_id)

        def transaction(pipe: Any) -> None:
            state = json.loads(pipe.get(key))
            state["stakeholders"] = update(state.get("stakeholders", []))
            pipe.multi()
            pipe.set(key, json.dumps(state))

        self.client.transaction(transaction, key)

    # -- threads (one per incident and stakeholder) ------------------------------------

    def thread(self, incident_id: str, stakeholder_id: str) -> dict[str, str]:
        raw = self.client.hgetall(keys.pair(incident_id, stakeholder_id))
        return {_text(k): _text(v) for k, v in raw.items()}

    def update_thread(self, incident_id: str, stakeholder_id: str, **fields: str | int) -> None:
        mapping: Mapping[Any, Any] = fields
        self.client.hset(keys.pair(incident_id, stakeholder_id), mapping=mapping)

    def clear_thread_fields(self, incident_id: str, stakeholder_id: str, *names: str) -> None:
        self.client.hdel(keys.pair(incident_id, stakeholder_id), *names)

    # -- communications ----------------------------------------------------------------

    def create_comm(
        self,
        incident_id: str,
        stakeholder_id: str,
        kind: str,
        trigger: str,
        build: Builder,
        first: tuple[str, str] | None = None,
    ) -> tuple[str, bool]:
        """Create the communication caused by ``trigger`` unless it exists; return (id, created).

        The id is "" when the builder found nothing to send (and is again for that trigger).

        ``build(thread)`` returns the communication's fields and the thread's updates;
        the id is ``{incident}:{stakeholder}:{kind}:{n}``, ``n`` counting the thread's messages.
        ``first`` is the (kind, trigger) to use instead when the thread has no message yet
        (an update that arrives before the acknowledgment is the acknowledgment): decided
        in the same transaction, so that the update can never fold into an acknowledgment
        composed a moment earlier from older facts.
        """
        trigger_key = keys.trigger(incident_id, stakeholder_id)
        thread_key = keys.pair(incident_id, stakeholder_id)
        incident_key = keys.incident(incident_id)

        def transaction(pipe: Any) -> tuple[str, bool]:
            existing = pipe.hget(trigger_key, trigger)
            if existing is not None:
                return ("" if _text(existing) == SKIPPED else _text(existing)), False
            thread = {_text(k): _text(v) for k, v in pipe.hgetall(thread_key).items()}
            use_kind, use_trigger = first if first and "seq" not in thread else (kind, trigger)
            if use_trigger != trigger and (folded := pipe.hget(trigger_key, use_trigger)) is not None:
                pipe.multi()
                pipe.hset(trigger_key, trigger, _text(folded))
                return _text(folded), False
            raw_incident = pipe.get(incident_key)
            made = new_comm(
                incident_id,
                stakeholder_id,
                use_kind,
                use_trigger,
                thread,
                build,
                json.loads(raw_incident) if raw_incident else None,
            )
            if made is None:
                pipe.multi()
                pipe.hset(trigger_key, trigger, SKIPPED)
                return "", False
            comm_id, record, thread_updates = made
            pipe.multi()
            pipe.hset(trigger_key, use_trigger, comm_id)
            pipe.hset(trigger_key, trigger, comm_id)
            pipe.hset(thread_key, mapping=thread_updates)
            pipe.hset(keys.comm(comm_id), mapping=record)
            if "prev" in record:
                pipe.hset(keys.comm(str(record["prev"])), "next", comm_id)
            pipe.zadd(keys.LOG, {comm_id: int(record["created_ms"])})
            # Until it ends, the sweep looks at it again if nobody takes it for sending.
            pipe.zadd(keys.INFLIGHT, {comm_id: int(record["created_ms"]) + DISPATCH_GRACE_MS})
            return comm_id, True

        result = self.client.transaction(
            transaction,  # type: ignore[arg-type]
            trigger_key,
            thread_key,
            incident_key,
            value_from_callable=True,
        )
        return cast(tuple[str, bool], result)

    def comm(self, comm_id: str) -> Communication | None:
        raw = self.client.hgetall(keys.comm(comm_id))
        return Communication.from_hash(raw) if raw else None

    def begin_send(self, comm_id: str, now_ms: int, lease_ms: int, token: str) -> Claim:
        """Take ``comm_id`` for sending (see ``lua/begin_send.lua`` for every answer)."""
        answer = self._begin_send(
            keys=[keys.comm(comm_id), keys.INFLIGHT],
            args=[now_ms, lease_ms, token, WAIT_RECHECK_MS, keys.comm("")],
        )
        state = _text(answer[0])
        if state != "ok":
            return Claim(state, _text(answer[1]) if len(answer) > 1 else None)
        fields = answer[3:]
        taken = Communication.from_hash(dict(zip(fields[::2], fields[1::2], strict=True)))
        return Claim(state, None, taken, _text(answer[1]), utc_of(answer[2]))

    def finish_send(
        self,
        comm_id: str,
        token: str,
        status: str,
        now_ms: int,
        next_attempt_ms: int | None = None,
        **fields: str | int,
    ) -> tuple[bool, str | None]:
        """Record an attempt's end; return (written, the thread's next message to dispatch)."""
        check_finish(status, next_attempt_ms)
        args: list[str | int | bytes] = [token, status, now_ms, next_attempt_ms or 0]
        for name, value in fields.items():
            if name == "message":  # kept compressed: a fraction of its size (see Communication.from_hash)
                args += ["message_z", zlib.compress(str(value).encode(), 6)]
            else:
                args += [name, value]
        written, following = self._finish_send(keys=[keys.comm(comm_id), keys.INFLIGHT], args=args)
        return bool(written), (_text(following) or None)

    def sweep(self, now_ms: int, recheck_ms: int, limit: int) -> list[str]:
        """Unfinished communications due a look, each pushed ``recheck_ms`` ahead (``lua/sweep.lua``)."""
        found = self._sweep(keys=[keys.INFLIGHT], args=[now_ms, recheck_ms, limit])
        return [_text(c) for c in found]

    def unfinished_count(self) -> int:
        return int(self.client.zcard(keys.INFLIGHT))

    def heartbeat(self, name: str, role: str, now_ms: int) -> None:
        self.client.hset(keys.HEARTBEATS, name, json.dumps({"role": role, "at_ms": now_ms}))

    def heartbeats(self) -> dict[str, dict[str, Any]]:
        return {_text(k): json.loads(v) for k, v in self.client.hgetall(keys.HEARTBEATS).items()}

    def page(
        self,
        keep: Callable[[Communication], bool],
        limit: int,
        before: Cursor | None = None,
        since: datetime | None = None,
    ) -> tuple[list[Communication], Cursor | None]:
        """Up to ``limit`` communications that ``keep``, newest first, created before ``before``
        (a cursor from the page before) and not before ``since``; and the cursor of the next
        page, None when there is no more. Reads the log index backwards in slices."""
        found: list[Communication] = []
        entries = self._newest_first(keys.LOG, before, ms_of(since) if since else None)
        while batch := list(itertools.islice(entries, _PAGE_SLICE)):
            pipe = self.client.pipeline(transaction=False)
            for _, comm_id in batch:
                pipe.hgetall(keys.comm(comm_id))
            for entry, raw in zip(batch, pipe.execute(), strict=True):
                if raw and keep(comm := Communication.from_hash(raw)):
                    found.append(comm)
                    if len(found) == limit:
                        return found, entry  # the log's own score: no round trip through a float
        return found, None

    def communications(self, since: datetime | None = None, batch: int = 500) -> Iterator[Communication]:
        """Every communication in creation order, oldest first, from ``since`` on."""
        low: int | str = ms_of(since) if since else "-inf"
        start = 0
        while True:
            ids = self.client.zrangebyscore(keys.LOG, low, "+inf", start=start, num=batch)
            if not ids:
                return
            pipe = self.client.pipeline(transaction=False)
            for comm_id in ids:
                pipe.hgetall(keys.comm(_text(comm_id)))
            for raw in pipe.execute():
                if raw:
                    yield Communication.from_hash(raw)
            start += len(ids)
