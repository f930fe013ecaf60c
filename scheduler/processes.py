"""Starting amends' long-running parts in this process: a worker, a scheduler loop."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker

from scheduler.config import ConfigSource
from scheduler.errors import ConfigError
from scheduler.loop import SchedulerLoop
from scheduler.queues import TIMERS_QUEUE, build_broker, enqueue
from scheduler.settings import Settings
from scheduler.timers import RedisTimerStore

__all__ = ["RunningWorker", "broker_for", "scheduler_loop", "start_scheduler", "start_worker", "timer_sender"]

logger = logging.getLogger(__name__)


def broker_for(settings: Settings) -> RedisBroker:
    return build_broker(
        settings.resolved_redis_url(),
        max_retries=settings.retry_max,
        min_backoff_ms=settings.retry_min_backoff_ms,
        max_backoff_ms=settings.retry_max_backoff_ms,
    )


@dataclass
class RunningWorker:
    broker: RedisBroker
    worker: dramatiq.Worker

    @property
    def broker_url_redacted(self) -> str:
        kwargs = self.broker.client.connection_pool.connection_kwargs
        if "path" in kwargs:
            return f"unix://{kwargs['path']}"
        return f"redis://{kwargs.get('host')}:{kwargs.get('port')}/{kwargs.get('db', 0)}"

    def stop(self) -> None:
        self.worker.stop()
        self.broker.close()


def start_worker(settings: Settings, *, threads: int = 8, broker: RedisBroker | None = None) -> RunningWorker:
    """Bind the actors to a broker on ``settings``' Redis and start consuming."""
    import workers

    broker = broker or broker_for(settings)
    dramatiq.set_broker(broker)
    workers.bind(broker)
    workers.configure(settings)
    worker = dramatiq.Worker(broker, worker_threads=threads, worker_timeout=100)
    worker.start()
    return RunningWorker(broker, worker)


def timer_sender(broker: dramatiq.Broker) -> Callable[[list[tuple[str, int]]], None]:
    """Enqueue one ``fire_timers`` message for a group of claimed timers."""

    def send(timers: list[tuple[str, int]]) -> None:
        enqueue(broker, TIMERS_QUEUE, "fire_timers", [[member, due_ms] for member, due_ms in timers])

    return send


def scheduler_loop(settings: Settings, broker: RedisBroker | None = None) -> SchedulerLoop:
    """A loop that enqueues due timers and, when the config file changes, a reconcile."""
    broker = broker or broker_for(settings)
    client = redis.Redis.from_url(settings.resolved_redis_url())
    timers = RedisTimerStore(client)
    try:
        source: ConfigSource | None = ConfigSource(settings.config_path)
    except ConfigError as e:
        logger.error("%s\nnew stakeholders will not be picked up until it is fixed", e)
        source = None
    generation = [source.generation if source else 0]

    send = timer_sender(broker)

    def watch_config() -> None:
        if source is None:
            return
        source.current()
        if source.generation != generation[0]:
            generation[0] = source.generation
            enqueue(broker, TIMERS_QUEUE, "reconcile")

    return SchedulerLoop(
        timers, send, lease_ms=settings.timer_lease_ms, max_sleep_s=1.0, on_idle=watch_config
    )


def start_scheduler(
    settings: Settings, stop: threading.Event, broker: RedisBroker | None = None
) -> threading.Thread:
    loop = scheduler_loop(settings, broker)
    thread = threading.Thread(target=loop.run, args=(stop,), name="amends-scheduler", daemon=True)
    thread.start()
    return thread
