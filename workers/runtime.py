"""The objects a worker process shares between its actors, built once from Settings."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

import httpx
import redis

from scheduler.core.bounces import BounceList
from scheduler.core.config import Config, ConfigSource
from scheduler.core.engine import Engine
from scheduler.core.ports import AttemptEnd, Finished, Store
from scheduler.errors import StorageError
from scheduler.mail.channels import new_client
from scheduler.mail.render import TemplateSet
from scheduler.mail.smtp import SmtpPool
from scheduler.service.settings import Settings
from scheduler.storage.bounces import RedisBounceList
from scheduler.storage.clock import ServerClock
from scheduler.storage.connection import patient_client
from scheduler.storage.rates import RedisRates
from scheduler.storage.redis_store import RedisStore
from scheduler.storage.timers import RedisTimerStore

__all__ = ["EndWriter", "Runtime", "configure", "current", "reset"]


def _utcnow() -> datetime:
    return datetime.now(UTC)


_T = TypeVar("_T")


def _of_running_loop(made: dict[int, _T], make: Callable[[], _T]) -> _T:
    """What ``made`` holds for the running event loop, made by ``make`` the first time:
    async actors share one loop per process, and its SMTP pool, HTTP client and end writer."""
    loop = id(asyncio.get_running_loop())
    if loop not in made:
        made[loop] = make()
    return made[loop]


class EndWriter:
    """Writes the ends of the attempts made on one event loop, several at a time, off the loop.

    The first end starts a write (``Store.finish_sends``, in a thread) at once; the ends that
    come while it is under way go together in the next. A hop off the loop costs more than
    the Redis call it carries, so under load this saves most of them, and alone an end is
    written as soon as it comes. Each end keeps its own answer, or its own error.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._queued: list[tuple[AttemptEnd, asyncio.Future[Finished]]] = []
        self._writing: asyncio.Task[None] | None = None

    async def write(self, end: AttemptEnd) -> Finished:
        """Record ``end``; its answer, or the error writing it met."""
        future: asyncio.Future[Finished] = asyncio.get_running_loop().create_future()
        self._queued.append((end, future))
        if self._writing is None:
            self._writing = asyncio.get_running_loop().create_task(self._write_queued())
        return await future

    async def _write_queued(self) -> None:
        batch: list[tuple[AttemptEnd, asyncio.Future[Finished]]] = []
        try:
            while self._queued:
                batch, self._queued = self._queued, []
                answers: list[Finished | Exception]
                try:
                    answers = await asyncio.to_thread(self.store.finish_sends, [end for end, _ in batch])
                except Exception as e:
                    answers = [e] * len(batch)
                for (_, future), answer in zip(batch, answers, strict=True):
                    if future.done():  # its sender was cancelled
                        continue
                    if isinstance(answer, Exception):
                        future.set_exception(answer)
                    else:
                        future.set_result(answer)
                batch = []
        finally:  # cancelled (the loop is stopping): no end is left without an answer
            self._writing = None
            left, self._queued = [*batch, *self._queued], []
            for _, future in left:
                if not future.done():
                    future.set_exception(
                        StorageError("the event loop stopped before the write was confirmed")
                    )


@dataclass
class Runtime:
    """Settings, Redis, configuration, templates, the engine, and the SMTP pool and end writer of each event loop of one process."""

    settings: Settings
    client: redis.Redis
    config_source: ConfigSource
    templates: TemplateSet
    engine: Engine
    bounces: BounceList
    rates: RedisRates
    clock: Callable[[], datetime] = _utcnow
    _pools: dict[int, SmtpPool] = field(default_factory=dict)
    _http: dict[int, httpx.AsyncClient] = field(default_factory=dict)
    _end_writers: dict[int, EndWriter] = field(default_factory=dict)

    @property
    def store(self) -> Store:
        return self.engine.store

    def config(self) -> Config:
        return self.config_source.current()

    def pool(self) -> SmtpPool:
        """The SMTP pool of the running event loop (async actors share one loop per process)."""
        smtp = self.settings.smtp
        if smtp is None:
            raise RuntimeError("no SMTP server configured")
        return _of_running_loop(self._pools, lambda: SmtpPool(smtp, size=self.settings.smtp_connections))

    def http(self) -> httpx.AsyncClient:
        """The HTTP client of the running event loop, for chat and webhook channels."""
        return _of_running_loop(self._http, new_client)

    def end_writer(self) -> EndWriter:
        """The writer of attempts' ends of the running event loop."""
        return _of_running_loop(self._end_writers, lambda: EndWriter(self.store))

    @property
    def connections_opened(self) -> int:
        return sum(p.connections_opened for p in self._pools.values())


_lock = threading.Lock()
_runtime: Runtime | None = None


def configure(settings: Settings) -> Runtime:
    """Build the process's runtime from ``settings`` (replacing any earlier one)."""
    from workers.dispatch import DramatiqDispatch

    global _runtime
    client = patient_client(settings.resolved_redis_url())
    source = ConfigSource(settings.config_path)

    engine = Engine(RedisStore(client), RedisTimerStore(client), source.current, DramatiqDispatch())
    runtime = Runtime(
        settings,
        client,
        source,
        TemplateSet(settings.templates_dir),
        engine,
        RedisBounceList(client),
        RedisRates(client),
        clock=ServerClock(client),
    )
    with _lock:
        _runtime = runtime
    return runtime


def current() -> Runtime:
    with _lock:
        if _runtime is None:
            configure(Settings.from_env())
        assert _runtime is not None
        return _runtime


def reset() -> None:
    global _runtime
    with _lock:
        _runtime = None
