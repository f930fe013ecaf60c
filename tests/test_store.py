"""The state store contract, run against Redis and the in-memory store alike:
exactly-once event application, idempotent creation, and the send compare-and-set."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

import pytest
import redis

from scheduler.core.model import Action, Draft, EventRecord, Incident, IncidentState, Kind, Status, Thread
from scheduler.core.ports import DISPATCH_GRACE_MS, AttemptEnd, Claim, CommRequest, Removed, Store
from scheduler.errors import AmendsError
from scheduler.storage import keys
from scheduler.storage.memory_store import MemoryStore
from scheduler.storage.redis_store import RedisStore
from tests.helpers import draft_builder


@pytest.fixture(
    params=[
        "memory",
        pytest.param("redis", marks=pytest.mark.real),
        pytest.param("cluster", marks=pytest.mark.real),
    ]
)
def store(request: pytest.FixtureRequest) -> Store:
    if request.param == "memory":
        return MemoryStore()
    client: redis.Redis = request.getfixturevalue(f"{request.param}_client")
    return RedisStore(client)


def _comm(store: Store, trigger: str = "event:e1") -> tuple[str, bool]:
    def build(thread: Thread, incident: Incident | None) -> tuple[Draft, Thread]:
        thread.last_ms = 1000
        return Draft(
            recipient="a@acme.example", channel="email", created_ms=1000, promised_ms=1000, context={}
        ), thread

    return store.create_comm("INC-1", "acme", Kind.ACKNOWLEDGMENT, trigger, build)


def test_an_event_is_applied_once(store: Store) -> None:
    """Applying the same event id twice runs the change once and returns the stored record."""
    calls: list[Any] = []

    def apply(current: Incident | None) -> EventRecord:
        calls.append(current)
        return EventRecord("e1", incident=Incident(id="INC-1", opened_ms=1, title="x"), action=Action.OPEN)

    first = store.apply_event("e1", "INC-1", apply)
    second = store.apply_event("e1", "INC-1", apply)
    assert len(calls) == 1
    assert first.duplicate is False and second.duplicate is True
    assert second.action == Action.OPEN
    assert store.incident("INC-1") == Incident(id="INC-1", opened_ms=1, title="x")


def test_a_communication_is_created_once_per_trigger(store: Store) -> None:
    """The same trigger gives the same communication id; a new trigger the next number in the thread."""
    assert _comm(store) == ("INC-1:acme:acknowledgment:1", True)
    assert _comm(store) == ("INC-1:acme:acknowledgment:1", False)
    assert _comm(store, "timer:5") == ("INC-1:acme:acknowledgment:2", True)
    assert store.thread("INC-1", "acme").seq == 2


def test_only_one_sender_wins_the_compare_and_set(store: Store) -> None:
    """Of two attempts to send the same communication, the second is told it is already sending."""
    comm_id, _ = _comm(store)
    assert store.begin_send(comm_id, 1_000, 60_000, "a").state == "ok"
    assert store.begin_send(comm_id, 2_000, 60_000, "b").state == "sending"
    assert store.finish_send(comm_id, "a", "sent", 3_000, sent_ms=3_000) == (True, None)
    assert store.begin_send(comm_id, 4_000, 60_000, "c").state == "sent"
    comm = store.comm(comm_id)
    assert comm is not None and comm.status == "sent" and comm.attempts == 1


def test_an_expired_lease_lets_another_attempt_send(store: Store) -> None:
    """After the `sending` lease expires a new attempt takes over and the old one can no longer write."""
    comm_id, _ = _comm(store)
    assert store.begin_send(comm_id, 1_000, 60_000, "dead").state == "ok"
    assert store.begin_send(comm_id, 61_001, 60_000, "alive").state == "ok"
    assert store.finish_send(comm_id, "dead", "sent", 61_002, sent_ms=61_002) == (False, None)
    assert store.finish_send(comm_id, "alive", "sent", 61_003, sent_ms=61_003)[0]
    comm = store.comm(comm_id)
    assert comm is not None and comm.attempts == 2 and comm.sent_at is not None


def test_retrying_and_failed_are_terminal_or_resumable(store: Store) -> None:
    """`retrying` may be sent again once its next attempt is due; `failed` and `cancelled` are final."""
    comm_id, _ = _comm(store)
    store.begin_send(comm_id, 1_000, 60_000, "a")
    store.finish_send(comm_id, "a", "retrying", 1_100, next_attempt_ms=5_000, last_error="451 later")
    assert store.begin_send(comm_id, 2_000, 60_000, "b").state == "early"
    assert store.begin_send(comm_id, 5_000, 60_000, "b").state == "ok"
    store.finish_send(comm_id, "b", "failed", 5_100, last_error="550 no")
    assert store.begin_send(comm_id, 6_000, 60_000, "c").state == "failed"
    assert store.begin_send("INC-1:acme:update:99", 6_000, 60_000, "d").state == "missing"
    comm = store.comm(comm_id)
    assert comm is not None and comm.first_attempt_at == datetime.fromtimestamp(1, tz=UTC)


def _thread_of(store: Store, *triggers: str, no_news: bool = False) -> list[str]:
    ids = []
    for trigger in triggers:
        build = draft_builder(no_news=no_news and trigger.startswith("timer:"))
        comm_id, _ = store.create_comm("INC-1", "acme", Kind.UPDATE, trigger, build)
        ids.append(comm_id)
    return ids


def test_a_builder_with_nothing_to_send_creates_nothing_and_is_asked_once(store: Store) -> None:
    """A builder returning None leaves no communication, and the same trigger stays settled."""
    calls: list[Any] = []

    def nothing(thread: Thread, incident: Incident | None) -> None:
        calls.append(incident)
        return None

    assert store.create_comm("INC-1", "acme", Kind.UPDATE, "event:e2", nothing) == ("", False)
    assert store.create_comm("INC-1", "acme", Kind.UPDATE, "event:e2", nothing) == ("", False)
    assert len(calls) == 1 and list(store.communications()) == []


def test_a_message_waits_until_the_previous_one_of_its_thread_has_ended(store: Store) -> None:
    """Message n is not taken for sending while message n-1 is scheduled, sending or retrying; its end wakes n."""
    first, second = _thread_of(store, "event:a", "event:b")
    assert store.begin_send(second, 1_000, 60_000, "b").state == "waiting"
    assert store.begin_send(first, 1_000, 60_000, "a").state == "ok"
    assert store.begin_send(second, 1_500, 60_000, "b").state == "waiting"
    store.finish_send(first, "a", "retrying", 2_000, next_attempt_ms=9_000, last_error="451")
    assert store.begin_send(second, 3_000, 60_000, "b").state == "waiting"
    assert store.sweep(3_000, 60_000, 10) == []  # nothing is due a look before the retry
    assert store.sweep(9_000, 60_000, 10) == [first]
    assert store.begin_send(first, 9_000, 60_000, "a2").state == "ok"
    assert store.finish_send(first, "a2", "failed", 9_500, last_error="550") == (True, second)
    assert store.sweep(9_500, 60_000, 10) == [second]  # woken at once, should the dispatch be lost
    assert store.begin_send(second, 9_600, 60_000, "b").state == "ok"


def test_a_no_news_update_with_a_newer_message_behind_it_is_superseded(store: Store) -> None:
    """A regular update with nothing new is cancelled ("superseded") once a newer message exists, which is woken."""
    ack, update, change = _thread_of(store, "acknowledgment", "timer:1", "event:c", no_news=True)
    assert store.begin_send(ack, 1_000, 60_000, "a").state == "ok"
    store.finish_send(ack, "a", "sent", 1_100, sent_ms=1_100)
    assert store.begin_send(update, 1_200, 60_000, "u") == Claim("superseded", change)
    comm = store.comm(update)
    assert comm is not None and comm.status == "cancelled" and comm.last_error == f"superseded by {change}"
    assert store.begin_send(change, 1_300, 60_000, "c").state == "ok"


def test_every_unfinished_communication_is_swept_until_it_ends(store: Store) -> None:
    """Created, leased or retrying communications come back from the sweep when due; ended ones never."""
    comm_id, _ = _comm(store)
    assert store.unfinished_count() == 1
    assert store.sweep(1_000, 60_000, 10) == []
    assert store.sweep(1_000 + DISPATCH_GRACE_MS, 60_000, 10) == [comm_id]
    assert store.sweep(1_000 + DISPATCH_GRACE_MS, 60_000, 10) == []  # pushed ahead: not handed out twice
    assert store.begin_send(comm_id, 70_000, 30_000, "dead").state == "ok"
    assert store.sweep(99_999, 60_000, 10) == []
    assert store.sweep(100_000, 60_000, 10) == [comm_id]  # the dead attempt's lease expired
    assert store.begin_send(comm_id, 100_000, 30_000, "b").state == "ok"
    store.finish_send(comm_id, "b", "sent", 100_001, sent_ms=100_001)
    assert store.unfinished_count() == 0
    assert store.sweep(10**12, 60_000, 10) == []


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
        store.create_comm("INC-1", f"s{n}", Kind.ACKNOWLEDGMENT, "event:e", draft_builder(created))
    assert [c.stakeholder_id for c in store.communications()] == ["s1", "s2", "s0"]
    since = datetime.fromtimestamp(2, tz=UTC)
    assert [c.stakeholder_id for c in store.communications(since)] == ["s2", "s0"]


def test_the_log_pages_newest_first_with_a_cursor_through_equal_times(store: Store) -> None:
    """Pages of two follow one another newest first, ties in creation time included, and end with no cursor."""
    for n in range(5):
        created = 1_000 if n < 3 else 2_000  # three share one millisecond
        store.create_comm("INC-1", f"s{n}", Kind.ACKNOWLEDGMENT, "event:e", draft_builder(created))
    pages, cursor = [], None
    while True:
        found, cursor = store.page(lambda c: True, 2, cursor)
        pages.append([c.stakeholder_id for c in found])
        if cursor is None:
            break
    assert pages == [["s4", "s3"], ["s2", "s1"], ["s0"]]
    found, cursor = store.page(
        lambda c: c.stakeholder_id != "s3", 10, None, datetime.fromtimestamp(1.5, tz=UTC)
    )
    assert [c.stakeholder_id for c in found] == ["s4"] and cursor is None


def test_counters_follow_each_communication_through_its_statuses(store: Store) -> None:
    """What /metrics reads is kept as sends start and end: created, current status, lateness."""
    sent, _ = store.create_comm("INC-1", "acme", Kind.ACKNOWLEDGMENT, "event:e", draft_builder(1_000))
    failed, _ = store.create_comm("INC-2", "acme", Kind.ACKNOWLEDGMENT, "event:e", draft_builder(1_000))
    store.create_comm("INC-3", "acme", Kind.ACKNOWLEDGMENT, "event:e", draft_builder(1_000))
    assert store.begin_send(sent, 2_000, 60_000, "a").state == "ok"
    store.finish_send(sent, "a", Status.SENT, 2_500, sent_ms=2_500)
    assert store.begin_send(failed, 2_000, 60_000, "b").state == "ok"
    store.finish_send(failed, "b", Status.RETRYING, 2_100, next_attempt_ms=3_000)
    assert store.begin_send(failed, 3_000, 60_000, "c").state == "ok"
    store.finish_send(failed, "c", Status.FAILED, 3_100)

    counters = store.counters()
    assert counters.created == {"acknowledgment": 3}
    now = {status: n for (kind, status), n in counters.current.items() if n}
    assert now == {"sent": 1, "failed": 1, "scheduled": 1}
    assert (counters.late_count, counters.late_sum_ms) == (1, 1_500)
    assert {b: counters.late_le_ms.get(b, 0) for b in (1_000, 2_000, 300_000)} == {
        1_000: 0,
        2_000: 1,
        300_000: 1,
    }


def test_an_incidents_communications_are_read_through_its_own_index(store: Store) -> None:
    store.create_comm("INC-1", "acme", Kind.ACKNOWLEDGMENT, "event:e", draft_builder(1_000))
    store.create_comm("INC-2", "acme", Kind.ACKNOWLEDGMENT, "event:e", draft_builder(1_500))
    store.create_comm("INC-1", "globex", Kind.ACKNOWLEDGMENT, "event:e", draft_builder(2_000))
    found = store.incident_comms("INC-1")
    assert [c.stakeholder_id for c in found] == ["acme", "globex"]
    assert store.incident_comms("INC-9") == []


def _incident(store: Store, incident_id: str, resolved_ms: int | None) -> None:
    """An incident opened at 1 000 ms, resolved at ``resolved_ms`` (None: still open), with
    one communication to acme and its event."""

    def apply(current: Incident | None) -> EventRecord:
        state = IncidentState.RESOLVED if resolved_ms else IncidentState.OPEN
        incident = Incident(
            id=incident_id, opened_ms=1_000, state=state, resolved_ms=resolved_ms, stakeholders=["acme"]
        )
        return EventRecord(f"{incident_id}-e", incident=incident, action=Action.OPEN)

    store.apply_event(f"{incident_id}-e", incident_id, apply)
    store.create_comm(incident_id, "acme", Kind.ACKNOWLEDGMENT, "event:e", draft_builder(1_000))
    store.record_rating(incident_id, "acme", 5, datetime(2026, 11, 26, tzinfo=UTC))


def test_retention_removes_old_resolved_incidents_with_everything_of_theirs(store: Store) -> None:
    _incident(store, "INC-old", resolved_ms=2_000)
    _incident(store, "INC-recent", resolved_ms=9_000)
    _incident(store, "INC-open", resolved_ms=None)

    removed = store.remove_resolved_before(5_000, now_ms=10_000)

    assert (removed.incidents, removed.communications) == (1, 1)
    assert store.incident("INC-old") is None and store.incident_comms("INC-old") == []
    assert store.feedback_for("INC-old") == {} and store.thread("INC-old", "acme").seq == 0
    assert sorted(store.incident_ids()) == ["INC-open", "INC-recent"]
    assert {c.incident_id for c in store.communications()} == {"INC-open", "INC-recent"}
    assert store.counters().current[("acknowledgment", "scheduled")] == 2
    # its event id is forgotten with it; the kept incidents' are remembered
    assert store.apply_event("INC-recent-e", "INC-recent", lambda _: EventRecord("x")).duplicate
    assert store.removed() == Removed(1, 1, 10_000, 5_000)
    assert store.remove_resolved_before(5_000, now_ms=11_000) == Removed(0, 0)


def test_many_communications_created_at_once_are_what_one_by_one_would_make(store: Store) -> None:
    """A fan-out's batch: new threads, a thread twice, an existing trigger, a fold into the
    acknowledgment, nothing to send; and more threads than one transaction takes."""
    existing, _ = store.create_comm("INC-1", "s-000", Kind.ACKNOWLEDGMENT, "acknowledgment", draft_builder(1))
    requests = [
        CommRequest(f"s-{n:03d}", Kind.ACKNOWLEDGMENT, "acknowledgment", draft_builder(2)) for n in range(120)
    ]
    requests += [
        CommRequest(
            "s-001", Kind.UPDATE, "event:e2", draft_builder(3)
        ),  # s-001 again, after its acknowledgment
        CommRequest(
            "new", Kind.UPDATE, "event:e2", draft_builder(3), (Kind.ACKNOWLEDGMENT, "acknowledgment")
        ),
        CommRequest("quiet", Kind.UPDATE, "event:e2", lambda thread, incident: None),
    ]

    made = store.create_comms("INC-1", requests)

    assert made[0] == (existing, False)
    assert made[1:120] == [(f"INC-1:s-{n:03d}:acknowledgment:1", True) for n in range(1, 120)]
    assert made[120:] == [("INC-1:s-001:update:2", True), ("INC-1:new:acknowledgment:1", True), ("", False)]
    assert store.create_comms("INC-1", requests) == [(c, False) for c, _ in made]  # once per trigger
    assert store.thread("INC-1", "s-001").seq == 2 and store.thread("INC-1", "s-119").seq == 1
    update = store.comm("INC-1:s-001:update:2")
    assert update is not None and update.prev_id == "INC-1:s-001:acknowledgment:1"
    assert store.unfinished_count() == 122


@pytest.mark.real
@pytest.mark.parametrize("server", ["redis", "cluster"])
def test_a_batch_whose_thread_another_writer_changed_meanwhile_is_done_again(
    server: str, request: pytest.FixtureRequest
) -> None:
    """The batch reads after WATCH: a message another worker creates for one of its threads
    in between makes the transaction start over, so the batch numbers after it."""
    store = RedisStore(request.getfixturevalue(f"{server}_client"))
    other = RedisStore(request.getfixturevalue(f"{server}_client"))
    calls = []

    def racing(thread: Thread, incident: Incident | None) -> tuple[Draft, Thread]:
        calls.append(thread.seq)
        if len(calls) == 1:  # another worker acknowledges this thread first
            other.create_comm("INC-1", "acme", Kind.ACKNOWLEDGMENT, "acknowledgment", draft_builder(1))
        return draft_builder(2)(thread, incident)

    made = store.create_comms(
        "INC-1",
        [
            CommRequest("globex", Kind.ACKNOWLEDGMENT, "acknowledgment", draft_builder(2)),
            CommRequest("acme", Kind.UPDATE, "event:e2", racing, (Kind.ACKNOWLEDGMENT, "acknowledgment")),
        ],
    )

    assert calls == [0, 1]
    assert made == [("INC-1:globex:acknowledgment:1", True), ("INC-1:acme:update:2", True)]
    assert store.thread("INC-1", "acme").seq == 2
    assert {c.id for c in store.incident_comms("INC-1")} == {
        "INC-1:acme:acknowledgment:1",
        "INC-1:globex:acknowledgment:1",
        "INC-1:acme:update:2",
    }


def test_a_group_of_ends_is_written_as_each_would_be_alone(store: Store) -> None:
    """finish_sends answers each end as finish_send would: written, refused (another attempt's
    token), and the thread's next message once its predecessor is sent."""
    first, _ = store.create_comm("INC-1", "acme", Kind.ACKNOWLEDGMENT, "acknowledgment", draft_builder(1_000))
    second, _ = store.create_comm("INC-1", "acme", Kind.UPDATE, "event:e2", draft_builder(2_000))
    other, _ = store.create_comm(
        "INC-1", "globex", Kind.ACKNOWLEDGMENT, "acknowledgment", draft_builder(1_000)
    )
    store.begin_sends([(first, "t1"), (other, "t3")], 5_000, 60_000)

    answers = store.finish_sends(
        [
            AttemptEnd(first, "t1", Status.SENT, 6_000, fields={"sent_ms": 6_000, "message": "Hello"}),
            AttemptEnd(other, "stale", Status.SENT, 6_000, fields={"sent_ms": 6_000}),
            AttemptEnd(other, "t3", Status.RETRYING, 6_000, 9_000, {"last_error": "451 try later"}),
        ]
    )

    assert answers == [(True, second), (False, None), (True, None)]
    sent, retrying = store.comm(first), store.comm(other)
    assert sent is not None and (sent.status, sent.message) == ("sent", "Hello")
    assert retrying is not None and (retrying.status, retrying.last_error) == ("retrying", "451 try later")
    assert store.finish_sends([]) == []
    # a status no store accepts is that end's answer alone
    store.begin_sends([(second, "t2")], 7_000, 60_000)
    refused, written = store.finish_sends(
        [
            AttemptEnd(second, "t2", cast(Status, "delivered"), 8_000),
            AttemptEnd(second, "t2", Status.SENT, 8_000, fields={"sent_ms": 8_000}),
        ]
    )
    assert isinstance(refused, AmendsError) and "delivered" in str(refused)
    assert written == (True, None)


@pytest.mark.real
def test_an_end_that_redis_refuses_answers_with_its_error_and_the_others_are_written(
    redis_client: redis.Redis,
) -> None:
    """One end's script failing in the pipeline (here: its hash is not a hash) costs that end alone."""
    store = RedisStore(redis_client)
    good, _ = store.create_comm("INC-1", "acme", Kind.ACKNOWLEDGMENT, "acknowledgment", draft_builder(1_000))
    store.begin_sends([(good, "t1")], 5_000, 60_000)
    broken = "INC-1:globex:acknowledgment:1"
    redis_client.set(keys.comm(broken), "not a hash")

    answers = store.finish_sends(
        [
            AttemptEnd(broken, "t2", Status.SENT, 6_000, fields={"sent_ms": 6_000}),
            AttemptEnd(good, "t1", Status.SENT, 6_000, fields={"sent_ms": 6_000}),
        ]
    )

    assert isinstance(answers[0], redis.ResponseError) and "WRONGTYPE" in str(answers[0])
    assert answers[1] == (True, None)
    written = store.comm(good)
    assert written is not None and written.status == "sent"
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        store.finish_send(broken, "t2", Status.SENT, 6_000, sent_ms=6_000)


def test_a_group_is_taken_for_sending_as_each_would_be_alone(store: Store) -> None:
    first, _ = store.create_comm("INC-1", "acme", Kind.ACKNOWLEDGMENT, "acknowledgment", draft_builder(1_000))
    second, _ = store.create_comm("INC-1", "acme", Kind.UPDATE, "event:e2", draft_builder(2_000))
    other, _ = store.create_comm(
        "INC-1", "globex", Kind.ACKNOWLEDGMENT, "acknowledgment", draft_builder(1_000)
    )

    claims = store.begin_sends(
        [(first, "t1"), (second, "t2"), (other, "t3"), ("INC-1:nobody:update:9", "t4")], 5_000, 60_000
    )

    assert [c.state for c in claims] == [
        "ok",
        "waiting",
        "ok",
        "missing",
    ]  # the update waits for its acknowledgment
    assert claims[0].comm is not None and claims[0].comm.id == first and claims[0].comm.attempts == 1
    assert claims[2].comm is not None and claims[2].comm.recipient == "a@acme.example"
    assert store.begin_send(first, 5_000, 60_000, "t5").state == "sending"  # t1 holds it
