"""The Dramatiq side of amends: queue and actor names, the broker, and plain enqueues.

Producers (``emit``, the scheduler loop) enqueue by actor name, so they need no import
of the worker code.
"""

from __future__ import annotations

from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import AsyncIO, CurrentMessage, Retries, default_middleware

__all__ = [
    "DELIVER_QUEUE",
    "EVENTS_QUEUE",
    "NAMESPACE",
    "TIMERS_QUEUE",
    "build_broker",
    "enqueue",
]

NAMESPACE = "amends-dramatiq"
EVENTS_QUEUE = "events"
DELIVER_QUEUE = "deliver"
TIMERS_QUEUE = "timers"

_DEAD_WORKER_MS = 15_000
"""A worker silent this long is dead: its unacked messages go back to their queues."""
_MAINTENANCE_CHANCE = 10_000
"""Per million broker commands, how many also look for dead workers (Dramatiq's default is 1,000)."""


def build_broker(
    redis_url: str,
    *,
    max_retries: int = 8,
    min_backoff_ms: int = 2_000,
    max_backoff_ms: int = 300_000,
    patient: bool = False,
) -> RedisBroker:
    """A Redis broker with the middleware amends' actors rely on.

    ``patient`` (workers and schedulers) rides out a Redis restart; producers such as the
    CLI and the API fail fast instead, so that their caller hears of it.
    """
    middleware: list[Any] = [m() for m in default_middleware if m is not Retries]
    middleware += [
        Retries(max_retries=max_retries, min_backoff=min_backoff_ms, max_backoff=max_backoff_ms),
        AsyncIO(),
        CurrentMessage(),
    ]
    # A worker killed with messages in hand: Dramatiq hands them to the others once its
    # heartbeat is this old (its consumers beat on every fetch, 10 times a second).
    recovery = {"heartbeat_timeout": _DEAD_WORKER_MS, "maintenance_chance": _MAINTENANCE_CHANCE}
    if patient:
        from scheduler.storage.connection import patient_client

        broker = RedisBroker(
            client=patient_client(redis_url), namespace=NAMESPACE, middleware=middleware, **recovery
        )  # type: ignore[no-untyped-call]
    else:
        broker = RedisBroker(url=redis_url, namespace=NAMESPACE, middleware=middleware, **recovery)  # type: ignore[no-untyped-call]
    for queue in (EVENTS_QUEUE, DELIVER_QUEUE, TIMERS_QUEUE):
        broker.declare_queue(queue)
    return broker


def enqueue(broker: dramatiq.Broker, queue: str, actor_name: str, *args: Any) -> None:
    """Send a plain, undelayed message to ``actor_name`` on ``queue``."""
    message: dramatiq.Message[Any] = dramatiq.Message(
        queue_name=queue, actor_name=actor_name, args=args, kwargs={}, options={}
    )
    broker.enqueue(message)
