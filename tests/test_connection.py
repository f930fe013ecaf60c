"""Patient Redis clients against a real redis-server that goes away, and replies lost on a
cut connection: the command waits for Redis and goes through as soon as it answers, and a
step retried after its reply was lost hands out what the first try took."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from scheduler.core.model import Action, Draft, EventRecord, Incident, Kind, Thread
from scheduler.storage.connection import connection_lost, patient_client
from scheduler.storage.redis_store import RedisStore
from scheduler.storage.timers import RedisTimerStore
from tests.realservers import RedisServer, ReplyLosingProxy

pytestmark = pytest.mark.real

NOW = 1_767_225_600_000  # 2026-01-01T00:00:00Z in epoch ms
LEASE = 30_000


def _acknowledgment(store: RedisStore) -> tuple[str, bool]:
    def build(thread: Thread, incident: Incident | None) -> tuple[Draft, Thread]:
        thread.last_ms = 1000
        return Draft(
            recipient="a@acme.example", channel="email", created_ms=1000, promised_ms=1000, context={}
        ), thread

    return store.create_comm("INC-1", "acme", Kind.ACKNOWLEDGMENT, "event:e1", build)


@pytest.fixture
def server() -> Iterator[RedisServer]:
    """A private redis-server on a free loopback port."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def proxy(server: RedisServer) -> Iterator[ReplyLosingProxy]:
    """A proxy in front of it that loses a reply on demand."""
    with ReplyLosingProxy(server.port) as proxy:
        yield proxy


def test_a_patient_client_waits_through_a_restart_and_goes_on_at_once(server: RedisServer) -> None:
    """A command sent while Redis is down completes once it is back, within a second of it answering."""
    client = patient_client(server.url)
    client.set("before", "1")
    server.kill()
    done: list[Any] = []
    finished = threading.Event()

    def write() -> None:
        done.append(client.set("during", "2"))
        finished.set()

    threading.Thread(target=write, daemon=True).start()
    assert not finished.wait(1.0), "the command came back while Redis was down"
    server.start()
    answering = time.monotonic()
    assert finished.wait(5.0), "the command did not go through after the restart"
    assert time.monotonic() - answering < 1.0
    assert done == [True]
    assert client.get("during") == b"2"


def test_a_patient_client_rides_out_every_connection_cut_again_and_again(server: RedisServer) -> None:
    """For 2 s every connection is cut every 10 ms: scripts, pipelines and plain commands all go through, none fails."""
    client = patient_client(server.url)
    script = client.register_script("return redis.call('INCR', KEYS[1])")
    killer = server.client()
    storm_over = threading.Event()
    cut: list[int] = []

    def storm() -> None:
        while not storm_over.wait(0.01):
            cut.append(int(killer.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")))

    threading.Thread(target=storm, daemon=True).start()
    done = 0
    deadline = time.monotonic() + 2.0
    try:
        while time.monotonic() < deadline:
            script(keys=["n"])
            pipe = client.pipeline(transaction=False)
            pipe.get("n")
            pipe.incr("m")
            pipe.execute()
            done += 1
    finally:
        storm_over.set()
    assert done > 0 and sum(cut) > 0
    assert int(client.get("n") or 0) >= done and int(client.get("m") or 0) >= done


def test_a_claim_whose_reply_was_lost_hands_out_its_timers_on_the_retry(
    server: RedisServer, proxy: ReplyLosingProxy
) -> None:
    """The client retries a claim whose reply was cut and receives the timers the first try leased."""
    store = RedisTimerStore(patient_client(proxy.url))
    store.arm_many([("u|INC-1|acme", NOW - 2), ("u|INC-2|acme", NOW - 1), ("u|INC-3|acme", NOW + 1)])
    proxy.lose_reply_to(b"evalsha")
    assert store.claim(NOW, LEASE, limit=10) == [("u|INC-1|acme", NOW - 2), ("u|INC-2|acme", NOW - 1)]
    assert proxy.cut == 1
    assert store.claim(NOW, LEASE, limit=10) == []  # another claim does not get them again


def test_another_claim_never_receives_a_timer_leased_to_the_first(server: RedisServer) -> None:
    """Two claims at the same moment with the same lease share nothing: the retry rule is per claim."""
    store = RedisTimerStore(patient_client(server.url))
    store.arm("u|INC-1|acme", NOW)
    assert store.claim(NOW, LEASE, limit=10) == [("u|INC-1|acme", NOW)]
    assert store.claim(NOW, LEASE, limit=10) == []


def test_a_begin_send_whose_reply_was_lost_takes_the_communication_on_the_retry(
    server: RedisServer, proxy: ReplyLosingProxy
) -> None:
    """The client retries a begin_send whose reply was cut and is told ``ok``, not left waiting for its own lease."""
    store = RedisStore(patient_client(proxy.url))
    comm_id, _ = _acknowledgment(store)
    proxy.lose_reply_to(b"evalsha")
    [claim] = store.begin_sends([(comm_id, "attempt-1")], 2_000, 60_000)
    assert proxy.cut == 1
    assert claim.state == "ok" and claim.comm is not None and claim.comm.attempts == 1
    assert store.begin_send(comm_id, 3_000, 60_000, "attempt-2").state == "sending"


def test_a_pipeline_of_scripts_retried_on_a_redis_that_forgot_them_loads_them_again(
    server: RedisServer, proxy: ReplyLosingProxy
) -> None:
    """A begin_sends cut and retried after Redis lost its scripts (as on a restart) takes its communications, not NOSCRIPT."""
    store = RedisStore(patient_client(proxy.url))
    comm_id, _ = _acknowledgment(store)
    proxy.lose_reply_to(b"evalsha", then=lambda: server.client().script_flush())
    [claim] = store.begin_sends([(comm_id, "attempt-1")], 2_000, 60_000)
    assert proxy.cut == 1
    assert claim.state == "ok"


def test_a_transaction_whose_exec_reply_was_lost_is_run_again_and_applies_once(
    server: RedisServer, proxy: ReplyLosingProxy
) -> None:
    """An event whose EXEC reply was cut is applied once, and the caller gets its record, not an error."""
    store = RedisStore(patient_client(proxy.url))
    calls: list[Incident | None] = []

    def apply(current: Incident | None) -> EventRecord:
        calls.append(current)
        return EventRecord("e1", incident=Incident(id="INC-1", opened_ms=1, title="x"), action=Action.OPEN)

    proxy.lose_reply_to(b"exec")
    record = store.apply_event("e1", "INC-1", apply)
    assert proxy.cut == 1
    assert record.duplicate is True and record.action == Action.OPEN  # the retry found it applied
    assert len(calls) == 1
    assert store.incident("INC-1") == Incident(id="INC-1", opened_ms=1, title="x")


def test_connection_lost_tells_a_cut_connection_from_a_refused_command() -> None:
    """A refused or cut connection, even under another error, counts as lost; a command error does not."""
    try:
        try:
            raise redis.ConnectionError("Connection closed by server.")
        except redis.ConnectionError as e:
            raise RuntimeError("could not fire the timer") from e
    except RuntimeError as wrapped:
        assert connection_lost(wrapped)
    assert connection_lost(redis.TimeoutError("Timeout reading from socket"))
    assert not connection_lost(redis.ResponseError("OOM command not allowed"))
    assert not connection_lost(ValueError("a bug"))
