"""amends with its queues on RabbitMQ (``AMENDS_BROKER_URL=amqp://…``), through Dramatiq's
RabbitmqBroker: producers, the worker, the scheduler, event order and a killed worker.

Each test runs on a vhost of the session's own on the real RabbitMQ (see ``rabbitmq_url``),
with amends' queues deleted before and after it; state stays in the test Redis.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dramatiq
import pika
import pytest
import redis
import yaml
from fastapi.testclient import TestClient

from scheduler import emit
from scheduler.dev.mailsink import MailSink
from scheduler.mail.smtp import SmtpSettings
from scheduler.service import emitting
from scheduler.service.processes import RunningWorker, broker_for, start_scheduler, start_worker
from scheduler.service.queues import EVENTS_QUEUE, is_rabbitmq_broker
from scheduler.service.settings import Settings, bundled_path
from scheduler.storage import keys
from scheduler.storage.connection import client_for
from scheduler.storage.redis_store import RedisStore
from scheduler.web.app import create_app
from tests.conftest import event
from tests.realservers import REPO_ROOT, AmendsProcess, wait_until
from tests.test_integrations import alert_group

pytestmark = pytest.mark.real

TOKEN = "rabbit-api-token"

CONFIG: dict[str, Any] = {
    "sender": "Acme Status <status@acme.example>",
    "defaults": {"cadence": {"sev1": "2s", "sev2": "3s"}, "feedback_after": "1h"},
    "stakeholders": [
        {"id": "fast", "name": "Fast", "email": "fast@acme.example", "cadence": {"sev1": "1s"}},
        {"id": "slow", "name": "Slow", "email": "slow@acme.example", "timezone": "America/New_York"},
    ],
}


def _now() -> datetime:
    return datetime.now(UTC)


def _queued(url: str, queue: str) -> list[dict[str, Any]]:
    """The Dramatiq messages waiting on ``queue`` at RabbitMQ, read without taking them."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        messages = []
        while True:
            method, _, body = channel.basic_get(queue, auto_ack=False)
            if method is None:
                return messages
            messages.append(json.loads(body))
    finally:
        connection.close()  # what was read but not acked goes back to the queue


def _ready(url: str, queue: str) -> int:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        return int(connection.channel().queue_declare(queue, passive=True).method.message_count)
    finally:
        connection.close()


def _message_ids(sink: MailSink) -> list[str]:
    return [str(m.message["Message-ID"]) for m in list(sink.received)]


def _broker_keys_in_redis(client: redis.Redis) -> list[bytes]:
    return list(client.scan_iter("amends-dramatiq*"))


@pytest.fixture(params=["redis", "cluster"])
def store_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """Each test runs twice: state on a single Redis, and on a Redis Cluster (3 masters, 3
    replicas), the queues on RabbitMQ either way; the store is emptied before and after."""
    url = str(request.getfixturevalue("redis_url" if request.param == "redis" else "cluster_url"))
    client = client_for(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


@pytest.fixture
def redis_client(store_url: str) -> redis.Redis:
    """A client on the test's store, whichever it is."""
    return client_for(store_url)


@pytest.fixture
def settings(
    store_url: str, redis_client: redis.Redis, rabbitmq_broker_url: str, sink: MailSink, tmp_path: Path
) -> Settings:
    config = tmp_path / "amends.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    return Settings(
        redis_url=store_url,
        broker_url=rabbitmq_broker_url,
        smtp=SmtpSettings.from_url(sink.url),
        config_path=config,
        templates_dir=bundled_path("templates"),
        secret_key="test-secret",
        api_token=TOKEN,
        data_dir=tmp_path / "home",
        order_wait_ms=1_500,
    )


@pytest.fixture
def env(settings: Settings, store_url: str, rabbitmq_broker_url: str, sink: MailSink) -> dict[str, str]:
    """The environment of an amends process on the same Redis, RabbitMQ and SMTP server."""
    return {
        "AMENDS_REDIS_URL": store_url,
        "AMENDS_BROKER_URL": rabbitmq_broker_url,
        "AMENDS_SMTP_URL": sink.url,
        "AMENDS_CONFIG": str(settings.config_path),
        "AMENDS_SECRET_KEY": "test-secret",
        "AMENDS_HOME": str(settings.data_dir),
    }


@pytest.fixture
def producer(settings: Settings) -> Iterator[dramatiq.Broker]:
    """The broker a producer (the API, ``emit``) builds from these settings: RabbitMQ, not patient."""
    broker = broker_for(settings)
    assert is_rabbitmq_broker(broker)
    yield broker
    broker.close()


def test_emit_the_cli_and_the_api_put_events_on_rabbitmq_not_on_redis(
    settings: Settings,
    env: dict[str, str],
    rabbitmq_broker_url: str,
    redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """emit() from the environment, `amends emit`, POST /v1/events and an integration route all
    enqueue on RabbitMQ's ``events`` queue; Redis holds no queue."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    try:
        emit(event(event_id="emit-1", at=_now()))  # the broker named by AMENDS_BROKER_URL
    finally:
        for broker in emitting._brokers.values():
            broker.close()
        emitting._brokers.clear()

    flags = ["--incident", "INC-CLI", "--title", "Search down", "--severity", "sev2", "--service", "search"]
    cli = subprocess.run(
        [sys.executable, "-m", "scheduler.cli.main", "emit", "opened", *flags, "--event-id", "cli-1"],
        env={**os.environ, **env},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode == 0, cli.stderr
    assert "enqueued cli-1" in cli.stdout

    with TestClient(create_app(settings)) as api:
        api.headers["Authorization"] = f"Bearer {TOKEN}"
        assert api.post("/v1/events", json=event(event_id="api-1", at=_now())).status_code == 202
        alert = api.post("/v1/integrations/alertmanager", json=alert_group())
        assert alert.status_code == 202, alert.text
    alert_event_id = alert.json()["events"][0]["event_id"]

    queued = _queued(rabbitmq_broker_url, EVENTS_QUEUE)
    assert {m["actor_name"] for m in queued} == {"handle_event"}
    assert sorted(m["args"][0]["event_id"] for m in queued) == sorted(
        ["emit-1", "cli-1", "api-1", alert_event_id]
    )
    assert _broker_keys_in_redis(redis_client) == []


@pytest.fixture
def worker(settings: Settings) -> Iterator[RunningWorker]:
    """The worker ``amends worker`` runs, in this process, consuming from RabbitMQ."""
    running = start_worker(settings, threads=4)
    yield running
    running.stop()


def test_an_incident_on_rabbitmq_reaches_every_reader_through_worker_and_scheduler(
    settings: Settings,
    worker: RunningWorker,
    producer: dramatiq.Broker,
    sink: MailSink,
    redis_client: redis.Redis,
) -> None:
    """Acknowledgments, regular updates fired by the scheduler's timers, resolutions: all through
    RabbitMQ's queues, each email once, every communication ended."""
    assert worker.broker_url_redacted.startswith("amqp://") and "@" not in worker.broker_url_redacted
    stop = threading.Event()
    scheduler = start_scheduler(settings, stop)
    try:
        emit(event(at=_now()), broker=producer)
        wait_until(lambda: len(sink.received) >= 2, 15, "both acknowledgments")
        wait_until(
            lambda: any(
                "Still working on it" in str(m.message["Subject"]) for m in sink.to("fast@acme.example")
            ),
            15,
            "a regular update from a timer",
        )
        emit(event("resolved", at=_now()), broker=producer)
        wait_until(
            lambda: sum(str(m.message["Subject"]).startswith("[Resolved]") for m in sink.received) == 2,
            15,
            "both resolutions",
        )
        store = RedisStore(redis_client)
        wait_until(lambda: store.unfinished_count() == 0, 15, "every communication ended")
    finally:
        stop.set()
        scheduler.join(10)
    assert scheduler.failure is None
    ids = _message_ids(sink)
    assert {"<amends.INC-1.fast@acme.example>", "<amends.INC-1.slow@acme.example>"} <= set(ids)
    assert all(n == 1 for n in Counter(ids).values())
    assert all(c.status == "sent" for c in store.communications())
    assert store.rejected() == []
    assert _broker_keys_in_redis(redis_client) == []


class _Waits(dramatiq.Middleware):
    """Sees a waiting event go back to RabbitMQ's delay queue, and come out of it applied."""

    def __init__(self) -> None:
        self.delayed_to: list[str] = []
        self.applied_after_waiting = threading.Event()

    def before_enqueue(self, broker: dramatiq.Broker, message: Any, delay: int | None) -> None:
        if message.actor_name == "handle_event" and delay:
            self.delayed_to.append(message.queue_name)

    def after_process_message(
        self, broker: dramatiq.Broker, message: Any, *, result: Any = None, exception: Any = None
    ) -> None:
        if message.actor_name == "handle_event" and exception is None and message.options.get("retries"):
            self.applied_after_waiting.set()


def test_an_update_that_arrives_before_its_opened_waits_on_rabbitmq_delay_queue(
    settings: Settings, producer: dramatiq.Broker, sink: MailSink, redis_client: redis.Redis
) -> None:
    """`updated` first: it waits on ``events.DQ`` and is applied once `opened` is; one whose
    incident never opens is rejected after ``order_wait_ms`` (1.5 s here), naming the reason."""
    broker = broker_for(settings, patient=True)
    waits = _Waits()
    broker.add_middleware(waits)
    running = start_worker(settings, threads=4, broker=broker)
    store = RedisStore(redis_client)
    opened_at = _now() - timedelta(seconds=10)
    updated_at = opened_at + timedelta(seconds=5)
    try:
        emit(event("updated", incident_id="INC-7", status="identified", at=updated_at), broker=producer)
        emit(event("updated", incident_id="INC-404", status="identified", at=updated_at), broker=producer)
        wait_until(lambda: "events.DQ" in waits.delayed_to, 10, "the update sent back to wait")
        emit(event(incident_id="INC-7", at=opened_at), broker=producer)
        wait_until(waits.applied_after_waiting.is_set, 10, "the waiting update applied")
        wait_until(lambda: len(store.rejected()) == 1, 10, "the update whose incident never opened rejected")
        wait_until(
            lambda: store.unfinished_count() == 0 and len(sink.received) >= 2, 10, "every communication ended"
        )
    finally:
        running.stop()
    incident = store.incident("INC-7")
    assert incident is not None and incident.status == "identified"
    (rejected,) = store.rejected()
    reason = rejected["errors"][0]["reason"]
    assert reason == "INC-404: updated waited 1.5 s for its opened, and none came"
    assert {m.rcpt_tos[0] for m in sink.received} == {"fast@acme.example", "slow@acme.example"}
    assert not any("INC-404" in str(m.message["Subject"]) for m in sink.received)
    assert all(c.status == "sent" for c in store.communications())


_SHORT_LEASE_WORKER = """
import signal, sys, threading
from scheduler.service.processes import start_worker
from scheduler.service.settings import Settings

settings = Settings.from_env().with_(send_lease_ms=int(sys.argv[1]))
settings.require_worker()
running = start_worker(settings, threads=2)
print(f"amends worker: consuming from {running.broker_url_redacted}", flush=True)
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
stop.wait()
running.stop()
"""


class _ShortLeaseWorker(AmendsProcess):
    """What `amends worker --threads 2` runs (``start_worker`` on the environment's settings), with
    a send lease of ``lease_ms`` instead of 60 s, so that a send cut short by the kill is taken
    again within the test's time."""

    def __init__(self, env: dict[str, str], log_path: Path, lease_ms: int) -> None:
        self.lease_ms = lease_ms
        super().__init__(["worker"], env, log_path, ready_text="amends worker:")

    @property
    def command(self) -> list[str]:
        return [sys.executable, "-c", _SHORT_LEASE_WORKER, str(self.lease_ms)]


def test_a_worker_killed_mid_burst_on_rabbitmq_loses_no_acknowledgment(
    settings: Settings,
    env: dict[str, str],
    producer: dramatiq.Broker,
    sink: MailSink,
    redis_client: redis.Redis,
    rabbitmq_broker_url: str,
    tmp_path: Path,
) -> None:
    """SIGKILL of a worker process during 30 incidents: RabbitMQ hands its unacked messages back
    at once (no heartbeat timeout to wait for), and after a restart every reader has its
    acknowledgment; only a send in flight at the kill may arrive twice, with the same Message-ID."""
    lease_ms = 3_000
    worker = _ShortLeaseWorker(env, tmp_path / "worker.log", lease_ms)
    stop = threading.Event()
    scheduler = start_scheduler(settings.with_(send_lease_ms=lease_ms), stop)
    store = RedisStore(redis_client)
    ids = [f"burst-{n}" for n in range(30)]
    try:
        worker.wait_ready()
        for n, event_id in enumerate(ids):
            emit(event(incident_id=f"INC-{n}", event_id=event_id, at=_now()), broker=producer)
        wait_until(lambda: len(sink.received) >= 5, 30, "the first acknowledgments")
        worker.kill()

        def applied() -> int:
            return sum(1 for n, e in enumerate(ids) if redis_client.exists(keys.event(f"INC-{n}", e)))

        # Nothing is left in the dead worker's hands: each event is applied or waits on the queue.
        wait_until(
            lambda: applied() + _ready(rabbitmq_broker_url, EVENTS_QUEUE) >= len(ids), 10, "events back"
        )
        worker.start()
        expected = {f"<amends.INC-{n}.{s}@acme.example>" for n in range(30) for s in ("fast", "slow")}
        wait_until(lambda: expected <= set(_message_ids(sink)), 30, "every acknowledgment")
        wait_until(lambda: store.unfinished_count() == 0, 30, "every communication ended")
    finally:
        stop.set()
        scheduler.join(10)
        worker.stop()
    received = Counter(_message_ids(sink))
    retaken = {c.message_id for c in store.communications() if c.attempts > 1}
    assert {mid for mid, count in received.items() if count > 1} <= retaken
    assert all(count <= 2 for count in received.values())
    assert store.rejected() == []
    assert "Traceback" not in worker.log_text(), worker.log_text()
