"""Redis clients: a single server or a Redis Cluster, and patient ones for amends'
long-running processes, which ride out a Redis restart or a cluster failover.

``AMENDS_REDIS_URL=redis+cluster://host:port`` (any node; the others are discovered) gives
a :class:`redis.RedisCluster`; it has the single client's API for everything amends runs,
since every multi-key step stays in one slot (see :mod:`scheduler.storage.keys`).

A worker or scheduler that meets a refused connection retries the command with backoff
for about a minute (``PATIENCE``) before the error reaches the code, so a restart of
``redis-server`` costs a pause, not a failed message. A command whose reply was lost may
run twice; every Lua step and transaction amends runs is safe to repeat.
"""

from __future__ import annotations

from typing import Any, cast

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import BusyLoadingError, ClusterDownError, ConnectionError, TimeoutError, TryAgainError
from redis.retry import Retry

__all__ = [
    "CLUSTER_SCHEMES",
    "PATIENCE_RETRIES",
    "client_for",
    "is_cluster_url",
    "patient_client",
    "patient_pool",
]

CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")

PATIENCE_RETRIES = 40
"""Retries of one command, 50 ms apart at first and at most 2 s: about 75 s in all."""


def _retry() -> Retry:
    return Retry(
        ExponentialWithJitterBackoff(cap=2.0, base=0.05),
        PATIENCE_RETRIES,
        supported_errors=(ConnectionError, TimeoutError, BusyLoadingError, ClusterDownError, TryAgainError),
    )


_OPTIONS = {"socket_connect_timeout": 5, "socket_timeout": 30, "health_check_interval": 15}


def patient_pool(url: str) -> redis.ConnectionPool:
    return redis.ConnectionPool.from_url(url, **_OPTIONS)


def is_cluster_url(url: str) -> bool:
    return url.partition("://")[0] in CLUSTER_SCHEMES


def client_for(url: str, *, patient: bool = False, **options: Any) -> redis.Redis:
    """A client for ``url``: a Redis Cluster for ``redis+cluster://``, else one server.

    ``patient``: retry a command through about a minute of Redis being away (a restart, a
    failover). The cluster client is typed as the single one: amends uses only what both have.
    """
    if is_cluster_url(url):
        scheme, _, rest = url.partition("://")
        if patient:
            options = {**_OPTIONS, **options, "retry": _retry()}
        cluster = redis.RedisCluster.from_url(f"{scheme.removesuffix('+cluster')}://{rest}", **options)
        return cast(redis.Redis, cluster)
    if patient:
        return patient_client(url)
    return redis.Redis.from_url(url, **options)


def patient_client(url: str) -> redis.Redis:
    """A client that retries a command through about a minute of Redis being away."""
    if is_cluster_url(url):
        return client_for(url, patient=True)
    return redis.Redis(connection_pool=patient_pool(url), retry=_retry())
