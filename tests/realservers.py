"""Real services that tests and benchmarks can break on purpose.

- :class:`RedisServer`: a private ``redis-server`` (from PATH) on a free loopback port with
  its own folder and an append-only file; ``kill()`` (SIGKILL) and ``restart()`` on the same
  port and folder, so what the AOF holds comes back.
- :class:`AmendsProcess`: ``amends worker`` / ``amends scheduler`` as a subprocess logging
  to a file; ``kill()`` (SIGKILL) and ``start()`` again.
- :class:`RedisClusterServers`: a private Redis Cluster whose masters can be SIGKILLed.
- :class:`ReplyLosingProxy`: a TCP proxy in front of a server that lets one request through
  and cuts the connection before its reply: the command ran, the client never heard.
- :class:`FaultySmtp`: a real aiosmtpd server in a background thread that keeps what it
  receives and fails on demand: ``mode = "ok" | "tempfail" | "drop" | "drop_after_data" | "down"``.

Each class is a context manager that stops what it started. Only loopback addresses are used.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import redis
import yaml
from aiosmtpd.controller import Controller

from scheduler.dev.mailsink import ReceivedMail

__all__ = [
    "MODES",
    "REPO_ROOT",
    "AmendsProcess",
    "FaultyMail",
    "FaultySmtp",
    "RedisClusterServers",
    "RedisServer",
    "ReplyLosingProxy",
    "SmtpCounters",
    "amends_stack",
    "free_port",
    "wait_until",
]

HOST = "127.0.0.1"
REPO_ROOT = Path(__file__).resolve().parents[1]


def free_port(host: str = HOST) -> int:
    """A TCP port nobody listens on right now (the kernel's pick)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_until(check: Any, timeout_s: float, what: str, interval_s: float = 0.05) -> None:
    """Wait for something real processes or servers do on the real clock; TimeoutError names it."""
    deadline = time.monotonic() + timeout_s
    while True:
        if check():
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within {timeout_s:g} s")
        time.sleep(interval_s)


class _Managed:
    def stop(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


# -- Redis -----------------------------------------------------------------------------


class RedisServer(_Managed):
    """A private ``redis-server`` with an append-only file, started at construction.

    ``appendfsync`` is ``"everysec"`` (Redis' default) or ``"always"``. With ``"always"`` a
    SIGKILL of the server process loses nothing acknowledged. With ``"everysec"`` the AOF is
    usually written before clients get their replies, but while a background fsync is slow
    (a busy machine) Redis postpones that write for up to 2 s and replies anyway: a SIGKILL
    then loses those writes (see :meth:`aof_written`).
    """

    def __init__(
        self,
        *,
        appendfsync: str = "everysec",
        port: int | None = None,
        data_dir: Path | None = None,
        executable: str = "redis-server",
        extra_args: Sequence[str] = (),
        start: bool = True,
    ) -> None:
        found = shutil.which(executable)
        if found is None:
            raise FileNotFoundError(f"{executable} is not on PATH")
        self.executable = found
        self.port = port or free_port()
        self._own_dir = data_dir is None
        self.data_dir = data_dir or Path(tempfile.mkdtemp(prefix="amends-redis-"))
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.appendfsync = appendfsync
        self.extra_args = list(extra_args)
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        if start:
            self.start()

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "redis.log"

    def client(self, **kwargs: Any) -> redis.Redis:
        return redis.Redis(host=HOST, port=self.port, db=0, **kwargs)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _command(self) -> list[str]:
        return [
            self.executable,
            "--bind", HOST,
            "--port", str(self.port),
            "--dir", str(self.data_dir),
            "--appendonly", "yes",
            "--appendfsync", self.appendfsync,
            "--save", "",
            "--daemonize", "no",
            "--protected-mode", "yes",
            "--logfile", str(self.log_path),
            *self.extra_args,
        ]  # fmt: skip

    def start(self, timeout_s: float = 10.0) -> None:
        """Start the server (again) on the same port and folder; return once it answers PING."""
        if self.running:
            raise RuntimeError(f"redis-server on port {self.port} is already running")
        self.process = subprocess.Popen(
            self._command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        self.starts += 1
        self.wait_ready(timeout_s)

    def aof_written(self, timeout_s: float = 5.0) -> None:
        """Block until every write so far is in the append-only file (page cache included),
        so that a SIGKILL cannot lose it even with ``appendfsync everysec``."""
        client = self.client()
        wait_until(
            lambda: int(client.info("persistence").get("aof_buffer_length", 0)) == 0,
            timeout_s,
            "the append-only file written",
        )

    def wait_ready(self, timeout_s: float = 10.0) -> None:
        def answers() -> bool:
            if self.process is not None and self.process.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""
                raise RuntimeError(f"redis-server exited with {self.process.returncode}:\n{tail}")
            client = self.client(socket_connect_timeout=0.5, socket_timeout=0.5)
            try:
                return bool(client.ping())
            except redis.exceptions.BusyLoadingError:
                return False  # still loading the AOF
            except redis.RedisError:
                return False
            finally:
                client.close()

        wait_until(answers, timeout_s, f"redis-server on port {self.port} did not answer PING")

    def kill(self) -> None:
        """SIGKILL: no shutdown, no last write; only what the AOF already holds survives."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def restart(self, timeout_s: float = 10.0) -> None:
        """Kill it if it runs, then start it again on the same port with the same data."""
        self.kill()
        # The port can stay taken for a moment after the kill; retry until it binds.
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self.start(timeout_s=max(1.0, deadline - time.monotonic()))
                return
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL) and remove its folder if it made one."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)


# -- amends processes ----------------------------------------------------------------------


class AmendsProcess(_Managed):
    """One ``amends`` command (``worker``, ``scheduler``, ...) run as a subprocess.

    ``env`` is added to this process' environment (``AMENDS_REDIS_URL``, ``AMENDS_SMTP_URL``,
    ``AMENDS_SECRET_KEY``, ``AMENDS_CONFIG``, ...). Output of every run goes to ``log_path``
    (appended, with a marker line per start). Started at construction unless ``start=False``.
    """

    def __init__(
        self,
        args: Sequence[str],
        env: Mapping[str, str],
        log_path: Path,
        *,
        cwd: Path = REPO_ROOT,
        ready_text: str | None = None,
        start: bool = True,
    ) -> None:
        self.args = list(args)
        self.env = {**os.environ, **env}
        self.log_path = log_path
        self.cwd = cwd
        self.ready_text = ready_text
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.kills = 0
        self.exits: list[int] = []
        """Return codes of the earlier runs, oldest first."""
        if start:
            self.start()

    @classmethod
    def worker(cls, env: Mapping[str, str], log_path: Path, *, threads: int = 4, start: bool = True) -> Self:
        return cls(
            ["worker", "--threads", str(threads)], env, log_path, ready_text="amends worker:", start=start
        )

    @classmethod
    def scheduler(cls, env: Mapping[str, str], log_path: Path, *, start: bool = True) -> Self:
        return cls(["scheduler"], env, log_path, ready_text="amends scheduler:", start=start)

    @property
    def command(self) -> list[str]:
        return [sys.executable, "-m", "scheduler.cli.main", *self.args]

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def returncode(self) -> int | None:
        """None while running (or before the first start); else the last run's exit status."""
        return self.process.poll() if self.process is not None else None

    def start(self) -> None:
        if self.running:
            raise RuntimeError(f"amends {self.args[0]} is already running (pid {self.pid})")
        if self.process is not None and self.process.returncode is not None:
            self.exits.append(self.process.returncode)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"\n=== {time.strftime('%H:%M:%S')} start: amends {' '.join(self.args)}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                self.command,
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.starts += 1
        self._marker = self.log_path.stat().st_size

    def wait_ready(self, timeout_s: float = 20.0) -> None:
        """Wait until this run printed ``ready_text`` (its start-up line); fail if it exited."""
        if self.ready_text is None:
            return
        text = self.ready_text

        def ready() -> bool:
            if not self.running:
                raise RuntimeError(
                    f"amends {self.args[0]} exited with {self.returncode}:\n{self.log_text()[-3000:]}"
                )
            return text in self.run_log_text()

        wait_until(ready, timeout_s, f"amends {self.args[0]} did not print {text!r}", interval_s=0.1)

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, work in flight is abandoned."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
            self.kills += 1

    def restart(self) -> None:
        self.kill()
        self.start()

    def stop(self, timeout_s: float = 15.0) -> int | None:
        """SIGTERM (the clean shutdown), then SIGKILL after ``timeout_s``; the exit status."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.returncode

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def run_log_text(self) -> str:
        """What this run has printed so far (the log since its last start)."""
        with self.log_path.open("rb") as log:
            log.seek(self._marker)
            return log.read().decode(errors="replace")


# -- a whole stack ---------------------------------------------------------------------------


@contextlib.contextmanager
def amends_stack(
    tmp_path: Path, config: Mapping[str, Any]
) -> Iterator[tuple[RedisServer, FaultySmtp, dict[str, str]]]:
    """A private redis-server with an append-only file (``appendfsync always``), an SMTP server
    that fails on demand, and the environment an ``amends`` subprocess needs to use them with
    ``config`` (written to ``tmp_path``)."""
    config_path = tmp_path / "amends.yaml"
    config_path.write_text(yaml.safe_dump(dict(config)))
    with RedisServer(appendfsync="always") as server, FaultySmtp() as smtp:
        yield (
            server,
            smtp,
            {
                "AMENDS_REDIS_URL": server.url,
                "AMENDS_SMTP_URL": smtp.url,
                "AMENDS_CONFIG": str(config_path),
                "AMENDS_SECRET_KEY": "test-secret",
                "AMENDS_HOME": str(tmp_path / "home"),
            },
        )


# -- a connection that loses a reply --------------------------------------------------------


class ReplyLosingProxy(_Managed):
    """A TCP proxy on a free loopback port in front of ``target_port``; told to, it lets the
    next request that contains ``pattern`` through and cuts the connection before the reply
    comes back, so the server ran the command and the client never heard (a cut connection's
    worst moment), and runs ``then`` before the client can try again. ``cut`` counts the
    replies lost."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.cut = 0
        self._pattern: bytes | None = None
        self._then: Callable[[], object] | None = None
        self._lock = threading.Lock()
        self._listener = socket.create_server((HOST, self.port))
        threading.Thread(target=self._accept, name="reply-losing-proxy", daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def lose_reply_to(self, pattern: bytes, then: Callable[[], object] | None = None) -> None:
        with self._lock:
            self._pattern, self._then = pattern.lower(), then

    def stop(self) -> None:
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection((HOST, self.target_port))
            losing = threading.Event()
            threading.Thread(target=self._up, args=(client, upstream, losing), daemon=True).start()
            threading.Thread(target=self._down, args=(client, upstream, losing), daemon=True).start()

    def _up(self, client: socket.socket, upstream: socket.socket, losing: threading.Event) -> None:
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                with self._lock:
                    if self._pattern is not None and self._pattern in data.lower():
                        self._pattern = None
                        losing.set()  # before the request goes up, so its reply cannot slip through
                upstream.sendall(data)
        _close(client, upstream)

    def _down(self, client: socket.socket, upstream: socket.socket, losing: threading.Event) -> None:
        with contextlib.suppress(OSError):
            while data := upstream.recv(65536):
                if losing.is_set():
                    with self._lock:
                        self.cut += 1
                        then, self._then = self._then, None
                    if then is not None:
                        then()
                    break
                client.sendall(data)
        _close(client, upstream)


def _close(*sockets: socket.socket) -> None:
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()


# -- SMTP ------------------------------------------------------------------------------------

MODES = ("ok", "tempfail", "drop", "drop_after_data", "down")


@dataclass(frozen=True)
class FaultyMail(ReceivedMail):
    """A message the server accepted (or kept before dropping the connection)."""

    received_at: float = 0.0
    """``time.time()`` when the DATA was complete."""

    @property
    def message_id(self) -> str:
        headers = BytesHeaderParser().parsebytes(self.raw)
        return str(headers.get("Message-ID", "")).strip()


@dataclass
class SmtpCounters:
    connections: int = 0
    accepted: int = 0
    tempfailed: int = 0
    dropped: int = 0
    by_mode: dict[str, int] = field(default_factory=dict)


class _FaultyHandler:
    def __init__(self, server: FaultySmtp) -> None:
        self.server = server

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        with self.server._lock:
            self.server.counters.connections += 1
        return responses

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if self.server.mode == "tempfail" and self.server.tempfail_at == "rcpt":
            self.server._count("tempfailed")
            return self.server.tempfail_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        mode = self.server.mode
        if mode == "tempfail":
            self.server._count("tempfailed")
            return self.server.tempfail_reply
        mail = FaultyMail(envelope.mail_from, tuple(envelope.rcpt_tos), bytes(envelope.content), time.time())
        if mode in ("drop", "drop_after_data"):
            if mode == "drop_after_data":
                self.server._keep(mail)  # received, but the client never hears the 250
            self.server._count("dropped")
            server.transport.abort()
            return "250 OK"  # written to a closed transport: never reaches the client
        self.server._keep(mail)
        self.server._count("accepted")
        return "250 Message accepted for delivery"


class FaultySmtp(_Managed):
    """A real SMTP server (aiosmtpd, in a thread) on a free loopback port, failing on demand.

    ``mode`` can be changed at any time, from any thread:

    - ``"ok"``: accept and keep every message;
    - ``"tempfail"``: answer ``tempfail_reply`` (451) to DATA, or to RCPT when
      ``tempfail_at = "rcpt"``; nothing is kept;
    - ``"drop"``: close the connection abruptly once DATA is complete, without replying;
      nothing is kept;
    - ``"drop_after_data"``: the same, but the message is kept (the server got it, the client
      never heard so): the crash-after-250 case that only Message-ID folding can mend;
    - ``"down"``: stop listening (open connections are closed; new ones are refused).
      Setting another mode listens again on the same port.
    """

    def __init__(self, *, port: int | None = None, start: bool = True) -> None:
        self.port = port or free_port()
        self.received: list[FaultyMail] = []
        self.counters = SmtpCounters()
        self.tempfail_at = "data"
        self.tempfail_reply = "451 4.3.0 Temporary failure, try again later"
        self._mode = "down"
        self._lock = threading.Condition()  # guards what arrived and the counters
        self._switch = threading.Lock()  # one mode change at a time (never held by the server's thread)
        self._controller: Controller | None = None
        if start:
            self.mode = "ok"

    # The state ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"smtp://{HOST}:{self.port}?tls=none"

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"mode is one of {', '.join(MODES)}, not {mode!r}")
        with self._switch:
            listening = self._controller is not None
            if mode == "down" and listening:
                self._stop_listening()
            elif mode != "down" and not listening:
                self._start_listening()
            self._mode = mode

    def start(self) -> Self:
        self.mode = "ok"
        return self

    def stop(self) -> None:
        self.mode = "down"

    def _start_listening(self, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:  # after "down" the port may linger a moment
            controller = Controller(_FaultyHandler(self), hostname=HOST, port=self.port, ready_timeout=5.0)
            try:
                controller.start()
            except (OSError, TimeoutError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
                continue
            self._controller = controller
            return

    def _stop_listening(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    # What arrived ------------------------------------------------------------------------

    def _count(self, what: str) -> None:
        with self._lock:
            setattr(self.counters, what, getattr(self.counters, what) + 1)
            self.counters.by_mode[self._mode] = self.counters.by_mode.get(self._mode, 0) + 1

    def _keep(self, mail: FaultyMail) -> None:
        with self._lock:
            self.received.append(mail)
            self._lock.notify_all()

    def messages(self) -> list[FaultyMail]:
        """Everything kept so far, in arrival order."""
        with self._lock:
            return list(self.received)

    def message_ids(self) -> list[str]:
        return [m.message_id for m in self.messages()]

    def wait_for(self, count: int, timeout_s: float = 10.0) -> list[FaultyMail]:
        """Block until ``count`` messages were kept (or the timeout passed); return them all."""
        with self._lock:
            self._lock.wait_for(lambda: len(self.received) >= count, timeout=timeout_s)
            return list(self.received)


class RedisClusterServers:
    """A private Redis Cluster (3 masters with a replica each) started with ``.ci/redis-cluster``
    on six free loopback ports; ``kill_master_of(key)`` SIGKILLs the master serving a key so
    that its replica is promoted."""

    def __init__(self) -> None:
        self.data_dir = Path(tempfile.mkdtemp(prefix="amends-cluster-"))
        for _ in range(3):  # a port taken between the check and the start: try other ports
            self.first_port = _free_port_range(6)
            started = subprocess.run(
                [str(REPO_ROOT / ".ci" / "redis-cluster"), "start", str(self.first_port), str(self.data_dir)],
                capture_output=True,
                text=True,
                timeout=90,
            )
            if started.returncode == 0:
                break
            self.stop()
        else:
            raise RuntimeError(f"the cluster did not start: {started.stderr}")
        self.url = started.stdout.strip().splitlines()[-1]

    def node_client(self, port: int) -> redis.Redis:
        return redis.Redis(host=HOST, port=port, socket_timeout=5)

    def master_port_of(self, key: str, via: int | None = None) -> int:
        """The port of the master serving ``key``'s slot now (asking the node on ``via``)."""
        probe = self.node_client(via or self.first_port)
        slot = int(probe.execute_command("CLUSTER", "KEYSLOT", key))
        for low, high, master, *_ in probe.execute_command("CLUSTER", "SLOTS"):
            if int(low) <= slot <= int(high):
                return int(master[1])
        raise LookupError(f"no master serves slot {slot}")

    def kill_master_of(self, key: str) -> int:
        """SIGKILL the master serving ``key`` once its replica is in sync; return its port."""
        port = self.master_port_of(key)
        master = self.node_client(port)
        wait_until(
            lambda: any(
                isinstance(replica, dict) and replica.get("state") == "online"
                for replica in master.info("replication").values()
            ),
            30,
            f"the replica of the master on port {port} in sync",
        )
        pid = int((self.data_dir / str(port) / "redis.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        return port

    def wait_until_healed(self, key: str, dead_port: int, timeout_s: float = 60) -> int:
        """Block until a live master serves ``key`` again and the cluster is ok; its port.

        Redis takes 3 to 5 s here (a 2 s node timeout, then an election); a machine busy with
        the whole suite has been seen to take longer, hence the minute. A timeout names what
        every node says and logs."""
        live = next(p for p in range(self.first_port, self.first_port + 6) if p != dead_port)

        def healed() -> bool:
            try:
                node = self.node_client(live)
                info = node.execute_command("CLUSTER", "INFO").decode()
                return "cluster_state:ok" in info and self.master_port_of(key, via=live) != dead_port
            except redis.RedisError:
                return False

        try:
            wait_until(healed, timeout_s, f"a replica to take over from the master on port {dead_port}")
        except TimeoutError as e:
            raise TimeoutError(f"{e}\n{self.diagnosis(live)}") from None
        return self.master_port_of(key, via=live)

    def diagnosis(self, via: int) -> str:
        """What the cluster says of itself, and the end of every node's log: for a failure message."""
        try:
            nodes = self.node_client(via).execute_command("CLUSTER", "NODES").decode()
        except redis.RedisError as e:
            nodes = f"CLUSTER NODES on {via} failed: {e}"
        logs = []
        for port in range(self.first_port, self.first_port + 6):
            log = self.data_dir / str(port) / "redis.log"
            tail = log.read_text(errors="replace").splitlines()[-25:] if log.exists() else []
            logs.append(f"-- {port} redis.log\n" + "\n".join(tail))
        return "CLUSTER NODES:\n" + nodes + "\n" + "\n".join(logs)

    def wait_for_replicas(self) -> None:
        """Block until every master's writes so far reached its replica (``WAIT 1``)."""
        for port in range(self.first_port, self.first_port + 6):
            node = self.node_client(port)
            try:
                if node.execute_command("ROLE")[0] == b"master":
                    node.execute_command("WAIT", 1, 5_000)
            except redis.ConnectionError:
                continue

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        subprocess.run(
            [str(REPO_ROOT / ".ci" / "redis-cluster"), "stop", str(self.first_port), str(self.data_dir)],
            capture_output=True,
            timeout=60,
        )


def _free_port_range(count: int) -> int:
    """The first of ``count`` consecutive free loopback ports, below the kernel's ephemeral
    range (32768 and up), where an outgoing connection could take one meanwhile."""
    import random

    for _ in range(200):
        first = random.randrange(20_000, 32_000 - count)
        if all(_is_free(p) for p in range(first, first + count)):
            return first
    raise RuntimeError(f"no {count} consecutive free ports")


def _is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
        return True
