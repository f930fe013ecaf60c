"""Timer store under load: arm rate, claim lateness of a burst, Redis memory per armed timer.

Arms ``--armed`` timers, ``--due`` of which share one due moment (the rest lie hours to
days later), then drains the burst with the loop a scheduler runs: sleep until the next
wake-up, claim a batch with ``now_ms`` from the real clock, "enqueue" each timer (record
the time), ack. Lateness is enqueue time minus due time. The same work done with plain
ZADD and ZRANGEBYSCORE+ZREM (no Lua, no leases, no wake-ups) gives a reference point.

    python bench/bench_timers.py [--redis-url URL] [--armed 100000] [--due 10000]

Without ``--redis-url`` an embedded Redis is started for the run. The database chosen
with ``--db`` (default 14) is FLUSHED before and after.
"""

from __future__ import annotations

import argparse
import math
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scheduler.dev.embedded import ensure_embedded_redis, stop_embedded_redis
from scheduler.service.loop import CLAIM_BATCH
from scheduler.storage import keys
from scheduler.storage.timers import RedisTimerStore

_STAKEHOLDERS = [
    "acme-finance",
    "acme-legal",
    "globex-ops",
    "initech-it",
    "umbrella-sec",
    "hooli-support",
    "stark-infra",
    "wayne-board",
]
_KINDS = "aurf"  # acknowledge, update, resolve, feedback
_PIPELINE = 1_000
_BASELINE_KEY = "bench:baseline"


def _now_ms() -> float:
    return time.time() * 1_000


def _members(count: int) -> list[str]:
    """Timer names shaped like the product's: kind, incident, stakeholder."""
    per_incident = len(_KINDS) * len(_STAKEHOLDERS)
    return [
        f"{_KINDS[i % len(_KINDS)]}|INC-{i // per_incident:05d}|{_STAKEHOLDERS[i // len(_KINDS) % 8]}"
        for i in range(count)
    ]


def _with_db(url: str, db: int) -> str:
    parts = urlsplit(url)
    if parts.scheme == "unix":
        query = [(k, v) for k, v in parse_qsl(parts.query) if k != "db"] + [("db", str(db))]
        return f"unix://{parts.path}?{urlencode(query)}"
    return urlunsplit(parts._replace(path=f"/{db}"))


def _percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    return sorted_values[max(0, math.ceil(fraction * len(sorted_values)) - 1)]


@dataclass(frozen=True)
class Result:
    arms_per_s: float
    bytes_per_timer: float
    lateness_ms: list[float]  # sorted
    drain_ms: float

    def row(self, name: str) -> str:
        late = self.lateness_ms
        return (
            f"| {name} | {self.arms_per_s:,.0f} | {_percentile(late, 0.5):.1f} | "
            f"{_percentile(late, 0.99):.1f} | {late[-1]:.1f} | {self.drain_ms:.0f} | "
            f"{self.bytes_per_timer:.0f} |"
        )


def _used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def _arm_burst(
    arm_many: Callable[[list[tuple[str, int]]], None], members: list[str], due_count: int
) -> tuple[float, int, set[str]]:
    """Arms every member, the last ``due_count`` at one moment; returns (seconds, that moment, them)."""
    later = members[: len(members) - due_count]
    burst = members[len(members) - due_count :]
    started = time.perf_counter()
    base = int(_now_ms()) + 3_600_000
    arm_many([(m, base + (i * 6_047) % (7 * 86_400_000)) for i, m in enumerate(later)])
    spent = time.perf_counter() - started
    # The burst falls due once it is surely armed, whatever this machine's speed.
    projected_s = spent * due_count / max(len(later), 1)
    due_at = int(_now_ms() + 1_000 * max(1.0, 3 * projected_s))
    arm_many([(m, due_at) for m in burst])
    return time.perf_counter() - started, due_at, set(burst)


def _bench_store(
    client: redis.Redis, members: list[str], due_count: int, batch: int, per_timer_ack: bool
) -> Result:
    client.flushdb()
    store = RedisTimerStore(client)
    store.arm("warm-up", 0)  # loads the scripts before anything is measured
    store.claim(1, 1, 1)
    store.ack("warm-up")
    client.delete(keys.TIMERS_WAKE)
    before = _used_memory(client)
    arm_s, _, burst = _arm_burst(store.arm_many, members, due_count)
    bytes_per_timer = (_used_memory(client) - before) / len(members)

    lateness: list[float] = []
    while len(lateness) < due_count:
        now_ms = int(_now_ms())
        claimed = store.claim(now_ms, lease_ms=30_000, limit=batch)
        if not claimed:
            next_ms = store.next_wakeup_ms()
            store.wait(1.0 if next_ms is None else max(0.0, (next_ms - _now_ms()) / 1_000))
            continue
        for member, due_ms in claimed:
            if member in burst:
                lateness.append(_now_ms() - due_ms)  # the message would be enqueued here
            if per_timer_ack:
                store.ack(member)
        if not per_timer_ack:
            store.ack_many(member for member, _ in claimed)
    lateness.sort()
    return Result(len(members) / arm_s, bytes_per_timer, lateness, lateness[-1] - lateness[0])


def _bench_loop(
    client: redis.Redis, url: str, members: list[str], due_count: int, batch: int, per_message: int
) -> Result:
    """The product's SchedulerLoop sending real Dramatiq messages (``fire_timers``) to Redis."""
    from scheduler.service.loop import SchedulerLoop
    from scheduler.service.processes import timer_sender
    from scheduler.service.queues import build_broker

    client.flushdb()
    broker = build_broker(url)
    store = RedisTimerStore(client)
    before = _used_memory(client)
    arm_s, _, burst = _arm_burst(store.arm_many, members, due_count)
    bytes_per_timer = (_used_memory(client) - before) / len(members)
    enqueue = timer_sender(broker)
    lateness: list[float] = []

    def send(timers: list[tuple[str, int]]) -> None:
        enqueue(timers)
        sent_ms = _now_ms()
        lateness.extend(sent_ms - due_ms for member, due_ms in timers if member in burst)

    loop = SchedulerLoop(store, send, batch=batch, per_message=per_message)
    try:
        while len(lateness) < due_count:
            from datetime import UTC, datetime

            if not loop.tick(datetime.now(UTC)):
                store.wait(loop.sleep_s(datetime.now(UTC)))
    finally:
        broker.close()
    lateness.sort()
    return Result(len(members) / arm_s, bytes_per_timer, lateness, lateness[-1] - lateness[0])


def _bench_baseline(client: redis.Redis, members: list[str], due_count: int, batch: int) -> Result:
    client.flushdb()

    def arm_many(items: list[tuple[str, int]]) -> None:
        for start in range(0, len(items), _PIPELINE):
            pipe = client.pipeline(transaction=False)
            for member, due_ms in items[start : start + _PIPELINE]:
                pipe.zadd(_BASELINE_KEY, {member: due_ms})
            pipe.execute()

    before = _used_memory(client)
    arm_s, due_at, burst = _arm_burst(arm_many, members, due_count)
    bytes_per_timer = (_used_memory(client) - before) / len(members)

    lateness: list[float] = []
    while len(lateness) < due_count:
        now_ms = int(_now_ms())
        claimed = cast(
            "list[tuple[bytes, float]]",
            client.zrangebyscore(_BASELINE_KEY, "-inf", now_ms, start=0, num=batch, withscores=True),
        )
        if not claimed:
            time.sleep(max(0.0, (due_at - _now_ms()) / 1_000))  # polling: no wake-ups to wait on
            continue
        client.zrem(_BASELINE_KEY, *(member for member, _ in claimed))
        for member, due_ms in claimed:
            if member.decode() in burst:
                lateness.append(_now_ms() - due_ms)
    lateness.sort()
    return Result(len(members) / arm_s, bytes_per_timer, lateness, lateness[-1] - lateness[0])


def _describe(client: redis.Redis, url: str, members: list[str]) -> Iterator[str]:
    server: dict[str, Any] = client.info("server")
    config = cast("dict[str, str]", client.config_get("zset-max-*"))
    if any("listpack" in name for name in config):  # Redis 7 lists the old ziplist names as aliases
        config = {name: value for name, value in config.items() if "listpack" in name}
    client.flushdb()
    store = RedisTimerStore(client)
    store.arm_many((m, 0) for m in members)
    yield (
        f"Redis {server['redis_version']} at {url.split('?')[0]}, hz={client.config_get('hz')['hz']}; "
        f"Python {platform.python_version()}"
    )
    encoding: bytes = client.object("encoding", keys.timers(0))
    usage = sum(client.memory_usage(keys.timers(s), samples=0) or 0 for s in range(keys.SHARDS))
    yield (
        f"{len(members):,} timers: member length avg {sum(map(len, members)) / len(members):.1f} "
        f"bytes, zset encoding {encoding.decode()} "
        f"({', '.join(f'{k}={v}' for k, v in sorted(config.items()))}); "
        f"MEMORY USAGE of the zset {usage / len(members):.0f} "
        "bytes per timer"
    )
    client.flushdb()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--redis-url", help="a Redis to measure (default: an embedded one)")
    parser.add_argument("--db", type=int, default=14, help="database to use; it is FLUSHED (default 14)")
    parser.add_argument("--armed", type=int, default=100_000, help="timers armed (default 100000)")
    parser.add_argument(
        "--due", type=int, default=10_000, help="of which share one due moment (default 10000)"
    )
    parser.add_argument(
        "--batch",
        type=int,
        default=CLAIM_BATCH,
        help=f"claim batch size (default {CLAIM_BATCH:,}, the scheduler's)",
    )
    args = parser.parse_args()
    if not 0 < args.due <= args.armed:
        parser.error("--due must be between 1 and --armed")

    data_dir = None
    url = args.redis_url
    if url is None:
        data_dir = Path(tempfile.mkdtemp(prefix="amends-bench-redis-"))
        url = ensure_embedded_redis(data_dir, persistent=False)
    client = redis.Redis.from_url(_with_db(url, args.db))
    members = _members(args.armed)
    try:
        for line in _describe(client, url, members):
            print(line)
        results = [
            (
                "store: claim, enqueue batch, ack_many",
                _bench_store(client, members, args.due, args.batch, False),
            ),
            ("store: claim, enqueue + ack each", _bench_store(client, members, args.due, args.batch, True)),
            (
                "scheduler loop, real Dramatiq enqueue, 25 timers/message",
                _bench_loop(client, _with_db(url, args.db), members, args.due, args.batch, 25),
            ),
            (
                "scheduler loop, real Dramatiq enqueue, 1 timer/message",
                _bench_loop(client, _with_db(url, args.db), members, args.due, args.batch, 1),
            ),
            ("baseline: ZADD / ZRANGEBYSCORE+ZREM", _bench_baseline(client, members, args.due, args.batch)),
        ]
    finally:
        client.flushdb()
        client.close()
        if data_dir is not None:
            stop_embedded_redis(data_dir)
            shutil.rmtree(data_dir, ignore_errors=True)

    print()
    print(
        f"{args.armed:,} timers armed, {args.due:,} due at one moment, claimed in batches of {args.batch}; "
        "lateness = enqueue time - due time of those"
    )
    print()
    print(
        "| variant | arms/s | lateness p50 (ms) | p99 (ms) | max (ms) | burst drained in (ms) | "
        "bytes per armed timer |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, result in results:
        print(result.row(name))


if __name__ == "__main__":
    main()
