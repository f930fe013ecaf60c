"""Fan-out speed against baselines measured in the same run, on the same Redis and SMTP server.

In one process tree, one run (so the ratios hold on a noisy machine):

- baseline A: raw aiosmtplib, 8 pooled connections, the same server, messages of the same size;
- baseline A': the same, sending the very bytes of a message amends sent (its text and HTML
  parts have more, shorter lines than A's, which costs the server more), as amends hands
  them over (``sendmail``, no flattening);
- baseline B: a Dramatiq no-op actor on the same Redis, with the worker settings amends uses;
- amends end to end: ``--incidents`` x ``--stakeholders`` acknowledgments (default 50 x 200 =
  10,000), emitted at once, through real ``amends worker`` processes, rendered, sent and logged;
- acknowledgment latency at a steady ``--rate`` events/s x 10 stakeholders: enqueue to the
  server's 250 (``sent_at - promised_at``: the promise of an acknowledgment is its enqueue time);
- Redis bytes per logged communication (``INFO memory``, every key counted), on the fan-out
  (one message per thread) and on a long incident (``--stakeholders`` threads, ``--updates``
  messages after the acknowledgment in each);
- timer punctuality: ``bench/bench_timers.py`` (skip with ``--no-timers``);
- CPU time per email during the fan-out: the workers', Redis' and the SMTP server's (``/proc``);
- the worker's RSS at the end, and the CPU the workers and Redis use while idle;
- with ``--broker-url amqp://…``: the fan-out, the no-op baseline and the latency again with
  the queues on that RabbitMQ (Dramatiq's RabbitmqBroker), after the Redis broker's, in the
  same run. amends' queues (and ``bench-noop``) on that vhost are deleted before and after:
  give the bench a vhost of its own.

The SMTP server is aiosmtpd's ``Sink`` in its own process. Redis is a private
``redis-server`` on a free port (no persistence).

    python bench/bench_delivery.py [--incidents 50] [--stakeholders 200] [--processes 2] [--json]
    python bench/bench_delivery.py --broker-url amqp://guest:guest@127.0.0.1:5672/amends-bench
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiosmtplib
import dramatiq
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scheduler import emit
from scheduler.service.queues import QUEUES, build_broker
from scheduler.storage import keys
from scheduler.storage.redis_store import RedisStore
from tests.realservers import REPO_ROOT, AmendsProcess, RedisServer, free_port

_SENDER = "Bench Status <status@bench.example>"


def _progress(text: str) -> None:
    print(f"\r\033[K{text}", end="", file=sys.stderr, flush=True)


def _wait(check: Callable[[], tuple[bool, str]], timeout_s: float, what: str) -> float:
    start = time.monotonic()
    while True:
        done, status = check()
        _progress(f"{what}: {status}")
        if done:
            return time.monotonic() - start
        if time.monotonic() - start > timeout_s:
            raise SystemExit(f"\n{what}: not done within {timeout_s:.0f} s ({status})")
        time.sleep(0.05)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))] if ordered else 0.0


class SmtpSink:
    """aiosmtpd's Sink handler in a process of its own: accepts and discards."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "aiosmtpd",
                "-n",
                "-c",
                "aiosmtpd.handlers.Sink",
                "-l",
                f"127.0.0.1:{self.port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                import socket

                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise SystemExit("the SMTP sink did not start")

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}?tls=none"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(5)


# -- baseline A: raw aiosmtplib ----------------------------------------------------------


def _sample_message(size: int) -> EmailMessage:
    message = EmailMessage()
    message["From"] = _SENDER
    message["To"] = "reader@bench.example"
    message["Subject"] = "Card payments failing"
    message["Message-ID"] = f"<{uuid.uuid4().hex}@bench.example>"
    body = ("We are working on it. " * (size // 22 + 1))[: max(100, size - 400)]
    message.set_content(body)
    return message


async def _raw_smtp(
    port: int, count: int, size: int, connections: int = 8, *, wire: bytes | None = None
) -> float:
    """Emails per second through ``connections`` pooled aiosmtplib clients: a message of
    ``size`` bytes flattened by ``send_message``, or the bytes ``wire`` as they are."""
    message = _sample_message(size)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(count):
        queue.put_nowait(n)

    async def sender() -> None:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
        await client.connect()
        while True:
            try:
                queue.get_nowait()
            except asyncio.QueueEmpty:
                break
            if wire is None:
                await client.send_message(message)
            else:
                await client.sendmail(message["From"], [message["To"]], wire)
        await client.quit()

    start = time.perf_counter()
    await asyncio.gather(*(sender() for _ in range(connections)))
    return count / (time.perf_counter() - start)


def _with_cpu(run: Callable[[], float], smtp: SmtpSink, count: int) -> tuple[float, dict[str, float]]:
    """What ``run`` (a raw SMTP baseline in this process) returns, and the CPU time per email
    it took: this process's (the client) and the SMTP server's."""
    server_before, client_before = _cpu_seconds(smtp.process.pid), time.process_time()
    per_s = run()
    return per_s, {
        "client": 1000 * (time.process_time() - client_before) / count,
        "smtp_server": 1000 * (_cpu_seconds(smtp.process.pid) - server_before) / count,
    }


# -- baseline B: a Dramatiq no-op actor ---------------------------------------------------


_NOOP_QUEUE = "bench-noop"


def _delete_rabbitmq_queues(url: str) -> None:
    """amends' queues, with Dramatiq's delay and dead-letter queues, and the no-op baseline's."""
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        for name in (*QUEUES, _NOOP_QUEUE):
            for suffix in ("", ".DQ", ".XQ"):
                channel.queue_delete(name + suffix)
    finally:
        connection.close()


def _dramatiq_noop(broker_url: str, count: int, threads: int) -> float:
    broker = build_broker(broker_url)
    done = [0]

    @dramatiq.actor(broker=broker, queue_name=_NOOP_QUEUE)
    def noop(n: int) -> None:
        done[0] += 1

    for n in range(count):
        noop.send(n)
    worker = dramatiq.Worker(broker, worker_threads=threads, worker_timeout=100)
    start = time.perf_counter()
    worker.start()
    broker.join(_NOOP_QUEUE, timeout=600_000)
    worker.join()
    elapsed = time.perf_counter() - start
    worker.stop()
    broker.close()
    return count / elapsed


# -- amends ---------------------------------------------------------------------------------


def _config(path: Path, stakeholders: int) -> Path:
    data = {
        "sender": _SENDER,
        "base_url": "https://status.bench.example",
        "defaults": {"timezone": "Europe/Berlin", "cadence": {"sev1": "1d"}, "feedback_after": "7d"},
        "stakeholders": [
            {
                "id": f"customer-{n:04d}",
                "name": f"Customer {n:04d}",
                "email": f"ops{n}@customer{n}.example",
                "audience": "customer",
            }
            for n in range(stakeholders)
        ],
    }
    path.write_text(yaml.safe_dump(data))
    return path


def _event(incident_id: str, kind: str = "opened", **fields: Any) -> dict[str, Any]:
    incident = fields or {
        "title": "Card payments failing for some customers",
        "severity": "sev1",
        "services": ["payments"],
        "summary": "Card payments through our EU processor fail with a timeout.",
        "impact": "About 1 in 5 card payments fail; retries usually succeed.",
        "plan": "We are moving card traffic to the backup processor.",
        "owner": "Payments on-call",
    }
    return {
        "schema": 1,
        "event_id": str(uuid.uuid4()),
        "type": f"incident.{kind}",
        "incident_id": incident_id,
        "occurred_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "source": "bench",
        "incident": incident,
    }


class Amends:
    """Worker processes on a config, and the counts bench phases wait on."""

    def __init__(
        self,
        redis: RedisServer,
        smtp: SmtpSink,
        folder: Path,
        stakeholders: int,
        args: Any,
        broker_url: str | None = None,
    ) -> None:
        self.client = redis.client()
        self.client.flushall()
        self.env = {
            "AMENDS_REDIS_URL": redis.url,
            "AMENDS_BROKER_URL": broker_url or "",
            "AMENDS_SMTP_URL": smtp.url,
            "AMENDS_CONFIG": str(_config(folder / f"bench-{stakeholders}.yaml", stakeholders)),
            "AMENDS_SECRET_KEY": "bench-secret",
            "AMENDS_HOME": str(folder / "home"),
        }
        extra = ["--processes", str(args.processes)] if args.processes else []
        self.workers = AmendsProcess(
            ["worker", "--threads", str(args.threads), *extra],
            self.env,
            folder / f"worker-{stakeholders}{'-rabbitmq' if broker_url else ''}.log",
            ready_text="amends worker:",
        )
        self.workers.wait_ready()
        _wait(self._consuming, 120, "worker processes loading the configuration")
        self.broker = build_broker(broker_url or redis.url)
        self.store = RedisStore(self.client)
        self.server_pids = {
            "redis": redis.process.pid if redis.process else 0,
            "smtp_server": smtp.process.pid,
        }
        if broker_url:  # a RabbitMQ on this machine: its CPU counts too (its other vhosts' as well)
            beam = subprocess.run(["pgrep", "-o", "-x", "beam.smp"], capture_output=True, text=True)
            if beam.stdout.strip():
                self.server_pids["rabbitmq"] = int(beam.stdout.split()[0])

    def _consuming(self) -> tuple[bool, str]:
        """Whether every worker process says it consumes: the supervisor's start-up line comes
        before they have loaded the configuration (seconds, for thousands of stakeholders),
        and a fan-out timed from then would count that start-up."""
        text = self.workers.run_log_text()
        wanted = re.search(r"amends worker: (\d+) processes", text)
        total = int(wanted.group(1)) if wanted else 1
        started = text.count("amends worker: consuming from")
        return started >= total, f"{started}/{total} consuming"

    def counts(self) -> tuple[int, int]:
        """(communications logged, communications still unfinished)."""
        pipe = self.client.pipeline(transaction=False)
        for shard in range(keys.SHARDS):
            pipe.zcard(keys.log(shard))
        return sum(int(n) for n in pipe.execute()), self.store.unfinished_count()

    def worker_pids(self) -> list[int]:
        """The supervisor and its worker processes."""
        children = subprocess.run(["pgrep", "-P", str(self.workers.pid)], capture_output=True, text=True)
        return [self.workers.pid or 0, *(int(p) for p in children.stdout.split())]

    def cpu_s(self) -> dict[str, float]:
        """CPU seconds used so far by the workers, Redis and the SMTP server (user + system)."""
        return {
            "worker": sum(_cpu_seconds(p) for p in self.worker_pids()),
            **{name: _cpu_seconds(pid) for name, pid in self.server_pids.items()},
        }

    def rss_mb(self) -> float:
        total = 0
        for pid in self.worker_pids():
            status = Path(f"/proc/{pid}/status")
            if status.exists():
                match = re.search(r"VmRSS:\s+(\d+) kB", status.read_text())
                total += int(match.group(1)) if match else 0
        return total / 1024

    def used_memory(self) -> int:
        return int(self.client.info("memory")["used_memory"])

    def stop(self) -> None:
        self.workers.stop()
        self.broker.close()


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _fan_out(amends: Amends, incidents: int, stakeholders: int) -> dict[str, Any]:
    total = incidents * stakeholders
    before = amends.used_memory()
    cpu_before = amends.cpu_s()
    start = time.monotonic()
    for n in range(incidents):
        emit(_event(f"INC-{n}"), broker=amends.broker)

    def check() -> tuple[bool, str]:
        logged, unfinished = amends.counts()
        return logged >= total and unfinished == 0, f"{logged - unfinished:,}/{total:,} sent"

    _wait(check, 1800, "amends fan-out")
    elapsed = time.monotonic() - start
    cpu = {name: used - cpu_before[name] for name, used in amends.cpu_s().items()}
    failed = sum(1 for c in amends.store.communications() if c.status != "sent")
    return {
        "emails": total,
        "seconds": elapsed,
        "per_s": total / elapsed,
        "not_sent": failed,
        "bytes_per_comm": (amends.used_memory() - before) / total,
        "worker_rss_mb": amends.rss_mb(),
        "cpu_ms_per_email": {name: 1000 * used / total for name, used in cpu.items()},
    }


def _long_incident(amends: Amends, stakeholders: int, updates: int) -> float:
    """Bytes per communication when each thread holds many: one incident that concerns all
    ``stakeholders`` configured, ``updates`` material changes after its opening."""
    base = amends.counts()[0]
    emit(_event("LONG-1"), broker=amends.broker)

    def opened() -> tuple[bool, str]:
        logged, unfinished = amends.counts()
        return logged >= base + stakeholders and unfinished == 0, f"{logged - base}/{stakeholders}"

    _wait(opened, 300, "long incident opened")
    before, logged_before = amends.used_memory(), amends.counts()[0]
    for n in range(updates):
        summary = f"Step {n}: the processor answered {n} of our probes."
        emit(_event("LONG-1", "updated", summary=summary), broker=amends.broker)
        wanted = logged_before + stakeholders * (n + 1)

        def check(wanted: int = wanted, n: int = n) -> tuple[bool, str]:
            logged, unfinished = amends.counts()
            return unfinished == 0 and logged >= wanted, f"update {n + 1}/{updates}"

        _wait(check, 300, "long incident")
    return (amends.used_memory() - before) / (amends.counts()[0] - logged_before)


def _latency(amends: Amends, rate: float, seconds: float) -> dict[str, float]:
    """Steady ``rate`` events/s for ``seconds``, after a warm-up second that is not counted
    (a worker just started compiles its templates and opens its connections then)."""
    for n in range(int(rate)):
        emit(_event(f"WARM-{n}"), broker=amends.broker)
    _wait(lambda: (amends.counts()[1] == 0 and amends.counts()[0] > 0, f"{amends.counts()}"), 120, "warm-up")
    count = int(rate * seconds)
    start = time.monotonic()
    for n in range(count):
        time.sleep(max(0.0, start + n / rate - time.monotonic()))
        emit(_event(f"LAT-{n}"), broker=amends.broker)
        _progress(f"acknowledgment latency: {n + 1}/{count} events")
    _wait(lambda: (amends.counts()[1] == 0, f"{amends.counts()}"), 300, "acknowledgment latency")
    lateness = [
        c.lateness_s or 0.0
        for c in amends.store.communications()
        if c.sent_at is not None and c.incident_id.startswith("LAT-")
    ]
    return {
        "events": count,
        "emails": len(lateness),
        "p50_ms": _percentile(lateness, 0.5) * 1000,
        "p99_ms": _percentile(lateness, 0.99) * 1000,
        "max_ms": max(lateness, default=0.0) * 1000,
    }


def _idle(amends: Amends, seconds: float = 10.0) -> dict[str, float]:
    """Percent of a core the workers and Redis use while nothing happens (after the latency
    phase has drained)."""
    _wait(lambda: (amends.counts()[1] == 0, "draining"), 60, "idle: the last sends")
    time.sleep(2)  # the consumers back off to their idle pace
    _progress(f"idle: {seconds:g} s")
    before, start = amends.cpu_s(), time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - start
    after = amends.cpu_s()
    return {name: 100 * (after[name] - before[name]) / elapsed for name in ("worker", "redis")}


def _timers() -> dict[str, float] | None:
    _progress("timer punctuality: bench/bench_timers.py (100k armed, 10k due)")
    out = subprocess.run(
        [sys.executable, str(REPO_ROOT / "bench" / "bench_timers.py")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for line in out.splitlines():
        if line.startswith("| scheduler loop, real Dramatiq enqueue, 25 timers/message"):
            cells = [c.strip().replace(",", "") for c in line.strip("|").split("|")]
            return {"p50_ms": float(cells[2]), "p99_ms": float(cells[3]), "bytes_per_timer": float(cells[6])}
    return None


def _on_rabbitmq(server: RedisServer, smtp: SmtpSink, folder: Path, args: Any) -> dict[str, Any]:
    """The fan-out, the no-op baseline and the latency again, with the queues on RabbitMQ."""
    url = args.broker_url
    results: dict[str, Any] = {"broker": url.split("@")[-1]}
    _delete_rabbitmq_queues(url)
    try:
        amends = Amends(server, smtp, folder, args.stakeholders, args, broker_url=url)
        try:
            results["amends"] = _fan_out(amends, args.incidents, args.stakeholders)
        finally:
            amends.stop()
        _progress("baseline B on RabbitMQ: Dramatiq no-op actor")
        results["dramatiq_noop_per_s"] = _dramatiq_noop(url, args.incidents * args.stakeholders, args.threads)
        amends = Amends(server, smtp, folder, 10, args, broker_url=url)
        try:
            results["latency"] = _latency(amends, args.rate, args.seconds)
        finally:
            amends.stop()
    finally:
        _delete_rabbitmq_queues(url)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--incidents", type=int, default=50, help="incidents in the fan-out (default 50)")
    parser.add_argument(
        "--stakeholders", type=int, default=200, help="stakeholders each concerns (default 200)"
    )
    parser.add_argument(
        "--processes", type=int, default=0, help="worker processes (default: amends' own default)"
    )
    parser.add_argument("--threads", type=int, default=8, help="threads per worker process (default 8)")
    parser.add_argument(
        "--rate", type=float, default=20.0, help="events/s for the latency phase (default 20)"
    )
    parser.add_argument(
        "--seconds", type=float, default=15.0, help="length of the latency phase (default 15)"
    )
    parser.add_argument(
        "--updates", type=int, default=10, help="updates per thread on the long incident (default 10)"
    )
    parser.add_argument(
        "--broker-url",
        help="also run the fan-out, the no-op baseline and the latency with the queues on this "
        "RabbitMQ (amqp://user:pass@host:5672/vhost; amends' queues there are deleted)",
    )
    parser.add_argument("--no-timers", action="store_true", help="skip the timer punctuality bench")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="amends-bench-"))
    results: dict[str, Any] = {"machine": f"{os.cpu_count()} cores, Python {platform.python_version()}"}
    load_before = os.getloadavg()[0]
    with RedisServer(extra_args=("--appendonly", "no")) as server:
        smtp = SmtpSink()
        try:
            results["redis"] = server.client().info("server")["redis_version"]
            amends = Amends(server, smtp, folder, args.stakeholders, args)
            try:
                results["amends"] = _fan_out(amends, args.incidents, args.stakeholders)
                listed = next(amends.store.communications())  # a listing leaves the message out
                sample = amends.store.comm(listed.id)
                assert sample is not None and sample.message, "the log kept no message as sent"
                wire = sample.message.encode()
                size = len(wire)
                results["long_incident_bytes_per_comm"] = _long_incident(
                    amends, args.stakeholders, args.updates
                )
            finally:
                amends.stop()
            total = args.incidents * args.stakeholders
            _progress("baseline A: raw aiosmtplib")
            results["message_bytes"] = size
            results["message_lines"] = wire.count(b"\n")
            results["baseline_a_lines"] = _sample_message(size).as_string().count("\n")
            results["raw_smtp_per_s"], results["raw_smtp_cpu_ms_per_email"] = _with_cpu(
                lambda: asyncio.run(_raw_smtp(smtp.port, total, size)), smtp, total
            )
            _progress("baseline A': raw aiosmtplib, amends' own message")
            results["raw_smtp_own_message_per_s"], results["raw_own_message_cpu_ms_per_email"] = _with_cpu(
                lambda: asyncio.run(_raw_smtp(smtp.port, total, size, wire=wire)), smtp, total
            )
            _progress("baseline B: Dramatiq no-op actor")
            server.client().flushall()
            results["dramatiq_noop_per_s"] = _dramatiq_noop(server.url, total, args.threads)
            amends = Amends(server, smtp, folder, 10, args)
            try:
                results["latency"] = _latency(amends, args.rate, args.seconds)
                results["idle"] = _idle(amends)
            finally:
                amends.stop()
            if args.broker_url:
                results["rabbitmq"] = _on_rabbitmq(server, smtp, folder, args)
        finally:
            smtp.stop()
    if not args.no_timers:
        results["timers"] = _timers()
    _progress("")
    results["load_average"] = [load_before, os.getloadavg()[0]]
    results["ratio_to_raw_smtp"] = results["amends"]["per_s"] / results["raw_smtp_per_s"]
    results["ratio_to_raw_own_message"] = results["amends"]["per_s"] / results["raw_smtp_own_message_per_s"]
    if args.json:
        print(json.dumps(results))
        return
    a, lat = results["amends"], results["latency"]
    rows = [
        (
            "baseline A: raw aiosmtplib, 8 pooled connections",
            f"{results['raw_smtp_per_s']:,.0f} emails/s",
            f"{results['message_bytes']:,}-byte messages; CPU per email: client "
            f"{results['raw_smtp_cpu_ms_per_email']['client']:.2f} ms, SMTP server "
            f"{results['raw_smtp_cpu_ms_per_email']['smtp_server']:.2f} ms",
        ),
        (
            "baseline A': raw aiosmtplib, 8 connections, amends' own message",
            f"{results['raw_smtp_own_message_per_s']:,.0f} emails/s",
            f"the bytes of a message amends sent, {results['message_lines']} lines (A's: "
            f"{results['baseline_a_lines']}); CPU per email: client "
            f"{results['raw_own_message_cpu_ms_per_email']['client']:.2f} ms, SMTP server "
            f"{results['raw_own_message_cpu_ms_per_email']['smtp_server']:.2f} ms",
        ),
        ("baseline B: Dramatiq no-op actor", f"{results['dramatiq_noop_per_s']:,.0f} messages/s", ""),
        (
            f"amends: {args.incidents} incidents x {args.stakeholders} stakeholders",
            f"{a['per_s']:,.0f} emails/s",
            f"{results['ratio_to_raw_smtp']:.2f}x raw SMTP (A), {results['ratio_to_raw_own_message']:.2f}x A'; "
            f"{a['emails']:,} in {a['seconds']:.1f} s, {a['not_sent']} not sent",
        ),
        (
            f"acknowledgment latency at {args.rate:g} events/s x 10",
            f"p99 {lat['p99_ms']:.0f} ms",
            f"p50 {lat['p50_ms']:.0f} ms, max {lat['max_ms']:.0f} ms, {lat['emails']} emails",
        ),
        (
            "Redis bytes per communication, one per thread",
            f"{a['bytes_per_comm']:,.0f} B",
            "every key counted",
        ),
        (
            f"Redis bytes per communication, {args.updates} per thread",
            f"{results['long_incident_bytes_per_comm']:,.0f} B",
            "",
        ),
        (
            "CPU per email in the fan-out",
            f"{a['cpu_ms_per_email']['worker']:.2f} ms",
            f"the workers; Redis {a['cpu_ms_per_email']['redis']:.2f} ms, "
            f"the SMTP server {a['cpu_ms_per_email']['smtp_server']:.2f} ms",
        ),
        ("worker RSS after the fan-out", f"{a['worker_rss_mb']:.0f} MB", "all worker processes"),
        (
            "an idle worker",
            f"{results['idle']['worker']:.1f} % of a core",
            f"all worker processes; their Redis {results['idle']['redis']:.1f} %",
        ),
    ]
    if results.get("rabbitmq"):
        r = results["rabbitmq"]
        ra, rl = r["amends"], r["latency"]
        rows += [
            (
                "queues on RabbitMQ: baseline B, Dramatiq no-op actor",
                f"{r['dramatiq_noop_per_s']:,.0f} messages/s",
                r["broker"],
            ),
            (
                f"queues on RabbitMQ: amends {args.incidents} x {args.stakeholders}",
                f"{ra['per_s']:,.0f} emails/s",
                f"{ra['per_s'] / results['raw_smtp_per_s']:.2f}x raw SMTP, "
                f"{ra['per_s'] / a['per_s']:.2f}x on Redis; {ra['emails']:,} in {ra['seconds']:.1f} s, "
                f"{ra['not_sent']} not sent",
            ),
            (
                f"queues on RabbitMQ: acknowledgment latency at {args.rate:g} events/s x 10",
                f"p99 {rl['p99_ms']:.0f} ms",
                f"p50 {rl['p50_ms']:.0f} ms, max {rl['max_ms']:.0f} ms, {rl['emails']} emails",
            ),
            (
                "queues on RabbitMQ: CPU per email in the fan-out",
                f"{ra['cpu_ms_per_email']['worker']:.2f} ms",
                "the workers; "
                + ", ".join(
                    f"{name.replace('_', ' ')} {ms:.2f} ms"
                    for name, ms in ra["cpu_ms_per_email"].items()
                    if name != "worker"
                ),
            ),
            ("queues on RabbitMQ: worker RSS after the fan-out", f"{ra['worker_rss_mb']:.0f} MB", ""),
        ]
    if results.get("timers"):
        t = results["timers"]
        rows.append(
            (
                "timers: 100k armed, 10k due at once",
                f"p99 {t['p99_ms']:.0f} ms",
                f"p50 {t['p50_ms']:.0f} ms, {t['bytes_per_timer']:.0f} B per armed timer",
            )
        )
    before, after = results["load_average"]
    print(
        f"Redis {results['redis']}, {results['machine']}, load average {before:.1f} at the start, {after:.1f} at the end"
    )
    print("| measure | result | notes |")
    print("|---|---:|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
