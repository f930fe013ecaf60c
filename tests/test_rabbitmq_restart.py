"""A RabbitMQ crash and restart under a running `amends worker` and `amends scheduler`.

The RabbitMQ here is a node of the test's own (``rabbitmq-server`` from the Debian package,
run on free loopback ports with its own data folder), so killing it disturbs nobody else.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Self

import pika
import pytest
import redis
import yaml

from scheduler import emit
from scheduler.dev.mailsink import MailSink
from scheduler.service.queues import BrokerUnavailableError, build_broker
from scheduler.storage import keys
from scheduler.storage.redis_store import RedisStore
from tests.conftest import event
from tests.realservers import AmendsProcess, free_port, wait_until

pytestmark = pytest.mark.real

HOST = "127.0.0.1"


def _server_script() -> str | None:
    """The real start script: Debian's /usr/sbin/rabbitmq-server switches to the rabbitmq user,
    who could not write this test's folder."""
    packaged = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
    return str(packaged) if packaged.exists() else shutil.which("rabbitmq-server")


class PrivateRabbitmq:
    """A RabbitMQ node on free loopback ports with its own folder, started at construction;
    ``kill()`` is SIGKILL of the node, ``start()`` brings it back on the same port and data."""

    def __init__(self, folder: Path | None = None) -> None:
        script = _server_script()
        if script is None:
            raise FileNotFoundError("rabbitmq-server is not installed")
        self.script = script
        self.port = free_port()
        self.dist_port = free_port()
        self.folder = folder or Path(tempfile.mkdtemp(prefix="amends-rabbitmq-"))
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "rabbitmq.conf").write_text(f"listeners.tcp.default = {HOST}:{self.port}\n")
        self.node = f"amends-{uuid.uuid4().hex[:8]}@localhost"
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@{HOST}:{self.port}/%2F"

    @property
    def log_path(self) -> Path:
        return self.folder / "node.log"

    def _environment(self) -> dict[str, str]:
        return {
            **os.environ,
            "HOME": str(self.folder),  # the Erlang cookie
            "RABBITMQ_CONF_ENV_FILE": "/dev/null",
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": HOST,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_CONFIG_FILE": str(self.folder / "rabbitmq.conf"),
            "RABBITMQ_MNESIA_BASE": str(self.folder / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.folder / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.folder / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(self.folder / "node.pid"),
            "ERL_EPMD_ADDRESS": HOST,
        }

    def answers(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(
                f"rabbitmq-server exited:\n{self.log_path.read_text(errors='replace')[-3000:]}"
            )
        try:
            pika.BlockingConnection(pika.URLParameters(self.url)).close()
            return True
        except pika.exceptions.AMQPError:
            return False

    def start(self, timeout_s: float = 60.0) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [self.script],
                env=self._environment(),
                cwd=self.folder,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_until(self.answers, timeout_s, f"RabbitMQ node {self.node} did not answer", interval_s=0.2)

    def _signal_group(self, signum: int) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signum)  # the start script, the Erlang VM and its helpers

    def kill(self) -> None:
        """SIGKILL: no shutdown; what RabbitMQ had written to disk is all that survives."""
        self._signal_group(signal.SIGKILL)
        if self.process is not None:
            self.process.wait()

    def stop(self) -> None:
        self._signal_group(signal.SIGTERM)
        if self.process is not None:
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


CONFIG = {
    "sender": "Acme Status <status@acme.example>",
    "defaults": {"cadence": {"sev1": "2s"}, "feedback_after": "1h"},
    "stakeholders": [
        {"id": "fast", "name": "Fast", "email": "fast@acme.example", "cadence": {"sev1": "1s"}},
        {"id": "slow", "name": "Slow", "email": "slow@acme.example"},
    ],
}


@pytest.fixture
def rabbitmq() -> Iterator[PrivateRabbitmq]:
    if _server_script() is None:
        pytest.skip("needs rabbitmq-server (Debian package rabbitmq-server)")
    with PrivateRabbitmq() as node:
        yield node


def _subjects(sink: MailSink, text: str) -> int:
    return sum(1 for m in list(sink.received) if text in str(m.message["Subject"]))


def test_worker_and_scheduler_ride_out_a_rabbitmq_crash_and_restart(
    rabbitmq: PrivateRabbitmq, redis_url: str, redis_client: redis.Redis, sink: MailSink, tmp_path: Path
) -> None:
    """SIGKILL of the RabbitMQ node under load, then a restart: `amends worker` and `amends
    scheduler` reconnect by themselves, events confirmed just before the crash are applied,
    regular updates go on, and every communication ends; meanwhile a producer fails fast."""
    config = tmp_path / "amends.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    env = {
        "AMENDS_REDIS_URL": redis_url,
        "AMENDS_BROKER_URL": rabbitmq.url,
        "AMENDS_SMTP_URL": sink.url,
        "AMENDS_CONFIG": str(config),
        "AMENDS_SECRET_KEY": "test-secret",
        "AMENDS_HOME": str(tmp_path / "home"),
    }
    worker = AmendsProcess.worker(env, tmp_path / "worker.log")
    scheduler = AmendsProcess.scheduler(env, tmp_path / "scheduler.log")
    producer = build_broker(rabbitmq.url)
    incidents = [f"INC-{n}" for n in range(3)]
    store = RedisStore(redis_client)
    try:
        worker.wait_ready()
        scheduler.wait_ready()
        for incident in incidents:
            emit(event(incident_id=incident, at=datetime.now(UTC)), broker=producer)
        wait_until(
            lambda: _subjects(sink, "Still working on it") >= 3, 30, "regular updates before the crash"
        )
        for incident in incidents:  # confirmed by RabbitMQ, then the crash: taken or not, none is lost
            identified = event(
                "updated", incident, f"{incident}-identified", datetime.now(UTC), status="identified"
            )
            emit(identified, broker=producer)
        rabbitmq.kill()
        with pytest.raises(BrokerUnavailableError, match="RabbitMQ did not answer"):
            emit(event(incident_id="INC-LATE", at=datetime.now(UTC)), broker=producer)
        rabbitmq.start()
        after_restart = len(sink.received)
        wait_until(lambda: len(sink.received) >= after_restart + 6, 60, "updates after the restart")
        assert worker.running and scheduler.running, "a process died with RabbitMQ"
        for incident in incidents:
            emit(event("resolved", incident_id=incident, at=datetime.now(UTC)), broker=producer)
        wait_until(lambda: _subjects(sink, "[Resolved]") >= 2 * len(incidents), 30, "every resolution")
        wait_until(lambda: store.unfinished_count() == 0, 30, "every communication ended")
    finally:
        logs = scheduler.log_text() + worker.log_text()
        scheduler.stop()
        worker.stop()
        producer.close()
    for incident in incidents:
        record = store.incident(incident)
        assert record is not None and record.status == "resolved"
        assert redis_client.exists(keys.event(incident, f"{incident}-identified"))  # the update was applied
    assert store.rejected() == []
    assert store.incident("INC-LATE") is None
    expected = {f"<amends.{i}.{s}@acme.example>" for i in incidents for s in ("fast", "slow")}
    assert expected <= {str(m.message["Message-ID"]) for m in sink.received}
    assert "cannot go on" not in logs
