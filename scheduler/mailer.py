"""Sending email over SMTP with aiosmtplib, reusing connections across messages.

Errors are sorted at this edge: connection trouble and 4xx replies become
:class:`TransientDeliveryError` (worth a retry), 5xx replies
:class:`PermanentDeliveryError`, each carrying the server's reply.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Literal
from urllib.parse import parse_qs, unquote, urlsplit

import aiosmtplib
from aiosmtplib.email import extract_recipients, extract_sender

from scheduler.errors import PermanentDeliveryError, SettingsError, TransientDeliveryError

__all__ = ["SmtpPool", "SmtpSettings"]

logger = logging.getLogger(__name__)

TlsMode = Literal["starttls", "implicit", "none", "auto"]


@dataclass(frozen=True)
class SmtpSettings:
    """Where mail goes: ``smtp://[user:pass@]host:port[?tls=starttls|implicit|none]``."""

    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: TlsMode = "auto"
    timeout_s: float = 30.0

    @classmethod
    def from_url(cls, url: str) -> SmtpSettings:
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps"):
            raise SettingsError(
                f"AMENDS_SMTP_URL must start with smtp:// or smtps://, not {parts.scheme or 'nothing'}://"
            )
        if not parts.hostname:
            raise SettingsError("AMENDS_SMTP_URL names no host; write smtp://host:port")
        try:
            port = parts.port
        except ValueError:
            raise SettingsError("AMENDS_SMTP_URL has a port that is not a number") from None
        tls_values = parse_qs(parts.query).get("tls", ["implicit" if parts.scheme == "smtps" else "auto"])
        tls = tls_values[-1]
        if tls not in ("starttls", "implicit", "none", "auto"):
            raise SettingsError(
                f"AMENDS_SMTP_URL: tls={tls} is not one of starttls, implicit, none "
                "(or auto, the default: STARTTLS when the server offers it)"
            )
        default_port = 465 if tls == "implicit" else 587 if tls == "starttls" else 25
        return cls(
            host=parts.hostname,
            port=port or default_port,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            tls=tls,  # type: ignore[arg-type]
        )

    def redacted(self) -> str:
        user = f"{self.username}:***@" if self.username else ""
        return f"smtp://{user}{self.host}:{self.port}?tls={self.tls}"


def _envelope(message: EmailMessage) -> tuple[str, list[str]]:
    sender = extract_sender(message)
    if sender is None:
        raise PermanentDeliveryError("the message has no From header")
    return sender, extract_recipients(message)


def _wire_bytes(message: EmailMessage) -> bytes:
    """The message exactly as the log keeps it (``message.as_string()``).

    Not ``send_message``: that re-flattens with ``email.policy.SMTP``, which folds and
    RFC 2047-encodes List-Unsubscribe, Message-ID and References, so what was sent would
    differ from what was logged, and real mail clients would not read those headers.
    """
    return message.as_string().encode("utf-8")


def _reply(e: aiosmtplib.SMTPResponseException | aiosmtplib.SMTPResponse) -> str:
    return f"{e.code} {e.message}".strip()


class SmtpPool:
    """Up to ``size`` open SMTP connections shared by the sends of one event loop."""

    def __init__(self, settings: SmtpSettings, size: int = 4) -> None:
        self.settings = settings
        self.size = size
        self.connections_opened = 0
        self._idle: list[aiosmtplib.SMTP] = []
        self._slots: asyncio.Semaphore | None = None

    async def _connect(self) -> aiosmtplib.SMTP:
        s = self.settings
        client = aiosmtplib.SMTP(
            hostname=s.host,
            port=s.port,
            username=s.username,
            password=s.password,
            timeout=s.timeout_s,
            use_tls=s.tls == "implicit",
            start_tls={"starttls": True, "none": False}.get(s.tls),
        )
        await client.connect()
        self.connections_opened += 1
        return client

    async def send(self, message: EmailMessage) -> str:
        """Send one message; return the server's reply to it."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.size)
        async with self._slots:
            client = self._idle.pop() if self._idle else None
            reused = client is not None
            try:
                if client is None or not client.is_connected:
                    reused = False
                    client = await self._fresh_or_fail()
                reply = await self._send_on(client, message)
            except aiosmtplib.SMTPServerDisconnected:
                if not reused:
                    raise TransientDeliveryError(
                        f"the SMTP server {self._where} closed the connection"
                    ) from None
                # an idle connection the server timed out: one fresh try
                client = await self._fresh_or_fail()
                reply = await self._send_on(client, message)
            self._idle.append(client)
            return reply

    @property
    def _where(self) -> str:
        return f"{self.settings.host}:{self.settings.port}"

    async def _fresh_or_fail(self) -> aiosmtplib.SMTP:
        try:
            return await self._connect()
        except (aiosmtplib.SMTPException, OSError) as e:
            raise TransientDeliveryError(f"cannot connect to {self._where}: {e}") from None

    async def _send_on(self, client: aiosmtplib.SMTP, message: EmailMessage) -> str:
        try:
            errors, response = await client.sendmail(*_envelope(message), _wire_bytes(message))
        except aiosmtplib.SMTPRecipientsRefused as e:
            replies = "; ".join(f"{r.recipient}: {_reply(r)}" for r in e.recipients)
            if all(r.code >= 500 for r in e.recipients):
                raise PermanentDeliveryError(f"recipient refused: {replies}") from None
            raise TransientDeliveryError(f"recipient deferred: {replies}") from None
        except aiosmtplib.SMTPServerDisconnected:
            raise
        except aiosmtplib.SMTPResponseException as e:
            await self._discard(client)
            if e.code >= 500:
                raise PermanentDeliveryError(f"refused: {_reply(e)}") from None
            raise TransientDeliveryError(f"deferred: {_reply(e)}") from None
        except (aiosmtplib.SMTPException, OSError) as e:
            await self._discard(client)
            raise TransientDeliveryError(f"cannot send through {self._where}: {e}") from None
        if errors:  # some recipients refused; we send to one, so this is that one
            detail = "; ".join(f"{r}: {_reply(err)}" for r, err in errors.items())
            raise PermanentDeliveryError(f"recipient refused: {detail}")
        return response

    async def _discard(self, client: aiosmtplib.SMTP) -> None:
        try:
            client.close()
        except Exception:
            logger.debug("closing a broken SMTP connection failed", exc_info=True)

    async def close(self) -> None:
        while self._idle:
            client = self._idle.pop()
            try:
                await client.quit()
            except (aiosmtplib.SMTPException, OSError):
                client.close()
