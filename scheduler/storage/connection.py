"""Redis clients: a single server or a Redis Cluster, and patient ones for amends'
long-running processes, which ride out a Redis restart or a cluster failover.

``AMENDS_REDIS_URL=redis+cluster://host:port`` (any node; the others are discovered) gives
a :class:`redis.RedisCluster`; it has the single client's API for everything amends runs,
since every multi-key step stays in one slot (see :mod:`scheduler.storage.keys`).

A worker or scheduler that meets a refused or cut connection retries the command with
backoff for about a minute (``PATIENCE_RETRIES``) before the error reaches the code, so a
restart of ``redis-server`` costs a pause, not a failed message, and the command goes
through within half a second of Redis answering again. A command whose reply was lost may
run twice; every Lua step and transaction amends runs is safe to repeat. The retry policy
sits on the connection pool, since redis-py takes a client's own ``retry`` only when it
builds the pool itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import (
    BusyLoadingError,
    ClusterDownError,
    ConnectionError,
    NoScriptError,
    TimeoutError,
    TryAgainError,
)
from redis.retry import Retry

__all__ = [
    "CLUSTER_SCHEMES",
    "PATIENCE_RETRIES",
    "client_for",
    "connection_lost",
    "execute_scripts",
    "is_cluster_url",
    "patient_client",
    "patient_pool",
    "watched_transaction",
]

CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")

PATIENCE_RETRIES = 150
"""Retries of one command, 50 ms apart at first and at most 0.5 s: about 75 s in all."""

_BACKOFF_CAP_S = 0.5
"""The longest pause between two tries: once Redis is back, a waiting command goes through
within this."""


def _retry() -> Retry:
    return Retry(
        ExponentialWithJitterBackoff(cap=_BACKOFF_CAP_S, base=0.05),
        PATIENCE_RETRIES,
        supported_errors=(ConnectionError, TimeoutError, BusyLoadingError, ClusterDownError, TryAgainError),
    )


_OPTIONS = {"socket_connect_timeout": 5, "socket_timeout": 30, "health_check_interval": 15}


class _PatientPool(redis.ConnectionPool):
    """A pool that also retries handing out a connection: redis-py checks a pooled connection
    (and reconnects it) before the command's own retry begins, so a connection cut while it
    sat in the pool, and its replacement cut too, would otherwise reach the caller."""

    def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        retry: Retry = self.connection_kwargs["retry"]
        return retry.call_with_retry(
            lambda: super(_PatientPool, self).get_connection(*args, **kwargs), _ignore
        )


def _ignore(error: Exception) -> None:
    """Nothing to undo: a connection that failed its check went back to the pool, disconnected."""


def patient_pool(url: str) -> redis.ConnectionPool:
    """A pool whose connections retry each command through about a minute of Redis being away."""
    return _PatientPool.from_url(url, retry=_retry(), **_OPTIONS)


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
    return redis.Redis(connection_pool=patient_pool(url))


CUT_TRANSACTION_TRIES = 5
"""How often :func:`watched_transaction` runs a WATCH transaction whose connection was cut."""


def watched_transaction(
    client: redis.Redis, func: Callable[[Any], Any], *watches: str, **options: Any
) -> Any:
    """``client.transaction(func, *watches, **options)``, run again when its connection is cut.

    redis-py retries no command of a connection that is WATCHing (what was watched is lost
    with it), so a cut mid-transaction would reach the caller however patient the client.
    Running the whole transaction again (its WATCH then waits for Redis like any command of
    a patient client) is safe: each one amends runs reads what it needs after its WATCH, and
    finds its own work done if the cut came after EXEC.
    """
    tries = 1
    while True:
        try:
            return client.transaction(func, *watches, **options)
        except (ConnectionError, TimeoutError):
            if tries >= CUT_TRANSACTION_TRIES:
                raise
            tries += 1


def execute_scripts(pipe: Any, *, raise_on_error: bool = True) -> list[Any]:
    """``pipe.execute()`` for a pipeline of script calls, once more if Redis forgot the scripts.

    redis-py loads a pipeline's scripts before it sends the pipeline, and retries only the
    sending: a Redis restarted in between (its script cache empty) answers NOSCRIPT, which
    would reach the caller as an error. The second execution loads them again.
    """
    stack, scripts = list(pipe.command_stack), set(pipe.scripts)
    try:
        replies: list[Any] = pipe.execute(raise_on_error=raise_on_error)
    except NoScriptError:
        replies = [NoScriptError()]
    if any(isinstance(reply, NoScriptError) for reply in replies):
        pipe.command_stack, pipe.scripts = stack, scripts
        replies = pipe.execute(raise_on_error=raise_on_error)
    return replies


def connection_lost(error: BaseException) -> bool:
    """Whether ``error``, or what caused it (under a ``StorageError`` or a broker's error), is a
    connection to Redis that was refused, cut or timed out, or a Redis still loading: a
    failure that ends once the server answers again, unlike a refused command or a bug."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, (ConnectionError, TimeoutError, ClusterDownError)):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
