"""A real local SMTP server (aiosmtpd) that keeps what it receives, for the demo, tests and
``amends mailsink``.

Messages are kept in memory and, with ``maildir``, written to a Maildir folder (created
with its ``cur``, ``new`` and ``tmp``) so that a person can open them afterwards with any
mail client that reads Maildir (mutt -f DIR, or Thunderbird).
"""

from __future__ import annotations

import mailbox
import threading
from collections.abc import Callable
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

__all__ = ["MailSink", "ReceivedMail"]


@dataclass(frozen=True)
class ReceivedMail:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    raw: bytes

    @property
    def message(self) -> EmailMessage:
        parsed = message_from_bytes(self.raw, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed

    def part(self, subtype: str) -> str:
        body = self.message.get_body(preferencelist=(subtype,))
        return str(body.get_content()) if body is not None else ""


class _Handler:
    def __init__(self, sink: MailSink) -> None:
        self.sink = sink

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        self.sink.sessions += 1
        session.host_name = hostname
        return responses

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        reply = self.sink.rcpt_reply(address) if self.sink.rcpt_reply else None
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        reply = self.sink.data_reply() if self.sink.data_reply else None
        if reply:
            return reply
        mail = ReceivedMail(envelope.mail_from, tuple(envelope.rcpt_tos), bytes(envelope.content))
        self.sink.keep(mail)
        return "250 Message accepted for delivery"


class MailSink:
    """An SMTP server on ``host:port`` (port 0 picks a free one) keeping every message.

    ``rcpt_reply(address)`` and ``data_reply()`` may return an SMTP reply such as
    ``"451 try again later"`` to refuse, or None to accept: that is how tests make the
    server fail the way real ones do.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        maildir: Path | None = None,
        *,
        remember: bool = True,
        on_receive: Callable[[ReceivedMail], None] | None = None,
    ) -> None:
        self.remember = remember
        """Keep every message in ``received`` (tests); a long-running sink keeps only the Maildir."""
        self.on_receive = on_receive
        self.received: list[ReceivedMail] = []
        self.sessions = 0
        self.rcpt_reply: Callable[[str], str | None] | None = None
        self.data_reply: Callable[[], str | None] | None = None
        self._lock = threading.Condition()
        self._maildir = mailbox.Maildir(str(maildir), create=True) if maildir else None
        self._controller = Controller(_Handler(self), hostname=host, port=port or _free_port(host))

    @property
    def url(self) -> str:
        return f"smtp://{self._controller.hostname}:{self._controller.port}?tls=none"

    @property
    def port(self) -> int:
        return int(self._controller.port)

    def start(self) -> MailSink:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    def keep(self, mail: ReceivedMail) -> None:
        with self._lock:
            if self.remember:
                self.received.append(mail)
            if self._maildir is not None:
                self._maildir.add(mail.raw)
            self._lock.notify_all()
        if self.on_receive is not None:
            self.on_receive(mail)

    def wait_for(self, count: int, timeout_s: float = 10.0) -> list[ReceivedMail]:
        """Block until ``count`` messages arrived (or the timeout passed); return them all."""
        with self._lock:
            self._lock.wait_for(lambda: len(self.received) >= count, timeout=timeout_s)
            return list(self.received)

    def to(self, address: str) -> list[ReceivedMail]:
        with self._lock:
            return [m for m in self.received if address in m.rcpt_tos]


def _free_port(host: str) -> int:
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
