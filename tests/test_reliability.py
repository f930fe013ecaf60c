"""Promises kept when things go wrong: each test injects a fault into a real worker on real Redis
with a real SMTP server, and checks what the server received and what the log says.

The clock is a FakeClock; ``app.tick()``/``app.settle()``/``app.advance_to()`` run the
scheduler's loop (due timers and the sweep of unfinished sends) at it, so nothing sleeps.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import pytest
import redis

from scheduler import emit
from scheduler.core.model import Status
from scheduler.core.ports import AttemptEnd
from scheduler.errors import TimerStoreError
from tests.conftest import App, event
from tests.helpers import at

pytestmark = pytest.mark.real


def comms(app: App, **match: Any) -> list[Any]:
    return [
        c for c in app.runtime.store.communications() if all(getattr(c, k) == v for k, v in match.items())
    ]


def received_ids(app: App, address: str) -> list[str]:
    return [str(m.message["Message-ID"]) for m in app.sink.to(address)]


@pytest.mark.parametrize("worker_threads", [8])
def test_two_hundred_opened_and_updated_pairs_back_to_back_lose_no_change(app: App) -> None:
    """200 `opened`+`updated` pairs emitted back to back to an 8-thread worker: none rejected, everyone hears of the change."""
    app.runtime.settings = app.runtime.settings.with_(order_wait_ms=600_000)
    for n in range(200):
        emit(event(incident_id=f"INC-{n}"), broker=app.broker)
        emit(event("updated", incident_id=f"INC-{n}", status="identified"), broker=app.broker)
    app.drain()
    assert app.runtime.store.rejected() == []
    threads: dict[tuple[str, str], list[Any]] = defaultdict(list)
    for comm in comms(app):
        threads[(comm.incident_id, comm.stakeholder_id)].append(comm)
    assert len(threads) == 200 * 3
    for thread in threads.values():
        thread.sort(key=lambda c: c.seq)
        assert {c.status for c in thread} == {"sent"}
        assert thread[0].kind == "acknowledgment"
        # the change reached the reader: in an update, or already in the acknowledgment
        assert thread[-1].context["incident"]["status"] == "identified"
    assert len(app.sink.received) == sum(len(t) for t in threads.values())


def test_a_timer_store_error_while_resolving_is_retried_not_rejected(app: App) -> None:
    """A timer-store error in the middle of a resolution retries the event: everyone gets the resolution."""
    emit(event(), broker=app.broker)
    app.drain()
    timers = app.runtime.engine.timers
    real_arm = timers.arm
    calls = {"n": 0}

    def arm_failing_once(member: str, due_ms: int) -> None:
        calls["n"] += 1
        if calls["n"] == 2:  # the second stakeholder's feedback timer
            raise TimerStoreError("could not arm timer: Connection reset by peer")
        real_arm(member, due_ms)

    timers.arm = arm_failing_once  # type: ignore[method-assign]
    emit(event("resolved", at=at(14, 30)), broker=app.broker)
    app.drain()
    assert app.runtime.store.rejected() == []
    assert {c.stakeholder_id for c in comms(app, kind="resolution", status="sent")} == {
        "acme-finance",
        "globex",
        "payments-eng",
    }


def test_a_redis_error_after_the_servers_250_ends_sent_with_one_documented_duplicate(app: App) -> None:
    """The status write failing after the 250 leaves `sending`; after the lease it is sent again, same Message-ID."""
    store = app.runtime.store
    real_finish = store.finish_sends
    failed = threading.Event()

    def finish_failing_once(ends: list[AttemptEnd]) -> list[Any]:
        """Globex's end meets a dropped connection, once: it is not written; the others are."""
        lost = [
            n for n, e in enumerate(ends) if e.comm_id.startswith("INC-1:globex") and not failed.is_set()
        ][:1]
        if lost:
            failed.set()
        answers = real_finish([e for n, e in enumerate(ends) if n not in lost])
        for n in lost:
            answers.insert(n, redis.ConnectionError("Connection closed by server."))
        return answers

    store.finish_sends = finish_failing_once  # type: ignore[method-assign]
    emit(event(), broker=app.broker)
    app.drain()
    (globex,) = comms(app, stakeholder_id="globex")
    assert globex.status == "sending"  # the lease still runs
    app.settle()
    (globex,) = comms(app, stakeholder_id="globex")
    assert globex.status == "sent" and globex.attempts == 2
    ids = received_ids(app, "support@globex.example")
    assert len(ids) == 2 and ids[0] == ids[1]  # the one duplicate left; receivers fold it by Message-ID


def test_a_redis_error_between_taking_and_sending_retries_and_sends_once(app: App) -> None:
    """A Redis error in the reads after `begin_send` makes the message `retrying`, never stuck; it is sent once."""
    engine = app.runtime.engine
    real_opted_out_among = engine.opted_out_among
    failed = threading.Event()

    def opted_out_failing_once(incident_id: str, stakeholder_ids: list[str]) -> set[str]:
        sending = threading.current_thread().name.startswith("asyncio")  # the deliver actor's reads
        if sending and "payments-eng" in stakeholder_ids and not failed.is_set():
            failed.set()
            raise redis.ConnectionError("Error 111 connecting to redis. Connection refused.")
        return real_opted_out_among(incident_id, stakeholder_ids)

    engine.opted_out_among = opted_out_failing_once  # type: ignore[method-assign]
    emit(event(), broker=app.broker)
    app.drain()
    (eng,) = comms(app, stakeholder_id="payments-eng")
    assert eng.status == "retrying" and "Connection refused" in eng.last_error
    app.settle()
    (eng,) = comms(app, stakeholder_id="payments-eng")
    assert eng.status == "sent"
    assert len(app.sink.to("eng@acme.example")) == 1


def test_a_thread_is_received_in_order_after_a_long_451_on_its_acknowledgment(app: App) -> None:
    """Updates composed while the acknowledgment is retried wait for it; the no-news ones are superseded."""
    app.runtime.settings = app.runtime.settings.with_(
        retry_min_backoff_ms=60_000, retry_max_backoff_ms=300_000
    )
    app.sink.rcpt_reply = lambda address: "451 4.3.2 try later" if address.startswith("finance@") else None
    emit(event(at=app.clock()), broker=app.broker)
    app.drain()
    app.advance_to(at(15, 0))  # finance's 15-minute cadence keeps composing updates meanwhile
    thread = sorted(comms(app, stakeholder_id="acme-finance"), key=lambda c: c.seq)
    assert [c.status for c in thread] == ["retrying", "scheduled", "scheduled", "scheduled"]
    assert app.sink.to("finance@acme.example") == []
    app.sink.rcpt_reply = None
    app.advance_to(at(15, 10))
    thread = sorted(comms(app, stakeholder_id="acme-finance"), key=lambda c: c.seq)
    mails = app.sink.to("finance@acme.example")
    sent = [c for c in thread if c.status == "sent"]
    assert [str(m.message["Message-ID"]) for m in mails] == [
        c.message_id for c in sorted(sent, key=lambda c: c.sent_at)
    ]
    assert [c.seq for c in sorted(sent, key=lambda c: c.sent_at)] == sorted(c.seq for c in sent)
    assert thread[0].kind == "acknowledgment" and thread[0].status == "sent"
    superseded = [c for c in thread if c.status == "cancelled"]
    assert superseded and all(c.last_error.startswith("superseded by") for c in superseded)
    # the late acknowledgment promises an update that is still ahead, not one already past
    ack_text = mails[0].part("plain")
    assert "Next update by 16:04 CET" in ack_text or "Next update by 16:19 CET" in ack_text
    # the update after it refers to the acknowledgment the reader did receive
    assert "since our last message at 16:" in mails[1].part("plain")


def test_when_the_acknowledgment_failed_for_good_the_next_message_carries_its_essentials(app: App) -> None:
    """A 550 on the acknowledgment, the address's mark lifted since: the following update says what happened and claims no earlier message."""
    replies = iter(["550 5.1.1 mailbox unavailable"])
    app.sink.rcpt_reply = lambda address: next(replies, None) if address.startswith("support@") else None
    emit(event(at=app.clock()), broker=app.broker)
    app.drain()
    assert comms(app, stakeholder_id="globex")[0].status == "failed"
    assert app.runtime.bounces.remove("support@globex.example")  # the operator fixed the mailbox
    app.advance_to(at(14, 34))
    (update,) = app.sink.to("support@globex.example")
    text = update.part("plain")
    assert "did not reach you" in text and "Timeouts at the processor." in text
    assert "since our last message" not in text and "no new information" not in text


def test_every_communication_ends_sent_failed_or_cancelled(app: App) -> None:
    """After a mix of 451s, a 550 and a resolution, nothing is left scheduled, sending or retrying."""
    replies = {"support@": iter(["451 later", "451 later", "451 later"]), "eng@": iter(["550 no such user"])}

    def reply(address: str) -> str | None:
        for prefix, answers in replies.items():
            if address.startswith(prefix):
                return next(answers, None)
        return None

    app.sink.rcpt_reply = reply
    emit(event(at=app.clock()), broker=app.broker)
    app.drain()
    app.advance_to(at(14, 50))
    emit(event("resolved", at=app.clock()), broker=app.broker)
    app.drain()
    app.settle()
    assert {c.status for c in comms(app)} <= {s for s in Status if s.final}
    assert app.runtime.store.unfinished_count() == 0
    assert all(c.last_error for c in comms(app) if c.status in ("failed", "cancelled", "suppressed"))


def test_an_opted_out_stakeholder_has_no_row_per_cadence_and_no_broken_promise(app: App) -> None:
    """Opting out mid-incident stops the thread: no cancelled row each cadence, and --promises counts none for it."""

    from scheduler.core.promises import promise_report

    emit(event(at=app.clock()), broker=app.broker)
    app.drain()
    app.runtime.store.record_opt_out("acme-finance", app.clock())
    app.advance_to(at(16, 0))
    finance = comms(app, stakeholder_id="acme-finance")
    assert len(finance) <= 2  # the acknowledgment, and at most the update composed before the opt-out
    report = promise_report(comms(app), at(16, 0))
    assert report.failed == 0 and report.overdue_unsent == 0


def test_a_communication_composed_but_never_dispatched_is_sent_by_the_sweep(app: App) -> None:
    """A crash between composing and dispatching (the deliver message never sent): the sweep sends it later."""
    dispatch = app.runtime.engine.dispatch
    real_deliver = dispatch.deliver
    dispatch.deliver = lambda comm_id: None  # the process dies right after the store's write
    try:
        emit(event(), broker=app.broker)
        app.drain()
    finally:
        dispatch.deliver = real_deliver
    assert {c.status for c in comms(app)} == {"scheduled"} and app.sink.received == []
    app.tick()
    assert app.sink.received == []  # not before its grace: a normal dispatch may still be on its way
    app.settle()
    assert {c.status for c in comms(app)} == {"sent"} and len(app.sink.received) == 3


def test_a_timer_whose_firing_lost_redis_is_fired_again_at_the_next_tick_not_after_its_lease(
    app: App,
) -> None:
    """Redis cut while a due update is composed puts its timer back: the next tick, at the same moment, sends it."""
    engine = app.runtime.engine
    real_fire = engine.fire_timer
    away = threading.Event()
    cut: list[str] = []

    def fire_while_redis_is_away(member: str, due_ms: int, now: Any) -> str | None:
        if member.endswith("|globex") and away.is_set():
            cut.append(member)
            raise redis.ConnectionError("Connection closed by server.")
        return real_fire(member, due_ms, now)

    emit(event(at=app.clock()), broker=app.broker)
    app.drain()
    engine.fire_timer = fire_while_redis_is_away  # type: ignore[method-assign]
    due = app.loop.timers.due_ms("u|INC-1|globex")
    assert due is not None
    app.clock.set(datetime.fromtimestamp(due / 1000, tz=UTC))
    away.set()
    app.tick()  # every try of this round meets the cut
    away.clear()
    assert cut and comms(app, stakeholder_id="globex", kind="update") == []
    app.tick()  # the same moment: no lease has run out
    (update,) = comms(app, stakeholder_id="globex", kind="update")
    assert update.status == "sent" and len(app.sink.to("support@globex.example")) == 2


def test_a_group_whose_taking_lost_redis_is_tried_again_at_once_not_after_the_sweeps_grace(app: App) -> None:
    """A cut connection while a deliver group is taken for sending retries the message: all are sent without the sweep."""
    store = app.runtime.store
    real_begin_sends = store.begin_sends
    cut = threading.Event()

    def begin_losing_redis_once(attempts: list[tuple[str, str]], now_ms: int, lease_ms: int) -> list[Any]:
        if not cut.is_set():
            cut.set()
            raise redis.ConnectionError("Connection closed by server.")
        return real_begin_sends(attempts, now_ms, lease_ms)

    store.begin_sends = begin_losing_redis_once  # type: ignore[method-assign]
    emit(event(at=app.clock()), broker=app.broker)
    app.drain()  # the clock does not move: the sweep finds nothing due
    assert cut.is_set()
    assert {c.status for c in comms(app)} == {"sent"} and len(app.sink.received) == 3
