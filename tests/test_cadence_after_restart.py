"""Redis killed and restarted, then every connection cut for seconds: each live incident's
cadence is back within one cadence step, not after a lease expires.

A real ``amends worker`` and ``amends scheduler`` on a private redis-server with an
append-only file, a real SMTP server, 30 sev1 incidents on a 3 s cadence. What counts is
what the SMTP server received.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scheduler import emit
from scheduler.service.queues import build_broker
from tests.conftest import event
from tests.realservers import AmendsProcess, FaultySmtp, RedisServer, amends_stack, wait_until

pytestmark = pytest.mark.real

INCIDENTS = [f"INC-F{n}" for n in range(30)]
CADENCE_S = 3
BOUND_S = 10.0
"""Every incident has two updates this long after the storm ended (docs/reliability.md)."""

STORM_S = 4.0

CONFIG: dict[str, Any] = {
    "sender": "Acme Status <status@acme.example>",
    "defaults": {"cadence": {"sev1": f"{CADENCE_S}s"}},
    "stakeholders": [{"id": "acme-finance", "name": "Acme Finance", "email": "finance@acme.example"}],
}

_UPDATE = re.compile(r"<amends\.(INC-F\d+)\.acme-finance\.update\.\d+@")


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[RedisServer, FaultySmtp, dict[str, str]]]:
    """A private redis-server with an append-only file, an SMTP server, and amends' environment."""
    with amends_stack(tmp_path, CONFIG) as stack:
        yield stack


def _updates_since(smtp: FaultySmtp, since: float) -> dict[str, list[float]]:
    """When each incident's updates arrived at the SMTP server, from ``since`` on."""
    arrived: dict[str, list[float]] = {incident: [] for incident in INCIDENTS}
    for mail in smtp.messages():
        found = _UPDATE.match(mail.message_id)
        if found and mail.received_at >= since:
            arrived[found.group(1)].append(mail.received_at)
    return arrived


def _cut_every_connection(server: RedisServer, seconds: float) -> int:
    """``CLIENT KILL`` every other client (commands and pub/sub alike), again and again for
    ``seconds``; how many connections were cut."""
    killer = server.client(socket_timeout=2)
    cut = 0
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            for kind in ("normal", "pubsub"):
                cut += int(killer.execute_command("CLIENT", "KILL", "TYPE", kind, "SKIPME", "yes"))
            time.sleep(0.05)
    finally:
        killer.close()
    return cut


def test_three_redis_crashes_and_a_connection_storm_cost_each_incident_at_most_one_cadence_step(
    stack: tuple[RedisServer, FaultySmtp, dict[str, str]], tmp_path: Path
) -> None:
    """After three SIGKILLs of Redis at random moments and 4 s of cut connections, every one of
    30 incidents on a 3 s cadence has two updates within 10 s, and no process died."""
    server, smtp, env = stack
    worker = AmendsProcess.worker(env, tmp_path / "worker.log")
    scheduler = AmendsProcess.scheduler(env, tmp_path / "scheduler.log")
    broker = build_broker(server.url)
    try:
        for incident in INCIDENTS:
            emit(event(incident_id=incident), broker=broker)
        broker.close()
        started = time.time()
        wait_until(
            lambda: all(len(times) >= 1 for times in _updates_since(smtp, started).values()),
            60,
            "every incident on its cadence before the first crash",
        )
        rng = random.Random()
        for _ in range(3):
            time.sleep(rng.uniform(0.2, CADENCE_S))
            server.kill()
            time.sleep(rng.uniform(0.0, 1.0))
            server.restart()
        cut = _cut_every_connection(server, STORM_S)
        storm_ended = time.time()
        try:
            wait_until(
                lambda: all(len(times) >= 2 for times in _updates_since(smtp, storm_ended).values()),
                BOUND_S + 20,
                "two updates for every incident after the storm",
            )
        except TimeoutError:
            behind = {i: len(t) for i, t in _updates_since(smtp, storm_ended).items() if len(t) < 2}
            raise AssertionError(f"updates after the storm, of those behind: {behind}") from None
        slowest_s = max(times[1] for times in _updates_since(smtp, storm_ended).values()) - storm_ended
        print(f"\nconnections cut: {cut}; slowest incident's second update {slowest_s:.2f} s after the storm")
        assert cut > 0
        assert slowest_s <= BOUND_S, f"the slowest incident's second update came {slowest_s:.1f} s after"
        assert worker.running and scheduler.running, "a process died with Redis"
    finally:
        scheduler.stop()
        worker.stop()
        broker.close()
