"""Timers: opaque members armed for a due time, claimed atomically under a lease.

A timer is a short string (``"u|INC-2041|acme-finance"``) armed for a due time in epoch
milliseconds. The scheduler claims due timers, enqueues one plain message per timer and
then acks each one. A claim that is never acked (the scheduler or the worker died between
claim and ack) is handed out again once its lease expires, with the due time it was first
claimed at, so a timer is delivered at least once. A claimer that is alive and knows its
handling failed puts the claim back (``release_claims``) to be handed out at the next claim,
and a claim whose reply was lost on a cut connection hands the same timers out again when
the client retries it.

Both implement :class:`~scheduler.core.ports.TimerStore`. ``RedisTimerStore`` is what the product runs (keys in ``scheduler.storage.keys``, atomic steps in
``scheduler/storage/lua/*.lua``); ``MemoryTimerStore`` has the same contract, in process.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from itertools import islice
from pathlib import Path
from typing import TypeVar, cast

import redis

from scheduler.core.model import text_of
from scheduler.errors import TimerStoreError
from scheduler.storage import keys
from scheduler.storage.connection import execute_scripts

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


@contextmanager
def _translated(action: str) -> Iterator[None]:
    try:
        yield
    except redis.RedisError as e:
        raise TimerStoreError(f"could not {action}: {e}") from e


class RedisTimerStore:
    """Timers in Redis: the store the product runs, shared by every scheduler process.

    Each timer lives in its incident's shard (``keys.shard_of_timer``); a claim takes the
    earliest due timers across the shards, each shard's part in one atomic step.
    """

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._cluster = isinstance(cast(object, client), redis.RedisCluster)
        self._arm_script = client.register_script((_LUA_DIR / "arm.lua").read_text())
        self._claim_script = client.register_script((_LUA_DIR / "claim.lua").read_text())
        self._ack_script = client.register_script((_LUA_DIR / "ack.lua").read_text())
        self._release_script = client.register_script((_LUA_DIR / "release.lua").read_text())
        socket_timeout = _socket_timeout(client)
        self._block_slice_s = min(_BLOCK_SLICE_S, socket_timeout / 2) if socket_timeout else _BLOCK_SLICE_S

    def _nudge(self, due_ms: int) -> None:
        # One pending nudge is as good as many: a woken scheduler re-reads the store.
        pipe = self._client.pipeline(transaction=False)
        pipe.lpush(keys.TIMERS_WAKE, due_ms)
        pipe.ltrim(keys.TIMERS_WAKE, 0, 0)
        pipe.execute()

    def arm(self, member: str, due_ms: int) -> None:
        with _translated(f"arm timer {member!r}"):
            shard = keys.shard_of_timer(member)
            if self._arm_script(keys=[keys.timers(shard)], args=[member, int(due_ms)]):
                self._nudge(int(due_ms))

    def arm_many(self, items: Iterable[tuple[str, int]]) -> None:
        with _translated("arm timers"):
            for chunk in _chunks(items, _PIPELINE_CHUNK):
                pipe = self._client.pipeline(transaction=False)
                for member, due_ms in chunk:
                    pipe.zadd(keys.timers(keys.shard_of_timer(member)), {member: int(due_ms)})
                pipe.execute()
                self._nudge(min(int(due_ms) for _, due_ms in chunk))

    def cancel(self, member: str) -> bool:
        with _translated(f"cancel timer {member!r}"):
            return bool(self._client.zrem(keys.timers(keys.shard_of_timer(member)), member))

    def due_ms(self, member: str) -> int | None:
        with _translated(f"read timer {member!r}"):
            score = self._client.zscore(keys.timers(keys.shard_of_timer(member)), member)
        return None if score is None else int(score)

    def claim(self, now_ms: int, lease_ms: int, limit: int) -> list[tuple[str, int]]:
        _check_claim(lease_ms, limit)
        with _translated("claim due timers"):
            chosen = self._choose(now_ms, limit)
            token = uuid.uuid4().hex  # a retry of this call (a lost reply) gets its timers again
            # a cluster client cannot pipeline scripts: there, one call per shard
            pipe = None if self._cluster else self._client.pipeline(transaction=False)
            answers = []
            for shard, wanted in chosen.items():
                # a shard's chosen timers are the first of its due ones and of its expired
                # leases, so the script need look no further than their count in either
                answers.append(
                    self._claim_script(
                        keys=[
                            keys.timers(shard),
                            keys.timers_leased(shard),
                            keys.timers_due(shard),
                            keys.timers_claims(shard),
                        ],
                        args=[int(now_ms), int(lease_ms), len(wanted), token, *wanted],
                        client=pipe or self._client,
                    )
                )
            if pipe is not None and chosen:
                answers = execute_scripts(pipe)
            claimed = [
                (text_of(flat[i]), int(flat[i + 1])) for flat in answers for i in range(0, len(flat), 2)
            ]
        return sorted(claimed, key=lambda c: (c[1], c[0]))

    def _choose(self, now_ms: int, limit: int) -> dict[int, list[str]]:
        """The timers a claim hands out, chosen across the shards as one store would: up to
        ``limit`` lease-expired claims (earliest expiry first) and up to ``limit`` due timers
        (earliest due first), then the earliest ``limit`` of both by due time and member."""
        expired = self._earliest(keys.timers_leased, now_ms, limit)
        due = self._earliest(keys.timers, now_ms, limit)
        picked: dict[str, tuple[int, int]] = {}  # member -> (due, shard)
        if expired:
            pipe = self._client.pipeline(transaction=False)
            for _at, member, shard in expired:
                pipe.hget(keys.timers_due(shard), member)
            for (at, member, shard), first_due in zip(expired, pipe.execute(), strict=True):
                picked[member] = (int(first_due) if first_due is not None else at, shard)
        for at, member, shard in due:
            picked[member] = (min(at, picked.get(member, (at, shard))[0]), shard)
        chosen: dict[int, list[str]] = {}
        for _, member, shard in sorted((d, m, s) for m, (d, s) in picked.items())[:limit]:
            chosen.setdefault(shard, []).append(member)
        return chosen

    def _earliest(self, index: Callable[[int], str], now_ms: int, limit: int) -> list[tuple[int, str, int]]:
        """The ``limit`` entries of a sharded sorted set with the lowest (score, member) up to
        ``now_ms``, as (score, member, shard). Each shard is read a slice at a time, and only
        while its next entries could still be among the ``limit`` earliest, so a claim reads
        about ``limit`` entries however many are due."""
        size = 2 * limit // keys.SHARDS + 1
        found: dict[int, list[tuple[int, str, int]]] = {shard: [] for shard in range(keys.SHARDS)}
        more = set(found)  # shards that may hold further entries up to now_ms
        while more:
            asked = sorted(more)
            pipe = self._client.pipeline(transaction=False)
            for shard in asked:
                pipe.zrangebyscore(
                    index(shard), "-inf", now_ms, start=len(found[shard]), num=size, withscores=True
                )
            for shard, chunk in zip(asked, pipe.execute(), strict=True):
                found[shard] += [(int(score), text_of(m), shard) for m, score in chunk]
                if len(chunk) < size:
                    more.discard(shard)
            merged = sorted(entry for entries in found.values() for entry in entries)
            if len(merged) >= limit:
                bound = merged[limit - 1][:2]
                more = {s for s in more if found[s][-1][:2] < bound}
            size *= 2
        return sorted(entry for entries in found.values() for entry in entries)[:limit]

    def ack(self, member: str) -> None:
        self.ack_many([member])

    def ack_many(self, members: Iterable[str]) -> None:
        with _translated("ack timers"):
            for shard, chunk in _by_shard(members):
                # One transaction so that a lease and its due time never outlive each other.
                pipe = self._client.pipeline(transaction=True)
                pipe.zrem(keys.timers_leased(shard), *chunk)
                pipe.hdel(keys.timers_due(shard), *chunk)
                pipe.hdel(keys.timers_claims(shard), *chunk)
                pipe.execute()

    def ack_claims(self, claims: Iterable[tuple[str, int]]) -> int:
        dropped = 0
        by_member = dict(claims)
        with _translated("ack timers"):
            for shard, chunk in _by_shard(by_member):
                args: list[str | int] = []
                for member in chunk:
                    args += [member, int(by_member[member])]
                leases = [keys.timers_leased(shard), keys.timers_due(shard), keys.timers_claims(shard)]
                dropped += int(self._ack_script(keys=leases, args=args))
        return dropped

    def release_claims(self, claims: Iterable[tuple[str, int]], now_ms: int) -> int:
        released = 0
        by_member = dict(claims)
        with _translated("put timers back"):
            for shard, chunk in _by_shard(by_member):
                args: list[str | int] = [int(now_ms)]
                for member in chunk:
                    args += [member, int(by_member[member])]
                leases = [keys.timers_leased(shard), keys.timers_due(shard)]
                released += int(self._release_script(keys=leases, args=args))
            if released:
                self._nudge(int(now_ms))
        return released

    def next_wakeup_ms(self) -> int | None:
        with _translated("read the next wake-up"):
            pipe = self._client.pipeline(transaction=False)
            for shard in range(keys.SHARDS):
                pipe.zrange(keys.timers(shard), 0, 0, withscores=True)
                pipe.zrange(keys.timers_leased(shard), 0, 0, withscores=True)
            earliest = pipe.execute()
        return min((int(score) for entries in earliest for _, score in entries), default=None)

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
            return self._count(keys.timers)

    def overdue_count(self, before_ms: int) -> int:
        with _translated("count overdue timers"):
            pipe = self._client.pipeline(transaction=False)
            for shard in range(keys.SHARDS):
                pipe.zcount(keys.timers(shard), "-inf", f"({int(before_ms)}")
            return sum(int(n) for n in pipe.execute())

    def leased_count(self) -> int:
        """How many claims are handed out and not acked yet."""
        with _translated("count leased timers"):
            return self._count(keys.timers_leased)

    def _count(self, index: Callable[[int], str]) -> int:
        pipe = self._client.pipeline(transaction=False)
        for shard in range(keys.SHARDS):
            pipe.zcard(index(shard))
        return sum(int(n) for n in pipe.execute())


def _by_shard(members: Iterable[str]) -> Iterator[tuple[int, list[str]]]:
    """The members grouped by shard, in chunks of at most ``_PIPELINE_CHUNK``."""
    grouped: dict[int, list[str]] = {}
    for member in members:
        grouped.setdefault(keys.shard_of_timer(member), []).append(member)
    for shard, group in sorted(grouped.items()):
        for chunk in _chunks(group, _PIPELINE_CHUNK):
            yield shard, chunk


def _socket_timeout(client: redis.Redis) -> float | None:
    """The client's socket timeout (a cluster client keeps it in its node settings)."""
    pool = getattr(client, "connection_pool", None)
    if pool is not None:
        return cast("float | None", pool.connection_kwargs.get("socket_timeout"))
    return cast("float | None", getattr(client, "socket_timeout", None))


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
            chosen = sorted(picked.items(), key=lambda item: (item[1], item[0]))[:limit]
            # a chosen member goes out with the earlier of its lapsed lease's due time and its
            # armed due time, however the two lists were cut to the limit (as claim.lua does)
            lapsed = {m: self._claimed_due.get(m, at) for m, at in self._leased.items() if at <= now_ms}
            armed = {m: at for m, at in self._armed.items() if at <= now_ms}
            handed = sorted(
                ((m, min(lapsed.get(m, d), armed.get(m, d))) for m, d in chosen),
                key=lambda item: (item[1], item[0]),
            )
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

    def release_claims(self, claims: Iterable[tuple[str, int]], now_ms: int) -> int:
        released = 0
        with self._lock:
            for member, due_ms in claims:
                if self._claimed_due.get(member) == int(due_ms) and member in self._leased:
                    self._leased[member] = int(now_ms)
                    released += 1
            if released:
                self._nudged = True
                self._nudge.notify_all()
        return released

    def next_wakeup_ms(self) -> int | None:
        with self._lock:
            return min((*self._armed.values(), *self._leased.values()), default=None)

    def wait(self, timeout_s: float) -> None:
        if timeout_s <= 0:
            return
        with self._nudge:
            if self._nudge.wait_for(lambda: self._nudged, timeout_s):
                self._nudged = False

    def overdue_count(self, before_ms: int) -> int:
        with self._lock:
            return sum(1 for due in self._armed.values() if due < before_ms)

    def armed_count(self) -> int:
        with self._lock:
            return len(self._armed)
