"""Faults injected into real services: a Redis killed and restarted on its AOF, a worker
killed mid-burst, an SMTP server that drops connections, clocks that disagree, a loop that
cannot go on. Each test asserts on what the SMTP server received and on the log.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis

from scheduler import emit
from scheduler.service.queues import build_broker
from scheduler.storage.clock import ServerClock
from scheduler.storage.redis_store import RedisStore
from tests.conftest import App, event
from tests.realservers import AmendsProcess, FaultySmtp, RedisServer, amends_stack, wait_until

pytestmark = pytest.mark.real

SECONDS_CONFIG: dict[str, Any] = {
    "sender": "Acme Status <status@acme.example>",
    "defaults": {"cadence": {"sev1": "3s", "sev2": "3s"}, "feedback_after": "2s"},
    "stakeholders": [
        {"id": "fast", "name": "Fast", "email": "fast@acme.example"},
        {"id": "slow", "name": "Slow", "email": "slow@acme.example", "timezone": "America/New_York"},
    ],
}


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A private redis-server with AOF, a failing-on-demand SMTP server, and the environment for amends."""
    with amends_stack(tmp_path, SECONDS_CONFIG) as (server, smtp, env):
        yield {"redis": server, "smtp": smtp, "env": env, "logs": tmp_path}


def _subjects(smtp: FaultySmtp, text: str) -> int:
    return sum(1 for m in smtp.messages() if text in str(m.message["Subject"]))


def test_a_redis_crash_and_restart_under_load_loses_nothing_and_nobody_dies(stack: dict[str, Any]) -> None:
    """SIGKILL of redis-server and a restart on its AOF: worker and scheduler reconnect, due updates go out after."""
    server: RedisServer = stack["redis"]
    smtp: FaultySmtp = stack["smtp"]
    worker = AmendsProcess.worker(stack["env"], stack["logs"] / "worker.log")
    scheduler = AmendsProcess.scheduler(stack["env"], stack["logs"] / "scheduler.log")
    broker = build_broker(server.url)
    try:
        for n in range(5):
            emit(event(incident_id=f"INC-{n}"), broker=broker)
        wait_until(
            lambda: _subjects(smtp, "Still working on it") >= 4, 30, "regular updates before the crash"
        )
        server.kill()
        time.sleep(2)  # Redis is away for two seconds while updates fall due
        server.restart()
        after_restart = len(smtp.messages())
        wait_until(lambda: len(smtp.messages()) >= after_restart + 10, 60, "updates after the restart")
        assert worker.running and scheduler.running, "a process died with Redis"
        for n in range(5):
            emit(event("resolved", incident_id=f"INC-{n}", at=None), broker=broker)
        # A send the crash caught between its claim and its end is taken again once its lease
        # (60 s) has run out, and its thread's later messages wait behind it, in order.
        wait_until(lambda: _subjects(smtp, "Resolved") >= 10, 120, "every resolution")
        store = RedisStore(server.client())
        wait_until(
            lambda: all(c.status.final for c in store.communications()) and store.unfinished_count() == 0,
            60,
            "every communication ended",
        )
        expected = {f"<amends.INC-{n}.{s}@acme.example>" for n in range(5) for s in ("fast", "slow")}
        assert expected <= set(smtp.message_ids())  # every thread's acknowledgment arrived
        assert store.rejected() == []
        assert {beat["role"] for beat in store.heartbeats().values()} == {"worker", "scheduler"}
    finally:
        logs = scheduler.log_text() + worker.log_text()
        scheduler.stop()
        worker.stop()
        broker.close()
    assert "cannot go on" not in logs


def test_a_worker_killed_mid_burst_loses_no_acknowledgment(stack: dict[str, Any]) -> None:
    """SIGKILL of the worker while it works through 30 incidents; after a restart every reader has its acknowledgment."""
    server: RedisServer = stack["redis"]
    smtp: FaultySmtp = stack["smtp"]
    worker = AmendsProcess.worker(stack["env"], stack["logs"] / "worker.log", threads=2)
    scheduler = AmendsProcess.scheduler(stack["env"], stack["logs"] / "scheduler.log")
    broker = build_broker(server.url)
    try:
        for n in range(30):
            emit(event(incident_id=f"INC-{n}"), broker=broker)
        wait_until(lambda: len(smtp.messages()) >= 5, 30, "the first acknowledgments")
        worker.kill()
        worker.start()
        expected = {f"<amends.INC-{n}.{s}@acme.example>" for n in range(30) for s in ("fast", "slow")}
        wait_until(lambda: expected <= set(smtp.message_ids()), 90, "every acknowledgment")
        store = RedisStore(server.client())
        wait_until(lambda: store.unfinished_count() == 0, 90, "every communication ended")
        received = Counter(smtp.message_ids())
        # Only a message whose 250 came just before the kill may arrive twice (same Message-ID):
        # it was in the dead worker's hands, so it was attempted again after its lease.
        retaken = {c.message_id for c in store.communications() if c.attempts > 1}
        assert {mid for mid, count in received.items() if count > 1} <= retaken
        assert all(count <= 2 for count in received.values())
        assert store.rejected() == []
    finally:
        scheduler.stop()
        worker.stop()
        broker.close()


@pytest.fixture
def sink() -> Iterator[FaultySmtp]:
    """The in-process ``app`` sends to an SMTP server that can drop connections."""
    with FaultySmtp() as server:
        yield server


def test_connections_dropped_twice_in_a_row_end_in_one_delivery(app: App) -> None:
    """An SMTP server that drops every connection mid-transaction: `retrying`, then sent once when it recovers."""
    smtp: FaultySmtp = app.sink  # type: ignore[assignment]
    smtp.mode = "drop"
    emit(event(), broker=app.broker)
    app.drain()
    comms = list(app.runtime.store.communications())
    assert {c.status for c in comms} == {"retrying"}
    assert all("closed the connection" in c.last_error for c in comms)
    app.tick()
    smtp.mode = "ok"
    app.settle()
    assert {c.status for c in app.runtime.store.communications()} == {"sent"}
    assert sorted(Counter(smtp.message_ids()).values()) == [1, 1, 1]


def test_servers_clock_makes_skewed_hosts_agree(redis_client: redis.Redis) -> None:
    """Two processes whose local clocks differ by 10 s read the same time from the Redis server."""
    ahead = ServerClock(redis_client, local=lambda: time.time() + 5)
    behind = ServerClock(redis_client, local=lambda: time.time() - 5)
    seconds, micros = redis_client.time()
    server_now = datetime.fromtimestamp(seconds + micros / 1e6, tz=UTC)
    assert abs((ahead() - behind()).total_seconds()) < 0.05
    assert abs((ahead() - server_now).total_seconds()) < 0.5
    assert abs(ahead.offset_s + 5) < 0.05 and abs(behind.offset_s - 5) < 0.05


def test_skewed_scheduler_and_worker_send_nothing_early_and_enqueue_each_timer_a_bounded_number_of_times(
    app: App,
) -> None:
    """A scheduler 5 s ahead and a worker 5 s behind, both on the server's clock: each update once, on time."""
    from scheduler.service.loop import SchedulerLoop
    from scheduler.service.processes import timer_sender
    from scheduler.storage.timers import RedisTimerStore

    client = app.runtime.client
    worker_clock = ServerClock(client, local=lambda: time.time() - 5)
    app.runtime.clock = worker_clock
    enqueued: Counter[str] = Counter()
    send = timer_sender(app.broker)

    def counting_send(timers: list[tuple[str, int]]) -> None:
        enqueued.update(member for member, _ in timers)
        send(timers)

    loop = SchedulerLoop(
        RedisTimerStore(client),
        counting_send,
        clock=ServerClock(client, local=lambda: time.time() + 5),
        acks=False,
        max_sleep_s=0.05,
    )
    config = {
        **SECONDS_CONFIG,
        "defaults": {"cadence": {"sev1": "1s"}, "feedback_after": "1h"},
        "base_url": "https://status.acme.example",
    }
    app.write_config(config)
    emit(event(at=worker_clock()), broker=app.broker)
    app.drain()
    stop = threading.Event()
    thread = threading.Thread(target=loop.run, args=(stop,))
    thread.start()
    try:
        wait_until(lambda: len(app.sink.messages()) >= 8, 20, "regular updates every second")
    finally:
        stop.set()
        thread.join(5)
    app.drain()
    updates = [c for c in app.runtime.store.communications() if c.kind == "update" and c.sent_at]
    assert len(updates) >= 4
    assert all(c.sent_at >= c.promised_at for c in updates)  # nothing early, by the shared clock
    fired = len(updates) + 2  # each thread's next timer may be out when the loop stops
    assert sum(enqueued.values()) <= fired + 4  # no claim storm: about one enqueue per timer


def test_a_scheduler_loop_that_cannot_go_on_stops_its_process(
    monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    """A bug in the loop ends it with the failure recorded and the stop event set: the process exits non-zero."""
    from scheduler.service.loop import SchedulerLoop
    from scheduler.service.processes import start_scheduler
    from scheduler.service.settings import Settings, bundled_path

    def broken_tick(self: SchedulerLoop, now: datetime) -> int:
        raise KeyError("a bug")

    monkeypatch.setattr(SchedulerLoop, "tick", broken_tick)
    stop = threading.Event()
    settings = Settings(redis_url=redis_url, config_path=bundled_path("config") / "amends.yaml")
    running = start_scheduler(settings, stop)
    assert stop.wait(10), "the process would live on with a dead loop"
    running.join(5)
    assert isinstance(running.failure, KeyError)


def test_a_redis_outage_does_not_end_the_scheduler_loop(redis_url: str) -> None:
    """Redis errors inside the loop are waited out: it keeps going and ticks again once Redis answers."""
    from scheduler.service.loop import SchedulerLoop
    from scheduler.storage.timers import MemoryTimerStore

    calls = Counter[str]()

    def flaky_send(timers: list[tuple[str, int]]) -> None:
        calls["send"] += 1
        if calls["send"] == 1:
            raise redis.ConnectionError("Connection refused")

    timers = MemoryTimerStore()
    timers.arm("u|INC-1|acme", 0)
    stop = threading.Event()
    loop = SchedulerLoop(timers, flaky_send, lease_ms=50, acks=True, max_sleep_s=0.05)
    thread = threading.Thread(target=loop.run, args=(stop,))
    thread.start()
    wait_until(lambda: calls["send"] >= 2, 10, "the claim handed out again after its lease")
    stop.set()
    thread.join(5)
    assert not thread.is_alive() and loop.enqueued >= 1
