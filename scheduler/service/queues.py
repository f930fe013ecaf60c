"""The Dramatiq side of amends: queue and actor names, the broker, and plain enqueues.

The broker is Dramatiq's RedisBroker on a Redis (by default the store's), or Dramatiq's
RabbitmqBroker when ``AMENDS_BROKER_URL`` is ``amqp://…``. Nothing here assumes the broker's
Redis is the store's.

Producers (``emit``, the scheduler loop) enqueue by actor name, so they need no import
of the worker code.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import dramatiq
from dramatiq.broker import Consumer
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import AsyncIO, CurrentMessage, Retries, default_middleware

from scheduler.errors import RedisUnavailableError

__all__ = [
    "DELIVER_QUEUE",
    "EVENTS_QUEUE",
    "NAMESPACE",
    "QUEUES",
    "TIMERS_QUEUE",
    "BrokerUnavailableError",
    "broker_location",
    "build_broker",
    "enqueue",
    "is_rabbitmq",
    "is_rabbitmq_broker",
]

NAMESPACE = "amends-dramatiq"
EVENTS_QUEUE = "events"
DELIVER_QUEUE = "deliver"
TIMERS_QUEUE = "timers"

_DEAD_WORKER_MS = 15_000
"""Redis broker: a worker silent this long is dead: its unacked messages go back to their queues."""
_MAINTENANCE_CHANCE = 10_000
"""Redis broker: per million broker commands, how many also look for dead workers (Dramatiq's default is 1,000)."""

_RABBITMQ_CONNECTION_ATTEMPTS = 40
_RABBITMQ_RETRY_DELAY_S = 2.0
"""A patient RabbitMQ broker tries to (re)connect 40 times, 2 s apart (about 80 s, like the
patient Redis client) before an error reaches the code; producers try once and fail fast."""
_RABBITMQ_BLOCKED_TIMEOUT_S = 5.0
"""A producer's publish that RabbitMQ holds back (memory or disk alarm) fails after this long
(Dramatiq tries 6 times), so the API answers 503 instead of hanging. Patient brokers have no
such limit: a worker's or scheduler's publish waits for the alarm to clear, as backpressure,
rather than give up on a message it has already taken."""

QUEUES = (EVENTS_QUEUE, DELIVER_QUEUE, TIMERS_QUEUE)


class BrokerUnavailableError(RedisUnavailableError):
    """RabbitMQ did not answer; nothing was enqueued.

    A :class:`RedisUnavailableError`, so that whoever answers Redis being away (the HTTP API's
    503, the CLI's exit status 1) answers this the same way.
    """


def is_rabbitmq(url: str) -> bool:
    """Whether ``url`` names a RabbitMQ broker (``amqp://`` or ``amqps://``)."""
    return url.startswith(("amqp://", "amqps://"))


def build_broker(
    url: str,
    *,
    max_retries: int = 8,
    min_backoff_ms: int = 2_000,
    max_backoff_ms: int = 300_000,
    patient: bool = False,
) -> dramatiq.Broker:
    """The broker ``url`` names, with the middleware amends' actors rely on.

    ``amqp://`` or ``amqps://`` is RabbitMQ through Dramatiq's own ``RabbitmqBroker``; any other
    URL is a Redis through Dramatiq's ``RedisBroker``. ``patient`` (workers and schedulers)
    rides out a restart of the broker; producers such as the CLI and the API fail fast
    instead, so that their caller hears of it.
    """
    middleware: list[Any] = [m() for m in default_middleware if m is not Retries]
    middleware += [
        Retries(max_retries=max_retries, min_backoff=min_backoff_ms, max_backoff=max_backoff_ms),
        AsyncIO(),
        CurrentMessage(),
    ]
    if is_rabbitmq(url):
        broker = _rabbitmq_broker(url, middleware, patient=patient)
    else:
        broker = _redis_broker(url, middleware, patient=patient)
    for queue in QUEUES:
        broker.declare_queue(queue)
    return broker


POLL_MS = 20
"""How long an idle consumer of ``events``, ``deliver`` or ``timers`` waits before it asks
Redis again: an acknowledgment passes two queues (events, then deliver), so this bounds
what polling adds to its latency."""
DELAY_POLL_MS = 100
"""The same for a delay queue (``events.DQ``...), which only holds messages to be handed on
later (an event waiting for its ``opened`` waits 100 ms first, a retry seconds)."""


class PollingRedisBroker(RedisBroker):
    """Dramatiq's RedisBroker whose consumers poll at their own pace, whatever the worker's timeout.

    Dramatiq gives every consumer and worker thread one ``worker_timeout``; an idle worker
    thread wakes that often just to see whether it should stop. Consumers here poll every
    ``POLL_MS`` (``DELAY_POLL_MS`` for delay queues), so the worker's timeout can be long
    and its idle threads quiet.
    """

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> Consumer:
        return super().consume(queue_name, prefetch, DELAY_POLL_MS if queue_name.endswith(".DQ") else POLL_MS)


def _redis_broker(url: str, middleware: list[Any], *, patient: bool) -> RedisBroker:
    # A worker killed with messages in hand: Dramatiq hands them to the others once its
    # heartbeat is this old (its consumers beat on every fetch, 10 times a second).
    options: dict[str, Any] = {
        "namespace": NAMESPACE,
        "middleware": middleware,
        "heartbeat_timeout": _DEAD_WORKER_MS,
        "maintenance_chance": _MAINTENANCE_CHANCE,
    }
    if patient:
        from scheduler.storage.connection import patient_client

        return PollingRedisBroker(client=patient_client(url), **options)  # type: ignore[no-untyped-call]
    return PollingRedisBroker(url=url, **options)  # type: ignore[no-untyped-call]


def _rabbitmq_broker(url: str, middleware: list[Any], *, patient: bool) -> dramatiq.Broker:
    """Dramatiq's RabbitmqBroker with publisher confirms.

    With ``confirm_delivery`` an enqueue returns once RabbitMQ has taken the message (durable
    queues, persistent messages), so a publish on a connection the server has already dropped
    fails and is sent again instead of vanishing. A killed worker's unacked messages go back
    to their queue as soon as its connection closes: RabbitMQ needs none of the Redis broker's
    heartbeat and maintenance settings. Settings given in the URL's query win over these.
    """
    from dramatiq.brokers.rabbitmq import RabbitmqBroker

    pika_logger = logging.getLogger("pika")
    if pika_logger.level == logging.NOTSET:  # pika says INFO of every connection; keep its warnings
        pika_logger.setLevel(logging.WARNING)
    broker = RabbitmqBroker(url=url, middleware=middleware, confirm_delivery=True)
    parameters = broker.parameters if isinstance(broker.parameters, list) else [broker.parameters]
    for one_url, one in zip(url.split(";"), parameters, strict=True):
        given = parse_qs(urlsplit(one_url).query)
        if patient:
            if "connection_attempts" not in given:
                one.connection_attempts = _RABBITMQ_CONNECTION_ATTEMPTS
            if "retry_delay" not in given:
                one.retry_delay = _RABBITMQ_RETRY_DELAY_S
        elif "blocked_connection_timeout" not in given:
            one.blocked_connection_timeout = _RABBITMQ_BLOCKED_TIMEOUT_S
    return broker


def is_rabbitmq_broker(broker: dramatiq.Broker) -> bool:
    from dramatiq.brokers.rabbitmq import RabbitmqBroker

    return isinstance(broker, RabbitmqBroker)


def broker_location(broker: dramatiq.Broker) -> str:
    """Where ``broker`` keeps its queues, without credentials: for logs and start-up lines."""
    if isinstance(broker, RedisBroker):
        kwargs = broker.client.connection_pool.connection_kwargs
        if "path" in kwargs:
            return f"unix://{kwargs['path']}"
        return f"redis://{kwargs.get('host')}:{kwargs.get('port')}/{kwargs.get('db', 0)}"
    if not is_rabbitmq_broker(broker):
        return type(broker).__name__
    parameters = getattr(broker, "parameters", [])
    locations = []
    for one in parameters if isinstance(parameters, list) else [parameters]:
        scheme = "amqps" if one.ssl_options else "amqp"
        locations.append(f"{scheme}://{one.host}:{one.port}/{quote(one.virtual_host, safe='')}")
    return ";".join(locations)


def enqueue(broker: dramatiq.Broker, queue: str, actor_name: str, *args: Any) -> None:
    """Send a plain, undelayed message to ``actor_name`` on ``queue``."""
    message: dramatiq.Message[Any] = dramatiq.Message(
        queue_name=queue, actor_name=actor_name, args=args, kwargs={}, options={}
    )
    broker.enqueue(message)
