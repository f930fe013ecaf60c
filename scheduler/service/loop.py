"""The timer loop behind ``amends scheduler``: claim due timers, enqueue plain messages.

:meth:`SchedulerLoop.tick` does one round for a given ``now`` (tests call it directly);
:meth:`SchedulerLoop.run` reads the clock, ticks, then sleeps until the next timer is due
or an earlier one is armed. Several loops may run on one Redis: a claim is atomic.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime

import redis
from dramatiq.errors import BrokerError

from scheduler.core.model import ms_of
from scheduler.core.ports import TimerStore
from scheduler.errors import StorageError

__all__ = ["CLAIM_BATCH", "SchedulerLoop"]

logger = logging.getLogger(__name__)


CLAIM_BATCH = 5_000
"""Timers claimed per round: a claim chooses across the 16 shards, so a large round costs
far less per timer than many small ones (``bench/bench_timers.py``)."""


def _utcnow() -> datetime:
    return datetime.now(UTC)


class SchedulerLoop:
    """Moves due timers from the timer store onto the work queue.

    ``send(timers)`` enqueues one message for up to ``per_message`` ``(member, due_ms)``
    pairs. With ``acks=True`` they are acked once it returns, so a crash in between hands
    them out again once ``lease_ms`` has passed; with ``acks=False`` (the product) the
    worker acks each claim after handling it, so a message lost after the enqueue is
    covered by the lease too. Grouping keeps a burst of thousands of due timers to a few
    hundred enqueues.

    ``sweep(now_ms)``, when given, runs on every tick: it re-dispatches communications
    left unfinished (see :meth:`scheduler.storage.redis_store.Store.sweep`) and returns how many.
    """

    def __init__(
        self,
        timers: TimerStore,
        send: Callable[[list[tuple[str, int]]], None],
        *,
        lease_ms: int = 30_000,
        batch: int = CLAIM_BATCH,
        per_message: int = 25,
        max_sleep_s: float = 5.0,
        clock: Callable[[], datetime] = _utcnow,
        on_idle: Callable[[], None] | None = None,
        acks: bool = True,
        sweep: Callable[[int], int] | None = None,
    ) -> None:
        self.timers = timers
        self.send = send
        self.lease_ms = lease_ms
        self.batch = batch
        self.per_message = per_message
        self.max_sleep_s = max_sleep_s
        self.clock = clock
        self.on_idle = on_idle
        self.acks = acks
        self.sweep = sweep
        self.enqueued = 0
        self.swept = 0

    def tick(self, now: datetime) -> int:
        """Enqueue every timer due at ``now``; return how many were enqueued."""
        now_ms = ms_of(now)
        count = 0
        while True:
            claimed = self.timers.claim(now_ms, self.lease_ms, self.batch)
            for start in range(0, len(claimed), self.per_message):
                try:
                    self.send(claimed[start : start + self.per_message])
                except Exception:
                    self._put_back(claimed[start:], now_ms)
                    raise
            if self.acks:
                self.timers.ack_many(member for member, _ in claimed)
            count += len(claimed)
            if len(claimed) < self.batch:
                break
        self.enqueued += count
        if self.sweep is not None:
            self.swept += self.sweep(now_ms)
        return count

    def _put_back(self, unsent: list[tuple[str, int]], now_ms: int) -> None:
        """Claims whose message could not be enqueued go back to be claimed at the next
        round, not after their lease; if Redis cannot take even that, the lease covers them."""
        try:
            self.timers.release_claims(unsent, now_ms)
        except (StorageError, redis.RedisError) as e:
            logger.warning("%d claimed timer(s) not enqueued wait for their lease: %s", len(unsent), e)

    def sleep_s(self, now: datetime) -> float:
        """How long to wait after a tick at ``now`` before the next timer is due."""
        wakeup_ms = self.timers.next_wakeup_ms()
        if wakeup_ms is None:
            return self.max_sleep_s
        return max(0.0, min(self.max_sleep_s, (wakeup_ms - ms_of(now)) / 1000))

    def run(self, stop: threading.Event) -> None:
        """Tick until ``stop`` is set.

        Redis and broker outages are logged and waited out: nothing claimed is lost, since
        a claim whose message could not be enqueued is put back at once, and any other
        unacked claim comes back after its lease. Anything else is a bug that the loop
        cannot go on from: it propagates, and the process running the loop must exit
        non-zero so that its supervisor restarts it.
        """
        while not stop.is_set():
            try:
                if self.on_idle is not None:
                    self.on_idle()
                now = self.clock()
                sent = self.tick(now)
                if sent:
                    logger.info("enqueued %d due timer(s)", sent)
                self.timers.wait(self.sleep_s(self.clock()))
            except (StorageError, redis.RedisError, BrokerError) as e:
                logger.error("Redis or the broker did not answer (%s); trying again in 1 s", e)
                stop.wait(1.0)
