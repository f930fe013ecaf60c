"""The real processes, as a user runs them: `amends worker`, `amends scheduler`, `amends demo`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from scheduler import emit
from scheduler.dev.mailsink import MailSink
from scheduler.service.queues import build_broker
from scheduler.storage import keys
from tests.conftest import event

pytestmark = pytest.mark.real

SECONDS_CONFIG: dict[str, Any] = {
    "sender": "Acme Status <status@acme.example>",
    "defaults": {"cadence": {"sev1": "2s", "sev2": "3s"}, "feedback_after": "2s"},
    "stakeholders": [
        {"id": "fast", "name": "Fast", "email": "fast@acme.example", "cadence": {"sev1": "1s"}},
        {"id": "slow", "name": "Slow", "email": "slow@acme.example", "timezone": "America/New_York"},
    ],
}


def _amends(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "scheduler.cli.main", *args],
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


@pytest.fixture
def env(
    redis_url: str, redis_client: redis.Redis, sink: MailSink, tmp_path: Path
) -> Iterator[dict[str, str]]:
    config = tmp_path / "amends.yaml"
    config.write_text(yaml.safe_dump(SECONDS_CONFIG))
    yield {
        **os.environ,
        "AMENDS_REDIS_URL": redis_url,
        "AMENDS_SMTP_URL": sink.url,
        "AMENDS_CONFIG": str(config),
        "AMENDS_SECRET_KEY": "test-secret",
        "AMENDS_HOME": str(tmp_path / "home"),
    }


def _stop(process: subprocess.Popen[str]) -> str:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        out, _ = process.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        out, _ = process.communicate()
    return out


def _waiting(client: redis.Redis) -> set[str]:
    members = [
        m
        for shard in range(keys.SHARDS)
        for index in (keys.timers(shard), keys.timers_leased(shard))
        for m in client.zrange(index, 0, -1)
    ]
    return {m.decode() for m in members}


def _updates(sink: MailSink, address: str) -> int:
    return sum(1 for m in sink.to(address) if "Still working on it" in str(m.message["Subject"]))


def test_killing_the_scheduler_loses_no_timer(env: dict[str, str], sink: MailSink, redis_url: str) -> None:
    """kill -9 of `amends scheduler` and a restart: the updates due meanwhile are still sent, then the rest."""
    worker = _amends("worker", "--threads", "4", env=env)
    scheduler = _amends("scheduler", env=env)
    broker = build_broker(redis_url)
    try:
        emit(event(services=["payments"]), broker=broker)
        sink.wait_for(2, timeout_s=15)
        assert sink.wait_for(4, timeout_s=15) and _updates(sink, "fast@acme.example") >= 1
        scheduler.send_signal(signal.SIGKILL)
        scheduler.wait()
        during = _updates(sink, "fast@acme.example") + _updates(sink, "slow@acme.example")
        # Both threads' next updates wait in Redis while no scheduler runs: armed, or claimed
        # by the killed scheduler and leased (they come back when the lease expires).
        client = redis.Redis.from_url(redis_url)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _waiting(client) != {"u|INC-1|fast", "u|INC-1|slow"}:
            time.sleep(0.05)  # the worker may still be re-arming from a message taken before the kill
        assert _waiting(client) == {"u|INC-1|fast", "u|INC-1|slow"}
        scheduler = _amends("scheduler", env=env)
        slow_before = _updates(sink, "slow@acme.example")
        deadline = time.monotonic() + 45  # a timer leased by the killed scheduler returns after 30 s
        while time.monotonic() < deadline and _updates(sink, "slow@acme.example") < slow_before + 2:
            sink.wait_for(len(sink.received) + 1, timeout_s=1)
        assert _updates(sink, "slow@acme.example") >= slow_before + 2
        assert _updates(sink, "fast@acme.example") + _updates(sink, "slow@acme.example") > during
        emit(event("resolved", at=None), broker=broker)
        deadline = time.monotonic() + 20
        while (
            time.monotonic() < deadline
            and sum("How did we do" in str(m.message["Subject"]) for m in sink.received) < 2
        ):
            sink.wait_for(len(sink.received) + 1, timeout_s=1)
        subjects = [str(m.message["Subject"]) for m in sink.received]
        resolved_at = next(i for i, s in enumerate(subjects) if s.startswith("[Resolved]"))
        after = subjects[resolved_at:]
        assert sum(s.startswith("[Resolved]") for s in after) == 2
        assert sum(s.startswith("How did we do") for s in after) == 2
        assert not any("Still working on it" in s for s in after[2:])
    finally:
        logs = _stop(scheduler) + _stop(worker)
        broker.close()
    assert "Traceback" not in logs, logs


def test_worker_refuses_to_start_without_its_settings(env: dict[str, str]) -> None:
    """`amends worker` without AMENDS_SECRET_KEY exits 2 and says how to make one."""
    process = _amends("worker", env={k: v for k, v in env.items() if k != "AMENDS_SECRET_KEY"})
    out, _ = process.communicate(timeout=60)
    assert process.returncode == 2
    assert "AMENDS_SECRET_KEY is not set" in out


def test_demo_shows_an_incidents_whole_life_and_exits_0(tmp_path: Path) -> None:
    """`amends demo` needs nothing running, shows every kind of message, and exits 0 on its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AMENDS_")}
    env["AMENDS_HOME"] = str(tmp_path / "home")
    result = subprocess.run(
        [sys.executable, "-m", "scheduler.cli.main", "demo"],
        env=env,
        text=True,
        capture_output=True,
        timeout=180,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for kind, count in (("acknowledgment", 3), ("resolution", 3), ("feedback_request", 3)):
        rows = [line for line in out.splitlines() if line[:2] == "20" and f" {kind} " in line]
        assert len(rows) == count, out
    assert "Still working on it" in out and "Update:" in out
    assert " CET " in out and " EST " in out and " JST " in out
    assert (tmp_path / "home" / "demo" / "mail" / "new").is_dir()
    # the demo keeps its data under $AMENDS_HOME/demo; pointing AMENDS_HOME there reviews it
    env["AMENDS_HOME"] = str(tmp_path / "home" / "demo")
    log = subprocess.run(
        [sys.executable, "-m", "scheduler.cli.main", "log", "--kind", "resolution"],
        env=env,
        text=True,
        capture_output=True,
        timeout=60,
        cwd=tmp_path,
        check=True,
    )
    assert log.stdout.count(" resolution ") == 3
    from scheduler.dev.embedded import stop_embedded_redis

    stop_embedded_redis(tmp_path / "home" / "demo" / "redis")
