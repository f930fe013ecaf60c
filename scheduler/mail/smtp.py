"""Sending email over SMTP with aiosmtplib, reusing connections across messages.

Errors are sorted at this edge: connection trouble and 4xx replies become
:class:`TransientDeliveryError` (worth a retry), 5xx replies
:class:`PermanentDeliveryError`, each carrying the server's reply; a 5xx to RCPT or DATA is
an :class:`UndeliverableError`, which marks the address.
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

from scheduler.errors import (
    PermanentDeliveryError,
    SettingsError,
    TransientDeliveryError,
    UndeliverableError,
)
from scheduler.mail.mime import ComposedEmail

__all__ = ["SmtpPool", "SmtpSettings"]

logger = logging.getLogger(__name__)

TlsMode = Literal["starttls", "implicit", "none", "auto"]

_THROTTLING = (421, 454)
"""Replies that ask the sender to slow down: the send rate pauses (:mod:`scheduler.core.rate`)."""


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
    known = message.envelope() if isinstance(message, ComposedEmail) else None
    if known is not None:  # what extract_sender and extract_recipients would find, unparsed
        return known
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


class _Dropped(Exception):
    """The connection went away (closed, reset, or a 421 reply) before the message was taken."""


class SmtpPool:
    """Up to ``size`` open SMTP connections shared by the sends of one event loop.

    Whatever a send ends with, its connection is either back in the pool, healthy, or
    closed: a send never leaves a socket open behind it.
    """

    def __init__(self, settings: SmtpSettings, size: int = 4) -> None:
        self.settings = settings
        self.size = size
        self.connections_opened = 0
        self._idle: list[aiosmtplib.SMTP] = []
        self._open: set[aiosmtplib.SMTP] = set()
        self._slots: asyncio.Semaphore | None = None

    @property
    def open_connections(self) -> int:
        """Connections this pool opened that are open now, idle or carrying a send."""
        return sum(1 for client in self._open if client.is_connected)

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
        await client.connect()  # closes its own socket when it fails
        self.connections_opened += 1
        self._open.add(client)
        return client

    async def send(self, message: EmailMessage) -> str:
        """Send one message; return the server's reply to it.

        Raises :class:`TransientDeliveryError` (connection refused, dropped or timed
        out, a 4xx reply) or :class:`PermanentDeliveryError` (a 5xx reply, a malformed
        message), each naming the server's reply; nothing else.
        """
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.size)
        async with self._slots:
            client = self._checkout()
            if client is not None:
                try:
                    return await self._attempt(client, message)
                except _Dropped:
                    pass  # an idle connection the server has since closed: one fresh try
            client = await self._fresh_or_fail()
            try:
                return await self._attempt(client, message)
            except _Dropped as e:
                raise TransientDeliveryError(
                    f"the SMTP server {self._where} closed the connection: {e}",
                    throttled=str(e).startswith("421"),
                ) from None

    @property
    def _where(self) -> str:
        return f"{self.settings.host}:{self.settings.port}"

    def _checkout(self) -> aiosmtplib.SMTP | None:
        while self._idle:
            client = self._idle.pop()
            if client.is_connected:
                return client
            self._discard(client)
        return None

    async def _fresh_or_fail(self) -> aiosmtplib.SMTP:
        try:
            return await self._connect()
        except aiosmtplib.SMTPResponseException as e:
            raise TransientDeliveryError(
                f"cannot connect to {self._where}: {_reply(e)}", throttled=e.code in _THROTTLING
            ) from None
        except aiosmtplib.SMTPTimeoutError:
            raise TransientDeliveryError(
                f"cannot connect to {self._where}: no answer within {self.settings.timeout_s:g} s"
            ) from None
        except (aiosmtplib.SMTPException, OSError) as e:
            raise TransientDeliveryError(f"cannot connect to {self._where}: {e}") from None

    async def _attempt(self, client: aiosmtplib.SMTP, message: EmailMessage) -> str:
        """Send on ``client``, then pool it again if it is still sound, else close it.

        Raises :class:`_Dropped` when the connection went away, for the caller to decide
        whether a fresh connection is worth one more try.
        """
        reusable = False
        try:
            errors, response = await self._send_on(client, message)
            reusable = True
        except aiosmtplib.SMTPRecipientsRefused as e:
            # aiosmtplib has reset the envelope (RSET): the connection can carry the next one
            reusable = True
            replies = "; ".join(f"{r.recipient}: {_reply(r)}" for r in e.recipients)
            if all(r.code >= 500 for r in e.recipients):
                raise UndeliverableError(f"recipient refused: {replies}") from None
            throttled = any(r.code in _THROTTLING for r in e.recipients)
            raise TransientDeliveryError(f"recipient deferred: {replies}", throttled=throttled) from None
        except aiosmtplib.SMTPServerDisconnected as e:
            raise _Dropped(str(e)) from None
        except aiosmtplib.SMTPResponseException as e:
            if e.code == 421:  # the server is closing this connection
                raise _Dropped(_reply(e)) from None
            reusable = True  # a refused MAIL or DATA; the envelope was reset
            if e.code >= 500 and isinstance(e, aiosmtplib.SMTPDataError):
                raise UndeliverableError(f"message refused: {_reply(e)}") from None
            if e.code >= 500:
                raise PermanentDeliveryError(f"refused: {_reply(e)}") from None
            raise TransientDeliveryError(f"deferred: {_reply(e)}", throttled=e.code in _THROTTLING) from None
        except aiosmtplib.SMTPTimeoutError:
            raise TransientDeliveryError(
                f"the SMTP server {self._where} did not answer within {self.settings.timeout_s:g} s"
            ) from None
        except (aiosmtplib.SMTPException, OSError) as e:
            raise TransientDeliveryError(f"cannot send through {self._where}: {e}") from None
        except ValueError as e:  # an address that cannot go on an SMTP command line
            raise PermanentDeliveryError(f"cannot send this message: {e}") from None
        finally:
            if reusable and client.is_connected:
                self._idle.append(client)
            else:
                self._discard(client)
        if errors:  # some recipients refused; we send to one, so this is that one
            detail = "; ".join(f"{r}: {_reply(err)}" for r, err in errors.items())
            raise UndeliverableError(f"recipient refused: {detail}")
        return response

    async def _send_on(
        self, client: aiosmtplib.SMTP, message: EmailMessage
    ) -> tuple[dict[str, aiosmtplib.SMTPResponse], str]:
        """Hand ``message`` to the server on ``client`` as the very bytes logged; aiosmtplib's errors pass through."""
        return await client.sendmail(*_envelope(message), _wire_bytes(message))

    def _discard(self, client: aiosmtplib.SMTP) -> None:
        self._open.discard(client)
        try:
            client.close()
        except Exception:
            logger.debug("closing a broken SMTP connection failed", exc_info=True)

    async def close(self) -> None:
        """Say QUIT on every idle connection and close it."""
        while self._idle:
            client = self._idle.pop()
            try:
                await client.quit()
            except (aiosmtplib.SMTPException, OSError):
                pass
            finally:
                self._discard(client)
