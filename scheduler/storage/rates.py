"""Send rates shared by every worker: the bucket of :mod:`scheduler.core.rate` in Redis (``lua/rate.lua``) or in process."""

from __future__ import annotations

import threading
from pathlib import Path

import redis

from scheduler.core.rate import HORIZON_MS, Rate, Reservation, pause, reserve
from scheduler.storage import keys

__all__ = ["MemoryRates", "RedisRates"]

_LUA = Path(__file__).parent / "lua"


class RedisRates:
    """Each bucket is one Redis key; a reservation or a pause is one Lua step, ``now`` passed in."""

    def __init__(self, client: redis.Redis) -> None:
        self._script = client.register_script((_LUA / "rate.lua").read_text())

    def reserve(self, bucket: str, rate: Rate, now_ms: int, horizon_ms: int = HORIZON_MS) -> Reservation:
        reserved, wait_ms = self._script(
            keys=[keys.rate(bucket)], args=[now_ms, "reserve", repr(rate.interval_ms), horizon_ms]
        )
        return Reservation(bool(reserved), int(wait_ms), float("nan"))

    def pause(self, bucket: str, pause_ms: int, now_ms: int) -> None:
        self._script(keys=[keys.rate(bucket)], args=[now_ms, "pause", pause_ms, 0])


class MemoryRates:
    """The same contract in process, for fast tests."""

    def __init__(self) -> None:
        self._tat: dict[str, float] = {}
        self._lock = threading.Lock()

    def reserve(self, bucket: str, rate: Rate, now_ms: int, horizon_ms: int = HORIZON_MS) -> Reservation:
        with self._lock:
            answer = reserve(self._tat.get(bucket, 0.0), now_ms, rate.interval_ms, horizon_ms)
            self._tat[bucket] = answer.tat_ms
            return answer

    def pause(self, bucket: str, pause_ms: int, now_ms: int) -> None:
        with self._lock:
            self._tat[bucket] = pause(self._tat.get(bucket, 0.0), now_ms, pause_ms)
