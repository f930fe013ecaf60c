"""Settings from the environment, checked at startup with messages that say what to do."""

from __future__ import annotations

import pytest

from scheduler.errors import SettingsError
from scheduler.mail.smtp import SmtpSettings
from scheduler.service.settings import Settings


@pytest.mark.parametrize(
    ("url", "host", "port", "tls", "user"),
    [
        ("smtp://localhost:1025", "localhost", 1025, "auto", None),
        ("smtp://mail.example?tls=starttls", "mail.example", 587, "starttls", None),
        ("smtp://u%40x:p%3Ass@mail.example:2525?tls=none", "mail.example", 2525, "none", "u@x"),
        ("smtps://mail.example", "mail.example", 465, "implicit", None),
        ("smtp://mail.example?tls=implicit", "mail.example", 465, "implicit", None),
    ],
)
def test_smtp_urls(url: str, host: str, port: int, tls: str, user: str | None) -> None:
    """AMENDS_SMTP_URL gives host, port (defaulting by TLS mode), TLS mode and credentials."""
    smtp = SmtpSettings.from_url(url)
    assert (smtp.host, smtp.port, smtp.tls, smtp.username) == (host, port, tls, user)


def test_smtp_password_never_shows() -> None:
    """The password appears neither in repr nor in the redacted form used in logs."""
    smtp = SmtpSettings.from_url("smtp://user:hunter2@mail.example:25")
    assert smtp.password == "hunter2"
    assert "hunter2" not in repr(smtp) and "hunter2" not in smtp.redacted()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://mail.example", "must start with smtp://"),
        ("smtp://", "names no host"),
        ("smtp://mail.example:port", "not a number"),
        ("smtp://mail.example?tls=maybe", "tls=maybe is not one of"),
    ],
)
def test_bad_smtp_urls_say_what_is_wrong(url: str, message: str) -> None:
    """A malformed AMENDS_SMTP_URL is refused with the reason."""
    with pytest.raises(SettingsError, match=message):
        SmtpSettings.from_url(url)


def test_worker_settings_say_what_is_missing(tmp_path: object) -> None:
    """A worker without SMTP and a secret key is refused naming both, with what to set."""
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({}).require_worker()
    assert "AMENDS_SMTP_URL is not set" in str(caught.value) and "AMENDS_SECRET_KEY is not set" in str(
        caught.value
    )
    with pytest.raises(SettingsError, match="AMENDS_SECRET_KEY is not set"):
        Settings.from_env({"AMENDS_SMTP_URL": "smtp://localhost:25"}).require_worker()


def test_redis_url_scheme_is_checked() -> None:
    """An AMENDS_REDIS_URL that is not redis://, rediss:// or unix:// is refused at startup."""
    with pytest.raises(SettingsError, match="must start with redis://"):
        Settings.from_env({"AMENDS_REDIS_URL": "foo://x"})


def test_secrets_stay_out_of_repr() -> None:
    """The API token and secret key never appear when settings are printed."""
    settings = Settings.from_env({"AMENDS_API_TOKEN": "tok-123", "AMENDS_SECRET_KEY": "sek-456"})
    assert "tok-123" not in repr(settings) and "sek-456" not in repr(settings)


def test_a_redis_cluster_store_needs_a_broker_of_its_own() -> None:
    """Dramatiq's queues cannot live on a cluster: without AMENDS_BROKER_URL amends says so and
    names the variable; with one, the cluster URL is kept as the store and the broker is that one."""
    with pytest.raises(SettingsError, match="AMENDS_BROKER_URL"):
        Settings.from_env({"AMENDS_REDIS_URL": "redis+cluster://127.0.0.1:7000"})
    with pytest.raises(SettingsError, match="AMENDS_BROKER_URL"):
        Settings(redis_url="redis+cluster://127.0.0.1:7000").resolved_broker_url()
    both = Settings.from_env(
        {
            "AMENDS_REDIS_URL": "redis+cluster://127.0.0.1:7000",
            "AMENDS_BROKER_URL": "amqp://guest:guest@127.0.0.1:5672/",
        }
    )
    assert both.resolved_redis_url() == "redis+cluster://127.0.0.1:7000"
    assert both.resolved_broker_url() == "amqp://guest:guest@127.0.0.1:5672/"
