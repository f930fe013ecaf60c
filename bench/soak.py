"""Soak under faults: steady incident traffic while processes, Redis and SMTP keep failing.

Starts a private redis-server (append-only file on), a real SMTP server that can fail on
demand, ``--workers`` ``amends worker`` and ``--schedulers`` ``amends scheduler``
processes, and a configuration of five stakeholders with cadences of seconds. For
``--minutes`` it opens incidents at a steady rate (each ``incident.opened`` is followed at
once by an ``incident.updated`` of the same incident), updates and resolves them, and
meanwhile:

- SIGKILLs a random worker or scheduler about every ``--kill-every`` seconds and starts it
  again one or two seconds later (a process that exits on its own is restarted too, as a
  supervisor would);
- SIGKILLs Redis every ``--redis-every`` seconds and restarts it 1-2 s later on its AOF;
- takes SMTP through outages: after ``--smtp-every`` seconds of service, 451 to every DATA
  for 30-60 s, then later connections dropped mid-transaction for 15-30 s, then no
  listener at all for 15-30 s, and round again.

Then it stops the load and the faults, resolves what is still open, and waits until
nothing is scheduled, sending or retrying, no timer is armed and the queues are empty (or
``--settle`` seconds pass). It compares what the SMTP server received with what each
stakeholder was owed (an acknowledgment, a resolution and a feedback request per
incident that concerns them) and with ``amends log --json``:

    lost          owed or logged as sent, never received
    duplicated    extra copies of one Message-ID
    out of order  messages received after a later one of the same incident+stakeholder thread
    stranded      log rows still scheduled, sending or retrying after settling
    rejected      events in ``amends log --rejected``
    lateness      sent_at - promised_at of sent rows: p50, p99, max

    python bench/soak.py [--minutes 10] [--workers 2] [--schedulers 2] [--json]

Exit status: 0 nothing lost, duplicated, out of order or stranded; 1 otherwise; 2 usage.
Everything runs on 127.0.0.1 with free ports; ``--keep DIR`` keeps the process logs, the
configuration and the received mail there.
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scheduler import emit
from scheduler.core.config import parse_config
from scheduler.errors import RedisUnavailableError
from scheduler.service.queues import DELIVER_QUEUE, EVENTS_QUEUE, TIMERS_QUEUE, build_broker
from scheduler.storage.timers import RedisTimerStore
from tests.realservers import REPO_ROOT, AmendsProcess, FaultySmtp, RedisServer

PENDING = ("scheduled", "sending", "retrying")
OWED = ("acknowledgment", "resolution", "feedback_request")

CONFIG: dict[str, Any] = {
    "sender": "Acme Status <status@acme.example>",
    "base_url": "http://127.0.0.1:8000",
    "defaults": {
        "timezone": "UTC",
        "cadence": {"sev1": "20s", "sev2": "30s", "sev3": "45s", "sev4": "1m"},
        "feedback_after": "8s",
        "quiet_hours_override": ["sev1", "sev2", "sev3", "sev4"],
    },
    "stakeholders": [
        {
            "id": "acme-finance",
            "name": "ACME Finance",
            "email": "finance-ops@acme.example",
            "audience": "customer",
            "timezone": "Europe/Berlin",
            "services": ["payments"],
            "severities": ["sev1", "sev2"],
            "cadence": {"sev1": "10s", "sev2": "15s"},
            "feedback_after": "5s",
        },
        {
            "id": "globex-support",
            "name": "Globex Support Desk",
            "email": "support@globex.example",
            "audience": "customer",
            "timezone": "America/New_York",
            "services": ["payments", "checkout"],
            "cadence": {"sev1": "15s", "sev2": "20s"},
        },
        {
            "id": "payments-eng",
            "name": "Payments Engineering",
            "email": "payments-eng@acme.example",
            "audience": "engineering",
            "timezone": "Asia/Tokyo",
            "services": ["payments"],
            "cadence": {"sev1": "8s", "sev2": "12s"},
        },
        {
            "id": "exec-board",
            "name": "Executive Board",
            "email": "board@acme.example",
            "audience": "executive",
            "severities": ["sev1"],
        },
        {
            "id": "search-team",
            "name": "Search Team",
            "email": "search@acme.example",
            "timezone": "Australia/Sydney",
            "services": ["search"],
            "cadence": {"sev3": "20s"},
        },
    ],
}
SERVICES = [["payments"], ["checkout"], ["search"], ["payments", "checkout"]]
SEVERITIES = ["sev1", "sev1", "sev2", "sev2", "sev3"]


def _percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile (0 for no values)."""
    if not sorted_values:
        return 0.0
    return sorted_values[max(0, math.ceil(fraction * len(sorted_values)) - 1)]


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _parse_time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


def parse_message_id(message_id: str) -> tuple[str, str, str, int] | None:
    """``<amends.INC.stakeholder@d>`` (a thread's first message) or ``<amends.INC.stakeholder.kind.n@d>``.

    Returns (incident, stakeholder, kind, seq); None for anything else. The soak's
    incident and stakeholder ids hold no dots.
    """
    local = message_id.strip().strip("<>").split("@", 1)[0]
    parts = local.split(".")
    if parts[0] != "amends":
        return None
    if len(parts) == 3:
        return parts[1], parts[2], "acknowledgment", 1
    if len(parts) == 5 and parts[4].isdigit():
        return parts[1], parts[2], parts[3], int(parts[4])
    return None


# -- the run --------------------------------------------------------------------------------


@dataclass
class Incident:
    id: str
    severity: str
    services: list[str]
    opened: bool = False  # its opened event was enqueued
    resolved: bool = False  # its resolved event was built (maybe not yet enqueued)


@dataclass
class Chaos:
    process_kills: Counter[str] = field(default_factory=Counter)
    process_exits: Counter[str] = field(default_factory=Counter)  # exited on their own
    redis_kills: int = 0
    smtp_outages: Counter[str] = field(default_factory=Counter)
    smtp_outage_s: Counter[str] = field(default_factory=Counter)


class Soak:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.rng = random.Random(args.seed)
        self.actions: list[tuple[float, int, str, Callable[[], None]]] = []
        self._order = itertools.count()
        self.incidents: dict[str, Incident] = {}
        self.outbox: list[dict[str, Any]] = []  # built, not yet enqueued (Redis down)
        self.emitted: Counter[str] = Counter()
        self.emit_failures = 0
        self.chaos = Chaos()
        self.load_on = False
        self.processes: list[AmendsProcess] = []
        self.down: set[int] = set()  # indexes of processes killed on purpose, awaiting restart
        self.redis_down = False
        self.dead_since: dict[int, float] = {}  # processes found exited on their own
        self.last_in_flight: dict[str, int] = {}

    # -- scheduling ------------------------------------------------------------------------

    def at(self, delay_s: float, label: str, action: Callable[[], None]) -> None:
        heapq.heappush(self.actions, (time.monotonic() + delay_s, next(self._order), label, action))

    def run_due(self) -> None:
        while self.actions and self.actions[0][0] <= time.monotonic():
            _, _, label, action = heapq.heappop(self.actions)
            if self.load_on or not label.startswith(("load", "chaos")):
                action()

    # -- services ------------------------------------------------------------------------------

    def start(self) -> None:
        self.redis = RedisServer(appendfsync=self.args.fsync, data_dir=self.workdir / "redis")
        self.smtp = FaultySmtp()
        config_path = self.workdir / "amends.yaml"
        config_path.write_text(yaml.safe_dump(CONFIG, sort_keys=False))
        self.config = parse_config(CONFIG)
        self.env = {
            "AMENDS_REDIS_URL": self.redis.url,
            "AMENDS_SMTP_URL": self.smtp.url,
            "AMENDS_SECRET_KEY": "soak-secret-key",
            "AMENDS_CONFIG": str(config_path),
            "AMENDS_HOME": str(self.workdir / "home"),
        }
        logs = self.workdir / "logs"
        self.processes = [
            *(
                AmendsProcess.worker(self.env, logs / f"worker-{i + 1}.log", threads=self.args.threads)
                for i in range(self.args.workers)
            ),
            *(
                AmendsProcess.scheduler(self.env, logs / f"scheduler-{i + 1}.log")
                for i in range(self.args.schedulers)
            ),
        ]
        for process in self.processes:
            process.wait_ready(timeout_s=60)
        self.broker = build_broker(self.redis.url)
        self.client = self.redis.client(socket_timeout=5)
        self.timers = RedisTimerStore(self.client)

    def stop(self) -> None:
        for process in self.processes:
            process.stop()
        if hasattr(self, "broker"):
            self.broker.close()
            self.client.close()
        if hasattr(self, "smtp"):
            self.smtp.stop()
        if hasattr(self, "redis"):
            self.redis.stop()

    def name(self, index: int) -> str:
        process = self.processes[index]
        same = [p for p in self.processes if p.args[0] == process.args[0]]
        return f"{process.args[0]}-{same.index(process) + 1}"

    def supervise(self) -> None:
        """Start again whatever exited on its own (not killed by the soak)."""
        now = time.monotonic()
        for index, process in enumerate(self.processes):
            if index in self.down or process.running:
                continue
            if index not in self.dead_since:
                self.dead_since[index] = now
                self.chaos.process_exits[f"{process.args[0]} exit {process.returncode}"] += 1
            elif now - self.dead_since[index] >= 1.0:  # a supervisor's pause before a restart
                del self.dead_since[index]
                process.start()

    # -- load ------------------------------------------------------------------------------------

    def event(self, kind: str, incident: Incident, fields: dict[str, Any]) -> dict[str, Any]:
        return {
            "schema": 1,
            "event_id": str(uuid.uuid4()),
            "type": f"incident.{kind}",
            "incident_id": incident.id,
            "occurred_at": _iso(datetime.now(UTC)),
            "source": "soak",
            "incident": fields,
        }

    def send(self, *events: dict[str, Any]) -> None:
        self.outbox.extend(events)
        self.flush()

    def flush(self) -> None:
        """Enqueue what is waiting, oldest first; stop at the first failure (Redis is down)."""
        while self.outbox:
            event = self.outbox[0]
            try:
                emit(event, broker=self.broker)
            except (RedisUnavailableError, redis.RedisError):
                self.emit_failures += 1
                return
            self.outbox.pop(0)
            self.emitted[event["type"]] += 1
            if event["type"] == "incident.opened":
                self.incidents[event["incident_id"]].opened = True

    def open_incident(self) -> None:
        number = len(self.incidents) + 1
        incident = Incident(f"INC-{number:04d}", self.rng.choice(SEVERITIES), self.rng.choice(SERVICES))
        self.incidents[incident.id] = incident
        opened = self.event(
            "opened",
            incident,
            {
                "title": f"Soak incident {number}",
                "severity": incident.severity,
                "services": incident.services,
                "status": "investigating",
                "summary": "Requests time out.",
                "impact": "Some requests fail.",
                "plan": "Looking at recent changes.",
                "owner": "On-call",
            },
        )
        updated = self.event(
            "updated", incident, {"status": "identified", "plan": f"Roll back release {number}."}
        )
        self.send(opened, updated)  # back to back
        life = self.rng.uniform(*self.args.lifetime)
        self.at(
            life * 0.4, "load", lambda: self.send(self.event("updated", incident, {"owner": "Platform team"}))
        )
        self.at(
            life * 0.7,
            "load",
            lambda: self.send(
                self.event("updated", incident, {"status": "monitoring", "summary": "Fix deployed."})
            ),
        )
        self.at(life, "load", lambda: self.resolve(incident))
        self.at(60.0 / self.args.rate, "load", self.open_incident)

    def resolve(self, incident: Incident) -> None:
        if not incident.resolved:
            incident.resolved = True
            self.send(self.event("resolved", incident, {"summary": "Fixed; requests succeed again."}))

    # -- faults ------------------------------------------------------------------------------------

    def kill_one(self) -> None:
        candidates = [i for i, p in enumerate(self.processes) if i not in self.down and p.running]
        if candidates:
            index = self.rng.choice(candidates)
            self.processes[index].kill()
            self.down.add(index)
            self.chaos.process_kills[self.processes[index].args[0]] += 1
            self.at(self.rng.uniform(1.0, 2.0), "restart", lambda: self.bring_back(index))
        self.at(self.rng.uniform(0.5, 1.5) * self.args.kill_every, "chaos", self.kill_one)

    def bring_back(self, index: int) -> None:
        self.down.discard(index)
        self.dead_since.pop(index, None)
        if not self.processes[index].running:
            self.processes[index].start()

    def kill_redis(self) -> None:
        self.redis.kill()
        self.redis_down = True
        self.chaos.redis_kills += 1
        self.at(self.rng.uniform(1.0, 2.0), "restart", self.restart_redis)
        self.at(self.args.redis_every, "chaos", self.kill_redis)

    def restart_redis(self) -> None:
        if self.redis_down:
            self.redis.restart()
            self.redis_down = False
            self.flush()

    def smtp_outage(self, mode: str) -> None:
        low, high = (30.0, 60.0) if mode == "tempfail" else (15.0, 30.0)
        duration = self.rng.uniform(low, high)
        self.smtp.mode = mode
        self.chaos.smtp_outages[mode] += 1
        started = time.monotonic()

        def back() -> None:
            if self.smtp.mode == mode:
                self.smtp.mode = "ok"
                self.chaos.smtp_outage_s[mode] += round(time.monotonic() - started)

        self.at(duration, "restart", back)
        following = {"tempfail": "drop", "drop": "down", "down": "tempfail"}[mode]
        self.at(duration + self.args.smtp_every, "chaos", lambda: self.smtp_outage(following))

    # -- reading the outcome ------------------------------------------------------------------

    def amends_json(self, *args: str) -> list[dict[str, Any]]:
        result = subprocess.run(
            [sys.executable, "-m", "scheduler.cli.main", *args],
            env={**os.environ, **self.env},
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if result.returncode != 0:
            raise RuntimeError(f"amends {' '.join(args)} exited {result.returncode}: {result.stderr.strip()}")
        return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]

    def in_flight(self) -> dict[str, int]:
        """Armed and leased timers; messages waiting in, or taken from, each queue."""
        counts = {
            "timers armed": self.timers.armed_count(),
            "timers leased": self.timers.leased_count(),
        }
        for queue in (EVENTS_QUEUE, TIMERS_QUEUE, DELIVER_QUEUE):
            counts[f"queue {queue}"] = int(self.broker.do_qsize(queue))
        return counts

    # -- the phases ---------------------------------------------------------------------------------

    def progress(self, phase: str, started: float, extra: str = "") -> None:
        alive = sum(p.running for p in self.processes)
        line = (
            f"{phase} {time.monotonic() - started:5.0f}s  events {sum(self.emitted.values())}"
            f" (waiting {len(self.outbox)})  mail {len(self.smtp.received)}  smtp {self.smtp.mode:<8}"
            f" redis {'down' if self.redis_down else 'up'}  processes {alive}/{len(self.processes)}"
            f"  kills {sum(self.chaos.process_kills.values())}{extra}"
        )
        if sys.stderr.isatty():
            print(f"\r{line:<150}", end="", file=sys.stderr, flush=True)
        else:
            print(line, file=sys.stderr, flush=True)

    def load_phase(self) -> None:
        self.load_on = True
        started = time.monotonic()
        end = started + self.args.minutes * 60
        self.at(0, "load", self.open_incident)
        if self.args.kill_every > 0:
            self.at(self.args.kill_every, "chaos", self.kill_one)
        if self.args.redis_every > 0:
            self.at(self.args.redis_every, "chaos", self.kill_redis)
        if self.args.smtp_every > 0:
            self.at(self.args.smtp_every, "chaos", lambda: self.smtp_outage("tempfail"))
        last_progress = 0.0
        while time.monotonic() < end:
            self.run_due()
            if not self.redis_down:
                self.flush()
            self.supervise()
            if time.monotonic() - last_progress >= (1.0 if sys.stderr.isatty() else 10.0):
                self.progress("load  ", started)
                last_progress = time.monotonic()
            time.sleep(0.1)
        self.load_on = False

    def settle_phase(self) -> tuple[bool, float, list[dict[str, Any]]]:
        """Faults off, everything resolved; wait until nothing is pending. (settled, seconds, rows)"""
        started = time.monotonic()
        # Pending restarts run now; further faults and load are dropped by run_due.
        for _, _, label, action in sorted(self.actions):
            if label == "restart":
                action()
        self.actions.clear()
        for index in list(self.down):
            self.bring_back(index)
        if self.redis_down:
            self.restart_redis()
        self.smtp.mode = "ok"
        for incident in self.incidents.values():
            self.resolve(incident)
        deadline = started + self.args.settle
        rows: list[dict[str, Any]] = []
        quiet = 0
        last_progress = 0.0
        while time.monotonic() < deadline:
            self.flush()
            self.supervise()
            try:
                rows = self.amends_json("log", "--json")
                self.last_in_flight = self.in_flight()
                waiting = len(self.outbox) + sum(self.last_in_flight.values())
            except (RuntimeError, redis.RedisError, subprocess.TimeoutExpired):
                waiting = -1
            pending = sum(r["status"] in PENDING for r in rows)
            quiet = quiet + 1 if waiting == 0 and pending == 0 else 0
            if time.monotonic() - last_progress >= (1.0 if sys.stderr.isatty() else 10.0):
                self.progress("settle", started, f"  pending rows {pending}  in flight {waiting}")
                last_progress = time.monotonic()
            if quiet >= 2:
                break
            time.sleep(2.0)
        if sys.stderr.isatty():
            print(file=sys.stderr)
        rows = self.amends_json("log", "--json")
        return quiet >= 2, time.monotonic() - started, rows

    def report(self, settled: bool, settle_s: float, rows: list[dict[str, Any]]) -> dict[str, Any]:
        mails = self.smtp.messages()
        received_ids = Counter(m.message_id for m in mails)
        received: set[tuple[str, str, str]] = set()
        threads: dict[tuple[str, str], list[int]] = defaultdict(list)
        seen: set[str] = set()
        unparsed = 0
        for mail in mails:
            parsed = parse_message_id(mail.message_id)
            if parsed is None:
                unparsed += 1
                continue
            incident, stakeholder, kind, seq = parsed
            received.add((incident, stakeholder, kind))
            if mail.message_id not in seen:
                seen.add(mail.message_id)
                threads[(incident, stakeholder)].append(seq)

        owed: set[tuple[str, str, str]] = set()
        for incident in self.incidents.values():
            if incident.opened:
                for stakeholder in self.config.concerned(incident.severity, incident.services):
                    owed.update((incident.id, stakeholder.id, kind) for kind in OWED)
        lost_owed = sorted(owed - received)
        sent_unreceived = sorted(
            r["id"] for r in rows if r["status"] == "sent" and r["message_id"] not in received_ids
        )
        lost_ids = {":".join(k) for k in lost_owed} | set(sent_unreceived)

        out_of_order = 0
        disordered_threads = 0
        for seqs in threads.values():
            late = sum(seq < max(seqs[:i]) for i, seq in enumerate(seqs) if i)
            out_of_order += late
            disordered_threads += bool(late)

        statuses = Counter(r["status"] for r in rows)
        lateness = sorted(
            (sent - promised).total_seconds()
            for r in rows
            if r["status"] == "sent"
            and (sent := _parse_time(r["sent_at"])) is not None
            and (promised := _parse_time(r["promised_at"])) is not None
        )
        rejected = self.amends_json("log", "--rejected", "--json", "--limit", "100000")
        reasons = Counter(
            re.sub(
                r"INC-\d+",
                "INC-n",
                "; ".join(f"{e.get('field') or 'event'}: {e.get('reason')}" for e in r.get("errors", [])),
            )
            for r in rejected
        )
        rejected_types = Counter(
            str((r.get("event") or {}).get("type", "?")) for r in rejected if isinstance(r.get("event"), dict)
        )
        return {
            "minutes": self.args.minutes,
            "seed": self.args.seed,
            "workers": self.args.workers,
            "schedulers": self.args.schedulers,
            "incidents": sum(i.opened for i in self.incidents.values()),
            "events_emitted": sum(self.emitted.values()),
            "events_by_type": dict(self.emitted),
            "events_never_enqueued": len(self.outbox),
            "emit_attempts_failed": self.emit_failures,
            "emails_received": len(mails),
            "unique_message_ids": len(received_ids),
            "unrecognised_message_ids": unparsed,
            "owed": len(owed),
            "lost": len(lost_ids),
            "lost_owed_by_kind": dict(Counter(kind for _, _, kind in lost_owed)),
            "lost_owed": [":".join(k) for k in lost_owed],
            "logged_sent_not_received": sent_unreceived,
            "duplicated": sum(n - 1 for n in received_ids.values()),
            "duplicated_ids": sorted(m for m, n in received_ids.items() if n > 1),
            "out_of_order": out_of_order,
            "out_of_order_threads": disordered_threads,
            "stranded": sum(statuses[s] for s in PENDING),
            "stranded_ids": sorted(r["id"] for r in rows if r["status"] in PENDING),
            "log_rows": len(rows),
            "log_by_status": dict(statuses),
            "rejected_events": len(rejected),
            "rejected_by_type": dict(rejected_types),
            "rejected_reasons": dict(reasons),
            "lateness_s": {
                "sent": len(lateness),
                "p50": _percentile(lateness, 0.5),
                "p99": _percentile(lateness, 0.99),
                "max": lateness[-1] if lateness else 0.0,
            },
            "settled": settled,
            "in_flight_at_end": {k: v for k, v in self.last_in_flight.items() if v},
            "settle_s": round(settle_s, 1),
            "faults": {
                "worker_kills": self.chaos.process_kills["worker"],
                "scheduler_kills": self.chaos.process_kills["scheduler"],
                "exits_on_their_own": dict(self.chaos.process_exits),
                "redis_kills": self.chaos.redis_kills,
                "smtp_outages": dict(self.chaos.smtp_outages),
                "smtp_outage_s": dict(self.chaos.smtp_outage_s),
                "smtp_tempfailed": self.smtp.counters.tempfailed,
                "smtp_dropped": self.smtp.counters.dropped,
            },
        }


def print_table(result: dict[str, Any], workdir: Path | None) -> None:
    faults = result["faults"]
    late = result["lateness_s"]
    by_type = ", ".join(f"{kind.split('.')[1]} {n}" for kind, n in result["events_by_type"].items())
    by_kind = "".join(f", {kind} {n}" for kind, n in result["lost_owed_by_kind"].items())
    stranded = "".join(f", {s} {n}" for s, n in result["log_by_status"].items() if s in PENDING)
    rejected = "".join(f", {kind.split('.')[-1]} {n}" for kind, n in result["rejected_by_type"].items())
    in_flight = "".join(f", {k} {v}" for k, v in result["in_flight_at_end"].items())
    outages = ", ".join(
        f"{mode} {n}x/{result['faults']['smtp_outage_s'].get(mode, 0)} s"
        for mode, n in faults["smtp_outages"].items()
    )
    rows = [
        ("events emitted", f"{result['events_emitted']} ({by_type})"),
        ("incidents", result["incidents"]),
        ("emails received", f"{result['emails_received']} ({result['unique_message_ids']} Message-IDs)"),
        ("owed (ack, resolution, feedback)", result["owed"]),
        ("lost", f"{result['lost']} (owed, not received: {len(result['lost_owed'])}{by_kind}; logged sent, not received: {len(result['logged_sent_not_received'])})"),
        ("duplicated", result["duplicated"]),
        ("out of order", f"{result['out_of_order']} in {result['out_of_order_threads']} threads"),
        ("stranded", f"{result['stranded']}{stranded}"),
        ("rejected events", f"{result['rejected_events']}{rejected}"),
        ("promise lateness p50 / p99 / max", f"{late['p50']:.1f} s / {late['p99']:.1f} s / {late['max']:.1f} s ({late['sent']} sent)"),
        ("log rows by status", ", ".join(f"{k} {v}" for k, v in sorted(result["log_by_status"].items()))),
        ("settled", f"{'yes' if result['settled'] else 'NO (timeout)'} after {result['settle_s']} s{in_flight}"),
        ("faults", f"worker kills {faults['worker_kills']}, scheduler kills {faults['scheduler_kills']}, redis kills {faults['redis_kills']}"),
        ("smtp outages", f"{outages or '-'}; 451s {faults['smtp_tempfailed']}, drops {faults['smtp_dropped']}"),
        ("exits on their own", ", ".join(f"{k}: {v}" for k, v in faults["exits_on_their_own"].items()) or "-"),
    ]  # fmt: skip
    print()
    print(
        f"Soak: {result['minutes']:g} min, {result['workers']} worker(s), {result['schedulers']} scheduler(s), "
        f"seed {result['seed']}"
    )
    print()
    print("| figure | value |")
    print("|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    for title, items in (
        ("lost", result["lost_owed"] + result["logged_sent_not_received"]),
        ("duplicated", result["duplicated_ids"]),
        ("stranded", result["stranded_ids"]),
        ("rejected", [f"{n}x {reason}" for reason, n in result["rejected_reasons"].items()]),
    ):
        if items:
            shown = ", ".join(items[:12]) + (f", ... ({len(items)} in all)" if len(items) > 12 else "")
            print(f"\n{title}: {shown}")
    if workdir is not None:
        print(f"\nlogs, configuration and received mail kept in {workdir}")


def _range(text: str) -> tuple[float, float]:
    try:
        low, high = (float(x) for x in text.split("-", 1))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW-HIGH seconds, e.g. 20-60, not {text!r}") from None
    if not 0 < low <= high:
        raise argparse.ArgumentTypeError(f"expected 0 < LOW <= HIGH, not {text!r}")
    return low, high


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--minutes", type=float, default=10.0, help="how long the load and faults last (default 10)"
    )
    parser.add_argument("--workers", type=int, default=2, help="amends worker processes (default 2)")
    parser.add_argument("--threads", type=int, default=4, help="threads per worker (default 4)")
    parser.add_argument("--schedulers", type=int, default=2, help="amends scheduler processes (default 2)")
    parser.add_argument("--rate", type=float, default=6.0, help="incidents opened per minute (default 6)")
    parser.add_argument(
        "--lifetime",
        type=_range,
        default=(20.0, 60.0),
        help="seconds from open to resolve, LOW-HIGH (default 20-60)",
    )
    parser.add_argument(
        "--kill-every",
        type=float,
        default=20.0,
        help="mean seconds between process SIGKILLs; 0: none (default 20)",
    )
    parser.add_argument(
        "--redis-every",
        type=float,
        default=180.0,
        help="seconds between Redis SIGKILLs; 0: none (default 180)",
    )
    parser.add_argument(
        "--smtp-every",
        type=float,
        default=60.0,
        help="seconds of SMTP service between outages; 0: none (default 60)",
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=240.0,
        help="at most this many seconds to settle afterwards (default 240)",
    )
    parser.add_argument(
        "--fsync",
        choices=["everysec", "always"],
        default="everysec",
        help="Redis appendfsync (default everysec)",
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: a new one, printed)")
    parser.add_argument("--keep", metavar="DIR", help="keep logs, configuration and received mail in DIR")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args()
    if args.minutes <= 0 or args.workers < 1 or args.schedulers < 1 or args.rate <= 0 or args.threads < 1:
        parser.error(
            "--minutes and --rate must be positive; --workers, --threads and --schedulers at least 1"
        )
    if shutil.which("redis-server") is None:
        parser.error("redis-server is not on PATH")
    if args.seed is None:
        args.seed = random.randrange(1_000_000)

    workdir = Path(args.keep).resolve() if args.keep else Path(tempfile.mkdtemp(prefix="amends-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    soak = Soak(args, workdir)
    try:
        soak.start()
        print(
            f"soak: seed {args.seed}, Redis {soak.redis.url}, SMTP {soak.smtp.url}, in {workdir}",
            file=sys.stderr,
        )
        soak.load_phase()
        settled, settle_s, rows = soak.settle_phase()
        result = soak.report(settled, settle_s, rows)
        if args.keep:
            mail_dir = workdir / "mail"
            mail_dir.mkdir(exist_ok=True)
            for number, mail in enumerate(soak.smtp.messages(), 1):
                (mail_dir / f"{number:05d}.eml").write_bytes(mail.raw)
            (workdir / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    finally:
        soak.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        print(json.dumps(result))
    else:
        print_table(result, workdir if args.keep else None)
    clean = not (result["lost"] or result["duplicated"] or result["out_of_order"] or result["stranded"])
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
