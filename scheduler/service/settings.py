"""Settings: one frozen dataclass built from the environment and checked at startup."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from scheduler.core.rate import Rate, parse_rate
from scheduler.errors import SettingsError
from scheduler.mail.dkim_signing import DkimKey
from scheduler.mail.smtp import SmtpSettings
from scheduler.storage.connection import is_cluster_url

__all__ = ["CHANNEL_RATES", "Settings", "bundled_path"]

_PACKAGE = Path(__file__).resolve().parent.parent


def bundled_path(name: str) -> Path:
    """``templates`` or ``config`` as shipped: in the checkout, or inside the installed package."""
    for candidate in (_PACKAGE / "_bundled" / name, _PACKAGE.parent / name):
        if candidate.exists():
            return candidate
    raise SettingsError(f"the bundled {name}/ folder is missing from this installation of amends")


CHANNEL_RATES = {"slack": Rate(1, 1), "teams": Rate(4, 1), "webhook": None}
"""Each chat channel's default rate per destination host (Slack takes about one message a
second per webhook, Teams a few); ``AMENDS_SLACK_RATE`` and the like change one, ``none`` lifts it."""


def _rate_of(env: Mapping[str, str], name: str, default: Rate | None) -> Rate | None:
    text = env.get(name)
    if not text:
        return default
    if text.strip().lower() == "none":
        return None
    try:
        return parse_rate(text)
    except ValueError as e:
        raise SettingsError(f"{name}={text}: {e}" + (", or none" if default else "")) from None


def _connections_of(env: Mapping[str, str]) -> int:
    text = env.get("AMENDS_SMTP_CONNECTIONS") or "8"
    if not text.strip().isdigit() or not 1 <= int(text) <= 1000:
        raise SettingsError(
            f"AMENDS_SMTP_CONNECTIONS={text}: write how many SMTP connections each worker process "
            "may open, a whole number from 1 to 1000 (default 8)"
        )
    return int(text)


_BROKER_SCHEMES = ("amqp://", "amqps://", "redis://", "rediss://", "unix://")
_REDIS_SCHEMES = ("redis://", "rediss://", "unix://", "redis+cluster://", "rediss+cluster://")


@dataclass(frozen=True)
class Settings:
    """Everything amends reads from the environment (see the README's table)."""

    redis_url: str | None = None
    broker_url: str | None = field(default=None, repr=False)
    """AMENDS_BROKER_URL: ``amqp://`` puts the queues on RabbitMQ; unset, they are on the Redis above."""
    smtp: SmtpSettings | None = None
    config_path: Path = Path("config/amends.yaml")
    uses_example_config: bool = False
    """No configuration of the user's was found: ``config_path`` is the shipped example."""
    templates_dir: Path = field(default_factory=lambda: bundled_path("templates"))
    api_token: str | None = field(default=None, repr=False)
    read_token: str | None = field(default=None, repr=False)
    """Reads the log, incidents, opt-outs, /metrics and the review page; cannot post or change."""
    secret_key: str | None = field(default=None, repr=False)
    pagerduty_secret: str | None = field(default=None, repr=False)
    """Verifies PagerDuty webhook signatures; unset, that route answers 401."""
    webhook_secret: str | None = field(default=None, repr=False)
    """Signs ``webhook`` channel deliveries (Standard Webhooks, ``whsec_…``)."""
    data_dir: Path = Path(".amends")
    send_lease_ms: int = 60_000
    timer_lease_ms: int = 30_000
    """A claimed timer the worker has not acked this long after the claim is handed out again."""
    retry_max: int = 8
    """Dramatiq's retries of a message whose actor raised (events and timers retry through
    Redis outages with their own, higher limit)."""
    retry_min_backoff_ms: int = 2_000
    retry_max_backoff_ms: int = 600_000
    retry_window_ms: int = 86_400_000
    """How long a message that meets transient SMTP errors keeps being retried (AMENDS_RETRY_WINDOW)."""
    order_wait_ms: int = 600_000
    """How long an event of an incident whose ``opened`` has not arrived waits for it."""
    worker_threads: int = 8
    dkim: DkimKey | None = None
    smtp_rate: Rate | None = None
    """AMENDS_SMTP_RATE: most emails per second or minute across all workers; None, no limit."""
    smtp_connections: int = 8
    """AMENDS_SMTP_CONNECTIONS: SMTP connections per worker process."""
    channel_rates: Mapping[str, Rate | None] = field(default_factory=lambda: dict(CHANNEL_RATES))
    """Each chat channel's rate per destination host (AMENDS_SLACK_RATE, AMENDS_TEAMS_RATE, AMENDS_WEBHOOK_RATE)."""
    """AMENDS_DKIM_KEY and AMENDS_DKIM_SELECTOR: every email is signed; None, unsigned."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        smtp_url = env.get("AMENDS_SMTP_URL") or None
        redis_url = env.get("AMENDS_REDIS_URL") or None
        if redis_url and not redis_url.startswith(_REDIS_SCHEMES):
            raise SettingsError(
                "AMENDS_REDIS_URL must start with redis://, rediss://, unix:// or redis+cluster:// "
                f"(a Redis Cluster), not {redis_url.split(':')[0]}:"
            )
        broker_url = env.get("AMENDS_BROKER_URL") or None
        if redis_url and is_cluster_url(redis_url) and not broker_url:
            raise SettingsError(
                "AMENDS_REDIS_URL names a Redis Cluster, which cannot hold Dramatiq's queues: set "
                "AMENDS_BROKER_URL to a RabbitMQ (amqp://…) or to a Redis of its own (redis://…)"
            )
        if broker_url and not broker_url.startswith(_BROKER_SCHEMES):
            raise SettingsError(
                "AMENDS_BROKER_URL must start with amqp:// or amqps:// (RabbitMQ) or redis://, rediss:// "
                f"or unix:// (a Redis of its own), not {broker_url.split(':')[0]}:"
            )
        retry_window_ms = cls.retry_window_ms
        if env.get("AMENDS_RETRY_WINDOW"):
            from scheduler.core.durations import parse_duration

            try:
                retry_window_ms = parse_duration(env["AMENDS_RETRY_WINDOW"]) * 1000
            except ValueError as e:
                raise SettingsError(f"AMENDS_RETRY_WINDOW: {e}") from None
        webhook_secret = env.get("AMENDS_WEBHOOK_SECRET") or None
        if webhook_secret is not None:
            from scheduler.mail.signing import check_webhook_secret

            try:
                check_webhook_secret(webhook_secret)
            except ValueError as e:
                raise SettingsError(f"AMENDS_WEBHOOK_SECRET: {e}") from None
        config = env.get("AMENDS_CONFIG")
        templates = env.get("AMENDS_TEMPLATES")
        config_path = Path(config) if config else Path("config/amends.yaml")
        uses_example_config = not config and not config_path.is_file()
        if uses_example_config:
            config_path = bundled_path("config") / "amends.yaml"
        if templates:
            templates_dir = Path(templates)
        elif Path("templates/default").is_dir():
            templates_dir = Path("templates")
        else:
            templates_dir = bundled_path("templates")
        return cls(
            redis_url=redis_url,
            broker_url=broker_url,
            uses_example_config=uses_example_config,
            smtp=SmtpSettings.from_url(smtp_url) if smtp_url else None,
            config_path=config_path,
            templates_dir=templates_dir,
            api_token=env.get("AMENDS_API_TOKEN") or None,
            read_token=env.get("AMENDS_READ_TOKEN") or None,
            secret_key=env.get("AMENDS_SECRET_KEY") or None,
            pagerduty_secret=env.get("AMENDS_PAGERDUTY_SECRET") or None,
            webhook_secret=webhook_secret,
            data_dir=Path(env.get("AMENDS_HOME") or ".amends"),
            retry_window_ms=retry_window_ms,
            dkim=DkimKey.from_env(env.get("AMENDS_DKIM_KEY"), env.get("AMENDS_DKIM_SELECTOR")),
            smtp_rate=_rate_of(env, "AMENDS_SMTP_RATE", None),
            smtp_connections=_connections_of(env),
            channel_rates={c: _rate_of(env, f"AMENDS_{c.upper()}_RATE", r) for c, r in CHANNEL_RATES.items()},
        )

    def with_(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]

    def require_worker(self) -> None:
        """Refuse to run a worker that could not send or sign; name everything missing at once."""
        missing = []
        if self.smtp is None:
            missing.append("AMENDS_SMTP_URL is not set; e.g. AMENDS_SMTP_URL=smtp://localhost:1025")
        if not self.secret_key:
            missing.append(
                "AMENDS_SECRET_KEY is not set; it signs feedback links. "
                "Generate one: python -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
        if not self.config_path.is_file():
            missing.append(
                f"no configuration at {self.config_path}; set AMENDS_CONFIG or create config/amends.yaml"
            )
        if missing:
            raise SettingsError("\n  ".join(["cannot start a worker:", *missing]))

    def resolved_redis_url(self) -> str:
        """The Redis to use: AMENDS_REDIS_URL, or the embedded server under ``data_dir``."""
        if self.redis_url:
            return self.redis_url
        from scheduler.dev.embedded import ensure_embedded_redis

        return ensure_embedded_redis(self.data_dir / "redis")

    def resolved_broker_url(self) -> str:
        """Where the queues are: AMENDS_BROKER_URL, or else the Redis of :meth:`resolved_redis_url`."""
        if self.broker_url:
            return self.broker_url
        if is_cluster_url(store := self.resolved_redis_url()):
            raise SettingsError("a Redis Cluster cannot hold Dramatiq's queues: set AMENDS_BROKER_URL")
        return store
