"""What every ``amends`` command shares: exit statuses, settings, the store, and stopping on signals."""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scheduler.errors import ConfigError, SettingsError
from scheduler.service.settings import Settings

if TYPE_CHECKING:
    from scheduler.core.config import Config
    from scheduler.storage.redis_store import RedisStore

__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "config_or_none",
    "config_path",
    "load_settings",
    "redis_store",
    "redis_warning",
    "refuse",
    "require_own_config",
    "stop_on_signals",
]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def refuse(command: str, message: str, status: int = EXIT_USAGE) -> int:
    """Print ``amends COMMAND: MESSAGE`` on stderr and return ``status`` (by default: bad usage)."""
    print(f"amends {command}: {message}", file=sys.stderr)
    return status


def load_settings(*, needs_config: bool = False) -> Settings:
    """The settings from the environment; with ``needs_config``, say so when the shipped example is used."""
    settings = Settings.from_env()
    if needs_config and settings.uses_example_config:
        print(
            f"amends: no config/amends.yaml here and AMENDS_CONFIG is not set; using the shipped example "
            f"{settings.config_path}",
            file=sys.stderr,
        )
    return settings


def require_own_config(settings: Settings, command: str) -> None:
    """Long-running processes must not quietly run on the shipped example."""
    if settings.uses_example_config:
        raise SettingsError(
            f"{command} needs a configuration: set AMENDS_CONFIG or create config/amends.yaml "
            f"(the shipped example to start from: {settings.config_path})"
        )


def redis_warning(settings: Settings, command: str) -> None:
    """Warn, without stopping, when Redis cannot be reached yet."""
    import redis

    from scheduler.storage.connection import client_for

    try:
        client_for(settings.resolved_redis_url(), socket_connect_timeout=2).ping()
    except redis.RedisError as e:
        print(
            f"amends {command}: cannot reach Redis yet ({e}); it will keep trying",
            file=sys.stderr,
            flush=True,
        )


def redis_store(settings: Settings) -> RedisStore:
    from scheduler.storage.connection import client_for
    from scheduler.storage.redis_store import RedisStore

    return RedisStore(client_for(settings.resolved_redis_url()))


def config_path(settings: Settings, explicit: str | None) -> Path:
    """The configuration file given on the command line, or else the one of the settings."""
    if explicit:
        return Path(explicit)
    return settings.config_path


def config_or_none(settings: Settings) -> Config | None:
    from scheduler.core.config import load_config

    try:
        return load_config(settings.config_path)
    except ConfigError:
        return None


def stop_on_signals() -> threading.Event:
    """An event set by Ctrl-C (SIGINT) or SIGTERM."""
    stop = threading.Event()

    def handler(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop
