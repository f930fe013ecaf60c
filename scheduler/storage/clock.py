"""One clock for every process: the Redis server's, so that skewed hosts agree on due-ness.

Timers, leases and promises are compared across processes (a scheduler claims what a
worker then checks). Hosts whose clocks differ would claim early or re-arm in a loop, so
the running processes read the time of the Redis server they share: the offset between
the local clock and Redis ``TIME`` is measured (half the round trip added) and refreshed
now and then; between refreshes the clock costs no round trip.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

import redis

__all__ = ["ServerClock"]

logger = logging.getLogger(__name__)

_RETRY_S = 1.0


class ServerClock:
    """``clock()`` returns the Redis server's time as an aware UTC datetime."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        refresh_s: float = 30.0,
        local: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._refresh_s = refresh_s
        self._local = local
        self._lock = threading.Lock()
        self._offset_s = 0.0
        self._measured_at: float | None = None

    @property
    def offset_s(self) -> float:
        """Redis time minus local time, as last measured."""
        return self._offset_s

    def measure(self) -> None:
        """Measure the offset now; on a Redis error keep the last one (or none)."""
        try:
            before = self._local()
            seconds, micros = self._client.time()
            after = self._local()
        except redis.RedisError as e:
            logger.debug("could not read the Redis clock: %s", e)
            # keep the last offset; look again in a second rather than on every call
            self._measured_at = time.monotonic() - self._refresh_s + _RETRY_S
            return
        with self._lock:
            self._offset_s = seconds + micros / 1e6 - (before + after) / 2
            self._measured_at = time.monotonic()

    def __call__(self) -> datetime:
        measured_at = self._measured_at
        if measured_at is None or time.monotonic() - measured_at > self._refresh_s:
            self.measure()
        return datetime.fromtimestamp(self._local() + self._offset_s, tz=UTC)
