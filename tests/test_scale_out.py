"""Several hosts on engines made for it: two workers and two schedulers (processes standing in
for hosts) on RabbitMQ and a Redis Cluster, while one of each is SIGKILLed and a cluster
master dies. Nothing accepted is lost, nothing is sent twice but a send in flight, every
thread keeps its order, and the processes go on by themselves."""

from __future__ import annotations

import itertools
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from scheduler import emit
from scheduler.service.queues import build_broker
from scheduler.storage import keys
from scheduler.storage.connection import client_for
from scheduler.storage.redis_store import RedisStore
from tests.conftest import event
from tests.realservers import AmendsProcess, FaultySmtp, RedisClusterServers, wait_until

pytestmark = pytest.mark.real

CONFIG: dict[str, Any] = {
    "sender": "Acme Status <status@acme.example>",
    "defaults": {"cadence": {"sev1": "2s"}, "feedback_after": "1h"},
    "stakeholders": [
        {"id": "fast", "name": "Fast", "email": "fast@acme.example"},
        {"id": "slow", "name": "Slow", "email": "slow@acme.example", "timezone": "America/New_York"},
    ],
}
INCIDENTS = [f"INC-{n}" for n in range(12)]


def _subjects(smtp: FaultySmtp, text: str) -> int:
    return sum(1 for m in smtp.messages() if text in str(m.message["Subject"]))


def test_two_of_each_share_the_load_through_kills_and_a_failover(
    cluster: RedisClusterServers, rabbitmq_broker_url: str, tmp_path: Path
) -> None:
    config = tmp_path / "amends.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    with FaultySmtp() as smtp:
        env = {
            "AMENDS_REDIS_URL": cluster.url,
            "AMENDS_BROKER_URL": rabbitmq_broker_url,
            "AMENDS_SMTP_URL": smtp.url,
            "AMENDS_CONFIG": str(config),
            "AMENDS_SECRET_KEY": "test-secret",
            "AMENDS_HOME": str(tmp_path / "home"),
        }
        workers = [AmendsProcess.worker(env, tmp_path / f"worker-{n}.log", threads=2) for n in range(2)]
        schedulers = [AmendsProcess.scheduler(env, tmp_path / f"scheduler-{n}.log") for n in range(2)]
        producer = build_broker(rabbitmq_broker_url)
        store = RedisStore(client_for(cluster.url, patient=True))
        try:
            for process in (*workers, *schedulers):
                process.wait_ready(timeout_s=60)
            for incident in INCIDENTS:
                emit(event(incident_id=incident, at=datetime.now(UTC)), broker=producer)
            wait_until(lambda: _subjects(smtp, "Still working on it") >= 6, 60, "regular updates")

            workers[0].kill()
            schedulers[0].kill()
            victim = INCIDENTS[0]
            dead = cluster.kill_master_of(keys.incident(victim))
            cluster.wait_until_healed(keys.incident(victim), dead)
            before = _subjects(smtp, "Still working on it")
            wait_until(
                lambda: _subjects(smtp, "Still working on it") >= before + 6, 60, "updates after the kills"
            )

            for incident in INCIDENTS:
                emit(event("resolved", incident_id=incident, at=datetime.now(UTC)), broker=producer)
            wait_until(lambda: _subjects(smtp, "[Resolved]") >= 2 * len(INCIDENTS), 60, "every resolution")
            wait_until(lambda: store.unfinished_count() == 0, 60, "every communication ended")
            assert workers[1].running and schedulers[1].running
        finally:
            logs = "".join(p.log_text() for p in (*workers, *schedulers))
            for process in (*workers, *schedulers):
                process.stop()
            producer.close()

        comms = list(store.communications())
        received = Counter(str(m.message["Message-ID"]) for m in smtp.messages())
    # nothing lost: every reader acknowledged and told of the resolution, once each
    for incident in INCIDENTS:
        for reader in ("fast", "slow"):
            thread = sorted(
                (c for c in comms if (c.incident_id, c.stakeholder_id) == (incident, reader)),
                key=lambda c: c.seq,
            )
            assert [thread[0].kind, thread[-1].kind] == ["acknowledgment", "resolution"], (incident, reader)
            sent = [c for c in thread if c.status == "sent"]
            # thread order: each message went out after the one before it
            assert all(a.sent_at <= b.sent_at for a, b in itertools.pairwise(sent))  # type: ignore[operator]
    assert {c.status for c in comms} <= {"sent", "cancelled"}
    # nothing sent twice but what was in flight at a kill (same Message-ID, retaken)
    retaken = {c.message_id for c in comms if c.attempts > 1}
    assert {mid for mid, n in received.items() if n > 1} <= retaken
    assert store.rejected() == []
    assert "exited" not in logs
