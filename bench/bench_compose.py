"""Composing emails: the email package's construction against the direct writing, same run.

Composes ``--messages`` emails (default 2,000) through ``compose_email``, over the bundled
templates, every kind and four audiences (the customer one with Reply-To and one-click
unsubscribe, the engineering one with subjects long enough to fold), and does what the
worker does with each: read the envelope and the wire bytes (``scheduler.mail.smtp``) and
the Message-ID. Once with ``build_email`` as it is, once with ``reference_email`` in its
place (the email package end to end), alternating ``--rounds`` times; the best round of
each counts. Every message of the two is checked to be the same bytes. A second line
times ``build_email`` alone against ``reference_email`` on the same rendered messages
(no template context, no Jinja, no envelope).

    python bench/bench_compose.py [--messages 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scheduler.core.config import Config, Stakeholder, parse_config
from scheduler.core.model import Communication, Kind
from scheduler.mail import messages, mime, render
from scheduler.mail.preflight import sample_communication
from scheduler.mail.smtp import _envelope, _wire_bytes
from scheduler.service.settings import bundled_path

NOW = datetime(2026, 10, 25, 9, 30, tzinfo=UTC)
CONFIG = parse_config(
    {
        "sender": "Acme Status <status@acme.example>",
        "contact": {"name": "Acme Support", "email": "support@acme.example"},
        "stakeholders": [
            {
                "id": "globex-finance",
                "name": "Globex Finance",
                "email": "finance@globex.example",
                "audience": "customer",
                "timezone": "Europe/Berlin",
            },
            {"id": "board", "name": "Board", "email": "board@acme.example", "audience": "executive"},
            {
                "id": "payments-eng",
                "name": "Payments Engineering",
                "email": "payments@acme.example",
                "audience": "engineering",
                "timezone": "America/New_York",
            },
            {"id": "support", "name": "Support Desk", "email": "support-desk@acme.example"},
        ],
    }
)

Job = tuple[Communication, Stakeholder]


def _jobs(count: int, config: Config) -> list[Job]:
    stakeholders = list(config.stakeholders)
    jobs = []
    for i in range(count):
        stakeholder = stakeholders[i % len(stakeholders)]
        kind = list(Kind)[(i // len(stakeholders)) % len(list(Kind))]
        comm = sample_communication(kind, stakeholder.id, config.timezone_of(stakeholder), NOW)
        jobs.append((comm, stakeholder))
    return jobs


def _run(jobs: list[Job], templates: render.TemplateSet) -> tuple[float, list[bytes]]:
    """Seconds to compose every job as a worker does, and the bytes of each message."""
    wire = []
    start = time.perf_counter()
    for comm, stakeholder in jobs:
        message, _ = messages.compose_email(comm, stakeholder, CONFIG, templates, NOW, "bench-secret")
        _envelope(message)
        wire.append(_wire_bytes(message))
        mime.written_header(message, "Message-ID")
    return time.perf_counter() - start, wire


def _with_reference(run: Callable[[], tuple[float, list[bytes]]]) -> tuple[float, list[bytes]]:
    with mock.patch.object(messages, "build_email", mime.reference_email):
        return run()


def _build_calls(jobs: list[Job], templates: render.TemplateSet) -> list[tuple[Any, dict[str, Any]]]:
    """The arguments compose_email passes to build_email for every job."""
    calls: list[tuple[Any, dict[str, Any]]] = []

    def record(rendered: Any, **kwargs: Any) -> EmailMessage:
        calls.append((rendered, kwargs))
        return mime.build_email(rendered, **kwargs)

    with mock.patch.object(messages, "build_email", record):
        _run(jobs, templates)
    return calls


def _build_s(build: Callable[..., EmailMessage], calls: list[tuple[Any, dict[str, Any]]]) -> float:
    start = time.perf_counter()
    for rendered, kwargs in calls:
        build(rendered, **kwargs).as_string()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    templates = render.TemplateSet(bundled_path("templates"))
    jobs = _jobs(args.messages, CONFIG)
    _run(jobs[:50], templates)  # compile the templates and warm the caches first

    best = {"email package": float("inf"), "direct": float("inf")}
    for _ in range(args.rounds):
        old_s, old_wire = _with_reference(lambda: _run(jobs, templates))
        new_s, new_wire = _run(jobs, templates)
        if old_wire != new_wire:
            raise SystemExit("the direct path wrote different bytes from the email package")
        best["email package"] = min(best["email package"], old_s)
        best["direct"] = min(best["direct"], new_s)

    calls = _build_calls(jobs, templates)
    build_old = min(_build_s(mime.reference_email, calls) for _ in range(args.rounds))
    build_new = min(_build_s(mime.build_email, calls) for _ in range(args.rounds))

    direct = sum(isinstance(m, mime.ComposedEmail) for m in _composed(jobs, templates))
    print(
        f"{args.messages} messages, {direct} of them written directly, bytes identical; best of {args.rounds}"
    )
    for name, seconds in best.items():
        print(
            f"  {name:>13}: {args.messages / seconds:8.0f} messages/s  ({seconds * 1e6 / args.messages:6.0f} µs each)"
        )
    print(
        f"  speedup: {best['email package'] / best['direct']:.2f}x (template context and Jinja included in both)"
    )
    print("build_email and as_string() alone, on the same rendered messages:")
    for name, seconds in (("email package", build_old), ("direct", build_new)):
        print(
            f"  {name:>13}: {args.messages / seconds:8.0f} messages/s  ({seconds * 1e6 / args.messages:6.0f} µs each)"
        )
    print(f"  speedup: {build_old / build_new:.2f}x")


def _composed(jobs: list[Job], templates: render.TemplateSet) -> list[object]:
    return [
        messages.compose_email(comm, stakeholder, CONFIG, templates, NOW, "bench-secret")[0]
        for comm, stakeholder in jobs
    ]


if __name__ == "__main__":
    main()
