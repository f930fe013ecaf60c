"""The Dramatiq side of amends: queue and actor names, the broker, and plain enqueues.

The broker is Dramatiq's RedisBroker on a Redis (by default the store's), or Dramatiq's
RabbitmqBroker when ``AMENDS_BROKER_URL`` is ``amqp://…``. Nothing here assumes the broker's
Redis is the store's.

Producers (``emit``, the scheduler loop) enqueue by actor name, so they need no import
of the worker code.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import dramatiq
import redis
from dramatiq.broker import Consumer
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.common import compute_backoff
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

logger = logging.getLogger(__name__)

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
"""How long a consumer whose prefetch is full waits at most before it looks again (its
messages' acks free room as worker threads finish them); it backs off from 5 ms to this."""
RING_GAP_S = 0.02
"""A producer rings a queue's doorbell at most this often: a burst of enqueues rings once
every 20 ms, and a consumer woken by the first ring is still looking often enough (every 5,
10, 20 ms… after a message) to find the rest without one."""
IDLE_POLL_MS = 1_000
"""How long an idle consumer of ``events``, ``deliver`` or ``timers`` waits at most before
it asks Redis again, when no doorbell rang (it backs off from 5 ms to this)."""
MAINTENANCE_EVERY_S = 2.0
"""How often a consumer's fetch also does the broker's maintenance for its queue (moving a
dead worker's unacked messages back). Dramatiq does it by chance on 1 % of the commands on
a queue, which for an idle consumer asking once a second would be once in minutes."""
DELAY_POLL_MS = 100
"""How long an idle consumer of a delay queue (``events.DQ``...) waits before it asks again:
it holds messages to be handed on later (an event waiting for its ``opened`` waits 100 ms
first, a retry seconds), and no doorbell rings for it."""


class _Doorbell:
    """Wakes this process's idle consumers as soon as any producer enqueues on their queue.

    Producers publish the queue's name on a Redis channel after each enqueue
    (:meth:`DoorbellRedisBroker.do_enqueue`); one thread per broker listens and sets the event
    of every consumer of that queue. A ring is only a hint: a consumer that hears none still
    asks Redis every ``IDLE_POLL_MS``, so a lost ring (the listener reconnecting, a producer
    whose publish failed) costs latency, never a message.
    """

    def __init__(self, client: redis.Redis, channel: str) -> None:
        self.client = client
        self.channel = channel
        self._lock = threading.Lock()
        self._events: dict[str, set[threading.Event]] = {}
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def register(self, queue_name: str) -> threading.Event:
        event = threading.Event()
        with self._lock:
            self._events.setdefault(queue_name, set()).add(event)
        return event

    def unregister(self, queue_name: str, event: threading.Event) -> None:
        with self._lock:
            self._events.get(queue_name, set()).discard(event)
            if not any(self._events.values()):
                self.stop()

    def listen(self) -> None:
        """Start the listening thread, unless it runs already."""
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._stop = threading.Event()
                self._thread = threading.Thread(
                    target=self._listen, args=(self._stop,), name="amends-doorbell", daemon=True
                )
                self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread = None

    def ring(self, queue_name: str | None = None) -> None:
        """Wake the consumers of ``queue_name`` (of every queue: None)."""
        with self._lock:
            rung = [e for q, events in self._events.items() if queue_name in (None, q) for e in events]
        for event in rung:
            event.set()

    def _listen(self, stop: threading.Event) -> None:
        while not stop.is_set():
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(self.channel)
                self.ring()  # what was enqueued while no one listened
                while not stop.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message is not None:
                        data = message["data"]
                        self.ring(data.decode() if isinstance(data, bytes) else str(data))
            except (redis.RedisError, OSError) as e:
                logger.debug("the doorbell's subscription failed (%s); consumers poll meanwhile", e)
                stop.wait(1.0)
            finally:
                with contextlib.suppress(redis.RedisError, OSError):
                    pubsub.close()


class _DoorbellConsumer(_RedisConsumer):
    """Dramatiq's Redis consumer, waiting for its queue's doorbell when idle instead of
    sleeping a fixed time: a message is fetched as soon as it is enqueued, and an idle
    worker asks Redis about once a second instead of 50 times."""

    def __init__(self, broker: DoorbellRedisBroker, queue_name: str, prefetch: int) -> None:
        super().__init__(broker, queue_name, prefetch, 0)  # type: ignore[no-untyped-call]  # Dramatiq's own wait: none
        self._doorbell = broker.doorbell
        self._rung = self._doorbell.register(queue_name)
        self._maintained_at = time.monotonic()
        self._idle_misses = 0
        self._full_misses = 0

    def __next__(self) -> Any:
        self._rung.clear()  # a ring from now on is for a message this fetch may not see
        if time.monotonic() - self._maintained_at >= MAINTENANCE_EVERY_S:
            self._maintained_at = time.monotonic()
            self.broker.maintain_on_next_fetch()
        full = self.outstanding_message_count >= self.prefetch  # then Dramatiq does not fetch
        message = super().__next__()  # type: ignore[no-untyped-call]
        if message is not None:
            self._idle_misses = self._full_misses = 0
        elif full:  # work in hand: look again soon, as worker threads free room
            self._idle_misses = 0
            self._full_misses, wait_ms = compute_backoff(self._full_misses, max_backoff=POLL_MS)
            time.sleep(wait_ms / 1000)
        else:  # the queue had nothing: wait for the doorbell, backing off to IDLE_POLL_MS
            self._full_misses = 0
            self._doorbell.listen()
            self._idle_misses, wait_ms = compute_backoff(self._idle_misses, max_backoff=IDLE_POLL_MS)
            self._rung.wait(wait_ms / 1000)
        return message

    def close(self) -> None:
        self._doorbell.unregister(self.queue_name, self._rung)
        super().close()


class DoorbellRedisBroker(RedisBroker):
    """Dramatiq's RedisBroker whose consumers are woken by producers, whatever the worker's timeout.

    Dramatiq gives every consumer and worker thread one ``worker_timeout``, and its Redis
    consumers poll. Here a producer rings a doorbell (Redis pub/sub) after each enqueue and
    the idle consumers of that queue fetch at once; without a ring they ask again every
    ``IDLE_POLL_MS`` at most (delay queues every ``DELAY_POLL_MS``). So the worker's timeout
    can be long, its idle threads quiet, and an acknowledgment waits on no poll.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]
        db = self.client.connection_pool.connection_kwargs.get("db", 0)
        self.doorbell = _Doorbell(self.client, f"{self.namespace}:{db}:doorbell")
        self._maintain = threading.local()
        self._rung_at: dict[str, float] = {}

    def maintain_on_next_fetch(self) -> None:
        """Have this thread's next fetch do the maintenance of its queue, whatever the chance."""
        self._maintain.due = True

    def _should_do_maintenance(self, command: str) -> int:
        if command == "fetch" and getattr(self._maintain, "due", False):
            self._maintain.due = False
            return 1
        return int(super()._should_do_maintenance(command))

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> Consumer:
        if queue_name.endswith(".DQ"):
            return super().consume(queue_name, prefetch, DELAY_POLL_MS)
        return _DoorbellConsumer(self, queue_name, prefetch)

    def do_enqueue(self, queue_name: str, *args: Any) -> Any:
        return self._dispatch_and_ring("enqueue", queue_name, *args)

    def do_requeue(self, queue_name: str, *args: Any) -> Any:
        return self._dispatch_and_ring("requeue", queue_name, *args)

    def _dispatch_and_ring(self, command: str, queue_name: str, *args: Any) -> Any:
        """Dramatiq's own ``command`` (what ``do_<command>`` runs), then a ring for the queue."""
        answer = self._dispatch(command)(queue_name, *args)  # type: ignore[no-untyped-call]
        self._ring(queue_name)
        return answer

    def _ring(self, queue_name: str) -> None:
        """Tell the consumers of ``queue_name`` everywhere; the message is in all the same if
        this fails (they find it on their next poll), so a failure is not the caller's."""
        if queue_name.endswith(".DQ"):
            return
        now = time.monotonic()
        if now - self._rung_at.get(queue_name, -RING_GAP_S) < RING_GAP_S:
            return
        self._rung_at[queue_name] = now
        try:
            self.client.publish(self.doorbell.channel, queue_name)
        except redis.RedisError as e:
            logger.debug("the doorbell did not ring for %s: %s", queue_name, e)

    def close(self) -> None:
        self.doorbell.stop()
        super().close()


def _redis_broker(url: str, middleware: list[Any], *, patient: bool) -> RedisBroker:
    # A worker killed with messages in hand: Dramatiq hands them to the others once its
    # heartbeat is this old (its consumers beat on every fetch: those of the delay queues
    # 10 times a second, the others at least once a second).
    options: dict[str, Any] = {
        "namespace": NAMESPACE,
        "middleware": middleware,
        "heartbeat_timeout": _DEAD_WORKER_MS,
        "maintenance_chance": _MAINTENANCE_CHANCE,
    }
    if patient:
        from scheduler.storage.connection import patient_client

        return DoorbellRedisBroker(client=patient_client(url), **options)
    return DoorbellRedisBroker(url=url, **options)


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
