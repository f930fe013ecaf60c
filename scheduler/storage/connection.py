"""Redis clients for amends' long-running processes: they ride out a Redis restart.

A worker or scheduler that meets a refused connection retries the command with backoff
for about a minute (``PATIENCE``) before the error reaches the code, so a restart of
``redis-server`` costs a pause, not a failed message. A command whose reply was lost may
run twice; every Lua step and transaction amends runs is safe to repeat.
"""

from __future__ import annotations

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import BusyLoadingError, ConnectionError, TimeoutError
from redis.retry import Retry

__all__ = ["PATIENCE_RETRIES", "patient_client", "patient_pool"]

PATIENCE_RETRIES = 40
"""Retries of one command, 50 ms apart at first and at most 2 s: about 75 s in all."""


def _retry() -> Retry:
    return Retry(
        ExponentialWithJitterBackoff(cap=2.0, base=0.05),
        PATIENCE_RETRIES,
        supported_errors=(ConnectionError, TimeoutError, BusyLoadingError),
    )


_OPTIONS = {"socket_connect_timeout": 5, "socket_timeout": 30, "health_check_interval": 15}


def patient_pool(url: str) -> redis.ConnectionPool:
    return redis.ConnectionPool.from_url(url, **_OPTIONS)


def patient_client(url: str) -> redis.Redis:
    """A client that retries a command through about a minute of Redis being away."""
    return redis.Redis(connection_pool=patient_pool(url), retry=_retry())
