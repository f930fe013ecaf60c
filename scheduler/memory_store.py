"""An in-process :class:`~scheduler.store.Store` with the same contract as the Redis one.

Used by ``amends preview`` (a simulated clock, nothing persisted) and by fast unit tests.
The contract tests in ``tests/test_store.py`` run against both.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from scheduler import keys
from scheduler.errors import AmendsError
from scheduler.store import STATUSES, Builder, Communication, ms_of, new_comm

__all__ = ["MemoryStore"]

_RESUMABLE = ("scheduled", "retrying")


class MemoryStore:
    """Events, incidents, threads and communications in dictionaries, behind one lock."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._events: dict[str, dict[str, Any]] = {}
        self._incidents: dict[str, dict[str, Any]] = {}
        self._opened: dict[str, int] = {}
        self._threads: dict[tuple[str, str], dict[str, str]] = {}
        self._triggers: dict[tuple[str, str], dict[str, str]] = {}
        self._comms: dict[str, dict[str, str]] = {}
        self._log: list[tuple[int, str]] = []
        self._rejected: list[dict[str, Any]] = []

    def apply_event(
        self, event_id: str, incident_id: str, apply: Callable[[dict[str, Any] | None], dict[str, Any]]
    ) -> dict[str, Any]:
        with self._lock:
            if event_id in self._events:
                return {**copy.deepcopy(self._events[event_id]), "duplicate": True}
            current = copy.deepcopy(self._incidents.get(incident_id))
            record = apply(current)
            self._events[event_id] = copy.deepcopy(record)
            if record.get("incident") is not None:
                self._incidents[incident_id] = copy.deepcopy(record["incident"])
                self._opened.setdefault(incident_id, record["incident"]["opened_ms"])
            return {**record, "duplicate": False}

    def mark_event_done(self, event_id: str) -> None:
        with self._lock:
            if event_id in self._events:
                self._events[event_id]["done"] = True

    def reject(self, payload: Any, errors: list[tuple[str, str]], now: datetime, source: str) -> None:
        with self._lock:
            self._rejected.insert(
                0,
                {
                    "rejected_at": now.astimezone(UTC).isoformat().replace("+00:00", "Z"),
                    "via": source,
                    "errors": [{"field": place, "reason": reason} for place, reason in errors],
                    "event": json.loads(json.dumps(payload, default=repr)),
                },
            )
            del self._rejected[keys.REJECTED_KEEP :]

    def rejected(self, limit: int = 100) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(self._rejected[:limit])

    def incident(self, incident_id: str) -> dict[str, Any] | None:
        with self._lock:
            return copy.deepcopy(self._incidents.get(incident_id))

    def incident_ids(self) -> list[str]:
        with self._lock:
            return sorted(self._opened, key=lambda i: (self._opened[i], i))

    def set_incident_stakeholders(self, incident_id: str, update: Callable[[list[str]], list[str]]) -> None:
        with self._lock:
            state = self._incidents[incident_id]
            state["stakeholders"] = update(list(state.get("stakeholders", [])))

    def thread(self, incident_id: str, stakeholder_id: str) -> dict[str, str]:
        with self._lock:
            return dict(self._threads.get((incident_id, stakeholder_id), {}))

    def update_thread(self, incident_id: str, stakeholder_id: str, **fields: str | int) -> None:
        with self._lock:
            thread = self._threads.setdefault((incident_id, stakeholder_id), {})
            thread.update({name: str(value) for name, value in fields.items()})

    def clear_thread_fields(self, incident_id: str, stakeholder_id: str, *names: str) -> None:
        with self._lock:
            thread = self._threads.get((incident_id, stakeholder_id), {})
            for name in names:
                thread.pop(name, None)

    def create_comm(
        self, incident_id: str, stakeholder_id: str, kind: str, trigger: str, build: Builder
    ) -> tuple[str, bool]:
        with self._lock:
            pair = (incident_id, stakeholder_id)
            triggers = self._triggers.setdefault(pair, {})
            if trigger in triggers:
                return triggers[trigger], False
            thread = self._threads.setdefault(pair, {})
            comm_id, record, thread_updates = new_comm(
                incident_id, stakeholder_id, kind, trigger, thread, build
            )
            triggers[trigger] = comm_id
            thread.update({name: str(value) for name, value in thread_updates.items()})
            self._comms[comm_id] = {name: str(value) for name, value in record.items()}
            self._log.append((int(record["created_ms"]), comm_id))
            return comm_id, True

    def comm(self, comm_id: str) -> Communication | None:
        with self._lock:
            raw = self._comms.get(comm_id)
            return Communication.from_hash(raw) if raw else None

    def begin_send(self, comm_id: str, now_ms: int, lease_ms: int, token: str) -> str:
        with self._lock:
            comm = self._comms.get(comm_id)
            if comm is None:
                return "missing"
            status = comm["status"]
            if status == "sending" and int(comm.get("lease_until_ms", "0")) > now_ms:
                return "sending"
            if status != "sending" and status not in _RESUMABLE:
                return status
            comm.update(
                status="sending", lease_until_ms=str(now_ms + lease_ms), token=token, updated_ms=str(now_ms)
            )
            comm["attempts"] = str(int(comm.get("attempts", "0")) + 1)
            return "ok"

    def finish_send(self, comm_id: str, token: str, status: str, **fields: str | int) -> bool:
        if status not in STATUSES:
            raise AmendsError(f"unknown status {status!r}")
        with self._lock:
            comm = self._comms.get(comm_id)
            if comm is None or comm["status"] != "sending" or comm.get("token") != token:
                return False
            comm["status"] = status
            comm.update({name: str(value) for name, value in fields.items()})
            comm.pop("lease_until_ms", None)
            comm.pop("token", None)
            return True

    def communications(self, since: datetime | None = None, batch: int = 500) -> Iterator[Communication]:
        low = ms_of(since) if since else None
        with self._lock:
            ordered = sorted(self._log)
            records = [
                Communication.from_hash(dict(self._comms[c])) for ms, c in ordered if low is None or ms >= low
            ]
        yield from records
