"""An in-process :class:`~scheduler.core.ports.Store` with the same contract as the Redis one.

Used by ``amends preview`` (a simulated clock, nothing persisted) and by fast unit tests.
The contract tests in ``tests/test_store.py`` run against both.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from scheduler.core.model import (
    Communication,
    EventRecord,
    Incident,
    Kind,
    Status,
    Thread,
    iso_z,
    ms_of,
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
    Counters,
    Cursor,
    Finished,
    Removed,
    check_finish,
    new_comm,
)
from scheduler.errors import AmendsError
from scheduler.storage import keys
from scheduler.storage.memory_answers import MemoryAnswers

__all__ = ["MemoryStore"]

_UNFINISHED = (Status.SCHEDULED, Status.SENDING, Status.RETRYING)


class MemoryStore(MemoryAnswers):
    """Events, incidents, threads and communications in dictionaries, behind one lock."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.RLock()
        self._events: dict[str, EventRecord] = {}
        self._incidents: dict[str, Incident] = {}
        self._opened: dict[str, int] = {}
        self._threads: dict[tuple[str, str], Thread] = {}
        self._triggers: dict[tuple[str, str], dict[str, str]] = {}
        self._comms: dict[str, dict[str, str]] = {}
        self._log: list[tuple[int, str]] = []
        self._rejected: list[dict[str, Any]] = []
        self._inflight: dict[str, int] = {}
        self._heartbeats: dict[str, dict[str, Any]] = {}
        self._counts: dict[str, int] = {}
        self._removed = Removed(0, 0)

    def apply_event(
        self, event_id: str, incident_id: str, apply: Callable[[Incident | None], EventRecord]
    ) -> EventRecord:
        with self._lock:
            if event_id in self._events:
                return replace(copy.deepcopy(self._events[event_id]), duplicate=True)
            record = apply(copy.deepcopy(self._incidents.get(incident_id)))
            if record.waiting:
                return record
            self._events[event_id] = copy.deepcopy(record)
            if record.incident is not None:
                self._incidents[incident_id] = copy.deepcopy(record.incident)
                self._opened.setdefault(incident_id, record.incident.opened_ms)
            return record

    def mark_event_done(self, incident_id: str, event_id: str) -> None:
        with self._lock:
            if event_id in self._events:
                self._events[event_id].done = True

    def reject(self, payload: Any, errors: list[tuple[str, str]], now: datetime, source: str) -> None:
        with self._lock:
            self._rejected.insert(
                0,
                {
                    "rejected_at": iso_z(now),
                    "via": source,
                    "errors": [{"field": place, "reason": reason} for place, reason in errors],
                    "event": json.loads(json.dumps(payload, default=repr)),
                },
            )
            del self._rejected[keys.REJECTED_KEEP :]

    def rejected(self, limit: int = 100) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(self._rejected[:limit])

    def incident(self, incident_id: str) -> Incident | None:
        with self._lock:
            return copy.deepcopy(self._incidents.get(incident_id))

    def incidents(self, incident_ids: list[str]) -> list[Incident]:
        with self._lock:
            return [copy.deepcopy(self._incidents[i]) for i in incident_ids if i in self._incidents]

    def incident_ids(self) -> list[str]:
        with self._lock:
            return sorted(self._opened, key=lambda i: (self._opened[i], i))

    def incident_page(
        self, limit: int, before: Cursor | None = None, since_ms: int | None = None
    ) -> tuple[list[str], Cursor | None]:
        with self._lock:
            opened = ((ms, i) for i, ms in self._opened.items() if since_ms is None or ms >= since_ms)
            ordered = sorted(opened, reverse=True)
        picked = [entry for entry in ordered if before is None or entry < before][: limit + 1]
        following = picked[limit - 1] if len(picked) > limit else None
        return [i for _, i in picked[:limit]], following

    def set_incident_stakeholders(self, incident_id: str, update: Callable[[list[str]], list[str]]) -> None:
        with self._lock:
            state = self._incidents[incident_id]
            state.stakeholders = update(list(state.stakeholders))

    def thread(self, incident_id: str, stakeholder_id: str) -> Thread:
        with self._lock:
            return copy.deepcopy(self._threads.get((incident_id, stakeholder_id), Thread()))

    def set_feedback_due(self, incident_id: str, stakeholder_id: str, due_ms: int) -> None:
        with self._lock:
            self._threads.setdefault((incident_id, stakeholder_id), Thread()).feedback_ms = due_ms

    def clear_promises(
        self, incident_id: str, stakeholder_id: str, *, update: bool = False, feedback: bool = False
    ) -> None:
        with self._lock:
            thread = self._threads.get((incident_id, stakeholder_id))
            if thread is not None:
                thread.promised_ms = None if update else thread.promised_ms
                thread.feedback_ms = None if feedback else thread.feedback_ms

    def create_comm(
        self,
        incident_id: str,
        stakeholder_id: str,
        kind: Kind,
        trigger: str,
        build: Builder,
        first: tuple[Kind, str] | None = None,
    ) -> tuple[str, bool]:
        with self._lock:
            pair = (incident_id, stakeholder_id)
            triggers = self._triggers.setdefault(pair, {})
            if trigger in triggers:
                return ("" if triggers[trigger] == SKIPPED else triggers[trigger]), False
            thread = self._threads.setdefault(pair, Thread())
            use_kind, use_trigger = first if first and not thread.seq else (kind, trigger)
            if use_trigger in triggers:
                triggers[trigger] = triggers[use_trigger]
                return triggers[trigger], False
            made = new_comm(
                incident_id,
                stakeholder_id,
                use_kind,
                use_trigger,
                thread,
                build,
                copy.deepcopy(self._incidents.get(incident_id)),
            )
            if made is None:
                triggers[trigger] = SKIPPED
                return "", False
            comm_id, record, after = made
            triggers[use_trigger] = triggers[trigger] = comm_id
            self._threads[pair] = after
            self._comms[comm_id] = {name: str(value) for name, value in record.items()}
            if "prev" in record and str(record["prev"]) in self._comms:
                self._comms[str(record["prev"])]["next"] = comm_id
            self._log.append((int(record["created_ms"]), comm_id))
            self._count(f"created:{use_kind}", f"n:{use_kind}:{Status.SCHEDULED}")
            self._inflight[comm_id] = int(record["created_ms"]) + DISPATCH_GRACE_MS
            return comm_id, True

    def create_comms(self, incident_id: str, requests: Sequence[CommRequest]) -> list[tuple[str, bool]]:
        return [
            self.create_comm(incident_id, r.stakeholder_id, r.kind, r.trigger, r.build, r.first)
            for r in requests
        ]

    def comm(self, comm_id: str) -> Communication | None:
        with self._lock:
            raw = self._comms.get(comm_id)
            return Communication.from_hash(raw) if raw else None

    def begin_sends(self, attempts: Sequence[tuple[str, str]], now_ms: int, lease_ms: int) -> list[Claim]:
        return [self.begin_send(comm_id, now_ms, lease_ms, token) for comm_id, token in attempts]

    def begin_send(self, comm_id: str, now_ms: int, lease_ms: int, token: str) -> Claim:
        with self._lock:
            comm = self._comms.get(comm_id)
            if comm is None:
                return Claim("missing")
            status = comm["status"]
            retaken = status == "sending" and comm.get("token") == token
            if status == "sending" and int(comm.get("lease_until_ms", "0")) > now_ms and not retaken:
                return Claim("sending")
            if status == "retrying" and int(comm.get("next_attempt_ms", "0")) > now_ms:
                self._inflight[comm_id] = int(comm["next_attempt_ms"])
                return Claim("early")
            if status not in _UNFINISHED:
                self._inflight.pop(comm_id, None)
                return Claim(status)
            prev = self._comms.get(comm.get("prev", ""))
            if prev is not None and prev["status"] in _UNFINISHED:
                self._inflight[comm_id] = now_ms + WAIT_RECHECK_MS
                return Claim("waiting")
            following = comm.get("next")
            if following and comm.get("no_news") == "1":
                self._moved(comm, Status.CANCELLED)
                comm.update(
                    status="cancelled", last_error=f"superseded by {following}", updated_ms=str(now_ms)
                )
                for name in ("lease_until_ms", "token", "next_attempt_ms"):
                    comm.pop(name, None)
                self._inflight.pop(comm_id, None)
                self._wake(following, now_ms)
                return Claim("superseded", following)
            if status != Status.SENDING:
                self._moved(comm, Status.SENDING)
            if not retaken:
                comm.update(
                    status="sending",
                    lease_until_ms=str(now_ms + lease_ms),
                    token=token,
                    updated_ms=str(now_ms),
                )
                comm.setdefault("first_attempt_ms", str(now_ms))
                comm["attempts"] = str(int(comm.get("attempts", "0")) + 1)
                self._inflight[comm_id] = now_ms + lease_ms
            return Claim(
                "ok",
                None,
                Communication.from_hash(dict(comm)),
                prev["status"] if prev else "",
                utc_of(prev.get("sent_ms")) if prev else None,
            )

    def _wake(self, comm_id: str, now_ms: int) -> None:
        if comm_id in self._inflight:
            self._inflight[comm_id] = min(self._inflight[comm_id], now_ms)

    def finish_sends(self, ends: Sequence[AttemptEnd]) -> list[Finished | Exception]:
        answers: list[Finished | Exception] = []
        for e in ends:
            try:
                answers.append(
                    self.finish_send(e.comm_id, e.token, e.status, e.now_ms, e.next_attempt_ms, **e.fields)
                )
            except AmendsError as error:  # a status check_finish refuses: that end's alone
                answers.append(error)
        return answers

    def finish_send(
        self,
        comm_id: str,
        token: str,
        status: Status,
        now_ms: int,
        next_attempt_ms: int | None = None,
        **fields: str | int,
    ) -> tuple[bool, str | None]:
        check_finish(status, next_attempt_ms)
        with self._lock:
            comm = self._comms.get(comm_id)
            if comm is None or comm["status"] != "sending" or comm.get("token") != token:
                return False, None
            self._moved(comm, status)
            comm["status"] = str(status)
            comm.update({name: str(value) for name, value in fields.items()})
            if status == Status.SENT:
                self._count_lateness(int(comm.get("sent_ms", now_ms)) - int(comm["promised_ms"]))
            comm.pop("lease_until_ms", None)
            comm.pop("token", None)
            if status == "retrying":
                assert next_attempt_ms is not None
                comm["next_attempt_ms"] = str(next_attempt_ms)
                self._inflight[comm_id] = next_attempt_ms
                return True, None
            comm.pop("next_attempt_ms", None)
            self._inflight.pop(comm_id, None)
            following = comm.get("next")
            if following:
                self._wake(following, now_ms)
            return True, following or None

    def sweep(self, now_ms: int, recheck_ms: int, limit: int) -> list[str]:
        with self._lock:
            due = sorted((at, c) for c, at in self._inflight.items() if at <= now_ms)[:limit]
            for _, comm_id in due:
                self._inflight[comm_id] = now_ms + recheck_ms
            return [c for _, c in due]

    def unfinished_count(self) -> int:
        with self._lock:
            return len(self._inflight)

    def heartbeat(self, name: str, role: str, now_ms: int) -> None:
        with self._lock:
            self._heartbeats[name] = {"role": role, "at_ms": now_ms}

    def heartbeats(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(self._heartbeats)

    def page(
        self,
        keep: Callable[[Communication], bool],
        limit: int,
        before: Cursor | None = None,
        since: datetime | None = None,
    ) -> tuple[list[Communication], Cursor | None]:
        low = ms_of(since) if since else None
        with self._lock:
            ordered = sorted(self._log, reverse=True)
            found: list[Communication] = []
            for ms, comm_id in ordered:
                if low is not None and ms < low:
                    break
                if before is not None and (ms, comm_id) >= before:
                    continue
                comm = Communication.from_hash(dict(self._comms[comm_id]))
                if keep(comm):
                    found.append(comm)
                    if len(found) == limit:
                        return found, (ms, comm_id)
            return found, None

    def communications(self, since: datetime | None = None, batch: int = 500) -> Iterator[Communication]:
        low = ms_of(since) if since else None
        with self._lock:
            ordered = sorted(self._log)
            records = [
                Communication.from_hash(dict(self._comms[c])) for ms, c in ordered if low is None or ms >= low
            ]
        yield from records

    def _count(self, *fields: str, by: int = 1) -> None:
        for field in fields:
            self._counts[field] = self._counts.get(field, 0) + by

    def _moved(self, comm: dict[str, str], status: str) -> None:
        self._count(f"n:{comm['kind']}:{comm['status']}", by=-1)
        self._count(f"n:{comm['kind']}:{status}")

    def _count_lateness(self, late_ms: int) -> None:
        late_ms = max(0, late_ms)
        self._count(
            *(f"late:le:{bound}" for bound in keys.LATENESS_BUCKETS_MS if late_ms <= bound), "late:count"
        )
        self._count("late:sum_ms", by=late_ms)

    def incident_comms(self, *incident_ids: str) -> list[Communication]:
        with self._lock:
            ordered = sorted(self._log)
            return [
                Communication.from_hash(dict(self._comms[c]))
                for incident_id in incident_ids
                for _, c in ordered
                if self._comms[c]["incident_id"] == incident_id
            ]

    def threads(self, pairs: list[tuple[str, str]]) -> list[Thread]:
        return [self.thread(incident_id, stakeholder_id) for incident_id, stakeholder_id in pairs]

    def counters(self) -> Counters:
        with self._lock:
            return Counters.summed([dict(self._counts)])

    def remove_resolved_before(self, before_ms: int, now_ms: int) -> Removed:
        with self._lock:
            old = [
                i
                for i, incident in self._incidents.items()
                if not incident.is_open and (incident.resolved_ms or 0) < before_ms
            ]
            comms = sum(self._remove(incident_id) for incident_id in old)
            if old:
                total = self._removed
                self._removed = Removed(
                    total.incidents + len(old), total.communications + comms, now_ms, before_ms
                )
            return Removed(len(old), comms)

    def _remove(self, incident_id: str) -> int:
        del self._incidents[incident_id]
        self._opened.pop(incident_id, None)
        for event_id in [e for e, r in self._events.items() if r.incident and r.incident.id == incident_id]:
            del self._events[event_id]
        for pair in [p for p in (*self._threads, *self._triggers) if p[0] == incident_id]:
            self._threads.pop(pair, None)
            self._triggers.pop(pair, None)
        for pair in [p for p in self._feedback if p[0] == incident_id]:
            del self._feedback[pair]
        gone = {c for c, comm in self._comms.items() if comm["incident_id"] == incident_id}
        for comm_id in gone:
            comm = self._comms.pop(comm_id)
            self._count(f"n:{comm['kind']}:{comm['status']}", by=-1)
            self._inflight.pop(comm_id, None)
        self._log = [(ms, c) for ms, c in self._log if c not in gone]
        return len(gone)

    def removed(self) -> Removed:
        with self._lock:
            return self._removed
