"""SmtpPool against a real aiosmtpd server that drops, stalls, refuses and restarts on cue.

The server counts TCP connections itself, so the tests see leaks the way a mail server
would, not only through the pool's own counters.
"""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any, TypeVar

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP

from scheduler.errors import PermanentDeliveryError, TransientDeliveryError, UndeliverableError
from scheduler.mail.smtp import SmtpPool, SmtpSettings

pytestmark = pytest.mark.real

T = TypeVar("T")

TIMEOUT_S = 0.5
STALL_S = 30.0  # far beyond TIMEOUT_S; a closed connection cancels it


@dataclass(frozen=True)
class Received:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    subject: str


class _CountingSMTP(SMTP):
    """aiosmtpd's protocol, telling the server when a connection opens and closes."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.event_handler.opened(self)

    def connection_lost(self, error: Exception | None) -> None:
        super().connection_lost(error)
        self.event_handler.closed(self)


class _Controller(Controller):
    def factory(self) -> SMTP:
        return _CountingSMTP(self.handler, **self.SMTP_kwargs)


class FaultyServer:
    """A real SMTP server on a fixed local port; ``fail(command, *actions)`` queues faults.

    An action answers one ``EHLO``/``MAIL``/``RCPT``/``DATA`` instead of the normal
    reply: ``"drop"`` cuts the connection, ``"hangup"`` answers and then closes it,
    ``"stall"`` never answers, any other string is the reply sent (``"451 later"``).
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.received: list[Received] = []
        self.connections_made = 0
        self._open: set[SMTP] = set()
        self._faults: dict[str, list[str]] = {}
        self._cond = threading.Condition()
        self._controller: _Controller | None = None

    # -- the test's side ------------------------------------------------------------

    def start(self) -> FaultyServer:
        self._controller = _Controller(self, hostname="127.0.0.1", port=self.port)
        self._controller.start()
        # start() opens and closes a probe connection of its own: do not count it
        self.wait_until(lambda: not self._open)
        with self._cond:
            self.connections_made = 0
        return self

    def stop(self) -> None:
        """Stop like a killed process would: every open connection is cut, then the listener."""
        assert self._controller is not None
        loop = self._controller.loop
        with self._cond:
            for protocol in list(self._open):
                if protocol.transport is not None:
                    loop.call_soon_threadsafe(protocol.transport.abort)
        self.wait_until(lambda: not self._open)
        self._controller.stop()
        self._controller = None

    def fail(self, command: str, *actions: str) -> None:
        with self._cond:
            self._faults.setdefault(command, []).extend(actions)

    @property
    def is_running(self) -> bool:
        return self._controller is not None

    def wait_until(self, condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
        with self._cond:
            assert self._cond.wait_for(condition, timeout=timeout_s), "the server never got there"

    def wait_closed(self, open_left: int = 0) -> None:
        """Wait until the server has seen every connection but ``open_left`` close."""
        self.wait_until(lambda: len(self._open) == open_left)

    # -- aiosmtpd's side --------------------------------------------------------------

    def opened(self, protocol: SMTP) -> None:
        with self._cond:
            self.connections_made += 1
            self._open.add(protocol)
            self._cond.notify_all()

    def closed(self, protocol: SMTP) -> None:
        with self._cond:
            self._open.discard(protocol)
            self._cond.notify_all()

    async def _fault(self, command: str, server: SMTP) -> str | None:
        with self._cond:
            actions = self._faults.get(command)
            action = actions.pop(0) if actions else None
        if action == "drop":
            server.transport.abort()
            return "421 never sent"
        if action == "hangup":
            asyncio.get_running_loop().call_soon(server.transport.close)
            return None
        if action == "stall":
            await asyncio.sleep(STALL_S)
        return action

    async def handle_EHLO(
        self, server: SMTP, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        reply = await self._fault("EHLO", server)
        session.host_name = hostname
        return [reply] if reply else responses

    async def handle_MAIL(
        self, server: SMTP, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        reply = await self._fault("MAIL", server)
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return reply or "250 OK"

    async def handle_RCPT(self, server: SMTP, session: Any, envelope: Any, address: str, options: Any) -> str:
        reply = await self._fault("RCPT", server)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Any, envelope: Any) -> str:
        reply = await self._fault("DATA", server)
        if reply:
            return reply
        subject = next(
            (
                line.split(":", 1)[1].strip()
                for line in envelope.content.decode().splitlines()
                if line.startswith("Subject:")
            ),
            "",
        )
        with self._cond:
            self.received.append(Received(envelope.mail_from, tuple(envelope.rcpt_tos), subject))
        return "250 2.0.0 queued as 1234"


@pytest.fixture
def server() -> Iterator[FaultyServer]:
    """A fault-injecting aiosmtpd server on a free local port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    running = FaultyServer(port).start()
    yield running
    if running.is_running:
        running.stop()


def pool_for(server: FaultyServer, size: int = 4) -> SmtpPool:
    return SmtpPool(SmtpSettings("127.0.0.1", server.port, tls="none", timeout_s=TIMEOUT_S), size=size)


def mail(to: str = "finance@acme.example", subject: str = "Update 1") -> EmailMessage:
    message = EmailMessage()
    message["From"] = "status@acme.example"
    message["To"] = to
    message["Subject"] = subject
    message.set_content("Still working on it.")
    return message


def run(body: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return asyncio.run(body())


async def settled(server: FaultyServer, open_left: int = 0) -> None:
    """Wait, without blocking the loop, until the server sees exactly ``open_left`` connections open."""
    await asyncio.to_thread(server.wait_closed, open_left)


def test_a_connection_dropped_twice_in_a_row_is_transient(server: FaultyServer) -> None:
    """A pooled connection that drops, then a fresh one that drops too, raise TransientDeliveryError."""
    pool = pool_for(server)

    async def scenario() -> None:
        await pool.send(mail(subject="first"))
        server.fail("MAIL", "drop", "drop")
        with pytest.raises(TransientDeliveryError, match="closed the connection"):
            await pool.send(mail(subject="second"))
        await settled(server, 0)
        assert pool.open_connections == 0
        await pool.send(mail(subject="third"))
        await settled(server, 1)
        assert pool.open_connections == 1
        await pool.close()

    run(scenario)
    assert [m.subject for m in server.received] == ["first", "third"]
    assert server.connections_made == 3  # the pooled one, the fresh one that dropped too, the next


def test_an_idle_connection_the_server_dropped_is_replaced_unseen(server: FaultyServer) -> None:
    """A pooled connection the server cut, or answered 421 on, is replaced by one fresh try the caller never sees."""
    pool = pool_for(server)

    async def scenario() -> None:
        await pool.send(mail(subject="first"))
        server.fail("MAIL", "drop")
        await pool.send(mail(subject="second"))
        server.fail("MAIL", "421 4.4.2 idle too long")
        await pool.send(mail(subject="third"))
        await settled(server, 1)
        assert pool.open_connections == 1
        await pool.close()

    run(scenario)
    assert [m.subject for m in server.received] == ["first", "second", "third"]
    assert server.connections_made == 3


def test_a_fresh_connection_answering_421_is_transient_and_closed(server: FaultyServer) -> None:
    """A 421 on a fresh connection is transient with the reply, and that connection is closed."""
    pool = pool_for(server)

    async def scenario() -> None:
        server.fail("MAIL", "421 4.3.2 shutting down")
        with pytest.raises(TransientDeliveryError, match=re.escape("421 4.3.2 shutting down")):
            await pool.send(mail())
        await settled(server, 0)
        assert pool.open_connections == 0

    run(scenario)
    assert server.connections_made == 1
    assert server.received == []


def test_451_is_transient_with_the_reply_and_keeps_the_connection(server: FaultyServer) -> None:
    """A 451 to DATA is transient with the server's reply; the reset connection carries the next message."""
    pool = pool_for(server)

    async def scenario() -> None:
        server.fail("DATA", "451 4.3.0 try again later")
        with pytest.raises(TransientDeliveryError, match=re.escape("451 4.3.0 try again later")):
            await pool.send(mail(subject="deferred"))
        await pool.send(mail(subject="next"))
        await pool.close()

    run(scenario)
    assert [m.subject for m in server.received] == ["next"]
    assert server.connections_made == 1


def test_550_recipient_is_permanent_and_the_connection_is_reused(server: FaultyServer) -> None:
    """A recipient refused with 550 is permanent with the reply, and the next message uses the same connection."""
    pool = pool_for(server)

    async def scenario() -> None:
        server.fail("RCPT", "550 5.1.1 no such user")
        with pytest.raises(UndeliverableError, match=re.escape("550 5.1.1 no such user")):
            await pool.send(mail(to="nobody@acme.example"))
        await pool.send(mail(to="finance@acme.example"))
        await settled(server, 1)
        await pool.close()

    run(scenario)
    assert [m.rcpt_tos for m in server.received] == [("finance@acme.example",)]
    assert server.connections_made == 1


@pytest.mark.parametrize(
    ("command", "reply", "undeliverable"),
    [
        ("RCPT", "550 5.1.1 no such user", True),
        ("RCPT", "551 user not local", True),
        ("DATA", "554 5.7.1 message refused", True),
        ("MAIL", "553 5.7.1 sender not allowed", False),
        ("MAIL", "550 5.7.0 relaying denied", False),
    ],
)
def test_only_a_5xx_to_rcpt_or_data_names_the_address_undeliverable(
    server: FaultyServer, command: str, reply: str, undeliverable: bool
) -> None:
    """A 5xx to RCPT or DATA is an UndeliverableError; a 5xx to MAIL (our sender refused) is permanent but says nothing of the recipient."""
    pool = pool_for(server)

    async def scenario() -> None:
        server.fail(command, reply)
        with pytest.raises(PermanentDeliveryError, match=re.escape(reply)) as raised:
            await pool.send(mail(to="nobody@acme.example"))
        assert isinstance(raised.value, UndeliverableError) is undeliverable
        await pool.close()

    run(scenario)


def test_refused_recipients_do_not_leak_connections(server: FaultyServer) -> None:
    """Sends whose recipient is refused, with 5xx or 4xx, leave no connection open outside the pool."""
    pool = pool_for(server, size=2)

    async def scenario() -> None:
        for _ in range(3):
            server.fail("RCPT", "550 5.1.1 no such user", "452 4.2.2 over quota")
            outcomes = await asyncio.gather(
                pool.send(mail(to="a@acme.example")),
                pool.send(mail(to="b@acme.example")),
                return_exceptions=True,
            )
            kinds = sorted(type(o).__name__ for o in outcomes)
            assert kinds == ["TransientDeliveryError", "UndeliverableError"]
        await settled(server, 2)
        assert pool.open_connections == 2
        await pool.close()
        await settled(server, 0)
        assert pool.open_connections == 0

    run(scenario)
    assert server.connections_made == 2
    assert server.received == []


def test_the_pool_recovers_after_the_server_restarts(server: FaultyServer) -> None:
    """While the server is down sends are transient; once it is back on the same port the next send works."""
    pool = pool_for(server)

    async def scenario() -> None:
        await pool.send(mail(subject="before"))
        await asyncio.to_thread(server.stop)
        with pytest.raises(TransientDeliveryError, match="cannot connect"):
            await pool.send(mail(subject="while down"))
        assert pool.open_connections == 0
        await asyncio.to_thread(server.start)
        await pool.send(mail(subject="after"))
        await settled(server, 1)
        assert pool.open_connections == 1
        await pool.close()

    run(scenario)
    assert [m.subject for m in server.received] == ["before", "after"]
    assert server.connections_made == 1  # counted since the restart


def test_a_stalled_server_is_transient_within_the_timeout_and_closed(server: FaultyServer) -> None:
    """A server that stops answering gives a transient error after about the timeout, and that connection is closed."""
    pool = pool_for(server)

    async def scenario() -> float:
        await pool.send(mail(subject="first"))
        server.fail("MAIL", "stall")
        started = time.monotonic()
        with pytest.raises(TransientDeliveryError, match=re.escape(f"did not answer within {TIMEOUT_S:g} s")):
            await pool.send(mail(subject="stalled"))
        elapsed = time.monotonic() - started
        await settled(server, 0)
        assert pool.open_connections == 0
        return elapsed

    elapsed = run(scenario)
    assert TIMEOUT_S <= elapsed < TIMEOUT_S + 2.0
    assert server.connections_made == 1
    assert [m.subject for m in server.received] == ["first"]


def test_a_server_hanging_up_after_ehlo_is_transient(server: FaultyServer) -> None:
    """A server that answers EHLO and then closes gives a transient error and leaves nothing open."""
    pool = pool_for(server)

    async def scenario() -> None:
        server.fail("EHLO", "hangup")
        with pytest.raises(TransientDeliveryError, match="closed the connection"):
            await pool.send(mail())
        await settled(server, 0)
        assert pool.open_connections == 0

    run(scenario)
    assert server.received == []


def test_a_refused_connection_is_transient(server: FaultyServer) -> None:
    """Nothing listening on the port is a transient error naming the server, not an OSError."""
    server.stop()
    pool = pool_for(server)

    async def scenario() -> None:
        with pytest.raises(
            TransientDeliveryError, match=re.escape(f"cannot connect to 127.0.0.1:{server.port}")
        ):
            await pool.send(mail())
        assert pool.open_connections == 0

    run(scenario)


def test_sequential_sends_share_one_connection(server: FaultyServer) -> None:
    """Twenty-four sends one after another go over a single connection, which close() closes."""
    pool = pool_for(server)

    async def scenario() -> None:
        for n in range(24):
            reply = await pool.send(mail(subject=f"Update {n}"))
            assert "queued as 1234" in reply
        await pool.close()
        await settled(server, 0)
        assert pool.open_connections == 0

    run(scenario)
    assert [m.subject for m in server.received] == [f"Update {n}" for n in range(24)]
    assert server.connections_made == 1
    assert pool.connections_opened == 1


def test_concurrent_sends_open_at_most_size_connections(server: FaultyServer) -> None:
    """Sixteen sends at once open no more connections than the pool's size, all of them pooled."""
    pool = pool_for(server, size=3)

    async def scenario() -> None:
        await asyncio.gather(*(pool.send(mail(subject=f"Update {n}")) for n in range(16)))
        await settled(server, pool.connections_opened)
        assert pool.open_connections == pool.connections_opened
        await pool.close()

    run(scenario)
    assert len(server.received) == 16
    assert 1 <= server.connections_made <= 3
