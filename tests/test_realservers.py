"""The fault-injection controls of tests/realservers.py do what they say."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import pytest
import yaml

from scheduler import emit
from scheduler.service.queues import build_broker
from tests.conftest import event
from tests.realservers import AmendsProcess, FaultySmtp, RedisServer

pytestmark = pytest.mark.real


@pytest.fixture
def smtp() -> Iterator[FaultySmtp]:
    with FaultySmtp() as server:
        yield server


def _send(server: FaultySmtp, message_id: str = "<one@test.example>", timeout: float = 5.0) -> None:
    message = EmailMessage()
    message["From"] = "status@acme.example"
    message["To"] = "finance@acme.example"
    message["Subject"] = "hello"
    message["Message-ID"] = message_id
    message.set_content("body")
    asyncio.run(
        aiosmtplib.send(message, hostname="127.0.0.1", port=server.port, start_tls=False, timeout=timeout)
    )


# -- Redis --------------------------------------------------------------------------------


@pytest.mark.parametrize("appendfsync", ["everysec", "always"])
def test_redis_data_survives_sigkill_and_restart(appendfsync: str) -> None:
    with RedisServer(appendfsync=appendfsync) as server:
        assert server.url == f"redis://127.0.0.1:{server.port}/0"
        client = server.client()
        client.set("kept", "yes")
        client.rpush("queue", "a", "b")
        server.aof_written()  # with everysec, a write may wait for a slow fsync: see RedisServer
        pid = server.process.pid if server.process else None
        server.kill()
        assert not server.running
        with pytest.raises(Exception):  # noqa: B017 - any connection error will do
            server.client(socket_connect_timeout=0.5).ping()
        server.restart()
        assert server.process is not None and server.process.pid != pid
        assert client.get("kept") == b"yes"  # the same client reconnects to the same port
        assert client.lrange("queue", 0, -1) == [b"a", b"b"]
        assert client.config_get("appendfsync") == {"appendfsync": appendfsync}
        assert client.config_get("save") == {"save": ""}
        client.close()
    assert not server.running
    assert not server.data_dir.exists()


def test_restart_of_a_running_redis_kills_it_first() -> None:
    with RedisServer() as server:
        server.client().set("k", "v")
        server.aof_written()
        server.restart()
        assert server.starts == 2
        assert server.client().get("k") == b"v"


# -- SMTP ---------------------------------------------------------------------------------


def test_smtp_ok_keeps_the_message_and_its_envelope(smtp: FaultySmtp) -> None:
    _send(smtp, "<a.1@acme.example>")
    [mail] = smtp.wait_for(1)
    assert mail.mail_from == "status@acme.example"
    assert mail.rcpt_tos == ("finance@acme.example",)
    assert mail.message_id == "<a.1@acme.example>"
    assert b"Subject: hello" in mail.raw
    assert smtp.message_ids() == ["<a.1@acme.example>"]
    assert smtp.counters.accepted == 1


def test_smtp_tempfail_answers_451_to_data_then_recovers(smtp: FaultySmtp) -> None:
    smtp.mode = "tempfail"
    with pytest.raises(aiosmtplib.SMTPDataError) as refused:
        _send(smtp)
    assert refused.value.code == 451
    assert smtp.messages() == []
    smtp.mode = "ok"
    _send(smtp)
    assert len(smtp.wait_for(1)) == 1
    assert smtp.counters.tempfailed == 1


def test_smtp_tempfail_can_refuse_the_recipient(smtp: FaultySmtp) -> None:
    smtp.tempfail_at = "rcpt"
    smtp.mode = "tempfail"
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as refused:
        _send(smtp)
    assert refused.value.recipients[0].code == 451
    assert smtp.messages() == []


def test_smtp_drop_closes_the_connection_without_keeping(smtp: FaultySmtp) -> None:
    smtp.mode = "drop"
    with pytest.raises(aiosmtplib.SMTPServerDisconnected):
        _send(smtp)
    assert smtp.messages() == []
    assert smtp.counters.dropped == 1
    smtp.mode = "ok"
    _send(smtp)
    assert len(smtp.wait_for(1)) == 1


def test_smtp_drop_after_data_keeps_what_the_client_never_heard_of(smtp: FaultySmtp) -> None:
    smtp.mode = "drop_after_data"
    with pytest.raises(aiosmtplib.SMTPServerDisconnected):
        _send(smtp, "<twice@acme.example>")
    smtp.mode = "ok"
    _send(smtp, "<twice@acme.example>")  # the client's retry
    assert smtp.message_ids() == ["<twice@acme.example>", "<twice@acme.example>"]


def test_smtp_down_refuses_connections_and_comes_back_on_the_same_port(smtp: FaultySmtp) -> None:
    port = smtp.port
    smtp.mode = "down"
    with pytest.raises((aiosmtplib.SMTPConnectError, OSError)):
        _send(smtp, timeout=2.0)
    smtp.mode = "ok"
    assert smtp.port == port
    _send(smtp)
    assert len(smtp.wait_for(1)) == 1


def test_smtp_mode_is_checked(smtp: FaultySmtp) -> None:
    with pytest.raises(ValueError, match="mode is one of"):
        smtp.mode = "flaky"


# -- amends processes ----------------------------------------------------------------------

CONFIG = {
    "sender": "Acme Status <status@acme.example>",
    "defaults": {"cadence": {"sev1": "1h", "sev2": "1h"}, "feedback_after": "1h"},
    "stakeholders": [{"id": "finance", "name": "Finance", "email": "finance@acme.example"}],
}


def test_worker_and_scheduler_are_killed_and_started_again(tmp_path: Path, smtp: FaultySmtp) -> None:
    config = tmp_path / "amends.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    with RedisServer() as redis_server:
        env = {
            "AMENDS_REDIS_URL": redis_server.url,
            "AMENDS_SMTP_URL": smtp.url,
            "AMENDS_SECRET_KEY": "test-secret",
            "AMENDS_CONFIG": str(config),
            "AMENDS_HOME": str(tmp_path / "home"),
        }
        with (
            AmendsProcess.worker(env, tmp_path / "worker.log", threads=2) as worker,
            AmendsProcess.scheduler(env, tmp_path / "scheduler.log") as scheduler,
        ):
            worker.wait_ready()
            scheduler.wait_ready()
            worker.kill()
            scheduler.kill()
            assert worker.returncode == -signal.SIGKILL
            assert scheduler.returncode == -signal.SIGKILL
            worker.start()
            scheduler.start()
            worker.wait_ready()
            scheduler.wait_ready()
            assert worker.starts == 2 and worker.kills == 1 and worker.exits == [-signal.SIGKILL]
            assert worker.log_text().count("amends worker:") == 2

            broker = build_broker(redis_server.url)
            emit(event("opened", incident_id="INC-RS", event_id="rs-1"), broker=broker)
            [mail] = smtp.wait_for(1, timeout_s=20)
            broker.close()
            assert mail.message_id == "<amends.INC-RS.finance@acme.example>"
        assert worker.returncode == 0  # SIGTERM: a clean stop
        assert scheduler.returncode == 0
