"""The state store contract, run against Redis and the in-memory store alike:
exactly-once event application, idempotent creation, and the send compare-and-set."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from scheduler.memory_store import MemoryStore
from scheduler.store import RedisStore, Store


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.real)])
def store(request: pytest.FixtureRequest) -> Store:
    if request.param == "memory":
        return MemoryStore()
    client: redis.Redis = request.getfixturevalue("redis_client")
    return RedisStore(client)


def _comm(store: Store, trigger: str = "event:e1") -> tuple[str, bool]:
    def build(thread: dict[str, str]) -> tuple[dict[str, str | int], dict[str, str | int]]:
        return {"recipient": "a@acme.example", "created_ms": 1000, "promised_ms": 1000, "context": "{}"}, {
            "last_ms": 1000
        }

    return store.create_comm("INC-1", "acme", "acknowledgment", trigger, build)


def test_an_event_is_applied_once(store: Store) -> None:
    """Applying the same event id twice runs the change once and returns the stored record."""
    calls: list[Any] = []

    def apply(current: dict[str, Any] | None) -> dict[str, Any]:
        calls.append(current)
        return {"incident": {"id": "INC-1", "opened_ms": 1, "title": "x"}, "action": "open"}

    first = store.apply_event("e1", "INC-1", apply)
    second = store.apply_event("e1", "INC-1", apply)
    assert len(calls) == 1
    assert first["duplicate"] is False and second["duplicate"] is True
    assert store.incident("INC-1") == {"id": "INC-1", "opened_ms": 1, "title": "x"}


def test_a_communication_is_created_once_per_trigger(store: Store) -> None:
    """The same trigger gives the same communication id; a new trigger the next number in the thread."""
    assert _comm(store) == ("INC-1:acme:acknowledgment:1", True)
    assert _comm(store) == ("INC-1:acme:acknowledgment:1", False)
    assert _comm(store, "timer:5") == ("INC-1:acme:acknowledgment:2", True)
    assert store.thread("INC-1", "acme")["seq"] == "2"


def test_only_one_sender_wins_the_compare_and_set(store: Store) -> None:
    """Of two attempts to send the same communication, the second is told it is already sending."""
    comm_id, _ = _comm(store)
    assert store.begin_send(comm_id, 1_000, 60_000, "a") == "ok"
    assert store.begin_send(comm_id, 2_000, 60_000, "b") == "sending"
    assert store.finish_send(comm_id, "a", "sent", sent_ms=3_000)
    assert store.begin_send(comm_id, 4_000, 60_000, "c") == "sent"
    comm = store.comm(comm_id)
    assert comm is not None and comm.status == "sent" and comm.attempts == 1


def test_an_expired_lease_lets_another_attempt_send(store: Store) -> None:
    """After the `sending` lease expires a new attempt takes over and the old one can no longer write."""
    comm_id, _ = _comm(store)
    assert store.begin_send(comm_id, 1_000, 60_000, "dead") == "ok"
    assert store.begin_send(comm_id, 61_001, 60_000, "alive") == "ok"
    assert not store.finish_send(comm_id, "dead", "sent", sent_ms=61_002)
    assert store.finish_send(comm_id, "alive", "sent", sent_ms=61_003)
    comm = store.comm(comm_id)
    assert comm is not None and comm.attempts == 2 and comm.sent_at is not None


def test_retrying_and_failed_are_terminal_or_resumable(store: Store) -> None:
    """`retrying` may be sent again; `failed` and `cancelled` are final."""
    comm_id, _ = _comm(store)
    store.begin_send(comm_id, 1_000, 60_000, "a")
    store.finish_send(comm_id, "a", "retrying", last_error="451 later")
    assert store.begin_send(comm_id, 2_000, 60_000, "b") == "ok"
    store.finish_send(comm_id, "b", "failed", last_error="550 no")
    assert store.begin_send(comm_id, 3_000, 60_000, "c") == "failed"
    assert store.begin_send("INC-1:acme:update:99", 3_000, 60_000, "d") == "missing"


def test_rejected_events_are_kept_with_reasons(store: Store) -> None:
    """A rejected event is kept with its payload and each field's reason, newest first."""
    from datetime import UTC, datetime

    store.reject({"event_id": "a"}, [("type", "bad")], datetime(2026, 1, 1, tzinfo=UTC), "worker")
    store.reject({"event_id": "b"}, [("schema", "bad")], datetime(2026, 1, 2, tzinfo=UTC), "worker")
    records = store.rejected()
    assert [r["event"]["event_id"] for r in records] == ["b", "a"]
    assert records[1]["errors"] == [{"field": "type", "reason": "bad"}]


def test_the_log_lists_communications_in_creation_order(store: Store) -> None:
    """communications() yields oldest first and `since` leaves out older ones."""
    from datetime import UTC, datetime

    for n, created in enumerate((3_000, 1_000, 2_000)):

        def build(
            thread: dict[str, str], created: int = created
        ) -> tuple[dict[str, str | int], dict[str, str | int]]:
            return {
                "recipient": "a@acme.example",
                "created_ms": created,
                "promised_ms": created,
                "context": "{}",
            }, {}

        store.create_comm("INC-1", f"s{n}", "acknowledgment", "event:e", build)
    assert [c.stakeholder_id for c in store.communications()] == ["s1", "s2", "s0"]
    since = datetime.fromtimestamp(2, tz=UTC)
    assert [c.stakeholder_id for c in store.communications(since)] == ["s2", "s0"]
