"""The engine over the in-memory stores: events, order, timers and cadence, resolution, opt-outs, promises, faults between steps. Fast, no Redis.

Each test drives :class:`~scheduler.core.engine.Engine` directly with a list as its dispatch, so
what an event or a timer causes is visible in milliseconds; the Redis and process tests
keep what only they can show.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.core.config import Config, parse_config
from scheduler.core.engine import Engine
from scheduler.core.events import Event, parse_event
from scheduler.core.incidents import apply_event
from scheduler.core.model import Kind, Status, ms_of, utc_of
from scheduler.core.promises import open_promises, promise_report
from scheduler.errors import TimerStoreError
from scheduler.storage.memory_store import MemoryStore
from scheduler.storage.timers import MemoryTimerStore
from tests.conftest import BASE_CONFIG, event

T0 = datetime(2026, 11, 26, 14, 3, tzinfo=UTC)
CONTENT = ("title", "severity", "services", "status", "summary", "impact", "plan", "owner")


class Outbox:
    def __init__(self) -> None:
        self.sent: list[str] = []

    def deliver(self, comm_id: str) -> None:
        self.sent.append(comm_id)

    def flush(self) -> None:
        pass


def engine(
    store: Any = None, timers: Any = None, opted_out: Callable[[str, str], bool] | None = None
) -> Engine:
    config: Config = parse_config(BASE_CONFIG)
    return Engine(store or MemoryStore(), timers or MemoryTimerStore(), lambda: config, Outbox(), opted_out)


def ev(kind: str, minute: int, event_id: str | None = None, **fields: Any) -> Event:
    return parse_event(
        event(kind, event_id=event_id or f"{kind}-{minute}", at=T0 + timedelta(minutes=minute), **fields)
    )


def apply_all(e: Engine, events: Iterable[Event], now: datetime = T0 + timedelta(hours=1)) -> None:
    """Handle ``events`` in the order given; a waiting one is tried again after the others, as a retry is."""
    queue = list(events)
    for _ in range(len(queue) * len(queue) + 1):
        if not queue:
            return
        current = queue.pop(0)
        if e.handle_event(current, now).waiting:
            queue.append(current)
    raise AssertionError(f"events never applied: {queue}")


def comms(e: Engine) -> list[Any]:
    return list(e.store.communications())


def test_an_update_that_arrives_before_its_opened_waits_and_is_not_rejected() -> None:
    """`updated` before `opened` is reported waiting, keeps nothing, and applies once `opened` did."""
    e = engine()
    update = ev("updated", 1, status="identified")
    outcome = e.handle_event(update, T0)
    assert outcome.waiting and "INC-1" in outcome.waiting and not outcome.rejected
    assert e.store.incident("INC-1") is None and e.store.rejected() == []
    e.handle_event(ev("opened", 0), T0)
    assert not e.handle_event(update, T0).waiting
    assert e.store.incident("INC-1").status == "identified"


def test_a_stale_update_never_moves_a_field_back_and_sends_nothing() -> None:
    """An update older than the incident's value of a field changes nothing and composes nothing for it."""
    e = engine()
    apply_all(e, [ev("opened", 0), ev("updated", 5, status="monitoring")])
    before = len(comms(e))
    outcome = e.handle_event(ev("updated", 3, status="identified"), T0 + timedelta(hours=1))
    assert e.store.incident("INC-1").status == "monitoring"
    assert outcome.communications == () and len(comms(e)) == before


def test_a_stale_resolution_does_not_close_an_incident_reopened_after_it() -> None:
    """opened, then reopened (t3) before a late resolved (t2): as in occurred order, the incident ends open."""
    e = engine()
    apply_all(e, [ev("opened", 0), ev("reopened", 3), ev("resolved", 2)])
    incident = e.store.incident("INC-1")
    assert incident.is_open and incident.status == "investigating"
    assert not [c for c in comms(e) if c.kind == "resolution"]


_FIELD_VALUES = {
    "status": ["investigating", "identified", "monitoring"],
    "severity": ["sev1", "sev2", "sev3"],
    "summary": ["a", "b", "c"],
    "owner": ["x", "y"],
}


@st.composite
def histories(draw: st.DrawFn) -> list[Event]:
    """An incident's life: opened first in time, then updates, resolutions and reopenings at distinct times."""
    count = draw(st.integers(min_value=1, max_value=6))
    minutes = draw(st.lists(st.integers(1, 500), min_size=count, max_size=count, unique=True))
    events = [ev("opened", 0, event_id="e0")]
    for n, minute in enumerate(sorted(minutes), start=1):
        kind = draw(st.sampled_from(["updated", "updated", "resolved", "reopened"]))
        fields = {}
        if kind == "updated":
            name = draw(st.sampled_from(sorted(_FIELD_VALUES)))
            fields = {name: draw(st.sampled_from(_FIELD_VALUES[name]))}
        events.append(ev(kind, minute, event_id=f"e{n}", **fields))
    return events


@settings(max_examples=150, deadline=None)
@given(histories(), st.randoms(use_true_random=False))
def test_any_arrival_order_ends_as_occurred_order(history: list[Event], rnd: Any) -> None:
    """However an incident's events are shuffled, its fields and state end as if applied in occurred_at order."""
    in_order = engine()
    apply_all(in_order, history)
    shuffled = list(history)
    rnd.shuffle(shuffled)
    out_of_order = engine()
    apply_all(out_of_order, shuffled)
    expected, got = in_order.store.incident("INC-1"), out_of_order.store.incident("INC-1")
    assert got is not None and expected is not None
    assert (got.content(), got.state) == (expected.content(), expected.state)


class FlakyTimers(MemoryTimerStore):
    """A timer store whose arm and cancel fail on the calls numbered in ``fail_on``."""

    def __init__(self, fail_on: set[int]) -> None:
        super().__init__()
        self.fail_on = fail_on
        self.calls = itertools.count(1)

    def _maybe_fail(self) -> None:
        if next(self.calls) in self.fail_on:
            raise TimerStoreError("could not arm timer: Connection refused")

    def arm(self, member: str, due_ms: int) -> None:
        self._maybe_fail()
        super().arm(member, due_ms)

    def cancel(self, member: str) -> bool:
        self._maybe_fail()
        return super().cancel(member)


@pytest.mark.parametrize("failing_call", range(1, 7))  # a cancel and an arm per stakeholder
def test_a_timer_store_error_mid_resolution_is_retried_to_the_same_end(failing_call: int) -> None:
    """A timer-store error at any step of a resolution is raised (for a retry), and the retry informs everyone."""
    timers = FlakyTimers(set())
    e = engine(timers=timers)
    apply_all(e, [ev("opened", 0)])
    timers.fail_on, timers.calls = {failing_call}, itertools.count(1)
    resolved = ev("resolved", 30)
    with pytest.raises(TimerStoreError):
        e.handle_event(resolved, T0 + timedelta(minutes=31))
    e.handle_event(resolved, T0 + timedelta(minutes=31))  # what Dramatiq's retry does
    resolutions = {c.stakeholder_id for c in comms(e) if c.kind == "resolution"}
    assert resolutions == {"acme-finance", "globex", "payments-eng"}
    assert e.store.rejected() == []
    assert all(timers.due_ms(f"f|INC-1|{s}") is not None for s in resolutions)


class FailOnce(MemoryStore):
    """A store whose ``set_incident_stakeholders`` fails once, as if the process died there."""

    failed = False

    def set_incident_stakeholders(self, incident_id: str, update: Callable[[list[str]], list[str]]) -> None:
        if not self.failed:
            self.failed = True
            raise TimerStoreError("Redis went away")
        super().set_incident_stakeholders(incident_id, update)


def test_a_reconcile_that_dies_halfway_leaves_no_newcomer_unacknowledged() -> None:
    """A crash between composing a newcomer's acknowledgment and recording it is repaired by the next reconcile."""
    store = FailOnce()
    config = parse_config(BASE_CONFIG)
    e = Engine(store, MemoryTimerStore(), lambda: config, Outbox())
    apply_all(e, [ev("opened", 0)])
    grown = {
        **BASE_CONFIG,
        "stakeholders": [
            *BASE_CONFIG["stakeholders"],
            {"id": "newco", "name": "Newco", "email": "ops@newco.example", "services": ["payments"]},
        ],
    }
    bigger = parse_config(grown)
    e.config = lambda: bigger
    with pytest.raises(TimerStoreError):
        e.reconcile(T0 + timedelta(minutes=1))
    e.reconcile(T0 + timedelta(minutes=2))
    acks = [c for c in comms(e) if c.stakeholder_id == "newco"]
    assert [c.kind for c in acks] == ["acknowledgment"]
    assert "newco" in store.incident("INC-1").stakeholders  # type: ignore[union-attr]


class DiesHandingOver(Outbox):
    """A dispatch that holds ids until ``flush``, as Dramatiq's does, and dies in the first flush."""

    def __init__(self) -> None:
        super().__init__()
        self.held: list[str] = []
        self.died = False

    def deliver(self, comm_id: str) -> None:
        self.held.append(comm_id)

    def flush(self) -> None:
        if not self.died:
            self.died = True
            self.held.clear()  # what the dead process held is gone with it
            raise TimerStoreError("the worker was killed")
        self.sent += self.held
        self.held.clear()


def test_an_event_whose_worker_dies_handing_over_is_redelivered_and_hands_over_again() -> None:
    """The event counts as done only once its communications are handed over: a worker killed
    in between leaves it not done, and the redelivered event dispatches every one of them
    at once (not a minute later, when the sweep would find them)."""
    outbox = DiesHandingOver()
    config = parse_config(BASE_CONFIG)
    e = Engine(MemoryStore(), MemoryTimerStore(), lambda: config, outbox)
    opened = ev("opened", 0)
    with pytest.raises(TimerStoreError):
        e.handle_event(opened, T0)
    assert outbox.sent == []
    outcome = e.handle_event(opened, T0 + timedelta(seconds=1))
    assert outcome.duplicate
    acks = sorted(c.id for c in comms(e))
    assert acks and sorted(outbox.sent) == acks
    assert e.handle_event(opened, T0 + timedelta(seconds=2)) == type(outcome)(duplicate=True)


def test_an_opted_out_stakeholder_gets_no_row_per_cadence() -> None:
    """Once a stakeholder opts out, its due updates compose nothing and its thread stops."""
    opted: set[str] = set()
    e = engine(opted_out=lambda sid, iid: sid in opted)
    apply_all(e, [ev("opened", 0)], now=T0)
    opted.add("globex")
    timers = e.timers
    now = T0
    for _ in range(10):
        now += timedelta(minutes=35)
        for member, due_ms in timers.claim(int(now.timestamp() * 1000), 60_000, 100):
            e.fire_timer(member, due_ms, now)
            timers.ack_claims([(member, due_ms)])
    globex = [c for c in comms(e) if c.stakeholder_id == "globex"]
    assert [c.kind for c in globex] == ["acknowledgment"]
    assert timers.due_ms("u|INC-1|globex") is None
    assert e.store.thread("INC-1", "globex").promised_ms is None
    assert len([c for c in comms(e) if c.stakeholder_id == "acme-finance"]) > 5


def test_two_updates_racing_never_tell_a_reader_a_field_went_back() -> None:
    """A's change applied, B applied and told, then A's follow-up: no message moves B's summary back."""
    e = engine()
    apply_all(e, [ev("opened", 0)])
    a = ev("updated", 5, event_id="a", status="identified")
    b = ev("updated", 5, event_id="b", summary="DB failover")
    now = T0 + timedelta(minutes=6)
    record_a = e.store.apply_event(
        a.event_id, "INC-1", lambda current: apply_event(a, current, now, lambda _: [])
    )
    e.handle_event(b, now)  # applied and followed up at once: its update tells both changes
    e._follow_up(record_a, now)  # A's follow-up comes late: an earlier message already told it
    for stakeholder in ("acme-finance", "globex", "payments-eng"):
        updates = [c for c in comms(e) if c.stakeholder_id == stakeholder and c.kind == "update"]
        assert len(updates) == 1
        told = {c["field"]: c["new"] for c in updates[0].context["changes"]}
        assert told == {"status": "identified", "summary": "DB failover"}


def test_an_update_dated_before_the_opening_changes_nothing() -> None:
    """An update older than its incident's opening does not replace the defaults the opening set."""
    e = engine()
    apply_all(e, [ev("opened", 10)])
    outcome = e.handle_event(ev("updated", 5, status="monitoring"), T0 + timedelta(minutes=11))
    assert e.store.incident("INC-1").status == "investigating"
    assert outcome.communications == ()


# -- cadence, timers, resolution and promises, on a fake clock ---------------------------


def at_minute(minute: float) -> datetime:
    return T0 + timedelta(minutes=minute)


def advance(e: Engine, until: datetime) -> None:
    """Fire every timer due up to ``until``, each at its own due time, as the scheduler would."""
    while (wakeup := e.timers.next_wakeup_ms()) is not None and wakeup <= ms_of(until):
        now = utc_of(wakeup)
        assert now is not None
        claims = e.timers.claim(wakeup, 30_000, 100)
        for member, due_ms in claims:
            e.fire_timer(member, due_ms, now)
        e.timers.ack_claims(claims)


def thread_of(e: Engine, stakeholder: str) -> list[Any]:
    return [c for c in comms(e) if c.stakeholder_id == stakeholder]


def test_an_opening_acknowledges_each_concerned_stakeholder_once_and_promises_its_cadence() -> None:
    e = engine()
    outcome = e.handle_event(ev("opened", 0), T0)
    again = e.handle_event(ev("opened", 0), T0 + timedelta(seconds=5))
    acks = {c.stakeholder_id: c for c in comms(e)}
    assert set(acks) == {"acme-finance", "globex", "payments-eng"}  # search-team is not concerned
    assert all(c.kind == Kind.ACKNOWLEDGMENT and c.status == Status.SCHEDULED for c in acks.values())
    assert len(outcome.communications) == 3 and again.duplicate and again.communications == ()
    # sev1: 15 minutes for acme-finance, the default 30 for the others; the timer is the promise
    assert acks["acme-finance"].next_update_at == at_minute(15)
    assert acks["globex"].next_update_at == at_minute(30)
    assert e.timers.due_ms("u|INC-1|acme-finance") == ms_of(at_minute(15))
    assert e.store.thread("INC-1", "acme-finance").promised_ms == ms_of(at_minute(15))


def test_a_due_timer_sends_an_update_without_news_and_promises_the_next() -> None:
    e = engine()
    e.handle_event(ev("opened", 0), T0)
    advance(e, at_minute(31))
    acme = thread_of(e, "acme-finance")
    assert [(c.kind, c.no_news, c.promised_at) for c in acme] == [
        (Kind.ACKNOWLEDGMENT, False, T0),
        (Kind.UPDATE, True, at_minute(15)),
        (Kind.UPDATE, True, at_minute(30)),
    ]
    assert acme[-1].next_update_at == at_minute(45)
    assert [c.kind for c in thread_of(e, "globex")] == [Kind.ACKNOWLEDGMENT, Kind.UPDATE]


def test_a_material_change_is_told_at_once_and_a_stale_timer_moves_to_the_new_promise() -> None:
    e = engine()
    e.handle_event(ev("opened", 0), T0)
    e.handle_event(ev("updated", 10, status="identified"), at_minute(10))
    update = thread_of(e, "acme-finance")[-1]
    assert update.kind == Kind.UPDATE and not update.no_news
    assert update.context["changes"] == [{"field": "status", "old": "investigating", "new": "identified"}]
    assert update.next_update_at == at_minute(25)
    # the timer armed for 14:18 fires late: it composes nothing and moves to the promise
    assert e.fire_timer("u|INC-1|acme-finance", ms_of(at_minute(15)), at_minute(15)) is None
    assert e.timers.due_ms("u|INC-1|acme-finance") == ms_of(at_minute(25))
    assert len(thread_of(e, "acme-finance")) == 2


def test_a_resolution_ends_the_updates_and_asks_for_feedback_later() -> None:
    e = engine()
    e.handle_event(ev("opened", 0), T0)
    advance(e, at_minute(20))
    e.handle_event(ev("resolved", 20), at_minute(20))
    assert e.timers.due_ms("u|INC-1|acme-finance") is None
    assert e.timers.due_ms("f|INC-1|acme-finance") == ms_of(at_minute(140))  # feedback_after: 2h
    assert e.store.thread("INC-1", "acme-finance").promised_ms is None
    advance(e, at_minute(200))
    assert [c.kind for c in thread_of(e, "acme-finance")] == [
        Kind.ACKNOWLEDGMENT,
        Kind.UPDATE,  # 14:18, before the resolution
        Kind.RESOLUTION,
        Kind.FEEDBACK_REQUEST,
    ]
    assert e.store.thread("INC-1", "acme-finance").feedback_ms is None


def test_a_reopening_withdraws_the_feedback_request_and_resumes_the_updates() -> None:
    e = engine()
    e.handle_event(ev("opened", 0), T0)
    e.handle_event(ev("resolved", 5), at_minute(5))
    e.handle_event(ev("reopened", 30), at_minute(30))
    assert e.timers.due_ms("f|INC-1|globex") is None
    advance(e, at_minute(180))
    kinds = [c.kind for c in thread_of(e, "globex")]
    assert Kind.FEEDBACK_REQUEST not in kinds
    assert kinds[:3] == [Kind.ACKNOWLEDGMENT, Kind.RESOLUTION, Kind.UPDATE]
    assert kinds.count(Kind.UPDATE) == 6  # the reopening, then every 30 minutes to 17:03


def test_an_opt_out_kept_by_the_store_stops_that_thread_only() -> None:
    e = engine()
    e.handle_event(ev("opened", 0), T0)
    e.store.record_opt_out("globex", T0, "INC-1")
    advance(e, at_minute(60))
    assert [c.kind for c in thread_of(e, "globex")] == [Kind.ACKNOWLEDGMENT]
    assert e.store.thread("INC-1", "globex").promised_ms is None
    assert len(thread_of(e, "acme-finance")) == 5


def test_unsent_promises_count_as_overdue_and_sent_ones_by_their_lateness() -> None:
    e = engine()
    e.handle_event(ev("opened", 0), T0)
    acme_ack = thread_of(e, "acme-finance")[0]
    assert e.store.begin_send(acme_ack.id, ms_of(at_minute(2)), 60_000, "t").state == "ok"
    e.store.finish_send(acme_ack.id, "t", Status.SENT, ms_of(at_minute(2)), sent_ms=ms_of(at_minute(2)))
    pending = open_promises(e.store)
    assert {(p.stakeholder_id, p.kind, p.due) for p in pending} == {
        ("acme-finance", Kind.UPDATE, at_minute(15)),
        ("globex", Kind.UPDATE, at_minute(30)),
        ("payments-eng", Kind.UPDATE, at_minute(30)),
    }
    report = promise_report(comms(e), at_minute(20), pending)
    # acme's ack went out 2 min late; the other two acks and acme's 14:18 update are overdue
    assert (report.promises, report.late, report.on_time, report.overdue_unsent) == (4, 1, 0, 3)
    assert report.max_s == 120.0
