"""``amends demo``: the whole product on embedded services, one incident's life in a minute.

It starts an embedded Redis, a local SMTP server that keeps what it receives, a worker and
a scheduler loop in this process, emits a sample sev1 incident that concerns three
stakeholders of ``config/demo.yaml`` (three time zones, two audiences), and prints the
communications log as messages are sent.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvicorn

from scheduler.cli.logview import stream_header, stream_row
from scheduler.core.model import Communication, iso_z
from scheduler.core.ports import Store
from scheduler.core.promises import promise_report
from scheduler.dev.embedded import ensure_embedded_redis, stop_embedded_redis
from scheduler.dev.mailsink import MailSink
from scheduler.mail.smtp import SmtpSettings
from scheduler.service.emitting import emit
from scheduler.service.processes import broker_for, start_scheduler, start_worker
from scheduler.service.settings import Settings, bundled_path
from scheduler.storage.connection import client_for
from scheduler.storage.redis_store import RedisStore

__all__ = ["run_demo"]

INCIDENT_PREFIX = "INC-2041"
_STATUS_SHOWN = ("sent", "failed", "retrying")


def _event(incident_id: str, kind: str, incident: dict[str, Any]) -> dict[str, Any]:
    return {
        "schema": 1,
        "event_id": str(uuid.uuid4()),
        "type": f"incident.{kind}",
        "incident_id": incident_id,
        "occurred_at": iso_z(datetime.now(UTC)),
        "source": "payments-api",
        "incident": incident,
    }


class _LogPrinter:
    """Prints each communication once it has been sent (or failed), as the log shows it."""

    def __init__(self, store: Store, incident_id: str) -> None:
        self.store = store
        self.incident_id = incident_id
        self.shown: dict[str, str] = {}
        self.header_printed = False
        self.started = datetime.now(UTC)

    def poll(self) -> None:
        for comm in self._comms():
            if comm.status in _STATUS_SHOWN and self.shown.get(comm.id) != comm.status:
                self.shown[comm.id] = comm.status
                if not self.header_printed:
                    print(stream_header(), flush=True)
                    self.header_printed = True
                print(stream_row(comm), flush=True)

    def _comms(self) -> list[Communication]:
        return [c for c in self.store.communications(self.started) if c.incident_id == self.incident_id]

    def count(self, kind: str, status: str = "sent") -> int:
        return sum(1 for c in self._comms() if c.kind == kind and c.status == status)


def _wait(printer: _LogPrinter, done: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if done():
            printer.poll()  # after the check, so that what made it true is printed too
            return True
        printer.poll()
        time.sleep(0.25)  # the demo's display refresh, not a synchronisation
    finished = done()
    printer.poll()
    return finished


def _program() -> str:
    """How to call amends again: `amends` when it is on PATH, else the path this run used."""
    invoked = Path(sys.argv[0])
    on_path = shutil.which("amends")
    if invoked.name == "amends" and on_path and Path(on_path).resolve() == invoked.resolve():
        return "amends"
    if invoked.name == "amends":
        return (
            os.path.relpath(invoked)
            if not invoked.is_absolute() or Path.cwd() in invoked.parents
            else str(invoked)
        )
    return f"{Path(sys.executable).name} -m scheduler.cli.main"


def _say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def _free_port(preferred: int) -> int:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
        except OSError:
            s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_api(settings: Settings, port: int) -> tuple[uvicorn.Server, threading.Thread]:
    """The HTTP API in demo mode (no token) on 127.0.0.1 only, in a background thread."""
    from scheduler.web.app import create_app

    config = uvicorn.Config(
        create_app(settings, demo=True), host="127.0.0.1", port=port, log_level="warning", access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="amends-demo-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)  # waiting for the server thread to bind its socket
    return server, thread


def _prepare(base: Settings, home: Path) -> tuple[Settings, MailSink, int]:
    """A fresh ``home`` with an embedded Redis, a mail sink and the demo's configuration, and
    the settings that point at them; the port the API will serve on."""
    stop_embedded_redis(home / "redis")
    if home.exists():
        shutil.rmtree(home)
    home.mkdir(parents=True)
    redis_url = ensure_embedded_redis(home / "redis")
    sink = MailSink(maildir=home / "mail").start()
    port = _free_port(8000)
    config_path = home / "demo.yaml"  # the shipped demo config, with links to this demo's API
    config_path.write_text(
        (bundled_path("config") / "demo.yaml")
        .read_text()
        .replace('base_url: "http://127.0.0.1:8000"', f'base_url: "http://127.0.0.1:{port}"')
    )
    settings = base.with_(
        redis_url=redis_url,
        smtp=SmtpSettings.from_url(sink.url),
        config_path=config_path,
        secret_key=secrets.token_urlsafe(32),
        retry_min_backoff_ms=500,
        retry_max_backoff_ms=5_000,
    )
    print(f"embedded Redis: {redis_url}")
    print(f"SMTP server:    {sink.url} (what it receives is kept in {home / 'mail'})")
    print(f"config:         {settings.config_path}")
    print(f"templates:      {settings.templates_dir.resolve()}")
    return settings, sink, port


def run_demo(*, keep: bool = False) -> int:
    """Run the demo; return the process exit status.

    Everything lives under ``.amends/demo`` (fresh each run): an embedded Redis with its
    append-only file, and the SMTP server's Maildir. The review page is served while the
    demo runs (and afterwards with ``keep``, until Ctrl-C). Afterwards
    ``AMENDS_HOME=.amends/demo amends log`` shows what the demo sent.
    """
    home = Settings.from_env().data_dir / "demo"
    settings, sink, port = _prepare(Settings.from_env(), home)
    incident_id = f"{INCIDENT_PREFIX}-{datetime.now(UTC):%H%M%S}"
    printer = _LogPrinter(RedisStore(client_for(settings.resolved_redis_url())), incident_id)
    broker = broker_for(settings)
    stop = threading.Event()
    worker = start_worker(settings, threads=4, broker=broker)
    scheduler = start_scheduler(settings, stop, broker)
    api, api_thread = _start_api(settings, port)
    print(
        f"review page:    http://127.0.0.1:{port}/  (while the demo runs; 'amends demo --keep' keeps it up)"
    )
    try:
        status = _finish(_story(incident_id, printer, lambda e: emit(e, broker=broker)), printer, sink)
        if keep:
            print(f"\nthe review page stays up at http://127.0.0.1:{port}/ ; Ctrl-C to stop", flush=True)
            _wait_for_interrupt()
        return status
    except KeyboardInterrupt:
        print("\ninterrupted; stopping the demo's worker, scheduler, API, SMTP server and Redis", flush=True)
        return 130
    finally:
        api.should_exit = True
        api_thread.join(timeout=5)
        stop.set()
        scheduler.join(timeout=5)
        worker.stop()
        sink.stop()
        stop_embedded_redis(home / "redis")


def _story(incident_id: str, printer: _LogPrinter, send: Callable[[dict[str, Any]], Any]) -> bool:
    """The incident the demo tells, event by event; True when every expected message came."""
    _say(f"{incident_id} opened: sev1, card payments failing; acknowledgments within seconds")
    opened = {
        "title": "Card payments failing for some customers",
        "severity": "sev1",
        "services": ["payments"],
        "status": "investigating",
        "summary": "Card payments through our EU processor fail with a timeout.",
        "impact": "About 1 in 5 card payments fail; retries usually succeed.",
        "plan": "We are moving card traffic to the backup processor.",
        "owner": "Payments on-call",
    }
    send(_event(incident_id, "opened", opened))
    if not _wait(printer, lambda: printer.count("acknowledgment") >= 3, 20):
        return False
    _say("no news yet: regular updates on each stakeholder's own cadence (6s, 8s, 12s)")
    ok = _wait(printer, lambda: printer.count("update") >= 4, 30)
    _wait(printer, lambda: False, 2)  # so the change does not coincide with a regular update
    _say("material change: cause identified, new plan; sent at once")
    changed = {
        "status": "identified",
        "summary": "An expired certificate broke the link to the EU card processor.",
        "plan": "Certificate rotated; we are replaying the failed payments.",
    }
    send(_event(incident_id, "updated", changed))
    ok &= _wait(printer, lambda: printer.count("update") >= 7, 20)
    _wait(printer, lambda: False, 7)
    _say(f"{incident_id} resolved: resolution now, feedback requests after each stakeholder's delay")
    send(
        _event(
            incident_id, "resolved", {"summary": "Payments work again; every failed payment was replayed."}
        )
    )
    ok &= _wait(printer, lambda: printer.count("resolution") >= 3, 20)
    ok &= _wait(printer, lambda: printer.count("feedback_request") >= 3, 30)
    return ok


def _wait_for_interrupt() -> None:
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: done.set())
    with contextlib.suppress(KeyboardInterrupt):
        done.wait()


def _finish(ok: bool, printer: _LogPrinter, sink: MailSink) -> int:
    printer.poll()
    comms = printer._comms()
    report = promise_report(comms, datetime.now(UTC))
    _say("summary")
    print(f"{len(sink.received)} emails received by the SMTP server")
    print("\n".join(report.lines()))
    if comms:
        hint = f"AMENDS_HOME={Settings.from_env().data_dir / 'demo'} "
        if Settings.from_env().redis_url:
            hint = "AMENDS_REDIS_URL= " + hint
        hint += _program()
        print(f"the log, afterwards:  {hint} log --incident {printer.incident_id}")
        print(f"one message in full:  {hint} log show {comms[0].id}")
        print(f"promises kept:        {hint} log --promises")
    if not ok:
        print("the demo did not see every expected message in time; see the log above")
        return 1
    return 0
