"""Choosing and configuring the broker: AMENDS_BROKER_URL, Dramatiq's RabbitmqBroker as amends
builds it, and what a producer or a worker does when RabbitMQ does not answer."""

from __future__ import annotations

import time
from typing import Any

import pytest
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import RedisBroker
from dramatiq.errors import ConnectionClosed

from scheduler import emit
from scheduler.errors import RedisUnavailableError, SettingsError
from scheduler.service.processes import worker_timeout_ms
from scheduler.service.queues import (
    DELAY_POLL_MS,
    BrokerUnavailableError,
    _DoorbellConsumer,
    broker_location,
    build_broker,
    is_rabbitmq_broker,
)
from scheduler.service.settings import Settings
from tests.conftest import App, event
from tests.realservers import free_port

AMQP = "amqp://amends:s3cret@rabbit.example:5672/amends"


def test_amends_broker_url_puts_the_queues_on_rabbitmq_and_unset_leaves_them_on_redis() -> None:
    """AMENDS_BROKER_URL wins for the broker only; the store stays on AMENDS_REDIS_URL."""
    env = {"AMENDS_REDIS_URL": "redis://store.example:6379/0"}
    assert Settings.from_env(env).resolved_broker_url() == "redis://store.example:6379/0"
    settings = Settings.from_env({**env, "AMENDS_BROKER_URL": AMQP})
    assert settings.resolved_broker_url() == AMQP
    assert settings.resolved_redis_url() == "redis://store.example:6379/0"
    assert "s3cret" not in repr(settings)
    own_redis = Settings.from_env({**env, "AMENDS_BROKER_URL": "redis://queues.example:6379/0"})
    assert own_redis.resolved_broker_url() == "redis://queues.example:6379/0"


def test_a_broker_url_of_another_kind_is_refused_naming_the_accepted_ones() -> None:
    with pytest.raises(
        SettingsError, match=r"AMENDS_BROKER_URL must start with amqp:// or amqps://.*not http:"
    ):
        Settings.from_env({"AMENDS_BROKER_URL": "http://rabbit.example:15672"})


def test_an_amqp_url_builds_dramatiqs_rabbitmq_broker_with_publisher_confirms() -> None:
    """Producers fail fast (one connection attempt, a held-back publish gives up after 5 s);
    workers and schedulers keep reconnecting for about 80 s; the URL's own settings win."""
    producer = build_broker(AMQP)
    patient = build_broker(AMQP, patient=True)
    tuned = build_broker(AMQP + "?connection_attempts=3&retry_delay=1", patient=True)
    try:
        assert isinstance(producer, RabbitmqBroker) and is_rabbitmq_broker(producer)
        assert producer.confirm_delivery and patient.confirm_delivery
        assert {"events", "deliver", "timers"} <= producer.get_declared_queues()
        assert (producer.parameters.connection_attempts, producer.parameters.blocked_connection_timeout) == (
            1,
            5,
        )
        assert (patient.parameters.connection_attempts, patient.parameters.retry_delay) == (40, 2)
        assert patient.parameters.blocked_connection_timeout is None  # waits out an alarm: backpressure
        assert (tuned.parameters.connection_attempts, tuned.parameters.retry_delay) == (3, 1)
        assert (patient.parameters.virtual_host, patient.parameters.credentials.username) == (
            "amends",
            "amends",
        )
    finally:
        for broker in (producer, patient, tuned):
            broker.close()


def test_logs_name_where_the_queues_are_without_credentials() -> None:
    rabbit = build_broker("amqps://amends:s3cret@rabbit.example/prod%2Feu")
    redis_broker = build_broker("redis://:s3cret@queues.example:6380/2")
    try:
        assert broker_location(rabbit) == "amqps://rabbit.example:5671/prod%2Feu"
        assert broker_location(redis_broker) == "redis://queues.example:6380/2"
        assert isinstance(redis_broker, RedisBroker) and not is_rabbitmq_broker(redis_broker)
        # RabbitMQ pushes messages; an idle consumer only wakes to hand on delayed ones
        assert (worker_timeout_ms(rabbit), worker_timeout_ms(redis_broker)) == (100, 1000)
        # Redis consumers wait for producers' doorbell (delay queues poll), whatever the worker's timeout
        consumers = {q: redis_broker.consume(q, timeout=1000) for q in ("events", "deliver", "deliver.DQ")}
        woken = {q for q, consumer in consumers.items() if isinstance(consumer, _DoorbellConsumer)}
        assert woken == {"events", "deliver"}
        assert consumers["deliver.DQ"].timeout == DELAY_POLL_MS == 100  # type: ignore[attr-defined]
        for consumer in consumers.values():
            consumer.close()
    finally:
        rabbit.close()
        redis_broker.close()


def test_emit_says_rabbitmq_did_not_answer_and_enqueues_nothing() -> None:
    """No RabbitMQ at the URL: emit() fails at once with BrokerUnavailableError, which the API
    answers with 503 and the CLI with exit status 1, as when Redis is away."""
    broker = build_broker(f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F")
    started = time.monotonic()
    try:
        with pytest.raises(
            BrokerUnavailableError, match="was not enqueued: RabbitMQ did not answer"
        ) as caught:
            emit(event(), broker=broker)
    finally:
        broker.close()
    assert isinstance(caught.value, RedisUnavailableError)
    assert time.monotonic() - started < 5


@pytest.mark.real
def test_an_event_whose_dispatch_meets_a_lost_broker_connection_is_retried_not_rejected(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The broker connection drops as the worker hands the acknowledgments on: the event is tried
    again (it is then already applied) and the sweep sends what it composed; nothing is rejected."""
    import workers.actors

    real_send = workers.actors.deliver_many.send
    failures = iter([ConnectionClosed(OSError("Stream connection lost"))])

    def send(*args: Any, **kwargs: Any) -> Any:
        failure = next(failures, None)
        if failure is not None:
            raise failure
        return real_send(*args, **kwargs)

    monkeypatch.setattr(workers.actors.deliver_many, "send", send)
    emit(event(), broker=app.broker)
    app.drain()
    app.settle()
    assert app.runtime.store.rejected() == []
    assert {m.rcpt_tos[0] for m in app.sink.received} == {
        "finance@acme.example",
        "support@globex.example",
        "eng@acme.example",
    }
