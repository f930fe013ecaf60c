"""Timers: opaque members armed for a due time, claimed atomically under a lease.

A timer is a short string (``"u|INC-2041|acme-finance"``) armed for a due time in epoch
milliseconds. The scheduler claims due timers, enqueues one plain message per timer and
then acks each one. A claim that is never acked (the scheduler died between claim and
enqueue) is handed out again once its lease expires, with the due time it was first
claimed at, so a timer is delivered at least once.

Both implement :class:`~scheduler.storage.port.TimerStore`. ``RedisTimerStore`` is what the product runs (keys in ``scheduler.storage.keys``, atomic steps in
``scheduler/storage/lua/*.lua``); ``MemoryTimerStore`` has the same contract, in process.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from itertools import islice
from pathlib import Path
from typing import TypeVar

import redis

from scheduler.errors import TimerStoreError
from scheduler.storage import keys

__all__ = ["MemoryTimerStore", "RedisTimerStore"]

_T = TypeVar("_T")

_LUA_DIR = Path(__file__).parent / "lua"

_PIPELINE_CHUNK = 1_000
"""Commands sent per round trip by the ``*_many`` methods."""

_BLOCK_SLICE_S = 1.0
"""Longest single blocking read; well below redis-py's default 5 s socket timeout."""

_SERVER_TICK_S = 0.1
"""Redis ends a blocking command's timeout on its cron tick (1/hz; hz defaults to 10)."""

_MIN_BLOCK_S = 0.01
"""Shortest timeout sent to Redis: below 1 ms Redis 6 reads the timeout as 0, i.e. forever."""


def _check_claim(lease_ms: int, limit: int) -> None:
    if lease_ms < 1:
        raise ValueError(f"lease_ms must be at least 1, got {lease_ms}")
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")


def _chunks(items: Iterable[_T], size: int) -> Iterator[list[_T]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


@contextmanager
def _translated(action: str) -> Iterator[None]:
    try:
        yield
    except redis.RedisError as e:
        raise TimerStoreError(f"could not {action}: {e}") from e


class RedisTimerStore:
    """Timers in Redis: the store the product runs, shared by every scheduler process."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._arm_script = client.register_script((_LUA_DIR / "arm.lua").read_text())
        self._claim_script = client.register_script((_LUA_DIR / "claim.lua").read_text())
        self._ack_script = client.register_script((_LUA_DIR / "ack.lua").read_text())
        socket_timeout = client.connection_pool.connection_kwargs.get("socket_timeout")
        self._block_slice_s = min(_BLOCK_SLICE_S, socket_timeout / 2) if socket_timeout else _BLOCK_SLICE_S

    def arm(self, member: str, due_ms: int) -> None:
        with _translated(f"arm timer {member!r}"):
            self._arm_script(keys=[keys.TIMERS, keys.TIMERS_WAKE], args=[member, int(due_ms)])

    def arm_many(self, items: Iterable[tuple[str, int]]) -> None:
        with _translated("arm timers"):
            for chunk in _chunks(items, _PIPELINE_CHUNK):
                pipe = self._client.pipeline(transaction=False)
                for member, due_ms in chunk:
                    self._arm_script(
                        keys=[keys.TIMERS, keys.TIMERS_WAKE], args=[member, int(due_ms)], client=pipe
                    )
                pipe.execute()

    def cancel(self, member: str) -> bool:
        with _translated(f"cancel timer {member!r}"):
            return bool(self._client.zrem(keys.TIMERS, member))

    def due_ms(self, member: str) -> int | None:
        with _translated(f"read timer {member!r}"):
            score = self._client.zscore(keys.TIMERS, member)
        return None if score is None else int(score)

    def claim(self, now_ms: int, lease_ms: int, limit: int) -> list[tuple[str, int]]:
        _check_claim(lease_ms, limit)
        with _translated("claim due timers"):
            flat = self._claim_script(
                keys=[keys.TIMERS, keys.TIMERS_LEASED, keys.TIMERS_DUE],
                args=[int(now_ms), int(lease_ms), int(limit)],
            )
        return [(_text(flat[i]), int(flat[i + 1])) for i in range(0, len(flat), 2)]

    def ack(self, member: str) -> None:
        self.ack_many([member])

    def ack_many(self, members: Iterable[str]) -> None:
        with _translated("ack timers"):
            for chunk in _chunks(members, _PIPELINE_CHUNK):
                # One transaction so that a lease and its due time never outlive each other.
                pipe = self._client.pipeline(transaction=True)
                pipe.zrem(keys.TIMERS_LEASED, *chunk)
                pipe.hdel(keys.TIMERS_DUE, *chunk)
                pipe.execute()

    def ack_claims(self, claims: Iterable[tuple[str, int]]) -> int:
        dropped = 0
        with _translated("ack timers"):
            for chunk in _chunks(claims, _PIPELINE_CHUNK):
                args: list[str | int] = []
                for member, due_ms in chunk:
                    args += [member, int(due_ms)]
                dropped += int(self._ack_script(keys=[keys.TIMERS_LEASED, keys.TIMERS_DUE], args=args))
        return dropped

    def next_wakeup_ms(self) -> int | None:
        with _translated("read the next wake-up"):
            pipe = self._client.pipeline(transaction=False)
            pipe.zrange(keys.TIMERS, 0, 0, withscores=True)
            pipe.zrange(keys.TIMERS_LEASED, 0, 0, withscores=True)
            earliest_due, earliest_expiry = pipe.execute()
        scores = [int(score) for _, score in (*earliest_due, *earliest_expiry)]
        return min(scores, default=None)

    def wait(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while (remaining_s := deadline - time.monotonic()) > 0:
            if remaining_s < _SERVER_TICK_S + _MIN_BLOCK_S:
                # Redis would end this timeout on its next cron tick, up to a tick late;
                # the last stretch is slept here so a due timer is not claimed late.
                time.sleep(remaining_s)
                return
            block_s = round(min(remaining_s - _SERVER_TICK_S, self._block_slice_s), 3)
            with _translated("wait for a nudge"):
                if self._client.blpop([keys.TIMERS_WAKE], timeout=max(block_s, _MIN_BLOCK_S)):
                    return

    def armed_count(self) -> int:
        with _translated("count armed timers"):
            return int(self._client.zcard(keys.TIMERS))


class MemoryTimerStore:
    """Timers in process memory, with the contract of ``RedisTimerStore``; for unit tests."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._nudge = threading.Condition(self._lock)
        self._nudged = False
        self._armed: dict[str, int] = {}
        self._leased: dict[str, int] = {}  # member -> lease expiry (ms)
        self._claimed_due: dict[str, int] = {}  # member -> due time it was claimed at (ms)

    def arm(self, member: str, due_ms: int) -> None:
        with self._lock:
            self._arm(member, due_ms)

    def arm_many(self, items: Iterable[tuple[str, int]]) -> None:
        with self._lock:
            for member, due_ms in items:
                self._arm(member, due_ms)

    def _arm(self, member: str, due_ms: int) -> None:
        earliest_ms = min(self._armed.values(), default=None)
        self._armed[member] = int(due_ms)
        if earliest_ms is None or due_ms < earliest_ms:
            self._nudged = True
            self._nudge.notify_all()

    def cancel(self, member: str) -> bool:
        with self._lock:
            return self._armed.pop(member, None) is not None

    def due_ms(self, member: str) -> int | None:
        with self._lock:
            return self._armed.get(member)

    def claim(self, now_ms: int, lease_ms: int, limit: int) -> list[tuple[str, int]]:
        _check_claim(lease_ms, limit)
        with self._lock:
            expired = sorted((at, m) for m, at in self._leased.items() if at <= now_ms)[:limit]
            due = sorted((at, m) for m, at in self._armed.items() if at <= now_ms)[:limit]
            picked = {m: self._claimed_due.get(m, at) for at, m in expired}
            for at, m in due:
                picked[m] = min(at, picked.get(m, at))
            handed = sorted(picked.items(), key=lambda item: (item[1], item[0]))[:limit]
            armed = {m for _, m in due}
            for member, due_ms in handed:
                if member in armed:
                    del self._armed[member]
                self._leased[member] = now_ms + lease_ms
                self._claimed_due[member] = due_ms
            return handed

    def ack(self, member: str) -> None:
        self.ack_many([member])

    def ack_many(self, members: Iterable[str]) -> None:
        with self._lock:
            for member in members:
                self._leased.pop(member, None)
                self._claimed_due.pop(member, None)

    def ack_claims(self, claims: Iterable[tuple[str, int]]) -> int:
        dropped = 0
        with self._lock:
            for member, due_ms in claims:
                if self._claimed_due.get(member) == int(due_ms):
                    self._leased.pop(member, None)
                    del self._claimed_due[member]
                    dropped += 1
        return dropped

    def next_wakeup_ms(self) -> int | None:
        with self._lock:
            return min((*self._armed.values(), *self._leased.values()), default=None)

    def wait(self, timeout_s: float) -> None:
        if timeout_s <= 0:
            return
        with self._nudge:
            if self._nudge.wait_for(lambda: self._nudged, timeout_s):
                self._nudged = False

    def armed_count(self) -> int:
        with self._lock:
            return len(self._armed)
