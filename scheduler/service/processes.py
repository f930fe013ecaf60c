"""Starting amends' long-running parts in this process: a worker, a scheduler loop."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import dramatiq
import redis

from scheduler.core.config import ConfigSource
from scheduler.core.durations import format_duration
from scheduler.core.model import ms_of
from scheduler.core.ports import Store
from scheduler.errors import ConfigError, StorageError
from scheduler.service.loop import SchedulerLoop
from scheduler.service.queues import (
    DELIVER_QUEUE,
    TIMERS_QUEUE,
    broker_location,
    build_broker,
    enqueue,
    is_rabbitmq_broker,
)
from scheduler.service.settings import Settings
from scheduler.storage.clock import ServerClock
from scheduler.storage.connection import patient_client
from scheduler.storage.redis_store import RedisStore
from scheduler.storage.timers import RedisTimerStore

__all__ = [
    "RunningScheduler",
    "RunningWorker",
    "broker_for",
    "deliver_sender",
    "process_name",
    "remove_expired",
    "run_worker_processes",
    "scheduler_loop",
    "start_scheduler",
    "start_worker",
    "sweeper",
    "timer_sender",
    "worker_timeout_ms",
]

logger = logging.getLogger(__name__)


def broker_for(settings: Settings, *, patient: bool = False) -> dramatiq.Broker:
    """The broker of ``settings``: RabbitMQ for an ``amqp://`` AMENDS_BROKER_URL, else a Redis."""
    return build_broker(
        settings.resolved_broker_url(),
        max_retries=settings.retry_max,
        min_backoff_ms=settings.retry_min_backoff_ms,
        max_backoff_ms=settings.retry_max_backoff_ms,
        patient=patient,
    )


HEARTBEAT_EVERY_S = 5.0

_REDIS_WORKER_TIMEOUT_MS = 1_000
"""Redis broker: how often an idle worker thread wakes to see whether it should stop
(consumers wait for their queue's doorbell, whatever this is: ``queues.DoorbellRedisBroker``)."""

_RABBITMQ_IDLE_MS = 100
"""RabbitMQ pushes messages to consumers, so nothing polls; an idle consumer wakes this often
to hand on delayed messages that came due (an event waiting for its ``opened`` first waits 100 ms)."""


def worker_timeout_ms(broker: dramatiq.Broker) -> int:
    """Dramatiq's ``worker_timeout`` for ``broker``: RabbitMQ's idle wake-up, or for Redis
    (whose consumers keep their own pace) how often idle threads look up."""
    return _RABBITMQ_IDLE_MS if is_rabbitmq_broker(broker) else _REDIS_WORKER_TIMEOUT_MS


def process_name(role: str) -> str:
    """``worker@host:pid``: how /healthz names a running process."""
    return f"{role}@{socket.gethostname()}:{os.getpid()}"


def _beat(store: Store, name: str, role: str, clock: Callable[[], datetime]) -> None:
    try:
        store.heartbeat(name, role, ms_of(clock()))
    except (redis.RedisError, StorageError) as e:
        logger.warning("could not record a heartbeat: %s", e)


@dataclass
class RunningWorker:
    broker: dramatiq.Broker
    worker: dramatiq.Worker
    stop_beating: threading.Event = field(default_factory=threading.Event)

    @property
    def broker_url_redacted(self) -> str:
        return broker_location(self.broker)

    def stop(self) -> None:
        self.stop_beating.set()
        self.worker.stop()
        self.broker.close()


def start_worker(
    settings: Settings, *, threads: int = 8, broker: dramatiq.Broker | None = None
) -> RunningWorker:
    """Bind the actors to ``settings``' broker (RabbitMQ or Redis) and start consuming."""
    import workers

    broker = broker or broker_for(settings, patient=True)
    dramatiq.set_broker(broker)
    workers.bind(broker)
    runtime = workers.configure(settings)
    worker = dramatiq.Worker(broker, worker_threads=threads, worker_timeout=worker_timeout_ms(broker))
    worker.start()
    running = RunningWorker(broker, worker)
    name = process_name("worker")

    def beat() -> None:
        while True:
            _beat(runtime.store, name, "worker", runtime.clock)
            if running.stop_beating.wait(HEARTBEAT_EVERY_S):
                return

    threading.Thread(target=beat, name="amends-heartbeat", daemon=True).start()
    return running


def timer_sender(broker: dramatiq.Broker) -> Callable[[list[tuple[str, int]]], None]:
    """Enqueue one ``fire_timers`` message for a group of claimed timers."""

    def send(timers: list[tuple[str, int]]) -> None:
        enqueue(broker, TIMERS_QUEUE, "fire_timers", [[member, due_ms] for member, due_ms in timers])

    return send


def deliver_sender(broker: dramatiq.Broker) -> Callable[[list[str]], None]:
    """Enqueue one ``deliver_many`` message for a group of communication ids."""

    def send(comm_ids: list[str]) -> None:
        enqueue(broker, DELIVER_QUEUE, "deliver_many", comm_ids)

    return send


def sweeper(store: Store, send: Callable[[list[str]], None], recheck_ms: int) -> Callable[[int], int]:
    """Dispatch again every unfinished communication due a look (see ``Store.sweep``), in groups."""

    def sweep(now_ms: int) -> int:
        count = 0
        while True:
            found = store.sweep(now_ms, recheck_ms, _SWEEP_BATCH)
            for start in range(0, len(found), _SWEEP_GROUP):
                send(found[start : start + _SWEEP_GROUP])
            count += len(found)
            if len(found) < _SWEEP_BATCH:
                return count

    return sweep


RETENTION_EVERY_S = 60.0
"""How often a scheduler removes resolved incidents older than ``retention``."""


def remove_expired(store: Store, retention_s: int, now: datetime) -> int:
    """Remove the incidents resolved more than ``retention_s`` before ``now``; how many went."""
    removed = store.remove_resolved_before(ms_of(now) - retention_s * 1000, ms_of(now))
    if removed.incidents:
        logger.info(
            "retention: removed %d incidents resolved more than %s ago, with %d communications",
            removed.incidents,
            format_duration(retention_s),
            removed.communications,
        )
    return removed.incidents


_SWEEP_BATCH = 500
_SWEEP_GROUP = 25


def scheduler_loop(settings: Settings, broker: dramatiq.Broker | None = None) -> SchedulerLoop:
    """A loop that enqueues due timers, sweeps unfinished communications, and reconciles config changes.

    It reads the Redis server's clock, so schedulers and workers on skewed hosts agree.
    """
    broker = broker or broker_for(settings, patient=True)
    client = patient_client(settings.resolved_redis_url())
    timers = RedisTimerStore(client)
    store = RedisStore(client)
    clock = ServerClock(client)
    name = process_name("scheduler")
    last_beat = [0.0]
    try:
        source: ConfigSource | None = ConfigSource(settings.config_path)
    except ConfigError as e:
        logger.error("%s\nnew stakeholders will not be picked up until it is fixed", e)
        source = None
    generation = [source.generation if source else 0]

    send = timer_sender(broker)

    last_retention = [0.0]

    def watch_config() -> None:
        if time.monotonic() - last_beat[0] >= HEARTBEAT_EVERY_S:
            last_beat[0] = time.monotonic()
            _beat(store, name, "scheduler", clock)
        if source is None:
            return
        config = source.current()
        if time.monotonic() - last_retention[0] >= RETENTION_EVERY_S:
            last_retention[0] = time.monotonic()
            remove_expired(store, config.retention, clock())
        if source.generation != generation[0]:
            generation[0] = source.generation
            enqueue(broker, TIMERS_QUEUE, "reconcile")

    return SchedulerLoop(
        timers,
        send,
        lease_ms=settings.timer_lease_ms,
        max_sleep_s=1.0,
        clock=clock,
        on_idle=watch_config,
        acks=False,
        sweep=sweeper(store, deliver_sender(broker), settings.send_lease_ms),
    )


@dataclass
class RunningScheduler:
    """A scheduler loop on its own thread; ``failure`` holds what ended it, if not a stop."""

    thread: threading.Thread
    failure: BaseException | None = None

    def join(self, timeout: float | None = None) -> None:
        self.thread.join(timeout)


def start_scheduler(
    settings: Settings, stop: threading.Event, broker: dramatiq.Broker | None = None
) -> RunningScheduler:
    """Run the loop on a thread; if it dies of an error, ``stop`` is set and ``failure`` says why."""
    loop = scheduler_loop(settings, broker)

    def run() -> None:
        try:
            loop.run(stop)
        except BaseException as e:
            logger.critical("the scheduler loop cannot go on", exc_info=True)
            running.failure = e
            stop.set()

    running = RunningScheduler(threading.Thread(target=run, name="amends-scheduler", daemon=True))
    running.thread.start()
    return running


_RESTART_PAUSE_S = 1.0


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the child gets SIGKILL when the parent dies, so a killed worker leaves no orphans."""
    import contextlib
    import ctypes
    import signal

    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def run_worker_processes(processes: int, threads: int, stop: threading.Event) -> int:
    """Run ``processes`` single-process workers and keep them running until ``stop`` is set.

    A child that exits on its own is started again after a pause, as Dramatiq's own CLI
    does; SIGTERM or Ctrl-C stops them all (each finishes the work in hand). Killing this
    parent kills the children with it.
    """
    import subprocess
    import sys

    command = [
        sys.executable,
        "-m",
        "scheduler.cli.main",
        "worker",
        "--processes",
        "1",
        "--threads",
        str(threads),
    ]

    def spawn() -> subprocess.Popen[bytes]:
        return subprocess.Popen(command, preexec_fn=_die_with_parent)

    children = [spawn() for _ in range(processes)]
    print(f"amends worker: {processes} processes x {threads} threads", flush=True)
    while not stop.wait(0.5):
        for n, child in enumerate(children):
            if child.poll() is not None:
                logger.error(
                    "worker process %d exited with %s; starting another", child.pid, child.returncode
                )
                time.sleep(_RESTART_PAUSE_S)
                children[n] = spawn()
    for child in children:
        child.terminate()
    for child in children:
        try:
            child.wait(30)
        except subprocess.TimeoutExpired:
            child.kill()
    return 0
