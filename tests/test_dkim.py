"""DKIM: with AMENDS_DKIM_KEY and AMENDS_DKIM_SELECTOR every email is signed for its sender's domain,
the signature verifies (dkimpy) on the bytes the SMTP server received, and those bytes are what the log keeps."""

from __future__ import annotations

from pathlib import Path

import dkim
import pytest

from scheduler import emit
from scheduler.errors import SettingsError
from scheduler.mail.dkim_signing import DkimKey
from scheduler.service.settings import Settings
from tests.conftest import App, event

KEYS = Path(__file__).parent / "fixtures" / "dkim"
KEY = KEYS / "test-key.pem"
SELECTOR = "amends2026"


def published(name: bytes, timeout: int = 5) -> bytes:
    """The DNS TXT record a receiver would find: the test key's public half under its selector."""
    assert name == f"{SELECTOR}._domainkey.acme.example.".encode(), name
    return b"v=DKIM1; k=rsa; p=" + (KEYS / "test-key.pub").read_bytes().strip()


def verifies(raw: bytes) -> bool:
    return bool(dkim.verify(raw, dnsfunc=published))


@pytest.mark.real
def test_every_email_is_signed_verifies_as_received_and_is_logged_as_sent(app: App) -> None:
    """With a key set, each received email carries a DKIM-Signature for acme.example that dkimpy verifies, and the log keeps the signed bytes."""
    app.runtime.settings = app.runtime.settings.with_(dkim=DkimKey.from_env(str(KEY), SELECTOR))
    emit(event(), broker=app.broker)
    app.drain()
    received = app.sink.received
    assert len(received) == 3
    for mail in received:
        assert mail.raw.startswith(b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=acme.example;")
        assert verifies(mail.raw)
        signed = mail.message["DKIM-Signature"]
        for header in ("from", "to", "subject", "date", "message-id", "list-unsubscribe"):
            if mail.message[header] is not None:
                assert header in signed.replace(" ", "").split("h=")[1].split(";")[0].split(":")
        (comm,) = [
            c for c in app.runtime.store.communications() if c.message_id == mail.message["Message-ID"]
        ]
        assert app.runtime.store.comm(comm.id).message.encode("utf-8") == mail.raw


@pytest.mark.real
def test_a_signed_email_altered_on_the_way_no_longer_verifies(app: App) -> None:
    """Changing the subject or a word of the body after signing breaks the signature: the check is not vacuous."""
    app.runtime.settings = app.runtime.settings.with_(dkim=DkimKey.from_env(str(KEY), SELECTOR))
    emit(event(), broker=app.broker)
    app.drain()
    raw = app.sink.received[0].raw
    assert verifies(raw)
    assert not verifies(raw.replace(b"Subject: ", b"Subject: FREE ", 1))
    assert not verifies(raw.replace(b"Timeouts", b"Timeout", 1))


@pytest.mark.real
def test_without_a_key_mail_goes_unsigned(app: App) -> None:
    """No AMENDS_DKIM_KEY: no DKIM-Signature header is added."""
    emit(event(), broker=app.broker)
    app.drain()
    assert app.sink.received and all(b"DKIM-Signature" not in m.raw for m in app.sink.received)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"AMENDS_DKIM_KEY": str(KEY)}, "AMENDS_DKIM_SELECTOR is not set: DKIM signing needs both"),
        ({"AMENDS_DKIM_SELECTOR": SELECTOR}, "AMENDS_DKIM_KEY is not set: DKIM signing needs both"),
        (
            {"AMENDS_DKIM_KEY": "/nonexistent/k.pem", "AMENDS_DKIM_SELECTOR": SELECTOR},
            "cannot read the key file",
        ),
        (
            {"AMENDS_DKIM_KEY": str(KEYS / "test-key.pub"), "AMENDS_DKIM_SELECTOR": SELECTOR},
            "is not a PEM RSA private key",
        ),
        ({"AMENDS_DKIM_KEY": str(KEY), "AMENDS_DKIM_SELECTOR": "bad selector!"}, "is not a DNS name"),
    ],
)
def test_a_wrong_dkim_setting_is_refused_at_startup_naming_it(env: dict[str, str], named: str) -> None:
    """Half a DKIM setting, an unreadable or non-key file, or a selector that is no DNS name is refused with what to do."""
    with pytest.raises(SettingsError, match=named):
        Settings.from_env(env)


def test_both_dkim_settings_give_the_key() -> None:
    """Both set: the settings carry the selector and the key, whose text is never shown in their repr."""
    settings = Settings.from_env({"AMENDS_DKIM_KEY": str(KEY), "AMENDS_DKIM_SELECTOR": SELECTOR})
    assert settings.dkim is not None and settings.dkim.selector == SELECTOR
    assert b"PRIVATE KEY" in settings.dkim.pem and "PRIVATE" not in repr(settings)


def test_a_message_with_encoded_headers_is_signed_and_keeps_its_envelope() -> None:
    """A non-ASCII name and a long subject (RFC 2047, folded) are signed as written; the envelope stays sender and recipient."""
    from datetime import UTC, datetime

    from scheduler.mail.dkim_signing import sign_email
    from scheduler.mail.mime import build_email
    from scheduler.mail.render import RenderedMessage

    rendered = RenderedMessage(
        subject="Störung: Zahlungen schlagen fehl " + "x" * 120, text="Grüße\n", html="<p>Grüße</p>"
    )
    message = build_email(
        rendered,
        sender="Acme Status <status@acme.example>",
        recipient="Jürgen Groß <j@globex.example>",
        message_id="<a@acme.example>",
        thread_id=None,
        sent_at=datetime(2026, 11, 26, 14, 3, tzinfo=UTC),
    )
    key = DkimKey.from_env(str(KEY), SELECTOR)
    assert key is not None
    signed = sign_email(message, key)
    assert signed.envelope() == ("status@acme.example", ["j@globex.example"])
    raw = signed.as_string().encode()
    assert raw.endswith(message.as_string().encode()) and verifies(raw)
