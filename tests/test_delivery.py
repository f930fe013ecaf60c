"""The acknowledgment path end to end: real Redis, a real Dramatiq worker, a real SMTP server."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from scheduler import emit
from scheduler.core.ports import Store
from scheduler.storage import keys
from tests.conftest import App, event

pytestmark = pytest.mark.real


def comms(app: App, **match: Any) -> list[Any]:
    store: Store = app.runtime.store
    return [c for c in store.communications() if all(getattr(c, k) == v for k, v in match.items())]


def test_acknowledgment_reaches_every_concerned_stakeholder(app: App) -> None:
    """An opened incident sends one acknowledgment email to each concerned stakeholder, and no one else."""
    emit(event(), broker=app.broker)
    app.drain()
    received = {m.rcpt_tos[0] for m in app.sink.received}
    assert received == {"finance@acme.example", "support@globex.example", "eng@acme.example"}
    assert {c.status for c in comms(app, kind="acknowledgment")} == {"sent"}


def test_acknowledgment_is_multipart_and_states_the_next_update_in_the_readers_zone(app: App) -> None:
    """The email has text and HTML parts and promises the next update in the stakeholder's own zone."""
    emit(event(), broker=app.broker)
    app.drain()
    (mail,) = app.sink.to("finance@acme.example")
    message = mail.message
    assert message.get_content_type() == "multipart/alternative"
    # opened 14:03:05 UTC; finance's sev1 cadence is 15m -> 14:19 UTC (rounded up) = 15:19 CET
    assert "Next update by 15:19 CET" in mail.part("plain")
    assert "Next update by 15:19 CET" in mail.part("html")
    assert "Card payments failing" in message["Subject"]
    (eng,) = app.sink.to("eng@acme.example")
    assert "JST" in eng.part("plain")


def test_the_log_keeps_promised_and_actual_time_and_the_message_as_sent(app: App) -> None:
    """Each sent communication records its recipient, subject, times, attempts and the full message."""
    emit(event(), broker=app.broker)
    app.drain()
    (comm,) = comms(app, stakeholder_id="globex")
    assert comm.id == "INC-1:globex:acknowledgment:1"
    assert comm.status == "sent" and comm.attempts == 1 and comm.last_error == ""
    assert comm.recipient == "support@globex.example"
    assert comm.sent_at == app.clock()
    # promised when the event was enqueued: the queueing time counts as lateness
    assert timedelta(0) <= comm.sent_at - comm.promised_at < timedelta(seconds=2)
    assert comm.next_update_at is not None
    kept = app.runtime.store.comm(comm.id).message  # a listing leaves the message out
    assert "Message-ID: <amends.INC-1.globex@acme.example>" in kept and comm.subject in kept


def test_same_event_id_twice_sends_nothing_more(app: App) -> None:
    """Emitting the same event_id twice changes nothing and sends nothing the second time."""
    opened = event(event_id="evt-1")
    emit(opened, broker=app.broker)
    app.drain()
    emit(opened, broker=app.broker)
    emit({**opened, "incident": {**opened["incident"], "title": "Changed title"}}, broker=app.broker)
    app.drain()
    assert len(app.sink.received) == 3
    assert app.runtime.store.incident("INC-1").title == "Card payments failing"


def test_same_deliver_message_twice_sends_one_email(app: App) -> None:
    """A redelivered deliver message finds the communication sent and sends nothing."""
    from workers.actors import deliver

    emit(event(), broker=app.broker)
    app.drain()
    before = len(app.sink.received)
    for comm in comms(app):
        deliver.send(comm.id)
        deliver.send(comm.id)
    app.drain()
    assert len(app.sink.received) == before


def test_a_send_whose_worker_died_is_sent_again_after_its_lease(app: App) -> None:
    """A communication left in `sending` by a worker that died is sent once its lease expired, by the sweep."""
    from scheduler.core.model import ms_of
    from workers.actors import deliver

    app.sink.rcpt_reply = lambda address: "451 hold on" if address == "eng@acme.example" else None
    emit(event(), broker=app.broker)
    app.drain()
    app.sink.rcpt_reply = None
    comm_id = "INC-1:payments-eng:acknowledgment:1"
    store = app.runtime.store
    comm = store.comm(comm_id)
    assert comm.status == "retrying" and comm.next_attempt_at is not None
    # a worker takes the retry and dies mid-send
    taken_at = comm.next_attempt_at
    app.clock.set(taken_at)
    assert store.begin_send(comm_id, ms_of(app.clock()), 60_000, "dead-worker").state == "ok"
    deliver.send(comm_id)
    app.drain()
    assert store.comm(comm_id).status == "sending"  # lease still runs: nothing sent twice
    assert app.sink.to("eng@acme.example") == []
    app.settle()  # the sweep looks again once the lease has expired
    comm = store.comm(comm_id)
    assert comm.status == "sent" and comm.attempts == 3
    assert comm.sent_at == taken_at + timedelta(seconds=60)  # sent when the dead worker's lease ran out
    assert len(app.sink.to("eng@acme.example")) == 1


def test_invalid_event_reaching_the_worker_is_kept_not_retried(app: App) -> None:
    """A bad event sent straight to the queue is rejected with its reason; the worker goes on working."""
    from scheduler.service.queues import EVENTS_QUEUE, enqueue

    bad = event()
    bad["incident"]["severity"] = "sev9"
    enqueue(app.broker, EVENTS_QUEUE, "handle_event", bad)
    enqueue(app.broker, EVENTS_QUEUE, "handle_event", "not an object")
    emit(event(incident_id="INC-2"), broker=app.broker)
    app.drain()
    rejected = app.runtime.store.rejected()
    assert len(rejected) == 2
    reasons = json.dumps(rejected)
    assert "incident.severity" in reasons and "an event is a JSON object" in reasons
    assert len(app.sink.received) == 3  # the good event after them was handled


def test_update_for_an_unknown_incident_is_rejected_visibly_after_waiting(app: App) -> None:
    """An incident.updated whose incident never opens waits its limit, then is kept as rejected, naming it."""
    emit(event("updated", incident_id="INC-404", status="identified"), broker=app.broker)
    app.drain()  # the retries of a waiting event are drained too: order_wait_ms is 2 s here
    (record,) = app.runtime.store.rejected()
    reason = record["errors"][0]["reason"]
    assert reason == "INC-404: updated waited 2 s for its opened, and none came"
    assert app.sink.received == []


def test_transient_smtp_failure_is_retried_and_logged(app: App) -> None:
    """A 4xx reply makes the log show `retrying` with the reply and the next attempt; the retry sends it."""
    replies = iter(["451 4.3.0 mailbox busy, try later"])
    app.sink.data_reply = lambda: next(replies, None)
    emit(event(), broker=app.broker)
    app.drain()
    (retrying,) = comms(app, status="retrying")
    assert "451 4.3.0 mailbox busy" in retrying.last_error
    assert retrying.next_attempt_at == app.clock() + timedelta(milliseconds=50)
    app.settle()
    retried = [c for c in comms(app) if c.attempts == 2]
    assert len(retried) == 1
    assert retried[0].status == "sent"
    assert len(app.sink.received) == 3


def test_retrying_status_shows_the_servers_reply(app: App) -> None:
    """While a send waits for its retry the log says `retrying`, quotes the server and names the next attempt."""
    app.sink.rcpt_reply = lambda address: "452 4.2.2 over quota"
    emit(event(), broker=app.broker)
    app.drain()
    assert {c.status for c in comms(app)} == {"retrying"}
    assert all("452 4.2.2 over quota" in c.last_error for c in comms(app))
    assert all(c.next_attempt_at > app.clock() for c in comms(app))
    assert all(c.as_json()["next_attempt_at"].endswith("Z") for c in comms(app))


def test_permanent_smtp_rejection_fails_at_once_with_the_reply(app: App) -> None:
    """A 5xx recipient rejection is `failed` after one attempt, with the server's reply."""
    app.sink.rcpt_reply = lambda address: "550 5.1.1 no such user" if address.startswith("support@") else None
    emit(event(), broker=app.broker)
    app.drain()
    (failed,) = comms(app, status="failed")
    assert failed.stakeholder_id == "globex" and failed.attempts == 1
    assert "550 5.1.1 no such user" in failed.last_error
    assert len(app.sink.received) == 2


def test_transient_failures_are_retried_for_the_window_then_fail(app: App) -> None:
    """A server that keeps answering 4xx is retried with backoff for the whole window, then `failed` naming it."""
    app.runtime.settings = app.runtime.settings.with_(retry_window_ms=2_000)
    app.sink.rcpt_reply = lambda address: "421 4.7.0 try again later" if address.startswith("eng@") else None
    start = app.clock()
    emit(event(), broker=app.broker)
    app.settle()
    (failed,) = comms(app, status="failed")
    # 50, 100, 200, 200, ... ms apart until 2 s after the first attempt, the last one at its end
    assert failed.attempts == 13
    assert "gave up after 13 attempts over 2s" in failed.last_error and "421" in failed.last_error
    assert app.clock() - start == timedelta(seconds=2)
    assert len(app.sink.received) == 2


def test_smtp_connections_are_reused_across_messages(app: App) -> None:
    """Sending many messages opens far fewer SMTP connections than messages."""
    for n in range(8):
        emit(event(incident_id=f"INC-{n}"), broker=app.broker)
        app.drain()
    assert len(app.sink.received) == 24
    assert app.runtime.connections_opened <= 4
    assert app.sink.sessions == app.runtime.connections_opened


def test_messages_of_one_thread_share_references(app: App) -> None:
    """Every message of one incident to one stakeholder refers to the first one's Message-ID."""
    emit(event(), broker=app.broker)
    app.drain()
    emit(event("updated", status="identified"), broker=app.broker)
    app.drain()
    first, second = app.sink.to("finance@acme.example")
    assert second.message["In-Reply-To"] == first.message["Message-ID"]
    assert second.message["References"] == first.message["Message-ID"]
    assert second.message["Message-ID"] == "<amends.INC-1.acme-finance.update.2@acme.example>"


def test_a_message_that_cannot_be_composed_fails_visibly(app: App) -> None:
    """A communication whose stored context is unusable ends `failed` with the reason, not stuck in `sending`."""
    app.sink.rcpt_reply = lambda address: "451 later" if address.startswith("support@") else None
    emit(event(), broker=app.broker)
    app.drain()
    comm_id = "INC-1:globex:acknowledgment:1"
    store = app.runtime.store
    store.client.hset(keys.comm(comm_id), "status", "retrying")
    store.client.set(keys.comm_context(comm_id), store.texts.pack("INC-1", "ctx", b'{"incident": {}}'))
    app.sink.rcpt_reply = None
    app.settle()  # the retry is due: the sweep dispatches it
    comm = store.comm(comm_id)
    assert comm.status == "failed" and "could not be composed" in comm.last_error


def test_an_unsubscribed_stakeholder_receives_nothing(app: App) -> None:
    """After a stakeholder unsubscribed, nothing is composed or sent to them; the others hear as usual."""

    app.runtime.store.record_opt_out("globex", app.clock())
    emit(event(), broker=app.broker)
    app.drain()
    assert app.sink.to("support@globex.example") == []
    assert comms(app, stakeholder_id="globex") == []
    assert len(app.sink.received) == 2


def test_an_update_held_behind_a_retrying_message_is_cancelled_by_the_resolution(app: App) -> None:
    """An update still waiting when the incident is resolved is cancelled; the reader gets ack, then resolution."""
    app.sink.rcpt_reply = lambda address: "451 later" if address.startswith("support@") else None
    emit(event(), broker=app.broker)
    app.drain()
    emit(event("updated", status="identified"), broker=app.broker)
    app.drain()
    emit(event("resolved"), broker=app.broker)
    app.drain()
    store = app.runtime.store
    assert store.comm("INC-1:globex:acknowledgment:1").status == "retrying"
    assert store.comm("INC-1:globex:update:2").status == "scheduled"  # waits for the acknowledgment
    app.sink.rcpt_reply = None
    app.settle()
    update = store.comm("INC-1:globex:update:2")
    assert update.status == "cancelled" and "resolved" in update.last_error
    assert [str(m.message["Subject"]).split(":")[0] for m in app.sink.to("support@globex.example")] == [
        "We are working on it",
        "[Resolved] Card payments failing",
    ]


def test_events_of_one_incident_handled_at_once_acknowledge_exactly_once(app: App) -> None:
    """Opened and updated handled concurrently: each stakeholder gets one acknowledgment, and it comes first."""
    for n in range(12):
        emit(event(incident_id=f"INC-{n}"), broker=app.broker)
        emit(event("updated", incident_id=f"INC-{n}", status="identified"), broker=app.broker)
    app.drain()
    threads: dict[tuple[str, str], list[Any]] = {}
    for comm in comms(app):
        threads.setdefault((comm.incident_id, comm.stakeholder_id), []).append(comm)
    assert len(threads) == 12 * 3
    for thread in threads.values():
        thread.sort(key=lambda c: c.seq)
        assert [c.kind for c in thread].count("acknowledgment") == 1
        assert thread[0].kind == "acknowledgment" and thread[0].seq == 1


def test_the_event_loop_never_reads_the_configuration_itself(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Re-reading a changed configuration of thousands of stakeholders takes most of a second,
    under a lock: sends must not wait on it. The event loop that sends every email of a
    worker process gets the configuration with the group it sends, read off the loop."""
    import asyncio
    import threading

    source = app.runtime.config_source
    read = source.current
    callers: list[tuple[str, bool]] = []

    def current() -> Any:
        try:
            asyncio.get_running_loop()
            on_loop = True
        except RuntimeError:
            on_loop = False
        callers.append((threading.current_thread().name, on_loop))
        return read()

    monkeypatch.setattr(source, "current", current)
    emit(event(), broker=app.broker)
    app.drain()
    assert {c.status for c in comms(app, kind="acknowledgment")} == {"sent"} and len(app.sink.received) == 3
    assert callers and not [name for name, on_loop in callers if on_loop]


def test_ends_that_come_together_are_written_together_each_with_its_own_answer() -> None:
    """Attempts ending at once on one event loop are written in one ``finish_sends``; each
    caller gets its own answer, and an error met by one end is that end's alone."""
    import asyncio

    import redis

    from scheduler.core.model import Kind, Status
    from scheduler.core.ports import AttemptEnd
    from scheduler.storage.memory_store import MemoryStore
    from tests.helpers import draft_builder
    from workers.runtime import EndWriter

    store = MemoryStore()
    ids = [
        store.create_comm("INC-1", f"s{n}", Kind.ACKNOWLEDGMENT, "acknowledgment", draft_builder(1_000))[0]
        for n in range(30)
    ]
    store.begin_sends([(comm_id, f"t{n}") for n, comm_id in enumerate(ids)], 2_000, 60_000)
    batches: list[int] = []
    real = store.finish_sends

    def finish_sends(ends: list[AttemptEnd]) -> list[Any]:
        batches.append(len(ends))
        answers = real([e for e in ends if e.comm_id != ids[7]])
        if any(e.comm_id == ids[7] for e in ends):
            answers.insert([e.comm_id for e in ends].index(ids[7]), redis.ConnectionError("gone"))
        return answers

    store.finish_sends = finish_sends  # type: ignore[method-assign]
    writer = EndWriter(store)

    async def end(n: int, comm_id: str) -> Any:
        try:
            return await writer.write(
                AttemptEnd(comm_id, f"t{n}", Status.SENT, 3_000, fields={"sent_ms": 3_000})
            )
        except redis.ConnectionError as e:
            return e

    async def all_ends() -> list[Any]:
        first = await asyncio.gather(*(end(n, comm_id) for n, comm_id in enumerate(ids)))
        late = await end(0, ids[0])  # alone, later: written at once, and refused (already sent)
        return [*first, late]

    answers = asyncio.run(all_ends())
    assert batches == [30, 1]
    assert isinstance(answers[7], redis.ConnectionError)
    assert [a for n, a in enumerate(answers[:30]) if n != 7] == [(True, None)] * 29
    assert answers[30] == (False, None)
    assert [store.comm(c).status for c in ids].count("sent") == 29  # type: ignore[union-attr]


def test_ends_whose_write_is_cancelled_are_answered_with_an_error_not_left_waiting() -> None:
    """The event loop stopping mid-write: the end in flight and the end queued behind it both
    get a StorageError (each then waits for its lease), none waits forever."""
    import asyncio
    import threading

    from scheduler.core.model import Kind, Status
    from scheduler.core.ports import AttemptEnd
    from scheduler.errors import StorageError
    from scheduler.storage.memory_store import MemoryStore
    from tests.helpers import draft_builder
    from workers.runtime import EndWriter

    store = MemoryStore()
    ids = [
        store.create_comm("INC-1", f"s{n}", Kind.ACKNOWLEDGMENT, "acknowledgment", draft_builder(1_000))[0]
        for n in range(2)
    ]
    store.begin_sends([(comm_id, f"t{n}") for n, comm_id in enumerate(ids)], 2_000, 60_000)
    writing, release = threading.Event(), threading.Event()
    real = store.finish_sends

    def slow(ends: list[AttemptEnd]) -> list[Any]:
        writing.set()
        release.wait(10)
        return real(ends)

    store.finish_sends = slow  # type: ignore[method-assign]
    writer = EndWriter(store)

    async def cancelled_mid_write() -> list[BaseException | None]:
        ends = [
            AttemptEnd(c, f"t{n}", Status.SENT, 3_000, fields={"sent_ms": 3_000}) for n, c in enumerate(ids)
        ]
        first = asyncio.ensure_future(writer.write(ends[0]))
        assert await asyncio.to_thread(writing.wait, 10)  # the thread holds the first end
        second = asyncio.ensure_future(writer.write(ends[1]))
        await asyncio.sleep(0)
        assert writer._writing is not None
        writer._writing.cancel()
        done = await asyncio.gather(first, second, return_exceptions=True)
        release.set()
        return [d if isinstance(d, BaseException) else None for d in done]

    errors = asyncio.run(cancelled_mid_write())
    assert all(isinstance(e, StorageError) and "before the write was confirmed" in str(e) for e in errors)
    assert writer._writing is None
