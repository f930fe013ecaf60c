"""The undeliverable addresses, in Redis (one hash, :data:`~scheduler.storage.keys.BOUNCES`) or in process."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from datetime import datetime

import redis

from scheduler.core.bounces import BounceSource, Undeliverable, address_key
from scheduler.core.model import ms_of, text_of
from scheduler.storage import keys

__all__ = ["MemoryBounceList", "RedisBounceList"]


def _newest_first(marks: Iterable[Undeliverable]) -> list[Undeliverable]:
    return sorted(marks, key=lambda m: (m.since, m.address), reverse=True)


class RedisBounceList:
    """Undeliverable addresses in Redis: a hash of marks and a zset of when each was made,
    written together in one transaction (both keys share a Redis Cluster slot)."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def mark(self, address: str, reason: str, source: BounceSource, now: datetime) -> bool:
        key = address_key(address)
        pipe = self.client.pipeline(transaction=True)
        pipe.hsetnx(keys.BOUNCES, key, Undeliverable(key, reason, source, now).to_json())
        pipe.zadd(keys.BOUNCES_SINCE, {key: ms_of(now)}, nx=True)
        newly, _ = pipe.execute()
        return bool(newly)

    def among(self, addresses: Iterable[str]) -> dict[str, Undeliverable]:
        wanted = list(dict.fromkeys(address_key(a) for a in addresses if a))
        if not wanted:
            return {}
        found = self.client.hmget(keys.BOUNCES, wanted)
        return {a: Undeliverable.from_json(a, raw) for a, raw in zip(wanted, found, strict=True) if raw}

    def newest(self, limit: int | None = None) -> list[Undeliverable]:
        addresses = [text_of(a) for a in self.client.zrevrange(keys.BOUNCES_SINCE, 0, (limit or 0) - 1)]
        marks = self.among(addresses)
        return [marks[a] for a in addresses if a in marks]

    def count(self) -> int:
        return int(self.client.zcard(keys.BOUNCES_SINCE))

    def remove(self, address: str) -> bool:
        key = address_key(address)
        pipe = self.client.pipeline(transaction=True)
        pipe.hdel(keys.BOUNCES, key)
        pipe.zrem(keys.BOUNCES_SINCE, key)
        removed, _ = pipe.execute()
        return bool(removed)


class MemoryBounceList:
    """The same contract in process, for fast tests."""

    def __init__(self) -> None:
        self._marks: dict[str, Undeliverable] = {}
        self._lock = threading.Lock()

    def mark(self, address: str, reason: str, source: BounceSource, now: datetime) -> bool:
        key = address_key(address)
        with self._lock:
            if key in self._marks:
                return False
            self._marks[key] = Undeliverable(key, reason, source, now)
            return True

    def among(self, addresses: Iterable[str]) -> dict[str, Undeliverable]:
        with self._lock:
            return {k: self._marks[k] for k in map(address_key, addresses) if k in self._marks}

    def newest(self, limit: int | None = None) -> list[Undeliverable]:
        with self._lock:
            return _newest_first(self._marks.values())[:limit]

    def count(self) -> int:
        return len(self._marks)

    def remove(self, address: str) -> bool:
        with self._lock:
            return self._marks.pop(address_key(address), None) is not None
