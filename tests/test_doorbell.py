"""Consumers woken by producers (the Redis broker's doorbell), on real Redis servers.

An idle consumer waits for its queue's doorbell instead of asking Redis 50 times a second;
a producer rings it after each enqueue. A ring is only a hint: without one the consumer
still asks every ``IDLE_POLL_MS``, so a lost ring costs latency, never a message.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest
import redis
from dramatiq.brokers.redis import RedisBroker

from scheduler.service import queues
from scheduler.service.queues import EVENTS_QUEUE, NAMESPACE, build_broker, enqueue
from tests.realservers import RedisServer, wait_until

pytestmark = pytest.mark.real

_LONG_IDLE_MS = 60_000
"""An idle poll so long that a test done within seconds was woken by a ring."""


@pytest.fixture
def broker_url(redis_url: str, redis_client: redis.Redis) -> Iterator[str]:
    """The flushed test DB, for brokers."""
    yield redis_url


def _idle(consumer: Any) -> None:
    """As if the consumer had found nothing many times: its next idle wait is the longest."""
    consumer._idle_misses = 30


def _next_message(consumer: Any, within_s: float) -> tuple[Any, float]:
    """The first message ``consumer`` yields within ``within_s``, and how long it took."""
    start = time.monotonic()
    while time.monotonic() - start < within_s:
        message = next(consumer)
        if message is not None:
            return message, time.monotonic() - start
    return None, time.monotonic() - start


def _listening(client: redis.Redis, broker: dramatiq.Broker) -> bool:
    """Whether a doorbell listens on ``broker``'s channel (PUBSUB NUMSUB)."""
    channel = broker.doorbell.channel  # type: ignore[attr-defined]
    return int(dict(client.pubsub_numsub(channel)).get(channel.encode(), 0)) > 0


def _enqueue_later(broker: dramatiq.Broker, delay_s: float, payload: str) -> threading.Thread:
    """Enqueue after ``delay_s``, so that the consumer is waiting by then, not fetching."""

    def run() -> None:
        time.sleep(delay_s)
        enqueue(broker, EVENTS_QUEUE, "handle_event", payload)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_an_idle_consumer_fetches_as_soon_as_another_process_enqueues(
    broker_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker that has been idle for long fetches a new event at once, not at its next poll:
    the producer (here another broker, as `amends emit` would be) rings the doorbell."""
    monkeypatch.setattr(queues, "IDLE_POLL_MS", _LONG_IDLE_MS)
    worker_side, producer = build_broker(broker_url), build_broker(broker_url)
    consumer = worker_side.consume(EVENTS_QUEUE, prefetch=2)
    try:
        assert next(consumer) is None  # nothing there yet; the doorbell starts listening
        wait_until(lambda: _listening(worker_side.client, worker_side), 10, "the doorbell listening")
        _idle(consumer)
        sending = _enqueue_later(producer, 0.5, "rung")
        message, waited_s = _next_message(consumer, 30)
        sending.join()
        assert message is not None and list(message.args) == ["rung"]
        assert waited_s < 10, f"fetched after {waited_s:.1f} s: the doorbell did not wake the consumer"
    finally:
        consumer.close()
        worker_side.close()
        producer.close()


def test_a_message_enqueued_without_a_ring_is_fetched_at_the_next_idle_poll(
    broker_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A producer that rings no doorbell (Dramatiq's own RedisBroker here; a publish that
    failed, or a listener reconnecting, alike) costs at most one idle poll, never the message."""
    monkeypatch.setattr(queues, "IDLE_POLL_MS", 300)
    worker_side = build_broker(broker_url)
    silent = RedisBroker(url=broker_url, namespace=NAMESPACE)  # type: ignore[no-untyped-call]
    silent.declare_queue(EVENTS_QUEUE)
    consumer = worker_side.consume(EVENTS_QUEUE, prefetch=2)
    try:
        assert next(consumer) is None
        _idle(consumer)
        sending = _enqueue_later(silent, 0.2, "unrung")
        message, _ = _next_message(consumer, 30)
        sending.join()
        assert message is not None and list(message.args) == ["unrung"]
    finally:
        consumer.close()
        worker_side.close()
        silent.close()


def test_a_ring_that_fails_costs_the_producer_nothing(
    broker_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis refuses the publish after it took the message: the enqueue succeeds (no error
    reaches `amends emit` or the API for a message already in its queue), and a worker
    finds the message at its next poll."""
    monkeypatch.setattr(queues, "IDLE_POLL_MS", 300)
    producer, worker_side = build_broker(broker_url), build_broker(broker_url)

    def refused(*args: Any, **kwargs: Any) -> int:
        raise redis.ConnectionError("publish refused")

    monkeypatch.setattr(producer.client, "publish", refused)  # type: ignore[attr-defined]
    consumer = worker_side.consume(EVENTS_QUEUE, prefetch=2)
    try:
        enqueue(producer, EVENTS_QUEUE, "handle_event", "kept")
        message, _ = _next_message(consumer, 30)
        assert message is not None and list(message.args) == ["kept"]
    finally:
        consumer.close()
        worker_side.close()
        producer.close()


def test_the_doorbell_rings_again_after_redis_restarts() -> None:
    """Redis restarts under an idle worker: its doorbell subscribes again, and an event emitted
    afterwards is handled within seconds, not at the next poll a minute later."""
    handled: list[str] = []
    with RedisServer(extra_args=("--appendonly", "no")) as server:
        broker = build_broker(server.url)
        original = queues.IDLE_POLL_MS
        queues.IDLE_POLL_MS = _LONG_IDLE_MS

        @dramatiq.actor(queue_name=EVENTS_QUEUE, actor_name="handle_event", broker=broker)
        def handle_event(payload: str) -> None:
            handled.append(payload)

        worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=1000)
        worker.start()
        try:
            producer = build_broker(server.url)
            enqueue(producer, EVENTS_QUEUE, "handle_event", "before")
            wait_until(lambda: handled == ["before"], 20, "the first event handled")
            client = server.client()
            wait_until(lambda: _listening(client, broker), 10, "the doorbell listening")
            server.process.kill()  # type: ignore[union-attr]
            server.process.wait()  # type: ignore[union-attr]
            server.start()
            wait_until(lambda: _listening(client, broker), 20, "the doorbell listening again")
            enqueue(producer, EVENTS_QUEUE, "handle_event", "after")
            started = time.monotonic()
            wait_until(lambda: handled == ["before", "after"], 30, "the event after the restart handled")
            assert time.monotonic() - started < 20
            producer.close()
        finally:
            queues.IDLE_POLL_MS = original
            worker.stop()
            broker.close()
