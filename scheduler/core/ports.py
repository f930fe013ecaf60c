"""The store port, the core's own: what the engine, the worker, the API and the CLI ask of a store.

:class:`~scheduler.storage.redis_store.RedisStore` is what the product runs;
:class:`~scheduler.storage.memory_store.MemoryStore` keeps the same contract in process (the
preview and the fast engine tests use it; the contract tests in ``tests/test_store.py`` run
against both). Nothing here imports a client library.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Protocol, cast

from scheduler.core.feedback import Feedback, OptOut
from scheduler.core.model import Communication, Draft, EventRecord, Incident, Kind, Status, Thread
from scheduler.errors import AmendsError

__all__ = [
    "DISPATCH_GRACE_MS",
    "SKIPPED",
    "WAIT_RECHECK_MS",
    "AttemptEnd",
    "Builder",
    "Claim",
    "CommRequest",
    "Counters",
    "Cursor",
    "Removed",
    "Store",
    "TimerStore",
    "check_finish",
    "format_cursor",
    "new_comm",
    "parse_cursor",
]

DISPATCH_GRACE_MS = 60_000
"""A communication not taken for sending this long after its creation is dispatched again."""

WAIT_RECHECK_MS = 600_000
"""A message waiting for its predecessor is looked at again after this at the latest; the
predecessor's end wakes it at once."""

SKIPPED = "-"
"""Kept under a trigger whose builder found nothing to send, so a retry decides the same."""


@dataclass(frozen=True)
class AttemptEnd:
    """An attempt's end, as ``finish_send`` takes it: for writing several at once (``finish_sends``)."""

    comm_id: str
    token: str
    status: Status
    now_ms: int
    next_attempt_ms: int | None = None
    fields: Mapping[str, str | int] = dataclasses.field(default_factory=dict)


Finished = tuple[bool, str | None]
"""What ``finish_send`` answers: (written, the thread's next message to dispatch)."""


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


@dataclass(frozen=True)
class Counters:
    """What ``/metrics`` reports, kept as things happen rather than counted from the log:
    communications created per kind, how many are in each (kind, status) now, and the
    lateness of those sent (a cumulative histogram in ms, its count and sum)."""

    created: dict[str, int]
    current: dict[tuple[str, str], int]
    late_le_ms: dict[int, int]
    late_count: int = 0
    late_sum_ms: int = 0

    @classmethod
    def summed(cls, raws: Iterable[Mapping[str, int]]) -> Counters:
        """Counters from the stored ``field -> count`` form (``created:update``,
        ``n:update:sent``, ``late:le:500``, ``late:count``, ``late:sum_ms``), shards added up."""
        created: dict[str, int] = {}
        current: dict[tuple[str, str], int] = {}
        late: dict[int, int] = {}
        count = total = 0
        for raw in raws:
            for field, value in raw.items():
                kind, _, rest = field.partition(":")
                if kind == "created":
                    created[rest] = created.get(rest, 0) + value
                elif kind == "n":
                    pair = cast("tuple[str, str]", tuple(rest.split(":", 1)))
                    current[pair] = current.get(pair, 0) + value
                elif field.startswith("late:le:"):
                    bound = int(field.removeprefix("late:le:"))
                    late[bound] = late.get(bound, 0) + value
                elif field == "late:count":
                    count += value
                elif field == "late:sum_ms":
                    total += value
        return cls(created, current, late, count, total)


@dataclass(frozen=True)
class Removed:
    """What retention removed: incidents and their communications (and, for the running
    total, when it last removed something and the resolution time it removed up to)."""

    incidents: int
    communications: int
    last_ms: int | None = None
    before_ms: int | None = None


Builder = Callable[[Thread, Incident | None], tuple[Draft, Thread] | None]
"""``build(thread, incident)``: the new communication and the thread after it, from the
thread and the incident as they are inside the creating transaction; None: nothing to send."""


@dataclass(frozen=True)
class CommRequest:
    """One communication to create with :meth:`Store.create_comms`: what ``create_comm``
    takes but the incident."""

    stakeholder_id: str
    kind: Kind
    trigger: str
    build: Builder
    first: tuple[Kind, str] | None = None


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


class Store(Protocol):
    """Where amends keeps events, incidents, threads, the communications log and what
    stakeholders answer (feedback, opt-outs)."""

    # events and incidents
    def apply_event(
        self, event_id: str, incident_id: str, apply: Callable[[Incident | None], EventRecord]
    ) -> EventRecord: ...
    def mark_event_done(self, incident_id: str, event_id: str) -> None: ...
    def reject(self, payload: Any, errors: list[tuple[str, str]], now: datetime, source: str) -> None: ...
    def rejected(self, limit: int = 100) -> list[dict[str, Any]]: ...
    def incident(self, incident_id: str) -> Incident | None: ...
    def incidents(self, incident_ids: list[str]) -> list[Incident]: ...
    def incident_ids(self) -> list[str]: ...
    def incident_page(
        self, limit: int, before: Cursor | None = None, since_ms: int | None = None
    ) -> tuple[list[str], Cursor | None]: ...
    def set_incident_stakeholders(
        self, incident_id: str, update: Callable[[list[str]], list[str]]
    ) -> None: ...

    # threads
    def thread(self, incident_id: str, stakeholder_id: str) -> Thread: ...
    def threads(self, pairs: list[tuple[str, str]]) -> list[Thread]: ...
    def set_feedback_due(self, incident_id: str, stakeholder_id: str, due_ms: int) -> None: ...
    def clear_promises(
        self, incident_id: str, stakeholder_id: str, *, update: bool = False, feedback: bool = False
    ) -> None: ...

    # communications
    def create_comm(
        self,
        incident_id: str,
        stakeholder_id: str,
        kind: Kind,
        trigger: str,
        build: Builder,
        first: tuple[Kind, str] | None = None,
    ) -> tuple[str, bool]: ...
    def create_comms(self, incident_id: str, requests: Sequence[CommRequest]) -> list[tuple[str, bool]]:
        """``create_comm`` for each request, in order, in as few round trips as the store can
        (a fan-out's acknowledgments in one transaction per batch of stakeholders)."""
        ...

    def comm(self, comm_id: str) -> Communication | None: ...
    def begin_send(self, comm_id: str, now_ms: int, lease_ms: int, token: str) -> Claim:
        """Take the communication for sending under ``token`` if it may go out now.

        Asked again with the same token (a reply lost on a cut connection, the call
        retried), it answers ``ok`` again as taken, rather than leave the attempt waiting
        for its own lease.
        """
        ...

    def begin_sends(self, attempts: Sequence[tuple[str, str]], now_ms: int, lease_ms: int) -> list[Claim]:
        """``begin_send`` for each (communication id, token), in as few round trips as the store can."""
        ...

    def finish_send(
        self,
        comm_id: str,
        token: str,
        status: Status,
        now_ms: int,
        next_attempt_ms: int | None = None,
        **fields: str | int,
    ) -> tuple[bool, str | None]: ...
    def finish_sends(self, ends: Sequence[AttemptEnd]) -> list[Finished | Exception]:
        """``finish_send`` for each end, in as few round trips as the store can: each end's
        answer, or the error that end met, a storage error or a status ``check_finish``
        refuses (the others are written all the same)."""
        ...

    def sweep(self, now_ms: int, recheck_ms: int, limit: int) -> list[str]: ...
    def incident_comms(self, *incident_ids: str) -> list[Communication]: ...
    def counters(self) -> Counters: ...

    # retention
    def remove_resolved_before(self, before_ms: int, now_ms: int) -> Removed: ...
    def removed(self) -> Removed: ...
    def unfinished_count(self) -> int: ...
    def communications(self, since: datetime | None = None, batch: int = 500) -> Iterator[Communication]: ...
    def page(
        self,
        keep: Callable[[Communication], bool],
        limit: int,
        before: Cursor | None = None,
        since: datetime | None = None,
    ) -> tuple[list[Communication], Cursor | None]: ...

    # processes
    def heartbeat(self, name: str, role: str, now_ms: int) -> None: ...
    def heartbeats(self) -> dict[str, dict[str, Any]]: ...

    # what stakeholders answer
    def record_rating(
        self, incident_id: str, stakeholder_id: str, rating: int, now: datetime
    ) -> Feedback: ...
    def record_comment(
        self, incident_id: str, stakeholder_id: str, comment: str, now: datetime
    ) -> Feedback: ...
    def feedback_for(self, incident_id: str) -> dict[str, Feedback]: ...
    def record_opt_out(
        self, stakeholder_id: str, now: datetime, incident_id: str | None = None
    ) -> datetime: ...
    def is_opted_out(self, stakeholder_id: str, incident_id: str | None = None) -> bool: ...
    def opted_out_among(self, incident_id: str, stakeholder_ids: Sequence[str]) -> set[str]:
        """Which of ``stakeholder_ids`` opted out of all mail or of ``incident_id``'s."""
        ...

    def opt_outs(self) -> list[OptOut]: ...
    def remove_opt_out(self, opt_out_id: str) -> bool: ...


class TimerStore(Protocol):
    """Where timers wait for their due time; every method is safe to call from many threads."""

    def arm(self, member: str, due_ms: int) -> None:
        """Set or move ``member``'s due time; nudge sleepers if it is now the earliest timer."""
        ...

    def arm_many(self, items: Iterable[tuple[str, int]]) -> None:
        """``arm`` each ``(member, due_ms)`` in order, in as few round trips as possible."""
        ...

    def cancel(self, member: str) -> bool:
        """Disarm ``member``; True if it was armed. A claim already handed out is not touched."""
        ...

    def due_ms(self, member: str) -> int | None:
        """The armed due time of ``member``, or None when it is not armed."""
        ...

    def claim(self, now_ms: int, lease_ms: int, limit: int) -> list[tuple[str, int]]:
        """Hand out up to ``limit`` due or lease-expired timers as ``(member, due_ms)``, earliest first.

        Each timer handed out leaves the armed set and is leased until ``now_ms + lease_ms``;
        a lease-expired claim comes back with the due time it was first claimed at. A member
        both due and lease-expired is handed out once, with the earlier due time. Concurrent
        callers never receive the same claim while its lease runs; only a re-arm that has
        fallen due hands a leased timer out again.
        """
        ...

    def ack(self, member: str) -> None:
        """The claimed timer's message is enqueued: drop its lease so it is not handed out again."""
        ...

    def ack_many(self, members: Iterable[str]) -> None:
        """``ack`` each member, in as few round trips as possible."""
        ...

    def ack_claims(self, claims: Iterable[tuple[str, int]]) -> int:
        """Drop the lease of each ``(member, due_ms)`` still held for that due time; return how many.

        A worker acks the claims it handled; a timer claimed again meanwhile (re-armed,
        then due again) keeps its newer lease.
        """
        ...

    def release_claims(self, claims: Iterable[tuple[str, int]], now_ms: int) -> int:
        """Put back each ``(member, due_ms)`` still held for that due time, to be handed out
        again at the next claim (at ``now_ms``) rather than after its lease; return how many.

        For a claimer that is alive and knows its handling failed (Redis went away mid-way, an
        enqueue failed): its timers need not wait out the lease a dead claimer would leave.
        Sleepers are nudged.
        """
        ...

    def next_wakeup_ms(self) -> int | None:
        """The earliest armed due time or lease expiry, or None when there is neither."""
        ...

    def wait(self, timeout_s: float) -> None:
        """Block until an earlier timer is armed or ``timeout_s`` passes; 0 returns at once.

        A nudge left while nobody waited is kept (one at most) and ends the next wait at once.
        """
        ...

    def armed_count(self) -> int:
        """How many timers are armed (claims in flight not counted)."""
        ...

    def overdue_count(self, before_ms: int) -> int:
        """How many armed timers were due before ``before_ms`` and are still not claimed."""
        ...


def check_finish(status: str, next_attempt_ms: int | None) -> None:
    """What ``finish_send`` refuses in every store: an unknown status, a retry with no time."""
    if status not in Status.__members__.values():
        raise AmendsError(f"unknown status {status!r}")
    if status == Status.RETRYING and next_attempt_ms is None:
        raise AmendsError("a retry needs next_attempt_ms")


def comm_id_for(incident_id: str, stakeholder_id: str, kind: Kind, seq: int) -> str:
    return f"{incident_id}:{stakeholder_id}:{kind}:{seq}"


def new_comm(
    incident_id: str,
    stakeholder_id: str,
    kind: Kind,
    trigger: str,
    thread: Thread,
    build: Builder,
    incident: Incident | None = None,
) -> tuple[str, dict[str, str | int], Thread] | None:
    """The next communication of a thread: (id, its stored fields, the thread after it); None:
    nothing to send."""
    seq = thread.seq + 1
    comm_id = comm_id_for(incident_id, stakeholder_id, kind, seq)
    built = build(replace(thread), incident)
    if built is None:
        return None
    draft, after = built
    record: dict[str, str | int] = {
        **draft.to_hash(),
        "id": comm_id,
        "incident_id": incident_id,
        "stakeholder_id": stakeholder_id,
        "kind": str(kind),
        "seq": seq,
        "status": str(Status.SCHEDULED),
        "attempts": 0,
        "trigger": trigger,
    }
    if thread.last_comm:
        record["prev"] = thread.last_comm
    after.seq, after.last_comm = seq, comm_id
    return comm_id, record, after
